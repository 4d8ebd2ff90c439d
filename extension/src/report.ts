// The morning report in a panel: the page the engine wrote (sigmaloop.report → {path, html}),
// shown as it is in a webview with scripts disabled and no local resources (the page carries its
// own strict Content-Security-Policy; reportPage.ts makes sure of it). One panel: running the
// command again refreshes it in place. "Open in Browser" (the panel's title bar) hands the file
// to the system browser where the file is on this machine.

import * as vscode from 'vscode';
import { reportDocument } from './reportPage';

export const REPORT_VIEW_TYPE = 'sigmaloop.report';
export const REPORT_TITLE = 'Sigmaloop: Morning Report';

export class ReportPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  /** The file the shown page was written to. */
  path: string | undefined;

  get isOpen(): boolean {
    return !!this.panel;
  }

  /** Show this page (a new panel, or the open one refreshed and revealed). */
  show(report: { path: string; html: string }): void {
    this.path = report.path;
    if (!this.panel) {
      const panel = vscode.window.createWebviewPanel(REPORT_VIEW_TYPE, REPORT_TITLE, vscode.ViewColumn.Active, {
        enableScripts: false,
        enableForms: false,
        enableCommandUris: false,
        localResourceRoots: [],
        enableFindWidget: true,
      });
      panel.onDidDispose(() => {
        if (this.panel === panel) {
          this.panel = undefined;
        }
      });
      this.panel = panel;
    } else {
      this.panel.reveal();
    }
    this.panel.webview.html = reportDocument(report.html);
  }

  /** Whether the system browser can open the file: it is on this machine (not a remote, not the web build). */
  static browserCanOpen(): boolean {
    return vscode.env.uiKind === vscode.UIKind.Desktop && !vscode.env.remoteName;
  }

  dispose(): void {
    this.panel?.dispose();
  }
}
