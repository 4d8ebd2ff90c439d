import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PanelExperiment } from '../../extension/src/contract';
import { CurveStore, alignCurves, buildPlotData, downsampleMinMax, fmt, selectCurves, sourceCell, statusCell } from '../../extension/src/panelModel';

function e(id: number, status: string, source = 'tune', metric: number | null = null, confirms: number | null = null): PanelExperiment {
  return { id, status, source, hypothesis: '', metric, delta: null, sigma: null, z: null, confirms };
}

test('downsampleMinMax bounds the output and keeps spikes', () => {
  const n = 100_000;
  const xs = Array.from({ length: n }, (_, i) => i / n);
  const ys = Array.from({ length: n }, (_, i) => Math.sin(i / 1000));
  ys[54_321] = 50; // a spike
  ys[77_777] = -50;
  const d = downsampleMinMax(xs, ys, 500);
  assert.ok(d.xs.length <= 1000, `got ${d.xs.length}`);
  assert.equal(d.xs.length, d.ys.length);
  assert.ok(d.ys.includes(50));
  assert.ok(d.ys.includes(-50));
  for (let i = 1; i < d.xs.length; i++) {
    assert.ok(d.xs[i] >= d.xs[i - 1], 'x stays sorted');
  }
});

test('downsampleMinMax passes small inputs through', () => {
  const d = downsampleMinMax([1, 2, 3], [4, 5, 6], 100);
  assert.deepEqual(d, { xs: [1, 2, 3], ys: [4, 5, 6] });
});

test('alignCurves merges x values and fills gaps with null', () => {
  const data = alignCurves([
    { xs: [0, 0.5, 1], ys: [3, 2, 1] },
    { xs: [0.25, 0.5], ys: [9, 8] },
  ]);
  assert.deepEqual(data, [
    [0, 0.25, 0.5, 1],
    [3, null, 2, 1],
    [null, 9, 8, null],
  ]);
  assert.deepEqual(alignCurves([]), [[]]);
});

test('selectCurves: latest baseline, best kept (direction-aware), running trials', () => {
  const exps = [
    e(1, 'kept', 'baseline', 1.0),
    e(2, 'kept', 'baseline', 1.01),
    e(3, 'kept', 'tune', 0.95),
    e(4, 'kept', 'tune', 0.9),
    e(5, 'kept', 'tune', 0.8, 4), // a confirmation run: not "best" on its own
    e(6, 'discarded', 'tune', 0.5),
    e(7, 'running'),
    e(8, 'running'),
    e(9, 'proposed'),
  ];
  const sel = selectCurves(exps, 'minimize');
  assert.deepEqual(sel.map((s) => [s.expId, s.role]), [
    [2, 'baseline'],
    [4, 'best'],
    [8, 'running'],
    [7, 'running'],
  ]);
  const max = selectCurves(exps, 'maximize');
  assert.equal(max.find((s) => s.role === 'best')?.expId, 3);
  assert.deepEqual(selectCurves([], 'minimize'), []);
});

test('CurveStore appends, sorts late records, and caches downsampling per version', () => {
  const s = new CurveStore();
  s.append({ expId: 1, xs: [0.1, 0.2], ys: [3, 2.9] });
  s.append({ expId: 1, xs: [0.3], ys: [2.8] });
  assert.equal(s.size(1), 3);
  const a = s.downsampled(1, 100);
  assert.equal(s.downsampled(1, 100), a, 'cache hit');
  s.append({ expId: 1, xs: [0.15], ys: [2.95] }); // out of order
  const b = s.downsampled(1, 100);
  assert.notEqual(b, a);
  assert.deepEqual(b.xs, [0.1, 0.15, 0.2, 0.3]);
  s.set({ expId: 1, xs: [0], ys: [1] });
  assert.equal(s.size(1), 1);
  assert.equal(s.totalPoints(), 1);
});

test('buildPlotData counts raw and drawn points', () => {
  const s = new CurveStore();
  const n = 10_000;
  s.set({ expId: 1, xs: Array.from({ length: n }, (_, i) => i / n), ys: Array.from({ length: n }, (_, i) => 3 - i / n) });
  s.set({ expId: 2, xs: [0.5, 0.6], ys: [2, 1.9] });
  const { data, drawn, raw } = buildPlotData(
    [
      { expId: 1, role: 'baseline', label: '' },
      { expId: 2, role: 'running', label: '' },
    ],
    s,
    400,
  );
  assert.equal(raw, n + 2);
  assert.ok(drawn <= 802);
  assert.equal(data.length, 3);
  assert.equal(data[0].length, data[1].length);
});

test('fmt', () => {
  assert.equal(fmt(null), '—');
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

test('a tampered or over-budget run is never the best curve', () => {
  const list = [e(1, 'kept', 'baseline', 1.0), e(2, 'tampered', 'tune', 0.5), e(3, 'over_budget', 'tune', 0.6), e(4, 'kept', 'tune', 0.9)];
  assert.deepEqual(
    selectCurves(list, 'minimize').map((s) => [s.expId, s.role]),
    [
      [1, 'baseline'],
      [4, 'best'],
    ],
  );
});
