// Browser end-to-end test of the Sigmaloop extension in a real VS Code (code-server) in
// real Chromium, driven with playwright-core. scripts/e2e.sh starts code-server with the
// packaged extension and a fixture workspace, then runs this with:
//   E2E_URL        code-server's base URL (http://127.0.0.1:PORT)
//   E2E_WORKSPACE  the fixture workspace folder (a git repo with sigmaloop.toml)
//   E2E_ARTIFACTS  where screenshots and the step log go (artifacts/e2e)
//   E2E_MODE       full | restricted | missing (a fresh venv: install the bundled wheel) |
//                  maximize (a workspace whose metric is maximised, arranged beforehand) |
//                  research (a question, Run My Edit, two curves overlaid, the metric view, the
//                  question's experiments, a crash's Open log, a loss spike's Show curve and
//                  Dismiss, Open Morning Report)
//   E2E_ARRANGED   for "maximize": tests/e2e/arrange_maximize.py's JSON (the kept ids, the best)
//   E2E_WHEEL, E2E_VERSION, E2E_USER_DATA  for "missing": the bundled wheel's file name, the
//                  extension's version, the user-data dir (its logs/ hold the extension's log)
//   E2E_PYTHON, E2E_OLD_WHEEL, E2E_OLD_VERSION  for "missing"'s version-mismatch step: the venv's
//                  python and a wheel of the same sources under another version
//
// Steps: open train.py; "Sigmaloop: Run Baseline" from the command palette; the status
// bar shows "running #N at X%"; the loss panel (webview, nested iframes) draws a curve with
// points (counted through its DOM and window.__sigmaloopPanel); "Propose Experiment"; the
// proposal's quick fix (Ctrl+.) "Accept experiment #N" runs it; its result arrives
// (notification + panel row); the inlay hint appears on the touched line. Every wait polls
// with a timeout; screenshots land in E2E_ARTIFACTS. "restricted": nothing runs in an untrusted
// folder. "missing": a fresh venv gets the wheel bundled in the .vsix through the install offer,
// then a version mismatch gets the same offer.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.E2E_URL ?? 'http://127.0.0.1:8080';
const WORKSPACE = process.env.E2E_WORKSPACE;
const ART = process.env.E2E_ARTIFACTS ?? 'artifacts/e2e';
const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
const STEP_TIMEOUT = Number(process.env.E2E_STEP_TIMEOUT ?? 90_000);
// "full" (trusted workspace: the whole flow) or "restricted" (untrusted: nothing may run)
const MODE = process.env.E2E_MODE ?? 'full';
// the user-data dir (its logs/ hold the extension's log file; the "missing" phase reads it)
const USER_DATA = process.env.E2E_USER_DATA;
if (!WORKSPACE) {
  throw new Error('E2E_WORKSPACE is not set');
}
mkdirSync(ART, { recursive: true });

const t0 = Date.now();
const results = [];
const seen = { status: new Set(), notifications: new Set() };
let page;
let shotNo = 0;

function log(msg) {
  console.log(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

async function shot(name) {
  shotNo += 1;
  const file = path.join(ART, `${MODE === 'full' ? '' : `${MODE}-`}${String(shotNo).padStart(2, '0')}-${name}.png`);
  try {
    await page.screenshot({ path: file });
  } catch (err) {
    log(`screenshot ${name} failed: ${err}`);
  }
  return file;
}

/** Poll fn until it returns a truthy value; throw with `what` after timeout. */
async function waitFor(what, fn, { timeout = STEP_TIMEOUT, interval = 150 } = {}) {
  const end = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) {
        return v;
      }
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr.message ?? lastErr})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

async function step(name, fn) {
  const start = Date.now();
  log(`▶ ${name}`);
  try {
    const detail = await fn();
    const ms = Date.now() - start;
    results.push({ step: name, ok: true, ms, detail: detail ?? null });
    log(`✔ ${name} (${ms} ms)${detail ? ` ${JSON.stringify(detail)}` : ''}`);
    return detail;
  } catch (err) {
    const ms = Date.now() - start;
    results.push({ step: name, ok: false, ms, error: String(err?.stack ?? err) });
    log(`✘ ${name}: ${err?.message ?? err}`);
    await shot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-')}`);
    throw err;
  }
}

// ------------------------------------------------------------------------- workbench helpers

async function statusBarText() {
  return page.locator('.part.statusbar').innerText({ timeout: 2000 });
}

async function notificationsText() {
  const toasts = page.locator('.notifications-toasts .notification-toast');
  const n = await toasts.count();
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(await toasts.nth(i).innerText({ timeout: 1000 }).catch(() => ''));
  }
  for (const t of out) {
    if (t.trim()) {
      seen.notifications.add(t.trim().replace(/\s+/g, ' '));
    }
  }
  return out.join('\n');
}

async function closeNotifications() {
  // "Notifications: Clear All Notifications" keeps toasts out of the way of the editor
  const toasts = page.locator('.notifications-toasts .notification-toast');
  if ((await toasts.count()) > 0) {
    await runCommand('Notifications: Clear All Notifications').catch(() => undefined);
  }
}

/** Run a command from the palette (F1), choosing the row whose label is exactly `title`. */
async function runCommand(title) {
  await waitFor(`command palette for "${title}"`, async () => {
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: 5000 });
    // a short fill: if the palette is inert or closes under us (a dialog, a focus change while
    // the previous quick pick closes), give up this try so the next one starts with Escape + F1
    await input.fill(`>${title}`, { timeout: 5000 }).catch(async (e) => {
      const dialog = page.locator('.monaco-dialog-box');
      const open = (await dialog.count()) > 0 && (await dialog.first().isVisible());
      throw new Error(open ? `a dialog is open: "${(await dialog.first().innerText()).replace(/\s+/g, ' ').trim()}"` : String(e).split('\n')[0]);
    });
    const rows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
    await rows.first().waitFor({ state: 'visible', timeout: 5000 });
    const labels = await rows.evaluateAll((els) => els.map((e) => (e.querySelector('.label-name')?.textContent ?? e.textContent ?? '').trim()));
    const i = labels.findIndex((l) => l === title);
    if (i < 0) {
      throw new Error(`no palette row "${title}" (rows: ${labels.slice(0, 5).join(' | ')})`);
    }
    await rows.nth(i).click({ timeout: 5000 });
    return true;
  }, { timeout: 30_000, interval: 500 });
}

async function openFile(name) {
  await waitFor(`quick open ${name}`, async () => {
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: 5000 });
    await input.fill(name, { timeout: 5000 });
    const row = page.locator('.quick-input-widget .quick-input-list .monaco-list-row.focused');
    await row.waitFor({ state: 'visible', timeout: 5000 });
    if (!(await row.innerText()).includes(name)) {
      throw new Error('file not listed yet');
    }
    await page.keyboard.press('Enter');
    await page.locator(`.tabs-container .tab:has-text("${name}")`).first().waitFor({ state: 'visible', timeout: 5000 });
    return true;
  }, { timeout: 60_000, interval: 1000 });
}

/** The loss panel's inner frame (the webview is an iframe in an iframe): the one with our state. */
async function panelFrame() {
  for (const f of page.frames()) {
    try {
      if (await f.evaluate(() => typeof window.__sigmaloopPanel === 'object')) {
        return f;
      }
    } catch {
      // detached or cross-origin frames in transition
    }
  }
  return undefined;
}

async function panelState() {
  const f = await panelFrame();
  if (!f) {
    return undefined;
  }
  return f.evaluate(() => {
    const s = window.__sigmaloopPanel;
    const chart = document.getElementById('rl-chart');
    const rows = [...document.querySelectorAll('#rl-experiments tbody tr')].map((tr) => ({
      id: Number(tr.dataset.expId),
      best: tr.classList.contains('best'),
      selected: tr.classList.contains('selected'),
      cells: [...tr.children].map((td) => td.textContent),
      col: Object.fromEntries([...tr.querySelectorAll('td[data-col]')].map((td) => [td.dataset.col, td.textContent ?? ''])),
    }));
    const metric = document.getElementById('rl-metric-chart');
    return {
      title: document.querySelector('.rl-title')?.textContent ?? '',
      metricTitle: document.getElementById('rl-metric-title')?.textContent ?? '',
      metricPoints: Number(metric?.dataset.points ?? 0),
      metricReference: metric?.dataset.reference ?? '',
      metricKeepLine: metric?.dataset.keepLine ?? '',
      domSelected: Number(chart?.dataset.selected ?? 0),
      bandRuns: Number(chart?.dataset.bandRuns ?? 0),
      selectedLegend: [...document.querySelectorAll('#rl-legend .rl-legend-item[data-role="selected"]')].map((e) => Number(e.dataset.expId)),
      selected: s.selected,
      tab: s.tab,
      questions: [...document.querySelectorAll('#rl-questions .rl-question')].map((q) => ({
        id: Number(q.dataset.questionId),
        text: q.querySelector('.rl-question-text')?.textContent ?? '',
        status: q.querySelector('.rl-question-status')?.textContent ?? '',
        verdict: q.querySelector('.rl-question-verdict')?.textContent ?? '',
        experiments: [...q.querySelectorAll('.rl-question-exp')].map((c) => ({ id: Number(c.dataset.expId), text: c.textContent })),
      })),
      reference: document.getElementById('rl-reference')?.textContent ?? '',
      advice: document.getElementById('rl-advice')?.hidden ? '' : (document.getElementById('rl-advice')?.textContent ?? ''),
      legend: [...document.querySelectorAll('.rl-legend-item')].map((e) => e.textContent),
      ready: s.ready,
      initialized: s.initialized,
      points: s.points,
      plottedPoints: s.plottedPoints,
      drawnPoints: s.drawnPoints,
      series: s.series,
      draws: s.draws,
      domPoints: Number(chart?.dataset.points ?? 0),
      domSeries: Number(chart?.dataset.series ?? 0),
      canvas: !!chart?.querySelector('canvas'),
      rows,
    };
  });
}

/** Go to the proposal's diagnostic (Go to Next Problem), open the quick fix menu (Ctrl+.), click an item. */
async function quickFix(itemText, shotName) {
  await waitFor(`the quick fix menu with "${itemText}"`, async () => {
    await page.keyboard.press('Escape');
    await runCommand('Go to Next Problem in Files (Error, Warning, Info)').catch(async () => {
      await page.keyboard.press('F8');
    });
    await page.waitForTimeout(300);
    await page.keyboard.press('Escape');
    await page.keyboard.press('Control+.');
    const item = page.locator('.action-widget .monaco-list-row', { hasText: itemText });
    await item.first().waitFor({ state: 'visible', timeout: 4000 });
    if (shotName) {
      await shot(shotName);
    }
    await item.first().click();
    return true;
  }, { timeout: 60_000, interval: 500 });
}

/** Put the cursor on one of `lines` (1-based; the first that offers it), open the quick fix menu (Ctrl+.), click `itemText`. */
async function quickFixAt(lines, itemText, shotName) {
  let i = 0;
  await waitFor(`the quick fix menu with "${itemText}" on line ${lines.join(' or ')}`, async () => {
    const line = lines[i++ % lines.length];
    await page.keyboard.press('Escape');
    await page.locator('.editor-group-container.active .monaco-editor .view-lines').first().click();
    await page.keyboard.press('Control+G');
    const input = page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: 5000 });
    await input.fill(`:${line}`);
    await page.keyboard.press('Enter');
    await input.waitFor({ state: 'hidden', timeout: 5000 });
    await page.keyboard.press('Control+.');
    const item = page.locator('.action-widget .monaco-list-row', { hasText: itemText });
    await item.first().waitFor({ state: 'visible', timeout: 3000 });
    if (shotName) {
      await shot(shotName);
    }
    await item.first().click();
    return true;
  }, { timeout: 60_000, interval: 300 });
}

/** The active editor's rendered lines (inlay hints included), spaces as spaces (Monaco renders U+00A0). */
async function editorText() {
  const t = await page.locator('.editor-group-container.active .monaco-editor .view-lines').first().innerText({ timeout: 2000 });
  return t.replace(/\u00a0/g, ' ');
}

// ------------------------------------------------------------------------- the test

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (err) => consoleErrors.push(String(err)));
  let failed;
  try {
    if (MODE === 'restricted') {
      await restricted();
    } else if (MODE === 'missing') {
      await missingPackage();
    } else if (MODE === 'maximize') {
      await maximize();
    } else if (MODE === 'research') {
      await research();
    } else {
      await full();
    }
  } catch (err) {
    failed = err;
  } finally {
    const summary = {
      mode: MODE,
      ok: !failed,
      seconds: Math.round((Date.now() - t0) / 100) / 10,
      steps: results,
      statusBarSeen: [...seen.status].slice(0, 20),
      notificationsSeen: [...seen.notifications].slice(0, 20),
      pageErrors: consoleErrors.slice(0, 20),
    };
    writeFileSync(path.join(ART, MODE === 'full' ? 'result.json' : `result-${MODE}.json`), JSON.stringify(summary, null, 2));
    await browser.close().catch(() => undefined);
  }
  const passed = results.filter((r) => r.ok).length;
  const failedN = results.length - passed;
  console.log(`e2e ${MODE} runtime: ${((Date.now() - t0) / 1000).toFixed(1)} s (browser part)`);
  console.log(`e2e ${MODE} phase: ${passed} of ${results.length} steps passed${failedN ? ` (${failedN} failed)` : ''}`);
  if (failed) {
    process.exitCode = 1;
  }
}

async function openWorkbench() {
  await page.goto(`${BASE}/?folder=${encodeURIComponent(WORKSPACE)}`, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: 60_000 });
  await page.locator('.part.statusbar').waitFor({ state: 'visible', timeout: 60_000 });
}

/** Untrusted workspace: the extension activates but starts no server; nothing can run. */
async function restricted() {
  await step('open the untrusted workspace (Restricted Mode)', async () => {
    await openWorkbench();
    await shot('workbench');
  });
  await step('status bar says restricted; a message explains why', async () => {
    const text = await waitFor('status bar "restricted"', async () => {
      const t = await statusBarText();
      return /Sigmaloop: restricted/.test(t) ? t : undefined;
    }, { timeout: 60_000, interval: 300 });
    const note = await waitFor('the Restricted Mode message', async () => {
      const t = await notificationsText();
      return t.split('\n').find((l) => /runs nothing in Restricted Mode/.test(l));
    }, { timeout: 30_000, interval: 300 });
    await shot('restricted');
    return { statusBar: text.split('\n').find((l) => /restricted/.test(l)), message: note.slice(0, 140) };
  });
  await step('commands that run trials are not offered', async () => {
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: 5000 });
    await input.fill('>Sigmaloop:');
    const rows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
    await rows.first().waitFor({ state: 'visible', timeout: 5000 });
    const labels = await rows.evaluateAll((els) => els.map((e) => (e.querySelector('.label-name')?.textContent ?? '').trim()));
    await shot('palette');
    await page.keyboard.press('Escape');
    for (const hidden of ['Sigmaloop: Run Baseline', 'Sigmaloop: Propose Experiment', 'Sigmaloop: Run Loop…']) {
      if (labels.includes(hidden)) {
        throw new Error(`"${hidden}" is offered in Restricted Mode`);
      }
    }
    if (!labels.includes('Sigmaloop: Show Loss Panel')) {
      throw new Error(`expected Show Loss Panel among ${labels.join(' | ')}`);
    }
    return { offered: labels };
  });
}

/** Lines of the Output view (the Sigmaloop log, shown while pip runs); only the visible ones render. */
async function outputLines() {
  const t = await page.locator('.part.panel .monaco-editor .view-lines').first().innerText({ timeout: 1000 });
  return t.replace(/\u00a0/g, ' ').split('\n').map((l) => l.trim()).filter(Boolean);
}

/** The extension's log file on disk (all of it, unlike the Output view's viewport). */
function extensionLog() {
  const root = path.join(USER_DATA ?? '', 'logs');
  const found = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        walk(p);
      } else if (/Sigmaloop\.log$/.test(e.name)) {
        found.push(p);
      }
    }
  };
  try {
    walk(root);
  } catch {
    return '';
  }
  return found.map((f) => readFileSync(f, 'utf8')).join('\n');
}

/**
 * sigmaloop.pythonPath names a fresh venv without the package: the offer names the bundled
 * wheel; Install runs pip (its output streams into the log while the progress notification
 * shows); the server then starts and reports the extension's version.
 */
async function missingPackage() {
  const wheel = process.env.E2E_WHEEL ?? 'sigmaloop-';
  const version = process.env.E2E_VERSION ?? '';
  await step('open the workspace with a fresh venv lacking sigmaloop', async () => {
    await openWorkbench();
  });

  const offer = await step('the install offer names the bundled wheel', async () => {
    const note = await waitFor('the missing-package message', async () => {
      const t = await notificationsText();
      return t.split('\n').find((l) => /does not have the sigmaloop package/.test(l));
    }, { timeout: 60_000, interval: 300 });
    const cmd = /Command: (.+ -m pip install (\S+))$/.exec(note.trim());
    if (!cmd || !note.includes(`Install the bundled sigmaloop ${version}`) || !cmd[2].endsWith(`/bundled/${wheel}`)) {
      throw new Error(`the offer does not name the bundled ${wheel}: "${note}"`);
    }
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: 'does not have the sigmaloop package' }).first();
    const buttons = (await toast.locator('.monaco-button').allInnerTexts()).map((b) => b.trim()).filter(Boolean);
    for (const b of ['Install', 'Copy Command']) {
      if (!buttons.includes(b)) {
        throw new Error(`no "${b}" button (buttons: ${buttons.join(', ')})`);
      }
    }
    const status = await waitFor('status bar "not installed"', async () => {
      const t = await statusBarText();
      return t.split('\n').find((l) => /Sigmaloop: not installed/.test(l));
    }, { timeout: 20_000 });
    await shot('install-offer');
    return { command: cmd[1], buttons, statusBar: status.trim() };
  });

  await step("Install: pip's output streams into the Sigmaloop log while the progress shows", async () => {
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: 'does not have the sigmaloop package' }).first();
    await toast.locator('.monaco-button', { hasText: /^Install$/ }).click();
    const seenLines = new Set();
    let duringProgress;
    const done = await waitFor('"pip: Successfully installed … sigmaloop" in the Output view', async () => {
      const lines = await outputLines().catch(() => []);
      const pip = lines.filter((l) => /\bpip: /.test(l));
      pip.forEach((l) => seenLines.add(l.replace(/^.*?\bpip: /, '')));
      if (pip.length && duringProgress === undefined) {
        const t = await notificationsText();
        duringProgress = /Sigmaloop: installing sigmaloop-/.test(t) ? pip[0].replace(/^.*?\bpip: /, '') : null;
        if (duringProgress) {
          await shot('pip-streaming');
        }
      }
      // the Output view wraps long lines: look at the visible text as one string
      return /pip: Successfully installed /.test(lines.join(' ')) ? lines.join(' ') : undefined;
    }, { timeout: 240_000, interval: 200 });
    if (!duringProgress) {
      throw new Error(`pip's output did not appear while the progress notification was showing (lines seen: ${[...seenLines].slice(0, 5).join(' | ')})`);
    }
    // the whole line (the view shows only its first part) is in the log file
    const full = extensionLog().split('\n').find((l) => /pip: Successfully installed /.test(l)) ?? '';
    if (!new RegExp(`\\bsigmaloop-${version.replace(/\./g, '\\.')}\\b`).test(full)) {
      throw new Error(`pip did not report installing sigmaloop ${version}: "${full.slice(0, 300)}"`);
    }
    return {
      firstLineDuringProgress: duringProgress.slice(0, 160),
      pipLinesSeen: seenLines.size,
      shown: /pip: Successfully installed .{0,120}/.exec(done)?.[0],
    };
  });

  await step('the server starts (status bar idle) and reports the extension version', async () => {
    const text = await waitFor('status bar "idle"', async () => {
      const t = await statusBarText();
      return /\bidle\b/.test(t) && !/Sigmaloop: (not installed|server failed|installing|starting)/.test(t) ? t : undefined;
    }, { timeout: 120_000, interval: 300 });
    await shot('installed-server-idle');
    const logText = await waitFor('the version line in the extension log', async () => {
      const t = extensionLog();
      return new RegExp(`server: sigmaloop ${version.replace(/\./g, '\\.')} \\(extension ${version.replace(/\./g, '\\.')}\\)`).test(t) ? t : undefined;
    }, { timeout: 20_000, interval: 500 });
    if (/version mismatch/.test(logText)) {
      throw new Error('the log reports a version mismatch');
    }
    const pipLines = logText.split('\n').filter((l) => /\bpip: /.test(l));
    return {
      statusBar: text.split('\n').find((l) => /idle/.test(l))?.trim(),
      installCommand: offer.command,
      pipLinesInLog: pipLines.length,
      versionLine: logText.split('\n').find((l) => /server: sigmaloop /.test(l))?.replace(/^.*?server: /, 'server: '),
    };
  });

  const oldWheel = process.env.E2E_OLD_WHEEL;
  const oldVersion = process.env.E2E_OLD_VERSION;
  if (!oldWheel || !oldVersion || !process.env.E2E_PYTHON) {
    return;
  }
  const esc = (v) => v.replace(/\./g, '\\.');
  await step(`version mismatch: a server of sigmaloop ${oldVersion} is offered the bundled wheel; Install brings back ${version}`, async () => {
    // arrange: the venv gets another version of the package, as a user's older install would be
    execFileSync(process.env.E2E_PYTHON, ['-m', 'pip', 'install', '-q', '--no-deps', '--disable-pip-version-check', oldWheel], { stdio: 'pipe' });
    await closeNotifications();
    const before = extensionLog().length;
    await runCommand('Sigmaloop: Restart Server');
    const note = await waitFor('the version-mismatch offer', async () => {
      const t = await notificationsText();
      return t.split('\n').find((l) => new RegExp(`is sigmaloop ${esc(oldVersion)}, this extension is ${esc(version)}`).test(l));
    }, { timeout: 60_000, interval: 300 });
    if (!note.includes(`/bundled/${wheel}`)) {
      throw new Error(`the mismatch offer does not name the bundled ${wheel}: "${note}"`);
    }
    await shot('version-mismatch');
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: 'this extension is' }).first();
    await toast.locator('.monaco-button', { hasText: /^Install$/ }).click();
    const after = await waitFor(`the server restarted on ${version}`, async () => {
      const t = extensionLog().slice(before);
      return new RegExp(`installed: ${esc(wheel)}[\\s\\S]*server: sigmaloop ${esc(version)} \\(extension ${esc(version)}\\)`).test(t) ? t : undefined;
    }, { timeout: 120_000, interval: 500 });
    await waitFor('status bar "idle"', async () => /\bidle\b/.test(await statusBarText()), { timeout: 30_000 });
    const lines = after.split('\n');
    return {
      offer: note.slice(0, 200),
      mismatchLogged: lines.find((l) => /version mismatch/.test(l))?.replace(/^.*?version mismatch/, 'version mismatch'),
      pip: lines.find((l) => /pip: Successfully installed/.test(l))?.replace(/^.*?pip: /, ''),
    };
  });
}

/** Trusted workspace: baseline, panel, proposal, diff, accept, result, inlay hint. */
async function full() {
  {
    await step('open workbench', async () => {
      await openWorkbench();
      await shot('workbench');
    });

    await step('open train.py', async () => {
      await openFile('train.py');
      await page.locator('.editor-group-container.active .monaco-editor .view-lines').first().waitFor({ timeout: 20_000 });
      await shot('train-py');
    });

    await step('extension activates, server idle', async () => {
      const text = await waitFor('status bar "idle"', async () => {
        const t = await statusBarText();
        return /\bidle\b/.test(t) ? t : undefined;
      }, { timeout: 120_000, interval: 300 });
      return { statusBar: text.split('\n').find((l) => /idle/.test(l)) };
    });

    await step('open the loss panel before the run (its page is ready when the first trial starts)', async () => {
      await runCommand('Sigmaloop: Show Loss Panel');
      await waitFor('the panel page ready', async () => (await panelState())?.initialized, { timeout: 60_000, interval: 200 });
      await runCommand('View: Focus First Editor Group');
    });

    await step('Run Baseline from the command palette', async () => {
      await runCommand('Sigmaloop: Run Baseline');
    });

    await step("delete sigmaloop.toml inside the running trial's worktree (the watcher must ignore it)", async () => {
      // a trial's worktree is a checkout of the research branch: it holds a copy of the config,
      // created and deleted with every trial; the old `**/sigmaloop.toml` watcher restarted the
      // server on that delete and the running seed turned `interrupted`
      const file = await waitFor("a running trial's worktree with sigmaloop.toml", () => {
        const root = path.join(WORKSPACE, '.sigmaloop', 'worktrees');
        for (const d of existsSync(root) ? readdirSync(root) : []) {
          const f = path.join(root, d, 'sigmaloop.toml');
          if (existsSync(f)) {
            return f;
          }
        }
        return undefined;
      }, { timeout: 60_000, interval: 50 });
      rmSync(file);
      return { deleted: path.relative(WORKSPACE, file) };
    });

    const running = await step('status bar shows progress', async () => {
      const m = await waitFor('status bar "running #N at X%"', async () => {
        const t = await statusBarText();
        for (const line of t.split('\n')) {
          if (/running #\d+ at \d+%/.test(line)) {
            seen.status.add(line.trim());
          }
        }
        const hit = /running #(\d+) at (\d+)%/.exec(t);
        return hit && Number(hit[2]) > 0 ? hit[0] : undefined;
      }, { timeout: 90_000, interval: 100 });
      await shot('status-running');
      return { statusBar: m };
    });

    await step('loss panel draws a live curve with points', async () => {
      const st = await waitFor('loss panel with a running curve with points', async () => {
        const s = await panelState();
        return s && s.initialized && s.domPoints > 0 && s.canvas && s.series.some((c) => c.role === 'running' && c.points > 0) ? s : undefined;
      }, { timeout: 60_000, interval: 150 });
      await shot('panel-live-curve');
      return { domPoints: st.domPoints, drawnPoints: st.drawnPoints, series: st.series, during: running.statusBar };
    });

    await step('baseline finishes (kept rows in the panel, status idle)', async () => {
      const st = await waitFor('two kept baseline rows', async () => {
        const s = await panelState();
        const kept = s?.rows.filter((r) => r.cells[1]?.startsWith('kept') && r.cells[5]?.startsWith('baseline')) ?? [];
        return kept.length >= 2 ? s : undefined;
      }, { timeout: 120_000, interval: 300 });
      await waitFor('status bar idle', async () => /\bidle\b/.test(await statusBarText()), { timeout: 60_000 });
      // the reference: the mean of the baseline runs' curves with their band
      const band = await waitFor('the reference band from both seeds', async () => {
        const s = await panelState();
        return s && s.bandRuns >= 2 ? s : undefined;
      }, { timeout: 30_000, interval: 300 });
      await shot('panel-baseline');
      return { rows: st.rows.length, bandRuns: band.bandRuns, series: band.series };
    });

    await step('the server was not restarted during the run (no seed interrupted, one server start in the log)', async () => {
      const st = await panelState();
      const interrupted = st.rows.filter((r) => /interrupted/.test(r.cells[1] ?? ''));
      if (interrupted.length) {
        throw new Error(`interrupted rows: ${JSON.stringify(interrupted)}`);
      }
      return serverStarts(1);
    });

    await closeNotifications();

    const proposed = await step('Propose Experiment', async () => {
      await runCommand('Sigmaloop: Propose Experiment');
      const text = await waitFor('the proposal notification', async () => {
        const t = await notificationsText();
        const m = /proposed #(\d+): ([^\n]*)/.exec(t);
        return m ? m : undefined;
      }, { timeout: 60_000, interval: 300 });
      await shot('proposed');
      return { id: Number(text[1]), hypothesis: text[2].slice(0, 120) };
    });
    const expId = proposed.id;

    await step('proposal diagnostic on the touched line', async () => {
      // the server publishes an information diagnostic on the line the proposal changes
      await closeNotifications();
      const found = await waitFor('a squiggle from the proposal', async () => {
        const n = await page.locator('.editor-group-container.active .monaco-editor .squiggly-info, .editor-group-container.active .monaco-editor [class*="squiggly"]').count();
        return n > 0 ? n : undefined;
      }, { timeout: 30_000, interval: 300 });
      return { squiggles: found };
    });

    await step(`show the diff of #${expId} from its quick fix; Accept/Reject in the diff editor's title bar`, async () => {
      await quickFix(`Show diff for #${expId}`);
      await page.locator('.editor-group-container.active .monaco-diff-editor').first().waitFor({ state: 'visible', timeout: 20_000 });
      const tab = await waitFor('the diff tab', async () => {
        const t = await page.locator('.editor-group-container.active .tab.active').first().innerText({ timeout: 1000 });
        return t.includes(`experiment #${expId}`) ? t.trim() : undefined;
      }, { timeout: 20_000 });
      const actions = await waitFor('Accept/Reject in the title bar', async () => {
        const labels = await page.locator('.editor-group-container.active .editor-actions .action-label').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label') ?? ''));
        return labels.some((l) => l.startsWith('Accept')) && labels.some((l) => l.startsWith('Reject')) ? labels.filter((l) => /Accept|Reject/.test(l)) : undefined;
      }, { timeout: 20_000 });
      await shot('diff-view');
      await runCommand('View: Close Editor');
      return { tab, titleBarActions: actions };
    });

    await step(`accept #${expId} through its quick fix (Ctrl+.)`, async () => {
      await quickFix(`Accept experiment #${expId}`, 'quick-fix-menu');
    });

    const result = await step(`#${expId} runs and its result arrives`, async () => {
      const note = await waitFor(`the result notification for #${expId}`, async () => {
        const t = await notificationsText();
        const m = new RegExp(`Sigmaloop: #${expId} [^\\n]*(kept|discarded|crashed|timeout|within noise)[^\\n]*`).exec(t);
        return m ? m[0] : undefined;
      }, { timeout: 120_000, interval: 300 });
      if (/crashed — crashed|: FAIL/.test(note)) {
        throw new Error(`the notification repeats itself: "${note}"`);
      }
      const st = await waitFor(`row #${expId} finished in the panel`, async () => {
        const s = await panelState();
        const row = s?.rows.find((r) => r.id === expId);
        return row && /^(kept|discarded|crashed|timeout)/.test(row.cells[1] ?? '') ? row : undefined;
      }, { timeout: 60_000 });
      await shot('result');
      return { notification: note, row: st.cells };
    });

    await step(`inlay hint on the line #${expId} touched`, async () => {
      const line = await waitFor(`an inlay hint "${result.row[1]} #${expId} …" (the status first)`, async () => {
        const t = await editorText();
        return t.split('\n').find((l) => new RegExp(`(kept|discarded|crashed|timeout)[^#]{0,20} #${expId}\\b`).test(l));
      }, { timeout: 60_000, interval: 300 });
      await shot('inlay-hint');
      return { line: line.trim() };
    });

    await step('loss panel final state', async () => {
      await runCommand('Sigmaloop: Show Loss Panel');
      const st = await waitFor('panel', panelState, { timeout: 20_000 });
      await page.waitForTimeout(500);
      await shot('panel-final');
      return { rows: st.rows.length, series: st.series, drawnPoints: st.drawnPoints };
    });

    await step('Stop Loop during a baseline stops the running seed and the queued one; the message says which', async () => {
      await closeNotifications();
      await runCommand('Sigmaloop: Run Baseline');
      const running = await waitFor('a running baseline seed', async () => {
        const m = /running #(\d+) at/.exec(await statusBarText());
        return m ? Number(m[1]) : undefined;
      }, { timeout: 60_000, interval: 100 });
      await runCommand('Sigmaloop: Stop Loop');
      const note = await waitFor('the stop message', async () => /Sigmaloop: stopped [^\n]*\./.exec(await notificationsText())?.[0], { timeout: 30_000, interval: 200 });
      const stopped = [...note.matchAll(/#(\d+) \((\w+)\)/g)].map((m) => ({ id: Number(m[1]), was: m[2] }));
      if (!stopped.length || !stopped.every((s) => s.was === 'running' || s.was === 'queued')) {
        throw new Error(`the message names no running or queued trial: "${note}"`);
      }
      const st = await waitFor('the stopped trials interrupted, nothing running or queued', async () => {
        const s = await panelState();
        const rows = s?.rows ?? [];
        const ok = stopped.every((x) => /interrupted/.test(rows.find((r) => r.id === x.id)?.cells[1] ?? '')) && !rows.some((r) => /^(running|queued)/.test(r.cells[1] ?? ''));
        return ok ? s : undefined;
      }, { timeout: 30_000, interval: 300 });
      // nothing starts afterwards (the old Stop Loop stopped only the running seed; the queued one started)
      await page.waitForTimeout(2500);
      const after = await panelState();
      const started = after.rows.filter((r) => /^(running|queued)/.test(r.cells[1] ?? ''));
      if (started.length) {
        throw new Error(`started after Stop Loop: ${JSON.stringify(started)}`);
      }
      await waitFor('status bar idle', async () => /\bidle\b/.test(await statusBarText()), { timeout: 20_000 });
      await shot('stopped');
      return { message: note, runningWhenStopped: running, rows: st.rows.filter((r) => stopped.some((x) => x.id === r.id)).map((r) => r.cells.slice(0, 2)) };
    });

    await step('still one server start over the whole session', () => serverStarts(1));

    await step('a restart due during a run asks first (the modal names what it would stop); Later waits until the trials end', async () => {
      await closeNotifications();
      await runCommand('Sigmaloop: Run Baseline');
      const first = await waitFor('a running baseline seed', async () => {
        const m = /running #(\d+) at/.exec(await statusBarText());
        return m ? Number(m[1]) : undefined;
      }, { timeout: 60_000, interval: 100 });
      // a restart asked for while the seeds run (Restart Server: no file watcher in between,
      // so the question comes while they run whatever the machine's load)
      await runCommand('Sigmaloop: Restart Server');
      const dialog = page.locator('.monaco-dialog-box');
      await dialog.waitFor({ state: 'visible', timeout: 30_000 });
      const question = (await dialog.innerText()).replace(/\s+/g, ' ').trim();
      if (!/Restart Server was run: restart the Sigmaloop server now\? That stops .*running trial/.test(question)) {
        throw new Error(`unexpected restart question: "${question}"`);
      }
      await shot('restart-modal');
      await dialog.locator('.monaco-button', { hasText: /^Later$/ }).click();
      const log = await waitFor('the deferred restart in the log', () => {
        const t = extensionLog();
        return /restart: Restart Server was run \(deferred until the trials ended\)/.test(t) ? t : undefined;
      }, { timeout: 90_000, interval: 500 });
      const seeds = await waitFor(`seeds #${first} and #${first + 1} kept (not interrupted by the restart)`, async () => {
        const st = await panelState();
        const rows = [first, first + 1].map((id) => st?.rows.find((r) => r.id === id));
        return rows.every((r) => r && /^kept/.test(r.cells[1] ?? '')) ? rows.map((r) => r.cells.slice(0, 2)) : undefined;
      }, { timeout: 60_000, interval: 300 });
      await waitFor('status bar idle after the deferred restart', async () => /\bidle\b/.test(await statusBarText()), { timeout: 60_000 });
      const lines = log.split('\n');
      return {
        question,
        deferred: lines.find((l) => /restart deferred/.test(l))?.replace(/^.*?restart deferred/, 'restart deferred'),
        restart: lines.find((l) => /restart: .*deferred/.test(l))?.replace(/^.*?restart: /, 'restart: '),
        seeds,
      };
    });

    await step('Set API Key hands the key to the running server over the connection (no restart)', async () => {
      await closeNotifications();
      const before = extensionLog().split('\n').length;
      await runCommand('Sigmaloop: Set API Key');
      const input = page.locator('.quick-input-widget .quick-input-box input');
      await input.waitFor({ state: 'visible', timeout: 10_000 });
      await input.fill('sk-e2e-not-a-real-key');
      await page.keyboard.press('Enter');
      const line = await waitFor('"API key handed to the server" in the log', () => extensionLog().split('\n').slice(before - 1).find((l) => /API key handed to the server/.test(l)), { timeout: 20_000, interval: 300 });
      const after = extensionLog().split('\n').slice(before - 1);
      const restarts = after.filter((l) => /\brestart: |server state: starting/.test(l));
      if (restarts.length) {
        throw new Error(`Set API Key restarted the server: ${restarts.join(' | ')}`);
      }
      if (after.some((l) => l.includes('sk-e2e-not-a-real-key'))) {
        throw new Error('the key appears in the log');
      }
      return { log: line.replace(/^.*?API key/, 'API key') };
    });
  }
}

/** The extension log's server starts and restarts: exactly `n` starts and no restart line. */
function serverStarts(n) {
  const lines = extensionLog().split('\n');
  const starts = lines.filter((l) => /server state: starting/.test(l));
  const restarts = lines.filter((l) => /\brestart(: | deferred)/.test(l));
  const exits = lines.filter((l) => /server process exited/.test(l));
  if (starts.length !== n || restarts.length || exits.length) {
    throw new Error(`expected ${n} server start(s) and no restart; the log has ${starts.length} start(s): ${[...restarts, ...exits].join(' | ') || '(no restart lines)'}`);
  }
  return { serverStarts: starts.length, restarts: 0 };
}

/**
 * A workspace whose metric is maximised (val_acc), arranged through the engine beforehand: a
 * baseline and two kept edits, the second with the higher val_acc. The state gives the panel
 * its metric and direction: the best reference (★) is the second edit, and the status bar shows the
 * reference ± σ and the best from the state.
 */
async function maximize() {
  const arranged = JSON.parse(process.env.E2E_ARRANGED ?? '{}');
  if (!arranged.best || !arranged.first) {
    throw new Error(`E2E_ARRANGED is missing or incomplete: ${process.env.E2E_ARRANGED}`);
  }
  await step('open the maximize workspace (val_acc, higher is better)', async () => {
    await openWorkbench();
    await openFile('train.py');
  });

  await step(`status bar: reference ± σ and best #${arranged.best} from the state`, async () => {
    const line = await waitFor(`status bar "idle · val_acc … ± … · best #${arranged.best}"`, async () => {
      const t = await statusBarText();
      return t.split('\n').find((l) => new RegExp(`idle · val_acc \\d+\\.\\d+ ± \\d+\\.\\d+ · best #${arranged.best}\\b`).test(l));
    }, { timeout: 90_000, interval: 300 });
    await shot('maximize-status');
    return { statusBar: line.trim() };
  });

  await step(`the panel marks #${arranged.best} as the best reference (not #${arranged.first}, the lower val_acc); the metric view says higher is better`, async () => {
    await runCommand('Sigmaloop: Show Loss Panel');
    const st = await waitFor('the panel with the metric view and a marked best row', async () => {
      const s = await panelState();
      return s?.initialized && s.metricPoints >= 3 && s.rows.some((r) => r.best) ? s : undefined;
    }, { timeout: 60_000, interval: 300 });
    await shot('maximize-panel');
    if (!/val_acc by experiment \(higher is better\)/.test(st.metricTitle)) {
      throw new Error(`the metric view's title is "${st.metricTitle}", not "val_acc by experiment (higher is better)"`);
    }
    const marked = st.rows.filter((r) => r.best).map((r) => r.id);
    if (marked.length !== 1 || marked[0] !== arranged.best) {
      throw new Error(`the table marks ${JSON.stringify(marked)} as the best run, expected [${arranged.best}]`);
    }
    return { title: st.title, metricTitle: st.metricTitle, metricPoints: st.metricPoints, bestRow: marked[0], kept: arranged.kept };
  });

  await step('the panel shows the reference with the smallest improvement the judge can keep (the noise advisor)', async () => {
    const st = await waitFor('the reference line with "keeps ≥"', async () => {
      const s = await panelState();
      return s && /keeps ≥/.test(s.reference) ? s : undefined;
    }, { timeout: 30_000, interval: 300 });
    if (!/^val_acc \d+\.\d+ ± \d+\.\d+ \(\d+ seeds?\) · keeps ≥ \S+ \(\d+\.\d%\)$/.test(st.reference)) {
      throw new Error(`the panel's reference line reads "${st.reference}"`);
    }
    return { reference: st.reference, advice: st.advice };
  });
}

// ------------------------------------------------------------------------- the research view

/** The code lens titles over train.py's first line. */
async function codeLensTitles() {
  return page.locator('.editor-group-container.active .codelens-decoration a').evaluateAll((els) => els.map((e) => (e.textContent ?? '').replace(/\s+/g, ' ').trim()));
}

/** Click the code lens whose title contains `text`. */
async function clickCodeLens(text) {
  const lens = page.locator('.editor-group-container.active .codelens-decoration a', { hasText: text }).first();
  await lens.waitFor({ state: 'visible', timeout: 30_000 });
  await lens.click();
}

/** Replace line `n` (1-based) of the active editor with `text`, as a researcher types it. */
async function replaceLine(n, text) {
  await page.locator('.editor-group-container.active .monaco-editor .view-lines').first().click();
  await page.keyboard.press('Control+G');
  const input = page.locator('.quick-input-widget .quick-input-box input');
  await input.waitFor({ state: 'visible', timeout: 5000 });
  await input.fill(`:${n}`); // Go to Line is quick access with the ":" prefix
  await page.keyboard.press('Enter');
  await input.waitFor({ state: 'hidden', timeout: 5000 });
  await waitFor(`the cursor on line ${n}`, async () => new RegExp(`Ln ${n}, Col`).test(await statusBarText()), { timeout: 5000, interval: 100 });
  await page.keyboard.press('End');
  await page.keyboard.press('Shift+Home');
  await page.keyboard.press('Shift+Home'); // past the indentation too
  await page.keyboard.type(text, { delay: 5 });
}

/** Wait for the quick input showing `prompt` (its message or placeholder), fill it, press Enter. */
async function answerInput(prompt, value) {
  const widget = page.locator('.quick-input-widget');
  await waitFor(`the input "${prompt}"`, async () => {
    const message = await widget.locator('.quick-input-message').innerText({ timeout: 500 }).catch(() => '');
    const placeholder = await widget.locator('.quick-input-box input').getAttribute('placeholder', { timeout: 500 }).catch(() => '');
    return (await widget.isVisible()) && (message.includes(prompt) || (placeholder ?? '').includes(prompt));
  }, { timeout: 20_000, interval: 150 });
  await widget.locator('.quick-input-box input').fill(value);
  await page.keyboard.press('Enter');
}

/** Pick the row of the open quick pick whose label contains `text`: filter by it, Enter (a hover can cover a click). */
async function pickRow(text) {
  const widget = page.locator('.quick-input-widget');
  await widget.locator('.quick-input-list .monaco-list-row', { hasText: text }).first().waitFor({ state: 'visible', timeout: 20_000 });
  await widget.locator('.quick-input-box input').fill(text);
  await waitFor(`"${text}" focused in the quick pick`, async () => {
    const focused = await widget.locator('.quick-input-list .monaco-list-row.focused').first().innerText({ timeout: 500 }).catch(() => '');
    return focused.includes(text);
  }, { timeout: 10_000, interval: 100 });
  await page.keyboard.press('Enter');
}

/** Click in the panel's page (the webview's inner frame). */
async function panelClick(selector) {
  const f = await waitFor('the panel frame', panelFrame, { timeout: 30_000 });
  await f.locator(selector).first().click();
}

/**
 * A researcher's session: a question asked with the result that would change the decision; the
 * baseline from the code lens; their own edit of train.py run from the code lens with its
 * hypothesis, prediction and question (the unsaved text runs); two experiments overlaid on the
 * reference in the panel (both curves in the DOM); the metric view; the question with its
 * experiments; an edit that crashes, its diagnostic and "Open log of #N"; an edit whose loss
 * spikes, its warning's "Show curve of #N" and "Dismiss spike on #N"; the morning report.
 */
async function research() {
  const question = 'Does a deeper net help at 2 s?';
  await step('open the workspace and train.py; server idle', async () => {
    await openWorkbench();
    await openFile('train.py');
    await page.locator('.editor-group-container.active .monaco-editor .view-lines').first().waitFor({ timeout: 20_000 });
    await waitFor('status bar "idle"', async () => /\bidle\b/.test(await statusBarText()), { timeout: 120_000, interval: 300 });
  });

  await step('Ask a Research Question with the result that would change the decision', async () => {
    await runCommand('Sigmaloop: Ask a Research Question');
    await answerInput('falsifiable question', question);
    await answerInput('change your decision', 'if DEPTH 8 is ≥ 0.002 better I make it the default');
    const note = await waitFor('the "Q1 asked" message', async () => /Sigmaloop: Q(\d+) asked: [^\n]*/.exec(await notificationsText())?.[0], { timeout: 30_000 });
    await closeNotifications();
    return { message: note };
  });

  const head = await step('the code lens says the open file is the research head; Run Baseline from it; the baseline says so once, with numbers', async () => {
    const titles = await waitFor('the code lens "Same as research head …"', async () => {
      const t = await codeLensTitles();
      return t.some((x) => /Same as research head [0-9a-f]{7} · Run Baseline/.test(x)) ? t : undefined;
    }, { timeout: 60_000, interval: 300 });
    if (titles.some((x) => /\bStop\b/.test(x))) {
      throw new Error(`a Stop lens while nothing runs: ${titles.join(' | ')}`);
    }
    const sha = /Same as research head ([0-9a-f]{7})/.exec(titles.join(' '))[1];
    await clickCodeLens('Same as research head');
    const stop = await waitFor('a Stop lens while the seeds run', async () => (await codeLensTitles()).find((x) => /Stop/.test(x)), { timeout: 60_000, interval: 200 });
    const done = await waitFor('"Baseline done: val_bpb … over 2 seeds; keep needs ≥ … better"', async () => /Baseline done: val_bpb \d+\.\d+ ± \d+\.\d+ over 2 seeds; keep needs ≥ \S+ better/.exec(await notificationsText())?.[0], { timeout: 120_000, interval: 300 });
    await shot('research-baseline-done');
    await closeNotifications();
    return { head: sha, lenses: titles, whileRunning: stop, message: done };
  });

  const mine = await step('edit train.py (unsaved): the code lens offers Run My Edit; run it with a hypothesis, a predicted Δ and the question', async () => {
    await replaceLine(9, 'DEPTH = 8           # a little better when deeper');
    const titles = await waitFor('the code lens "Run my edit (1 line differs from head …)"', async () => {
      const t = await codeLensTitles();
      return t.some((x) => x.includes(`Run my edit (1 line differs from head ${head.head})`)) ? t : undefined;
    }, { timeout: 30_000, interval: 300 });
    if (!titles.some((x) => x.includes(`Run baseline (head ${head.head}, not your file)`))) {
      throw new Error(`Run Baseline does not say it runs the head: ${titles.join(' | ')}`);
    }
    await shot('research-run-my-edit-lens');
    await clickCodeLens('Run my edit');
    await answerInput('Hypothesis', 'a deeper net fits better');
    await answerInput('Predicted Δ', '-0.004');
    await pickRow(`Q1: ${question}`);
    const note = await waitFor('the result of my edit', async () => {
      const m = /Sigmaloop: #(\d+) ([^\n]*(kept|discarded|within noise)[^\n]*)/.exec(await notificationsText());
      return m ? m : undefined;
    }, { timeout: 120_000, interval: 300 });
    const id = Number(note[1]);
    const row = await waitFor(`row #${id} (source user, Q1) in the panel`, async () => {
      const s = await panelState();
      const r = s?.rows.find((x) => x.id === id);
      return r && /^(kept|discarded)/.test(r.col.status ?? r.cells[1]) ? r : undefined;
    }, { timeout: 60_000, interval: 300 }).catch(async () => {
      await runCommand('Sigmaloop: Show Loss Panel');
      return waitFor(`row #${id} in the panel`, async () => (await panelState())?.rows.find((x) => x.id === id), { timeout: 30_000 });
    });
    if (!/user/.test(row.col.source ?? row.cells[5]) || !/1/.test(row.col.question ?? '')) {
      throw new Error(`row #${id} is not the user's edit testing Q1: ${JSON.stringify(row.col)}`);
    }
    const saved = readFileSync(path.join(WORKSPACE, 'train.py'), 'utf8');
    if (!saved.includes('DEPTH = 4')) {
      throw new Error('the file on disk changed: Run My Edit must run the editor text without saving it');
    }
    await shot('research-my-edit-result');
    await closeNotifications();
    return { id, message: note[0], row: row.col };
  });

  await step('select two experiments in the panel: both curves are drawn over the reference', async () => {
    await runCommand('Sigmaloop: Show Loss Panel');
    await waitFor('the panel with its rows', async () => (await panelState())?.rows.length >= 3, { timeout: 30_000 });
    const st0 = await panelState();
    if (st0.selected.length) {
      await panelClick('#rl-clear');
    }
    const baseline = st0.rows.find((r) => /baseline/.test(r.col.source ?? r.cells[5]));
    await panelClick(`#rl-experiments tbody tr[data-exp-id="${baseline.id}"] td[data-col="hypothesis"]`);
    await panelClick(`#rl-experiments tbody tr[data-exp-id="${mine.id}"] td[data-col="hypothesis"]`);
    const st = await waitFor('two selected curves drawn', async () => {
      const s = await panelState();
      const drawn = s?.series.filter((c) => c.role === 'selected' && c.points > 0) ?? [];
      return s && s.domSelected === 2 && drawn.length === 2 && s.selectedLegend.length === 2 ? s : undefined;
    }, { timeout: 30_000, interval: 200 });
    const ids = st.series.filter((c) => c.role === 'selected').map((c) => c.expId).sort((a, b) => a - b);
    if (JSON.stringify(ids) !== JSON.stringify([baseline.id, mine.id].sort((a, b) => a - b))) {
      throw new Error(`the selected curves are ${JSON.stringify(ids)}, not #${baseline.id} and #${mine.id}`);
    }
    await shot('research-two-curves');
    return { dataSeries: st.domSeries, dataSelected: st.domSelected, legend: st.selectedLegend, bandRuns: st.bandRuns, series: st.series };
  });

  await step('the metric view: the metric by experiment with the reference and the keep threshold', async () => {
    const st = await waitFor('the metric view with 3 points, the reference and the keep line', async () => {
      const s = await panelState();
      return s && s.metricPoints >= 3 && s.metricReference && s.metricKeepLine ? s : undefined;
    }, { timeout: 30_000, interval: 300 });
    if (!/val_bpb by experiment \(lower is better\)/.test(st.metricTitle)) {
      throw new Error(`the metric view's title is "${st.metricTitle}"`);
    }
    return { title: st.metricTitle, points: st.metricPoints, reference: st.metricReference, keepLine: st.metricKeepLine };
  });

  await step('the question with its experiments; its Overlay button draws them', async () => {
    await panelClick('.rl-tab[data-tab="questions"]');
    const q = await waitFor(`Q1 listing #${mine.id}`, async () => {
      const s = await panelState();
      const x = s?.questions.find((y) => y.text === question);
      return x && x.experiments.some((e) => e.id === mine.id) ? x : undefined;
    }, { timeout: 30_000, interval: 300 });
    await panelClick(`.rl-question[data-question-id="${q.id}"] .rl-question-select`);
    const st = await waitFor('the question\'s experiments overlaid', async () => {
      const s = await panelState();
      return s && s.selected.length === q.experiments.length && s.selected.includes(mine.id) && s.domSelected === q.experiments.length ? s : undefined;
    }, { timeout: 20_000, interval: 200 });
    await shot('research-question');
    await panelClick('.rl-tab[data-tab="experiments"]');
    return { question: q, selected: st.selected };
  });

  await step('an edit that crashes: one notification with its place; the diagnostic offers "Open log of #N", which opens the log', async () => {
    await runCommand('View: Focus First Editor Group');
    await replaceLine(10, 'WIDTH = 64 // 0');
    await runCommand('Sigmaloop: Run My Edit');
    // every answer is skippable: Escape through them
    for (const prompt of ['Hypothesis', 'Predicted Δ', 'Which research question']) {
      await waitFor(`the "${prompt}" prompt`, async () => {
        const w = page.locator('.quick-input-widget');
        const text = `${await w.locator('.quick-input-message').innerText({ timeout: 500 }).catch(() => '')} ${await w.locator('.quick-input-box input').getAttribute('placeholder', { timeout: 500 }).catch(() => '')}`;
        return (await w.isVisible()) && text.includes(prompt);
      }, { timeout: 20_000, interval: 150 });
      await page.keyboard.press('Escape');
    }
    const note = await waitFor('"#N crashed: ZeroDivisionError: … (train.py:10)"', async () => /Sigmaloop: #(\d+) crashed: ZeroDivisionError[^\n]*\(train\.py:10\)/.exec(await notificationsText()), { timeout: 120_000, interval: 300 });
    const id = Number(note[1]);
    if (/crashed[^\n]*crashed/.test(note[0])) {
      throw new Error(`the crash is said twice: "${note[0]}"`);
    }
    await closeNotifications();
    await waitFor('the crash squiggle', async () => (await page.locator('.editor-group-container.active .monaco-editor .squiggly-error').count()) > 0, { timeout: 30_000, interval: 300 });
    await quickFix(`Open log of #${id}`, 'research-open-log-action');
    const tab = await waitFor(`the log tab ${id}.log`, async () => {
      const t = page.locator('.tabs-container .tab', { hasText: `${id}.log` }).first();
      return (await t.isVisible()) ? (await t.innerText({ timeout: 1000 })).trim() : undefined;
    }, { timeout: 20_000, interval: 300 });
    const text = await waitFor('the log text in an editor', async () => {
      const ed = page.locator('.monaco-editor .view-lines', { hasText: 'ZeroDivisionError' }).first();
      return (await ed.isVisible()) ? (await ed.innerText({ timeout: 1000 })).replace(/\u00a0/g, ' ') : undefined;
    }, { timeout: 20_000, interval: 300 });
    await shot('research-log');
    return { message: note[0], tab, logHasError: /ZeroDivisionError/.test(text) };
  });

  await step('an edit whose loss spikes: a warning with "Show curve of #N" (the panel overlays it, the spike marked) and "Dismiss spike on #N" (the warning goes, the marker fades)', async () => {
    await openFile('train.py');
    await replaceLine(10, 'WIDTH = 64');
    // the researcher's edit: the loss ×20 at step 12 of 20 (the printed metric is untouched)
    await replaceLine(24, '                loss = 3.0 * (0.97 ** step) * (20 if step == 12 else 1) + (LR - 0.1) ** 2 - 0.01 * DEPTH + noise');
    await runCommand('Sigmaloop: Run My Edit');
    for (const prompt of ['Hypothesis', 'Predicted Δ', 'Which research question']) {
      await waitFor(`the "${prompt}" prompt`, async () => {
        const w = page.locator('.quick-input-widget');
        const text = `${await w.locator('.quick-input-message').innerText({ timeout: 500 }).catch(() => '')} ${await w.locator('.quick-input-box input').getAttribute('placeholder', { timeout: 500 }).catch(() => '')}`;
        return (await w.isVisible()) && text.includes(prompt);
      }, { timeout: 20_000, interval: 150 });
      await page.keyboard.press('Escape');
    }
    const note = await waitFor('the spiky edit\'s result', async () => /Sigmaloop: #(\d+) (?!crashed)[^\n]*(kept|discarded|pruned|within noise|worse|better)[^\n]*/.exec(await notificationsText()), { timeout: 120_000, interval: 300 });
    const id = Number(note[1]);
    await closeNotifications();
    await waitFor('the anomaly squiggle', async () => (await page.locator('.editor-group-container.active .monaco-editor .squiggly-warning').count()) > 0, { timeout: 30_000, interval: 300 });
    // the warning is on the edit's first changed line: DEPTH (line 9) unless #3 was kept, else the loss line
    await quickFixAt([9, 24], `Show curve of #${id}`, 'research-anomaly-actions');
    const marks = async () => {
      const f = await panelFrame();
      return f?.evaluate((exp) => [...document.querySelectorAll(`.rl-anomaly[data-exp-id="${exp}"]`)].map((m) => ({ kind: m.dataset.kind, dismissed: m.classList.contains('dismissed'), title: m.title })), id);
    };
    const shown = await waitFor(`#${id} overlaid in the panel with its spike marked`, async () => {
      const s = await panelState();
      const m = await marks();
      return s && s.selected.includes(id) && s.selectedLegend.includes(id) && s.tab === 'experiments' && m?.some((x) => x.kind === 'spike' && !x.dismissed) ? { selected: s.selected, marks: m } : undefined;
    }, { timeout: 30_000, interval: 300 });
    await shot('research-anomaly-curve');
    await openFile('train.py');
    await quickFixAt([9, 24], `Dismiss spike on #${id}`);
    await answerInput('Why is it nothing', 'checked: a one-step logging glitch');
    await waitFor('the anomaly squiggle gone', async () => (await page.locator('.editor-group-container.active .monaco-editor .squiggly-warning').count()) === 0, { timeout: 30_000, interval: 300 });
    const faded = await waitFor('the spike marker faded, with the reason', async () => {
      const m = await marks();
      const spike = m?.find((x) => x.kind === 'spike');
      return spike?.dismissed && spike.title.includes('checked: a one-step logging glitch') ? m : undefined;
    }, { timeout: 30_000, interval: 300 });
    await shot('research-anomaly-dismissed');
    return { id, message: note[0], shown, faded };
  });

  await step('"Sigmaloop: Open Morning Report": the report in its panel, every section, no script', async () => {
    await runCommand('Sigmaloop: Open Morning Report');
    const report = await reportInPanel();
    await shot('research-report');
    return report;
  });

  await step('a window reload brings the report panel back, written anew by the server', async () => {
    const written = () => (extensionLog().match(/\breport: "/g) ?? []).length;
    const before = written();
    // Developer: Reload Window, as a user reloads: VS Code saves the open editors (our panel
    // among them) before it goes; a bare page.reload() can beat that save to the server
    const reloaded = page.waitForEvent('load', { timeout: 60_000 });
    await runCommand('Developer: Reload Window');
    await reloaded;
    await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: 60_000 });
    const report = await reportInPanel();
    const lines = await waitFor('a new "report:" line in the extension log', () => (written() > before ? written() : undefined), { timeout: 60_000, interval: 500 });
    await shot('research-report-reloaded');
    return { ...report, reportLines: { before, after: lines } };
  });
}

/** The morning report's tab and page (heading, section ids, script count), waited for; it
 * throws when a section is missing or the page has a script. */
async function reportInPanel() {
  await waitFor('the tab "Sigmaloop: Morning Report"', async () => page.locator('.tabs-container .tab', { hasText: 'Sigmaloop: Morning Report' }).first().isVisible(), { timeout: 60_000, interval: 300 });
  const report = await waitFor('the report page with its heading and sections', async () => {
    for (const f of page.frames()) {
      try {
        if ((await f.locator('h2#timeline').count()) === 0) {
          continue;
        }
        const heading = (await f.locator('h1').first().innerText({ timeout: 1000 })).trim();
        const sections = await f.locator('h2[id]').evaluateAll((els) => els.map((e) => e.id));
        const scripts = await f.locator('script').count();
        return heading ? { heading, sections, scripts } : undefined;
      } catch {
        // a frame in transition
      }
    }
    return undefined;
  }, { timeout: 60_000, interval: 500 });
  for (const id of ['timeline', 'kept', 'refuted', 'calibration', 'weird', 'noise', 'cost', 'questions']) {
    if (!report.sections.includes(id)) {
      throw new Error(`the report has no #${id} section: ${report.sections.join(', ')}`);
    }
  }
  if (report.scripts) {
    throw new Error(`the report page has ${report.scripts} script elements`);
  }
  return report;
}

await main();
