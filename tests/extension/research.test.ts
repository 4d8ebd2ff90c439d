// The research commands' words, pure: the rejection prompt tells the truth per proposer, a
// predicted Δ is a number or skipped, the question pick, a finished experiment said once, the
// status bar says "evaluating" once the budget is spent, the diff tab's title follows the status.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closablePicks, diffTitleStatus, finishedMessage, logPicks, parseDelta, questionPicks, rejectPrompt, validateDelta } from '../../extension/src/commands/prompts';
import type { QuestionState } from '../../extension/src/protocol.gen';
import { statusView, trialActivity } from '../../extension/src/status';
import { ExperimentStore } from '../../extension/src/store';

test('the reject prompt says what each proposer does with the reason', () => {
  assert.match(rejectPrompt('llm:gpt-4o-mini'), /the LLM proposer reads it in its next prompt/);
  assert.match(rejectPrompt('tune'), /the tuner records it as a rejected point; it doesn't read text/);
  assert.doesNotMatch(rejectPrompt('tune'), /reads it/);
  assert.equal(rejectPrompt('user'), 'Why? (optional; kept with the proposal)');
});

test('a predicted Δ: a number, a minus sign of either kind, empty skips, words are refused', () => {
  assert.equal(parseDelta('-0.01'), -0.01);
  assert.equal(parseDelta(' −0.02 '), -0.02);
  assert.equal(parseDelta('+1e-3'), 0.001);
  assert.equal(parseDelta(''), null);
  assert.equal(parseDelta('lower'), undefined);
  assert.equal(parseDelta('0.01.2'), undefined);
  assert.equal(validateDelta('-0.01'), undefined);
  assert.equal(validateDelta(''), undefined);
  assert.match(validateDelta('a lot') ?? '', /a number like -0.01/);
});

const questions: QuestionState[] = [
  { id: 1, text: 'Does warmup help?', decision: 'if ≥ 0.01 better I switch', status: 'open', answer: '', experiments: [3], verdict: 'open: 1 measured' },
  { id: 2, text: 'Is depth 6 too slow?', decision: '', status: 'answered', answer: 'yes', experiments: [], verdict: 'answered: yes' },
];

test('the question pick: open questions only, "none" first; no pick without open questions', () => {
  const picks = questionPicks(questions);
  assert.deepEqual(
    picks.map((p) => [p.label, p.id]),
    [
      ['none', null],
      ['Q1: Does warmup help?', 1],
    ],
  );
  assert.equal(picks[1].description, 'decides: if ≥ 0.01 better I switch');
  assert.deepEqual(questionPicks([questions[1]]), []);
  assert.deepEqual(questionPicks(undefined), []);
  assert.deepEqual(
    closablePicks(questions).map((p) => p.description),
    ['open', 'answered'],
  );
});

test('a finished experiment is said once: a crash with its place, a verdict without repeating its status', () => {
  const crash = { id: 7, status: 'crashed', source: 'user', verdict: 'crashed: FAIL crashed: RuntimeError: boom', crash: { file: 'train.py', line: 33, message: 'RuntimeError: boom' } };
  assert.equal(finishedMessage(crash), 'Sigmaloop: #7 crashed: RuntimeError: boom (train.py:33)');
  assert.equal(finishedMessage({ id: 8, status: 'crashed', source: 'user', verdict: 'crashed: out of memory', detail: '' }), 'Sigmaloop: #8 crashed: out of memory');
  assert.equal(finishedMessage({ id: 12, status: 'kept', source: 'user', verdict: '0.012 bpb better, 3.1σ; kept' }), 'Sigmaloop: #12 0.012 bpb better, 3.1σ; kept');
  assert.equal(
    finishedMessage({ id: 9, status: 'discarded', source: 'user', verdict: '0.037 bpb worse, 0.7σ; keep needs ≥ 2σ better' }),
    'Sigmaloop: #9 discarded: 0.037 bpb worse, 0.7σ; keep needs ≥ 2σ better',
  );
  assert.equal(finishedMessage({ id: 5, status: 'over_budget', source: 'user', verdict: '' }), 'Sigmaloop: #5 over budget');
});

test('the log pick: experiments with a log, newest first', () => {
  const picks = logPicks([
    { id: 1, status: 'kept', source: 'baseline', logPath: '/l/1.log', hypothesis: 'baseline (seed 42)' },
    { id: 2, status: 'proposed', source: 'tune' },
    { id: 3, status: 'crashed', source: 'user', logPath: '/l/3.log' },
  ]);
  assert.deepEqual(
    picks.map((p) => [p.id, p.label]),
    [
      [3, '#3 crashed'],
      [1, '#1 kept · baseline (seed 42)'],
    ],
  );
});

test('the status bar says evaluating once the budget is spent, judging after; the diff title follows the status', () => {
  assert.equal(trialActivity(12, 0.43, 'training'), 'running #12 at 43%');
  assert.equal(trialActivity(12, 1, 'training'), 'evaluating #12');
  assert.equal(trialActivity(12, 1, 'judging'), 'judging #12');
  const store = new ExperimentStore();
  store.upsert({ id: 12, status: 'running', source: 'user', phase: 'training' });
  store.applyProgress({ expId: 12, records: [{ step: 5, t: 2, frac: 1, loss: 2.5 }] });
  assert.match(statusView('running', store).text, /evaluating #12/);
  assert.doesNotMatch(statusView('running', store).text, /100%/);
  assert.equal(diffTitleStatus('proposed'), 'proposed');
  assert.equal(diffTitleStatus('queued'), 'running');
  assert.equal(diffTitleStatus('over_budget'), 'over budget');
});
