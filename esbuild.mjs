// Bundles the extension host code (CommonJS, node) and the webview (IIFE, browser, with uPlot
// and its CSS) into out/. Flags: --production (minify, no sourcemaps), --watch, --tests (also
// bundle tests/extension/*.test.ts into out/test/ for `node --test`), --wheel (build the Python
// wheel of the same version into bundled/, which the .vsix carries: `npm run package`).
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');
const tests = process.argv.includes('--tests');
const wheel = process.argv.includes('--wheel');

/** The three places a version lives; they must agree (the .vsix carries the wheel of its own version). */
function versions() {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')).version;
  const pyproject = readFileSync('pyproject.toml', 'utf8');
  const project = /^\[project\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(pyproject)?.[1] ?? '';
  const dynamic = /^dynamic\s*=.*["']version["']/m.test(project);
  const py = dynamic ? undefined : /^version\s*=\s*["']([^"']+)["']/m.exec(project)?.[1];
  const init = /^__version__\s*=\s*["']([^"']+)["']/m.exec(readFileSync('server/sigmaloop/__init__.py', 'utf8'))?.[1];
  return { 'package.json': pkg, 'pyproject.toml': dynamic ? 'dynamic' : py, 'server/sigmaloop/__init__.py': init };
}

function fail(msg) {
  console.error(`esbuild.mjs: ${msg}`);
  process.exit(1);
}

function checkVersions() {
  const v = versions();
  const found = Object.values(v).filter((x) => x !== 'dynamic');
  if (found.some((x) => !x) || new Set(found).size !== 1) {
    const list = Object.entries(v).map(([f, x]) => `${f}: ${x ?? '(not found)'}`).join(', ');
    fail(`the versions differ (${list}). The .vsix carries the Python wheel of its own version: set the same version in all of them.`);
  }
  return v['package.json'];
}

function pythonForWheel() {
  if (process.env.PYTHON) {
    return process.env.PYTHON;
  }
  for (const p of ['.venv/bin/python', '.venv/Scripts/python.exe']) {
    if (existsSync(p)) {
      return p;
    }
  }
  return 'python3';
}

/**
 * bundled/sigmaloop-<version>-py3-none-any.whl, built with pip from a clean copy of the sources
 * (no stale build/ or egg-info, the trainer symlink resolved). Offline when the interpreter has
 * setuptools >= 77 (no build isolation); otherwise pip fetches the build backend.
 */
function bundleWheel(version) {
  const python = pythonForWheel();
  const stage = mkdtempSync(path.join(tmpdir(), 'sigmaloop-wheel-'));
  const skip = (src) => !/(^|[\\/])(__pycache__|[^\\/]+\.egg-info)$|\.py[cod]$/.test(src);
  try {
    for (const f of ['pyproject.toml', 'README.md', 'LICENSE']) {
      cpSync(f, path.join(stage, f));
    }
    for (const d of ['server', 'trainer']) {
      cpSync(d, path.join(stage, d), { recursive: true, dereference: true, filter: skip });
    }
    const probe = spawnSync(python, ['-c', 'import sys, setuptools; sys.exit(0 if int(setuptools.__version__.split(".")[0]) >= 77 else 1)'], { stdio: 'ignore' });
    if (probe.error) {
      fail(`cannot run "${python}" to build the wheel (${probe.error.message}). Set PYTHON to an interpreter with pip, or run scripts/setup.sh to make .venv.`);
    }
    rmSync('bundled', { recursive: true, force: true });
    mkdirSync('bundled');
    const args = ['-m', 'pip', 'wheel', stage, '--no-deps', '-q', '--disable-pip-version-check', '-w', path.resolve('bundled')];
    if (probe.status === 0) {
      args.push('--no-build-isolation');
    }
    const res = spawnSync(python, args, { stdio: 'inherit' });
    if (res.status !== 0) {
      fail(`building the wheel failed: ${python} ${args.join(' ')} exited with ${res.status ?? res.signal}`);
    }
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  const wheels = readdirSync('bundled').filter((f) => f.endsWith('.whl'));
  const want = `sigmaloop-${version}-`;
  if (wheels.length !== 1 || !wheels[0].startsWith(want)) {
    fail(`expected one ${want}*.whl in bundled/, found: ${wheels.join(', ') || 'none'}`);
  }
  console.log(`esbuild.mjs: bundled/${wheels[0]}`);
}

if (wheel) {
  bundleWheel(checkVersions());
}

const common = {
  bundle: true,
  minify: production,
  sourcemap: production ? false : 'linked',
  logLevel: 'warning',
  legalComments: 'none',
};

const builds = [
  {
    ...common,
    entryPoints: ['extension/src/extension.ts'],
    outfile: 'out/extension.js',
    platform: 'node',
    format: 'cjs',
    target: 'node18',
    external: ['vscode'],
  },
  {
    ...common,
    entryPoints: { webview: 'extension/webview/main.ts' },
    outdir: 'out',
    platform: 'browser',
    format: 'iife',
    target: 'es2020',
    loader: { '.css': 'css' },
  },
];

if (tests) {
  const files = readdirSync('tests/extension').filter((f) => f.endsWith('.test.ts'));
  builds.push({
    ...common,
    sourcemap: 'inline',
    entryPoints: files.map((f) => `tests/extension/${f}`),
    outdir: 'out/test',
    platform: 'node',
    format: 'cjs',
    target: 'node18',
    external: ['vscode'],
  });
}

if (watch) {
  for (const b of builds) {
    const ctx = await esbuild.context(b);
    await ctx.watch();
  }
  console.log('esbuild: watching');
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
