// Read-only virtual documents for proposals (scheme sigmaloop-exp) and the diff view:
// left = the script the proposal was made against (the real file when it is unchanged since),
// right = the proposal, both as the server sends them (`sigmaloop.showExperiment`: parentText,
// proposedText); the client applies no diff itself. Accept / Reject sit in the diff editor's
// title bar (package.json menus). The tab's title follows the experiment's status ("(proposed)",
// "(running)", then its verdict): an open tab is reopened in place under the new title.

import * as path from 'node:path';
import * as vscode from 'vscode';
import { diffTitleStatus } from './commands/prompts';
import type { ShowExperimentResult } from './contract';
import { EXP_SCHEME, expPath } from './store';

interface ShownDiff {
  left: vscode.Uri;
  right: vscode.Uri;
  leftLabel: string;
  status: string;
}

function diffTitle(id: number, d: ShownDiff): string {
  return `${d.leftLabel} ↔ experiment #${id}${d.status ? ` (${d.status})` : ''}`;
}

export class ProposalDocuments implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly texts = new Map<string, string>();
  private readonly emitter = new vscode.EventEmitter<vscode.Uri>();
  /** Diffs opened this session, by experiment: what a new title reopens. */
  private readonly shown = new Map<number, ShownDiff>();
  readonly onDidChange = this.emitter.event;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.toString()) ?? `# experiment document no longer available: ${uri.path}\n`;
  }

  private put(uri: vscode.Uri, text: string): void {
    const key = uri.toString();
    const changed = this.texts.get(key) !== text;
    this.texts.set(key, text);
    if (changed) {
      this.emitter.fire(uri);
    }
  }

  /** Open the diff of an experiment (the showExperiment command's result). */
  async openDiff(res: ShowExperimentResult, root: string): Promise<void> {
    const scriptName = res.scriptName || 'train.py';
    const scriptUri = vscode.Uri.file(path.join(root, scriptName));
    let current: string | undefined;
    try {
      const doc = await vscode.workspace.openTextDocument(scriptUri);
      current = doc.getText();
    } catch {
      current = undefined;
    }
    const parent = typeof res.parentText === 'string' ? res.parentText : undefined;
    const proposed = typeof res.proposedText === 'string' ? res.proposedText : undefined;
    const base = path.basename(scriptName);
    const right = vscode.Uri.from({ scheme: EXP_SCHEME, path: expPath(res.id, base) });
    if (proposed === undefined || parent === undefined) {
      // no script to compare (a baseline has no parent edit): show the diff itself
      const diffUri = vscode.Uri.from({ scheme: EXP_SCHEME, path: expPath(res.id, `${base}.diff`) });
      this.put(diffUri, typeof res.diff === 'string' && res.diff ? res.diff : `# experiment #${res.id} has no diff\n`);
      const doc = await vscode.workspace.openTextDocument(diffUri);
      await vscode.languages.setTextDocumentLanguage(doc, 'diff');
      await vscode.window.showTextDocument(doc, { preview: true });
      return;
    }
    this.put(right, proposed);
    let left: vscode.Uri;
    let leftLabel: string;
    if (current !== undefined && parent === current) {
      left = scriptUri;
      leftLabel = base;
    } else {
      left = vscode.Uri.from({ scheme: EXP_SCHEME, path: `/exp-${res.id}/parent/${base}` });
      this.put(left, parent);
      leftLabel = `${base} @ ${(res.parentCommit ?? 'parent').slice(0, 8)}`;
    }
    const shown = { left, right, leftLabel, status: diffTitleStatus(res.status) };
    this.shown.set(res.id, shown);
    await vscode.commands.executeCommand('vscode.diff', left, right, diffTitle(res.id, shown), { preview: true });
  }

  /** An experiment's status changed: its open diff tabs take the new word (closed and reopened in place, focus kept). */
  async retitle(id: number, status: string): Promise<void> {
    const shown = this.shown.get(id);
    const word = diffTitleStatus(status);
    if (!shown || shown.status === word) {
      return;
    }
    shown.status = word;
    const right = shown.right.toString();
    for (const group of vscode.window.tabGroups.all) {
      for (const tab of group.tabs) {
        if (!(tab.input instanceof vscode.TabInputTextDiff) || tab.input.modified.toString() !== right) {
          continue;
        }
        const focused = tab.isActive && group.isActive;
        await vscode.window.tabGroups.close(tab, true);
        await vscode.commands.executeCommand('vscode.diff', shown.left, shown.right, diffTitle(id, shown), {
          preview: tab.isPreview,
          viewColumn: group.viewColumn,
          preserveFocus: !focused,
        });
      }
    }
  }

  dispose(): void {
    this.emitter.dispose();
    this.texts.clear();
    this.shown.clear();
  }
}
