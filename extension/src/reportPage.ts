// The morning report's page as the report panel shows it: pure (no vscode), so unit tests read it.
// The engine writes one self-contained page (inline CSS and SVG, no scripts, no network) with its
// own Content-Security-Policy; the panel shows it with scripts disabled and no local resources.
// A page that somehow lacks the policy gets the strict one before it is shown.

/** The policy the engine's page carries, and the one a page without one is given. */
export const REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const CSP_META = /<meta\s[^>]*http-equiv\s*=\s*["']?content-security-policy["']?[^>]*>/i;

/** Whether the page declares a Content-Security-Policy in a meta tag. */
export function hasCsp(html: string): boolean {
  return CSP_META.test(html);
}

/** The page to show: as written when it carries its policy; else with the strict policy first in its head. */
export function reportDocument(html: string): string {
  if (hasCsp(html)) {
    return html;
  }
  const meta = `<meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}">`;
  const head = /<head(\s[^>]*)?>/i.exec(html);
  if (head) {
    const at = head.index + head[0].length;
    return `${html.slice(0, at)}\n${meta}${html.slice(at)}`;
  }
  return `<!DOCTYPE html><html><head>${meta}</head><body>${html}</body></html>`;
}

/** The report's heading (its first h1's text), for the log and the e2e: "" when it has none. */
export function reportTitle(html: string): string {
  const m = /<h1[^>]*>([\s\S]*?)<\/h1>/i.exec(html);
  return m ? m[1].replace(/<[^>]*>/g, '').replace(/\s+/g, ' ').trim() : '';
}

/** A `sigmaloop.report` result as received: a path and a page, or undefined. */
export function parseReportResult(v: unknown): { path: string; html: string } | undefined {
  if (typeof v !== 'object' || v === null) {
    return undefined;
  }
  const r = v as Record<string, unknown>;
  return typeof r.path === 'string' && typeof r.html === 'string' ? { path: r.path, html: r.html } : undefined;
}

/** A page that only says `text` (the panel while the report is written, or why it cannot be). */
export function placeholderPage(text: string): string {
  const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}"><title>Morning report</title></head><body style="font-family: var(--vscode-font-family, sans-serif); color: var(--vscode-foreground); padding: 1em"><p id="sigmaloop-report-note">${esc}</p></body></html>`;
}
