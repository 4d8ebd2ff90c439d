// Sigmaloop: the thin VS Code client. All product logic lives in the Python language server
// (python -m sigmaloop.lsp); this file wires the server's notifications to the store, the status
// bar, the loss panel and the diff view, registers the commands (commands/*) and the config
// watcher (configWatcher.ts; restart.ts decides what counts).

import * as vscode from 'vscode';
import { registerAdminCommands } from './commands/admin';
import { registerAnomalyCommands } from './commands/anomalies';
import { registerExperimentCommands } from './commands/experiments';
import { type CommandContext, TRUST_MESSAGE } from './commands/forward';
import { registerLoopCommands } from './commands/loop';
import { doneActions, finishedMessage } from './commands/prompts';
import { refreshReport, registerReportCommands } from './commands/report';
import { registerResearchCommands } from './commands/research';
import { ConfigWatcher } from './configWatcher';
import { ACTIVE_STATUSES, type CurveData, type ExperimentWire, recordsToCurve } from './contract';
import { ProposalDocuments } from './diffView';
import type { AnomalyRecord } from './protocol.gen';
import { LossPanel, PANEL_VIEW_TYPE } from './panel';
import { REPORT_VIEW_TYPE, ReportPanel } from './report';
import { SECRET_KEY, ServerController, ServerNotRunning } from './server';
import { needsRestart } from './settings';
import { type Verdict, statusCommand, statusView, verdictNotice } from './status';
import { EXP_SCHEME, ExperimentStore, parseExpId } from './store';

let controller: ServerController | undefined;

/** What activate returns (tests and other extensions): the store, the server, the panels. */
export interface SigmaloopApi {
  store: ExperimentStore;
  server: ServerController;
  panel: LossPanel;
  report: ReportPanel;
}

export function activate(ctx: vscode.ExtensionContext): SigmaloopApi {
  const log = vscode.window.createOutputChannel('Sigmaloop', { log: true });
  const store = new ExperimentStore();
  const docs = new ProposalDocuments();
  const status = vscode.window.createStatusBarItem('sigmaloop.status', vscode.StatusBarAlignment.Left, 50);
  status.name = 'Sigmaloop';
  const watched = new Set<number>();
  /** Verdicts already announced this session (an implausible gain, a tampered or over-budget run: once each). */
  const announced = new Set<string>();
  const announce = (e: ExperimentWire) => {
    const notice = verdictNotice(e);
    const key = `${e.id}:${e.status}:${String(e.reason ?? '')}`;
    if (notice && !announced.has(key)) {
      announced.add(key);
      void show(notice).then((pick) => {
        const command = notice.actions.find((a) => a.title === pick)?.command;
        if (command) {
          void vscode.commands.executeCommand(command, e.id);
        }
      });
      return true;
    }
    return false;
  };
  const show = (n: Verdict) => {
    const titles = n.actions.map((a) => a.title);
    return n.level === 'error'
      ? vscode.window.showErrorMessage(n.message, ...titles)
      : n.level === 'warning'
        ? vscode.window.showWarningMessage(n.message, ...titles)
        : vscode.window.showInformationMessage(n.message, ...titles);
  };

  const renderStatus = () => {
    const v = statusView(server.state, store);
    status.text = v.text;
    status.tooltip = v.tooltip;
    status.command = statusCommand(server.state);
    status.show();
  };
  let statusTimer: NodeJS.Timeout | undefined;
  /** Status bar at most 10 times a second; a deferred restart goes ahead once nothing runs. */
  const refresh = () => {
    updatePendingContext();
    statusTimer ??= setTimeout(() => {
      statusTimer = undefined;
      renderStatus();
      server.whenIdle();
    }, 100);
  };

  /** sigmaloop.proposalPending: the active tab shows a proposal still waiting for a verdict (title-bar Accept/Reject). */
  let pendingContext: boolean | undefined;
  const updatePendingContext = () => {
    const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    const uri = input instanceof vscode.TabInputTextDiff ? input.modified : input instanceof vscode.TabInputText ? input.uri : undefined;
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
      panel.experimentUpdated(store.experiments.get(e.id) ?? e);
      refresh();
      const full = store.experiments.get(e.id) ?? e;
      // an implausible gain, a tampered or over-budget run is said whoever ran it (the loop too)
      const said = announce(full);
      if (watched.has(e.id) && e.status !== 'proposed' && !ACTIVE_STATUSES.has(e.status)) {
        watched.delete(e.id);
        if (!said) {
          // said once: "#7 crashed: RuntimeError: boom (train.py:33)", "#12 0.012 bpb better, 3.1σ; kept"
          const hasLog = typeof full.logPath === 'string' && full.logPath !== '';
          const buttons = [...(hasLog ? ['Open Log'] : []), 'Show Diff'];
          const failed = full.status === 'crashed' || full.status === 'timeout';
          const shown = failed ? vscode.window.showErrorMessage(finishedMessage(full), ...buttons) : vscode.window.showInformationMessage(finishedMessage(full), ...buttons);
          void shown.then((pick) => {
            if (pick) {
              void vscode.commands.executeCommand(pick === 'Open Log' ? 'sigmaloop.openLog' : 'sigmaloop.showExperiment', e.id);
            }
          });
        }
      }
      void docs.retitle(e.id, full.status);
    },
    onProgress: (p) => {
      store.applyProgress(p);
      panel.progress(p);
      refresh();
    },
    onEngineState: (s) => {
      store.state = s;
      panel.engineState(s);
      refresh();
    },
    onState: (s) => {
      if (s === 'starting') {
        store.clear();
        if (server.root) {
          configWatcher.watch(server.root);
        }
      }
      void vscode.commands.executeCommand('setContext', 'sigmaloop.serverState', s);
      panel.serverState(s);
      renderStatus();
    },
    onReady: () => void loadExperiments(),
    onDone: (p) => {
      // a finished loop's message offers its report (and the panel); a baseline's says its numbers
      const actions = doneActions(p.what);
      if (p.what === 'loop' && report.isOpen) {
        void refreshReport(commands); // the open report shows the night that just ended
      }
      void vscode.window.showInformationMessage(p.message, ...actions).then((pick) => {
        if (pick === 'Open Report') {
          void vscode.commands.executeCommand('sigmaloop.openReport');
        } else if (pick === 'Show Panel') {
          panel.show();
        }
      });
    },
    busy: () => store.busy(),
  });

  const panel: LossPanel = new LossPanel(ctx.extensionUri, {
    store,
    log,
    fetchCurves: async (ids) => {
      const res = await server.request<{ experiments: (ExperimentWire & { curve?: unknown[]; anomalies?: AnomalyRecord[] | null })[] }>('sigmaloop/experiments', {
        ids,
        curves: true,
        maxPoints: 2000,
      });
      const out = new Map<number, CurveData>();
      for (const e of res?.experiments ?? []) {
        if (Array.isArray(e.curve)) {
          out.set(e.id, recordsToCurve(e.id, e.curve as never, e.anomalies));
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

  const configWatcher = new ConfigWatcher(server, log);
  for (const f of vscode.workspace.workspaceFolders ?? []) {
    configWatcher.watch(f.uri.fsPath);
  }
  const report = new ReportPanel(ctx.workspaceState);
  const commands: CommandContext = { ctx, log, store, server, panel, report, docs, watched, refresh };
  ctx.subscriptions.push(
    log,
    status,
    docs,
    panel,
    report,
    server,
    vscode.workspace.registerTextDocumentContentProvider(EXP_SCHEME, docs),
    vscode.window.registerWebviewPanelSerializer(PANEL_VIEW_TYPE, LossPanel.serializer(panel)),
    vscode.window.registerWebviewPanelSerializer(REPORT_VIEW_TYPE, ReportPanel.serializer(report, () => refreshReport(commands))),
    ...registerLoopCommands(commands),
    ...registerExperimentCommands(commands),
    ...registerAdminCommands(commands),
    ...registerResearchCommands(commands),
    ...registerAnomalyCommands(commands),
    ...registerReportCommands(commands),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (needsRestart((s) => e.affectsConfiguration(s))) {
        void server.requestRestart({ kind: 'setting', key: 'sigmaloop.pythonPath' });
      }
    }),
    vscode.window.tabGroups.onDidChangeTabs(updatePendingContext),
    vscode.window.tabGroups.onDidChangeTabGroups(updatePendingContext),
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      log.info('workspace trusted; starting the server');
      void server.start();
      void refreshReport(commands); // a report panel that said why it had no page gets its page
    }),
    ctx.secrets.onDidChange((e) => {
      if (e.key === SECRET_KEY) {
        log.info('API key changed');
      }
    }),
    configWatcher,
  );

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
  return { store, server, panel, report };
}

/** Stop the server (it stops the trials it started) before the extension host goes away. */
export function deactivate(): Promise<void> | undefined {
  const c = controller;
  controller = undefined;
  return c?.stop();
}
