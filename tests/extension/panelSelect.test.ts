// "Show curve of #N" in the loss panel's page (the built out/webview.js in Chromium, with the
// bench's stubbed vscode API): the host's `select` message overlays the experiment on the
// experiments tab and says so back (`view`); its anomalies are marked on its curve, a dismissed
// one faded with its reason; a malformed `select` is dropped. Skipped without Chromium.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { Browser, BrowserType, Page } from 'playwright-core';

const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
const PAGE = pathToFileURL(path.resolve('bench/panel/index.html')).toString();
const skip = !existsSync(CHROMIUM) || !existsSync('out/webview.js') ? 'no Chromium or no out/webview.js (npm run build)' : false;

interface Posted {
  type: string;
  view?: { selected: number[]; tab: string };
}
interface Mark {
  kind: string;
  dismissed: boolean;
  title: string;
}

let browser: Browser | undefined;

before(async () => {
  if (skip) {
    return;
  }
  const name = 'playwright-core';
  const pw = (await import(name)) as { chromium: BrowserType };
  browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
});

/** The page with two reference runs and experiment #4 (a spike, dismissed, and a NaN), on the questions tab, nothing selected. */
async function openScene(): Promise<Page> {
  assert.ok(browser);
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  await page.goto(PAGE);
  await page.waitForFunction(() => (window as unknown as { __posted: Posted[] }).__posted.some((m) => m.type === 'ready'));
  await page.evaluate(() => {
    const curve = (expId: number, rate: number, n = 200) => {
      const xs = Float64Array.from({ length: n }, (_, i) => (i + 1) / n);
      return { expId, xs, ys: xs.map((x) => 2 + 6 * Math.exp(-rate * x)), steps: Float64Array.from({ length: n }, (_, i) => i + 1) };
    };
    const exp = (id: number, source: string, metric: number) => ({ id, status: 'kept', source, hypothesis: `h${id}`, metric, delta: metric - 2.1, sigma: 0.01, z: (2.1 - metric) / 0.01, confirms: null, hasLog: true });
    const c4 = {
      ...curve(4, 5),
      anomalies: [
        { kind: 'spike', frac: 0.4, step: 80, message: 'loss ×20.0 spike at 40% of budget', dismissed: true, dismissedReason: 'a logging glitch' },
        { kind: 'nan', frac: 0.75, step: 150, message: 'loss NaN at 75% of budget' },
      ],
    };
    const send = (data: unknown) => window.dispatchEvent(new MessageEvent('message', { data: structuredClone(data) }));
    // like the host: a newly selected experiment's curve follows the page's `view`
    const posted = (window as unknown as { __posted: Posted[] }).__posted;
    posted.push = (...items: Posted[]) => {
      for (const m of items) {
        Array.prototype.push.call(posted, m);
        if (m.type === 'view' && m.view?.selected.includes(4)) {
          setTimeout(() => send({ type: 'curve', curve: c4, replace: true }), 0);
        }
      }
      return posted.length;
    };
    send({ type: 'init', experiments: [exp(1, 'baseline', 2.1), exp(2, 'baseline', 2.11), exp(4, 'user', 2.05)], curves: [curve(1, 4), curve(2, 4.2)], direction: 'minimize', metric: 'val_bpb', view: { version: 2, selected: [], tab: 'questions' } });
    send({ type: 'reference', text: 'val_bpb 2.105 ± 0.010 (2 seeds)', advice: null, value: 2.105, sigma: 0.01, keepThreshold: 0.03, ids: [1, 2], bestId: 1 });
  });
  return page;
}

function marks(page: Page, id: number): Promise<Mark[]> {
  return page.evaluate(
    (exp) => [...document.querySelectorAll<HTMLElement>(`.rl-anomaly[data-exp-id="${exp}"]`)].map((m) => ({ kind: m.dataset.kind ?? '', dismissed: m.classList.contains('dismissed'), title: m.title })),
    id,
  );
}

test('select: the experiment is overlaid on the experiments tab, its anomalies marked, a dismissed one faded', { skip }, async () => {
  const page = await openScene();
  await page.evaluate(() => window.dispatchEvent(new MessageEvent('message', { data: { type: 'select', ids: [4] } })));
  await page.waitForFunction(() => document.querySelector('#rl-chart')?.getAttribute('data-selected') === '1');
  const view = await page.evaluate(() => (window as unknown as { __posted: Posted[] }).__posted.filter((m) => m.type === 'view').pop()?.view);
  assert.deepEqual(view, { version: 2, selected: [4], tab: 'experiments' });
  assert.ok(await page.locator('#rl-experiments tbody tr[data-exp-id="4"].selected').isVisible());
  await page.waitForFunction(() => document.querySelectorAll('.rl-anomaly[data-exp-id="4"]').length === 2);
  const byKind = new Map((await marks(page, 4)).map((m) => [m.kind, m]));
  assert.deepEqual(byKind.get('spike'), { kind: 'spike', dismissed: true, title: '#4: loss ×20.0 spike at 40% of budget (dismissed: a logging glitch)' });
  assert.deepEqual(byKind.get('nan'), { kind: 'nan', dismissed: false, title: '#4: loss NaN at 75% of budget' });
  const opacity = await page.locator('.rl-anomaly[data-kind="spike"]').evaluate((m) => Number(getComputedStyle(m).opacity));
  assert.ok(opacity < 0.5, `a dismissed marker is faded (opacity ${opacity})`);

  // selecting it again changes nothing; a malformed select is dropped and counted
  const before = await page.evaluate(() => (window as unknown as { __sigmaloopPanel: { rejectedMessages: number } }).__sigmaloopPanel.rejectedMessages);
  await page.evaluate(() => {
    for (const data of [{ type: 'select', ids: [4] }, { type: 'select', ids: [] }, { type: 'select', ids: ['4'] }, { type: 'select' }]) {
      window.dispatchEvent(new MessageEvent('message', { data }));
    }
  });
  const after = await page.evaluate(() => ({
    rejected: (window as unknown as { __sigmaloopPanel: { rejectedMessages: number } }).__sigmaloopPanel.rejectedMessages,
    selected: (window as unknown as { __sigmaloopPanel: { selected: number[] } }).__sigmaloopPanel.selected,
  }));
  assert.equal(after.rejected - before, 3);
  assert.deepEqual(after.selected, [4]);
  await page.close();
});
