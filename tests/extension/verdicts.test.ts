// Verdicts the edit under test cannot game, on the client: the noise advisor next to the
// reference, implausible gains waiting for a look, tampered / over-budget runs never read as a keep.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHostToPanel, isPanelExperiment, toPanelExperiment } from '../../extension/src/contract';
import { keepText, parseEngineState, referenceLine, stateTooltip } from '../../extension/src/engineState';
import { verdictNotice } from '../../extension/src/status';
import { ExperimentStore } from '../../extension/src/store';

const advice =
  'the judge can only keep improvements of 0.035 val_bpb or more (1.6% of the reference): run-to-run noise is large here. More baseline seeds (now 3; judge.seeds), a longer budget, or fewer sources of nondeterminism in the script would lower it';
const state = {
  metric: 'val_bpb',
  direction: 'minimize',
  reference: { value: 2.1234, sigma: 0.0123, sigmaDof: 2, seeds: [42, 43, 44], ids: [1, 2, 3], keepThreshold: 0.0348, advice },
  best: { id: 1, metric: 2.1234, hypothesis: 'baseline' },
  counts: { kept: 3, tampered: 1 },
  kept: 0,
  run: 1,
  running: [],
  calibration: null,
  loop: { running: false, iteration: 0, iterations: 0, phase: '' },
  configError: null,
};

test('the noise advisor: the state keeps the keep threshold and the advice; the panel line and the tooltip say them', () => {
  const s = parseEngineState(state);
  assert.ok(s?.reference);
  assert.equal(s.reference.keepThreshold, 0.0348);
  assert.equal(s.reference.advice, advice);
  assert.equal(keepText(s.reference), 'keeps ≥ 0.035 (1.6%)');
  assert.deepEqual(referenceLine(s), { text: 'val_bpb 2.123 ± 0.012 (3 seeds) · keeps ≥ 0.035 (1.6%)', advice });
  const tip = stateTooltip(s).join('\n');
  assert.match(tip, /keeps ≥ 0\.035 \(1\.6%\): the smallest improvement the judge can keep/);
  assert.ok(tip.includes(advice));
  // a quiet project: the threshold, no advice; an older server: neither (never guessed)
  const quiet = parseEngineState({ ...state, reference: { ...state.reference, keepThreshold: 0.004, advice: null } });
  assert.deepEqual(referenceLine(quiet), { text: 'val_bpb 2.123 ± 0.012 (3 seeds) · keeps ≥ 0.004 (0.2%)', advice: null });
  const old = parseEngineState({ ...state, reference: { value: 1, sigma: null, sigmaDof: 0, seeds: [42], ids: [1] } });
  assert.equal(old?.reference?.keepThreshold, undefined);
  assert.deepEqual(referenceLine(old), { text: 'val_bpb 1.0000 (1 seed)', advice: null });
  assert.deepEqual(referenceLine(parseEngineState({ metric: 'm', direction: 'minimize' })), { text: '', advice: null });
});

test('the panel takes the reference line and the verdict fields, and still validates strictly', () => {
  assert.ok(isHostToPanel({ type: 'reference', text: 'val_bpb 2.123 ± 0.012', advice }));
  assert.ok(isHostToPanel({ type: 'reference', text: '', advice: null }));
  assert.ok(!isHostToPanel({ type: 'reference', text: 3, advice: null }));
  assert.ok(!isHostToPanel({ type: 'reference', text: '' }));
  const row = toPanelExperiment({ id: 7, status: 'tampered', source: 'tune', reason: 'metric_mismatch', evaluator: 'self-reported' });
  assert.equal(row.reason, 'metric_mismatch');
  assert.equal(row.evaluator, 'self-reported');
  assert.ok(isPanelExperiment(row));
  assert.ok(!isPanelExperiment({ ...row, reason: 5 }));
  const bare: Record<string, unknown> = { ...row }; // the bench and older hosts send neither
  delete bare.reason;
  delete bare.evaluator;
  assert.ok(isPanelExperiment(bare));
});

test('notifications: an implausible gain offers Accept / Reject Result; tampered is an error; over budget a warning; a keep is not announced', () => {
  const held = verdictNotice({ id: 9, status: 'discarded', source: 'tune', reason: 'implausible', verdict: '-1.1500 val_bpb, 163.0σ: implausibly large', evaluator: 'self-reported' });
  assert.equal(held?.level, 'warning');
  assert.match(held?.message ?? '', /#9 cleared the bar by an implausible margin \(self-reported metric\); it is not kept until you look — -1\.1500/);
  assert.deepEqual(
    held?.actions.map((a) => a.command),
    ['sigmaloop.showExperiment', 'sigmaloop.acceptResult', 'sigmaloop.rejectResult'],
  );
  const tampered = verdictNotice({ id: 4, status: 'tampered', source: 'llm:m', reason: 'metric_mismatch', verdict: "tampered: the printed metric is not the evaluator's" });
  assert.equal(tampered?.level, 'error');
  assert.match(tampered?.message ?? '', /#4 tampered: its result can't be trusted/);
  assert.equal(verdictNotice({ id: 5, status: 'over_budget', source: 'tune', reason: 'over_budget' })?.level, 'warning');
  assert.equal(verdictNotice({ id: 6, status: 'kept', source: 'tune', reason: 'result_accepted' }), undefined);
  assert.equal(verdictNotice({ id: 6, status: 'discarded', source: 'tune', reason: 'result_rejected' }), undefined);
});

test('the store lists the implausible gains waiting for a look (the Accept / Reject Result quick pick)', () => {
  const s = new ExperimentStore();
  s.upsert({ id: 3, status: 'discarded', source: 'tune', reason: 'implausible' });
  s.upsert({ id: 4, status: 'discarded', source: 'tune', reason: 'within_noise' });
  s.upsert({ id: 5, status: 'discarded', source: 'tune', reason: 'implausible' });
  s.upsert({ id: 6, status: 'kept', source: 'tune', reason: 'result_accepted' });
  assert.deepEqual(
    s.awaitingReview().map((e) => e.id),
    [5, 3],
  );
  s.upsert({ id: 5, status: 'discarded', source: 'tune', reason: 'result_rejected' });
  assert.deepEqual(
    s.awaitingReview().map((e) => e.id),
    [3],
  );
});
