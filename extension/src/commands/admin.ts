// Client-only commands: the loss panel, the API key, installing the bundled server package,
// restarting the server.

import * as vscode from 'vscode';
import { SECRET_KEY } from '../server';
import { type CommandContext, explainRestricted } from './forward';

export function registerAdminCommands(c: CommandContext): vscode.Disposable[] {
  const { server } = c;
  return [
    // the server's code lens title opens the panel
    vscode.commands.registerCommand('sigmaloop.summary', () => c.panel.show()),
    vscode.commands.registerCommand('sigmaloop.showPanel', () => c.panel.show()),

    vscode.commands.registerCommand('sigmaloop.setApiKey', async () => {
      const key = await vscode.window.showInputBox({
        title: 'Sigmaloop: API key',
        prompt: 'Key for the OpenAI-compatible API the LLM proposer uses. Kept in the editor’s secret storage and handed only to the language server process. Leave empty to remove it.',
        password: true,
        ignoreFocusOut: true,
      });
      if (key === undefined) {
        return;
      }
      if (key.trim()) {
        await c.ctx.secrets.store(SECRET_KEY, key.trim());
      } else {
        await c.ctx.secrets.delete(SECRET_KEY);
      }
      void vscode.window.showInformationMessage(`Sigmaloop: API key ${key.trim() ? 'saved' : 'removed'}; the server restarts to use it.`);
      await server.requestRestart({ kind: 'apiKey' });
    }),

    vscode.commands.registerCommand('sigmaloop.installServer', async () => {
      if (!vscode.workspace.isTrusted) {
        await explainRestricted();
        return;
      }
      await server.installCommand();
    }),

    vscode.commands.registerCommand('sigmaloop.restartServer', async () => {
      await server.requestRestart({ kind: 'command' });
    }),
  ];
}
