import assert from 'node:assert/strict';
import { test } from 'node:test';
import { initializationOptions, normalizeSettings, quoteArg, resolveInterpreter, serverEnv } from '../../extension/src/settings';

test('interpreter: explicit setting, then the Python extension, then python3', () => {
  assert.deepEqual(resolveInterpreter({ setting: '/opt/py/bin/python', pythonExtension: '/venv/bin/python' }), { path: '/opt/py/bin/python', source: 'setting' });
  assert.deepEqual(resolveInterpreter({ setting: '  ', pythonExtension: '/venv/bin/python' }), { path: '/venv/bin/python', source: 'python-extension' });
  assert.deepEqual(resolveInterpreter({ setting: '', pythonExtension: null }), { path: 'python3', source: 'default' });
  assert.equal(resolveInterpreter({ setting: '${workspaceFolder}/.venv/bin/python' }, { workspaceFolder: '/ws' }).path, '/ws/.venv/bin/python');
  assert.equal(resolveInterpreter({ setting: '~/py/bin/python' }, { home: '/home/u' }).path, '/home/u/py/bin/python');
});

test('settings forwarded to the server are normalized', () => {
  const values: Record<string, unknown> = { budget: 5, slots: 2.7, proposer: 'llm', 'llm.baseUrl': ' http://127.0.0.1:11434/v1 ', 'llm.model': '' };
  assert.deepEqual(normalizeSettings((k) => values[k]), { budget: 5, slots: 2, proposer: 'llm', llm: { baseUrl: 'http://127.0.0.1:11434/v1', model: null } });
  assert.deepEqual(normalizeSettings(() => null), { budget: null, slots: null, proposer: null, llm: { baseUrl: null, model: null } });
  assert.equal(normalizeSettings((k) => (k === 'proposer' ? 'rm -rf' : k === 'budget' ? -1 : undefined)).proposer, null);
});

test('the API key goes to the server environment only', () => {
  const env = serverEnv({ PATH: '/bin', UNSET: undefined }, 'sk-123');
  assert.equal(env.OPENAI_API_KEY, 'sk-123');
  assert.equal(env.PATH, '/bin');
  assert.ok(!('UNSET' in env));
  assert.ok(!('OPENAI_API_KEY' in serverEnv({}, undefined)));
  const init = JSON.stringify(initializationOptions(normalizeSettings(() => null), true));
  assert.ok(!init.includes('sk-123'));
});

test('shell quoting leaves plain paths alone and quotes spaces and quotes', () => {
  assert.equal(quoteArg('/usr/bin/python3'), '/usr/bin/python3');
  assert.equal(quoteArg('/My Envs/py'), `'/My Envs/py'`);
  assert.equal(quoteArg(`it's`), `'it'\\''s'`);
});
