// Typed contracts shared by the extension host and the webview (no `vscode` import here: the
// webview bundle and the unit tests import this file too).
//
// 1. The wire shapes the language server sends (docs/protocol.md; camelCase).
// 2. The messages between the extension host and the loss panel webview, with validators both
//    sides run on whatever arrives (a webview message is untrusted input to the host, and the
//    host's messages are checked by the webview before they touch the DOM).

// ---------------------------------------------------------------------------------------------
// Server wire shapes: generated from the server's schema (server/sigmaloop/lsp/protocol.py →
// protocol.gen.ts by scripts/gen_protocol.py; a test fails when they drift). The client imports
// them from here only.

import type { Crash, Direction, DoneParams, ExperimentRecord, LoopStatus, ProgressPoint, QuestionState, TrialProgressParams } from './protocol.gen';

export type {
  AdoptResult,
  BaselineStarted,
  BestState,
  CalibrationState,
  Commands,
  Crash,
  Direction,
  ExperimentParams,
  ExperimentRecord,
  ExperimentsParams,
  ExperimentsResult,
  ExperimentWithCurve,
  InitializationOptions,
  LlmSettings,
  LoopStarted,
  LoopStatus,
  NotificationParams,
  Phase,
  ProgressPoint,
  ProposerKind,
  Reason,
  ReferenceState,
  RejectParams,
  Requests,
  Settings,
  ShowExperimentResult,
  State,
  Status,
  StopExperimentResult,
  StopLoopResult,
  TrialProgressParams,
} from './protocol.gen';
export { COMMANDS, Methods } from './protocol.gen';

export type CrashWire = Crash;

/** An experiment record as received: read tolerantly (only id, status and source are certain). */
export type ExperimentWire = Omit<Partial<ExperimentRecord>, 'id' | 'status' | 'source'> & {
  id: number;
  status: string;
  source: string;
  [key: string]: unknown;
};

export type ProgressRecordWire = ProgressPoint;

/** `sigmaloop/experimentUpdated` params: the experiment itself, or wrapped. */
export type ExperimentUpdatedParams = ExperimentWire | { experiment: ExperimentWire };

/** @deprecated `sigmaloop/loopState` is gone: the loop is `State.loop` in `sigmaloop/state`. */
export type LoopStateParams = Partial<LoopStatus> & { running: boolean; message?: string };

/** The loop's part of the state (the generated name is the engine's `LoopStatus`). */
export type LoopState = LoopStatus;

export const FINISHED_STATUSES = new Set(['rejected', 'kept', 'discarded', 'crashed', 'timeout', 'pruned', 'over_budget', 'tampered']);
/** Results that can't be trusted: never shown like a keep. */
export const UNTRUSTED_STATUSES = new Set(['tampered', 'over_budget']);
/** `evaluator` of a run scored from the number its own script printed (no fixed evaluator). */
export const SELF_REPORTED = 'self-reported';

/** An implausibly large gain the judge held back: kept only if the researcher accepts its result. */
export function awaitsReview(e: { status: string; reason?: unknown }): boolean {
  return e.status === 'discarded' && e.reason === 'implausible';
}
export const ACTIVE_STATUSES = new Set(['accepted', 'queued', 'running']);

export function unwrapExperiment(params: unknown): ExperimentWire | undefined {
  if (!isObject(params)) {
    return undefined;
  }
  const inner = isObject(params.experiment) ? params.experiment : params;
  if (typeof inner.id !== 'number' || typeof inner.status !== 'string') {
    return undefined;
  }
  return inner as ExperimentWire;
}

export function parseTrialProgress(params: unknown): TrialProgressParams | undefined {
  if (!isObject(params)) {
    return undefined;
  }
  const expId = typeof params.expId === 'number' ? params.expId : params.exp_id;
  if (typeof expId !== 'number' || !Array.isArray(params.records)) {
    return undefined;
  }
  const records: ProgressRecordWire[] = [];
  for (const r of params.records) {
    if (isObject(r) && typeof r.step === 'number') {
      records.push({
        ...r,
        step: r.step,
        t: typeof r.t === 'number' ? r.t : 0,
        frac: typeof r.frac === 'number' ? r.frac : 0,
        loss: typeof r.loss === 'number' && Number.isFinite(r.loss) ? r.loss : null,
      });
    }
  }
  return { expId, records };
}

/** `sigmaloop/done` params (a baseline or a loop from the editor ended), checked. */
export function parseDone(v: unknown): DoneParams | undefined {
  if (!isObject(v)) {
    return undefined;
  }
  return (v.what === 'baseline' || v.what === 'loop') && typeof v.message === 'string' ? { what: v.what, message: v.message } : undefined;
}

// ---------------------------------------------------------------------------------------------
// Host <-> panel messages.

/** An experiment's effect on the metric: POSITIVE = BETTER in either direction, with its interval. */
export interface PanelEffect {
  better: number;
  low: number;
  high: number;
  /** Confidence level of [low, high] (0.95). */
  level: number;
}

/** The slice of an experiment the panel shows (strings are rendered as text, never as HTML). */
export interface PanelExperiment {
  id: number;
  status: string;
  source: string;
  hypothesis: string;
  metric: number | null;
  /** metric - paired reference (its sign depends on the direction: read it through `deltaWords`). */
  delta: number | null;
  sigma: number | null;
  /** Improvement in units of σ: > 0 is better. */
  z: number | null;
  confirms: number | null;
  /** Why it ended as it did (`Reason`); optional: older hosts and the bench leave it out. */
  reason?: string;
  /** "prepare:<blob>" | "self-reported" | "" (optional, like reason). */
  evaluator?: string;
  /** The server's one-line verdict for people ("0.037 bpb worse, 0.7σ …"). */
  verdict?: string;
  /** The researcher's reason for a rejection (a proposal or a result). */
  rejectionReason?: string;
  /** The research question it tests. */
  question?: number | null;
  /** Warning code → one sentence ("barely_trained", "step_count"). */
  warnings?: Record<string, string>;
  effect?: PanelEffect | null;
  /** Optimizer steps (the trainer's summary `num_steps`). */
  steps?: number | null;
  /** Wall seconds of the trial (timings.wall, else the summary's training_seconds). */
  seconds?: number | null;
  /** The z a keep needed (the verdict's numbers.t_crit). */
  tCrit?: number | null;
  /** Whether the record has a log the editor can open (`sigmaloop.openLog`). */
  hasLog?: boolean;
}

/** A loss-curve anomaly (sigmaloop.anomaly.detect over the journal's curve). */
export interface PanelAnomaly {
  kind: string;
  frac: number;
  step: number;
  message: string;
  /** The researcher looked and dismissed it (sigmaloop.dismissAnomaly): drawn faded. */
  dismissed?: boolean;
  /** Why they dismissed it ("" when they gave no reason). */
  dismissedReason?: string;
}

/**
 * The reference of the panel: the line "val_bpb 2.1234 ± 0.0123 (3 seeds) · keeps ≥ 0.035 (1.6%)"
 * with advice, and (optional: older hosts and tests send the text alone) the numbers the charts
 * draw: the reference runs (their curves make the band), the keep threshold and the best.
 */
export interface PanelReference {
  /** "" before a baseline. */
  text: string;
  /** What would lower the keep threshold, when it is large against the metric. */
  advice: string | null;
  value?: number | null;
  sigma?: number | null;
  /** The smallest improvement the judge can keep, in metric units. */
  keepThreshold?: number | null;
  /** The reference runs' experiment ids. */
  ids?: number[];
  /** The best reference's experiment (★ in the table). */
  bestId?: number | null;
}

/** A research question as the panel lists it: the state's `QuestionState`. */
export type PanelQuestion = QuestionState;

/**
 * One curve as parallel arrays: x (fraction of the time budget, 0..1) and loss; `steps` (the
 * optimizer step of each point) and `anomalies` when the host has them.
 */
export interface CurveData {
  expId: number;
  xs: number[];
  ys: number[];
  steps?: number[];
  anomalies?: PanelAnomaly[];
}

/**
 * Numbers as the panel receives them: Float64Array from the host (VS Code carries typed arrays to
 * a webview as raw bytes: no JSON, no per-number parse or check), plain arrays from tests.
 */
export type NumberColumn = number[] | Float64Array;

/** A curve on its way to the panel. */
export interface PanelCurve {
  expId: number;
  xs: NumberColumn;
  ys: NumberColumn;
  steps?: NumberColumn;
  anomalies?: PanelAnomaly[];
}

/** The host's curve as the panel takes it: its columns as Float64Array. */
export function packCurve(c: CurveData): PanelCurve {
  const out: PanelCurve = { expId: c.expId, xs: Float64Array.from(c.xs), ys: Float64Array.from(c.ys) };
  if (c.steps && c.steps.length === c.xs.length) {
    out.steps = Float64Array.from(c.steps);
  }
  if (c.anomalies) {
    out.anomalies = c.anomalies;
  }
  return out;
}

export type PanelTab = 'experiments' | 'questions';

/** What the panel keeps across close / reopen (the host) and reloads (the webview's setState). */
export interface PanelPersistedState {
  version: 2;
  /** Experiments whose curves are overlaid on the reference, in the order they were selected. */
  selected: number[];
  tab: PanelTab;
}

/** At most this many experiments are overlaid (the oldest selection gives way). */
export const MAX_SELECTED = 20;

export type HostToPanel =
  | {
      type: 'init';
      experiments: PanelExperiment[];
      curves: PanelCurve[];
      direction: Direction;
      metric: string;
      /** The selection and tab the host kept (absent: the page keeps its own). */
      view?: PanelPersistedState;
    }
  | { type: 'experiments'; experiments: PanelExperiment[] }
  | { type: 'curve'; curve: PanelCurve; replace: boolean }
  | { type: 'serverState'; state: string }
  | ({ type: 'reference' } & PanelReference)
  | { type: 'questions'; questions: PanelQuestion[] }
  /** Overlay these experiments' curves (added to the selection) on the experiments tab: "Show curve of #N". */
  | { type: 'select'; ids: number[] };

export type PanelToHost =
  | { type: 'ready' }
  | { type: 'openExperiment'; id: number }
  | { type: 'openLog'; id: number }
  | { type: 'view'; view: PanelPersistedState }
  | { type: 'error'; message: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isFloat64Array(v: unknown): v is Float64Array {
  return Object.prototype.toString.call(v) === '[object Float64Array]';
}

function isNumArray(v: unknown): v is number[] {
  if (!Array.isArray(v)) {
    return false;
  }
  // a plain loop: curves are long (10k points), and this runs on every one that arrives
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== 'number') {
      return false;
    }
  }
  return true;
}

function isNullableNum(v: unknown): boolean {
  return v === null || typeof v === 'number';
}

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const optional = (v: unknown, check: (x: unknown) => boolean): boolean => v === undefined || check(v);
const isString = (v: unknown): boolean => typeof v === 'string';
const isNullableId = (v: unknown): boolean => v === null || isId(v);

function isStringRecord(v: unknown): v is Record<string, string> {
  return isObject(v) && Object.values(v).every((x) => typeof x === 'string');
}

function isEffect(v: unknown): v is PanelEffect {
  return isObject(v) && typeof v.better === 'number' && typeof v.low === 'number' && typeof v.high === 'number' && typeof v.level === 'number';
}

function isAnomaly(v: unknown): v is PanelAnomaly {
  return (
    isObject(v) &&
    typeof v.kind === 'string' &&
    typeof v.frac === 'number' &&
    typeof v.step === 'number' &&
    typeof v.message === 'string' &&
    optional(v.dismissed, (x) => typeof x === 'boolean') &&
    optional(v.dismissedReason, isString)
  );
}

export function isPanelExperiment(v: unknown): v is PanelExperiment {
  return (
    isObject(v) &&
    typeof v.id === 'number' &&
    typeof v.status === 'string' &&
    typeof v.source === 'string' &&
    typeof v.hypothesis === 'string' &&
    isNullableNum(v.metric) &&
    isNullableNum(v.delta) &&
    isNullableNum(v.sigma) &&
    isNullableNum(v.z) &&
    isNullableNum(v.confirms) &&
    optional(v.reason, isString) &&
    optional(v.evaluator, isString) &&
    optional(v.verdict, isString) &&
    optional(v.rejectionReason, isString) &&
    optional(v.question, isNullableId) &&
    optional(v.warnings, isStringRecord) &&
    optional(v.effect, (x) => x === null || isEffect(x)) &&
    optional(v.steps, isNullableNum) &&
    optional(v.seconds, isNullableNum) &&
    optional(v.tCrit, isNullableNum) &&
    optional(v.hasLog, (x) => typeof x === 'boolean')
  );
}

/** A Float64Array (its type is the check) or an array of numbers. */
function isColumn(v: unknown): v is NumberColumn {
  return isFloat64Array(v) || isNumArray(v);
}

export function isPanelCurve(v: unknown): v is PanelCurve {
  return (
    isObject(v) &&
    typeof v.expId === 'number' &&
    isColumn(v.xs) &&
    isColumn(v.ys) &&
    v.xs.length === v.ys.length &&
    optional(v.steps, (s) => isColumn(s) && s.length === (v.xs as NumberColumn).length) &&
    optional(v.anomalies, (a) => Array.isArray(a) && a.every(isAnomaly))
  );
}

export function isPanelQuestion(v: unknown): v is PanelQuestion {
  return (
    isObject(v) &&
    isId(v.id) &&
    typeof v.text === 'string' &&
    typeof v.decision === 'string' &&
    typeof v.status === 'string' &&
    typeof v.answer === 'string' &&
    Array.isArray(v.experiments) &&
    v.experiments.every(isId) &&
    typeof v.verdict === 'string'
  );
}

export function isPersistedState(v: unknown): v is PanelPersistedState {
  return (
    isObject(v) &&
    v.version === 2 &&
    Array.isArray(v.selected) &&
    v.selected.length <= MAX_SELECTED &&
    v.selected.every(isId) &&
    (v.tab === 'experiments' || v.tab === 'questions')
  );
}

/** Whatever getState / the serializer hands back → a valid state (version 1's one row becomes the selection). */
export function readPersistedState(v: unknown): PanelPersistedState {
  if (isPersistedState(v)) {
    return { version: 2, selected: [...new Set(v.selected)], tab: v.tab };
  }
  const selected = isObject(v) && v.version === 1 && isId(v.selectedId) ? [v.selectedId] : [];
  return { version: 2, selected, tab: 'experiments' };
}

function isReference(v: Record<string, unknown>): boolean {
  return (
    typeof v.text === 'string' &&
    (v.advice === null || typeof v.advice === 'string') &&
    optional(v.value, isNullableNum) &&
    optional(v.sigma, isNullableNum) &&
    optional(v.keepThreshold, isNullableNum) &&
    optional(v.ids, (x) => Array.isArray(x) && x.every(isId)) &&
    optional(v.bestId, isNullableId)
  );
}

export function isHostToPanel(v: unknown): v is HostToPanel {
  if (!isObject(v) || typeof v.type !== 'string') {
    return false;
  }
  switch (v.type) {
    case 'init':
      return (
        Array.isArray(v.experiments) &&
        v.experiments.every(isPanelExperiment) &&
        Array.isArray(v.curves) &&
        v.curves.every(isPanelCurve) &&
        (v.direction === 'minimize' || v.direction === 'maximize') &&
        typeof v.metric === 'string' &&
        optional(v.view, isPersistedState)
      );
    case 'experiments':
      return Array.isArray(v.experiments) && v.experiments.every(isPanelExperiment);
    case 'curve':
      return isPanelCurve(v.curve) && typeof v.replace === 'boolean';
    case 'serverState':
      return typeof v.state === 'string';
    case 'reference':
      return isReference(v);
    case 'questions':
      return Array.isArray(v.questions) && v.questions.every(isPanelQuestion);
    case 'select':
      return Array.isArray(v.ids) && v.ids.length > 0 && v.ids.length <= MAX_SELECTED && v.ids.every(isId);
    default:
      return false;
  }
}

export function isPanelToHost(v: unknown): v is PanelToHost {
  if (!isObject(v) || typeof v.type !== 'string') {
    return false;
  }
  switch (v.type) {
    case 'ready':
      return true;
    case 'openExperiment':
    case 'openLog':
      return isId(v.id);
    case 'view':
      return isPersistedState(v.view);
    case 'error':
      return typeof v.message === 'string';
    default:
      return false;
  }
}

const finite = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** A number from a `Record<string, number>` field of the record (summary, timings, numbers). */
function field(rec: unknown, key: string): number | null {
  return isObject(rec) ? finite(rec[key]) : null;
}

function readEffect(v: unknown): PanelEffect | null {
  if (!isObject(v)) {
    return null;
  }
  const better = finite(v.better);
  const low = finite(v.low);
  const high = finite(v.high);
  return better !== null && low !== null && high !== null ? { better, low, high, level: finite(v.level) ?? 0.95 } : null;
}

export function toPanelExperiment(e: ExperimentWire): PanelExperiment {
  const warnings: Record<string, string> = {};
  if (isObject(e.warnings)) {
    for (const [k, v] of Object.entries(e.warnings)) {
      if (typeof v === 'string') {
        warnings[k] = v;
      }
    }
  }
  return {
    id: e.id,
    status: String(e.status),
    source: typeof e.source === 'string' ? e.source : '',
    hypothesis: typeof e.hypothesis === 'string' ? e.hypothesis : '',
    metric: finite(e.metric),
    delta: finite(e.delta),
    sigma: finite(e.sigma),
    z: finite(e.z),
    confirms: finite(e.confirms),
    reason: typeof e.reason === 'string' ? e.reason : '',
    evaluator: typeof e.evaluator === 'string' ? e.evaluator : '',
    verdict: typeof e.verdict === 'string' ? e.verdict : '',
    rejectionReason: typeof e.rejectionReason === 'string' ? e.rejectionReason : '',
    question: isId(e.question) ? e.question : null,
    warnings,
    effect: readEffect(e.effect),
    steps: field(e.summary, 'num_steps'),
    seconds: field(e.timings, 'wall') ?? field(e.summary, 'training_seconds'),
    tCrit: field(e.numbers, 't_crit'),
    hasLog: typeof e.logPath === 'string' && e.logPath !== '',
  };
}

/**
 * Progress records → a curve (x = fraction of budget; records without a loss are skipped), with
 * the curve's anomalies when the server found any (`sigmaloop/experiments` with `curves: true`).
 */
export function recordsToCurve(expId: number, records: ProgressRecordWire[], anomalies?: unknown): CurveData {
  const xs: number[] = [];
  const ys: number[] = [];
  const steps: number[] = [];
  for (const r of records) {
    if (typeof r.loss === 'number' && Number.isFinite(r.loss)) {
      xs.push(typeof r.frac === 'number' && Number.isFinite(r.frac) ? r.frac : r.t);
      ys.push(r.loss);
      steps.push(typeof r.step === 'number' && Number.isFinite(r.step) ? r.step : 0);
    }
  }
  const curve: CurveData = { expId, xs, ys, steps };
  if (Array.isArray(anomalies)) {
    curve.anomalies = anomalies
      .filter(isAnomaly)
      .map((a) => ({ kind: a.kind, frac: a.frac, step: a.step, message: a.message, ...(a.dismissed ? { dismissed: true, dismissedReason: a.dismissedReason ?? '' } : {}) }));
  }
  return curve;
}
