// Pure data side of the loss panel (no DOM, no vscode): which curves to draw, min/max
// downsampling to the chart's pixel width, and alignment of several curves on one x axis for
// uPlot. The webview and the unit tests and the bench all run this same code.

import { type CurveData, type Direction, type PanelExperiment, SELF_REPORTED, awaitsReview } from './contract';

export type CurveRole = 'baseline' | 'best' | 'running';

export interface SelectedCurve {
  expId: number;
  role: CurveRole;
  label: string;
}

/**
 * Curves worth drawing: the latest baseline, the best kept non-baseline run (by metric in the
 * metric's direction), and every running trial (newest first), each experiment at most once.
 */
export function selectCurves(experiments: Iterable<PanelExperiment>, direction: Direction, maxRunning = 8): SelectedCurve[] {
  let baseline: PanelExperiment | undefined;
  let best: PanelExperiment | undefined;
  const running: PanelExperiment[] = [];
  const better = (a: number, b: number) => (direction === 'minimize' ? a < b : a > b);
  for (const e of experiments) {
    if (e.source === 'baseline') {
      if (e.status === 'kept' && (!baseline || e.id > baseline.id)) {
        baseline = e;
      }
    } else if (e.status === 'kept' && e.metric !== null && e.confirms === null) {
      if (!best || best.metric === null || better(e.metric, best.metric)) {
        best = e;
      }
    }
    if (e.status === 'running') {
      running.push(e);
    }
  }
  const out: SelectedCurve[] = [];
  const seen = new Set<number>();
  if (baseline) {
    out.push({ expId: baseline.id, role: 'baseline', label: `baseline #${baseline.id}` });
    seen.add(baseline.id);
  }
  if (best && !seen.has(best.id)) {
    out.push({ expId: best.id, role: 'best', label: `best #${best.id}` });
    seen.add(best.id);
  }
  running.sort((a, b) => b.id - a.id);
  for (const e of running.slice(0, maxRunning)) {
    if (!seen.has(e.id)) {
      out.push({ expId: e.id, role: 'running', label: `running #${e.id}` });
      seen.add(e.id);
    }
  }
  return out;
}

/**
 * Min/max downsampling: split the x-sorted points into `buckets` equal-count buckets and keep
 * each bucket's minimum and maximum (in x order), so spikes survive. At most 2 x buckets points
 * come out; inputs at or below that size are returned as they are (copied).
 */
export function downsampleMinMax(xs: ArrayLike<number>, ys: ArrayLike<number>, buckets: number): { xs: number[]; ys: number[] } {
  const n = Math.min(xs.length, ys.length);
  const maxOut = Math.max(2, Math.floor(buckets) * 2);
  if (n <= maxOut) {
    return { xs: Array.from({ length: n }, (_, i) => xs[i]), ys: Array.from({ length: n }, (_, i) => ys[i]) };
  }
  const b = Math.max(1, Math.floor(buckets));
  const outX: number[] = [];
  const outY: number[] = [];
  for (let i = 0; i < b; i++) {
    const start = Math.floor((i * n) / b);
    const end = Math.floor(((i + 1) * n) / b);
    if (end <= start) {
      continue;
    }
    let iMin = start;
    let iMax = start;
    for (let j = start + 1; j < end; j++) {
      const y = ys[j];
      if (y < ys[iMin]) {
        iMin = j;
      }
      if (y > ys[iMax]) {
        iMax = j;
      }
    }
    if (iMin === iMax) {
      outX.push(xs[iMin]);
      outY.push(ys[iMin]);
    } else if (iMin < iMax) {
      outX.push(xs[iMin], xs[iMax]);
      outY.push(ys[iMin], ys[iMax]);
    } else {
      outX.push(xs[iMax], xs[iMin]);
      outY.push(ys[iMax], ys[iMin]);
    }
  }
  return { xs: outX, ys: outY };
}

/** uPlot's aligned data: one shared x array, then one y array per series (null = no point). */
export type AlignedData = [number[], ...(number | null)[][]];

/**
 * Merge several x-sorted curves into one aligned table. Equal x values share a row. Runs in
 * O(total points x curves) with a k-way merge (k is small: a handful of curves).
 */
export function alignCurves(curves: { xs: number[]; ys: number[] }[]): AlignedData {
  const k = curves.length;
  const idx = new Array<number>(k).fill(0);
  const x: number[] = [];
  const cols: (number | null)[][] = curves.map(() => []);
  for (;;) {
    let next = Infinity;
    for (let c = 0; c < k; c++) {
      const i = idx[c];
      if (i < curves[c].xs.length && curves[c].xs[i] < next) {
        next = curves[c].xs[i];
      }
    }
    if (next === Infinity) {
      break;
    }
    x.push(next);
    for (let c = 0; c < k; c++) {
      const i = idx[c];
      if (i < curves[c].xs.length && curves[c].xs[i] === next) {
        cols[c].push(curves[c].ys[i]);
        idx[c] = i + 1;
      } else {
        cols[c].push(null);
      }
    }
  }
  return [x, ...cols];
}

/** Whether xs is non-decreasing (curves arrive in step order; this guards the merge). */
export function isSorted(xs: ArrayLike<number>): boolean {
  for (let i = 1; i < xs.length; i++) {
    if (xs[i] < xs[i - 1]) {
      return false;
    }
  }
  return true;
}

/** Sort a curve by x, keeping y paired (only needed when records arrive out of order). */
export function sortCurve(xs: number[], ys: number[]): { xs: number[]; ys: number[] } {
  const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b] || a - b);
  return { xs: order.map((i) => xs[i]), ys: order.map((i) => ys[i]) };
}

/**
 * Raw curves by experiment, appended to as progress arrives, with a per-curve downsample cache
 * keyed by (version, buckets): only curves that changed are downsampled again on a redraw.
 */
export class CurveStore {
  private readonly curves = new Map<number, { xs: number[]; ys: number[]; version: number }>();
  private readonly cache = new Map<number, { version: number; buckets: number; xs: number[]; ys: number[] }>();

  set(curve: CurveData): void {
    const sorted = isSorted(curve.xs) ? { xs: curve.xs.slice(), ys: curve.ys.slice() } : sortCurve(curve.xs, curve.ys);
    const prev = this.curves.get(curve.expId);
    this.curves.set(curve.expId, { ...sorted, version: (prev?.version ?? 0) + 1 });
  }

  append(curve: CurveData): void {
    const cur = this.curves.get(curve.expId);
    if (!cur) {
      this.set(curve);
      return;
    }
    const last = cur.xs.length ? cur.xs[cur.xs.length - 1] : -Infinity;
    for (let i = 0; i < curve.xs.length; i++) {
      cur.xs.push(curve.xs[i]);
      cur.ys.push(curve.ys[i]);
    }
    if (curve.xs.length && curve.xs[0] < last) {
      const s = sortCurve(cur.xs, cur.ys);
      cur.xs = s.xs;
      cur.ys = s.ys;
    }
    cur.version++;
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

  /** Total raw points held. */
  totalPoints(): number {
    let n = 0;
    for (const c of this.curves.values()) {
      n += c.xs.length;
    }
    return n;
  }

  downsampled(expId: number, buckets: number): { xs: number[]; ys: number[] } {
    const cur = this.curves.get(expId);
    if (!cur) {
      return { xs: [], ys: [] };
    }
    const hit = this.cache.get(expId);
    if (hit && hit.version === cur.version && hit.buckets === buckets) {
      return hit;
    }
    const entry = { version: cur.version, buckets, ...downsampleMinMax(cur.xs, cur.ys, buckets) };
    this.cache.set(expId, entry);
    return entry;
  }
}

/** Aligned plot data for the selected curves, plus how many points each contributes. */
export function buildPlotData(selected: SelectedCurve[], store: CurveStore, buckets: number): { data: AlignedData; drawn: number; raw: number } {
  const parts = selected.map((s) => store.downsampled(s.expId, buckets));
  const data = alignCurves(parts);
  let drawn = 0;
  let raw = 0;
  for (let i = 0; i < parts.length; i++) {
    drawn += parts[i].xs.length;
    raw += store.size(selected[i].expId);
  }
  return { data, drawn, raw };
}

/** Table text for a number (em dash when missing). */
export function fmt(v: number | null, digits = 4, signed = false): string {
  if (v === null || !Number.isFinite(v)) {
    return '—';
  }
  const s = v.toFixed(digits);
  return signed && v > 0 ? `+${s}` : s;
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
