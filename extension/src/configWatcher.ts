// The config watcher: the workspace's own sigmaloop.toml appearing starts the server, its
// removal restarts it (asking first when trials run). Only `<folder>/sigmaloop.toml` is watched.

import * as vscode from 'vscode';
import { CONFIG_FILE, isRootConfig } from './restart';
import type { ServerController } from './server';

/**
 * Watches `sigmaloop.toml` at the top of each workspace folder and of the server's folder only
 * (never `**`: every trial's worktree under `.sigmaloop/worktrees/` holds a copy, created and
 * deleted with each trial). Created: start the server if it is not running; deleted: restart
 * (it then says there is no workspace), asking first when trials run. Edits are the server's
 * to read.
 */
export class ConfigWatcher implements vscode.Disposable {
  private readonly dirs = new Set<string>();
  private readonly watchers: vscode.Disposable[] = [];

  constructor(
    private readonly server: ServerController,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  watch(dir: string): void {
    if (this.dirs.has(dir)) {
      return;
    }
    this.dirs.add(dir);
    const w = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(vscode.Uri.file(dir), CONFIG_FILE), false, true, false);
    w.onDidCreate((uri) => {
      if (isRootConfig(uri.fsPath, this.dirs) && !this.server.isRunning()) {
        this.log.info(`${uri.fsPath} was created; starting the server`);
        void this.server.start();
      }
    });
    w.onDidDelete((uri) => {
      if (isRootConfig(uri.fsPath, this.dirs)) {
        void this.server.requestRestart({ kind: 'config', change: 'deleted', file: uri.fsPath });
      }
    });
    this.watchers.push(w);
  }

  dispose(): void {
    for (const w of this.watchers) {
      w.dispose();
    }
  }
}
