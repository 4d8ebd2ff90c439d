// The status bar item's text, tooltip and click, pure: from the server's lifecycle state, the
// engine's state (`sigmaloop/state`: reference ± σ, best, loop, config error) and the live
// progress of running trials.

import { type ExperimentWire, SELF_REPORTED, awaitsReview } from './contract';
import { stateSummary, stateTooltip } from './engineState';
import type { ExperimentStore, ServerState } from './store';

export interface StatusView {
  text: string;
  tooltip: string;
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

/**
 * "idle · val_bpb 0.9979 ± 0.0012 · best #7", "running #12 at 43%", "evaluating #12",
 * "loop 7 of 20 · running #12 at 43% (+1)", "2 queued", "config error".
 */
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
  const state = store.state;
  const activity: string[] = [];
  const loop = state?.loop;
  if (loop?.running) {
    activity.push(loop.iterations ? `loop ${loop.iteration} of ${loop.iterations}` : `loop ${loop.iteration}`);
  }
  const running = store.runningIds();
  if (running.length) {
    const first = running[0];
    activity.push(`${trialActivity(first, store.progress.get(first), store.experiments.get(first)?.phase)}${running.length > 1 ? ` (+${running.length - 1})` : ''}`);
  } else {
    const queued = store.busy().queued.length;
    if (queued) {
      activity.push(`${queued} queued`);
    }
  }
  const busy = activity.length > 0;
  const parts = busy ? activity : ['idle'];
  const summary = state ? stateSummary(state) : '';
  if (summary) {
    parts.push(summary);
  }
  const text = `${state?.configError ? '$(warning)' : busy ? '$(sync~spin)' : icon} ${parts.join(' · ')}`;
  const tooltip = ['Sigmaloop'];
  if (state) {
    if (state.loop.running && state.loop.phase) {
      tooltip.push(`loop: ${state.loop.phase}`);
    }
    tooltip.push(...stateTooltip(state));
  }
  for (const id of running) {
    const e = store.experiments.get(id);
    tooltip.push(`#${id} ${e?.hypothesis ?? ''}`.trim());
  }
  tooltip.push('Click to show the loss panel');
  return { text, tooltip: tooltip.join('\n') };
}

/** Progress from which a trial has spent its budget (the fixed evaluator scores it then). */
export const TRAINED_FRAC = 0.999;

/** A running trial in a few words: "running #12 at 43%", then "evaluating #12" once its budget is spent, "judging #12" after. */
export function trialActivity(id: number, frac: number | undefined, phase: unknown): string {
  if (phase === 'judging') {
    return `judging #${id}`;
  }
  const f = Math.min(1, Math.max(0, frac ?? 0));
  if (f >= TRAINED_FRAC) {
    return `evaluating #${id}`;
  }
  return `running #${id} at ${Math.round(100 * f)}%`;
}

/**
 * What Stop Loop stopped, in words: "stopped the loop, #12 (running) and #13 (queued)". `before`
 * is each stopped experiment's status just before the stop (unknown ids are listed bare).
 */
export function stoppedMessage(stopped: number[], before: ReadonlyMap<number, string>, loopWasRunning: boolean): string {
  const items: string[] = [];
  if (loopWasRunning) {
    items.push('the loop');
  }
  for (const id of [...stopped].sort((a, b) => a - b)) {
    const status = before.get(id);
    items.push(status ? `#${id} (${status})` : `#${id}`);
  }
  if (!items.length) {
    return 'Sigmaloop: nothing was running; nothing stopped.';
  }
  const list = items.length === 1 ? items[0] : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
  return `Sigmaloop: stopped ${list}.`;
}

/** A verdict worth a notification of its own, with the buttons it offers (command ids, called with the experiment's id). */
export interface Verdict {
  level: 'info' | 'warning' | 'error';
  message: string;
  actions: { title: string; command: string }[];
}

/**
 * The notification for an implausible gain (warning: accept or reject its result), a tampered
 * run (error) or an over-budget run (warning); undefined for every other status.
 */
export function verdictNotice(e: ExperimentWire): Verdict | undefined {
  const verdict = typeof e.verdict === 'string' && e.verdict ? ` — ${e.verdict}` : '';
  const self = e.evaluator === SELF_REPORTED ? ' (self-reported metric)' : '';
  const diff = { title: 'Show Diff', command: 'sigmaloop.showExperiment' };
  if (awaitsReview(e)) {
    return {
      level: 'warning',
      message: `Sigmaloop: #${e.id} cleared the bar by an implausible margin${self}; it is not kept until you look${verdict}`,
      actions: [diff, { title: 'Accept Result', command: 'sigmaloop.acceptResult' }, { title: 'Reject Result', command: 'sigmaloop.rejectResult' }],
    };
  }
  if (e.status === 'tampered') {
    return { level: 'error', message: `Sigmaloop: #${e.id} tampered: its result can't be trusted${verdict}`, actions: [diff] };
  }
  if (e.status === 'over_budget') {
    return { level: 'warning', message: `Sigmaloop: #${e.id} over budget: not kept${verdict}`, actions: [diff] };
  }
  return undefined;
}
