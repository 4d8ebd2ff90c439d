// Pure data side of the loss panel (no DOM, no vscode): which curves to draw, their min/max
// reduction onto a common x grid (one grid for every curve: uPlot gets one short x array, and a
// live update re-grids only the curve that grew), the reference band, the metric view's points,
// the selection, and the words the table and the tooltips use. The webview, the unit tests and
// the bench all run this same code.

import {
  type Direction,
  MAX_SELECTED,
  type PanelAnomaly,
  type PanelEffect,
  type PanelCurve,
  type PanelExperiment,
  SELF_REPORTED,
  UNTRUSTED_STATUSES,
  awaitsReview,
} from './contract';
import { decimalsFor } from './engineState';

// ---------------------------------------------------------------------------------- which curves

export type CurveRole = 'selected' | 'running' | 'baseline';

export interface PlannedCurve {
  expId: number;
  role: CurveRole;
  label: string;
}

/** "#12 lr 0.04 → 0.06" (the hypothesis cut to `max` characters with an ellipsis). */
export function curveLabel(e: PanelExperiment | undefined, id: number, max = 40): string {
  const h = e?.hypothesis.replace(/\s+/g, ' ').trim() ?? '';
  if (e?.source === 'baseline' && !h) {
    return `#${id} baseline`;
  }
  return h ? `#${id} ${truncate(h, max)}` : `#${id}`;
}

export function truncate(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, Math.max(1, max - 1))}…` : s;
}

/**
 * The lines drawn over the reference band: the selected experiments (in selection order), then
 * the running trials nobody selected (newest first), then — only while there is no reference
 * band yet — the latest kept baseline. Each experiment at most once.
 */
export function planCurves(
  experiments: ReadonlyMap<number, PanelExperiment>,
  selected: readonly number[],
  referenceIds: readonly number[],
  maxRunning = 8,
): PlannedCurve[] {
  const out: PlannedCurve[] = [];
  const seen = new Set<number>();
  for (const id of selected.slice(-MAX_SELECTED)) {
    if (!seen.has(id)) {
      out.push({ expId: id, role: 'selected', label: curveLabel(experiments.get(id), id) });
      seen.add(id);
    }
  }
  const running = [...experiments.values()].filter((e) => e.status === 'running' && !seen.has(e.id)).sort((a, b) => b.id - a.id);
  for (const e of running.slice(0, maxRunning)) {
    out.push({ expId: e.id, role: 'running', label: `running ${curveLabel(e, e.id, 30)}` });
    seen.add(e.id);
  }
  if (!referenceIds.length) {
    let baseline: PanelExperiment | undefined;
    for (const e of experiments.values()) {
      if (e.source === 'baseline' && e.status === 'kept' && (!baseline || e.id > baseline.id)) {
        baseline = e;
      }
    }
    if (baseline && !seen.has(baseline.id)) {
      out.push({ expId: baseline.id, role: 'baseline', label: `baseline #${baseline.id}` });
    }
  }
  return out;
}

/** Every experiment whose curve the panel needs: the reference runs, the planned lines. */
export function wantedCurves(
  experiments: ReadonlyMap<number, PanelExperiment>,
  selected: readonly number[],
  referenceIds: readonly number[],
  maxRunning = 8,
): Set<number> {
  const ids = new Set(referenceIds);
  for (const c of planCurves(experiments, selected, referenceIds, maxRunning)) {
    ids.add(c.expId);
  }
  return ids;
}

// ---------------------------------------------------------------------------------- the grid

/**
 * The common x grid: `buckets` equal buckets over [0, xmax], two rows each (at 1/4 and 3/4 of
 * the bucket), so a curve keeps each bucket's minimum and maximum in x order (spikes survive).
 * With a bucket per pixel column the shift of a point is under a pixel.
 */
export function gridX(buckets: number, xmax: number): number[] {
  const b = Math.max(1, Math.floor(buckets));
  const w = xmax / b;
  const out = new Array<number>(2 * b);
  for (let i = 0; i < b; i++) {
    out[2 * i] = (i + 0.25) * w;
    out[2 * i + 1] = (i + 0.75) * w;
  }
  return out;
}

function bucketOf(x: number, b: number, xmax: number): number {
  const i = Math.floor((x / xmax) * b);
  return i < 0 ? 0 : i >= b ? b - 1 : i;
}

/** The first index in [lo, hi) whose x is at or past `x` (xs sorted). */
function lowerBound(xs: ArrayLike<number>, x: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/**
 * One x-sorted curve on the grid (length 2 x buckets; null where it has no point): per bucket
 * its minimum and maximum in the order they occur, or its one point twice. Each bucket's end is
 * found by binary search, so the only pass over every point is the min/max scan of the losses.
 */
export function gridCurve(xs: ArrayLike<number>, ys: ArrayLike<number>, buckets: number, xmax: number): (number | null)[] {
  const b = Math.max(1, Math.floor(buckets));
  const out = new Array<number | null>(2 * b).fill(null);
  const n = Math.min(xs.length, ys.length);
  const w = xmax / b;
  let start = 0;
  for (let k = 0; k < b && start < n; k++) {
    // the last bucket takes every point past xmax too
    const end = k === b - 1 ? n : lowerBound(xs, (k + 1) * w, start, n);
    if (end <= start) {
      continue;
    }
    let iMin = start;
    let iMax = start;
    let yMin = ys[start];
    let yMax = yMin;
    for (let j = start + 1; j < end; j++) {
      const y = ys[j];
      if (y < yMin) {
        yMin = y;
        iMin = j;
      } else if (y > yMax) {
        yMax = y;
        iMax = j;
      }
    }
    out[2 * k] = iMin <= iMax ? yMin : yMax;
    out[2 * k + 1] = iMin <= iMax ? yMax : yMin;
    start = end;
  }
  return out;
}

/** Per-bucket means of one curve, linearly interpolated over empty buckets inside its x range (NaN outside). */
function bucketMeans(xs: ArrayLike<number>, ys: ArrayLike<number>, b: number, xmax: number): Float64Array {
  const sum = new Float64Array(b);
  const cnt = new Uint32Array(b);
  const n = Math.min(xs.length, ys.length);
  for (let i = 0; i < n; i++) {
    const k = bucketOf(xs[i], b, xmax);
    sum[k] += ys[i];
    cnt[k]++;
  }
  const out = new Float64Array(b).fill(Number.NaN);
  let prev = -1;
  for (let k = 0; k < b; k++) {
    if (!cnt[k]) {
      continue;
    }
    out[k] = sum[k] / cnt[k];
    if (prev >= 0 && k - prev > 1) {
      for (let g = prev + 1; g < k; g++) {
        out[g] = out[prev] + ((out[k] - out[prev]) * (g - prev)) / (k - prev);
      }
    }
    prev = k;
  }
  return out;
}

/** The reference band on the grid: the mean of the runs' curves and their min and max, per bucket. */
export interface Band {
  mean: (number | null)[];
  lo: (number | null)[];
  hi: (number | null)[];
  /** Curves it was made of. */
  runs: number;
}

/**
 * The reference runs' curves on the common grid: each curve's bucket means (interpolated over
 * gaps inside its range), then across curves the mean, minimum and maximum. A bucket no curve
 * reaches is null.
 */
export function referenceBand(curves: { xs: ArrayLike<number>; ys: ArrayLike<number> }[], buckets: number, xmax: number): Band {
  const b = Math.max(1, Math.floor(buckets));
  const per = curves.filter((c) => c.xs.length > 0).map((c) => bucketMeans(c.xs, c.ys, b, xmax));
  const mean = new Array<number | null>(2 * b).fill(null);
  const lo = new Array<number | null>(2 * b).fill(null);
  const hi = new Array<number | null>(2 * b).fill(null);
  for (let k = 0; k < b; k++) {
    let s = 0;
    let n = 0;
    let mn = Infinity;
    let mx = -Infinity;
    for (const m of per) {
      const v = m[k];
      if (!Number.isNaN(v)) {
        s += v;
        n++;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
      }
    }
    if (n) {
      mean[2 * k] = mean[2 * k + 1] = s / n;
      lo[2 * k] = lo[2 * k + 1] = mn;
      hi[2 * k] = hi[2 * k + 1] = mx;
    }
  }
  return { mean, lo, hi, runs: per.length };
}

/** Index of the point whose x is nearest to `x` in an x-sorted array (-1 when empty). */
export function nearestIndex(xs: ArrayLike<number>, x: number): number {
  const n = xs.length;
  if (!n) {
    return -1;
  }
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo > 0 && Math.abs(xs[lo - 1] - x) <= Math.abs(xs[lo] - x) ? lo - 1 : lo;
}

/** Whether xs is non-decreasing (curves arrive in step order; this guards the grid). */
export function isSorted(xs: ArrayLike<number>): boolean {
  for (let i = 1; i < xs.length; i++) {
    if (xs[i] < xs[i - 1]) {
      return false;
    }
  }
  return true;
}

/** Sort a curve by x, keeping y (and steps) paired (only needed when records arrive out of order). */
export function sortCurve(xs: number[], ys: number[], steps?: number[]): { xs: number[]; ys: number[]; steps?: number[] } {
  const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b] || a - b);
  const out: { xs: number[]; ys: number[]; steps?: number[] } = { xs: order.map((i) => xs[i]), ys: order.map((i) => ys[i]) };
  if (steps) {
    out.steps = order.map((i) => steps[i]);
  }
  return out;
}

/**
 * A growable column of numbers: a Float64Array with spare capacity (curves grow by appends at
 * 10 Hz). Typed storage keeps the grid's loops fast whatever array kind a message arrived in
 * (a structured clone's arrays are not the JIT's packed doubles).
 */
class Column {
  data: Float64Array;
  length: number;

  /** A Float64Array is taken over as it is (appends never write into it: they grow a copy). */
  constructor(values: ArrayLike<number>) {
    this.length = values.length;
    if (values instanceof Float64Array) {
      this.data = values;
    } else {
      this.data = new Float64Array(Math.max(16, values.length));
      this.data.set(values);
    }
  }

  push(values: ArrayLike<number>): void {
    const need = this.length + values.length;
    if (need > this.data.length) {
      const grown = new Float64Array(Math.max(need, this.data.length * 2));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(values, this.length);
    this.length = need;
  }

  view(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

interface StoredCurve {
  xs: Column;
  ys: Column;
  /** Parallel to xs while every message carried steps; dropped otherwise. */
  steps: Column | undefined;
  anomalies: PanelAnomaly[];
  version: number;
}

/** A point of a curve under the cursor. */
export interface CurvePoint {
  x: number;
  y: number;
  step: number | null;
}

/**
 * Raw curves by experiment, appended to as progress arrives, with a per-curve cache of its grid
 * row keyed by (version, buckets, xmax): a redraw re-grids only the curves that changed.
 */
export class CurveStore {
  private readonly curves = new Map<number, StoredCurve>();
  private readonly cache = new Map<number, { version: number; key: string; row: (number | null)[] }>();
  /** Versions never repeat (a curve deleted and set again is a new version). */
  private nextVersion = 1;

  /** Replace a curve (a Float64Array column is taken over, plain arrays are copied). */
  set(curve: PanelCurve): void {
    const steps = curve.steps && curve.steps.length === curve.xs.length ? curve.steps : undefined;
    const sorted = isSorted(curve.xs) ? { xs: curve.xs, ys: curve.ys, steps } : sortCurve(Array.from(curve.xs), Array.from(curve.ys), steps && Array.from(steps));
    const prev = this.curves.get(curve.expId);
    this.curves.set(curve.expId, {
      xs: new Column(sorted.xs),
      ys: new Column(sorted.ys),
      steps: sorted.steps ? new Column(sorted.steps) : undefined,
      anomalies: curve.anomalies ?? prev?.anomalies ?? [],
      version: this.nextVersion++,
    });
  }

  append(curve: PanelCurve): void {
    const cur = this.curves.get(curve.expId);
    if (!cur) {
      this.set(curve);
      return;
    }
    const last = cur.xs.length ? cur.xs.data[cur.xs.length - 1] : -Infinity;
    if (cur.steps && curve.steps && curve.steps.length === curve.xs.length) {
      cur.steps.push(curve.steps);
    } else {
      cur.steps = undefined;
    }
    cur.xs.push(curve.xs);
    cur.ys.push(curve.ys);
    if (curve.anomalies) {
      cur.anomalies = curve.anomalies;
    }
    if (curve.xs.length && curve.xs[0] < last) {
      const s = sortCurve(Array.from(cur.xs.view()), Array.from(cur.ys.view()), cur.steps ? Array.from(cur.steps.view()) : undefined);
      cur.xs = new Column(s.xs);
      cur.ys = new Column(s.ys);
      cur.steps = s.steps ? new Column(s.steps) : undefined;
    }
    cur.version = this.nextVersion++;
  }

  has(expId: number): boolean {
    return this.curves.has(expId);
  }

  delete(expId: number): void {
    this.curves.delete(expId);
    this.cache.delete(expId);
  }

  ids(): number[] {
    return [...this.curves.keys()];
  }

  size(expId: number): number {
    return this.curves.get(expId)?.xs.length ?? 0;
  }

  /** Changes whenever the curve does (0: unknown). */
  version(expId: number): number {
    return this.curves.get(expId)?.version ?? 0;
  }

  /** The curve's points (views of the store's storage: read, don't keep). */
  raw(expId: number): { xs: Float64Array; ys: Float64Array } | undefined {
    const c = this.curves.get(expId);
    return c ? { xs: c.xs.view(), ys: c.ys.view() } : undefined;
  }

  anomalies(expId: number): PanelAnomaly[] {
    return this.curves.get(expId)?.anomalies ?? [];
  }

  /** The largest x of these curves (0 when none has a point). */
  maxX(ids: Iterable<number>): number {
    let m = 0;
    for (const id of ids) {
      const c = this.curves.get(id);
      if (c && c.xs.length && c.xs.data[c.xs.length - 1] > m) {
        m = c.xs.data[c.xs.length - 1];
      }
    }
    return m;
  }

  /** Total raw points held. */
  totalPoints(): number {
    let n = 0;
    for (const c of this.curves.values()) {
      n += c.xs.length;
    }
    return n;
  }

  /** The raw point nearest to x (with its step when known). */
  nearest(expId: number, x: number): CurvePoint | undefined {
    const c = this.curves.get(expId);
    const i = c ? nearestIndex(c.xs.view(), x) : -1;
    if (!c || i < 0) {
      return undefined;
    }
    return { x: c.xs.data[i], y: c.ys.data[i], step: c.steps ? c.steps.data[i] : null };
  }

  /** The curve's last point. */
  last(expId: number): CurvePoint | undefined {
    const c = this.curves.get(expId);
    if (!c || !c.xs.length) {
      return undefined;
    }
    const i = c.xs.length - 1;
    return { x: c.xs.data[i], y: c.ys.data[i], step: c.steps ? c.steps.data[i] : null };
  }

  /** The curve on the common grid (cached until the curve or the grid changes). */
  gridded(expId: number, buckets: number, xmax: number): (number | null)[] {
    const cur = this.curves.get(expId);
    const key = `${buckets}:${xmax}`;
    if (!cur) {
      return new Array<number | null>(2 * Math.max(1, Math.floor(buckets))).fill(null);
    }
    const hit = this.cache.get(expId);
    if (hit && hit.version === cur.version && hit.key === key) {
      return hit.row;
    }
    const row = gridCurve(cur.xs.view(), cur.ys.view(), buckets, xmax);
    this.cache.set(expId, { version: cur.version, key, row });
    return row;
  }
}

// ---------------------------------------------------------------------------------- selection

/** Click on a row: in or out of the selection (the oldest selection gives way past the cap). */
export function toggleSelected(selected: readonly number[], id: number, max = MAX_SELECTED): number[] {
  return selected.includes(id) ? selected.filter((x) => x !== id) : [...selected, id].slice(-max);
}

/** Add these ids (a question's experiments, a shift-click range) to the selection, capped. */
export function addSelected(selected: readonly number[], ids: readonly number[], max = MAX_SELECTED): number[] {
  const out = [...selected];
  for (const id of ids) {
    if (!out.includes(id)) {
      out.push(id);
    }
  }
  return out.slice(-max);
}

/** Shift-click: the rows between the anchor and this one, in the table's order (both included). */
export function rangeBetween(order: readonly number[], anchor: number, id: number): number[] {
  const a = order.indexOf(anchor);
  const b = order.indexOf(id);
  if (a < 0 || b < 0) {
    return [id];
  }
  return order.slice(Math.min(a, b), Math.max(a, b) + 1);
}

// ---------------------------------------------------------------------------------- metric view

export type MetricClass = 'reference' | 'kept' | 'discarded' | 'untrusted';
export const METRIC_CLASSES: MetricClass[] = ['reference', 'kept', 'discarded', 'untrusted'];

export function metricClass(e: PanelExperiment, referenceIds: ReadonlySet<number>): MetricClass {
  if (UNTRUSTED_STATUSES.has(e.status) || awaitsReview(e)) {
    return 'untrusted';
  }
  if (referenceIds.has(e.id)) {
    return 'reference';
  }
  return e.status === 'kept' ? 'kept' : 'discarded';
}

/** The metric view's data: x = experiment id (those with a metric), one y array per class. */
export interface MetricPoints {
  ids: number[];
  byClass: Record<MetricClass, (number | null)[]>;
}

export function metricPoints(experiments: Iterable<PanelExperiment>, referenceIds: readonly number[]): MetricPoints {
  const ref = new Set(referenceIds);
  const list = [...experiments].filter((e) => e.metric !== null && Number.isFinite(e.metric) && e.status !== 'running').sort((a, b) => a.id - b.id);
  const byClass = {} as Record<MetricClass, (number | null)[]>;
  for (const c of METRIC_CLASSES) {
    byClass[c] = new Array<number | null>(list.length).fill(null);
  }
  list.forEach((e, i) => {
    byClass[metricClass(e, ref)][i] = e.metric;
  });
  return { ids: list.map((e) => e.id), byClass };
}

/** Where a keep starts: the reference moved by the keep threshold in the better direction. */
export function keepLine(value: number | null | undefined, keepThreshold: number | null | undefined, direction: Direction): number | null {
  if (typeof value !== 'number' || typeof keepThreshold !== 'number') {
    return null;
  }
  return direction === 'minimize' ? value - keepThreshold : value + keepThreshold;
}

/**
 * The metric view's y range: the reference ± σ, the keep line and the points, padded by 8%; a
 * point far out (past 5 interquartile ranges, or 5 spans of the reference lines, beyond the
 * quartiles: a run that barely trained) is left off so the rest stay readable, and counted.
 */
export function metricRange(values: Iterable<number | null>, extra: (number | null | undefined)[]): { range: [number, number]; off: number } | null {
  const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
  const pts = [...values].filter(finite).sort((a, b) => a - b);
  const ref = extra.filter(finite);
  if (!pts.length && !ref.length) {
    return null;
  }
  let lo = Infinity;
  let hi = -Infinity;
  let off = 0;
  if (pts.length) {
    const q1 = pts[Math.floor((pts.length - 1) * 0.25)];
    const q3 = pts[Math.ceil((pts.length - 1) * 0.75)];
    const refSpan = ref.length ? Math.max(...ref) - Math.min(...ref) : 0;
    const fence = 5 * Math.max(q3 - q1, refSpan);
    const inLo = Math.min(q1, ...ref) - fence;
    const inHi = Math.max(q3, ...ref) + fence;
    for (const v of pts) {
      if (fence > 0 && (v < inLo || v > inHi)) {
        off++;
      } else {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
  }
  for (const v of ref) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const pad = hi > lo ? (hi - lo) * 0.08 : Math.abs(hi) * 0.01 || 1;
  return { range: [lo - pad, hi + pad], off };
}

// ---------------------------------------------------------------------------------- words

/** Table text for a number (em dash when missing). */
export function fmt(v: number | null | undefined, digits = 4, signed = false): string {
  if (v === null || v === undefined || !Number.isFinite(v)) {
    return '—';
  }
  const s = v.toFixed(digits);
  return signed && v > 0 ? `+${s}` : s;
}

/** The improvement in metric units, positive = better, whichever the direction. */
export function improvement(delta: number, direction: Direction): number {
  return direction === 'minimize' ? -delta : delta;
}

/** Digits that show a run's numbers against its σ (two significant digits of σ). */
export function digitsFor(sigma: number | null | undefined): number {
  return decimalsFor(typeof sigma === 'number' ? sigma : null);
}

/**
 * Δ in one sign convention: "0.037 worse, 0.7σ", "0.012 better, 2.4σ", "no change". The σ
 * count is |z| (the judge's z is positive when better).
 */
export function deltaWords(e: Pick<PanelExperiment, 'delta' | 'z' | 'sigma'>, direction: Direction): string {
  if (e.delta === null) {
    return '—';
  }
  const d = digitsFor(e.sigma);
  const better = improvement(e.delta, direction);
  const amount = Math.abs(better).toFixed(d);
  const words = Number(amount) === 0 ? 'no change' : `${amount} ${better > 0 ? 'better' : 'worse'}`;
  return e.z === null ? words : `${words}, ${Math.abs(e.z).toFixed(1)}σ`;
}

/** "keep needs ≥ 2.1σ better" (from the verdict's t_crit), or "". */
export function keepNeeds(tCrit: number | null | undefined): string {
  return typeof tCrit === 'number' && Number.isFinite(tCrit) ? `keep needs ≥ ${tCrit.toFixed(1)}σ better` : '';
}

/**
 * An effect (positive = better) and its interval in the one sign convention, as the terminal
 * says it: "0.012 better (95%: 0.004 to 0.020 better)", "0.020 worse (95%: 0.046 worse to 0.006 better)".
 */
export function effectText(effect: PanelEffect | null | undefined, digits: number): string {
  if (!effect) {
    return '';
  }
  const words = (x: number) => `${Math.abs(x).toFixed(digits)} ${x >= 0 ? 'better' : 'worse'}`;
  const level = `${Math.round(100 * effect.level)}%`;
  if (effect.low >= 0 === effect.high >= 0) {
    const [lo, hi] = [Math.abs(effect.low), Math.abs(effect.high)].sort((a, b) => a - b);
    return `${words(effect.better)} (${level}: ${lo.toFixed(digits)} to ${hi.toFixed(digits)} ${effect.low >= 0 ? 'better' : 'worse'})`;
  }
  return `${words(effect.better)} (${level}: ${words(effect.low)} to ${words(effect.high)})`;
}

const REASON_WORDS: Record<string, string> = {
  improved_one_seed: 'improved on one seed',
  within_noise: 'within noise',
  user_rejected: 'rejected by you',
  confirmation: 'confirmation run',
  implausible: 'implausible gain',
  result_accepted: 'result accepted',
  result_rejected: 'result rejected',
  no_model: 'no model saved',
  pruned: 'pruned early',
  stopped_in_confirmation: 'stopped in confirmation',
  node_lost: 'node lost',
};

/** The reason column: the reason in words, with the researcher's own words for a rejection. */
export function reasonWords(e: Pick<PanelExperiment, 'reason' | 'rejectionReason'>): string {
  const code = e.reason ?? '';
  const words = REASON_WORDS[code] ?? code.replace(/_/g, ' ');
  const own = e.rejectionReason?.trim();
  return own ? (words ? `${words}: “${own}”` : `“${own}”`) : words;
}

/** "14 s", "4m 05s", "1h 02m" (em dash when unknown). */
export function durationText(seconds: number | null | undefined): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
    return '—';
  }
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  }
  const s = Math.round(seconds);
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The warnings of a run, one sentence a line ("" when none). */
export function warningText(e: Pick<PanelExperiment, 'warnings'>): string {
  return Object.values(e.warnings ?? {}).join('\n');
}

/** How a row's status reads in the table, and the class that colours it. */
export interface StatusCell {
  text: string;
  /** `status-<name>` for the row: tampered, overbudget, implausible, … (never `kept` unless kept). */
  cls: string;
  /** Row tooltip line: why the status reads as it does. */
  note: string;
}

/**
 * The table's status cell: a tampered or over-budget run gets its own marker and colour (never a
 * keep's), an implausible gain says it waits for a look, a reviewed one says it was looked at.
 */
export function statusCell(e: PanelExperiment): StatusCell {
  const confirms = e.confirms !== null ? ` (confirms #${e.confirms})` : '';
  const plain = (text: string, note = '') => ({ text: text + confirms, cls: `status-${e.status.replace(/[^a-z]/g, '')}`, note });
  if (e.status === 'tampered') {
    return { text: `✗ tampered${confirms}`, cls: 'status-tampered', note: "its result can't be trusted" };
  }
  if (e.status === 'over_budget') {
    return { text: `⏱ over budget${confirms}`, cls: 'status-overbudget', note: 'trained past its budget: never kept' };
  }
  if (awaitsReview(e)) {
    return { text: `⚠ implausible: look${confirms}`, cls: 'status-implausible', note: 'an implausibly large gain: accept or reject its result' };
  }
  if (e.reason === 'result_accepted' || e.reason === 'result_rejected') {
    return plain(`${e.status} after a look`);
  }
  return plain(e.status);
}

/** The source cell: the source, and "self-reported metric" when the number is what the script printed. */
export function sourceCell(e: PanelExperiment): string {
  return e.evaluator === SELF_REPORTED ? `${e.source} · self-reported metric` : e.source;
}

/** A row's tooltip: the hypothesis, the verdict line, what a keep needed, the status note. */
export function rowTooltip(e: PanelExperiment): string {
  return [e.hypothesis, e.verdict ?? '', keepNeeds(e.tCrit), statusCell(e).note].filter((s) => s).join('\n');
}
