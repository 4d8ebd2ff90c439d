// The loss panel (runs inside the webview): "how did #N compare?".
//
//  - Training loss: the reference (the mean of the reference runs' curves, with their min–max
//    band), the experiments the researcher selected (click table rows), the running trials,
//    over x = fraction of the time budget; values under the cursor in the legend; anomalies
//    marked on their curve.
//  - The metric view: the final metric by experiment id, coloured by verdict, with the
//    reference ± σ and the keep threshold.
//  - The experiments table (metric, Δ in one sign convention, verdict, reason, steps, time,
//    question, warnings, diff and log) and the research questions (click one: its experiments
//    are overlaid).
// The selection and the tab outlive the page (the host keeps them; setState for reloads). Every
// string from the journal or an agent goes into the DOM through textContent, never innerHTML.
//
// Protocol: the page posts {type:'ready'} once its listeners are in place; the host answers with
// {type:'init'} and then streams 'experiments', 'curve', 'reference' and 'questions' messages,
// and 'select' ("Show curve of #N": overlay these, on the experiments tab); the page posts 'view'
// (selection, tab), 'openExperiment' and 'openLog' (extension/src/contract.ts).
//
// Selectors for tests (stable):
//   #rl-chart                     the loss chart; data-series (lines drawn), data-selected (selected
//                                 experiments drawn), data-points, data-drawn-points, data-band-runs
//   #rl-legend .rl-legend-item[data-role="selected"][data-exp-id]
//                                 one per overlaid experiment (text "#12 <hypothesis> …"); roles
//                                 also "reference", "running", "baseline"
//   .rl-title                     "Training loss" (the loss chart's title)
//   #rl-metric-chart              the metric view; data-points (experiments plotted),
//                                 data-reference, data-keep-line; #rl-metric-title names the metric
//   #rl-experiments tbody tr[data-exp-id]   rows (.selected when overlaid); td[data-col=…]
//   #rl-experiments button.rl-log[data-exp-id]   open the trial's log; button.rl-diff its diff
//   .rl-tab[data-tab="experiments"|"questions"]  the tabs; #rl-questions the questions view
//   #rl-questions .rl-question[data-question-id]  one per question; .rl-question-select overlays
//                                 its experiments; .rl-question-exp[data-exp-id] one experiment
//   #rl-clear                     clears the selection
//   .rl-anomaly[data-exp-id][data-kind]   an anomaly marker on a curve (title = the message);
//                                 .dismissed (faded) once the researcher dismissed it

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './panel.css';
import {
  type Direction,
  type HostToPanel,
  MAX_SELECTED,
  type PanelCurve,
  type PanelExperiment,
  type PanelPersistedState,
  type PanelQuestion,
  type PanelReference,
  type PanelTab,
  type PanelToHost,
  isHostToPanel,
  readPersistedState,
} from '../src/contract';
import {
  CurveStore,
  METRIC_CLASSES,
  type MetricClass,
  type PlannedCurve,
  addSelected,
  deltaWords,
  digitsFor,
  durationText,
  effectText,
  fmt,
  gridX,
  keepLine,
  keepNeeds,
  metricPoints,
  metricRange,
  nearestIndex,
  planCurves,
  rangeBetween,
  reasonWords,
  referenceBand,
  rowTooltip,
  sourceCell,
  statusCell,
  toggleSelected,
  truncate,
  warningText,
  type Band,
} from '../src/panelModel';

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
  /** Raw points of the curves on the loss chart (lines and the reference runs). */
  plottedPoints: number;
  /** Points handed to uPlot (grid rows x series drawn). */
  drawnPoints: number;
  /** The lines on the loss chart (the reference band is `reference`). */
  series: { expId: number; role: string; points: number; label: string }[];
  reference: { ids: number[]; runs: number };
  selected: number[];
  tab: PanelTab;
  experiments: number;
  questions: number;
  /** Points in the metric view. */
  metricPoints: number;
  draws: number;
  metricDraws: number;
  lastDrawMs: number;
  /** performance.now() at the end of the last redraw (both charts). */
  lastDrawEnd: number;
  /** Work per redraw (ms): the frame callback's work, both charts. */
  updateTimes: number[];
  /** Work per frame (ms): the messages handled since the last redraw plus that redraw. */
  frameWork: number[];
  /** From the first message of a frame to the end of the redraw it caused (includes the wait for the frame). */
  latencies: number[];
  serverState: string;
  /** Milliseconds spent in the phases of the last message and redraw (for the bench). */
  phases: Record<string, number>;
  /** performance.now() when the table was last built from scratch. */
  tableBuilt: number;
  /** Milliseconds from the script's start to 'ready' (building and warming the charts). */
  startupMs: number;
}

const scriptStart = performance.now();
const vscode = acquireVsCodeApi();
const store = new CurveStore();
const experiments = new Map<number, PanelExperiment>();
let direction: Direction = 'minimize';
let metricName = 'val_bpb';
let reference: PanelReference = { text: '', advice: null };
let questions: PanelQuestion[] = [];
let view: PanelPersistedState = readPersistedState(vscode.getState());
let planned: PlannedCurve[] = [];

const debug: PanelDebugState = {
  ready: false,
  initialized: false,
  messages: 0,
  rejectedMessages: 0,
  points: 0,
  plottedPoints: 0,
  drawnPoints: 0,
  series: [],
  reference: { ids: [], runs: 0 },
  selected: [...view.selected],
  tab: view.tab,
  experiments: 0,
  questions: 0,
  metricPoints: 0,
  draws: 0,
  metricDraws: 0,
  lastDrawMs: 0,
  lastDrawEnd: 0,
  updateTimes: [],
  frameWork: [],
  latencies: [],
  serverState: '',
  phases: {},
  tableBuilt: 0,
  startupMs: 0,
};
(window as unknown as { __sigmaloopPanel: PanelDebugState }).__sigmaloopPanel = debug;

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

function button(cls: string, text: string, title = ''): HTMLButtonElement {
  const b = el('button', cls, text);
  b.type = 'button';
  if (title) {
    b.title = title;
  }
  return b;
}

// the data path, compiled while the page builds the rest (see warmUpData)
const warmScene = warmUpData();

const root = document.getElementById('root') ?? document.body;
const header = el('div', 'rl-header');
// the reference ± σ and the smallest improvement the judge can keep (the noise advisor)
const referenceLine = el('span', 'rl-reference');
referenceLine.id = 'rl-reference';
const stateLine = el('span', 'rl-state');
header.append(referenceLine, stateLine);
const adviceLine = el('div', 'rl-advice');
adviceLine.id = 'rl-advice';
adviceLine.hidden = true;

// the loss chart
const lossSection = el('section', 'rl-view rl-loss');
const lossHead = el('div', 'rl-chart-head');
const title = el('h2', 'rl-title', 'Training loss');
const lossSub = el('span', 'rl-subtitle', '');
const clearButton = button('rl-clear', 'Clear selection', 'Remove every selected experiment from the charts');
clearButton.id = 'rl-clear';
clearButton.disabled = true;
lossHead.append(title, lossSub, clearButton);
const legend = el('div', 'rl-legend');
legend.id = 'rl-legend';
const cursorLine = el('div', 'rl-cursor');
cursorLine.id = 'rl-cursor';
const chartBox = el('div', 'rl-chart');
chartBox.id = 'rl-chart';
chartBox.dataset.points = '0';
chartBox.dataset.drawnPoints = '0';
chartBox.dataset.series = '0';
chartBox.dataset.selected = '0';
chartBox.dataset.bandRuns = '0';
const empty = el('div', 'rl-empty', 'No curves yet: run a baseline (Sigmaloop: Run Baseline).');
const plotHost = el('div', 'rl-plot');
chartBox.append(empty, plotHost);
lossSection.append(lossHead, chartBox, cursorLine, legend);

// the metric view
const metricSection = el('section', 'rl-view rl-metric');
const metricHead = el('div', 'rl-chart-head');
const metricTitle = el('h2', 'rl-metric-title', 'val_bpb by experiment');
metricTitle.id = 'rl-metric-title';
metricHead.append(metricTitle);
const metricLegend = el('div', 'rl-legend rl-metric-legend');
const metricBox = el('div', 'rl-chart rl-metric-chart');
metricBox.id = 'rl-metric-chart';
metricBox.dataset.points = '0';
const metricEmpty = el('div', 'rl-empty', 'No metric yet: the first finished trial puts a point here.');
const metricHost = el('div', 'rl-plot');
const metricTip = el('div', 'rl-tip');
metricTip.hidden = true;
metricBox.append(metricEmpty, metricHost, metricTip);
metricSection.append(metricHead, metricLegend, metricBox);

const charts = el('div', 'rl-charts');
charts.append(lossSection, metricSection);

// tabs: the experiments table | the questions
const tabs = el('div', 'rl-tabs');
tabs.setAttribute('role', 'tablist');
const tabExperiments = button('rl-tab', 'Experiments');
tabExperiments.dataset.tab = 'experiments';
const tabQuestions = button('rl-tab', 'Questions');
tabQuestions.dataset.tab = 'questions';
for (const t of [tabExperiments, tabQuestions]) {
  t.setAttribute('role', 'tab');
}
const selectionNote = el('span', 'rl-selection-note');
tabs.append(tabExperiments, tabQuestions, selectionNote);

interface Column {
  key: string;
  head: string;
  cls: string;
  title: string;
}
// status stays the 2nd cell and source the 6th (tests read them by position too)
const COLUMNS: Column[] = [
  { key: 'id', head: '#', cls: 'num', title: 'experiment id (★ the best reference)' },
  { key: 'status', head: 'verdict', cls: 'status', title: 'where it ended' },
  { key: 'metric', head: 'metric', cls: 'num', title: 'the final metric' },
  { key: 'delta', head: 'Δ', cls: 'num delta', title: 'against the paired reference, in metric units and σ of the noise' },
  { key: 'reason', head: 'reason', cls: 'reason', title: 'why it ended as it did' },
  { key: 'source', head: 'source', cls: 'source', title: 'baseline, tune, llm:<model> or user' },
  { key: 'hypothesis', head: 'hypothesis', cls: 'hyp', title: '' },
  { key: 'steps', head: 'steps', cls: 'num', title: 'optimizer steps' },
  { key: 'time', head: 'time', cls: 'num', title: 'wall time of the trial' },
  { key: 'question', head: 'Q', cls: 'question', title: 'the research question it tests' },
  { key: 'warn', head: '⚠', cls: 'warn', title: 'warnings: barely trained, step counts that differ' },
  { key: 'actions', head: '', cls: 'actions', title: '' },
];
const table = el('table', 'rl-table');
table.id = 'rl-experiments';
const thead = el('thead');
const headRow = el('tr');
const headCells = new Map<string, HTMLTableCellElement>();
for (const c of COLUMNS) {
  const th = el('th', c.cls, c.head);
  th.dataset.col = c.key;
  if (c.title) {
    th.title = c.title;
  }
  headCells.set(c.key, th);
  headRow.append(th);
}
thead.append(headRow);
const tbody = el('tbody');
table.append(thead, tbody);
const tableBox = el('div', 'rl-table-box');
tableBox.id = 'rl-table-box';
tableBox.append(table);
const questionsBox = el('div', 'rl-questions');
questionsBox.id = 'rl-questions';
root.append(header, adviceLine, charts, tabs, tableBox, questionsBox);

// ---------------------------------------------------------------------------------- theme

interface Theme {
  fg: string;
  muted: string;
  grid: string;
  reference: string;
  kept: string;
  discarded: string;
  untrusted: string;
  warning: string;
  palette: string[];
  font: string;
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

function readTheme(): Theme {
  return {
    fg: cssVar('--vscode-editor-foreground', '#cccccc'),
    muted: cssVar('--vscode-descriptionForeground', '#999999'),
    grid: cssVar('--vscode-editorWidget-border', 'rgba(128,128,128,0.25)'),
    reference: cssVar('--vscode-charts-foreground', cssVar('--vscode-descriptionForeground', '#999999')),
    kept: cssVar('--vscode-charts-green', '#89d185'),
    discarded: cssVar('--vscode-charts-blue', '#3794ff'),
    untrusted: cssVar('--vscode-charts-red', '#f14c4c'),
    warning: cssVar('--vscode-editorWarning-foreground', cssVar('--vscode-charts-yellow', '#cca700')),
    palette: [
      cssVar('--vscode-charts-blue', '#3794ff'),
      cssVar('--vscode-charts-orange', '#d18616'),
      cssVar('--vscode-charts-purple', '#b180d7'),
      cssVar('--vscode-charts-green', '#89d185'),
      cssVar('--vscode-charts-yellow', '#cca700'),
      cssVar('--vscode-charts-red', '#f14c4c'),
      '#4ec9b0',
      '#ce9178',
      '#c586c0',
      '#9cdcfe',
    ],
    font: `${cssVar('--vscode-font-size', '12px')} ${cssVar('--vscode-font-family', 'sans-serif')}`,
  };
}

/** A theme colour (#rgb, #rrggbb, #rrggbbaa or rgb()) at this opacity. */
function withAlpha(color: string, alpha: number): string {
  const hex = /^#([0-9a-f]{3,8})$/i.exec(color.trim());
  if (hex) {
    let h = hex[1];
    if (h.length === 3 || h.length === 4) {
      h = [...h].map((c) => c + c).join('');
    }
    const n = (i: number) => parseInt(h.slice(i, i + 2), 16);
    return `rgba(${n(0)},${n(2)},${n(4)},${alpha})`;
  }
  const rgb = /^rgba?\(([^,]+),([^,]+),([^,)]+)/.exec(color.replace(/\s/g, ''));
  return rgb ? `rgba(${rgb[1]},${rgb[2]},${rgb[3]},${alpha})` : color;
}

let theme = readTheme();
// VS Code swaps the body's classes (vscode-light / vscode-dark / vscode-high-contrast) and the
// CSS variables on a theme change: re-read the colours and rebuild the charts.
new MutationObserver(() => {
  theme = readTheme();
  lossPlot?.destroy();
  lossPlot = undefined;
  metricPlot?.destroy();
  metricPlot = undefined;
  lossDataKey = '';
  dirty.loss = dirty.metric = dirty.legend = dirty.table = true;
  schedule();
}).observe(document.body, { attributes: true, attributeFilter: ['class', 'style'] });

// ---------------------------------------------------------------------------------- selection

/** Colour slot of each selected experiment: kept while it stays selected (colours don't jump). */
const slotOf = new Map<number, number>();

function assignSlots(): void {
  for (const id of [...slotOf.keys()]) {
    if (!view.selected.includes(id)) {
      slotOf.delete(id);
    }
  }
  const used = new Set(slotOf.values());
  for (const id of view.selected) {
    if (!slotOf.has(id)) {
      let s = 0;
      while (used.has(s)) {
        s++;
      }
      slotOf.set(id, s);
      used.add(s);
    }
  }
}

function selectedColour(id: number): string {
  return theme.palette[(slotOf.get(id) ?? 0) % theme.palette.length];
}

function persist(): void {
  vscode.setState(view);
  vscode.postMessage({ type: 'view', view });
  debug.selected = [...view.selected];
  debug.tab = view.tab;
}

function setSelection(ids: number[]): void {
  const next = ids.slice(-MAX_SELECTED);
  if (next.length === view.selected.length && next.every((id, i) => id === view.selected[i])) {
    return;
  }
  view = { ...view, selected: next };
  assignSlots();
  persist();
  markSelectedRows();
  renderQuestions();
  dirty.loss = dirty.metric = dirty.legend = true;
  schedule();
}

function setTab(tab: PanelTab): void {
  if (view.tab !== tab) {
    view = { ...view, tab };
    persist();
  }
  applyTab();
}

function applyTab(): void {
  for (const t of [tabExperiments, tabQuestions]) {
    const on = t.dataset.tab === view.tab;
    t.classList.toggle('active', on);
    t.setAttribute('aria-selected', String(on));
  }
  tableBox.hidden = view.tab !== 'experiments';
  questionsBox.hidden = view.tab !== 'questions';
}

clearButton.addEventListener('click', () => setSelection([]));
tabs.addEventListener('click', (ev) => {
  const t = (ev.target as HTMLElement).closest<HTMLElement>('.rl-tab');
  if (t?.dataset.tab === 'experiments' || t?.dataset.tab === 'questions') {
    setTab(t.dataset.tab);
  }
});

// ---------------------------------------------------------------------------------- loss chart

/**
 * Fixed series slots, made once: the reference mean, its band's upper and lower edges, then the
 * selected experiments, the running trials and the baseline (while there is no reference).
 * Selecting or a trial starting only changes which slots show, never rebuilds the chart.
 */
const MAX_RUNNING = 8;
const REF_MEAN = 1;
const REF_HI = 2;
const REF_LO = 3;
const FIRST_SELECTED = 4;
const FIRST_RUNNING = FIRST_SELECTED + MAX_SELECTED;
const BASELINE_SLOT = FIRST_RUNNING + MAX_RUNNING;
const SERIES = BASELINE_SLOT + 1;

let lossPlot: uPlot | undefined;
let metricPlot: uPlot | undefined;
let lossWidth = 0;
let metricWidth = 0;
/** The grid's x extent (1 = the whole budget; more when a run went past it). */
let xmax = 1;
let lossDataKey = '';
let shown: boolean[] = [];
/** series index → experiment id drawn there (for the hover values and the markers). */
let seriesExp: (number | undefined)[] = [];
let band: Band = { mean: [], lo: [], hi: [], runs: 0 };
let bandKey = '';
let grid: number[] = [];
let gridKey = '';

function chartHeight(): number {
  return Math.max(160, Math.min(380, Math.floor(window.innerHeight * 0.36)));
}

function axisStyle(lbl: string): uPlot.Axis {
  return {
    label: lbl,
    stroke: theme.fg,
    font: theme.font,
    labelFont: theme.font,
    grid: { stroke: theme.grid, width: 1 },
    ticks: { stroke: theme.grid, width: 1 },
  };
}

function lineColour(idx: number): string {
  if (idx >= FIRST_SELECTED && idx < FIRST_RUNNING) {
    const id = seriesExp[idx];
    return id !== undefined ? selectedColour(id) : theme.palette[0];
  }
  if (idx >= FIRST_RUNNING && idx < BASELINE_SLOT) {
    return theme.palette[(idx - FIRST_RUNNING + 3) % theme.palette.length];
  }
  return theme.reference;
}

function buildLossPlot(width: number): uPlot {
  const series: uPlot.Series[] = [{ label: 'fraction of budget' }];
  series.push({ label: 'reference mean', stroke: theme.reference, width: 2, spanGaps: true, show: false, points: { show: false } });
  for (const label of ['reference max', 'reference min']) {
    series.push({ label, stroke: withAlpha(theme.reference, 0.35), width: 1, spanGaps: true, show: false, points: { show: false } });
  }
  for (let i = FIRST_SELECTED; i < SERIES; i++) {
    const running = i >= FIRST_RUNNING && i < BASELINE_SLOT;
    series.push({
      label: i === BASELINE_SLOT ? 'baseline' : running ? `running ${i - FIRST_RUNNING + 1}` : `selected ${i - FIRST_SELECTED + 1}`,
      // the colour of a selected slot follows its experiment: read at draw time
      stroke: (_u: uPlot, si: number) => lineColour(si),
      width: running ? 2 : 1.5,
      dash: i === BASELINE_SLOT ? [6, 4] : i - FIRST_SELECTED >= theme.palette.length && !running ? [5, 3] : undefined,
      spanGaps: true,
      show: false,
      points: { show: false },
    });
  }
  const opts: uPlot.Options = {
    width,
    height: chartHeight(),
    series,
    bands: [{ series: [REF_HI, REF_LO], fill: withAlpha(theme.reference, 0.18) }],
    legend: { show: false },
    cursor: { drag: { x: true, y: false }, points: { show: false } },
    scales: { x: { time: false, range: () => [0, xmax] } },
    axes: [axisStyle('fraction of the time budget'), { ...axisStyle('training loss'), size: 56 }],
    hooks: { setCursor: [(u) => onLossCursor(u)], draw: [(u) => placeAnomalies(u)] },
  };
  plotHost.replaceChildren();
  const p = new uPlot(opts, [[], ...Array.from({ length: SERIES - 1 }, () => [])] as uPlot.AlignedData, plotHost);
  anomalyLayer = el('div', 'rl-anomalies');
  p.over.append(anomalyLayer);
  shown = new Array<boolean>(SERIES).fill(false);
  lossDataKey = '';
  return p;
}

const nullRows = new Map<number, null[]>();
function nullRow(n: number): null[] {
  let r = nullRows.get(n);
  if (!r) {
    r = new Array<null>(n).fill(null);
    nullRows.clear();
    nullRows.set(n, r);
  }
  return r;
}

function drawLoss(): void {
  const t0 = performance.now();
  const width = Math.max(200, Math.floor(lossWidth || window.innerWidth - 24));
  const refIds = (reference.ids ?? []).filter((id) => store.has(id));
  const lines = planned.filter((c) => store.has(c.expId));
  empty.hidden = lines.length > 0 || refIds.length > 0;
  xmax = Math.max(1, store.maxX([...refIds, ...lines.map((c) => c.expId)]));
  // a bucket per two pixel columns of the plotting area, two grid rows each (its min and max):
  // a row per pixel column
  const buckets = Math.max(64, Math.round((width - 70) / 2));
  const gk = `${buckets}:${xmax}`;
  if (gk !== gridKey) {
    grid = gridX(buckets, xmax);
    gridKey = gk;
  }
  const bk = `${gk}|${refIds.map((id) => `${id}.${store.version(id)}`).join(',')}`;
  const tb = performance.now();
  if (bk !== bandKey) {
    band = referenceBand(
      refIds.map((id) => store.raw(id) ?? { xs: [], ys: [] }),
      buckets,
      xmax,
    );
    bandKey = bk;
  }
  debug.phases.band = performance.now() - tb;
  const rows: (number | null)[][] = new Array<(number | null)[]>(SERIES - 1).fill(nullRow(grid.length));
  const show = new Array<boolean>(SERIES).fill(false);
  const exps: (number | undefined)[] = new Array<number | undefined>(SERIES).fill(undefined);
  if (band.runs > 0) {
    rows[REF_MEAN - 1] = band.mean;
    show[REF_MEAN] = true;
    if (band.runs > 1) {
      rows[REF_HI - 1] = band.hi;
      rows[REF_LO - 1] = band.lo;
      show[REF_HI] = show[REF_LO] = true;
    }
  }
  let running = FIRST_RUNNING;
  let raw = refIds.reduce((n, id) => n + store.size(id), 0);
  for (const c of lines) {
    const idx = c.role === 'selected' ? FIRST_SELECTED + (slotOf.get(c.expId) ?? 0) : c.role === 'running' ? running++ : BASELINE_SLOT;
    if (idx >= SERIES || (c.role === 'running' && idx >= BASELINE_SLOT)) {
      continue;
    }
    rows[idx - 1] = store.gridded(c.expId, buckets, xmax);
    show[idx] = true;
    exps[idx] = c.expId;
    raw += store.size(c.expId);
  }
  seriesExp = exps;
  const t1 = performance.now();
  debug.phases.data = t1 - t0;
  const key = `${bk}|${lines.map((c) => `${c.expId}.${store.version(c.expId)}.${c.role}.${slotOf.get(c.expId) ?? ''}`).join(',')}`;
  if (!lossPlot) {
    lossPlot = buildLossPlot(width);
  } else if (lossPlot.width !== width || lossPlot.height !== chartHeight()) {
    lossPlot.setSize({ width, height: chartHeight() });
  }
  const plot = lossPlot;
  if (key !== lossDataKey) {
    plot.batch(() => {
      for (let i = 1; i < SERIES; i++) {
        if (show[i] !== shown[i]) {
          plot.setSeries(i, { show: show[i] });
        }
      }
      plot.setData([grid, ...rows] as uPlot.AlignedData);
    });
    shown = show;
    lossDataKey = key;
    debug.draws++;
  }
  const drawnSeries = show.filter((s) => s).length;
  debug.phases.setData = performance.now() - t1;
  debug.points = store.totalPoints();
  debug.plottedPoints = raw;
  debug.drawnPoints = drawnSeries * grid.length;
  debug.series = lines.map((c) => ({ expId: c.expId, role: c.role, points: store.size(c.expId), label: c.label }));
  debug.reference = { ids: refIds, runs: band.runs };
  chartBox.dataset.points = String(raw);
  chartBox.dataset.drawnPoints = String(debug.drawnPoints);
  chartBox.dataset.series = String(lines.length);
  chartBox.dataset.selected = String(lines.filter((c) => c.role === 'selected').length);
  chartBox.dataset.bandRuns = String(band.runs);
}

// -- anomalies: a marker at their place on the curve, the message as its title

let anomalyLayer: HTMLDivElement = el('div');
const anomalyEls = new Map<string, HTMLSpanElement>();

function placeAnomalies(u: uPlot): void {
  const seen = new Set<string>();
  for (let idx = FIRST_SELECTED; idx < SERIES; idx++) {
    const id = seriesExp[idx];
    if (id === undefined) {
      continue;
    }
    for (const a of store.anomalies(id)) {
      const key = `${id}:${a.kind}:${a.step}`;
      seen.add(key);
      let m = anomalyEls.get(key);
      if (!m) {
        m = el('span', 'rl-anomaly', a.kind === 'nan' ? '✕' : '▲');
        m.dataset.expId = String(id);
        m.dataset.kind = a.kind;
        anomalyEls.set(key, m);
      }
      // a dismissed one stays on its curve, faded: the curve still shows what happened
      m.classList.toggle('dismissed', !!a.dismissed);
      m.title = a.dismissed ? `#${id}: ${a.message} (dismissed${a.dismissedReason ? `: ${a.dismissedReason}` : ''})` : `#${id}: ${a.message}`;
      if (m.parentElement !== anomalyLayer) {
        anomalyLayer.append(m);
      }
      const p = store.nearest(id, a.frac);
      const left = u.valToPos(a.frac, 'x');
      const top = p && Number.isFinite(p.y) ? u.valToPos(p.y, 'y') : 6;
      m.style.left = `${Math.round(left)}px`;
      // the plotting area's height from uPlot (reading the DOM here would force a layout mid-frame)
      const height = u.bbox.height / (window.devicePixelRatio || 1);
      m.style.top = `${Math.round(Math.max(6, Math.min(height - 6, top)))}px`;
      m.style.color = lineColour(idx);
    }
  }
  for (const [key, m] of anomalyEls) {
    if (!seen.has(key)) {
      m.remove();
      anomalyEls.delete(key);
    }
  }
}

// -- the legend: one item per drawn curve, with its value under the cursor (else its last value)

interface LegendItem {
  item: HTMLElement;
  value: HTMLElement;
  expId: number | undefined;
}
let legendItems: LegendItem[] = [];
let legendKey = '';

function legendEntry(role: string, colour: string, label: string, tip: string, expId?: number, dashed = false): LegendItem {
  const item = el('span', `rl-legend-item rl-role-${role}`);
  item.dataset.role = role;
  if (expId !== undefined) {
    item.dataset.expId = String(expId);
  }
  item.title = tip;
  const swatch = el('span', dashed ? 'rl-swatch dashed' : 'rl-swatch');
  swatch.style.background = colour;
  const text = el('span', 'rl-legend-label', label);
  const value = el('span', 'rl-legend-value');
  item.append(swatch, text, value);
  if (role === 'selected' && expId !== undefined) {
    const x = button('rl-legend-remove', '×', `Remove #${expId} from the chart`);
    x.dataset.expId = String(expId);
    item.append(x);
  }
  return { item, value, expId };
}

function renderLegend(): void {
  const refIds = reference.ids ?? [];
  const key = `${refIds.join(',')}|${band.runs}|${planned.map((c) => `${c.expId}:${c.role}:${c.label}:${slotOf.get(c.expId) ?? ''}`).join(',')}|${theme.fg}`;
  if (key === legendKey) {
    return;
  }
  legendKey = key;
  const items: LegendItem[] = [];
  if (band.runs > 0) {
    const bandText = band.runs > 1 ? `mean, min–max of ${band.runs} runs` : 'one run';
    items.push(legendEntry('reference', theme.reference, `reference (${bandText})`, `the reference runs ${refIds.map((id) => `#${id}`).join(' ')}: the research head on its seeds`));
  }
  let running = 0;
  for (const c of planned) {
    const e = experiments.get(c.expId);
    const colour = c.role === 'selected' ? selectedColour(c.expId) : c.role === 'baseline' ? theme.reference : theme.palette[(running++ + 3) % theme.palette.length];
    const dashed = c.role === 'baseline' || (c.role === 'selected' && (slotOf.get(c.expId) ?? 0) >= theme.palette.length);
    const label = store.has(c.expId) ? c.label : `${c.label} (no curve)`;
    const warn = e ? warningText(e) : '';
    const tip = [e?.hypothesis ?? '', e ? `${statusCell(e).text} · ${deltaWords(e, direction)}` : '', warn].filter((s) => s).join('\n');
    items.push(legendEntry(c.role, colour, label, tip, c.expId, dashed));
  }
  legendItems = items;
  legend.replaceChildren(...items.map((i) => i.item));
  if (!planned.some((c) => c.role === 'selected')) {
    legend.append(el('span', 'rl-hint', band.runs ? 'Click rows (or a question) to overlay their curves on the reference.' : ''));
  }
  clearButton.disabled = view.selected.length === 0;
  clearButton.textContent = view.selected.length ? `Clear selection (${view.selected.length})` : 'Clear selection';
  lossSub.textContent = band.runs > 1 ? `band: min–max of ${band.runs} reference runs` : '';
  updateLegendValues(undefined);
}

legend.addEventListener('click', (ev) => {
  const x = (ev.target as HTMLElement).closest<HTMLElement>('.rl-legend-remove');
  const id = Number(x?.dataset.expId);
  if (x && Number.isInteger(id)) {
    setSelection(view.selected.filter((s) => s !== id));
  }
});

function lossText(y: number): string {
  return Math.abs(y) >= 100 ? y.toFixed(1) : y.toFixed(3);
}

/** Legend values at x (the cursor's), or each curve's last point when the cursor is away. */
function updateLegendValues(x: number | undefined): void {
  for (const li of legendItems) {
    let text = '';
    if (li.expId === undefined) {
      // the reference: the band's mean (and spread) at the cursor
      if (x !== undefined && grid.length) {
        const i = nearestIndex(grid, x);
        const m = band.mean[i];
        text = m === null || m === undefined ? '' : band.runs > 1 ? `${lossText(m)} (${lossText(band.lo[i] as number)}–${lossText(band.hi[i] as number)})` : lossText(m);
      }
    } else {
      const p = x === undefined ? store.last(li.expId) : store.nearest(li.expId, x);
      if (p) {
        // under the cursor: the loss and its step; else the last loss
        text = x === undefined || p.step === null ? lossText(p.y) : `${lossText(p.y)} (step ${p.step})`;
      }
    }
    if (li.value.textContent !== text) {
      li.value.textContent = text;
    }
  }
}

/** Whether the cursor is over the loss chart (its values then follow the cursor, not the stream). */
let hovering = false;

function onLossCursor(u: uPlot): void {
  const left = u.cursor.left ?? -1;
  hovering = left >= 0;
  if (left < 0) {
    cursorLine.textContent = legendItems.length ? 'the last point of each curve; hover the chart for the values at a point' : '';
    updateLegendValues(undefined);
    return;
  }
  const x = u.posToVal(left, 'x');
  cursorLine.textContent = `at ${(100 * x).toFixed(1)}% of the budget`;
  updateLegendValues(x);
}

// ---------------------------------------------------------------------------------- metric view

let metricIds: number[] = [];
let metricIndex = new Map<number, number>();
let metricYRange: [number, number] = [0, 1];
/** Points left off the metric view (far out: runs that barely trained). */
let metricOff = 0;

function classColour(c: MetricClass): string {
  return c === 'reference' ? theme.reference : c === 'kept' ? theme.kept : c === 'untrusted' ? theme.untrusted : theme.discarded;
}

const CLASS_LABEL: Record<MetricClass, string> = {
  reference: 'reference runs',
  kept: 'kept',
  discarded: 'not kept',
  untrusted: "can't be trusted / waits for a look",
};

function buildMetricPlot(width: number): uPlot {
  const series: uPlot.Series[] = [{ label: 'experiment' }];
  for (const c of METRIC_CLASSES) {
    series.push({
      label: CLASS_LABEL[c],
      stroke: classColour(c),
      fill: classColour(c),
      paths: () => null,
      points: { show: true, size: 7, width: 1, stroke: classColour(c), fill: withAlpha(classColour(c), 0.6) },
    });
  }
  const opts: uPlot.Options = {
    width,
    height: chartHeight(),
    series,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      x: { time: false, range: () => (metricIds.length ? [metricIds[0] - 1, metricIds[metricIds.length - 1] + 1] : [0, 1]) },
      y: { range: () => metricYRange },
    },
    axes: [
      { ...axisStyle('experiment'), values: (_u, splits) => splits.map((v) => (Number.isInteger(v) ? `#${v}` : '')) },
      { ...axisStyle(metricName), size: 64 },
    ],
    hooks: { drawAxes: [(u) => drawReference(u)], draw: [(u) => drawSelectedRings(u)], setCursor: [(u) => onMetricCursor(u)] },
  };
  metricHost.replaceChildren();
  const p = new uPlot(opts, [[], ...METRIC_CLASSES.map(() => [])] as uPlot.AlignedData, metricHost);
  p.over.addEventListener('click', () => {
    const idx = p.cursor.idx;
    const id = idx !== null && idx !== undefined ? metricIds[idx] : undefined;
    if (id !== undefined) {
      setSelection(toggleSelected(view.selected, id));
    }
  });
  return p;
}

/** Under the points: the reference ± σ band, the reference line, the keep threshold (dashed). */
function drawReference(u: uPlot): void {
  const { ctx } = u;
  const { left, width, top, height } = u.bbox;
  const value = reference.value;
  if (typeof value !== 'number') {
    return;
  }
  const y = (v: number) => u.valToPos(v, 'y', true);
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  if (typeof reference.sigma === 'number' && reference.sigma > 0) {
    const y1 = y(value + reference.sigma);
    const y2 = y(value - reference.sigma);
    ctx.fillStyle = withAlpha(theme.reference, 0.15);
    ctx.fillRect(left, Math.min(y1, y2), width, Math.abs(y2 - y1));
  }
  ctx.strokeStyle = theme.reference;
  ctx.lineWidth = 1.5 * dpr;
  ctx.beginPath();
  ctx.moveTo(left, y(value));
  ctx.lineTo(left + width, y(value));
  ctx.stroke();
  const keep = keepLine(value, reference.keepThreshold, direction);
  if (keep !== null) {
    ctx.strokeStyle = theme.kept;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.beginPath();
    ctx.moveTo(left, y(keep));
    ctx.lineTo(left + width, y(keep));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.restore();
}

function drawSelectedRings(u: uPlot): void {
  const { ctx } = u;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.lineWidth = 2 * dpr;
  for (const id of view.selected) {
    const e = experiments.get(id);
    if (!metricIndex.has(id) || !e || e.metric === null) {
      continue;
    }
    ctx.strokeStyle = selectedColour(id);
    ctx.beginPath();
    ctx.arc(u.valToPos(id, 'x', true), u.valToPos(e.metric, 'y', true), 7 * dpr, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.restore();
}

function onMetricCursor(u: uPlot): void {
  const idx = u.cursor.idx;
  const left = u.cursor.left ?? -1;
  const id = idx !== null && idx !== undefined && left >= 0 ? metricIds[idx] : undefined;
  const e = id !== undefined ? experiments.get(id) : undefined;
  if (!e) {
    metricTip.hidden = true;
    return;
  }
  const lines = [
    `#${e.id} · ${statusCell(e).text}${view.selected.includes(e.id) ? ' · selected' : ''}`,
    `${metricName} ${fmt(e.metric, digitsFor(e.sigma ?? reference.sigma))}`,
    (reference.ids ?? []).includes(e.id) ? 'a reference run' : deltaWords(e, direction),
    truncate(e.hypothesis, 60),
    'click: overlay its curve',
  ].filter((s) => s && s !== '—');
  metricTip.textContent = lines.join('\n');
  metricTip.hidden = false;
  const x = u.valToPos(e.id, 'x') + u.over.offsetLeft;
  const y = e.metric !== null ? u.valToPos(e.metric, 'y') + u.over.offsetTop : 0;
  const w = metricWidth;
  metricTip.style.left = `${Math.round(Math.min(Math.max(0, x + 12), Math.max(0, w - 240)))}px`;
  metricTip.style.top = `${Math.round(Math.max(0, y - 10))}px`;
}

function renderMetricLegend(): void {
  const items: HTMLElement[] = [];
  const dot = (colour: string, label: string) => {
    const i = el('span', 'rl-legend-item');
    const d = el('span', 'rl-dot');
    d.style.background = colour;
    i.append(d, document.createTextNode(label));
    return i;
  };
  const line = (colour: string, label: string, dashed: boolean, tip: string) => {
    const i = el('span', 'rl-legend-item');
    const s = el('span', dashed ? 'rl-swatch dashed' : 'rl-swatch');
    s.style.background = colour;
    i.append(s, document.createTextNode(label));
    i.title = tip;
    return i;
  };
  for (const c of METRIC_CLASSES) {
    items.push(dot(classColour(c), CLASS_LABEL[c]));
  }
  if (typeof reference.value === 'number') {
    const d = digitsFor(reference.sigma);
    const sigma = typeof reference.sigma === 'number' ? ` ± ${reference.sigma.toFixed(d)} (σ)` : '';
    items.push(line(theme.reference, `reference ${reference.value.toFixed(d)}${sigma}`, false, 'the mean of the head’s runs, the band ± σ of the noise'));
    const keep = keepLine(reference.value, reference.keepThreshold, direction);
    if (keep !== null) {
      items.push(line(theme.kept, `keep needs ${direction === 'minimize' ? '≤' : '≥'} ${keep.toFixed(d)}`, true, `the smallest improvement the judge can keep: ${fmt(reference.keepThreshold, d)} ${metricName} better than the reference`));
    }
  }
  if (metricOff) {
    const off = el('span', 'rl-legend-item rl-off', `${metricOff} far off the scale, not shown`);
    off.title = 'metrics beyond 5 interquartile ranges of the rest (a run that barely trained, a diverged one): see the table';
    items.push(off);
  }
  metricLegend.replaceChildren(...items);
}

function drawMetric(): void {
  const width = Math.max(200, Math.floor(metricWidth || window.innerWidth - 24));
  const pts = metricPoints(experiments.values(), reference.ids ?? []);
  metricIds = pts.ids;
  metricIndex = new Map(pts.ids.map((id, i) => [id, i]));
  const keep = keepLine(reference.value, reference.keepThreshold, direction);
  const sigma = typeof reference.sigma === 'number' ? reference.sigma : 0;
  const value = typeof reference.value === 'number' ? reference.value : null;
  const values = METRIC_CLASSES.flatMap((c) => pts.byClass[c]);
  const fit = metricRange(values, value === null ? [] : [value - sigma, value + sigma, keep]);
  metricYRange = fit?.range ?? [0, 1];
  metricOff = fit?.off ?? 0;
  metricEmpty.hidden = pts.ids.length > 0;
  if (!metricPlot) {
    metricPlot = buildMetricPlot(width);
  } else if (metricPlot.width !== width || metricPlot.height !== chartHeight()) {
    metricPlot.setSize({ width, height: chartHeight() });
  }
  const plot = metricPlot;
  plot.batch(() => {
    plot.setData([pts.ids, ...METRIC_CLASSES.map((c) => pts.byClass[c])] as uPlot.AlignedData);
  });
  renderMetricLegend();
  debug.metricDraws++;
  debug.metricPoints = pts.ids.length;
  metricBox.dataset.points = String(pts.ids.length);
  metricBox.dataset.off = String(metricOff);
  metricBox.dataset.reference = value === null ? '' : String(value);
  metricBox.dataset.keepLine = keep === null ? '' : String(keep);
}

// ---------------------------------------------------------------------------------- table

const rowEls = new Map<number, HTMLTableRowElement>();
let bestId: number | undefined;
let anchorId: number | undefined;

function markBest(): void {
  const id = typeof reference.bestId === 'number' ? reference.bestId : undefined;
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

function markSelectedRows(): void {
  const sel = new Set(view.selected);
  for (const [id, tr] of rowEls) {
    const on = sel.has(id);
    tr.classList.toggle('selected', on);
    tr.setAttribute('aria-selected', String(on));
    (tr.firstElementChild as HTMLElement).style.boxShadow = on ? `inset 4px 0 0 ${selectedColour(id)}` : '';
  }
  selectionNote.textContent = view.selected.length ? `${view.selected.length} overlaid: ${view.selected.map((id) => `#${id}`).join(' ')}` : '';
}

function setText(td: Element, text: string): void {
  if (td.textContent !== text) {
    td.textContent = text;
  }
}

function fillRow(tr: HTMLTableRowElement, e: PanelExperiment): void {
  const status = statusCell(e);
  tr.className = status.cls;
  const on = view.selected.includes(e.id);
  tr.classList.toggle('selected', on);
  tr.setAttribute('aria-selected', String(on));
  if (bestId === e.id) {
    tr.classList.add('best');
  }
  tr.title = rowTooltip(e);
  const c = tr.children;
  const digits = digitsFor(e.sigma ?? reference.sigma);
  setText(c[0], `#${e.id}`);
  (c[0] as HTMLElement).style.boxShadow = on ? `inset 4px 0 0 ${selectedColour(e.id)}` : '';
  setText(c[1], status.text);
  setText(c[2], fmt(e.metric, digits));
  setText(c[3], deltaWords(e, direction));
  (c[3] as HTMLElement).classList.toggle('worse', e.z !== null && e.z < 0);
  (c[3] as HTMLElement).classList.toggle('better', e.z !== null && e.z > 0);
  const reason = reasonWords(e);
  setText(c[4], reason);
  (c[4] as HTMLElement).title = [e.verdict ?? '', keepNeeds(e.tCrit)].filter((s) => s).join('\n') || reason;
  setText(c[5], sourceCell(e));
  setText(c[6], e.hypothesis);
  (c[6] as HTMLElement).title = e.hypothesis;
  setText(c[7], typeof e.steps === 'number' ? String(e.steps) : '—');
  setText(c[8], durationText(e.seconds));
  const q = c[9] as HTMLElement;
  setText(q, typeof e.question === 'number' ? `Q${e.question}` : '');
  q.title = typeof e.question === 'number' ? `Q${e.question}: ${questions.find((x) => x.id === e.question)?.text ?? ''}` : '';
  q.classList.toggle('link', typeof e.question === 'number');
  const warn = warningText(e);
  setText(c[10], warn ? '⚠' : '');
  (c[10] as HTMLElement).title = warn;
  const log = c[11].querySelector<HTMLButtonElement>('.rl-log');
  if (log) {
    log.disabled = e.hasLog === false;
  }
}

function makeRow(e: PanelExperiment): HTMLTableRowElement {
  const tr = el('tr');
  tr.dataset.expId = String(e.id);
  tr.tabIndex = 0;
  for (const col of COLUMNS) {
    const td = el('td', col.cls);
    td.dataset.col = col.key;
    tr.append(td);
  }
  const diff = button('rl-diff', 'diff', `Open #${e.id}'s diff`);
  diff.dataset.expId = String(e.id);
  const log = button('rl-log', 'log', `Open #${e.id}'s log`);
  log.dataset.expId = String(e.id);
  tr.lastElementChild?.append(diff, log);
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
  afterRows();
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
  afterRows();
}

function afterRows(): void {
  debug.experiments = experiments.size;
  table.dataset.rows = String(rowEls.size);
  tabExperiments.textContent = `Experiments (${experiments.size})`;
  setText(headCells.get('metric') as HTMLElement, metricName);
  setText(headCells.get('delta') as HTMLElement, `Δ ${metricName}`);
}

function rowOrder(): number[] {
  return [...tbody.children].map((r) => Number((r as HTMLElement).dataset.expId));
}

tbody.addEventListener('click', (ev) => {
  const target = ev.target as HTMLElement;
  const row = target.closest('tr');
  const id = row ? Number(row.dataset.expId) : NaN;
  if (!Number.isInteger(id)) {
    return;
  }
  const btn = target.closest('button');
  if (btn?.classList.contains('rl-log')) {
    vscode.postMessage({ type: 'openLog', id });
    return;
  }
  if (btn?.classList.contains('rl-diff')) {
    vscode.postMessage({ type: 'openExperiment', id });
    return;
  }
  if (target.closest('td.question.link')) {
    const qid = experiments.get(id)?.question;
    if (typeof qid === 'number') {
      showQuestion(qid);
    }
    return;
  }
  if (ev.shiftKey && anchorId !== undefined) {
    setSelection(addSelected(view.selected, rangeBetween(rowOrder(), anchorId, id)));
  } else {
    setSelection(toggleSelected(view.selected, id));
  }
  anchorId = id;
});
tbody.addEventListener('dblclick', (ev) => {
  const row = (ev.target as HTMLElement).closest('tr');
  const id = row ? Number(row.dataset.expId) : NaN;
  if (Number.isInteger(id) && !(ev.target as HTMLElement).closest('button')) {
    vscode.postMessage({ type: 'openExperiment', id });
  }
});
tbody.addEventListener('keydown', (ev) => {
  const row = (ev.target as HTMLElement).closest('tr');
  if (row && ev.target === row && (ev.key === 'Enter' || ev.key === ' ')) {
    ev.preventDefault();
    const id = Number(row.dataset.expId);
    setSelection(toggleSelected(view.selected, id));
    anchorId = id;
  }
});

// ---------------------------------------------------------------------------------- questions

function renderQuestions(): void {
  debug.questions = questions.length;
  const open = questions.filter((q) => q.status === 'open').length;
  tabQuestions.textContent = questions.length ? `Questions (${open} open of ${questions.length})` : 'Questions';
  if (!questions.length) {
    questionsBox.replaceChildren(
      el('div', 'rl-empty', 'No research questions yet. Ask one (sigmaloop ask "…", the Ask command, or a Questions section in program.md) with the result that would change your next decision: proposals then say which question they test.'),
    );
    return;
  }
  const sel = new Set(view.selected);
  const items = questions.map((q) => {
    const box = el('div', `rl-question status-${q.status.replace(/[^a-z]/g, '')}`);
    box.dataset.questionId = String(q.id);
    const head = el('div', 'rl-question-head');
    head.append(el('span', 'rl-question-id', `Q${q.id}`), el('span', 'rl-question-status', q.status), el('span', 'rl-question-text', q.text));
    const overlay = button('rl-question-select', q.experiments.length ? `Overlay its ${q.experiments.length} experiment${q.experiments.length === 1 ? '' : 's'}` : 'No experiments yet');
    overlay.dataset.questionId = String(q.id);
    overlay.disabled = !q.experiments.length;
    head.append(overlay);
    box.append(head);
    if (q.decision) {
      box.append(el('div', 'rl-question-decision', `Would change the decision: ${q.decision}`));
    }
    box.append(el('div', 'rl-question-verdict', q.verdict || (q.experiments.length ? '' : 'No experiment tests it yet.')));
    if (q.answer) {
      box.append(el('div', 'rl-question-answer', `Answer: ${q.answer}`));
    }
    const exps = el('div', 'rl-question-exps');
    for (const id of q.experiments) {
      const e = experiments.get(id);
      const digits = digitsFor(e?.sigma ?? reference.sigma);
      const effect = effectText(e?.effect, digits);
      const parts = [`#${id}`, e ? statusCell(e).text : '', effect];
      const chip = button('rl-question-exp', parts.filter((s) => s).join(' '), [e?.hypothesis ?? '', effect ? `improvement in ${metricName} (+ = better), ${Math.round(100 * (e?.effect?.level ?? 0.95))}% interval` : '', e ? deltaWords(e, direction) : ''].filter((s) => s && s !== '—').join('\n'));
      chip.dataset.expId = String(id);
      if (sel.has(id)) {
        chip.classList.add('selected');
        chip.style.borderColor = selectedColour(id);
      }
      exps.append(chip);
    }
    box.append(exps);
    return box;
  });
  questionsBox.replaceChildren(...items);
}

questionsBox.addEventListener('click', (ev) => {
  const target = ev.target as HTMLElement;
  const chip = target.closest<HTMLElement>('.rl-question-exp');
  if (chip) {
    const id = Number(chip.dataset.expId);
    if (Number.isInteger(id)) {
      setSelection(toggleSelected(view.selected, id));
    }
    return;
  }
  const box = target.closest<HTMLElement>('.rl-question');
  const q = questions.find((x) => x.id === Number(box?.dataset.questionId));
  if (q && q.experiments.length && (target.closest('.rl-question-select') || target.closest('.rl-question-head'))) {
    // a question's experiments replace the selection: its answer, on screen
    setSelection(q.experiments.slice(-MAX_SELECTED));
  }
});

function showQuestion(qid: number): void {
  setTab('questions');
  const box = questionsBox.querySelector<HTMLElement>(`.rl-question[data-question-id="${qid}"]`);
  if (box) {
    box.scrollIntoView({ block: 'nearest' });
    box.classList.add('flash');
    window.setTimeout(() => box.classList.remove('flash'), 1200);
  }
}

// ---------------------------------------------------------------------------------- redraw

/**
 * Before any data, the page runs its data path on a synthetic scene (a structured clone of
 * Float64Arrays validated, stored, gridded, banded; points for the metric view) and its charts
 * draw one synthetic frame, cleared in the same task: nothing reaches the screen or the page's
 * state, and the first real draw does not pay for compiling those paths. The data part runs
 * first, so the JIT's background compiles finish while the page builds its DOM and charts.
 */
function warmUpData(): { row: (number | null)[]; band: Band; grid: number[] } {
  const n = 10_000;
  const xs = Float64Array.from({ length: n }, (_, i) => (i + 1) / n);
  const ys = xs.map((x, i) => 3 * Math.exp(-3 * x) + 0.01 * (i % 7));
  const buckets = 256;
  const fake = (id: number): PanelExperiment => ({ id, status: 'discarded', source: 'tune', hypothesis: 'h', metric: 1, delta: 0.01, sigma: 0.01, z: -1, confirms: null, reason: 'worse', warnings: {}, effect: null, steps: 1, seconds: 1, tCrit: 2, hasLog: true, question: null });
  const scratch = new CurveStore();
  let row: (number | null)[] = [];
  let band: Band = { mean: [], lo: [], hi: [], runs: 0 };
  // rounds enough for the JIT to optimize the loops, not only to compile them
  for (let r = 0; r < 16; r++) {
    const msg: unknown = structuredClone({ type: 'init', experiments: [fake(1), fake(2)], curves: [{ expId: r, xs, ys, steps: xs }], direction: 'minimize', metric: 'm' });
    if (isHostToPanel(msg) && msg.type === 'init') {
      scratch.set(msg.curves[0]);
      scratch.append({ expId: r, xs: [1.1], ys: [1], steps: [1] });
      metricPoints(msg.experiments, [1]);
    }
    row = scratch.gridded(r, buckets, 1.2);
    const prev = scratch.raw(Math.max(0, r - 1));
    const cur = scratch.raw(r);
    if (prev && cur) {
      band = referenceBand([prev, cur], buckets, 1.2);
    }
    scratch.delete(r - 1);
  }
  return { row, band, grid: gridX(buckets, 1.2) };
}

function warmUpCharts(loss: uPlot, metric: uPlot, scene: { row: (number | null)[]; band: Band; grid: number[] }): void {
  const b = scene.band;
  const rows: (number | null)[][] = Array.from({ length: SERIES - 1 }, (_, i) => (i === REF_MEAN - 1 ? b.mean : i === REF_HI - 1 ? b.hi : i === REF_LO - 1 ? b.lo : scene.row));
  for (let r = 0; r < 2; r++) {
    loss.batch(() => {
      for (let i = 1; i < SERIES; i++) {
        loss.setSeries(i, { show: true });
      }
      loss.setData([scene.grid, ...rows] as uPlot.AlignedData);
    });
  }
  loss.batch(() => {
    for (let i = 1; i < SERIES; i++) {
      loss.setSeries(i, { show: false });
    }
    loss.setData([[], ...Array.from({ length: SERIES - 1 }, () => [])] as uPlot.AlignedData);
  });
  const ids = Array.from({ length: 200 }, (_, i) => i);
  metric.batch(() => metric.setData([ids, ...METRIC_CLASSES.map((_, c) => ids.map((i) => (i % 4 === c ? 1 + i / 1000 : null)))] as uPlot.AlignedData));
  metric.batch(() => metric.setData([[], ...METRIC_CLASSES.map(() => [])] as uPlot.AlignedData));
}

const dirty = { loss: true, metric: true, legend: true, table: false };
let pendingSince: number | undefined;
let frameRequested = false;

function pushCapped(list: number[], v: number): void {
  list.push(v);
  if (list.length > 5000) {
    list.splice(0, list.length - 5000);
  }
}

let tableFrame = 0;

/**
 * Curves no longer drawn are dropped (a long session selects many): the host drops them too and
 * sends them again when they are wanted. Running trials' curves stay (the host keeps streaming them).
 */
function forgetCurves(): void {
  const keep = new Set(reference.ids ?? []);
  for (const c of planned) {
    keep.add(c.expId);
  }
  for (const id of store.ids()) {
    if (!keep.has(id) && experiments.get(id)?.status !== 'running') {
      store.delete(id);
    }
  }
}
/** Milliseconds spent on messages since the last redraw. */
let messageMs = 0;

/** The whole table and the questions, from scratch (after an init). */
function buildTable(): void {
  tableFrame = 0;
  dirty.table = false;
  const t = performance.now();
  renderTable();
  markBest();
  markSelectedRows();
  renderQuestions();
  debug.phases.table = performance.now() - t;
  debug.tableBuilt = performance.now();
}

/** One frame's work: re-plan the curves, then redraw what changed (coalesced per animation frame). */
function redraw(): void {
  frameRequested = false;
  const t0 = performance.now();
  planned = planCurves(experiments, view.selected, reference.ids ?? [], MAX_RUNNING);
  forgetCurves();
  debug.phases.select = performance.now() - t0;
  if (dirty.loss) {
    dirty.loss = false;
    drawLoss();
  }
  if (dirty.legend || dirty.loss) {
    dirty.legend = false;
    renderLegend();
    if (!hovering) {
      // the running curves' last points move on
      updateLegendValues(undefined);
    }
  }
  const t1 = performance.now();
  if (dirty.metric) {
    dirty.metric = false;
    drawMetric();
  }
  debug.phases.metric = performance.now() - t1;
  if (dirty.table && !tableFrame) {
    tableFrame = requestAnimationFrame(buildTable);
  }
  const now = performance.now();
  debug.lastDrawEnd = now;
  debug.lastDrawMs = now - t0;
  pushCapped(debug.updateTimes, debug.lastDrawMs);
  pushCapped(debug.frameWork, debug.lastDrawMs + messageMs);
  messageMs = 0;
  if (pendingSince !== undefined) {
    pushCapped(debug.latencies, now - pendingSince);
    pendingSince = undefined;
  }
}

function schedule(): void {
  if (pendingSince === undefined) {
    pendingSince = performance.now();
  }
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(redraw);
  }
}

// ---------------------------------------------------------------------------------- messages

function applyCurve(c: PanelCurve, replace: boolean): void {
  if (replace) {
    store.set(c);
  } else {
    store.append(c);
  }
}

function setTitles(): void {
  metricTitle.textContent = `${metricName} by experiment (${direction === 'minimize' ? 'lower' : 'higher'} is better)`;
}

function handle(msg: HostToPanel): void {
  switch (msg.type) {
    case 'init':
      if (metricPlot && msg.metric !== metricName) {
        // the metric's name is the y axis label: a new name rebuilds the chart
        metricPlot.destroy();
        metricPlot = undefined;
      }
      direction = msg.direction;
      metricName = msg.metric;
      setTitles();
      if (msg.view) {
        view = readPersistedState(msg.view);
        vscode.setState(view);
        debug.selected = [...view.selected];
        debug.tab = view.tab;
      }
      assignSlots();
      applyTab();
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
      // the table is built in the frame after the charts' (the charts come first on screen)
      dirty.table = true;
      // the host learns the page's own selection (a reload) as soon as the page has data
      if (!msg.view) {
        vscode.postMessage({ type: 'view', view });
      }
      dirty.loss = dirty.metric = dirty.legend = true;
      break;
    case 'experiments': {
      let planChange = false;
      for (const e of msg.experiments) {
        const prev = experiments.get(e.id);
        if (!prev || prev.status !== e.status || prev.hypothesis !== e.hypothesis) {
          planChange = true;
        }
        experiments.set(e.id, e);
      }
      updateRows(msg.experiments);
      if (msg.experiments.some((e) => questions.some((q) => q.experiments.includes(e.id)))) {
        renderQuestions();
      }
      dirty.metric = true;
      dirty.legend = true;
      dirty.loss = dirty.loss || planChange;
      break;
    }
    case 'curve':
      applyCurve(msg.curve, msg.replace);
      dirty.loss = true;
      break;
    case 'serverState':
      debug.serverState = msg.state;
      stateLine.textContent = msg.state === 'running' ? '' : `server ${msg.state}`;
      return;
    case 'reference': {
      reference = { text: msg.text, advice: msg.advice, value: msg.value, sigma: msg.sigma, keepThreshold: msg.keepThreshold, ids: msg.ids, bestId: msg.bestId };
      referenceLine.textContent = msg.text;
      adviceLine.textContent = msg.advice ?? '';
      adviceLine.hidden = !msg.advice;
      markBest();
      for (const [id, tr] of rowEls) {
        const e = experiments.get(id);
        if (e) {
          fillRow(tr, e);
        }
      }
      dirty.loss = dirty.metric = dirty.legend = true;
      break;
    }
    case 'questions':
      questions = msg.questions;
      renderQuestions();
      return;
    case 'select':
      setTab('experiments');
      setSelection(addSelected(view.selected, msg.ids));
      rowEls.get(msg.ids[msg.ids.length - 1])?.scrollIntoView({ block: 'nearest' });
      return;
  }
  schedule();
}

window.addEventListener('message', (ev: MessageEvent) => {
  const msg: unknown = ev.data;
  const t0 = performance.now();
  try {
    onMessage(msg, t0);
  } finally {
    messageMs += performance.now() - t0;
  }
});

function onMessage(msg: unknown, t0: number): void {
  const valid = isHostToPanel(msg);
  debug.phases[`validate_${valid ? msg.type : 'rejected'}`] = performance.now() - t0;
  if (!valid) {
    debug.rejectedMessages++;
    return;
  }
  debug.messages++;
  try {
    const t = performance.now();
    handle(msg);
    debug.phases[`handle_${msg.type}`] = performance.now() - t;
  } catch (err) {
    vscode.postMessage({ type: 'error', message: String(err instanceof Error ? (err.stack ?? err.message) : err) });
  }
}

// -- sizes: each chart follows its box (a resize redraws after 50 ms of quiet)

let resizeTimer: number | undefined;
function observeWidth(box: HTMLElement, set: (w: number) => void, get: () => number, mark: () => void): void {
  new ResizeObserver((entries) => {
    const w = Math.floor(entries[entries.length - 1].contentRect.width);
    if (w === get() || w === 0) {
      return;
    }
    const first = get() === 0;
    set(w);
    mark();
    window.clearTimeout(resizeTimer);
    if (first) {
      schedule();
    } else {
      resizeTimer = window.setTimeout(() => schedule(), 50);
    }
  }).observe(box);
}
observeWidth(
  chartBox,
  (w) => (lossWidth = w),
  () => lossWidth,
  () => (dirty.loss = true),
);
observeWidth(
  metricBox,
  (w) => (metricWidth = w),
  () => metricWidth,
  () => (dirty.metric = true),
);

// the charts exist (empty) before the data: their construction is off the first draw's path
setTitles();
assignSlots();
applyTab();
renderQuestions();
// at their boxes' widths (one layout now, at startup): the first real draw resizes nothing
lossWidth = Math.floor(chartBox.getBoundingClientRect().width);
metricWidth = Math.floor(metricBox.getBoundingClientRect().width);
lossPlot = buildLossPlot(Math.max(200, lossWidth || window.innerWidth - 24));
metricPlot = buildMetricPlot(Math.max(200, metricWidth || Math.floor((window.innerWidth - 24) / 2)));
warmUpCharts(lossPlot, metricPlot, warmScene);
debug.startupMs = performance.now() - scriptStart;
debug.ready = true;
vscode.postMessage({ type: 'ready' });
