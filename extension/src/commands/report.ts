// The morning report: Open Morning Report (sigmaloop.report writes the page; the report panel
// shows it, refreshed in place when run again) and Open Morning Report in Browser (the file, in
// the system browser, where the file is on this machine).

import * as vscode from 'vscode';
import { ReportPanel } from '../report';
import { parseReportResult, reportTitle } from '../reportPage';
import { type CommandContext, forward } from './forward';

/** Write the report (experiments after `since`, else all) and show it (revealed unless `reveal`
 * is false); its path, or undefined. */
export async function openReport(c: CommandContext, since?: number, reveal = true): Promise<string | undefined> {
  const res = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Sigmaloop: writing the morning report…' }, () =>
    forward<unknown>(c, 'sigmaloop.report', since === undefined ? [] : [since]),
  );
  const report = parseReportResult(res);
  if (!report) {
    if (res !== undefined) {
      c.log.warn(`sigmaloop.report: an answer without a path and a page: ${JSON.stringify(res).slice(0, 200)}`);
    }
    return undefined;
  }
  c.report.show(report, since, reveal);
  c.log.info(`report: "${reportTitle(report.html)}" at ${report.path}`);
  return report.path;
}

/** The open report panel written anew for the nights it covered (a loop ended, a window reloaded). */
export async function refreshReport(c: CommandContext): Promise<void> {
  if (!vscode.workspace.isTrusted) {
    c.report.note('Sigmaloop runs nothing in Restricted Mode, so the morning report is not written here. Trust the workspace to see it.');
    return;
  }
  if (c.report.isOpen) {
    const path = await openReport(c, c.report.since, false);
    if (!path && c.report.showsNote) {
      // a page already shown stays; a placeholder says what went wrong instead of waiting forever
      c.report.note('The morning report could not be written (the Sigmaloop log says why). Run "Sigmaloop: Open Morning Report" to try again.');
    }
  }
}

export function registerReportCommands(c: CommandContext): vscode.Disposable[] {
  const open = (since?: number) => openReport(c, since);

  return [
    vscode.commands.registerCommand('sigmaloop.openReport', async (since?: unknown) => {
      await open(typeof since === 'number' && Number.isInteger(since) && since >= 0 ? since : undefined);
    }),

    vscode.commands.registerCommand('sigmaloop.openReportInBrowser', async () => {
      const path = c.report.path ?? (await open());
      if (!path) {
        return;
      }
      if (!ReportPanel.browserCanOpen()) {
        // the file is where the server runs (a remote, the web build): say where, offer the path
        const pick = await vscode.window.showInformationMessage(`Sigmaloop: the report is at ${path} on the machine that runs the server.`, 'Copy Path');
        if (pick) {
          await vscode.env.clipboard.writeText(path);
        }
        return;
      }
      const opened = await vscode.env.openExternal(vscode.Uri.file(path));
      if (!opened) {
        void vscode.window.showWarningMessage(`Sigmaloop: could not open ${path} in the browser.`);
      }
    }),
  ];
}
