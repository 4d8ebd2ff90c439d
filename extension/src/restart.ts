// Restart discipline, pure: which config file events count, whether a restart may go ahead now,
// and how a restart is logged. Restarting the server stops the trials it started (they turn
// `interrupted`), so nothing restarts it behind the user's back while trials run.

import * as path from 'node:path';

export const CONFIG_FILE = 'sigmaloop.toml';
export const STATE_FOLDER = '.sigmaloop';

/**
 * Whether a file event is about a workspace's own config: `<root>/sigmaloop.toml` for one of
 * the roots (the server's folder, the workspace folders). A config file anywhere else — in a
 * trial's worktree under `.sigmaloop/worktrees/`, a subfolder, a vendored project — is not,
 * and nothing under the state folder ever is.
 */
export function isRootConfig(file: string, roots: Iterable<string>): boolean {
  const f = path.resolve(file);
  if (path.basename(f) !== CONFIG_FILE || f.split(path.sep).includes(STATE_FOLDER)) {
    return false;
  }
  const dir = path.dirname(f);
  for (const r of roots) {
    if (path.resolve(r) === dir) {
      return true;
    }
  }
  return false;
}

/** Why the server restarts (logged with every restart). */
export type RestartCause =
  | { kind: 'command' } // Sigmaloop: Restart Server
  | { kind: 'setting'; key: string } // sigmaloop.pythonPath
  | { kind: 'interpreter' } // the Python extension's selection
  | { kind: 'installed'; what: string }
  | { kind: 'config'; change: 'created' | 'deleted'; file: string }
  | { kind: 'deferred'; cause: RestartCause }; // asked earlier, done once the trials ended

export function describeCause(c: RestartCause): string {
  switch (c.kind) {
    case 'command':
      return 'Restart Server was run';
    case 'setting':
      return `${c.key} changed`;
    case 'interpreter':
      return "the Python extension's interpreter changed";
    case 'installed':
      return `${c.what} was installed`;
    case 'config':
      return `${c.file} was ${c.change}`;
    case 'deferred':
      return `${describeCause(c.cause)} (deferred until the trials ended)`;
  }
}

/** What the server is doing that a restart would stop. */
export interface Busy {
  /** running trials (ids) */
  running: number[];
  /** queued or accepted trials (ids) */
  queued: number[];
  loop: boolean;
}

export type RestartDecision = 'now' | 'ask';

/** Restart at once when nothing would be stopped; otherwise ask (restart and stop them, or later). */
export function restartDecision(busy: Busy): RestartDecision {
  return busy.running.length || busy.queued.length || busy.loop ? 'ask' : 'now';
}

/** The modal's question: what a restart now would stop. */
export function restartQuestion(cause: RestartCause, busy: Busy): string {
  const what: string[] = [];
  if (busy.loop) {
    what.push('the loop');
  }
  if (busy.running.length) {
    what.push(`${plural(busy.running.length, 'running trial')} (${busy.running.map((i) => `#${i}`).join(', ')})`);
  }
  if (busy.queued.length) {
    what.push(`${plural(busy.queued.length, 'queued trial')}`);
  }
  return `${describeCause(cause)}: restart the Sigmaloop server now? That stops ${what.join(', ')}.`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The log line for a server process that ended: a requested stop is information, not an error. */
export function exitLine(code: number | null, signal: string | null, requested: boolean): { level: 'info' | 'error'; text: string } {
  const how = code !== null ? `code ${code}` : `signal ${signal ?? '?'}`;
  if (requested) {
    return { level: 'info', text: `server process exited (${how}) after a requested stop` };
  }
  return { level: 'error', text: `server process exited unexpectedly (${how})` };
}
