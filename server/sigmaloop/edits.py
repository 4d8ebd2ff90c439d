"""Edits of the train script: diffs, search/replace blocks, validation and constants.

Shared by every proposer (the built-in tuner, the LLM proposer, a user's diff): an edit is
checked here before anything runs, and the messages say what is wrong in words a user (or a
model asked to retry) can act on.

Line numbers are 1-based; columns are 0-based character offsets (not UTF-8 bytes).
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass

__all__ = [
    "Constant",
    "EditError",
    "apply_search_replace",
    "apply_unified_diff",
    "changed_lines",
    "find_constants",
    "format_value",
    "set_constants",
    "unified_diff",
    "validate_source",
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


def _lines(text: str) -> list[str]:
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
    for line in difflib.unified_diff(_lines(old), _lines(new), f"a/{path}", f"b/{path}", n=context):
        out.append(line)
        if not line.endswith(("\n", "\r")):
            out.append("\n" + _NO_NEWLINE)
    return "".join(out)


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class _Hunk:
    header: str
    old_start: int | None  # None: a header without numbers ("@@ ... @@"), position unknown
    old_len: int | None
    body: list[list[str]]  # [tag, content] with tag in " -+"; content keeps its line end


def _diff_path(header_line: str) -> str:
    path = header_line[4:].strip().split("\t")[0]
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def _parse_diff(diff: str) -> list[_Hunk]:
    if diff and not diff.endswith("\n"):
        diff += "\n"
    lines = re.findall(r"[^\n]*\n", diff)
    hunks: list[_Hunk] = []
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
            new_len = int(m.group(4)) if m.group(4) is not None else 1
        else:
            old_start = old_len = new_len = None
        hunk = _Hunk(line.rstrip("\n"), old_start, old_len, [])
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
    hunks = _parse_diff(diff)
    old_lines = _lines(old)
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
# search/replace blocks


def _preview(text: str) -> str:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())
    return repr(first[:60] + ("..." if len(first) > 60 else ""))


def apply_search_replace(old: str, blocks: list[tuple[str, str]]) -> str:
    """Apply (search, replace) blocks in order; each search text must occur exactly once."""
    text = old
    for number, (search, replace) in enumerate(blocks, 1):
        if not search:
            raise EditError(f"search/replace block {number}: the search text is empty")
        count = text.count(search)
        if count == 0:
            raise EditError(
                f"search/replace block {number}: the search text (starting {_preview(search)}) "
                "is missing from the file; copy it exactly, including indentation"
            )
        if count > 1:
            raise EditError(
                f"search/replace block {number}: the search text (starting {_preview(search)}) "
                f"is ambiguous: it occurs {count} times; include more surrounding lines"
            )
        text = text.replace(search, replace, 1)
    return text


# --------------------------------------------------------------------------------------
# validation


def _is_seed_call(func: ast.expr) -> bool:
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in ("manual_seed", "manual_seed_all"):
        return True
    if func.attr != "seed":
        return False
    owner = func.value
    # random.seed(...), np.random.seed(...), numpy.random.seed(...)
    return (isinstance(owner, ast.Name) and owner.id == "random") or (
        isinstance(owner, ast.Attribute) and owner.attr == "random"
    )


def _is_seed_name(name: str) -> bool:
    return "SEED" in name.upper()


class _SeedStripper(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _is_seed_call(node.func):
            node.args = []
            node.keywords = []
        return node


def _seedless(tree: ast.Module) -> str:
    def seed_assignment(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Assign):
            return all(isinstance(t, ast.Name) and _is_seed_name(t.id) for t in stmt.targets)
        if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            return isinstance(stmt.target, ast.Name) and _is_seed_name(stmt.target.id)
        return False

    tree.body = [stmt for stmt in tree.body if not seed_assignment(stmt)]
    return ast.dump(_SeedStripper().visit(tree))


def validate_source(new: str, old: str) -> None:
    """Raise EditError unless ``new`` is a runnable, meaningful edit of ``old``.

    Rejected: a script that does not parse, no change at all, a change of comments or
    formatting only (the same code would run), a change of the seed only.
    """
    try:
        new_tree = ast.parse(new)
    except SyntaxError as exc:
        where = f"line {exc.lineno}, column {exc.offset}" if exc.lineno else "unknown place"
        text = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        raise EditError(
            f"the edit does not parse: {exc.msg} ({where}){text}",
            line=exc.lineno,
            col=(exc.offset - 1) if exc.offset else None,
        ) from None
    if new == old:
        raise EditError("the edit changes nothing")
    try:
        old_tree = ast.parse(old)
    except SyntaxError:
        return  # the old script is broken; any parsing new version is a change
    if ast.dump(new_tree) == ast.dump(old_tree):
        raise EditError("the edit changes only comments or formatting; the same code would run")
    if _seedless(new_tree) == _seedless(old_tree):
        raise EditError("changing only the seed is never a finding")


# --------------------------------------------------------------------------------------
# changed lines


def changed_lines(old: str, new: str) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of ``old`` that the edit touches.

    A pure insertion maps to the line it follows (or, at the top, the line it precedes).
    """
    a, b = _lines(old), _lines(new)
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
# constants

_CONST_NAME = re.compile(r"^_*[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Constant:
    """A top-level ``NAME = <literal>`` of the script.

    ``lineno`` is 1-based; ``col``/``end_col`` are 0-based character offsets of the literal
    (including a leading minus sign) on that line; ``text`` is the literal as written.
    """

    name: str
    value: int | float | bool
    lineno: int
    col: int
    end_col: int
    text: str


def _literal(node: ast.expr | None) -> int | float | bool | None:
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, (bool, int, float)):
            return v
        return None
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        v = node.operand.value
        return -v if isinstance(node.op, ast.USub) else v
    return None


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def find_constants(source: str) -> list[Constant]:
    """Top-level UPPER_CASE names bound to an int, float or bool literal, in source order.

    Skipped: strings, None, tuples and other non-numbers; literals spanning lines; names
    assigned more than once at the top level (it would be unclear which binding counts).
    Raises SyntaxError when the source does not parse.
    """
    tree = ast.parse(source)
    lines = _lines(source)
    counts: dict[str, int] = {}
    found: list[Constant] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
            value = stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
            value = stmt.value
        else:
            continue
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    counts[node.id] = counts.get(node.id, 0) + 1
        if len(targets) != 1 or not isinstance(targets[0], ast.Name) or value is None:
            continue
        name = targets[0].id
        literal = _literal(value)
        if literal is None or not _CONST_NAME.match(name):
            continue
        if value.end_lineno != value.lineno or value.end_col_offset is None:
            continue
        line = lines[value.lineno - 1]
        col = _char_col(line, value.col_offset)
        end_col = _char_col(line, value.end_col_offset)
        found.append(Constant(name, literal, value.lineno, col, end_col, line[col:end_col]))
    return [c for c in found if counts.get(c.name, 0) == 1]


def _float_text(v: float, digits: int) -> str:
    if not math.isfinite(v):
        raise EditError(f"{v!r} cannot be written as a Python literal")
    text = f"{v:.{digits}g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        exp_value = int(exp)
        text = f"{mantissa}e{exp_value}"
    elif "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text


def format_value(
    value: int | float | bool, like: int | float | bool | None = None, digits: int = 4
) -> str:
    """A compact literal for ``value``.

    Floats keep ``digits`` significant digits and always read back as floats ("3.0",
    "1e-5"); ints stay ints; bools are True/False. ``like`` is the value being replaced: a
    float slot keeps float syntax for an integral value, an int slot takes an integral
    float as an int.
    """
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(like, bool):
        raise EditError(f"{value!r} is not True or False")
    if isinstance(value, int):
        if isinstance(like, float):
            return _float_text(float(value), digits)
        return str(value)
    if isinstance(value, float):
        if isinstance(like, int) and value.is_integer():
            return str(int(value))
        return _float_text(value, digits)
    raise EditError(f"{value!r} is not a number or bool")


def set_constants(source: str, values: dict[str, int | float | bool], digits: int = 4) -> str:
    """Replace the literals of top-level constants in place, keeping comments and layout."""
    try:
        constants = {c.name: c for c in find_constants(source)}
    except SyntaxError as exc:
        raise EditError(
            f"the script does not parse: {exc.msg} (line {exc.lineno})", line=exc.lineno
        ) from None
    missing = [name for name in values if name not in constants]
    if missing:
        raise EditError(
            f"no top-level numeric constant named {', '.join(missing)} "
            f"(found: {', '.join(constants) or 'none'})"
        )
    lines = _lines(source)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    edits = []
    for name, value in values.items():
        c = constants[name]
        base = starts[c.lineno - 1]
        edits.append((base + c.col, base + c.end_col, format_value(value, c.value, digits)))
    out = source
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out
