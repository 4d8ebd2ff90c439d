import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  isHostToPanel,
  isPanelToHost,
  parseTrialProgress,
  recordsToCurve,
  toPanelExperiment,
  unwrapExperiment,
} from '../../extension/src/contract';

const exp = { id: 3, status: 'kept', source: 'tune', hypothesis: '<img src=x onerror=alert(1)>', metric: 1.01, delta: -0.02, sigma: 0.004, z: 3.5, confirms: null };

test('panel → host messages are validated', () => {
  assert.ok(isPanelToHost({ type: 'ready' }));
  assert.ok(isPanelToHost({ type: 'openExperiment', id: 12 }));
  assert.ok(isPanelToHost({ type: 'error', message: 'x' }));
  assert.ok(!isPanelToHost({ type: 'openExperiment', id: '12' }));
  assert.ok(!isPanelToHost({ type: 'openExperiment', id: -1 }));
  assert.ok(!isPanelToHost({ type: 'openExperiment', id: 1.5 }));
  assert.ok(!isPanelToHost({ type: 'runCommand', command: 'workbench.action.terminal.new' }));
  assert.ok(!isPanelToHost(null));
  assert.ok(!isPanelToHost('ready'));
});

test('host → panel messages are validated', () => {
  assert.ok(isHostToPanel({ type: 'init', experiments: [exp], curves: [{ expId: 3, xs: [0, 1], ys: [2, 1] }], direction: 'minimize', metric: 'val_bpb' }));
  assert.ok(isHostToPanel({ type: 'experiments', experiments: [exp] }));
  assert.ok(isHostToPanel({ type: 'curve', curve: { expId: 1, xs: [0.1], ys: [3] }, replace: false }));
  assert.ok(isHostToPanel({ type: 'serverState', state: 'running' }));
  assert.ok(!isHostToPanel({ type: 'curve', curve: { expId: 1, xs: [0.1, 0.2], ys: [3] }, replace: false }), 'ragged curve');
  assert.ok(!isHostToPanel({ type: 'init', experiments: [], curves: [], direction: 'sideways', metric: 'x' }));
  assert.ok(!isHostToPanel({ type: 'experiments', experiments: [{ ...exp, hypothesis: 42 }] }));
  assert.ok(!isHostToPanel({ type: 'html', html: '<b>' }));
});

test('experimentUpdated params: flat record or wrapped', () => {
  assert.equal(unwrapExperiment({ id: 4, status: 'running', source: 'tune' })?.id, 4);
  assert.equal(unwrapExperiment({ experiment: { id: 5, status: 'kept', source: 'baseline' } })?.id, 5);
  assert.equal(unwrapExperiment({ id: '4', status: 'running' }), undefined);
  assert.equal(unwrapExperiment(null), undefined);
});

test('trialProgress params are parsed; non-finite losses become null', () => {
  const p = parseTrialProgress({ expId: 7, records: [{ step: 0, t: 0.1, frac: 0.2, loss: 3 }, { step: 1, t: 0.2, frac: 0.4, loss: null }, { bogus: true }] });
  assert.ok(p);
  assert.equal(p.expId, 7);
  assert.equal(p.records.length, 2);
  assert.equal(p.records[1].loss, null);
  assert.equal(parseTrialProgress({ records: [] }), undefined);
  assert.equal(parseTrialProgress({ expId: 1, records: 'x' }), undefined);
});

test('records → curve skips missing losses and uses frac as x', () => {
  const c = recordsToCurve(2, [
    { step: 0, t: 0.5, frac: 0.1, loss: 3 },
    { step: 1, t: 1, frac: 0.2, loss: null },
    { step: 2, t: 1.5, frac: 0.3, loss: 2.5 },
  ]);
  assert.deepEqual(c, { expId: 2, xs: [0.1, 0.3], ys: [3, 2.5] });
});

test('toPanelExperiment keeps strings as data and drops non-finite numbers', () => {
  const p = toPanelExperiment({ id: 1, status: 'kept', source: 'llm:x', hypothesis: '<script>', metric: Number.NaN, delta: -0.1 });
  assert.equal(p.hypothesis, '<script>');
  assert.equal(p.metric, null);
  assert.equal(p.delta, -0.1);
  assert.equal(p.confirms, null);
});
