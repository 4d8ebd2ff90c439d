// What every command shares: forwarding to the server with errors shown as messages, the
// Restricted Mode refusal, and choosing an experiment (argument, active proposal, quick pick).

import * as vscode from 'vscode';
import type { ExperimentWire } from '../contract';
import type { LossPanel } from '../panel';
import type { ProposalDocuments } from '../diffView';
import type { ReportPanel } from '../report';
import type { ServerController } from '../server';
import { EXP_SCHEME, type ExperimentStore, describe, parseExpId } from '../store';
import { NEEDS_TRUST } from './ids';

export const TRUST_MESSAGE =
  'Sigmaloop runs nothing in Restricted Mode: trials, proposers and agents execute code from this workspace. Trust the workspace to enable it.';

/** What the command modules work with (made once in extension.ts). */
export interface CommandContext {
  ctx: vscode.ExtensionContext;
  log: vscode.LogOutputChannel;
  store: ExperimentStore;
  server: ServerController;
  panel: LossPanel;
  /** The morning report's panel. */
  report: ReportPanel;
  docs: ProposalDocuments;
  /** Experiments accepted from this window: say how they ended. */
  watched: Set<number>;
  /** Re-render what depends on the store (status bar, title-bar context). */
  refresh(): void;
}

/** The Restricted Mode message with its button. */
export async function explainRestricted(): Promise<void> {
  const pick = await vscode.window.showWarningMessage(TRUST_MESSAGE, 'Manage Workspace Trust');
  if (pick) {
    void vscode.commands.executeCommand('workbench.trust.manage');
  }
}

/** Forward a command to the server (starting it when needed); errors become a message with Show Log. */
export async function forward<T>(c: CommandContext, command: string, args: unknown[]): Promise<T | undefined> {
  if (NEEDS_TRUST.has(command) && !vscode.workspace.isTrusted) {
    await explainRestricted();
    return undefined;
  }
  try {
    if (c.server.state !== 'running') {
      await c.server.start();
    }
    // The engine opens just after `initialized`: retry briefly while the server says so.
    for (let attempt = 0; ; attempt++) {
      try {
        return await c.server.executeCommand<T>(command, args);
      } catch (err) {
        if (attempt >= 40 || !/not ready yet/.test(err instanceof Error ? err.message : String(err))) {
          throw err;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    c.log.error(`${command} ${JSON.stringify(args)}: ${msg}`);
    const pick = await vscode.window.showErrorMessage(`Sigmaloop: ${msg}`, 'Show Log');
    if (pick) {
      c.log.show();
    }
    return undefined;
  }
}

export async function pickExperiment(placeHolder: string, list: ExperimentWire[]): Promise<number | undefined> {
  if (!list.length) {
    void vscode.window.showInformationMessage(`Sigmaloop: no experiment to choose (${placeHolder.toLowerCase()}).`);
    return undefined;
  }
  const items = list.map((e) => ({ label: `#${e.id} ${e.hypothesis || e.source}`, description: describe(e), id: e.id }));
  const pick = await vscode.window.showQuickPick(items, { placeHolder, matchOnDescription: true });
  return pick?.id;
}

/** The id in the argument, else the experiment shown in the active editor (a proposal document). */
export function idOrActive(arg: unknown): number | undefined {
  const id = parseExpId(arg);
  if (id !== undefined) {
    return id;
  }
  const uri = vscode.window.activeTextEditor?.document.uri;
  return uri?.scheme === EXP_SCHEME ? parseExpId(uri) : undefined;
}
