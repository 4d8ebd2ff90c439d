// The loss panel (runs inside the webview). Draws the baseline, the best run and every running
// trial with uPlot (bundled, no CDN), and a table of experiments; clicking a row asks the host
// to open that experiment's diff. Every string from the journal or an agent goes into the DOM
// through textContent, never innerHTML.
//
// Protocol: the page posts {type:'ready'} once its listeners are in place; the host answers with
// {type:'init'} and then streams 'experiments' and 'curve' messages (extension/src/contract.ts).

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './panel.css';
import {
  type CurveData,
  type Direction,
  type HostToPanel,
  type PanelExperiment,
  type PanelPersistedState,
  type PanelToHost,
  isHostToPanel,
} from '../src/contract';
import { CurveStore, buildPlotData, fmt, selectCurves, type SelectedCurve } from '../src/panelModel';

interface VsCodeApi {
  postMessage(msg: PanelToHost): void;
  getState(): unknown;
  setState(state: PanelPersistedState): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

/** State visible to tests and the bench (window.__researchloopPanel). */
interface PanelDebugState {
  ready: boolean;
  initialized: boolean;
  messages: number;
  rejectedMessages: number;
  /** Raw points held, all curves. */
  points: number;
  /** Raw points of the curves on the chart. */
  plottedPoints: number;
  /** Points handed to uPlot after downsampling. */
  drawnPoints: number;
  series: { expId: number; role: string; points: number }[];
  experiments: number;
  draws: number;
  lastDrawMs: number;
  /** Work per redraw: from the frame callback to the end of uPlot's draw (ms). */
  updateTimes: number[];
  /** From the first message of a frame to the end of the redraw it caused (includes the wait for the frame). */
  latencies: number[];
  serverState: string;
}

const vscode = acquireVsCodeApi();
const store = new CurveStore();
const experiments = new Map<number, PanelExperiment>();
let direction: Direction = 'minimize';
let metricName = 'val_bpb';
let selected: SelectedCurve[] = [];
let plot: uPlot | undefined;
let plotKey = '';
let pendingSince: number | undefined;
let frameRequested = false;
let drawStart: number | undefined;

const debug: PanelDebugState = {
  ready: false,
  initialized: false,
  messages: 0,
  rejectedMessages: 0,
  points: 0,
  plottedPoints: 0,
  drawnPoints: 0,
  series: [],
  experiments: 0,
  draws: 0,
  lastDrawMs: 0,
  updateTimes: [],
  latencies: [],
  serverState: '',
};
(window as unknown as { __researchloopPanel: PanelDebugState }).__researchloopPanel = debug;

const persisted = (vscode.getState() as PanelPersistedState | undefined) ?? { version: 1, selectedId: null };

// ---------------------------------------------------------------------------------- DOM

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) {
    e.className = cls;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

const root = document.getElementById('root') ?? document.body;
const header = el('div', 'rl-header');
const title = el('span', 'rl-title', 'Loss');
const legend = el('span', 'rl-legend');
const stateLine = el('span', 'rl-state');
header.append(title, legend, stateLine);
const chartBox = el('div', 'rl-chart');
chartBox.id = 'rl-chart';
chartBox.dataset.points = '0';
chartBox.dataset.drawnPoints = '0';
chartBox.dataset.series = '0';
const empty = el('div', 'rl-empty', 'No curves yet: run a baseline (Research Loop: Run Baseline).');
chartBox.append(empty);
const table = el('table', 'rl-table');
table.id = 'rl-experiments';
const thead = el('thead');
const headRow = el('tr');
for (const h of ['#', 'status', 'Δ', 'σ', 'z', 'source', 'hypothesis']) {
  headRow.append(el('th', undefined, h));
}
thead.append(headRow);
const tbody = el('tbody');
table.append(thead, tbody);
const tableBox = el('div', 'rl-table-box');
tableBox.append(table);
root.append(header, chartBox, tableBox);

tbody.addEventListener('click', (ev) => {
  const row = (ev.target as HTMLElement).closest('tr');
  const id = row ? Number(row.dataset.expId) : NaN;
  if (Number.isInteger(id)) {
    persisted.selectedId = id;
    vscode.setState(persisted);
    for (const r of tbody.querySelectorAll('tr.selected')) {
      r.classList.remove('selected');
    }
    row?.classList.add('selected');
    vscode.postMessage({ type: 'openExperiment', id });
  }
});
tbody.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter') {
    (ev.target as HTMLElement).click();
  }
});

// ---------------------------------------------------------------------------------- theme

interface Theme {
  fg: string;
  grid: string;
  baseline: string;
  best: string;
  running: string[];
  font: string;
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

function readTheme(): Theme {
  return {
    fg: cssVar('--vscode-editor-foreground', '#cccccc'),
    grid: cssVar('--vscode-editorWidget-border', 'rgba(128,128,128,0.25)'),
    baseline: cssVar('--vscode-charts-foreground', cssVar('--vscode-descriptionForeground', '#999999')),
    best: cssVar('--vscode-charts-green', '#89d185'),
    running: [
      cssVar('--vscode-charts-blue', '#3794ff'),
      cssVar('--vscode-charts-orange', '#d18616'),
      cssVar('--vscode-charts-purple', '#b180d7'),
      cssVar('--vscode-charts-yellow', '#cca700'),
      cssVar('--vscode-charts-red', '#f14c4c'),
    ],
    font: `${cssVar('--vscode-font-size', '12px')} ${cssVar('--vscode-font-family', 'sans-serif')}`,
  };
}

let theme = readTheme();
// VS Code swaps the body's classes (vscode-light / vscode-dark / vscode-high-contrast) and the
// CSS variables on a theme change: re-read the colours and rebuild the chart.
new MutationObserver(() => {
  theme = readTheme();
  plotKey = '';
  schedule();
}).observe(document.body, { attributes: true, attributeFilter: ['class', 'style'] });

// ---------------------------------------------------------------------------------- chart

function colour(s: SelectedCurve, i: number): string {
  if (s.role === 'baseline') {
    return theme.baseline;
  }
  if (s.role === 'best') {
    return theme.best;
  }
  return theme.running[i % theme.running.length];
}

function chartSize(): { width: number; height: number } {
  const width = Math.max(200, Math.floor(chartBox.clientWidth || window.innerWidth - 24));
  const height = Math.max(160, Math.min(420, Math.floor(window.innerHeight * 0.5)));
  return { width, height };
}

function buildPlot(width: number, height: number): uPlot {
  let runningIdx = 0;
  const series: uPlot.Series[] = [{ label: 'budget' }];
  for (const s of selected) {
    const c = colour(s, s.role === 'running' ? runningIdx++ : 0);
    series.push({
      label: s.label,
      stroke: c,
      width: s.role === 'running' ? 2 : 1.5,
      dash: s.role === 'baseline' ? [6, 4] : undefined,
      spanGaps: true,
      points: { show: false },
    });
  }
  const axis = (lbl: string): uPlot.Axis => ({
    label: lbl,
    stroke: theme.fg,
    font: theme.font,
    labelFont: theme.font,
    grid: { stroke: theme.grid, width: 1 },
    ticks: { stroke: theme.grid, width: 1 },
  });
  const opts: uPlot.Options = {
    width,
    height,
    series,
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    axes: [{ ...axis('fraction of time budget') }, { ...axis('train loss'), size: 56 }],
    hooks: { draw: [() => onDrawn()] },
  };
  chartBox.replaceChildren();
  return new uPlot(opts, [[]], chartBox);
}

function pushCapped(list: number[], v: number): void {
  list.push(v);
  if (list.length > 5000) {
    list.splice(0, list.length - 5000);
  }
}

function onDrawn(): void {
  debug.draws++;
  const now = performance.now();
  if (drawStart !== undefined) {
    debug.lastDrawMs = now - drawStart;
    pushCapped(debug.updateTimes, debug.lastDrawMs);
    drawStart = undefined;
  }
  if (pendingSince !== undefined) {
    pushCapped(debug.latencies, now - pendingSince);
    pendingSince = undefined;
  }
}

function redraw(): void {
  frameRequested = false;
  drawStart = performance.now();
  selected = selectCurves(experiments.values(), direction).filter((s) => store.has(s.expId));
  const key = selected.map((s) => `${s.expId}:${s.role}`).join(',');
  renderLegend();
  if (!selected.length) {
    if (plot) {
      plot.destroy();
      plot = undefined;
      plotKey = '';
      chartBox.replaceChildren(empty);
    }
    updateCounts(0, 0);
    pendingSince = undefined;
    return;
  }
  const { width, height } = chartSize();
  // uPlot draws at most a few points per pixel column: min/max downsampling keeps spikes.
  const buckets = Math.max(64, width);
  const { data, drawn, raw } = buildPlotData(selected, store, buckets);
  if (!plot || key !== plotKey) {
    plot?.destroy();
    plot = buildPlot(width, height);
    plotKey = key;
  } else if (plot.width !== width || plot.height !== height) {
    plot.setSize({ width, height });
  }
  updateCounts(raw, drawn);
  plot.setData(data);
}

function updateCounts(plotted: number, drawn: number): void {
  debug.points = store.totalPoints();
  debug.plottedPoints = plotted;
  debug.drawnPoints = drawn;
  debug.series = selected.map((s) => ({ expId: s.expId, role: s.role, points: store.size(s.expId) }));
  chartBox.dataset.points = String(plotted);
  chartBox.dataset.drawnPoints = String(drawn);
  chartBox.dataset.series = String(selected.length);
}

function renderLegend(): void {
  legend.replaceChildren();
  let runningIdx = 0;
  for (const s of selected) {
    const item = el('span', 'rl-legend-item');
    const swatch = el('span', 'rl-swatch');
    swatch.style.background = colour(s, s.role === 'running' ? runningIdx++ : 0);
    item.append(swatch, document.createTextNode(s.label));
    legend.append(item);
  }
}

/** Coalesce messages into one redraw per animation frame. */
function schedule(): void {
  if (pendingSince === undefined) {
    pendingSince = performance.now();
  }
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(redraw);
  }
}

// ---------------------------------------------------------------------------------- table

function renderTable(): void {
  const rows = [...experiments.values()].sort((a, b) => b.id - a.id);
  const frag = document.createDocumentFragment();
  for (const e of rows) {
    const tr = el('tr', `status-${e.status.replace(/[^a-z]/g, '')}`);
    tr.dataset.expId = String(e.id);
    tr.tabIndex = 0;
    tr.title = e.hypothesis;
    if (persisted.selectedId === e.id) {
      tr.classList.add('selected');
    }
    tr.append(
      el('td', 'num', `#${e.id}`),
      el('td', 'status', e.confirms !== null ? `${e.status} (confirms #${e.confirms})` : e.status),
      el('td', 'num', fmt(e.delta, 4, true)),
      el('td', 'num', fmt(e.sigma, 4)),
      el('td', 'num', fmt(e.z, 2, true)),
      el('td', 'source', e.source),
      el('td', 'hyp', e.hypothesis),
    );
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
  debug.experiments = experiments.size;
  table.dataset.rows = String(rows.length);
}

// ---------------------------------------------------------------------------------- messages

function applyCurve(c: CurveData, replace: boolean): void {
  if (replace) {
    store.set(c);
  } else {
    store.append(c);
  }
}

function handle(msg: HostToPanel): void {
  switch (msg.type) {
    case 'init':
      direction = msg.direction;
      metricName = msg.metric;
      title.textContent = `Loss · ${metricName} (${direction === 'minimize' ? 'lower' : 'higher'} is better)`;
      experiments.clear();
      for (const e of msg.experiments) {
        experiments.set(e.id, e);
      }
      for (const id of store.ids()) {
        store.delete(id);
      }
      for (const c of msg.curves) {
        applyCurve(c, true);
      }
      debug.initialized = true;
      renderTable();
      break;
    case 'experiments':
      for (const e of msg.experiments) {
        experiments.set(e.id, e);
      }
      renderTable();
      break;
    case 'curve':
      applyCurve(msg.curve, msg.replace);
      break;
    case 'serverState':
      debug.serverState = msg.state;
      stateLine.textContent = msg.state === 'running' ? '' : `server ${msg.state}`;
      return;
  }
  schedule();
}

window.addEventListener('message', (ev: MessageEvent) => {
  const msg: unknown = ev.data;
  if (!isHostToPanel(msg)) {
    debug.rejectedMessages++;
    return;
  }
  debug.messages++;
  try {
    handle(msg);
  } catch (err) {
    vscode.postMessage({ type: 'error', message: String(err instanceof Error ? err.stack ?? err.message : err) });
  }
});

let resizeTimer: number | undefined;
new ResizeObserver(() => {
  window.clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => schedule(), 50);
}).observe(chartBox);

debug.ready = true;
vscode.postMessage({ type: 'ready' });
