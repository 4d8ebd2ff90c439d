import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PanelExperiment } from '../../extension/src/contract';
import {
  CurveStore,
  addSelected,
  deltaWords,
  durationText,
  effectText,
  fmt,
  gridCurve,
  gridX,
  keepLine,
  keepNeeds,
  metricPoints,
  metricRange,
  nearestIndex,
  planCurves,
  rangeBetween,
  reasonWords,
  referenceBand,
  rowTooltip,
  sourceCell,
  statusCell,
  toggleSelected,
  wantedCurves,
} from '../../extension/src/panelModel';

function e(id: number, status: string, source = 'tune', metric: number | null = null, confirms: number | null = null): PanelExperiment {
  return { id, status, source, hypothesis: '', metric, delta: null, sigma: null, z: null, confirms };
}

const byId = (list: PanelExperiment[]) => new Map(list.map((x) => [x.id, x]));

test('gridCurve keeps each bucket’s min and max in x order (spikes survive), null where the curve has no point', () => {
  const n = 100_000;
  const xs = Array.from({ length: n }, (_, i) => i / n);
  const ys = Array.from({ length: n }, (_, i) => Math.sin(i / 1000));
  ys[54_321] = 50; // a spike
  ys[77_777] = -50;
  const row = gridCurve(xs, ys, 500, 1);
  assert.equal(row.length, 1000);
  assert.ok(row.includes(50));
  assert.ok(row.includes(-50));
  // bucket 0 holds x in [0, 0.002): its minimum comes first (sin rises there)
  assert.equal(row[0], ys[0]);
  // a short curve: one point per bucket is drawn twice, other buckets are empty
  const short = gridCurve([0.05, 0.55], [3, 2], 10, 1);
  assert.deepEqual(short, [3, 3, null, null, null, null, null, null, null, null, 2, 2, null, null, null, null, null, null, null, null]);
  // points past xmax land in the last bucket; the grid's rows sit at 1/4 and 3/4 of each bucket
  assert.deepEqual(gridCurve([1.5], [7], 2, 1), [null, null, 7, 7]);
  assert.deepEqual(gridX(2, 1), [0.125, 0.375, 0.625, 0.875]);
});

test('the reference band: the mean of the runs and their min–max per bucket, gaps interpolated inside a run', () => {
  const a = { xs: [0.1, 0.3, 0.9], ys: [4, 3, 1] };
  const b = { xs: [0.1, 0.5, 0.9], ys: [6, 4, 3] };
  const band = referenceBand([a, b], 5, 1);
  assert.equal(band.runs, 2);
  // bucket 0 (x < 0.2): a=4, b=6
  assert.equal(band.mean[0], 5);
  assert.equal(band.lo[0], 4);
  assert.equal(band.hi[1], 6);
  // bucket 2 (0.4..0.6): a has no point there: interpolated between 3 (bucket 1) and 1 (bucket 4)
  assert.ok(Math.abs((band.lo[4] as number) - (3 - 2 / 3)) < 1e-9);
  assert.equal(band.hi[4], 4);
  // an empty run adds nothing; no runs: all null
  assert.equal(referenceBand([a, { xs: [], ys: [] }], 5, 1).runs, 1);
  assert.ok(referenceBand([], 3, 1).mean.every((v) => v === null));
  // a bucket only one run reaches: that run alone
  const late = referenceBand([{ xs: [0.1], ys: [2] }, { xs: [0.1, 0.9], ys: [4, 1] }], 5, 1);
  assert.equal(late.mean[8], 1);
});

test('nearestIndex finds the closest x', () => {
  assert.equal(nearestIndex([], 1), -1);
  assert.equal(nearestIndex([0, 1, 2], 1.4), 1);
  assert.equal(nearestIndex([0, 1, 2], 1.6), 2);
  assert.equal(nearestIndex([0, 1, 2], -5), 0);
  assert.equal(nearestIndex([0, 1, 2], 9), 2);
});

test('planCurves: the selection in order, then running trials; the baseline only while there is no reference', () => {
  const exps = byId([e(1, 'kept', 'baseline', 1.0), e(2, 'kept', 'baseline', 1.01), { ...e(3, 'kept', 'tune', 0.95), hypothesis: 'lr 0.04 → 0.06' }, e(7, 'running'), e(8, 'running'), e(9, 'proposed')]);
  const plan = planCurves(exps, [3, 8], [1, 2]);
  assert.deepEqual(
    plan.map((c) => [c.expId, c.role]),
    [
      [3, 'selected'],
      [8, 'selected'],
      [7, 'running'],
    ],
  );
  assert.equal(plan[0].label, '#3 lr 0.04 → 0.06');
  // no reference yet: the latest kept baseline is drawn as before
  assert.deepEqual(
    planCurves(exps, [], []).map((c) => [c.expId, c.role]),
    [
      [8, 'running'],
      [7, 'running'],
      [2, 'baseline'],
    ],
  );
  assert.deepEqual([...wantedCurves(exps, [3], [1, 2])].sort(), [1, 2, 3, 7, 8]);
  // more than 20 selected: the newest 20
  const many = Array.from({ length: 25 }, (_, i) => i + 100);
  assert.equal(planCurves(new Map(), many, [1]).length, 20);
  assert.equal(planCurves(new Map(), many, [1])[0].expId, 105);
});

test('selection: a click toggles, shift-click adds the range in table order, the oldest gives way past the cap', () => {
  assert.deepEqual(toggleSelected([], 4), [4]);
  assert.deepEqual(toggleSelected([4, 5], 4), [5]);
  assert.deepEqual(toggleSelected([1, 2, 3], 9, 3), [2, 3, 9]);
  assert.deepEqual(addSelected([5], [4, 5, 6]), [5, 4, 6]);
  const order = [9, 8, 7, 6, 5];
  assert.deepEqual(rangeBetween(order, 8, 6), [8, 7, 6]);
  assert.deepEqual(rangeBetween(order, 6, 8), [8, 7, 6]);
  assert.deepEqual(rangeBetween(order, 42, 6), [6]);
});

test('CurveStore appends, sorts late records (steps stay paired), caches the grid per version, finds the nearest point', () => {
  const s = new CurveStore();
  s.append({ expId: 1, xs: [0.1, 0.2], ys: [3, 2.9], steps: [10, 20] });
  s.append({ expId: 1, xs: [0.3], ys: [2.8], steps: [30] });
  assert.equal(s.size(1), 3);
  const a = s.gridded(1, 100, 1);
  assert.equal(s.gridded(1, 100, 1), a, 'cache hit');
  s.append({ expId: 1, xs: [0.15], ys: [2.95], steps: [15] }); // out of order
  const b = s.gridded(1, 100, 1);
  assert.notEqual(b, a);
  assert.deepEqual(Array.from(s.raw(1)?.xs ?? []), [0.1, 0.15, 0.2, 0.3]);
  assert.deepEqual(s.last(1), { x: 0.3, y: 2.8, step: 30 });
  assert.deepEqual(s.nearest(1, 0.16), { x: 0.15, y: 2.95, step: 15 });
  assert.equal(s.maxX([1, 2]), 0.3);
  // a message without steps: the steps are dropped, not misaligned
  s.append({ expId: 1, xs: [0.4], ys: [2.7] });
  assert.equal(s.nearest(1, 0.4)?.step, null);
  // anomalies come with the journal's curve and survive live appends
  s.set({ expId: 2, xs: [0.1], ys: [1], anomalies: [{ kind: 'spike', frac: 0.1, step: 3, message: 'loss ×3.2 spike at 10% of budget' }] });
  s.append({ expId: 2, xs: [0.2], ys: [0.9] });
  assert.equal(s.anomalies(2)[0].kind, 'spike');
  // the store keeps its own copy: the caller's arrays are not grown by appends
  const mine = { expId: 3, xs: [0.1], ys: [1] };
  s.set(mine);
  s.append({ expId: 3, xs: [0.2], ys: [0.9] });
  assert.deepEqual(mine.xs, [0.1]);
  assert.equal(s.size(3), 2);
  s.delete(3);
  s.set({ expId: 1, xs: [0], ys: [1] });
  assert.equal(s.size(1), 1);
  assert.equal(s.totalPoints(), 3);
  // a curve deleted and set again (a new init) is a new version: the chart redraws it
  const v = s.version(1);
  s.delete(1);
  s.set({ expId: 1, xs: [0], ys: [1] });
  assert.notEqual(s.version(1), v);
});

test('Δ in one sign convention: better / worse whichever the direction, with σ from z', () => {
  const row = { delta: 0.037, z: -0.71, sigma: 0.052 };
  assert.equal(deltaWords(row, 'minimize'), '0.037 worse, 0.7σ');
  assert.equal(deltaWords({ delta: -0.0123, z: 2.44, sigma: 0.005 }, 'minimize'), '0.0123 better, 2.4σ');
  // maximize: a higher metric is better
  assert.equal(deltaWords({ delta: 0.012, z: 1.2, sigma: 0.01 }, 'maximize'), '0.012 better, 1.2σ');
  assert.equal(deltaWords({ delta: 0, z: 0, sigma: 0.01 }, 'minimize'), 'no change, 0.0σ');
  assert.equal(deltaWords({ delta: 0.5, z: null, sigma: null }, 'minimize'), '0.5000 worse');
  assert.equal(deltaWords({ delta: null, z: null, sigma: null }, 'minimize'), '—');
  assert.equal(keepNeeds(2.13), 'keep needs ≥ 2.1σ better');
  assert.equal(keepNeeds(null), '');
  assert.equal(keepLine(2.0, 0.035, 'minimize'), 1.965);
  assert.equal(keepLine(0.8, 0.01, 'maximize'), 0.81);
  assert.equal(keepLine(null, 0.01, 'maximize'), null);
  // as the terminal says it (questions.fmt_effect)
  assert.equal(effectText({ better: 0.012, low: 0.004, high: 0.02, level: 0.95 }, 4), '0.0120 better (95%: 0.0040 to 0.0200 better)');
  assert.equal(effectText({ better: -0.02, low: -0.0457, high: 0.0057, level: 0.95 }, 4), '0.0200 worse (95%: 0.0457 worse to 0.0057 better)');
  assert.equal(effectText({ better: -0.03, low: -0.05, high: -0.01, level: 0.95 }, 2), '0.03 worse (95%: 0.01 to 0.05 worse)');
  assert.equal(effectText(null, 3), '');
});

test('reasons, durations and tooltips in words', () => {
  assert.equal(reasonWords({ reason: 'within_noise' }), 'within noise');
  assert.equal(reasonWords({ reason: 'worse' }), 'worse');
  assert.equal(reasonWords({ reason: 'user_rejected', rejectionReason: 'too risky' }), 'rejected by you: “too risky”');
  assert.equal(reasonWords({ reason: 'result_rejected', rejectionReason: ' looks like a leak ' }), 'result rejected: “looks like a leak”');
  assert.equal(reasonWords({}), '');
  assert.equal(durationText(14.2), '14 s');
  assert.equal(durationText(4.25), '4.3 s');
  assert.equal(durationText(245), '4m 05s');
  assert.equal(durationText(3725), '1h 02m');
  assert.equal(durationText(null), '—');
  const tip = rowTooltip({ ...e(3, 'discarded'), hypothesis: 'deeper', verdict: '0.037 bpb worse, 0.7σ', tCrit: 2.0 });
  assert.equal(tip, 'deeper\n0.037 bpb worse, 0.7σ\nkeep needs ≥ 2.0σ better');
});

test('the metric view: points by verdict class, reference runs apart, untrusted never kept; the range holds the reference and the keep line', () => {
  const list = [e(1, 'kept', 'baseline', 1.0), e(2, 'kept', 'baseline', 1.02), e(3, 'discarded', 'tune', 1.05), e(4, 'kept', 'tune', 0.9), e(5, 'tampered', 'tune', 0.5), e(6, 'over_budget', 'tune', 0.6), e(7, 'crashed'), e(8, 'running', 'tune', 0.1)];
  list.push({ ...e(9, 'discarded', 'tune', 0.4), reason: 'implausible' });
  const pts = metricPoints(list, [1, 2]);
  assert.deepEqual(pts.ids, [1, 2, 3, 4, 5, 6, 9]);
  assert.deepEqual(pts.byClass.reference, [1.0, 1.02, null, null, null, null, null]);
  assert.deepEqual(pts.byClass.kept, [null, null, null, 0.9, null, null, null]);
  assert.deepEqual(pts.byClass.discarded, [null, null, 1.05, null, null, null, null]);
  assert.deepEqual(pts.byClass.untrusted, [null, null, null, null, 0.5, 0.6, 0.4]);
  const r = metricRange([1, 1.1], [0.8, null]);
  assert.ok(r && r.range[0] < 0.8 && r.range[1] > 1.1 && r.off === 0);
  assert.equal(metricRange([null], []), null);
  // a run that barely trained (loss ≈ ln(vocab)) is left off, counted, and the rest stay readable
  const spread = metricRange([2.1, 2.11, 2.12, 2.09, 2.1, 8.3], [2.1, 2.09, 2.11, 2.07]);
  assert.ok(spread);
  assert.equal(spread.off, 1);
  assert.ok(spread.range[1] < 2.3, `range ${spread.range.join(' – ')}`);
  // the reference lines are always in view, with or without points
  assert.deepEqual(metricRange([], [1, 1]), { range: [0.99, 1.01], off: 0 });
});

test('fmt', () => {
  assert.equal(fmt(null), '—');
  assert.equal(fmt(undefined), '—');
  assert.equal(fmt(0.0123, 3, true), '+0.012');
  assert.equal(fmt(-0.5, 1, true), '-0.5');
  assert.equal(fmt(0.25, 2), '0.25');
});

test('status cells: tampered and over budget get their own marker and class (never a keep), an implausible gain waits for a look', () => {
  const row = (status: string, reason = '', evaluator = ''): PanelExperiment => ({ ...e(9, status), reason, evaluator });
  assert.deepEqual(statusCell(row('tampered', 'metric_mismatch')), { text: '✗ tampered', cls: 'status-tampered', note: "its result can't be trusted" });
  assert.equal(statusCell(row('over_budget', 'over_budget')).text, '⏱ over budget');
  assert.equal(statusCell(row('over_budget', 'over_budget')).cls, 'status-overbudget');
  const held = statusCell(row('discarded', 'implausible'));
  assert.equal(held.text, '⚠ implausible: look');
  assert.equal(held.cls, 'status-implausible');
  assert.equal(statusCell(row('kept', 'result_accepted')).text, 'kept after a look');
  assert.equal(statusCell(row('kept', 'result_accepted')).cls, 'status-kept');
  assert.equal(statusCell(row('discarded', 'result_rejected')).text, 'discarded after a look');
  assert.deepEqual(statusCell(row('kept', 'improved')), { text: 'kept', cls: 'status-kept', note: '' });
  assert.equal(statusCell({ ...row('kept'), confirms: 4 }).text, 'kept (confirms #4)');
  for (const s of ['tampered', 'over_budget']) {
    assert.ok(!statusCell(row(s)).cls.includes('kept'), s);
  }
  // older hosts and the bench send no reason/evaluator: the bare status
  assert.equal(statusCell(e(3, 'discarded')).text, 'discarded');
});

test('a metric the script printed itself says so in the source cell', () => {
  assert.equal(sourceCell({ ...e(1, 'kept', 'tune'), evaluator: 'self-reported' }), 'tune · self-reported metric');
  assert.equal(sourceCell({ ...e(1, 'kept', 'tune'), evaluator: 'prepare:0a1b' }), 'tune');
  assert.equal(sourceCell(e(1, 'kept', 'baseline')), 'baseline');
});
