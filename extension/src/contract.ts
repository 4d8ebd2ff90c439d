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

import type { Crash, Direction, ExperimentRecord, LoopStatus, ProgressPoint, TrialProgressParams } from './protocol.gen';

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

// ---------------------------------------------------------------------------------------------
// Host <-> panel messages.

/** The slice of an experiment the panel shows (strings are rendered as text, never as HTML). */
export interface PanelExperiment {
  id: number;
  status: string;
  source: string;
  hypothesis: string;
  metric: number | null;
  delta: number | null;
  sigma: number | null;
  z: number | null;
  confirms: number | null;
  /** Why it ended as it did (`Reason`); optional: older hosts and the bench leave it out. */
  reason?: string;
  /** "prepare:<blob>" | "self-reported" | "" (optional, like reason). */
  evaluator?: string;
}

/** The reference line of the panel: the reference ± σ with what the judge can keep, and advice. */
export interface PanelReference {
  /** "val_bpb 2.1234 ± 0.0123 (3 seeds) · keeps ≥ 0.035 (1.6%)", or "" before a baseline. */
  text: string;
  /** What would lower the keep threshold, when it is large against the metric. */
  advice: string | null;
}

/** One curve as two parallel arrays: x (fraction of the time budget, 0..1) and loss. */
export interface CurveData {
  expId: number;
  xs: number[];
  ys: number[];
}

export type HostToPanel =
  | {
      type: 'init';
      experiments: PanelExperiment[];
      curves: CurveData[];
      direction: Direction;
      metric: string;
    }
  | { type: 'experiments'; experiments: PanelExperiment[] }
  | { type: 'curve'; curve: CurveData; replace: boolean }
  | { type: 'serverState'; state: string }
  | ({ type: 'reference' } & PanelReference);

export type PanelToHost =
  | { type: 'ready' }
  | { type: 'openExperiment'; id: number }
  | { type: 'error'; message: string };

/** What the webview keeps with setState for the serializer (small: no curves). */
export interface PanelPersistedState {
  version: 1;
  selectedId: number | null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNumArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number');
}

function isNullableNum(v: unknown): boolean {
  return v === null || typeof v === 'number';
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
    (v.reason === undefined || typeof v.reason === 'string') &&
    (v.evaluator === undefined || typeof v.evaluator === 'string')
  );
}

export function isCurveData(v: unknown): v is CurveData {
  return isObject(v) && typeof v.expId === 'number' && isNumArray(v.xs) && isNumArray(v.ys) && v.xs.length === v.ys.length;
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
        v.curves.every(isCurveData) &&
        (v.direction === 'minimize' || v.direction === 'maximize') &&
        typeof v.metric === 'string'
      );
    case 'experiments':
      return Array.isArray(v.experiments) && v.experiments.every(isPanelExperiment);
    case 'curve':
      return isCurveData(v.curve) && typeof v.replace === 'boolean';
    case 'serverState':
      return typeof v.state === 'string';
    case 'reference':
      return typeof v.text === 'string' && (v.advice === null || typeof v.advice === 'string');
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
      return typeof v.id === 'number' && Number.isInteger(v.id) && v.id >= 0;
    case 'error':
      return typeof v.message === 'string';
    default:
      return false;
  }
}

export function toPanelExperiment(e: ExperimentWire): PanelExperiment {
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    id: e.id,
    status: String(e.status),
    source: typeof e.source === 'string' ? e.source : '',
    hypothesis: typeof e.hypothesis === 'string' ? e.hypothesis : '',
    metric: num(e.metric),
    delta: num(e.delta),
    sigma: num(e.sigma),
    z: num(e.z),
    confirms: num(e.confirms),
    reason: typeof e.reason === 'string' ? e.reason : '',
    evaluator: typeof e.evaluator === 'string' ? e.evaluator : '',
  };
}

/** Progress records → a curve (x = fraction of budget; records without a loss are skipped). */
export function recordsToCurve(expId: number, records: ProgressRecordWire[]): CurveData {
  const xs: number[] = [];
  const ys: number[] = [];
  for (const r of records) {
    if (typeof r.loss === 'number' && Number.isFinite(r.loss)) {
      xs.push(typeof r.frac === 'number' && Number.isFinite(r.frac) ? r.frac : r.t);
      ys.push(r.loss);
    }
  }
  return { expId, xs, ys };
}
