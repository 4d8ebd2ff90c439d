// Client-only commands: the loss panel, the API key, installing the bundled server package,
// restarting the server.

import * as vscode from 'vscode';
import { SECRET_KEY, SECRET_KEY_HOST } from '../server';
import { keyHost } from '../settings';
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
        // the host it is for: the user's own base URL setting (a workspace's could name any host), else the default
        const host = keyHost(vscode.workspace.getConfiguration('sigmaloop').inspect<string>('llm.baseUrl')?.globalValue);
        await c.ctx.secrets.store(SECRET_KEY, key.trim());
        if (host) {
          await c.ctx.secrets.store(SECRET_KEY_HOST, host);
        } else {
          await c.ctx.secrets.delete(SECRET_KEY_HOST);
        }
      } else {
        await c.ctx.secrets.delete(SECRET_KEY);
        await c.ctx.secrets.delete(SECRET_KEY_HOST);
      }
      // over the connection: no restart (running trials go on)
      await server.sendApiKey(!key.trim());
      void vscode.window.showInformationMessage(`Sigmaloop: API key ${key.trim() ? 'saved' : 'removed'}.`);
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
