// Bundles the extension host code (CommonJS, node) and the webview (IIFE, browser, with uPlot
// and its CSS) into out/. Flags: --production (minify, no sourcemaps), --watch, --tests (also
// bundle tests/extension/*.test.ts into out/test/ for `node --test`).
import * as esbuild from 'esbuild';
import { readdirSync } from 'node:fs';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');
const tests = process.argv.includes('--tests');

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
