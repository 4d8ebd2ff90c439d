// Host-side model of what the server told us: experiments by id, live progress of running
// trials, the engine's state (`sigmaloop/state`). Pure (no vscode), so the status bar text, the
// quick picks and the panel feed are unit-tested without an editor.

import { ACTIVE_STATUSES, type ExperimentWire, type TrialProgressParams, awaitsReview } from './contract';
import type { EngineStateView } from './engineState';
import type { Busy } from './restart';

export type ServerState = 'starting' | 'running' | 'stopped' | 'failed' | 'restricted' | 'noWorkspace' | 'notInstalled' | 'installing';

export class ExperimentStore {
  readonly experiments = new Map<number, ExperimentWire>();
  /** Latest fraction of budget seen per experiment (from progress records). */
  readonly progress = new Map<number, number>();
  /** The engine's state (`sigmaloop/state`), once the server has sent one. */
  state: EngineStateView | undefined;

  /** Apply an experiment record; stale revisions (lower `rev`) are ignored. Returns whether it changed. */
  upsert(e: ExperimentWire): boolean {
    const prev = this.experiments.get(e.id);
    if (prev && typeof prev.rev === 'number' && typeof e.rev === 'number' && e.rev < prev.rev) {
      return false;
    }
    this.experiments.set(e.id, prev ? { ...prev, ...e } : e);
    if (e.status === 'running' && !this.progress.has(e.id)) {
      this.progress.set(e.id, 0);
    }
    return true;
  }

  replaceAll(list: ExperimentWire[]): void {
    this.experiments.clear();
    for (const e of list) {
      this.upsert(e);
    }
  }

  applyProgress(p: TrialProgressParams): void {
    for (const r of p.records) {
      if (Number.isFinite(r.frac)) {
        this.progress.set(p.expId, Math.max(this.progress.get(p.expId) ?? 0, r.frac));
      }
    }
  }

  running(): ExperimentWire[] {
    return [...this.experiments.values()].filter((e) => e.status === 'running').sort((a, b) => a.id - b.id);
  }

  active(): ExperimentWire[] {
    return [...this.experiments.values()].filter((e) => ACTIVE_STATUSES.has(e.status));
  }

  proposed(): ExperimentWire[] {
    return [...this.experiments.values()].filter((e) => e.status === 'proposed').sort((a, b) => b.id - a.id);
  }

  /** Implausibly large gains waiting for a look (accept or reject their result), newest first. */
  awaitingReview(): ExperimentWire[] {
    return [...this.experiments.values()].filter(awaitsReview).sort((a, b) => b.id - a.id);
  }

  kept(): ExperimentWire[] {
    return [...this.experiments.values()].filter((e) => e.status === 'kept' && e.source !== 'baseline').sort((a, b) => b.id - a.id);
  }

  /** Running trial ids: the state's when there is one, else the records'. */
  runningIds(): number[] {
    return this.state ? [...this.state.running].sort((a, b) => a - b) : this.running().map((e) => e.id);
  }

  loopRunning(): boolean {
    return this.state?.loop.running ?? false;
  }

  /** What a server restart would stop now: the running trials (the state's and the records', whichever arrived first), the queued ones, the loop. */
  busy(): Busy {
    const running = [...new Set([...(this.state?.running ?? []), ...this.running().map((e) => e.id)])].sort((a, b) => a - b);
    const queued = this.active()
      .filter((e) => !running.includes(e.id))
      .map((e) => e.id);
    return { running, queued, loop: this.loopRunning() };
  }

  sorted(): ExperimentWire[] {
    return [...this.experiments.values()].sort((a, b) => b.id - a.id);
  }

  clear(): void {
    this.experiments.clear();
    this.progress.clear();
    this.state = undefined;
  }
}

/** One-line description of an experiment for quick picks and messages. */
export function describe(e: ExperimentWire): string {
  const parts = [`#${e.id}`, e.status];
  if (typeof e.delta === 'number') {
    parts.push(`Δ ${e.delta >= 0 ? '+' : ''}${e.delta.toFixed(4)}`);
  }
  if (typeof e.sigma === 'number') {
    parts.push(`σ ${e.sigma.toFixed(4)}`);
  }
  return parts.join(' · ');
}

/** Parse an experiment id from a command argument: a number, "12", "#12", {id}, {expId}, or a sigmaloop-exp URI. */
export function parseExpId(arg: unknown): number | undefined {
  if (typeof arg === 'number' && Number.isInteger(arg) && arg >= 0) {
    return arg;
  }
  if (typeof arg === 'string') {
    const m = /^#?(\d+)$/.exec(arg.trim());
    return m ? Number(m[1]) : undefined;
  }
  if (typeof arg === 'object' && arg !== null) {
    const o = arg as Record<string, unknown>;
    if (typeof o.id === 'number') {
      return parseExpId(o.id);
    }
    if (typeof o.expId === 'number') {
      return parseExpId(o.expId);
    }
    if (typeof o.scheme === 'string' && o.scheme === EXP_SCHEME && typeof o.path === 'string') {
      return expIdFromPath(o.path);
    }
  }
  return undefined;
}

export const EXP_SCHEME = 'sigmaloop-exp';

/** Path of a proposal's virtual document: /exp-12/train.py */
export function expPath(id: number, scriptName: string): string {
  return `/exp-${id}/${scriptName}`;
}

export function expIdFromPath(path: string): number | undefined {
  const m = /^\/exp-(\d+)\//.exec(path);
  return m ? Number(m[1]) : undefined;
}
