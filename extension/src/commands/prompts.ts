// The words of the commands' prompts and notifications, pure (no vscode) so the unit tests read
// them: what a rejection reason is for under each proposer, the predicted Δ a researcher types,
// the questions to pick from, how a finished experiment is announced, the log quick pick.

import type { ExperimentWire } from '../contract';
import type { QuestionState } from '../protocol.gen';

/**
 * The rejection prompt, true to the proposer that made the proposal: the LLM proposer reads the
 * reason in its next prompt; the tuner records the rejection as a point and reads no text; the
 * researcher's own proposals keep it as a note.
 */
export function rejectPrompt(source: string): string {
  if (source.startsWith('llm')) {
    return 'Why? (optional; the LLM proposer reads it in its next prompt)';
  }
  if (source === 'tune') {
    return "Why? (optional; kept with the proposal — the tuner records it as a rejected point; it doesn't read text)";
  }
  return 'Why? (optional; kept with the proposal)';
}

/** A predicted Δ as typed ("-0.01", "+0.02", "−0.01", "" = skip): the number, null to skip, or undefined when it is not a number. */
export function parseDelta(text: string): number | null | undefined {
  const t = text.trim().replace(/^−/, '-').replace(/,/g, '.');
  if (!t) {
    return null;
  }
  if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t)) {
    return undefined;
  }
  const v = Number(t);
  return Number.isFinite(v) ? v : undefined;
}

/** The input box's check of a predicted Δ: undefined when fine (a number, or empty to skip). */
export function validateDelta(text: string): string | undefined {
  return parseDelta(text) === undefined ? 'a number like -0.01 (the metric minus the reference), or empty to skip' : undefined;
}

export interface QuestionPick {
  label: string;
  description?: string;
  detail?: string;
  /** null: "none" (the edit tests no question). */
  id: number | null;
}

/** The open questions to pick from for an edit, "none" first; empty when there are none (skip the pick). */
export function questionPicks(questions: readonly QuestionState[] | undefined): QuestionPick[] {
  const open = (questions ?? []).filter((q) => q.status === 'open');
  if (!open.length) {
    return [];
  }
  return [
    { label: 'none', description: 'this edit tests no research question', id: null },
    ...open.map((q) => ({ label: `Q${q.id}: ${q.text}`, description: q.decision ? `decides: ${q.decision}` : undefined, detail: q.verdict, id: q.id })),
  ];
}

/** Questions to close or reopen: "Q2: … (open)". */
export function closablePicks(questions: readonly QuestionState[] | undefined): QuestionPick[] {
  return (questions ?? []).map((q) => ({ label: `Q${q.id}: ${q.text}`, description: q.status, detail: q.verdict, id: q.id }));
}

/**
 * How a finished experiment accepted from this window is announced, said once: "#7 crashed:
 * RuntimeError: boom (train.py:33)", "#12 0.012 bpb better, 3.1σ; kept" (the server's verdict, which
 * already names the outcome); the status is prefixed only when the verdict does not say it.
 */
export function finishedMessage(e: ExperimentWire): string {
  const verdict = typeof e.verdict === 'string' ? e.verdict.trim() : '';
  const crash = e.crash;
  if (e.status === 'crashed' || e.status === 'timeout') {
    if (crash && typeof crash.message === 'string') {
      return `Sigmaloop: #${e.id} ${e.status}: ${crash.message} (${crash.file}:${crash.line})`;
    }
    const detail = typeof e.detail === 'string' && e.detail ? e.detail : verdict.replace(new RegExp(`^${e.status}\\s*:?\\s*`), '');
    return `Sigmaloop: #${e.id} ${e.status}${detail ? `: ${detail}` : ''}`;
  }
  const words = e.status.replace(/_/g, ' ');
  if (!verdict) {
    return `Sigmaloop: #${e.id} ${words}`;
  }
  return verdict.includes(words) ? `Sigmaloop: #${e.id} ${verdict}` : `Sigmaloop: #${e.id} ${words}: ${verdict}`;
}

export interface LogPick {
  label: string;
  description: string;
  id: number;
}

/** Experiments with a log, newest first, for "Open Trial Log…". */
export function logPicks(list: Iterable<ExperimentWire>): LogPick[] {
  return [...list]
    .filter((e) => typeof e.logPath === 'string' && e.logPath)
    .sort((a, b) => b.id - a.id)
    .map((e) => ({ label: `#${e.id} ${e.status}${e.hypothesis ? ` · ${e.hypothesis}` : ''}`, description: e.source, id: e.id }));
}

/** The diff tab's word for where an experiment is: "proposed", "running" (accepted, queued or running), else its status. */
export function diffTitleStatus(status: string | undefined): string {
  if (!status) {
    return '';
  }
  return status === 'accepted' || status === 'queued' || status === 'running' ? 'running' : status.replace(/_/g, ' ');
}

/** After a dismissal: what went, and what is still shown for the experiment. */
export function dismissedMessage(res: { id: number; kind: string; anomalies: readonly { kind: string }[] }): string {
  const left = res.anomalies.map((a) => a.kind);
  return `Sigmaloop: dismissed the ${res.kind} on #${res.id}${left.length ? `; still shown: ${left.join(', ')}` : ''}`;
}

/** The buttons on a finished baseline's or loop's message: a loop's results are in the report. */
export function doneActions(what: 'baseline' | 'loop'): string[] {
  return what === 'loop' ? ['Open Report', 'Show Panel'] : [];
}
