// Commands that start and stop runs: the baseline, the loop, Stop Loop (stop means stop: the
// loop, the queued seeds and the trials this window started; the message says which).

import * as vscode from 'vscode';
import type { BaselineStarted, StopLoopResult } from '../contract';
import { stoppedMessage } from '../status';
import { type CommandContext, forward } from './forward';

export function registerLoopCommands(c: CommandContext): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand('sigmaloop.runBaseline', async (budget?: unknown) => {
      const res = await forward<Partial<BaselineStarted>>(c, 'sigmaloop.runBaseline', typeof budget === 'number' ? [budget] : []);
      if (res) {
        c.panel.show(true);
        vscode.window.setStatusBarMessage(`Sigmaloop: baseline started${res.seeds ? ` on seeds ${res.seeds.join(', ')}` : ''}`, 5000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.startLoop', async (iterArg?: unknown) => {
      let iterations = typeof iterArg === 'number' ? iterArg : undefined;
      if (iterations === undefined) {
        const text = await vscode.window.showInputBox({
          title: 'Run the research loop',
          prompt: 'How many iterations (propose → run → judge)?',
          value: '10',
          validateInput: (v) => (/^\s*[1-9]\d*\s*$/.test(v) ? undefined : 'a whole number ≥ 1'),
        });
        if (text === undefined) {
          return;
        }
        iterations = Number(text.trim());
      }
      const res = await forward(c, 'sigmaloop.startLoop', [iterations]);
      if (res) {
        c.refresh();
        c.panel.show(true);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.stopLoop', async () => {
      const before = new Map([...c.store.experiments.values()].map((e) => [e.id, e.status]));
      const loopWasRunning = c.store.loopRunning();
      const res = await forward<Partial<StopLoopResult>>(c, 'sigmaloop.stopLoop', []);
      if (res) {
        const msg = stoppedMessage(Array.isArray(res.stopped) ? res.stopped : [], before, loopWasRunning);
        c.log.info(msg.replace(/^Sigmaloop: /, 'stop: '));
        void vscode.window.showInformationMessage(msg);
      }
    }),
  ];
}
