// The loss panel's host side: creates (or restores) the webview with a strict CSP, waits for the
// page's 'ready' before posting data, forwards experiments and curves, and opens an
// experiment's diff when the page asks.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import {
  type CurveData,
  type Direction,
  type ExperimentWire,
  type HostToPanel,
  type TrialProgressParams,
  isPanelToHost,
  recordsToCurve,
  toPanelExperiment,
} from './contract';
import { type EngineStateView, referenceLine } from './engineState';
import { selectCurves } from './panelModel';
import type { ExperimentStore } from './store';

export const PANEL_VIEW_TYPE = 'sigmaloop.lossPanel';

export interface PanelDeps {
  store: ExperimentStore;
  log: vscode.LogOutputChannel;
  /** sigmaloop/experiments with curves for these ids (records per experiment). */
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
  /** The reference line with the noise advisor (from the engine's state). */
  private reference = referenceLine(undefined);

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly deps: PanelDeps,
  ) {}

  static serializer(panel: LossPanel): vscode.WebviewPanelSerializer {
    return {
      deserializeWebviewPanel: (webviewPanel: vscode.WebviewPanel) => {
        panel.attach(webviewPanel);
        return Promise.resolve();
      },
    };
  }

  get isOpen(): boolean {
    return !!this.panel;
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

  private webviewOptions(): vscode.WebviewPanelOptions & vscode.WebviewOptions {
    return {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(this.extensionUri, 'out')],
    };
  }

  attach(panel: vscode.WebviewPanel): void {
    this.panel?.dispose();
    this.panel = panel;
    this.ready = false;
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

  private sendInit(): void {
    const experiments = [...this.deps.store.experiments.values()].map(toPanelExperiment);
    this.post({
      type: 'init',
      experiments,
      curves: [...this.curves.values()],
      direction: this.direction,
      metric: this.metric,
    });
    this.post({ type: 'serverState', state: this.deps.serverState() });
    this.post({ type: 'reference', ...this.reference });
    void this.fetchSelected();
  }

  /** Everything changed (server (re)started and the store was reloaded). */
  reset(): void {
    this.fetched.clear();
    if (this.ready) {
      this.sendInit();
    }
  }

  /** The engine's state: a new metric name or direction redraws the panel (which run is best depends on it). */
  engineState(s: EngineStateView): void {
    const ref = referenceLine(s);
    if (ref.text !== this.reference.text || ref.advice !== this.reference.advice) {
      this.reference = ref;
      this.post({ type: 'reference', ...ref });
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
    if (e.status === 'kept') {
      // the live stream may have missed the start: take the journal's curve
      this.fetched.delete(e.id);
    }
    if (e.status !== 'running') {
      this.prune();
    }
    void this.fetchSelected();
  }

  progress(p: TrialProgressParams): void {
    const c = recordsToCurve(p.expId, p.records);
    const cur = this.curves.get(p.expId);
    if (cur) {
      cur.xs.push(...c.xs);
      cur.ys.push(...c.ys);
    } else {
      this.curves.set(p.expId, { expId: p.expId, xs: c.xs.slice(), ys: c.ys.slice() });
    }
    if (c.xs.length) {
      this.post({ type: 'curve', curve: c, replace: false });
    }
  }

  /** Fetch the journal's curves of the selected experiments we have not fetched yet. */
  private async fetchSelected(): Promise<void> {
    if (!this.panel) {
      return;
    }
    const panelExps = [...this.deps.store.experiments.values()].map(toPanelExperiment);
    const want = selectCurves(panelExps, this.direction)
      .map((s) => s.expId)
      .filter((id) => !this.fetched.has(id) && !this.fetching.has(id));
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
          for (let i = 0; i < live.xs.length; i++) {
            if (live.xs[i] > last) {
              c.xs.push(live.xs[i]);
              c.ys.push(live.ys[i]);
            }
          }
        }
        if (!c.xs.length && live && live.xs.length) {
          continue;
        }
        this.curves.set(id, c);
        this.post({ type: 'curve', curve: c, replace: true });
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
    const panelExps = [...this.deps.store.experiments.values()].map(toPanelExperiment);
    const keep = new Set(selectCurves(panelExps, this.direction).map((s) => s.expId));
    for (const id of this.curves.keys()) {
      const e = this.deps.store.experiments.get(id);
      if (!keep.has(id) && e && e.status !== 'running') {
        this.curves.delete(id);
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
