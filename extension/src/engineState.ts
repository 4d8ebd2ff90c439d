// The engine's state as the server sends it (`sigmaloop/state`): reference ± σ, best, counts,
// metric and direction, calibration, config error, loop. Pure: a tolerant reader of the
// notification (a field the server leaves out is left out here, never guessed) and the few
// words the status bar and the panel make of it.

import type { CalibrationState, PanelQuestion, PanelReference, ReferenceState, State } from './contract';

/** A research question as the state sends it (`QuestionState` on the wire). */
export type QuestionView = PanelQuestion;

/** The engine's state as the client keeps it: the wire's `State`, its questions always a list. */
export type EngineStateView = Omit<State, 'questions'> & { questions: QuestionView[] };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const ints = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x)) : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The state's questions (an older server sends none); an entry without an id or text is skipped. */
function parseQuestions(v: unknown): QuestionView[] {
  if (!Array.isArray(v)) {
    return [];
  }
  const out: QuestionView[] = [];
  for (const q of v) {
    if (isObject(q) && typeof q.id === 'number' && Number.isInteger(q.id) && q.id >= 0 && typeof q.text === 'string') {
      out.push({
        id: q.id,
        text: q.text,
        decision: str(q.decision),
        status: str(q.status) || 'open',
        answer: str(q.answer),
        experiments: ints(q.experiments).filter((id) => id >= 0),
        verdict: str(q.verdict),
      });
    }
  }
  return out;
}

/** `sigmaloop/state` params → the view, or undefined when it is not a state at all (no metric or direction). */
export function parseEngineState(params: unknown): EngineStateView | undefined {
  if (!isObject(params) || typeof params.metric !== 'string' || (params.direction !== 'minimize' && params.direction !== 'maximize')) {
    return undefined;
  }
  let reference: ReferenceState | null = null;
  if (isObject(params.reference) && num(params.reference.value) !== null) {
    const r = params.reference;
    reference = { value: num(r.value) as number, sigma: num(r.sigma), sigmaDof: num(r.sigmaDof) ?? 0, seeds: ints(r.seeds), ids: ints(r.ids) };
    // the noise advisor (optional on the wire: older servers leave it out)
    if (num(r.keepThreshold) !== null) {
      reference.keepThreshold = num(r.keepThreshold);
    }
    if (typeof r.advice === 'string' && r.advice) {
      reference.advice = r.advice;
    }
  }
  let best: State['best'] = null;
  if (isObject(params.best) && typeof params.best.id === 'number' && num(params.best.metric) !== null) {
    const b = params.best;
    best = { id: b.id as number, metric: num(b.metric) as number, hypothesis: typeof b.hypothesis === 'string' ? b.hypothesis : '' };
  }
  const counts: Record<string, number> = {};
  if (isObject(params.counts)) {
    for (const [k, v] of Object.entries(params.counts)) {
      if (typeof v === 'number') {
        counts[k] = v;
      }
    }
  }
  const l = isObject(params.loop) ? params.loop : {};
  return {
    metric: params.metric,
    direction: params.direction,
    reference,
    best,
    counts,
    kept: num(params.kept) ?? 0,
    run: num(params.run) ?? 0,
    running: ints(params.running),
    loop: {
      running: l.running === true,
      iteration: num(l.iteration) ?? 0,
      iterations: num(l.iterations) ?? 0,
      phase: typeof l.phase === 'string' ? l.phase : '',
    },
    configError: typeof params.configError === 'string' && params.configError ? params.configError : null,
    calibration: isObject(params.calibration) ? (params.calibration as unknown as CalibrationState) : null,
    questions: parseQuestions(params.questions),
  };
}

/** Decimals that show σ with two significant digits (2 to 8; 4 when σ is unknown). */
export function decimalsFor(sigma: number | null): number {
  if (!(sigma !== null && sigma > 0)) {
    return 4;
  }
  return Math.min(8, Math.max(2, 1 - Math.floor(Math.log10(sigma))));
}

/** "0.9979 ± 0.0012" (σ unknown: the value alone). */
export function formatReference(ref: ReferenceState): string {
  const d = decimalsFor(ref.sigma);
  return ref.sigma !== null ? `${ref.value.toFixed(d)} ± ${ref.sigma.toFixed(d)}` : ref.value.toFixed(d);
}

/**
 * The noise advisor in a few words: "keeps ≥ 0.035 (1.6%)" — the smallest improvement the judge
 * can keep at the current σ, k and seeds ("" while it is not known).
 */
export function keepText(ref: ReferenceState): string {
  const t = ref.keepThreshold;
  if (typeof t !== 'number' || !Number.isFinite(t)) {
    return '';
  }
  const amount = t >= 100 ? t.toFixed(0) : String(Number(t.toPrecision(2)));
  return ref.value ? `keeps ≥ ${amount} (${((100 * t) / Math.abs(ref.value)).toFixed(1)}%)` : `keeps ≥ ${amount}`;
}

/** The panel's reference line: "val_bpb 2.1234 ± 0.0123 (3 seeds) · keeps ≥ 0.035 (1.6%)", and the advice when there is one. */
export function referenceLine(s: EngineStateView | undefined): { text: string; advice: string | null } {
  const ref = s?.reference;
  if (!s || !ref) {
    return { text: '', advice: null };
  }
  const n = ref.seeds.length;
  const parts = [`${s.metric} ${formatReference(ref)}${n ? ` (${n} seed${n === 1 ? '' : 's'})` : ''}`];
  const keeps = keepText(ref);
  if (keeps) {
    parts.push(keeps);
  }
  return { text: parts.join(' · '), advice: ref.advice ?? null };
}

/** What the panel draws of the state: the reference line, its numbers and runs, and the best. */
export function panelReference(s: EngineStateView | undefined): PanelReference {
  const line = referenceLine(s);
  const ref = s?.reference;
  return {
    ...line,
    value: ref?.value ?? null,
    sigma: ref?.sigma ?? null,
    keepThreshold: ref?.keepThreshold ?? null,
    ids: ref?.ids ?? [],
    bestId: s?.best?.id ?? null,
  };
}

/**
 * The status bar's tail: "val_bpb 0.9979 ± 0.0012 · best #7". The best's value is added when it
 * is not the reference's (the reference is the head's mean; the best is the best head so far).
 */
export function stateSummary(s: EngineStateView): string {
  if (s.configError) {
    return 'config error';
  }
  const parts: string[] = [];
  if (s.reference) {
    parts.push(`${s.metric} ${formatReference(s.reference)}`);
  }
  if (s.best) {
    const same = s.reference !== null && s.best.metric === s.reference.value;
    parts.push(same ? `best #${s.best.id}` : `best #${s.best.id} ${s.best.metric.toFixed(decimalsFor(s.reference?.sigma ?? null))}`);
  }
  return parts.join(' · ');
}

/** Tooltip lines: what the status bar abbreviates, in words. */
export function stateTooltip(s: EngineStateView): string[] {
  const lines: string[] = [];
  if (s.configError) {
    lines.push(`sigmaloop.toml: ${s.configError}`);
  }
  lines.push(`${s.metric}, ${s.direction === 'minimize' ? 'lower' : 'higher'} is better`);
  if (s.reference) {
    const r = s.reference;
    const dof = r.sigma !== null ? `, ${r.sigmaDof} dof` : '';
    const seeds = r.seeds.length ? ` on seeds ${r.seeds.join(', ')}` : '';
    lines.push(`reference ${formatReference(r)}${dof}${seeds}`);
    const keeps = keepText(r);
    if (keeps) {
      lines.push(`${keeps}: the smallest improvement the judge can keep`);
    }
    if (r.advice) {
      lines.push(r.advice);
    }
  } else {
    lines.push('no reference yet: run the baseline');
  }
  if (s.best) {
    lines.push(`best #${s.best.id}: ${s.best.metric}${s.best.hypothesis ? ` (${s.best.hypothesis})` : ''}`);
  }
  const counts = Object.entries(s.counts)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`);
  if (counts.length) {
    lines.push(counts.join(', '));
  }
  return lines;
}
