import assert from 'node:assert/strict';
import { test } from 'node:test';
import { statusCommand, statusView } from '../../extension/src/status';
import { ExperimentStore, expIdFromPath, expPath, parseExpId } from '../../extension/src/store';

test('status bar before the first state: idle, running #12 at 43% from the records', () => {
  const s = new ExperimentStore();
  assert.match(statusView('running', s).text, /idle$/);
  s.upsert({ id: 12, status: 'running', source: 'tune' });
  s.applyProgress({ expId: 12, records: [{ step: 3, t: 1, frac: 0.43, loss: 2 }] });
  assert.match(statusView('running', s).text, /running #12 at 43%$/);
  s.upsert({ id: 13, status: 'running', source: 'tune' });
  assert.match(statusView('running', s).text, /running #12 at 43% \(\+1\)$/);
  assert.match(statusView('restricted', s).text, /restricted/);
  assert.match(statusView('failed', s).text, /failed/);
});

test('status bar: a missing package says "not installed" and a click installs; a dead server restarts', () => {
  const s = new ExperimentStore();
  assert.match(statusView('notInstalled', s).text, /not installed$/);
  assert.match(statusView('installing', s).text, /installing$/);
  assert.equal(statusCommand('notInstalled'), 'sigmaloop.installServer');
  assert.equal(statusCommand('failed'), 'sigmaloop.restartServer');
  assert.equal(statusCommand('running'), 'sigmaloop.showPanel');
  assert.equal(statusCommand('installing'), 'sigmaloop.showPanel');
});

test('queued trials show when none is running', () => {
  const s = new ExperimentStore();
  s.upsert({ id: 1, status: 'accepted', source: 'tune' });
  assert.match(statusView('running', s).text, /1 queued/);
});

test('stale revisions are ignored; partial updates merge', () => {
  const s = new ExperimentStore();
  assert.ok(s.upsert({ id: 1, status: 'running', source: 'tune', rev: 5, hypothesis: 'h' }));
  assert.ok(!s.upsert({ id: 1, status: 'proposed', source: 'tune', rev: 4 }));
  assert.equal(s.experiments.get(1)?.status, 'running');
  assert.ok(s.upsert({ id: 1, status: 'kept', source: 'tune', rev: 6 }));
  assert.equal(s.experiments.get(1)?.hypothesis, 'h');
  assert.deepEqual(s.kept().map((e) => e.id), [1]);
});

test('experiment ids from command arguments', () => {
  assert.equal(parseExpId(12), 12);
  assert.equal(parseExpId('#7'), 7);
  assert.equal(parseExpId({ id: 3 }), 3);
  assert.equal(parseExpId({ expId: 4 }), 4);
  assert.equal(parseExpId({ scheme: 'sigmaloop-exp', path: expPath(9, 'train.py') }), 9);
  assert.equal(parseExpId({ scheme: 'file', path: '/exp-9/train.py' }), undefined);
  assert.equal(parseExpId(-1), undefined);
  assert.equal(parseExpId('abc'), undefined);
  assert.equal(parseExpId(undefined), undefined);
  assert.equal(expIdFromPath('/exp-21/parent/train.py'), 21);
});
