// Commands on one experiment: propose, accept, reject, show (the diff view), adopt, and the
// second look at an implausibly large gain (accept or reject its result).

import * as vscode from 'vscode';
import type { AdoptResult, ExperimentWire, ShowExperimentResult } from '../contract';
import { type CommandContext, forward, idOrActive, pickExperiment } from './forward';
import { rejectPrompt } from './prompts';

export function registerExperimentCommands(c: CommandContext): vscode.Disposable[] {
  const { store } = c;
  const upsert = (e: ExperimentWire | undefined) => {
    if (e && typeof e.id === 'number' && typeof e.status === 'string') {
      store.upsert(e);
      c.refresh();
    }
  };
  return [
    vscode.commands.registerCommand('sigmaloop.propose', async (kind?: unknown) => {
      const e = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Sigmaloop: proposing an experiment…' },
        () => forward<ExperimentWire>(c, 'sigmaloop.propose', typeof kind === 'string' ? [kind] : []),
      );
      if (!e || typeof e.id !== 'number') {
        return;
      }
      upsert(e);
      const pick = await vscode.window.showInformationMessage(
        `Sigmaloop: proposed #${e.id}: ${e.hypothesis || '(no hypothesis)'}`,
        'Show Diff',
        'Accept',
        'Reject',
      );
      const next: Record<string, string> = { 'Show Diff': 'sigmaloop.showExperiment', Accept: 'sigmaloop.accept', Reject: 'sigmaloop.reject' };
      if (pick) {
        void vscode.commands.executeCommand(next[pick], e.id);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.accept', async (arg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Accept which proposal?', store.proposed()));
      if (id === undefined) {
        return;
      }
      const e = await forward<ExperimentWire>(c, 'sigmaloop.accept', [id]);
      if (e) {
        c.watched.add(id);
        upsert(e);
        vscode.window.setStatusBarMessage(`Sigmaloop: accepted #${id}; its trial is queued`, 5000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.reject', async (arg?: unknown, reasonArg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Reject which proposal?', store.proposed()));
      if (id === undefined) {
        return;
      }
      let reason = typeof reasonArg === 'string' ? reasonArg : undefined;
      if (reason === undefined) {
        reason = await vscode.window.showInputBox({
          title: `Reject experiment #${id}`,
          prompt: rejectPrompt(store.experiments.get(id)?.source ?? ''),
          placeHolder: 'reason (optional)',
        });
        if (reason === undefined) {
          return; // Escape cancels the rejection
        }
      }
      const e = await forward<ExperimentWire>(c, 'sigmaloop.reject', reason.trim() ? [id, reason.trim()] : [id]);
      if (e) {
        upsert(e);
        vscode.window.setStatusBarMessage(`Sigmaloop: rejected #${id}`, 5000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.acceptResult', async (arg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Keep which implausible result?', store.awaitingReview()));
      if (id === undefined) {
        return;
      }
      const e = await forward<ExperimentWire>(c, 'sigmaloop.acceptResult', [id]);
      if (e) {
        upsert(e);
        void vscode.window.showInformationMessage(`Sigmaloop: kept #${id} after a look${e.verdict ? ` — ${e.verdict}` : ''}`);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.rejectResult', async (arg?: unknown, reasonArg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Reject which implausible result?', store.awaitingReview()));
      if (id === undefined) {
        return;
      }
      let reason = typeof reasonArg === 'string' ? reasonArg : undefined;
      if (reason === undefined) {
        reason = await vscode.window.showInputBox({
          title: `Reject the result of experiment #${id}`,
          prompt: 'Why is the gain not real? (optional; kept with its verdict)',
          placeHolder: 'reason (optional)',
        });
        if (reason === undefined) {
          return; // Escape cancels
        }
      }
      const e = await forward<ExperimentWire>(c, 'sigmaloop.rejectResult', reason.trim() ? [id, reason.trim()] : [id]);
      if (e) {
        upsert(e);
        vscode.window.setStatusBarMessage(`Sigmaloop: rejected the result of #${id}; it stays discarded`, 5000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.showExperiment', async (arg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Show which experiment?', store.sorted().filter((e) => e.source !== 'baseline')));
      if (id === undefined) {
        return;
      }
      const res = await forward<ShowExperimentResult>(c, 'sigmaloop.showExperiment', [id]);
      if (res && c.server.root) {
        // the record without the two script texts (they only feed the diff view)
        upsert(withoutTexts(res));
        await c.docs.openDiff(res, c.server.root);
        c.refresh();
      }
    }),

    vscode.commands.registerCommand('sigmaloop.adopt', async (arg?: unknown) => {
      const id = idOrActive(arg) ?? (await pickExperiment('Adopt which kept experiment into your train script?', store.kept()));
      if (id === undefined) {
        return;
      }
      const res = await forward<AdoptResult>(c, 'sigmaloop.adopt', [id]);
      if (res?.applied) {
        void vscode.window.showInformationMessage(`Sigmaloop: adopted #${id} into the train script.`);
      } else if (res) {
        void vscode.window.showWarningMessage(`Sigmaloop: #${id} was not adopted${res.failureReason ? `: ${res.failureReason}` : ''}.`);
      }
    }),
  ];
}

/** The record of a showExperiment result without the two script texts (they only feed the diff view). */
function withoutTexts(res: ShowExperimentResult): ExperimentWire {
  const rec: Record<string, unknown> = { ...res };
  delete rec.parentText;
  delete rec.proposedText;
  delete rec.scriptName;
  return rec as ExperimentWire;
}
