// The morning report in a panel: the page the engine wrote (sigmaloop.report → {path, html}),
// shown as it is in a webview with scripts disabled and no local resources (the page carries its
// own strict Content-Security-Policy; reportPage.ts makes sure of it). One panel: running the
// command again refreshes it in place; a loop that ends refreshes an open one; a window reload
// brings it back (a serializer) and writes it anew for the nights it covered (`since`, kept in
// the workspace's memento: a page without scripts has no state of its own). "Open in Browser"
// (the panel's title bar) hands the file to the system browser where the file is on this machine.

import * as vscode from 'vscode';
import { placeholderPage, reportDocument } from './reportPage';

export const REPORT_VIEW_TYPE = 'sigmaloop.report';
export const REPORT_TITLE = 'Sigmaloop: Morning Report';
/** The workspace memento's key for the shown page's `since` (-1: every experiment). */
const SINCE_KEY = 'sigmaloop.report.since';
const WEBVIEW_OPTIONS: vscode.WebviewOptions = { enableScripts: false, enableForms: false, enableCommandUris: false, localResourceRoots: [] };

export class ReportPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private noted = false;
  /** The file the shown page was written to. */
  path: string | undefined;

  constructor(private readonly memento?: vscode.Memento) {}

  get isOpen(): boolean {
    return !!this.panel;
  }

  /** The experiments the last page covered: those after `since`; undefined: all of them. */
  get since(): number | undefined {
    const v = this.memento?.get<number>(SINCE_KEY);
    return typeof v === 'number' && v >= 0 ? v : undefined;
  }

  /** Show this page (a new panel, or the open one refreshed and revealed). `reveal` false: a
   * refresh in the background, shown only in a panel that is still open. */
  show(report: { path: string; html: string }, since?: number, reveal = true): void {
    if (!reveal && !this.panel) {
      return; // closed while the page was being written: not reopened behind the user's back
    }
    this.path = report.path;
    this.noted = false;
    void this.memento?.update(SINCE_KEY, since ?? -1);
    if (!this.panel) {
      this.adopt(vscode.window.createWebviewPanel(REPORT_VIEW_TYPE, REPORT_TITLE, vscode.ViewColumn.Active, { ...WEBVIEW_OPTIONS, enableFindWidget: true }));
    } else if (reveal) {
      this.panel.reveal();
    }
    this.panel!.webview.html = reportDocument(report.html);
  }

  /** After a reload: the panel VS Code kept, saying `note` until the page is written. */
  restore(panel: vscode.WebviewPanel, note: string): void {
    if (this.panel !== panel) {
      this.panel?.dispose();
      this.adopt(panel);
    }
    this.note(note);
  }

  /** The open panel says only `text` (why there is no page, or that it is being written). */
  note(text: string): void {
    if (this.panel) {
      this.panel.webview.html = reportDocument(placeholderPage(text));
      this.noted = true;
    }
  }

  /** Whether the open panel shows a note rather than a page. */
  get showsNote(): boolean {
    return !!this.panel && this.noted;
  }

  /** Brings the panel back after a window reload; `refresh` writes the page anew. */
  static serializer(report: ReportPanel, refresh: () => Promise<unknown>): vscode.WebviewPanelSerializer {
    return {
      deserializeWebviewPanel: (panel: vscode.WebviewPanel) => {
        report.restore(panel, 'Writing the morning report…');
        void refresh();
        return Promise.resolve();
      },
    };
  }

  private adopt(panel: vscode.WebviewPanel): void {
    panel.webview.options = WEBVIEW_OPTIONS; // a restored panel too: no scripts, forms, command links or files
    panel.onDidDispose(() => {
      if (this.panel === panel) {
        this.panel = undefined;
      }
    });
    this.panel = panel;
  }

  /** Whether the system browser can open the file: it is on this machine (not a remote, not the web build). */
  static browserCanOpen(): boolean {
    return vscode.env.uiKind === vscode.UIKind.Desktop && !vscode.env.remoteName;
  }

  dispose(): void {
    this.panel?.dispose();
  }
}
