// Opens a morning report page in Debian's Chromium (playwright-core) the way a researcher would,
// and prints one JSON object with what a person would see: the sections, the plots drawn (each
// with its marks and a non-zero size), console errors, every network request the page tried
// (a self-contained page makes none beyond its own file), and a screenshot.
// Usage: node tests/engine/report_page.mjs REPORT.html SCREENSHOT.png [WIDTH]
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [file, shot, widthArg] = process.argv.slice(2);
const executablePath = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
const out = { requests: [], consoleErrors: [], pageErrors: [] };
try {
  const width = Number(widthArg ?? 1000);
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  const url = pathToFileURL(path.resolve(file)).toString();
  page.on('console', (m) => { if (m.type() === 'error') out.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u !== url) {
      out.requests.push(u);
      return route.abort();
    }
    return route.continue();
  });
  await page.goto(url, { waitUntil: 'load' });
  Object.assign(out, await page.evaluate(() => {
    const ids = [...document.querySelectorAll('h2[id]')].map((h) => h.id);
    const sections = {};
    for (const id of ids) {
      const section = document.getElementById(id).closest('section');
      const charts = [...section.querySelectorAll('svg.chart')].map((svg) => {
        const box = svg.getBoundingClientRect();
        return {
          kind: svg.dataset.chart,
          width: Math.round(box.width),
          height: Math.round(box.height),
          marks: svg.querySelectorAll('path.line, circle, rect.est, rect.tbar, path.band, rect.band').length,
        };
      });
      sections[id] = { charts, text: section.innerText.slice(0, 4000), empty: !!section.querySelector('.empty') };
    }
    return {
      title: document.title,
      h1: document.querySelector('h1')?.textContent ?? '',
      ids,
      sections,
      scripts: document.scripts.length,
      overflowX: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      csp: document.querySelector('meta[http-equiv="Content-Security-Policy"]')?.getAttribute('content') ?? null,
    };
  }));
  await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
