import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReference, panelReference, parseEngineState, stateSummary, stateTooltip } from '../../extension/src/engineState';
import { statusView, stoppedMessage } from '../../extension/src/status';
import { ExperimentStore } from '../../extension/src/store';

const wire = {
  metric: 'val_bpb',
  direction: 'minimize',
  reference: { value: 0.99791, sigma: 0.00123, sigmaDof: 1, seeds: [42, 43], ids: [1, 2] },
  best: { id: 7, metric: 0.9912, hypothesis: 'deeper' },
  counts: { kept: 3, discarded: 2, running: 0 },
  kept: 1,
  run: 3,
  running: [],
  calibration: null,
  loop: { running: false, iteration: 0, iterations: 0, phase: '' },
  configError: null,
};

test('sigmaloop/state is read tolerantly; a message without metric or direction is not a state', () => {
  const s = parseEngineState(wire);
  assert.ok(s);
  assert.equal(s.direction, 'minimize');
  assert.deepEqual(s.reference?.seeds, [42, 43]);
  assert.equal(parseEngineState({ direction: 'minimize' }), undefined);
  assert.equal(parseEngineState({ metric: 'x', direction: 'sideways' }), undefined);
  const bare = parseEngineState({ metric: 'val_acc', direction: 'maximize' });
  assert.ok(bare);
  assert.equal(bare.reference, null);
  assert.equal(bare.best, null);
  assert.deepEqual(bare.loop, { running: false, iteration: 0, iterations: 0, phase: '' });
});

test('the state’s questions are read tolerantly (an older server sends none)', () => {
  assert.deepEqual(parseEngineState(wire)?.questions, []);
  const s = parseEngineState({
    ...wire,
    questions: [
      { id: 1, text: 'Does warmup matter?', decision: 'drop warmup if not ≥ 0.01 better', status: 'open', answer: '', experiments: [3, 4, 'x'], verdict: '2 experiments: no effect clears the noise' },
      { id: 2, text: 'Is depth 8 better?', status: 'answered', answer: 'no', experiments: [5] },
      { text: 'no id' },
      'junk',
    ],
  });
  assert.deepEqual(s?.questions, [
    { id: 1, text: 'Does warmup matter?', decision: 'drop warmup if not ≥ 0.01 better', status: 'open', answer: '', experiments: [3, 4], verdict: '2 experiments: no effect clears the noise' },
    { id: 2, text: 'Is depth 8 better?', decision: '', status: 'answered', answer: 'no', experiments: [5], verdict: '' },
  ]);
});

test('the panel’s reference: the line, the numbers the charts draw, the reference runs and the best', () => {
  const ref = panelReference(parseEngineState({ ...wire, reference: { ...wire.reference, keepThreshold: 0.004 } }));
  assert.equal(ref.text, 'val_bpb 0.9979 ± 0.0012 (2 seeds) · keeps ≥ 0.004 (0.4%)');
  assert.deepEqual([ref.value, ref.sigma, ref.keepThreshold, ref.ids, ref.bestId], [0.99791, 0.00123, 0.004, [1, 2], 7]);
  assert.deepEqual(panelReference(undefined), { text: '', advice: null, value: null, sigma: null, keepThreshold: null, ids: [], bestId: null });
});

test('reference ± σ with σ to two significant digits', () => {
  assert.equal(formatReference({ value: 0.99791, sigma: 0.00123, sigmaDof: 1, seeds: [], ids: [] }), '0.9979 ± 0.0012');
  assert.equal(formatReference({ value: 12.3456, sigma: 0.5, sigmaDof: 3, seeds: [], ids: [] }), '12.35 ± 0.50');
  assert.equal(formatReference({ value: 0.5, sigma: null, sigmaDof: 0, seeds: [], ids: [] }), '0.5000');
});

test('state → status bar: idle with reference ± σ and the best; the best value only when it differs', () => {
  const store = new ExperimentStore();
  store.state = parseEngineState(wire);
  assert.equal(statusView('running', store).text, '$(beaker) idle · val_bpb 0.9979 ± 0.0012 · best #7 0.9912');
  store.state = parseEngineState({ ...wire, best: { id: 2, metric: 0.99791, hypothesis: '' } });
  assert.equal(statusView('running', store).text, '$(beaker) idle · val_bpb 0.9979 ± 0.0012 · best #2');
  const tip = statusView('running', store).tooltip;
  assert.match(tip, /val_bpb, lower is better/);
  assert.match(tip, /reference 0\.9979 ± 0\.0012, 1 dof on seeds 42, 43/);
  assert.match(tip, /3 kept, 2 discarded/);
});

test('state → status bar: the loop and the running trials come from the state; a config error shows', () => {
  const store = new ExperimentStore();
  store.state = parseEngineState({ ...wire, running: [12, 13], loop: { running: true, iteration: 7, iterations: 20, phase: 'running #12' } });
  store.applyProgress({ expId: 12, records: [{ step: 3, t: 1, frac: 0.43, loss: 2 }] });
  assert.match(statusView('running', store).text, /^\$\(sync~spin\) loop 7 of 20 · running #12 at 43% \(\+1\) · val_bpb 0\.9979/);
  assert.match(statusView('running', store).tooltip, /loop: running #12/);
  store.state = parseEngineState({ ...wire, configError: 'experiment.direction must be "minimize" or "maximize"' });
  assert.equal(statusView('running', store).text, '$(warning) idle · config error');
  assert.match(statusView('running', store).tooltip, /sigmaloop\.toml: experiment\.direction must be/);
  assert.deepEqual(stateSummary(parseEngineState({ metric: 'm', direction: 'maximize' })!), '');
  assert.match(stateTooltip(parseEngineState({ metric: 'val_acc', direction: 'maximize' })!).join('\n'), /val_acc, higher is better[\s\S]*run the baseline/);
});

test('Stop Loop says what it stopped', () => {
  const before = new Map([
    [12, 'running'],
    [13, 'queued'],
  ]);
  assert.equal(stoppedMessage([13, 12], before, true), 'Sigmaloop: stopped the loop, #12 (running) and #13 (queued).');
  assert.equal(stoppedMessage([12], before, false), 'Sigmaloop: stopped #12 (running).');
  assert.equal(stoppedMessage([], before, false), 'Sigmaloop: nothing was running; nothing stopped.');
});
