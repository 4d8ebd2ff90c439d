"""The one diff model: make, parse, apply and map unified diffs of the train script.

Every part of sigmaloop that reads or writes a diff uses this module: the engine stores
proposals as diffs and rebuilds scripts with :func:`apply_unified_diff`; the language server
anchors a proposal's changed lines in the user's (possibly drifted) document with
:func:`change_blocks` and places a crash line of an experiment's script in its parent with
:func:`parent_line`; the editor asks the server instead of parsing diffs itself.

Line numbers are 1-based unless a name says otherwise.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

__all__ = [
    "Block",
    "DiffInfo",
    "EditError",
    "Hunk",
    "apply_unified_diff",
    "change_blocks",
    "changed_lines",
    "lines_of",
    "parent_line",
    "parse_hunks",
    "unified_diff",
]


class EditError(ValueError):
    """An edit that cannot be applied or would not be a valid experiment.

    ``line``/``col`` (1-based line, 0-based column in the NEW source) are set when the
    problem has a place, e.g. a syntax error.
    """

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line = line
        self.col = col


# --------------------------------------------------------------------------------------
# lines


_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lines_of(text: str) -> list[str]:
    """Split like the Python tokenizer does (\\n, \\r\\n, \\r only), keeping line ends."""
    return _LINE_RE.findall(text)


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


# --------------------------------------------------------------------------------------
# unified diffs

_NO_NEWLINE = "\\ No newline at end of file\n"


def unified_diff(old: str, new: str, path: str = "train.py", context: int = 3) -> str:
    """A unified diff of ``path`` from ``old`` to ``new`` ("" when they are equal)."""
    out: list[str] = []
    for line in difflib.unified_diff(lines_of(old), lines_of(new), f"a/{path}", f"b/{path}", n=context):
        out.append(line)
        if not line.endswith(("\n", "\r")):
            out.append("\n" + _NO_NEWLINE)
    return "".join(out)


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Hunk:
    header: str
    old_start: int | None  # None: a header without numbers ("@@ ... @@"), position unknown
    old_len: int | None
    body: list[list[str]]  # [tag, content] with tag in " -+"; content keeps its line end
    new_start: int | None = None
    new_len: int | None = None


def _diff_path(header_line: str) -> str:
    path = header_line[4:].strip().split("\t")[0]
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def parse_hunks(diff: str) -> list[Hunk]:
    if diff and not diff.endswith("\n"):
        diff += "\n"
    lines = re.findall(r"[^\n]*\n", diff)
    hunks: list[Hunk] = []
    paths: list[str] = []
    i, n = 0, len(lines)

    def is_file_header(k: int) -> bool:
        return lines[k].startswith("diff --git ") or (
            lines[k].startswith("--- ") and k + 1 < n and lines[k + 1].startswith("+++ ")
        )

    while i < n:
        line = lines[i]
        if line.startswith("+++ "):
            path = _diff_path(line)
            if path != "/dev/null" and path not in paths:
                paths.append(path)
            i += 1
            continue
        if not line.startswith("@@"):
            i += 1  # "diff --git", "index ...", "--- a/...", commentary
            continue
        m = _HUNK_RE.match(line)
        if m:
            old_start = int(m.group(1))
            old_len = int(m.group(2)) if m.group(2) is not None else 1
            new_start = int(m.group(3))
            new_len = int(m.group(4)) if m.group(4) is not None else 1
        else:
            old_start = old_len = new_start = new_len = None
        hunk = Hunk(line.rstrip("\n"), old_start, old_len, [], new_start, new_len)
        hunks.append(hunk)
        i += 1
        seen_old = seen_new = 0
        while i < n:
            line = lines[i]
            if old_len is not None and new_len is not None:
                if seen_old >= old_len and seen_new >= new_len and not line.startswith("\\"):
                    break
            elif line.startswith("@@") or is_file_header(i):
                break
            if line.startswith("\\"):  # "\ No newline at end of file": the previous line
                if hunk.body and hunk.body[-1][1].endswith("\n"):
                    hunk.body[-1][1] = hunk.body[-1][1][:-1]
                i += 1
                continue
            if line in ("\n", "\r\n"):  # a blank context line whose leading space was lost
                tag, content = " ", line
            else:
                tag, content = line[0], line[1:]
            if tag == " ":
                seen_old += 1
                seen_new += 1
            elif tag == "-":
                seen_old += 1
            elif tag == "+":
                seen_new += 1
            else:
                raise EditError(
                    f"hunk {len(hunks)} ({hunk.header}): line {i + 1} of the diff starts with "
                    f"{tag!r}; every line of a hunk must start with ' ', '-' or '+'"
                )
            hunk.body.append([tag, content])
            i += 1
        if (
            old_len is not None
            and new_len is not None
            and (seen_old < old_len or seen_new < new_len)
        ):
            raise EditError(
                f"hunk {len(hunks)} ({hunk.header}) is truncated: its header counts "
                f"{old_len} old and {new_len} new lines but the diff has {seen_old} and {seen_new}"
            )
    if len(paths) > 1:
        raise EditError(
            f"the diff touches {len(paths)} files ({', '.join(paths)}); only one file may change"
        )
    if not hunks:
        raise EditError("the diff has no hunks (no '@@ -a,b +c,d @@' lines)")
    return hunks


def _matches(old_lines: list[str], block: list[str], pos: int, loose: bool) -> bool:
    if pos < 0 or pos + len(block) > len(old_lines):
        return False
    for k, want in enumerate(block):
        have = old_lines[pos + k]
        if loose:
            if have.rstrip() != want.rstrip():
                return False
        elif _strip_eol(have) != _strip_eol(want):
            return False
    return True


def _mismatch(old_lines: list[str], block: list[str], pos: int) -> str:
    for k, want in enumerate(block):
        if pos + k >= len(old_lines):
            return f"the diff expects {_strip_eol(want)!r} at line {pos + k + 1}, past the end of the file"
        have = old_lines[pos + k]
        if have.rstrip() != want.rstrip():
            return (
                f"line {pos + k + 1} is {_strip_eol(have)!r} but the diff expects "
                f"{_strip_eol(want)!r}"
            )
    return "its context lines are not in the file"  # pragma: no cover


def apply_unified_diff(old: str, diff: str) -> str:
    """Apply a unified diff of one file to ``old``.

    Hunks are placed at their stated line, or, when the file moved, at the nearest place
    where their context and removed lines match (trailing whitespace is tolerated).
    Raises EditError when a hunk does not apply.
    """
    hunks = parse_hunks(diff)
    old_lines = lines_of(old)
    out: list[str] = []
    cursor = 0
    for number, hunk in enumerate(hunks, 1):
        block = [content for tag, content in hunk.body if tag in " -"]
        if hunk.old_start is None:
            expected = cursor
        elif hunk.old_len == 0:
            expected = hunk.old_start  # "-N,0": insert after line N
        else:
            expected = hunk.old_start - 1
        pos = None
        if not block:
            pos = min(max(expected, cursor), len(old_lines))
        else:
            for loose in (False, True):
                if expected >= cursor and _matches(old_lines, block, expected, loose):
                    pos = expected
                    break
                found = [
                    p
                    for p in range(cursor, len(old_lines) - len(block) + 1)
                    if _matches(old_lines, block, p, loose)
                ]
                if hunk.old_start is None and len(found) > 1:
                    raise EditError(
                        f"hunk {number} ({hunk.header}) is ambiguous: its lines occur "
                        f"{len(found)} times (at lines {', '.join(str(p + 1) for p in found[:5])}); "
                        "give line numbers in the @@ header or more context"
                    )
                if found:
                    pos = min(found, key=lambda p: abs(p - expected))
                    break
        if pos is None:
            where = max(expected, cursor)
            raise EditError(
                f"hunk {number} ({hunk.header}) does not apply: "
                f"{_mismatch(old_lines, block, where)}"
            )
        out.extend(old_lines[cursor:pos])
        k = pos
        for tag, content in hunk.body:
            if tag == " ":
                out.append(old_lines[k])
                k += 1
            elif tag == "-":
                k += 1
            else:
                out.append(content)
        cursor = k
    out.extend(old_lines[cursor:])
    return "".join(out)


# --------------------------------------------------------------------------------------
# changed lines


def changed_lines(old: str, new: str) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of ``old`` that the edit touches.

    A pure insertion maps to the line it follows (or, at the top, the line it precedes).
    """
    a, b = lines_of(old), lines_of(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ranges: list[tuple[int, int]] = []
    last = max(len(a), 1)
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "insert":
            line = min(max(i1, 1), last)
            start, end = line, line
        else:
            start, end = i1 + 1, i2
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        else:
            ranges.append((start, end))
    return ranges




# --------------------------------------------------------------------------------------
# anchoring and mapping (for the editor)

_ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]+)?=\s*(.+?)\s*(?:#.*)?$")


@dataclass(frozen=True)
class Block:
    """One run of changed lines of a diff, in the parent's numbering."""

    start: int  # 0-based first line of the parent touched (insertions: the line they follow)
    span: int  # lines covered - 1
    candidates: tuple[tuple[str, int], ...]  # (stripped text, offset from start) to anchor by


@dataclass(frozen=True)
class DiffInfo:
    blocks: tuple[Block, ...]
    change: str | None  # e.g. "LR 0.04→0.06" for a one-constant edit


def _block(run_start: int, removed: list[str], added: list[str], prev_text: str, next_text: str) -> Block:
    cands: list[tuple[str, int]] = []
    if removed:
        start, span = run_start - 1, len(removed) - 1
        cands += [(t.strip(), i) for i, t in enumerate(removed) if t.strip()]
        cands += [(t.strip(), i) for i, t in enumerate(added) if t.strip() and i <= span]
    else:  # pure insertion: anchor on the line it follows (or precedes at the top)
        start, span = max(run_start - 2, 0), 0
        anchor = prev_text if run_start > 1 else next_text
        if anchor.strip():
            cands.append((anchor.strip(), 0))
        cands += [(t.strip(), 0) for t in added[:1] if t.strip()]
    return Block(start, span, tuple(dict.fromkeys(cands)))


def change_blocks(diff: str) -> DiffInfo:
    """The changed blocks of a diff (parent's line numbers) and, for a one-constant edit, what
    changed. A diff that does not parse has no blocks (the editor shows nothing for it)."""
    try:
        hunks = parse_hunks(diff)
    except EditError:
        return DiffInfo((), None)
    blocks: list[Block] = []
    all_removed: list[str] = []
    all_added: list[str] = []
    for hunk in hunks:
        if hunk.old_start is None:
            continue  # no position to anchor by
        old_line = hunk.old_start + (1 if hunk.old_len == 0 else 0)
        run: tuple[int, list[str], list[str], str] | None = None  # start, removed, added, prev
        prev_text = ""
        for tag, content in hunk.body:
            text = _strip_eol(content)
            if tag == " ":
                if run is not None:
                    blocks.append(_block(*run, next_text=text))
                    run = None
                prev_text = text
                old_line += 1
                continue
            if run is None:
                run = (old_line, [], [], prev_text)
            if tag == "-":
                run[1].append(text)
                all_removed.append(text)
                old_line += 1
            else:
                run[2].append(text)
                all_added.append(text)
        if run is not None:
            blocks.append(_block(*run, next_text=""))
    change = None
    if len(all_removed) == 1 and len(all_added) == 1:
        a, b = _ASSIGN.match(all_removed[0]), _ASSIGN.match(all_added[0])
        if a and b and a.group(1) == b.group(1):
            change = f"{a.group(1)} {a.group(2)}→{b.group(2)}"
    return DiffInfo(tuple(blocks), change)


def parent_line(diff: str, new_line: int) -> tuple[int, str | None]:
    """Line ``new_line`` of the script a diff produces → (the line in its parent, the line's
    text when the diff shows it). Places a crash line of an experiment without git."""
    try:
        hunks = parse_hunks(diff)
    except EditError:
        return new_line, None
    shift = 0  # new - old for lines after the hunks seen so far
    for hunk in hunks:
        if hunk.old_start is None or hunk.new_start is None:
            continue
        if new_line < hunk.new_start:
            break
        old = hunk.old_start + (1 if hunk.old_len == 0 else 0)
        new = hunk.new_start + (1 if hunk.new_len == 0 else 0)
        for tag, content in hunk.body:
            if tag == " ":
                if new == new_line:
                    return old, _strip_eol(content)
                old, new = old + 1, new + 1
            elif tag == "-":
                old += 1
            else:
                if new == new_line:
                    return old, _strip_eol(content)
                new += 1
            shift = new - old
    return new_line - shift, None
