// Host-side model of what the server told us: experiments by id, live progress of running
// trials, the loop state. Pure (no vscode), so the status bar text, the quick picks and the
// panel feed are unit-tested without an editor.

import {
  ACTIVE_STATUSES,
  type ExperimentWire,
  type LoopStateParams,
  type ProgressRecordWire,
  type TrialProgressParams,
} from './contract';

export type ServerState = 'starting' | 'running' | 'stopped' | 'failed' | 'restricted' | 'noWorkspace' | 'notInstalled' | 'installing';

export interface StatusView {
  text: string;
  tooltip: string;
}

export class ExperimentStore {
  readonly experiments = new Map<number, ExperimentWire>();
  /** Latest fraction of budget seen per experiment (from progress records). */
  readonly progress = new Map<number, number>();
  /** Live records received per experiment since the store was created or cleared. */
  readonly records = new Map<number, ProgressRecordWire[]>();
  loop: LoopStateParams = { running: false };

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
    let list = this.records.get(p.expId);
    if (!list) {
      list = [];
      this.records.set(p.expId, list);
    }
    for (const r of p.records) {
      list.push(r);
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

  kept(): ExperimentWire[] {
    return [...this.experiments.values()].filter((e) => e.status === 'kept' && e.source !== 'baseline').sort((a, b) => b.id - a.id);
  }

  sorted(): ExperimentWire[] {
    return [...this.experiments.values()].sort((a, b) => b.id - a.id);
  }

  clear(): void {
    this.experiments.clear();
    this.progress.clear();
    this.records.clear();
    this.loop = { running: false };
  }
}

/** What clicking the status bar item does: install when the package is missing, restart a dead server, else the loss panel. */
export function statusCommand(server: ServerState): string {
  switch (server) {
    case 'notInstalled':
      return 'sigmaloop.installServer';
    case 'failed':
    case 'stopped':
      return 'sigmaloop.restartServer';
    default:
      return 'sigmaloop.showPanel';
  }
}

/** The status bar item: "idle", "running #12 at 43%", "loop 7 of 20 · running #12 at 43%". */
export function statusView(server: ServerState, store: ExperimentStore): StatusView {
  const icon = '$(beaker)';
  switch (server) {
    case 'starting':
      return { text: `${icon} Sigmaloop: starting`, tooltip: 'The Sigmaloop language server is starting' };
    case 'failed':
      return { text: `$(error) Sigmaloop: server failed`, tooltip: 'The language server could not start; see the Sigmaloop output. Click to restart.' };
    case 'stopped':
      return { text: `${icon} Sigmaloop: stopped`, tooltip: 'The language server is stopped. Click to restart.' };
    case 'restricted':
      return { text: `$(shield) Sigmaloop: restricted`, tooltip: 'Restricted Mode: no trial or agent runs until the workspace is trusted' };
    case 'noWorkspace':
      return { text: `${icon} Sigmaloop: no sigmaloop.toml`, tooltip: 'Open a folder with sigmaloop.toml' };
    case 'notInstalled':
      return { text: `$(cloud-download) Sigmaloop: not installed`, tooltip: 'The interpreter does not have the sigmaloop package. Click to install the wheel bundled with the extension.' };
    case 'installing':
      return { text: `$(sync~spin) Sigmaloop: installing`, tooltip: 'Installing the bundled sigmaloop wheel (pip output in the Sigmaloop log)' };
    default:
      break;
  }
  const parts: string[] = [];
  const loop = store.loop;
  if (loop.running && loop.iterations) {
    parts.push(`loop ${loop.iteration ?? 0} of ${loop.iterations}`);
  } else if (loop.running) {
    parts.push(`loop ${loop.iteration ?? 0}`);
  }
  const running = store.running();
  if (running.length) {
    const first = running[0];
    const pct = Math.round(100 * Math.min(1, Math.max(0, store.progress.get(first.id) ?? 0)));
    let s = `running #${first.id} at ${pct}%`;
    if (running.length > 1) {
      s += ` (+${running.length - 1})`;
    }
    parts.push(s);
  } else {
    const queued = store.active().filter((e) => e.status !== 'running').length;
    if (queued) {
      parts.push(`${queued} queued`);
    }
  }
  const spinning = parts.length > 0;
  const text = `${spinning ? '$(sync~spin)' : icon} ${parts.length ? parts.join(' · ') : 'idle'}`;
  const tooltipLines = ['Sigmaloop'];
  if (loop.message) {
    tooltipLines.push(loop.message);
  }
  for (const e of running) {
    tooltipLines.push(`#${e.id} ${e.hypothesis ?? ''}`.trim());
  }
  tooltipLines.push('Click to show the loss panel');
  return { text, tooltip: tooltipLines.join('\n') };
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
