// The loss panel's page in Chromium (the built out/webview.js in bench/panel/index.html, whose
// stubbed vscode API records what the page posts and keeps its setState): a researcher selects
// experiments in the table and sees their curves over the reference, reads values on hover,
// uses the metric view, the questions and the log / diff buttons, and finds the selection again
// after a reload. Skipped when there is no Chromium (E2E_CHROMIUM or /usr/bin/chromium).
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
  id?: number;
  view?: { selected: number[]; tab: string };
}

let browser: Browser | undefined;

before(async () => {
  if (skip) {
    return;
  }
  // not bundled into the test (a variable specifier): the package from node_modules
  const name = 'playwright-core';
  const pw = (await import(name)) as { chromium: BrowserType };
  browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
});

/** A fresh page at 1000 px, its script run, optionally with the state a reload hands back. */
async function openPanel(state?: unknown): Promise<Page> {
  assert.ok(browser);
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  if (state !== undefined) {
    await page.addInitScript((s) => {
      (window as unknown as { __state: unknown }).__state = s;
    }, state);
  }
  await page.goto(PAGE);
  await page.waitForFunction(() => (window as unknown as { __posted: Posted[] }).__posted.some((m) => m.type === 'ready'));
  (page as unknown as { errors: string[] }).errors = errors;
  return page;
}

/**
 * The scene the host would send: two reference runs, four experiments, curves as Float64Array
 * (structured-cloned like a real message). Like the host, it sends the reference runs' curves and
 * the selection's, and a newly selected experiment's curve when the page says what it selected.
 */
async function sendScene(page: Page, view?: unknown): Promise<void> {
  await page.evaluate((view) => {
    const curve = (expId: number, rate: number, n = 400) => {
      const xs = Float64Array.from({ length: n }, (_, i) => (i + 1) / n);
      return { expId, xs, ys: xs.map((x) => 2 + 6 * Math.exp(-rate * x)), steps: Float64Array.from({ length: n }, (_, i) => 10 * (i + 1)) };
    };
    const exp = (id: number, status: string, source: string, metric: number | null, extra: Record<string, unknown> = {}) => ({
      id,
      status,
      source,
      hypothesis: `h${id}`,
      metric,
      delta: metric === null ? null : metric - 2.1,
      sigma: 0.01,
      z: metric === null ? null : (2.1 - metric) / 0.01,
      confirms: null,
      ...extra,
    });
    const experiments = [
      exp(1, 'kept', 'baseline', 2.1, { reason: 'baseline', hasLog: true }),
      exp(2, 'kept', 'baseline', 2.11, { reason: 'baseline', hasLog: true }),
      exp(3, 'discarded', 'tune', 2.137, { reason: 'within_noise', hypothesis: '<img src=x onerror="window.__pwned=1">', steps: 812, seconds: 31.4, tCrit: 2.1, question: 1, hasLog: true }),
      exp(4, 'kept', 'user', 2.05, { reason: 'improved', steps: 2, seconds: 14, warnings: { barely_trained: 'ran 2 optimizer steps: the loss is still ≈ ln(vocab)' }, question: 1, hasLog: true }),
      exp(5, 'crashed', 'llm:x', null, { reason: 'crashed', hasLog: true }),
    ];
    const c4 = { ...curve(4, 5), anomalies: [{ kind: 'spike', frac: 0.5, step: 2000, message: 'loss ×3.2 spike at 50% of budget' }] };
    const journal: Record<number, unknown> = { 1: curve(1, 4), 2: curve(2, 4.2), 3: curve(3, 3.5), 4: c4 };
    const send = (data: unknown) => window.dispatchEvent(new MessageEvent('message', { data: structuredClone(data) }));
    const posted = (window as unknown as { __posted: Posted[] }).__posted;
    const sent = new Set<number>();
    posted.push = (...items: Posted[]) => {
      for (const m of items) {
        Array.prototype.push.call(posted, m);
        for (const id of m.type === 'view' ? (m.view?.selected ?? []) : []) {
          if (!sent.has(id) && journal[id]) {
            sent.add(id);
            setTimeout(() => send({ type: 'curve', curve: journal[id], replace: true }), 0);
          }
        }
        if (m.type === 'view') {
          // like the host: what is no longer selected is sent again when it is selected again
          for (const id of [...sent]) {
            if (!m.view?.selected.includes(id)) {
              sent.delete(id);
            }
          }
        }
      }
      return posted.length;
    };
    const selected = (view as { selected?: number[] } | undefined)?.selected ?? [];
    for (const id of selected) {
      sent.add(id);
    }
    const msgs = [
      { type: 'init', experiments, curves: [1, 2, ...selected].map((id) => journal[id]), direction: 'minimize', metric: 'val_bpb', ...(view ? { view } : {}) },
      { type: 'reference', text: 'val_bpb 2.105 ± 0.010 (2 seeds) · keeps ≥ 0.03 (1.4%)', advice: null, value: 2.105, sigma: 0.01, keepThreshold: 0.03, ids: [1, 2], bestId: 1 },
      {
        type: 'questions',
        questions: [{ id: 1, text: 'Does a deeper net help at 2 s?', decision: 'go deeper if ≥ 0.03 better', status: 'open', answer: '', experiments: [3, 4], verdict: 'open: #4 kept' }],
      },
    ];
    for (const m of msgs) {
      send(m);
    }
  }, view);
  await page.waitForFunction(() => {
    const p = (window as unknown as { __sigmaloopPanel: { reference: { runs: number }; metricPoints: number } }).__sigmaloopPanel;
    return p.reference.runs === 2 && p.metricPoints > 0 && document.querySelectorAll('#rl-experiments tbody tr').length === 5;
  });
}

const posted = (page: Page) => page.evaluate(() => (window as unknown as { __posted: Posted[] }).__posted);
const chart = (page: Page) =>
  page.evaluate(() => {
    const c = document.getElementById('rl-chart') as HTMLElement;
    return {
      selected: Number(c.dataset.selected),
      series: Number(c.dataset.series),
      bandRuns: Number(c.dataset.bandRuns),
      legend: [...document.querySelectorAll<HTMLElement>('#rl-legend .rl-legend-item[data-role="selected"]')].map((e) => Number(e.dataset.expId)),
      rows: [...document.querySelectorAll<HTMLElement>('#rl-experiments tbody tr.selected')].map((e) => Number(e.dataset.expId)),
    };
  });

test('select rows: their curves overlay the reference band, the legend names them, the host hears the selection', { skip }, async () => {
  const page = await openPanel();
  await sendScene(page);
  assert.deepEqual(await chart(page), { selected: 0, series: 0, bandRuns: 2, legend: [], rows: [] });
  await page.click('#rl-experiments tbody tr[data-exp-id="3"] td[data-col="hypothesis"]');
  await page.click('#rl-experiments tbody tr[data-exp-id="4"] td[data-col="hypothesis"]');
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '2');
  const st = await chart(page);
  assert.deepEqual(st.legend, [3, 4]);
  assert.deepEqual(st.rows.sort(), [3, 4]);
  const views = (await posted(page)).filter((m) => m.type === 'view');
  assert.deepEqual(views[views.length - 1].view, { version: 2, selected: [3, 4], tab: 'experiments' });
  // the hypothesis is text, never markup
  assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
  assert.equal(await page.locator('#rl-experiments img').count(), 0);
  assert.match((await page.textContent('#rl-legend .rl-legend-item[data-exp-id="3"]')) ?? '', /#3 <img src=x/);
  // the anomaly of #4 sits on its curve with the message as its title
  assert.equal(await page.getAttribute('.rl-anomaly[data-exp-id="4"]', 'title'), '#4: loss ×3.2 spike at 50% of budget');
  // a click again takes one off; the clear button the rest
  await page.click('#rl-experiments tbody tr[data-exp-id="3"] td[data-col="hypothesis"]');
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '1');
  await page.click('#rl-clear');
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '0');
  assert.deepEqual((await chart(page)).rows, []);
  assert.deepEqual((page as unknown as { errors: string[] }).errors, []);
  await page.close();
});

test('values on hover: the legend gives each curve’s loss and step under the cursor, the reference its band', { skip }, async () => {
  const page = await openPanel();
  await sendScene(page, { version: 2, selected: [4], tab: 'experiments' });
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '1');
  const box = await page.locator('#rl-chart .u-over').boundingBox();
  assert.ok(box);
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
  await page.waitForFunction(() => /step \d+/.test(document.querySelector('#rl-legend .rl-legend-item[data-exp-id="4"] .rl-legend-value')?.textContent ?? ''));
  const values = await page.evaluate(() => ({
    mine: document.querySelector('#rl-legend .rl-legend-item[data-exp-id="4"] .rl-legend-value')?.textContent,
    reference: document.querySelector('#rl-legend .rl-legend-item[data-role="reference"] .rl-legend-value')?.textContent,
    cursor: document.getElementById('rl-cursor')?.textContent,
  }));
  assert.match(values.mine ?? '', /^\d+\.\d{3} \(step \d+\)$/);
  assert.match(values.reference ?? '', /^\d+\.\d{3} \(\d+\.\d{3}–\d+\.\d{3}\)$/);
  assert.match(values.cursor ?? '', /^at \d+\.\d% of the budget$/);
  await page.close();
});

test('the metric view: a point per measured experiment, the reference and the keep line; hover says the verdict; a click overlays it', { skip }, async () => {
  const page = await openPanel();
  await sendScene(page);
  const m = await page.evaluate(() => {
    const box = document.getElementById('rl-metric-chart') as HTMLElement;
    return { points: box.dataset.points, reference: box.dataset.reference, keep: box.dataset.keepLine, title: document.getElementById('rl-metric-title')?.textContent };
  });
  // #5 crashed: no metric, no point
  assert.deepEqual(m, { points: '4', reference: '2.105', keep: String(2.105 - 0.03), title: 'val_bpb by experiment (lower is better)' });
  assert.equal(await page.textContent('.rl-title'), 'Training loss');
  const over = await page.locator('#rl-metric-chart .u-over').boundingBox();
  assert.ok(over);
  // x runs from #0 to #5 (ids 1..4 padded by one): #3 sits at 3/5 of the width
  await page.mouse.move(over.x + over.width * 0.6, over.y + over.height * 0.5);
  await page.waitForFunction(() => !(document.querySelector('#rl-metric-chart .rl-tip') as HTMLElement).hidden);
  const tip = (await page.textContent('#rl-metric-chart .rl-tip')) ?? '';
  assert.match(tip, /^#3 · discarded/);
  assert.match(tip, /^val_bpb 2\.137$/m);
  assert.match(tip, /^0\.037 worse, 3\.7σ$/m);
  await page.mouse.click(over.x + over.width * 0.6, over.y + over.height * 0.5);
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '1');
  assert.deepEqual((await chart(page)).legend, [3]);
  await page.close();
});

test('the table: Δ in words, reason, steps, time, question, warning; log and diff ask the host', { skip }, async () => {
  const page = await openPanel();
  await sendScene(page);
  const row = (id: number): Promise<Record<string, string | null>> =>
    page.evaluate((id) => Object.fromEntries([...document.querySelectorAll<HTMLElement>(`#rl-experiments tr[data-exp-id="${id}"] td`)].map((td) => [td.dataset.col ?? '', td.textContent])), id);
  const r3 = await row(3);
  assert.equal(r3.status, 'discarded');
  // σ = 0.010: numbers to σ's two significant digits
  assert.equal(r3.metric, '2.137');
  assert.equal(r3.delta, '0.037 worse, 3.7σ');
  assert.equal(r3.reason, 'within noise');
  assert.equal(r3.steps, '812');
  assert.equal(r3.time, '31 s');
  assert.equal(r3.question, 'Q1');
  const r4 = await row(4);
  assert.equal(r4.delta, '0.050 better, 5.0σ');
  assert.equal(r4.warn, '⚠');
  assert.equal(await page.getAttribute('#rl-experiments tr[data-exp-id="4"] td[data-col="warn"]', 'title'), 'ran 2 optimizer steps: the loss is still ≈ ln(vocab)');
  // the best reference's row is starred
  assert.equal(await page.locator('#rl-experiments tr.best').getAttribute('data-exp-id'), '1');
  await page.click('#rl-experiments button.rl-log[data-exp-id="5"]');
  await page.click('#rl-experiments button.rl-diff[data-exp-id="3"]');
  const asked = (await posted(page)).filter((m) => m.type === 'openLog' || m.type === 'openExperiment');
  assert.deepEqual(asked, [
    { type: 'openLog', id: 5 },
    { type: 'openExperiment', id: 3 },
  ]);
  // the buttons don't select
  assert.equal((await chart(page)).selected, 0);
  // nothing sideways at 1000 px
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0);
  await page.close();
});

test('a question: its experiments with effects; Overlay draws them; the tab and the selection come back after a reload', { skip }, async () => {
  const page = await openPanel();
  await sendScene(page);
  await page.click('.rl-tab[data-tab="questions"]');
  assert.equal(await page.isVisible('#rl-questions'), true);
  assert.equal(await page.isVisible('#rl-table-box'), false);
  const q = await page.evaluate(() => {
    const box = document.querySelector('#rl-questions .rl-question[data-question-id="1"]');
    return {
      text: box?.querySelector('.rl-question-text')?.textContent,
      decision: box?.querySelector('.rl-question-decision')?.textContent,
      verdict: box?.querySelector('.rl-question-verdict')?.textContent,
      experiments: [...(box?.querySelectorAll<HTMLElement>('.rl-question-exp') ?? [])].map((c) => Number(c.dataset.expId)),
    };
  });
  assert.deepEqual(q, { text: 'Does a deeper net help at 2 s?', decision: 'Would change the decision: go deeper if ≥ 0.03 better', verdict: 'open: #4 kept', experiments: [3, 4] });
  await page.click('.rl-question[data-question-id="1"] .rl-question-select');
  await page.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '2');
  const state = await page.evaluate(() => (window as unknown as { __state: unknown }).__state);
  assert.deepEqual(state, { version: 2, selected: [3, 4], tab: 'questions' });
  await page.close();
  // a reload: the webview's state comes back through getState (the host has none yet)
  const again = await openPanel(state);
  await sendScene(again);
  await again.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '2');
  assert.equal(await again.isVisible('#rl-questions'), true);
  // and the page tells the host, which keeps it for the next time the panel opens
  const views = (await posted(again)).filter((m) => m.type === 'view');
  assert.deepEqual(views[views.length - 1].view, { version: 2, selected: [3, 4], tab: 'questions' });
  await again.close();
  // closed and reopened: the host's init carries the view
  const reopened = await openPanel();
  await sendScene(reopened, { version: 2, selected: [4], tab: 'experiments' });
  await reopened.waitForFunction(() => document.getElementById('rl-chart')?.dataset.selected === '1');
  assert.deepEqual((await chart(reopened)).legend, [4]);
  await reopened.close();
});

test('a malformed message is dropped and counted', { skip }, async () => {
  const page = await openPanel();
  const n = await page.evaluate(() => {
    window.dispatchEvent(new MessageEvent('message', { data: { type: 'curve', curve: { expId: 1, xs: [0.1, 0.2], ys: [1] }, replace: true } }));
    window.dispatchEvent(new MessageEvent('message', { data: { type: 'html', html: '<b>' } }));
    return (window as unknown as { __sigmaloopPanel: { rejectedMessages: number } }).__sigmaloopPanel.rejectedMessages;
  });
  assert.equal(n, 2);
  await page.close();
});
