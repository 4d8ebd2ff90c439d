// The loss panel's host side: creates (or restores) the webview with a strict CSP, waits for the
// page's 'ready' before posting data, forwards experiments, curves, the reference and the
// questions, keeps the page's selection and tab across close / reopen, fetches the curves the
// page draws (the reference runs, the selected experiments, the running trials), opens an
// experiment's diff or log when the page asks, and overlays an experiment on request ("Show
// curve of #N": `select`).

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import {
  type CurveData,
  type Direction,
  type ExperimentWire,
  FINISHED_STATUSES,
  type HostToPanel,
  type PanelExperiment,
  type PanelPersistedState,
  type PanelQuestion,
  type TrialProgressParams,
  isPanelToHost,
  packCurve,
  readPersistedState,
  recordsToCurve,
  toPanelExperiment,
} from './contract';
import { type EngineStateView, panelReference } from './engineState';
import { addSelected, wantedCurves } from './panelModel';
import type { ExperimentStore } from './store';

export const PANEL_VIEW_TYPE = 'sigmaloop.lossPanel';

export interface PanelDeps {
  store: ExperimentStore;
  log: vscode.LogOutputChannel;
  /** sigmaloop/experiments with curves for these ids (records per experiment, with anomalies). */
  fetchCurves(ids: number[]): Promise<Map<number, CurveData>>;
  openExperiment(id: number): void;
  serverState(): string;
}

export class LossPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private ready = false;
  private readonly disposables: vscode.Disposable[] = [];
  /** Curves known on the host: live progress and fetched history. */
  private readonly curves = new Map<number, CurveData>();
  private readonly fetched = new Set<number>();
  private readonly fetching = new Set<number>();
  /** The project's metric and direction: the engine's state says (until it has, the defaults). */
  direction: Direction = 'minimize';
  metric = 'val_bpb';
  /** The reference line with the noise advisor, the reference runs and the best (from the engine's state). */
  private reference = panelReference(undefined);
  private questions: PanelQuestion[] = [];
  /** The page's selection and tab: outlives the page (closing the panel keeps them for the next one). */
  private view: PanelPersistedState = readPersistedState(undefined);
  /** Whether `view` came from a page (else the page keeps what its own getState has). */
  private viewKnown = false;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly deps: PanelDeps,
  ) {}

  static serializer(panel: LossPanel): vscode.WebviewPanelSerializer {
    return {
      deserializeWebviewPanel: (webviewPanel: vscode.WebviewPanel, state: unknown) => {
        panel.attach(webviewPanel, state);
        return Promise.resolve();
      },
    };
  }

  get isOpen(): boolean {
    return !!this.panel;
  }

  /** The selection and tab the panel keeps (for tests and commands). */
  get persisted(): PanelPersistedState {
    return { ...this.view, selected: [...this.view.selected] };
  }

  show(preserveFocus = false): void {
    if (this.panel) {
      this.panel.reveal(undefined, preserveFocus);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      PANEL_VIEW_TYPE,
      'Sigmaloop: Loss',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus },
      this.webviewOptions(),
    );
    this.attach(panel);
  }

  /**
   * "Show curve of #N": open (or reveal) the panel on the experiments tab with these experiments
   * overlaid (added to the selection; their anomalies are marked on their curves). A page that is
   * up gets a `select` message; a page still loading gets the selection with its `init`.
   */
  select(ids: number[]): void {
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0);
    if (!known.length) {
      return;
    }
    this.view = { ...this.view, selected: addSelected(this.view.selected, known), tab: 'experiments' };
    this.viewKnown = true;
    this.show();
    this.post({ type: 'select', ids: known });
    void this.fetchWanted();
  }

  private webviewOptions(): vscode.WebviewPanelOptions & vscode.WebviewOptions {
    return {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(this.extensionUri, 'out')],
    };
  }

  /** Show the panel in this webview; `restored`: the state a reload's serializer hands back. */
  attach(panel: vscode.WebviewPanel, restored?: unknown): void {
    this.panel?.dispose();
    this.panel = panel;
    this.ready = false;
    if (restored !== undefined && restored !== null && !this.viewKnown) {
      this.view = readPersistedState(restored);
      this.viewKnown = true;
    }
    panel.webview.options = this.webviewOptions();
    panel.webview.html = this.html(panel.webview);
    this.disposables.push(
      panel.webview.onDidReceiveMessage((msg: unknown) => this.onMessage(msg)),
      panel.onDidDispose(() => {
        if (this.panel === panel) {
          this.panel = undefined;
          this.ready = false;
        }
      }),
    );
  }

  private onMessage(msg: unknown): void {
    if (!isPanelToHost(msg)) {
      this.deps.log.warn(`panel: ignored a malformed message`);
      return;
    }
    switch (msg.type) {
      case 'ready':
        this.ready = true;
        this.sendInit();
        break;
      case 'openExperiment':
        this.deps.openExperiment(msg.id);
        break;
      case 'openLog':
        void vscode.commands.executeCommand('sigmaloop.openLog', msg.id).then(undefined, (err: unknown) => {
          this.deps.log.warn(`panel: could not open the log of #${msg.id}: ${String(err)}`);
        });
        break;
      case 'view':
        this.view = readPersistedState(msg.view);
        this.viewKnown = true;
        this.prune();
        void this.fetchWanted();
        break;
      case 'error':
        this.deps.log.error(`panel: ${msg.message}`);
        break;
    }
  }

  private post(msg: HostToPanel): void {
    if (this.panel && this.ready) {
      void this.panel.webview.postMessage(msg);
    }
  }

  private panelExperiments(): Map<number, PanelExperiment> {
    const out = new Map<number, PanelExperiment>();
    for (const e of this.deps.store.experiments.values()) {
      out.set(e.id, toPanelExperiment(e));
    }
    return out;
  }

  private sendInit(): void {
    const experiments = [...this.panelExperiments().values()];
    this.post({
      type: 'init',
      experiments,
      curves: [...this.curves.values()].map(packCurve),
      direction: this.direction,
      metric: this.metric,
      ...(this.viewKnown ? { view: this.persisted } : {}),
    });
    this.post({ type: 'serverState', state: this.deps.serverState() });
    this.post({ type: 'reference', ...this.reference });
    this.post({ type: 'questions', questions: this.questions });
    void this.fetchWanted();
  }

  /** Everything changed (server (re)started and the store was reloaded). */
  reset(): void {
    this.fetched.clear();
    if (this.ready) {
      this.sendInit();
    }
  }

  /**
   * The engine's state: the reference (line, runs, threshold, best) and the questions go to the
   * page when they change; a new metric name or direction re-sends everything.
   */
  engineState(s: EngineStateView): void {
    const ref = panelReference(s);
    if (JSON.stringify(ref) !== JSON.stringify(this.reference)) {
      this.reference = ref;
      this.post({ type: 'reference', ...ref });
      void this.fetchWanted();
    }
    const questions = s.questions ?? [];
    if (JSON.stringify(questions) !== JSON.stringify(this.questions)) {
      this.questions = questions;
      this.post({ type: 'questions', questions });
    }
    if (s.direction === this.direction && s.metric === this.metric) {
      return;
    }
    this.direction = s.direction;
    this.metric = s.metric;
    this.prune();
    if (this.ready) {
      this.sendInit();
    }
  }

  serverState(state: string): void {
    this.post({ type: 'serverState', state });
  }

  experimentUpdated(e: ExperimentWire): void {
    this.post({ type: 'experiments', experiments: [toPanelExperiment(e)] });
    if (e.status === 'running' && !this.curves.has(e.id)) {
      // a restarted client joins a trial midway: fetch what was logged so far
      this.fetched.delete(e.id);
    }
    if (FINISHED_STATUSES.has(e.status)) {
      // the live stream may have missed the start, and the journal's curve has the anomalies
      this.fetched.delete(e.id);
      this.prune();
    }
    void this.fetchWanted();
  }

  progress(p: TrialProgressParams): void {
    const c = recordsToCurve(p.expId, p.records);
    const cur = this.curves.get(p.expId);
    if (cur) {
      cur.xs.push(...c.xs);
      cur.ys.push(...c.ys);
      if (cur.steps && c.steps) {
        cur.steps.push(...c.steps);
      }
    } else {
      this.curves.set(p.expId, { expId: p.expId, xs: c.xs.slice(), ys: c.ys.slice(), steps: c.steps?.slice() });
    }
    if (c.xs.length) {
      this.post({ type: 'curve', curve: packCurve(c), replace: false });
    }
  }

  /** Curves the page draws: the reference runs, the selection, the running trials. */
  private wanted(): Set<number> {
    return wantedCurves(this.panelExperiments(), this.view.selected, this.reference.ids ?? []);
  }

  /** Fetch the journal's curves of the wanted experiments we have not fetched yet. */
  private async fetchWanted(): Promise<void> {
    if (!this.panel) {
      return;
    }
    const want = [...this.wanted()].filter((id) => !this.fetched.has(id) && !this.fetching.has(id) && this.deps.store.experiments.has(id));
    if (!want.length) {
      return;
    }
    for (const id of want) {
      this.fetching.add(id);
    }
    try {
      const got = await this.deps.fetchCurves(want);
      for (const id of want) {
        const c = got.get(id);
        this.fetched.add(id);
        if (!c) {
          continue;
        }
        const live = this.curves.get(id);
        // keep live points newer than the journal's last (the journal lags the stream a little)
        if (live && live.xs.length && c.xs.length && live.xs[live.xs.length - 1] > c.xs[c.xs.length - 1]) {
          const last = c.xs[c.xs.length - 1];
          const steps = c.steps && live.steps ? c.steps : undefined;
          for (let i = 0; i < live.xs.length; i++) {
            if (live.xs[i] > last) {
              c.xs.push(live.xs[i]);
              c.ys.push(live.ys[i]);
              steps?.push(live.steps?.[i] ?? 0);
            }
          }
          if (!steps) {
            delete c.steps;
          }
        }
        if (!c.xs.length && live && live.xs.length) {
          continue;
        }
        this.curves.set(id, c);
        this.post({ type: 'curve', curve: packCurve(c), replace: true });
      }
    } catch (err) {
      this.deps.log.warn(`panel: could not fetch curves ${want.join(', ')}: ${String(err)}`);
      for (const id of want) {
        this.fetched.delete(id);
      }
    } finally {
      for (const id of want) {
        this.fetching.delete(id);
      }
    }
  }

  /** Drop curves of experiments no longer drawn (keeps host memory bounded on long loops). */
  prune(): void {
    const keep = this.wanted();
    for (const id of this.curves.keys()) {
      const e = this.deps.store.experiments.get(id);
      if (!keep.has(id) && e && e.status !== 'running') {
        this.curves.delete(id);
        this.fetched.delete(id);
      }
    }
  }

  private html(webview: vscode.Webview): string {
    const nonce = makeNonce();
    const js = webview.asWebviewUri(vscode.Uri.joinPath(this.extensionUri, 'out', 'webview.js'));
    const css = webview.asWebviewUri(vscode.Uri.joinPath(this.extensionUri, 'out', 'webview.css'));
    const csp = [
      `default-src 'none'`,
      `img-src ${webview.cspSource} data:`,
      `style-src ${webview.cspSource} 'nonce-${nonce}'`,
      `font-src ${webview.cspSource}`,
      `script-src 'nonce-${nonce}'`,
    ].join('; ');
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" nonce="${nonce}" href="${css.toString()}">
<title>Sigmaloop: Loss</title>
</head>
<body>
<div id="root"></div>
<script nonce="${nonce}" src="${js.toString()}"></script>
</body>
</html>`;
  }

  dispose(): void {
    this.panel?.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

export function makeNonce(): string {
  return randomBytes(18).toString('base64').replace(/[+/=]/g, 'x');
}
