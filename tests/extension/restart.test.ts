import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeCause, exitLine, isRootConfig, restartDecision, restartQuestion } from '../../extension/src/restart';
import { parseEngineState } from '../../extension/src/engineState';
import { ExperimentStore } from '../../extension/src/store';

const ws = '/home/u/project';

test("the watcher counts only the workspace root's sigmaloop.toml", () => {
  assert.ok(isRootConfig(`${ws}/sigmaloop.toml`, [ws]));
  assert.ok(isRootConfig(`${ws}/sub/sigmaloop.toml`, [ws, `${ws}/sub`]), 'the server root (a subfolder) counts too');
  // a trial's worktree holds a copy, created and deleted with every trial
  assert.ok(!isRootConfig(`${ws}/.sigmaloop/worktrees/exp-3/sigmaloop.toml`, [ws]));
  assert.ok(!isRootConfig(`${ws}/.sigmaloop/sigmaloop.toml`, [ws, `${ws}/.sigmaloop`]), 'nothing under the state folder, even if named a root');
  assert.ok(!isRootConfig(`${ws}/vendor/other/sigmaloop.toml`, [ws]));
  assert.ok(!isRootConfig(`${ws}/sigmaloop.toml.bak`, [ws]));
  assert.ok(!isRootConfig(`${ws}/sigmaloop.toml`, []));
  assert.ok(isRootConfig(`${ws}/./sigmaloop.toml`, [`${ws}/`]));
});

test('restart at once when idle; ask when trials run, are queued, or a loop runs', () => {
  assert.equal(restartDecision({ running: [], queued: [], loop: false }), 'now');
  assert.equal(restartDecision({ running: [3], queued: [], loop: false }), 'ask');
  assert.equal(restartDecision({ running: [], queued: [4], loop: false }), 'ask');
  assert.equal(restartDecision({ running: [], queued: [], loop: true }), 'ask');
});

test('what a restart would stop, from the store (records) and from the state', () => {
  const store = new ExperimentStore();
  assert.deepEqual(store.busy(), { running: [], queued: [], loop: false });
  store.upsert({ id: 1, status: 'running', source: 'baseline' });
  store.upsert({ id: 2, status: 'queued', source: 'baseline' });
  store.upsert({ id: 3, status: 'kept', source: 'tune' });
  assert.deepEqual(store.busy(), { running: [1], queued: [2], loop: false });
  store.state = parseEngineState({ metric: 'val_bpb', direction: 'minimize', running: [1], loop: { running: true } });
  assert.deepEqual(store.busy(), { running: [1], queued: [2], loop: true });
  // the state lags the records a little: a trial either calls running is running
  store.upsert({ id: 2, status: 'running', source: 'baseline' });
  store.state = parseEngineState({ metric: 'val_bpb', direction: 'minimize', running: [] });
  assert.deepEqual(store.busy(), { running: [1, 2], queued: [], loop: false });
});

test('every restart has a cause in words; the modal names what would stop', () => {
  assert.equal(describeCause({ kind: 'config', change: 'deleted', file: `${ws}/sigmaloop.toml` }), `${ws}/sigmaloop.toml was deleted`);
  assert.equal(describeCause({ kind: 'deferred', cause: { kind: 'setting', key: 'sigmaloop.pythonPath' } }), 'sigmaloop.pythonPath changed (deferred until the trials ended)');
  assert.equal(
    restartQuestion({ kind: 'command' }, { running: [5, 6], queued: [7], loop: true }),
    'Restart Server was run: restart the Sigmaloop server now? That stops the loop, 2 running trials (#5, #6), 1 queued trial.',
  );
});

test('a requested stop is logged as information, an unexpected exit as an error', () => {
  assert.deepEqual(exitLine(0, null, true), { level: 'info', text: 'server process exited (code 0) after a requested stop' });
  assert.deepEqual(exitLine(1, null, false), { level: 'error', text: 'server process exited unexpectedly (code 1)' });
  assert.deepEqual(exitLine(null, 'SIGKILL', false), { level: 'error', text: 'server process exited unexpectedly (signal SIGKILL)' });
});
