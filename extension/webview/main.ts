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
import { CurveStore, buildPlotData, fmt, selectCurves, type SelectedCurve, sourceCell, statusCell } from '../src/panelModel';

interface VsCodeApi {
  postMessage(msg: PanelToHost): void;
  getState(): unknown;
  setState(state: PanelPersistedState): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

/** State visible to tests and the bench (window.__sigmaloopPanel). */
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
  /** performance.now() at the end of the last draw. */
  lastDrawEnd: number;
  /** Work per redraw: from the frame callback to the end of uPlot's draw (ms). */
  updateTimes: number[];
  /** From the first message of a frame to the end of the redraw it caused (includes the wait for the frame). */
  latencies: number[];
  serverState: string;
  /** Milliseconds spent in the phases of the last message and redraw (for the bench). */
  phases: Record<string, number>;
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
  lastDrawEnd: 0,
  updateTimes: [],
  latencies: [],
  serverState: '',
  phases: {},
};
(window as unknown as { __sigmaloopPanel: PanelDebugState }).__sigmaloopPanel = debug;

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
// the reference ± σ and the smallest improvement the judge can keep (the noise advisor)
const referenceLine = el('span', 'rl-reference');
referenceLine.id = 'rl-reference';
header.append(title, referenceLine, legend, stateLine);
const adviceLine = el('div', 'rl-advice');
adviceLine.id = 'rl-advice';
adviceLine.hidden = true;
const chartBox = el('div', 'rl-chart');
chartBox.id = 'rl-chart';
chartBox.dataset.points = '0';
chartBox.dataset.drawnPoints = '0';
chartBox.dataset.series = '0';
const empty = el('div', 'rl-empty', 'No curves yet: run a baseline (Sigmaloop: Run Baseline).');
const plotHost = el('div', 'rl-plot');
chartBox.append(empty, plotHost);
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
root.append(header, adviceLine, chartBox, tableBox);

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
  plot?.destroy();
  plot = undefined;
  plotKey = '';
  schedule();
}).observe(document.body, { attributes: true, attributeFilter: ['class', 'style'] });

// ---------------------------------------------------------------------------------- chart

/**
 * The chart has fixed series slots, made once: 0 = baseline, 1 = best, 2.. = running trials.
 * A trial starting or ending only changes which slots show, never rebuilds the chart (a
 * rebuild costs a frame or two), and the chart exists before the first data arrives.
 */
const MAX_RUNNING = 8;
const SLOTS = 2 + MAX_RUNNING;

function slotColour(slot: number): string {
  if (slot === 0) {
    return theme.baseline;
  }
  if (slot === 1) {
    return theme.best;
  }
  return theme.running[(slot - 2) % theme.running.length];
}

function slotsOf(sel: SelectedCurve[]): number[] {
  let running = 2;
  return sel.map((c) => (c.role === 'baseline' ? 0 : c.role === 'best' ? 1 : running++));
}

/** Chart box width from the ResizeObserver (reading clientWidth here would force a layout). */
let boxWidth = 0;

function chartSize(): { width: number; height: number } {
  const width = Math.max(200, Math.floor(boxWidth || window.innerWidth - 24));
  const height = Math.max(160, Math.min(420, Math.floor(window.innerHeight * 0.5)));
  return { width, height };
}

function buildPlot(width: number, height: number): uPlot {
  const series: uPlot.Series[] = [{ label: 'budget' }];
  for (let slot = 0; slot < SLOTS; slot++) {
    series.push({
      label: slot === 0 ? 'baseline' : slot === 1 ? 'best' : `running ${slot - 1}`,
      stroke: slotColour(slot),
      width: slot >= 2 ? 2 : 1.5,
      dash: slot === 0 ? [6, 4] : undefined,
      spanGaps: true,
      show: false,
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
  plotHost.replaceChildren();
  const empties: null[][] = Array.from({ length: SLOTS }, () => []);
  return new uPlot(opts, [[], ...empties] as uPlot.AlignedData, plotHost);
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
  debug.lastDrawEnd = now;
  if (drawStart !== undefined) {
    debug.phases.redraw = now - drawStart;
    debug.lastDrawMs = now - drawStart;
    pushCapped(debug.updateTimes, debug.lastDrawMs);
    drawStart = undefined;
  }
  if (pendingSince !== undefined) {
    pushCapped(debug.latencies, now - pendingSince);
    pendingSince = undefined;
  }
}

let shownSlots = new Set<number>();

function redraw(): void {
  frameRequested = false;
  drawStart = performance.now();
  selected = selectCurves(experiments.values(), direction, MAX_RUNNING).filter((s) => store.has(s.expId));
  markBest();
  const key = selected.map((s) => `${s.expId}:${s.role}`).join(',');
  if (key !== plotKey) {
    renderLegend();
  }
  empty.hidden = selected.length > 0;
  const t1 = performance.now();
  debug.phases.select = t1 - drawStart;
  const { width, height } = chartSize();
  // uPlot draws at most a few points per pixel column: min/max downsampling keeps spikes.
  const buckets = Math.max(64, width);
  const { data, drawn, raw } = buildPlotData(selected, store, buckets);
  const t2 = performance.now();
  debug.phases.data = t2 - t1;
  if (!plot) {
    plot = buildPlot(width, height);
    shownSlots = new Set();
  } else if (plot.width !== width || plot.height !== height) {
    plot.setSize({ width, height });
  }
  const slots = slotsOf(selected);
  const n = data[0].length;
  const nulls: null[] = new Array<null>(n).fill(null);
  const full: (number | null)[][] = Array.from({ length: SLOTS }, () => nulls);
  slots.forEach((slot, i) => {
    full[slot] = data[i + 1];
  });
  const show = new Set(slots);
  plot.batch(() => {
    for (let slot = 0; slot < SLOTS; slot++) {
      if (show.has(slot) !== shownSlots.has(slot)) {
        plot?.setSeries(slot + 1, { show: show.has(slot) });
      }
    }
    plot?.setData([data[0], ...full] as uPlot.AlignedData);
  });
  shownSlots = show;
  plotKey = key;
  const t3 = performance.now();
  debug.phases.create = 0;
  updateCounts(raw, drawn);
  debug.phases.setData = t3 - t2;
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
  const slots = slotsOf(selected);
  for (const [i, s] of selected.entries()) {
    const item = el('span', 'rl-legend-item');
    const swatch = el('span', 'rl-swatch');
    swatch.style.background = slotColour(slots[i]);
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

const rowEls = new Map<number, HTMLTableRowElement>();
/** The best run (in the metric's direction: the same choice as the best curve); its row is marked. */
let bestId: number | undefined;

function markBest(): void {
  const id = selectCurves(experiments.values(), direction, 0).find((s) => s.role === 'best')?.expId;
  if (id === bestId) {
    return;
  }
  if (bestId !== undefined) {
    rowEls.get(bestId)?.classList.remove('best');
  }
  bestId = id;
  if (id !== undefined) {
    rowEls.get(id)?.classList.add('best');
  }
}

function fillRow(tr: HTMLTableRowElement, e: PanelExperiment): void {
  const status = statusCell(e);
  tr.className = status.cls;
  if (persisted.selectedId === e.id) {
    tr.classList.add('selected');
  }
  if (bestId === e.id) {
    tr.classList.add('best');
  }
  tr.title = status.note ? `${e.hypothesis}\n${status.note}` : e.hypothesis;
  const cells = tr.children;
  const text = [`#${e.id}`, status.text, fmt(e.delta, 4, true), fmt(e.sigma, 4), fmt(e.z, 2, true), sourceCell(e), e.hypothesis];
  for (let i = 0; i < text.length; i++) {
    if (cells[i].textContent !== text[i]) {
      cells[i].textContent = text[i];
    }
  }
}

function makeRow(e: PanelExperiment): HTMLTableRowElement {
  const tr = el('tr');
  tr.dataset.expId = String(e.id);
  tr.tabIndex = 0;
  tr.append(el('td', 'num'), el('td', 'status'), el('td', 'num'), el('td', 'num'), el('td', 'num'), el('td', 'source'), el('td', 'hyp'));
  fillRow(tr, e);
  return tr;
}

/** Rebuild every row (init). */
function renderTable(): void {
  rowEls.clear();
  const frag = document.createDocumentFragment();
  for (const e of [...experiments.values()].sort((a, b) => b.id - a.id)) {
    const tr = makeRow(e);
    rowEls.set(e.id, tr);
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
  debug.experiments = experiments.size;
  table.dataset.rows = String(rowEls.size);
}

/** Update or insert the rows of these experiments only (newest first order kept). */
function updateRows(list: PanelExperiment[]): void {
  for (const e of list) {
    const tr = rowEls.get(e.id);
    if (tr) {
      fillRow(tr, e);
      continue;
    }
    const row = makeRow(e);
    rowEls.set(e.id, row);
    // rows are sorted by id, descending: new experiments usually go first
    let before: Element | null = tbody.firstElementChild;
    while (before && Number((before as HTMLElement).dataset.expId) > e.id) {
      before = before.nextElementSibling;
    }
    tbody.insertBefore(row, before);
  }
  debug.experiments = experiments.size;
  table.dataset.rows = String(rowEls.size);
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
      {
        const t = performance.now();
        renderTable();
        debug.phases.table = performance.now() - t;
      }
      break;
    case 'experiments':
      for (const e of msg.experiments) {
        experiments.set(e.id, e);
      }
      updateRows(msg.experiments);
      break;
    case 'curve':
      applyCurve(msg.curve, msg.replace);
      break;
    case 'serverState':
      debug.serverState = msg.state;
      stateLine.textContent = msg.state === 'running' ? '' : `server ${msg.state}`;
      return;
    case 'reference':
      referenceLine.textContent = msg.text;
      adviceLine.textContent = msg.advice ?? '';
      adviceLine.hidden = !msg.advice;
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
    const t = performance.now();
    handle(msg);
    debug.phases.message = performance.now() - t;
  } catch (err) {
    vscode.postMessage({ type: 'error', message: String(err instanceof Error ? err.stack ?? err.message : err) });
  }
});

let resizeTimer: number | undefined;
new ResizeObserver((entries) => {
  const w = Math.floor(entries[entries.length - 1].contentRect.width);
  if (w === boxWidth) {
    return;
  }
  const first = boxWidth === 0;
  boxWidth = w;
  window.clearTimeout(resizeTimer);
  if (first) {
    schedule();
  } else {
    resizeTimer = window.setTimeout(() => schedule(), 50);
  }
}).observe(chartBox);

// the chart exists (empty) before the data: its construction is off the first draw's path
{
  const size = chartSize();
  plot = buildPlot(size.width, size.height);
}
debug.ready = true;
vscode.postMessage({ type: 'ready' });
