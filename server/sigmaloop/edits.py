"""Edits of the train script: diffs, search/replace blocks, validation and constants.

Shared by every proposer (the built-in tuner, the LLM proposer, a user's diff): an edit is
checked here before anything runs, and the messages say what is wrong in words a user (or a
model asked to retry) can act on.

Line numbers are 1-based; columns are 0-based character offsets (not UTF-8 bytes).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

from .diff import EditError, lines_of

__all__ = [
    "Constant",
    "EditError",
    "apply_search_replace",
    "find_constants",
    "format_value",
    "set_constants",
    "validate_source",
]


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
    lines = lines_of(source)
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
    lines = lines_of(source)
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
