// Apply a one-file unified diff to a text, the way `patch` does without fuzz: each hunk is
// placed where its context and removed lines match, searching outward from the line number the
// hunk names (the user's script may have drifted from the diff's parent). Pure; unit-tested.

interface Hunk {
  oldStart: number; // 1-based
  oldLines: string[]; // context + removed, in order
  newLines: string[]; // context + added, in order
}

const HUNK_RE = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/;

export function parseHunks(diff: string): Hunk[] {
  const hunks: Hunk[] = [];
  let cur: Hunk | undefined;
  const lines = diff.split('\n');
  if (lines.length && lines[lines.length - 1] === '') {
    lines.pop();
  }
  for (const raw of lines) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const m = HUNK_RE.exec(line);
    if (m) {
      cur = { oldStart: Number(m[1]), oldLines: [], newLines: [] };
      hunks.push(cur);
      continue;
    }
    if (!cur) {
      continue; // headers (---, +++, diff --git, index)
    }
    if (line.startsWith('\\')) {
      continue; // "\ No newline at end of file"
    }
    const tag = line.length ? line[0] : ' ';
    const text = line.slice(1);
    if (tag === ' ') {
      cur.oldLines.push(text);
      cur.newLines.push(text);
    } else if (tag === '-') {
      cur.oldLines.push(text);
    } else if (tag === '+') {
      cur.newLines.push(text);
    }
  }
  return hunks;
}

function matchesAt(doc: string[], at: number, want: string[]): boolean {
  if (at < 0 || at + want.length > doc.length) {
    return false;
  }
  for (let i = 0; i < want.length; i++) {
    if (doc[at + i] !== want[i]) {
      return false;
    }
  }
  return true;
}

/** The patched text, or undefined when some hunk's lines are nowhere in the text. */
export function applyUnifiedDiff(text: string, diff: string): string | undefined {
  const hunks = parseHunks(diff);
  if (!hunks.length) {
    return undefined;
  }
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const trailing = text.endsWith('\n');
  const doc = text.split(/\r?\n/);
  if (trailing) {
    doc.pop();
  }
  const out: string[] = [];
  let pos = 0; // next unconsumed line of doc
  let drift = 0;
  for (const h of hunks) {
    const want = h.oldLines;
    const guess = Math.max(pos, (want.length ? h.oldStart - 1 : h.oldStart) + drift);
    let at = -1;
    for (let d = 0; d <= doc.length; d++) {
      if (guess + d <= doc.length && matchesAt(doc, guess + d, want)) {
        at = guess + d;
        break;
      }
      if (d > 0 && guess - d >= pos && matchesAt(doc, guess - d, want)) {
        at = guess - d;
        break;
      }
      if (guess + d > doc.length && guess - d < pos) {
        break;
      }
    }
    if (at < 0) {
      return undefined;
    }
    drift = at - (want.length ? h.oldStart - 1 : h.oldStart);
    for (let i = pos; i < at; i++) {
      out.push(doc[i]);
    }
    out.push(...h.newLines);
    pos = at + want.length;
  }
  for (let i = pos; i < doc.length; i++) {
    out.push(doc[i]);
  }
  return out.join(eol) + (trailing || out.length === 0 ? eol : '');
}
