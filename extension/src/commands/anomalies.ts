// What a curve-anomaly diagnostic offers besides its log: Show Curve (the loss panel with the
// experiment overlaid, its anomalies marked) and Dismiss (the researcher looked and it is nothing;
// an optional reason is kept with it in the journal; the server drops the diagnostic).

import * as vscode from 'vscode';
import { FINISHED_STATUSES } from '../contract';
import type { DismissAnomalyResult } from '../protocol.gen';
import { parseExpId } from '../store';
import { type CommandContext, forward, pickExperiment } from './forward';
import { dismissedMessage } from './prompts';

export function registerAnomalyCommands(c: CommandContext): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand('sigmaloop.showCurve', async (arg?: unknown) => {
      const finished = c.store.sorted().filter((e) => FINISHED_STATUSES.has(e.status) || e.status === 'running');
      const id = parseExpId(arg) ?? (await pickExperiment('Show the loss curve of which experiment?', finished));
      if (id !== undefined) {
        c.panel.select([id]);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.dismissAnomaly', async (idArg?: unknown, kindArg?: unknown, reasonArg?: unknown) => {
      const id = parseExpId(idArg);
      const kind = typeof kindArg === 'string' ? kindArg : undefined;
      if (id === undefined || !kind) {
        void vscode.window.showInformationMessage('Sigmaloop: dismiss an anomaly from its warning in the train script (the quick fix "Dismiss <kind> on #N").');
        return;
      }
      let reason = typeof reasonArg === 'string' ? reasonArg : undefined;
      if (reason === undefined) {
        reason = await vscode.window.showInputBox({
          title: `Dismiss the ${kind} on #${id}`,
          prompt: 'Why is it nothing? (optional; kept with the dismissal. Enter dismisses, Escape cancels)',
          placeHolder: 'reason (optional)',
        });
        if (reason === undefined) {
          return; // Escape cancels
        }
      }
      const res = await forward<DismissAnomalyResult>(c, 'sigmaloop.dismissAnomaly', reason.trim() ? [id, kind, reason.trim()] : [id, kind]);
      if (res) {
        vscode.window.setStatusBarMessage(dismissedMessage(res), 8000);
      }
    }),
  ];
}
