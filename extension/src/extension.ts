// Sigmaloop: the thin VS Code client. All product logic lives in the Python language
// server (python -m sigmaloop.lsp); this file wires commands, the status bar, the loss panel
// and the proposal diff view to it.

import * as vscode from 'vscode';
import { NEEDS_TRUST } from './commands';
import type { CurveData, ExperimentWire } from './contract';
import { recordsToCurve } from './contract';
import { ProposalDocuments, type ShowExperimentResult } from './diffView';
import { LossPanel, PANEL_VIEW_TYPE } from './panel';
import { SECRET_KEY, ServerController, ServerNotRunning } from './server';
import { needsRestart } from './settings';
import { EXP_SCHEME, ExperimentStore, describe, parseExpId, statusCommand, statusView } from './store';

const TRUST_MESSAGE =
  'Sigmaloop runs nothing in Restricted Mode: trials, proposers and agents execute code from this workspace. Trust the workspace to enable it.';

let controller: ServerController | undefined;

export interface SigmaloopApi {
  store: ExperimentStore;
  server: ServerController;
  panel: LossPanel;
}

export function activate(ctx: vscode.ExtensionContext): SigmaloopApi {
  const log = vscode.window.createOutputChannel('Sigmaloop', { log: true });
  const store = new ExperimentStore();
  const docs = new ProposalDocuments();
  const status = vscode.window.createStatusBarItem('sigmaloop.status', vscode.StatusBarAlignment.Left, 50);
  status.name = 'Sigmaloop';
  /** Experiments accepted from this window: say how they ended. */
  const watched = new Set<number>();

  let statusTimer: NodeJS.Timeout | undefined;
  const renderStatus = () => {
    const v = statusView(server.state, store);
    status.text = v.text;
    status.tooltip = v.tooltip;
    status.command = statusCommand(server.state);
    status.show();
  };
  const updateStatus = () => {
    if (!statusTimer) {
      statusTimer = setTimeout(() => {
        statusTimer = undefined;
        renderStatus();
      }, 100);
    }
  };

  /** sigmaloop.proposalPending: the active tab shows a proposal still waiting for a verdict (title-bar Accept/Reject). */
  let pendingContext: boolean | undefined;
  const updatePendingContext = () => {
    const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    const uri =
      input instanceof vscode.TabInputTextDiff ? input.modified : input instanceof vscode.TabInputText ? input.uri : undefined;
    const id = uri?.scheme === EXP_SCHEME ? parseExpId(uri) : undefined;
    const pending = id !== undefined && store.experiments.get(id)?.status === 'proposed';
    if (pending !== pendingContext) {
      pendingContext = pending;
      void vscode.commands.executeCommand('setContext', 'sigmaloop.proposalPending', pending);
    }
  };

  const server: ServerController = new ServerController(ctx, log, {
    onExperiment: (e) => {
      store.upsert(e);
      updatePendingContext();
      panel.experimentUpdated(store.experiments.get(e.id) ?? e);
      updateStatus();
      if (watched.has(e.id) && isFinished(e.status)) {
        watched.delete(e.id);
        void vscode.window.showInformationMessage(`Sigmaloop: experiment ${describe(e)}${e.verdict ? ` — ${e.verdict}` : ''}`);
      }
    },
    onProgress: (p) => {
      store.applyProgress(p);
      panel.progress(p);
      updateStatus();
    },
    onLoopState: (s) => {
      store.loop = s;
      updateStatus();
    },
    onState: (s) => {
      void vscode.commands.executeCommand('setContext', 'sigmaloop.serverState', s);
      panel.serverState(s);
      renderStatus();
    },
    onReady: () => void loadExperiments(),
  });

  const panel: LossPanel = new LossPanel(ctx.extensionUri, {
    store,
    log,
    fetchCurves: async (ids) => {
      const res = await server.request<{ experiments: (ExperimentWire & { curve?: unknown[] })[] }>('sigmaloop/experiments', {
        ids,
        curves: true,
        maxPoints: 2000,
      });
      const out = new Map<number, CurveData>();
      for (const e of res?.experiments ?? []) {
        if (Array.isArray(e.curve)) {
          out.set(e.id, recordsToCurve(e.id, e.curve as never));
        }
      }
      return out;
    },
    openExperiment: (id) => void vscode.commands.executeCommand('sigmaloop.showExperiment', id),
    serverState: () => server.state,
  });

  /** Fill the store from the journal once the engine answers (it opens after `initialized`). */
  async function loadExperiments(): Promise<void> {
    for (let attempt = 0; attempt < 60; attempt++) {
      try {
        const res = await server.request<{ experiments: ExperimentWire[] }>('sigmaloop/experiments', {});
        store.replaceAll(res?.experiments ?? []);
        panel.reset();
        renderStatus();
        return;
      } catch (err) {
        if (err instanceof ServerNotRunning) {
          return;
        }
        log.debug(`experiments not ready yet: ${String(err)}`);
        await new Promise((r) => setTimeout(r, Math.min(2000, 200 * (attempt + 1))));
      }
    }
  }

  ctx.subscriptions.push(
    log,
    status,
    docs,
    panel,
    server,
    vscode.workspace.registerTextDocumentContentProvider(EXP_SCHEME, docs),
    vscode.window.registerWebviewPanelSerializer(PANEL_VIEW_TYPE, LossPanel.serializer(panel)),
  );

  // ------------------------------------------------------------------------- commands

  /** Forward a command to the server with the errors shown as messages. */
  async function run<T>(command: string, args: unknown[]): Promise<T | undefined> {
    if (NEEDS_TRUST.has(command) && !vscode.workspace.isTrusted) {
      const pick = await vscode.window.showWarningMessage(TRUST_MESSAGE, 'Manage Workspace Trust');
      if (pick) {
        void vscode.commands.executeCommand('workbench.trust.manage');
      }
      return undefined;
    }
    try {
      if (server.state !== 'running') {
        await server.start();
      }
      // The engine opens just after `initialized`: retry briefly while the server says so.
      for (let attempt = 0; ; attempt++) {
        try {
          return await server.executeCommand<T>(command, args);
        } catch (err) {
          if (attempt >= 40 || !/not ready yet/.test(err instanceof Error ? err.message : String(err))) {
            throw err;
          }
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      log.error(`${command} ${JSON.stringify(args)}: ${msg}`);
      const pick = await vscode.window.showErrorMessage(`Sigmaloop: ${msg}`, 'Show Log');
      if (pick) {
        log.show();
      }
      return undefined;
    }
  }

  async function pickExperiment(placeHolder: string, list: ExperimentWire[]): Promise<number | undefined> {
    if (!list.length) {
      void vscode.window.showInformationMessage(`Sigmaloop: no experiment to choose (${placeHolder.toLowerCase()}).`);
      return undefined;
    }
    const items = list.map((e) => ({
      label: `#${e.id} ${e.hypothesis || e.source}`,
      description: describe(e),
      id: e.id,
    }));
    const pick = await vscode.window.showQuickPick(items, { placeHolder, matchOnDescription: true });
    return pick?.id;
  }

  function idOrActive(arg: unknown): number | undefined {
    const id = parseExpId(arg);
    if (id !== undefined) {
      return id;
    }
    const uri = vscode.window.activeTextEditor?.document.uri;
    return uri?.scheme === EXP_SCHEME ? parseExpId(uri) : undefined;
  }

  const reg = (name: string, fn: (...args: unknown[]) => unknown) => ctx.subscriptions.push(vscode.commands.registerCommand(name, fn));

  reg('sigmaloop.runBaseline', async (budget?: unknown) => {
    const res = await run<{ seeds?: number[] }>('sigmaloop.runBaseline', typeof budget === 'number' ? [budget] : []);
    if (res) {
      panel.show(true);
      vscode.window.setStatusBarMessage(`Sigmaloop: baseline started${res.seeds ? ` on seeds ${res.seeds.join(', ')}` : ''}`, 5000);
    }
  });

  reg('sigmaloop.propose', async (kind?: unknown) => {
    const e = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'Sigmaloop: proposing an experiment…' },
      () => run<ExperimentWire>('sigmaloop.propose', typeof kind === 'string' ? [kind] : []),
    );
    if (e && typeof e.id === 'number') {
      store.upsert(e);
      const pick = await vscode.window.showInformationMessage(
        `Sigmaloop: proposed #${e.id}: ${e.hypothesis || '(no hypothesis)'}`,
        'Show Diff',
        'Accept',
        'Reject',
      );
      if (pick === 'Show Diff') {
        void vscode.commands.executeCommand('sigmaloop.showExperiment', e.id);
      } else if (pick === 'Accept') {
        void vscode.commands.executeCommand('sigmaloop.accept', e.id);
      } else if (pick === 'Reject') {
        void vscode.commands.executeCommand('sigmaloop.reject', e.id);
      }
    }
  });

  reg('sigmaloop.accept', async (arg?: unknown) => {
    const id = idOrActive(arg) ?? (await pickExperiment('Accept which proposal?', store.proposed()));
    if (id === undefined) {
      return;
    }
    const e = await run<ExperimentWire>('sigmaloop.accept', [id]);
    if (e) {
      watched.add(id);
      if (typeof e.id === 'number') {
        store.upsert(e);
      }
      vscode.window.setStatusBarMessage(`Sigmaloop: accepted #${id}; its trial is queued`, 5000);
    }
  });

  reg('sigmaloop.reject', async (arg?: unknown, reasonArg?: unknown) => {
    const id = idOrActive(arg) ?? (await pickExperiment('Reject which proposal?', store.proposed()));
    if (id === undefined) {
      return;
    }
    let reason = typeof reasonArg === 'string' ? reasonArg : undefined;
    if (reason === undefined) {
      reason = await vscode.window.showInputBox({
        title: `Reject experiment #${id}`,
        prompt: 'Why? (optional; the proposer reads it)',
        placeHolder: 'reason (optional)',
      });
      if (reason === undefined) {
        return; // Escape cancels the rejection
      }
    }
    const e = await run<ExperimentWire>('sigmaloop.reject', reason.trim() ? [id, reason.trim()] : [id]);
    if (e && typeof e.id === 'number') {
      store.upsert(e);
      vscode.window.setStatusBarMessage(`Sigmaloop: rejected #${id}`, 5000);
    }
  });

  reg('sigmaloop.startLoop', async (iterArg?: unknown) => {
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
    const res = await run('sigmaloop.startLoop', [iterations]);
    if (res) {
      store.loop = { running: true, iteration: 0, iterations };
      updateStatus();
      panel.show(true);
    }
  });

  reg('sigmaloop.stopLoop', async () => {
    const res = await run<{ stopped?: number[] }>('sigmaloop.stopLoop', []);
    if (res) {
      vscode.window.setStatusBarMessage(`Sigmaloop: stopped${res.stopped?.length ? ` (${res.stopped.map((i) => `#${i}`).join(', ')})` : ''}`, 5000);
    }
  });

  reg('sigmaloop.showExperiment', async (arg?: unknown) => {
    const id = idOrActive(arg) ?? (await pickExperiment('Show which experiment?', store.sorted().filter((e) => e.source !== 'baseline')));
    if (id === undefined) {
      return;
    }
    const res = await run<ShowExperimentResult>('sigmaloop.showExperiment', [id]);
    if (res && server.root) {
      if (typeof res.id === 'number' && typeof res.status === 'string') {
        // the record without the two script texts (they only feed the diff view)
        const rec = Object.fromEntries(Object.entries(res).filter(([k]) => k !== 'parentText' && k !== 'proposedText'));
        store.upsert(rec as ExperimentWire);
      }
      await docs.openDiff(res, server.root);
      updatePendingContext();
    }
  });

  reg('sigmaloop.adopt', async (arg?: unknown) => {
    const id = idOrActive(arg) ?? (await pickExperiment('Adopt which kept experiment into your train script?', store.kept()));
    if (id === undefined) {
      return;
    }
    const res = await run<{ applied?: boolean; failureReason?: string; path?: string }>('sigmaloop.adopt', [id]);
    if (res) {
      if (res.applied) {
        void vscode.window.showInformationMessage(`Sigmaloop: adopted #${id} into the train script.`);
      } else {
        void vscode.window.showWarningMessage(`Sigmaloop: #${id} was not adopted${res.failureReason ? `: ${res.failureReason}` : ''}.`);
      }
    }
  });

  reg('sigmaloop.summary', () => panel.show());
  reg('sigmaloop.showPanel', () => panel.show());

  reg('sigmaloop.setApiKey', async () => {
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
      await ctx.secrets.store(SECRET_KEY, key.trim());
    } else {
      await ctx.secrets.delete(SECRET_KEY);
    }
    void vscode.window.showInformationMessage(`Sigmaloop: API key ${key.trim() ? 'saved' : 'removed'}; restarting the server.`);
    await server.restart();
  });

  reg('sigmaloop.installServer', async () => {
    if (!vscode.workspace.isTrusted) {
      const pick = await vscode.window.showWarningMessage(TRUST_MESSAGE, 'Manage Workspace Trust');
      if (pick) {
        void vscode.commands.executeCommand('workbench.trust.manage');
      }
      return;
    }
    await server.installCommand();
  });

  reg('sigmaloop.restartServer', async () => {
    store.clear();
    await server.restart();
  });

  // ------------------------------------------------------------------------- events

  ctx.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (needsRestart((s) => e.affectsConfiguration(s))) {
        log.info('sigmaloop.pythonPath changed; restarting the server');
        void server.restart();
      }
    }),
    vscode.window.tabGroups.onDidChangeTabs(() => updatePendingContext()),
    vscode.window.tabGroups.onDidChangeTabGroups(() => updatePendingContext()),
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      log.info('workspace trusted; starting the server');
      void server.start();
    }),
    ctx.secrets.onDidChange((e) => {
      if (e.key === SECRET_KEY) {
        log.info('API key changed');
      }
    }),
  );
  const tomlWatcher = vscode.workspace.createFileSystemWatcher('**/sigmaloop.toml', false, true, false);
  tomlWatcher.onDidCreate(() => {
    if (!server.isRunning()) {
      void server.start();
    }
  });
  tomlWatcher.onDidDelete(() => void server.restart());
  ctx.subscriptions.push(tomlWatcher);

  renderStatus();
  if (!vscode.workspace.isTrusted) {
    void vscode.window.showInformationMessage(TRUST_MESSAGE, 'Manage Workspace Trust').then((pick) => {
      if (pick) {
        void vscode.commands.executeCommand('workbench.trust.manage');
      }
    });
  }
  controller = server;
  // Start in the background: activation must not wait on Python.
  void server.start();
  return { store, server, panel };
}

function isFinished(status: string): boolean {
  return ['kept', 'discarded', 'crashed', 'timeout', 'pruned', 'rejected', 'interrupted'].includes(status);
}

/** Stop the server (it stops the trials it started) before the extension host goes away. */
export function deactivate(): Promise<void> | undefined {
  const c = controller;
  controller = undefined;
  return c?.stop();
}
