import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  isHostToPanel,
  isPanelToHost,
  parseTrialProgress,
  readPersistedState,
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
  assert.ok(isPanelToHost({ type: 'openLog', id: 3 }));
  assert.ok(!isPanelToHost({ type: 'openLog', id: '../../etc/passwd' }));
  assert.ok(isPanelToHost({ type: 'view', view: { version: 2, selected: [3, 4], tab: 'questions' } }));
  assert.ok(!isPanelToHost({ type: 'view', view: { version: 2, selected: [3.5], tab: 'experiments' } }));
  assert.ok(!isPanelToHost({ type: 'view', view: { version: 2, selected: [], tab: 'settings' } }));
  assert.ok(!isPanelToHost({ type: 'view', view: { version: 2, selected: Array.from({ length: 21 }, (_, i) => i), tab: 'experiments' } }));
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
  // the new fields: optional, but typed when present
  const full = { ...exp, question: 2, warnings: { barely_trained: 'ran 2 optimizer steps' }, effect: { better: 0.01, low: -0.002, high: 0.022, level: 0.95 }, steps: 812, seconds: 31.2, tCrit: 2.1, hasLog: true, verdict: 'x', rejectionReason: '' };
  assert.ok(isHostToPanel({ type: 'experiments', experiments: [full] }));
  assert.ok(!isHostToPanel({ type: 'experiments', experiments: [{ ...full, warnings: { x: 3 } }] }));
  assert.ok(!isHostToPanel({ type: 'experiments', experiments: [{ ...full, effect: { better: 'a lot' } }] }));
  assert.ok(!isHostToPanel({ type: 'experiments', experiments: [{ ...full, question: -1 }] }));
  const anomalies = [{ kind: 'spike', frac: 0.4, step: 12, message: 'loss ×3.2 spike at 41% of budget' }];
  assert.ok(isHostToPanel({ type: 'curve', curve: { expId: 1, xs: [0.1], ys: [3], steps: [4], anomalies }, replace: true }));
  assert.ok(!isHostToPanel({ type: 'curve', curve: { expId: 1, xs: [0.1], ys: [3], steps: [4, 5] }, replace: true }), 'ragged steps');
  assert.ok(!isHostToPanel({ type: 'curve', curve: { expId: 1, xs: [0.1], ys: [3], anomalies: [{ kind: 'spike' }] }, replace: true }));
  assert.ok(isHostToPanel({ type: 'reference', text: 't', advice: null, value: 1, sigma: 0.01, keepThreshold: 0.03, ids: [1, 2], bestId: 2 }));
  assert.ok(!isHostToPanel({ type: 'reference', text: 't', advice: null, ids: ['1'] }));
  const q = { id: 1, text: 'Does warmup matter at this budget?', decision: 'keep warmup if ≥ 0.01 better', status: 'open', answer: '', experiments: [3, 4], verdict: '2 experiments, no effect clears the noise yet' };
  assert.ok(isHostToPanel({ type: 'questions', questions: [q] }));
  assert.ok(!isHostToPanel({ type: 'questions', questions: [{ ...q, experiments: ['3'] }] }));
  assert.ok(!isHostToPanel({ type: 'questions', questions: [{ ...q, text: null }] }));
  assert.ok(isHostToPanel({ type: 'init', experiments: [], curves: [], direction: 'minimize', metric: 'm', view: { version: 2, selected: [1], tab: 'experiments' } }));
  assert.ok(!isHostToPanel({ type: 'init', experiments: [], curves: [], direction: 'minimize', metric: 'm', view: { version: 2, selected: 'all', tab: 'experiments' } }));
});

test('the persisted selection: a valid state is kept, version 1 becomes a one-row selection, junk becomes empty', () => {
  assert.deepEqual(readPersistedState({ version: 2, selected: [4, 4, 7], tab: 'questions' }), { version: 2, selected: [4, 7], tab: 'questions' });
  assert.deepEqual(readPersistedState({ version: 1, selectedId: 12 }), { version: 2, selected: [12], tab: 'experiments' });
  assert.deepEqual(readPersistedState({ version: 1, selectedId: null }), { version: 2, selected: [], tab: 'experiments' });
  assert.deepEqual(readPersistedState(undefined), { version: 2, selected: [], tab: 'experiments' });
  assert.deepEqual(readPersistedState({ version: 2, selected: ['<img>'], tab: 'experiments' }), { version: 2, selected: [], tab: 'experiments' });
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

test('records → curve skips missing losses, uses frac as x, keeps steps, and takes the anomalies the server found', () => {
  const records = [
    { step: 0, t: 0.5, frac: 0.1, loss: 3 },
    { step: 1, t: 1, frac: 0.2, loss: null },
    { step: 2, t: 1.5, frac: 0.3, loss: 2.5 },
  ];
  assert.deepEqual(recordsToCurve(2, records), { expId: 2, xs: [0.1, 0.3], ys: [3, 2.5], steps: [0, 2] });
  const anomalies = [{ kind: 'spike', frac: 0.3, step: 2, message: 'loss ×3.2 spike at 30% of budget', factor: 3.2 }, { kind: 'bogus' }];
  assert.deepEqual(recordsToCurve(2, records, anomalies).anomalies, [{ kind: 'spike', frac: 0.3, step: 2, message: 'loss ×3.2 spike at 30% of budget' }]);
});

test('toPanelExperiment keeps strings as data and drops non-finite numbers', () => {
  const p = toPanelExperiment({ id: 1, status: 'kept', source: 'llm:x', hypothesis: '<script>', metric: Number.NaN, delta: -0.1 });
  assert.equal(p.hypothesis, '<script>');
  assert.equal(p.metric, null);
  assert.equal(p.delta, -0.1);
  assert.equal(p.confirms, null);
  assert.equal(p.hasLog, false);
  assert.deepEqual(p.warnings, {});
});

test('toPanelExperiment reads the record: steps, time, t_crit, question, warnings, effect, the reason in the researcher’s words', () => {
  const p = toPanelExperiment({
    id: 9,
    status: 'discarded',
    source: 'user',
    hypothesis: 'h',
    reason: 'user_rejected',
    rejectionReason: 'too risky',
    summary: { num_steps: 2, training_seconds: 1.5 },
    timings: { wall: 14.2 },
    numbers: { t_crit: 2.13, runs: 1 },
    question: 3,
    warnings: { barely_trained: 'ran 2 optimizer steps: loss ≈ ln(vocab)', bad: 5 },
    effect: { better: -0.03, low: -0.05, high: -0.01, level: 0.95 },
    logPath: '/w/.sigmaloop/logs/9.log',
    verdict: '0.030 worse, 1.5σ',
  } as never);
  assert.equal(p.steps, 2);
  assert.equal(p.seconds, 14.2);
  assert.equal(p.tCrit, 2.13);
  assert.equal(p.question, 3);
  assert.deepEqual(p.warnings, { barely_trained: 'ran 2 optimizer steps: loss ≈ ln(vocab)' });
  assert.deepEqual(p.effect, { better: -0.03, low: -0.05, high: -0.01, level: 0.95 });
  assert.equal(p.hasLog, true);
  assert.equal(p.rejectionReason, 'too risky');
  // no wall time: the training seconds
  assert.equal(toPanelExperiment({ id: 1, status: 'kept', source: 'baseline', summary: { training_seconds: 30.1 } }).seconds, 30.1);
  assert.equal(toPanelExperiment({ id: 1, status: 'kept', source: 'baseline', effect: { better: 'x' } } as never).effect, null);
});
