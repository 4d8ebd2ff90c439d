import assert from 'node:assert/strict';
import { test } from 'node:test';
import { initializationOptions, keyHost, normalizeSettings, quoteArg, resolveInterpreter, serverEnv } from '../../extension/src/settings';

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

test('the stored API key is in no environment and no initialization option (it goes over the connection)', () => {
  const env = serverEnv({ PATH: '/bin', UNSET: undefined });
  assert.equal(env.PATH, '/bin');
  assert.equal(env.PYTHONUNBUFFERED, '1');
  assert.ok(!('UNSET' in env));
  assert.ok(!('OPENAI_API_KEY' in env));
  const init = JSON.stringify(initializationOptions(normalizeSettings(() => null), true));
  assert.ok(!init.includes('sk-'));
});

test('the host a key is stored for: the host of the base URL, else none', () => {
  assert.equal(keyHost('http://127.0.0.1:11434/v1'), '127.0.0.1');
  assert.equal(keyHost(' https://API.example.com/v1 '), 'api.example.com');
  assert.equal(keyHost(''), null);
  assert.equal(keyHost(undefined), null);
  assert.equal(keyHost('not a url'), null);
});

test('shell quoting leaves plain paths alone and quotes spaces and quotes', () => {
  assert.equal(quoteArg('/usr/bin/python3'), '/usr/bin/python3');
  assert.equal(quoteArg('/My Envs/py'), `'/My Envs/py'`);
  assert.equal(quoteArg(`it's`), `'it'\\''s'`);
});
