// Issue 15 in the client, pure parts: the morning report's page as the panel shows it, the
// 'select' message of "Show curve of #N", dismissed anomalies on a curve, the done message's
// buttons and the dismissal's words.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dismissedMessage, doneActions } from '../../extension/src/commands/prompts';
import { isHostToPanel, parseDone, recordsToCurve } from '../../extension/src/contract';
import { REPORT_CSP, hasCsp, parseReportResult, placeholderPage, reportDocument, reportTitle } from '../../extension/src/reportPage';

const PAGE = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}">
<title>r</title><style>h1{color:red}</style></head>
<body><h1>Sigmaloop <em>morning</em> report</h1><h2 id="timeline">Timeline</h2></body></html>`;

test('the report page is shown as written when it carries its own policy', () => {
  assert.ok(hasCsp(PAGE));
  assert.equal(reportDocument(PAGE), PAGE);
  assert.equal(reportTitle(PAGE), 'Sigmaloop morning report');
});

test('a page without a policy gets the strict one first in its head (no scripts, no network)', () => {
  const bare = '<html><head><title>x</title><script>alert(1)</script></head><body><h1>r</h1></body></html>';
  const shown = reportDocument(bare);
  assert.ok(hasCsp(shown));
  assert.ok(shown.indexOf('Content-Security-Policy') < shown.indexOf('<title>'));
  assert.ok(shown.includes(`content="${REPORT_CSP}"`) && REPORT_CSP.startsWith("default-src 'none'"));
  // a fragment without a head is wrapped in one
  const frag = reportDocument('<h1>only a heading</h1>');
  assert.ok(hasCsp(frag) && frag.includes('<body><h1>only a heading</h1></body>'));
  // <header> is not <head>
  const header = reportDocument('<body><header>x</header></body>');
  assert.ok(hasCsp(header) && header.startsWith('<!DOCTYPE html><html><head><meta'));
  assert.equal(reportTitle('<p>no heading</p>'), '');
});

test('a report result is a path and a page, nothing else', () => {
  assert.deepEqual(parseReportResult({ path: '/w/.sigmaloop/report.html', html: PAGE }), { path: '/w/.sigmaloop/report.html', html: PAGE });
  for (const bad of [undefined, null, 'x', { path: 1, html: '' }, { path: '/p' }, { html: PAGE }]) {
    assert.equal(parseReportResult(bad), undefined);
  }
});

test('"Show curve of #N" is a select message the panel checks', () => {
  assert.ok(isHostToPanel({ type: 'select', ids: [7] }));
  assert.ok(isHostToPanel({ type: 'select', ids: [7, 9] }));
  for (const ids of [[], [-1], ['7'], [1.5], undefined, Array.from({ length: 21 }, (_, i) => i)]) {
    assert.ok(!isHostToPanel({ type: 'select', ids }), JSON.stringify(ids));
  }
});

test('a dismissed anomaly stays on its curve, marked, with its reason', () => {
  const recs = [
    { step: 0, t: 0, frac: 0.1, loss: 3 },
    { step: 1, t: 1, frac: 0.2, loss: 9 },
  ];
  const c = recordsToCurve(4, recs, [
    { kind: 'spike', frac: 0.2, step: 1, message: 'loss ×3.0 spike at 20% of budget', dismissed: true, dismissedReason: 'a logging glitch' },
    { kind: 'nan', frac: 0.2, step: 1, message: 'loss NaN at 20% of budget' },
    { kind: 'plateau', frac: 0.5, step: 1, message: 'x', dismissed: 'yes' }, // malformed: dropped
  ]);
  assert.deepEqual(c.anomalies, [
    { kind: 'spike', frac: 0.2, step: 1, message: 'loss ×3.0 spike at 20% of budget', dismissed: true, dismissedReason: 'a logging glitch' },
    { kind: 'nan', frac: 0.2, step: 1, message: 'loss NaN at 20% of budget' },
  ]);
  const curve = { expId: 4, xs: [0.1], ys: [3], anomalies: [{ kind: 'spike', frac: 0.1, step: 0, message: 'm', dismissed: true, dismissedReason: '' }] };
  assert.ok(isHostToPanel({ type: 'curve', curve, replace: true }));
  assert.ok(!isHostToPanel({ type: 'curve', curve: { ...curve, anomalies: [{ ...curve.anomalies[0], dismissedReason: 3 }] }, replace: true }));
});

test('a finished loop offers its report; a baseline says its numbers', () => {
  assert.deepEqual(parseDone({ what: 'loop', message: 'sigmaloop: Loop done: 3 run, none kept' }), { what: 'loop', message: 'sigmaloop: Loop done: 3 run, none kept' });
  for (const bad of [null, { what: 'trial', message: 'x' }, { what: 'loop' }, { what: 'loop', message: 3 }]) {
    assert.equal(parseDone(bad), undefined);
  }
  assert.deepEqual(doneActions('loop'), ['Open Report', 'Show Panel']);
  assert.deepEqual(doneActions('baseline'), []);
});

test('a dismissal says what went and what is still shown', () => {
  assert.equal(dismissedMessage({ id: 7, kind: 'spike', anomalies: [{ kind: 'nan' }] }), 'Sigmaloop: dismissed the spike on #7; still shown: nan');
  assert.equal(dismissedMessage({ id: 7, kind: 'nan', anomalies: [] }), 'Sigmaloop: dismissed the nan on #7');
});

test('the placeholder a restored panel shows: the strict policy, the note escaped, nothing to run', () => {
  const page = placeholderPage('Writing the <morning> report & more…');
  assert.ok(hasCsp(page) && page.includes(`content="${REPORT_CSP}"`));
  assert.equal(reportDocument(page), page);
  assert.ok(page.includes('Writing the &lt;morning&gt; report &amp; more…'));
  assert.ok(!/<script/i.test(page) && !/https?:/.test(page));
});
