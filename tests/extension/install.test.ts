import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  checkServerVersion,
  explainInstallFailure,
  installOffer,
  installPlan,
  lastErrorLine,
  pickBundledWheel,
  pipEnv,
  sameVersion,
  wheelVersion,
} from '../../extension/src/install';

const join = (...p: string[]) => path.posix.join(...p);
const WHEEL = 'sigmaloop-0.1.0-py3-none-any.whl';

test('package.json, pyproject.toml and sigmaloop.__version__ agree (the .vsix carries the wheel of its own version)', () => {
  const pkg = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
  const pyproject = readFileSync('pyproject.toml', 'utf8');
  const project = /^\[project\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(pyproject)?.[1] ?? '';
  const init = /^__version__\s*=\s*["']([^"']+)["']/m.exec(readFileSync('server/sigmaloop/__init__.py', 'utf8'))?.[1];
  assert.ok(init, 'server/sigmaloop/__init__.py has no __version__');
  assert.equal(pkg, init, `package.json ${pkg} vs server/sigmaloop/__init__.py ${init}`);
  if (!/^dynamic\s*=.*["']version["']/m.test(project)) {
    const py = /^version\s*=\s*["']([^"']+)["']/m.exec(project)?.[1];
    assert.equal(py, pkg, `pyproject.toml [project] version ${py} vs package.json ${pkg}`);
  }
});

test('the .vsix ships the bundled wheel, and npm run package builds it first', () => {
  const ignore = readFileSync('.vscodeignore', 'utf8').split('\n');
  assert.ok(ignore.includes('!bundled/sigmaloop-*.whl'));
  const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.match(scripts.package, /esbuild\.mjs[^&]*--wheel.*&& vsce package/);
  assert.ok(readFileSync('.gitignore', 'utf8').split('\n').includes('bundled/'));
});

test('the wheel of exactly this version is picked; other packages and versions are not', () => {
  assert.equal(wheelVersion(WHEEL), '0.1.0');
  assert.equal(wheelVersion('sigmaloop-0.1.0rc1-1-py3-none-any.whl'), '0.1.0rc1');
  assert.equal(wheelVersion('other-0.1.0-py3-none-any.whl'), undefined);
  assert.equal(wheelVersion('sigmaloop-0.1.0.tar.gz'), undefined);
  assert.equal(pickBundledWheel(['README', 'other-0.1.0-py3-none-any.whl', 'sigmaloop-0.0.9-py3-none-any.whl', WHEEL], '0.1.0'), WHEEL);
  assert.equal(pickBundledWheel(['sigmaloop-0.0.9-py3-none-any.whl'], '0.1.0'), undefined);
  assert.equal(pickBundledWheel([], '0.1.0'), undefined);
});

test('install plan: the bundled wheel by path, never a bare name from an index', () => {
  const plan = installPlan({ python: '/ws/.venv/bin/python', version: '0.1.0', bundledDir: '/ext/bundled', bundledFiles: [WHEEL], join });
  assert.equal(plan.kind, 'wheel');
  assert.ok(plan.kind === 'wheel');
  assert.deepEqual(plan.args, ['-m', 'pip', 'install', `/ext/bundled/${WHEEL}`]);
  assert.equal(plan.command, `/ws/.venv/bin/python -m pip install /ext/bundled/${WHEEL}`);
  assert.ok(!plan.args.includes('sigmaloop'), 'no bare package name');
  assert.ok(!plan.args.some((a) => a.includes('[')), 'no extras (the server never needs torch)');
  // paths with spaces are quoted in the command shown to the user, not in the argv
  const spaced = installPlan({ python: '/My Envs/py', version: '0.1.0', bundledDir: '/Ext Dir/bundled', bundledFiles: [WHEEL], join });
  assert.ok(spaced.kind === 'wheel');
  assert.equal(spaced.command, `'/My Envs/py' -m pip install '/Ext Dir/bundled/${WHEEL}'`);
  assert.equal(spaced.args[3], `/Ext Dir/bundled/${WHEEL}`);
});

test('install plan without a bundled wheel (a dev build): the source checkout, else a command to adapt', () => {
  const src = installPlan({ python: 'python3', version: '0.1.0', bundledDir: '/repo/bundled', bundledFiles: [], checkout: '/repo', join });
  assert.ok(src.kind === 'source');
  assert.deepEqual(src.args, ['-m', 'pip', 'install', '-e', '/repo']);
  assert.equal(src.command, 'python3 -m pip install -e /repo');
  const none = installPlan({ python: 'python3', version: '0.1.0', bundledDir: '/ext/bundled', bundledFiles: ['sigmaloop-0.0.9-py3-none-any.whl'], join });
  assert.equal(none.kind, 'none');
  assert.equal(none.command, 'python3 -m pip install -e <your sigmaloop checkout>');
  const msg = installOffer(none, { kind: 'missing' }, '0.1.0');
  assert.match(msg, /carries no bundled wheel/);
  assert.match(msg, /-m pip install -e <your sigmaloop checkout>/);
});

test('the offer names the interpreter, the reason and the bundled wheel', () => {
  const plan = installPlan({ python: '/v/bin/python', version: '0.1.0', bundledDir: '/ext/bundled', bundledFiles: [WHEEL], join });
  const missing = installOffer(plan, { kind: 'missing' }, '0.1.0');
  assert.match(missing, /"\/v\/bin\/python" does not have the sigmaloop package/);
  assert.ok(missing.includes(`Install the bundled sigmaloop 0.1.0 (${WHEEL})`));
  assert.ok(missing.includes(`/v/bin/python -m pip install /ext/bundled/${WHEEL}`));
  const mismatch = installOffer(plan, { kind: 'mismatch', server: '0.0.9' }, '0.1.0');
  assert.match(mismatch, /the server in "\/v\/bin\/python" is sigmaloop 0\.0\.9, this extension is 0\.1\.0/);
  assert.match(installOffer(plan, { kind: 'mismatch', server: undefined }, '0.1.0'), /does not report itself/);
});

test('version check: serverInfo.version against the extension version', () => {
  assert.deepEqual(checkServerVersion('0.1.0', '0.1.0'), { kind: 'match', version: '0.1.0' });
  assert.equal(checkServerVersion('0.1', '0.1.0').kind, 'match');
  assert.equal(checkServerVersion('v0.1.0', '0.1.0').kind, 'match');
  assert.deepEqual(checkServerVersion('0.0.9', '0.1.0'), { kind: 'mismatch', server: '0.0.9', extension: '0.1.0' });
  assert.deepEqual(checkServerVersion(undefined, '0.1.0'), { kind: 'mismatch', server: undefined, extension: '0.1.0' });
  assert.deepEqual(checkServerVersion(' ', '0.1.0'), { kind: 'mismatch', server: undefined, extension: '0.1.0' });
  assert.deepEqual(checkServerVersion(3, '0.1.0'), { kind: 'mismatch', server: undefined, extension: '0.1.0' });
  assert.ok(!sameVersion('0.1.0', '0.1.0.dev1'));
  assert.ok(!sameVersion('0.10.0', '0.1.0'));
  assert.ok(sameVersion('1.0.0', '1'));
});

test('pip runs non-interactively, without the API key', () => {
  const env = pipEnv({ PATH: '/bin', OPENAI_API_KEY: 'sk-1', GONE: undefined });
  assert.equal(env.PATH, '/bin');
  assert.equal(env.PIP_NO_INPUT, '1');
  assert.equal(env.PIP_PROGRESS_BAR, 'off');
  assert.ok(!('OPENAI_API_KEY' in env));
  assert.ok(!('GONE' in env));
});

test('a failed install says what to do, with the exact command', () => {
  const plan = installPlan({ python: '/usr/bin/python3', version: '0.1.0', bundledDir: '/ext/bundled', bundledFiles: [WHEEL], join });
  assert.ok(plan.kind === 'wheel');
  const cmd = `/usr/bin/python3 -m pip install /ext/bundled/${WHEEL}`;
  const pep668 = explainInstallFailure(plan, { code: 1 }, 'error: externally-managed-environment\n\n× This environment is externally managed\n');
  assert.match(pep668, /managed by the system \(PEP 668\)/);
  assert.match(pep668, /python3 -m venv \.venv/);
  assert.ok(pep668.endsWith(cmd));
  const nopip = explainInstallFailure(plan, { code: 1 }, '/usr/bin/python3: No module named pip\n');
  assert.match(nopip, /has no pip/);
  assert.match(nopip, /-m ensurepip/);
  const generic = explainInstallFailure(plan, { code: 1 }, 'Processing x\nERROR: Could not find a version that satisfies the requirement pygls<3,>=2.0\nERROR: No matching distribution found for pygls<3,>=2.0\n');
  assert.match(generic, /pip exited with 1 \(ERROR: No matching distribution found for pygls<3,>=2\.0\)/);
  assert.ok(generic.endsWith(cmd));
  assert.match(explainInstallFailure(plan, { code: null, spawnError: 'spawn /usr/bin/python3 ENOENT' }, ''), /could not run "\/usr\/bin\/python3" \(spawn .* ENOENT\)\. Set sigmaloop\.pythonPath/);
  assert.match(explainInstallFailure(plan, { code: null, signal: 'SIGKILL' }, ''), /pip was stopped \(SIGKILL\)/);
  assert.equal(lastErrorLine('a\n\nb\n'), 'b');
  assert.equal(lastErrorLine(''), undefined);
});
