"""The guard: one cheap first look at every edit of the train script, whoever wrote it.

Every proposal (the tuner's, an LLM's, the user's own edit) passes :func:`check_edit` before
it becomes an experiment that can run. The guard reads the edit (old and new source, never
running either) and refuses the obvious ways for the code under test to reach its own verdict:
touching the fixed data and evaluation (``prepare.py``), forging the printed summary, and the
run-time routes around both (``sys.modules``, ``importlib``, ``exec``, ``ctypes``, processes,
sockets, signal hooks, the budget clock, the validation split, files outside the working
directory, exiting before the model is handed over).

Every rule is about what the edit **adds**: each one counts its findings in the old and the
new script, so code the base script already has (the trainer's ``ctypes`` for ``mallopt``,
``sys.exit`` in ``fail()``, ``os._exit(0)`` at the end) never gets an edit refused.

What it is not: a sandbox or a proof. It reads the code statically, so a determined edit can
get past it (a string built at run time, a route nobody listed). The real line is elsewhere:
the trial runs in a sandbox that cannot read the validation split, and a separate process
running the base commit's ``prepare.py`` scores the model the trial hands over; a printed
number that disagrees is ``tampered``. The guard's job is to stop the obvious cheats early,
before a trial is spent on them, with a message that says which rule, where, and what to do.
"""

from __future__ import annotations

import ast
import base64
import codecs
import difflib
import functools
import re
from collections import Counter
from dataclasses import dataclass, field

from .diff import EditError

__all__ = ["PROTECTED_MODULE", "GuardViolation", "check_edit"]

PROTECTED_MODULE = "prepare"  # the fixed data, tokenizer and metric, next to the train script
HAND_OVER = "hand_over"  # prepare.hand_over(model, DATA): the trial's model goes to the evaluator

_UNKNOWN = "\x00"  # a part of a string the guard cannot know without running the code
_MAX_FOLD = 10_000  # longest string (or loop) the guard folds
_MAX_DEPTH = 24


class GuardViolation(EditError):
    """An edit refused by the guard: ``rule`` names the rule, ``line`` is in the new script
    (or None when the problem is something the edit removed)."""

    def __init__(self, rule: str, message: str, line: int | None = None):
        where = f", line {line}" if line else ""
        super().__init__(f"rule {rule!r}{where}: {message}", line=line)
        self.rule = rule


# ------------------------------------------------------------------------------------------
# names and strings, as far as reading (not running) the code can tell


def _is_eval_name(name: str) -> bool:
    """evaluate_bpb, eval_loss; not a constant such as EVAL_SEQ_LEN (reading one is no
    measurement)."""
    return name.lower().startswith(("evaluate", "eval_")) and not name.isupper()


def _parents(tree: ast.AST) -> dict[ast.AST, tuple[ast.AST, str]]:
    out: dict[ast.AST, tuple[ast.AST, str]] = {}
    for node in ast.walk(tree):
        for name, value in ast.iter_fields(node):
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    out[child] = (node, name)
    return out


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa]")
_FORMAT_FIELD = re.compile(r"\{[^{}]*\}")


def _fill(fields: re.Pattern, template: str, args: tuple | list) -> str:
    """The template with its fields replaced by the arguments in order (unknown: _UNKNOWN),
    when formatting proper failed (an unknown value under a numeric format)."""
    values = iter(args)
    return fields.sub(lambda m: str(next(values, _UNKNOWN)), template)


class _Reader:
    """Resolves dotted names through imports and simple aliases, and folds string expressions
    ("val_" + "bpb:", f-strings, %, .format, join, chr, slicing, names bound once) into text,
    with ``_UNKNOWN`` for the parts only running the code would tell."""

    def __init__(self, tree: ast.Module):
        self.imported: dict[str, str] = {}  # local name -> dotted module path
        assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.imported[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.imported[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.imported[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        assigned.setdefault(t.id, []).append(node.value)
            elif isinstance(node, (ast.AugAssign, ast.For, ast.comprehension)):
                for t in ast.walk(node.target):
                    if isinstance(t, ast.Name):
                        assigned.setdefault(t.id, []).extend([node.target, node.target])
        # names bound exactly once: their value stands in for them when folding strings
        self.consts = {k: v[0] for k, v in assigned.items() if len(v) == 1}
        # x = <module path...>(...): x.attr resolves to "<path>().attr" (DATA = prepare.load())
        self.aliases: dict[str, str] = {}
        for _ in range(3):  # aliases of aliases, a few levels deep
            for name, values in assigned.items():
                if name in self.imported or name in self.aliases:
                    continue
                for v in values:
                    q = self.qual(v)
                    if q and q.split(".")[0].split("(")[0] in self.imported:
                        self.aliases[name] = q
                        break

    # -- dotted names ----------------------------------------------------------------------
    def qual(self, node: ast.AST, depth: int = 0) -> str | None:
        """``os.system`` for ``os.system``, ``from os import system; system`` and friends."""
        if depth > _MAX_DEPTH:
            return None
        if isinstance(node, ast.Name):
            return self.imported.get(node.id) or self.aliases.get(node.id) or node.id
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value, depth + 1)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            base = self.qual(node.func, depth + 1)
            return f"{base}()" if base else None
        if isinstance(node, ast.Subscript):
            base = self.qual(node.value, depth + 1)
            return f"{base}[]" if base else None
        return None

    def root(self, node: ast.AST) -> str | None:
        q = self.qual(node)
        return q.split(".")[0].split("(")[0].split("[")[0] if q else None

    # -- numbers and strings ---------------------------------------------------------------
    def num(self, node: ast.AST | None, env: dict | None = None, depth: int = 0) -> int | None:
        if node is None or depth > _MAX_DEPTH:
            return None
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if env and node.id in env:
                v = env[node.id]
                return v if type(v) is int else None
            value = self.consts.get(node.id)
            return self.num(value, env, depth + 1) if value is not None else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self.num(node.operand, env, depth + 1)
            return -v if v is not None else None
        if isinstance(node, ast.BinOp):
            a, b = self.num(node.left, env, depth + 1), self.num(node.right, env, depth + 1)
            if a is None or b is None:
                return None
            ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__,
                   ast.FloorDiv: int.__floordiv__, ast.Mod: int.__mod__, ast.BitXor: int.__xor__,
                   ast.BitOr: int.__or__, ast.BitAnd: int.__and__}
            op = ops.get(type(node.op))
            try:
                return op(a, b) if op else None
            except ZeroDivisionError:
                return None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "ord" and len(node.args) == 1):
            s = self.text(node.args[0], env, depth + 1)
            return ord(s) if s and len(s) == 1 and s != _UNKNOWN else None
        return None

    def _items(self, node: ast.AST, env: dict | None, depth: int) -> list | None:
        """The values a for-loop over ``node`` would see, when they are written out."""
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            out = []
            for e in node.elts:
                v = self.num(e, env, depth + 1)
                out.append(v if v is not None else self.text(e, env, depth + 1))
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self.num(a, env, depth + 1) for a in node.args]
            if node.func.id == "range" and args and None not in args:
                r = range(*args)
                return list(r) if len(r) <= _MAX_FOLD else None
            if node.func.id in ("list", "tuple", "reversed") and len(node.args) == 1:
                items = self._items(node.args[0], env, depth + 1)
                return items[::-1] if items is not None and node.func.id == "reversed" else items
        s = self.text(node, env, depth + 1)
        return list(s) if s is not None else None

    def _joined(self, node: ast.AST, env: dict | None, depth: int) -> list[str] | None:
        """The strings ``sep.join(node)`` would join."""
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)) and len(node.generators) == 1:
            gen = node.generators[0]
            items = self._items(gen.iter, env, depth + 1)
            if items is None or gen.ifs or not isinstance(gen.target, ast.Name):
                return None
            return [self.text(node.elt, {**(env or {}), gen.target.id: item}, depth + 1)
                    or _UNKNOWN for item in items]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "map" and len(node.args) == 2):
            items = self._items(node.args[1], env, depth + 1)
            if items is None:
                return None
            fn = node.args[0]
            if isinstance(fn, ast.Name) and fn.id == "chr":
                return [chr(i) if type(i) is int and 0 <= i < 0x110000 else _UNKNOWN
                        for i in items]
            if isinstance(fn, ast.Name) and fn.id == "str":
                return [str(i) if i is not None else _UNKNOWN for i in items]
            return None
        items = self._items(node, env, depth + 1)
        return [i if isinstance(i, str) else _UNKNOWN for i in items] if items else None

    def text(self, node: ast.AST | None, env: dict | None = None, depth: int = 0) -> str | None:
        """The string ``node`` evaluates to, ``_UNKNOWN`` for unknown parts; None: no string."""
        if node is None or depth > _MAX_DEPTH:
            return None
        out = self._text(node, env, depth)
        return out[:_MAX_FOLD] if out is not None else None

    def _text(self, node: ast.AST, env: dict | None, depth: int) -> str | None:
        d = depth + 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return node.value
            if isinstance(node.value, bytes):
                return node.value.decode("latin-1")
            return None
        if isinstance(node, ast.Name):
            if env and node.id in env:
                v = env[node.id]
                return v if isinstance(v, str) else None
            value = self.consts.get(node.id)
            return self.text(value, env, d) if isinstance(value, ast.expr) else None
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    s = self.text(v.value, env, d)
                    n = self.num(v.value, env, d) if s is None else None
                    parts.append(s if s is not None else str(n) if n is not None else _UNKNOWN)
                else:
                    parts.append(self.text(v, env, d) or "")
            return "".join(parts)
        if isinstance(node, ast.BinOp):
            left = self.text(node.left, env, d)
            if isinstance(node.op, ast.Add):
                right = self.text(node.right, env, d)
                if left is None and right is None:
                    return None
                return (left if left is not None else _UNKNOWN) + (
                    right if right is not None else _UNKNOWN)
            if isinstance(node.op, ast.Mult):
                s, n = (left, self.num(node.right, env, d)) if left is not None else (
                    self.text(node.right, env, d), self.num(node.left, env, d))
                if s is None:
                    return None
                return s * n if n is not None and 0 <= n * len(s) <= _MAX_FOLD else s + _UNKNOWN
            if isinstance(node.op, ast.Mod) and left is not None:
                elts = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
                args = tuple(self._arg(e, env, d) for e in elts)
                try:
                    return left % (args if isinstance(node.right, ast.Tuple) else args[0])
                except (TypeError, ValueError, KeyError):
                    return _fill(_PERCENT_FIELD, left, args)
            return None
        if isinstance(node, ast.Subscript):
            s = self.text(node.value, env, d)
            if s is None:
                return None
            sl = node.slice
            try:
                if isinstance(sl, ast.Slice):
                    bounds = [self.num(b, env, d) if b is not None else None
                              for b in (sl.lower, sl.upper, sl.step)]
                    if any(b is None and x is not None
                           for b, x in zip(bounds, (sl.lower, sl.upper, sl.step), strict=True)):
                        return _UNKNOWN
                    return s[slice(*bounds)]
                i = self.num(sl, env, d)
                return s[i] if i is not None else _UNKNOWN
            except (IndexError, ValueError):
                return _UNKNOWN
        if isinstance(node, ast.IfExp):
            a, b = self.text(node.body, env, d), self.text(node.orelse, env, d)
            return a + b if a is not None and b is not None else a if a is not None else b
        if isinstance(node, ast.Call):
            return self._call_text(node, env, d)
        return None

    def _arg(self, node: ast.AST, env: dict | None, depth: int):
        s = self.text(node, env, depth)
        if s is not None:
            return s
        n = self.num(node, env, depth)
        return n if n is not None else _UNKNOWN

    def _call_text(self, node: ast.Call, env: dict | None, d: int) -> str | None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id == "chr" and len(node.args) == 1:
                i = self.num(node.args[0], env, d)
                return chr(i) if i is not None and 0 <= i < 0x110000 else _UNKNOWN
            if func.id in ("str", "repr") and len(node.args) == 1:
                return self.text(node.args[0], env, d)
            if func.id in ("bytes", "bytearray") and len(node.args) == 1:
                items = self._items(node.args[0], env, d)
                if items is not None and all(type(i) is int and 0 <= i < 256 for i in items):
                    return bytes(items).decode("latin-1")
                return self.text(node.args[0], env, d)
            return None
        if not isinstance(func, ast.Attribute):
            return None
        q = self.qual(func) or ""
        if q in ("bytes.fromhex", "bytearray.fromhex") and node.args:
            s = self.text(node.args[0], env, d)
            try:
                return bytes.fromhex(s).decode("latin-1") if s else None
            except ValueError:
                return _UNKNOWN
        if q.startswith("base64.") and q.endswith("decode") and node.args:
            s = self.text(node.args[0], env, d)
            try:
                return getattr(base64, q.split(".")[1])(s).decode("latin-1") if s else None
            except (ValueError, TypeError, AttributeError):
                return _UNKNOWN
        if q == "codecs.decode" and len(node.args) == 2:
            s, enc = self.text(node.args[0], env, d), self.text(node.args[1], env, d)
            try:
                return codecs.decode(s, enc) if s and enc else _UNKNOWN
            except (LookupError, TypeError, ValueError):
                return _UNKNOWN
        if q.endswith(".path.join") or q == "posixpath.join":
            parts = [self.text(a, env, d) or _UNKNOWN for a in node.args]
            out = ""
            for p in parts:
                out = p if p.startswith("/") or not out else out.rstrip("/") + "/" + p
            return out or None
        if q.endswith(".path.expanduser") and node.args:
            return self.text(node.args[0], env, d)
        base = self.text(func.value, env, d)
        if base is None:
            return None
        args = [self._arg(a, env, d) for a in node.args]
        try:
            if func.attr == "join" and len(node.args) == 1:
                parts = self._joined(node.args[0], env, d)
                return base.join(parts) if parts is not None else _UNKNOWN
            if func.attr == "format":
                kw = {k.arg: self._arg(k.value, env, d) for k in node.keywords if k.arg}
                try:
                    return base.format(*args, **kw)
                except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                    return _fill(_FORMAT_FIELD, base, args)
            if func.attr in ("decode", "encode"):
                return base
            if func.attr in ("upper", "lower", "strip", "lstrip", "rstrip", "title", "casefold",
                             "capitalize", "swapcase", "replace", "zfill", "ljust", "rjust",
                             "center", "removeprefix", "removesuffix", "translate"):
                return getattr(base, func.attr)(*args)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return base + _UNKNOWN
        return None

    def outputs(self, node: ast.Call) -> str | None:
        """What a call writing to stdout/stderr writes (print, .write, os.write), else None."""
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            kw = {k.arg: k.value for k in node.keywords}
            sep = self.text(kw["sep"]) if "sep" in kw else " "
            end = self.text(kw["end"]) if "end" in kw else "\n"
            parts = []
            for a in node.args:
                if isinstance(a, ast.Starred):
                    parts.extend(self._joined(a.value, None, 0) or [_UNKNOWN])
                else:
                    parts.append(self._arg(a, None, 0))
            return (sep if sep is not None else _UNKNOWN).join(map(str, parts)) + (
                end if end is not None else _UNKNOWN)
        if isinstance(func, ast.Attribute) and func.attr in ("write", "writelines") and node.args:
            if func.attr == "writelines":
                return "".join(self._joined(node.args[0], None, 0) or [_UNKNOWN])
            return self.text(node.args[0]) or _UNKNOWN
        if self.qual(func) == "os.write" and len(node.args) == 2:
            return self.text(node.args[1]) or _UNKNOWN
        return None


# ------------------------------------------------------------------------------------------
# the facts compared between the old and the new script


@dataclass(frozen=True)
class _Hit:
    rule: str
    key: str  # what is counted: the same key in old and new is the same thing
    line: int
    text: str  # the code, for the message


@dataclass
class _Facts:
    imports: list[str] = field(default_factory=list)  # dumps of statements importing prepare
    modules: set[str] = field(default_factory=set)  # names the prepare module is bound to
    names: set[str] = field(default_factory=set)  # names imported from prepare
    bindings: Counter[str] = field(default_factory=Counter)
    binding_lines: dict[str, list[int]] = field(default_factory=dict)
    eval_attrs: set[str] = field(default_factory=set)  # evaluate_bpb of prepare.evaluate_bpb
    eval_targets: set[str] = field(default_factory=set)  # names assigned from the evaluation
    evals: list[tuple[str, int]] = field(default_factory=list)  # statements calling it
    prints: list[tuple[str, int]] = field(default_factory=list)  # statements printing metric
    hand_overs: list[tuple[str, int]] = field(default_factory=list)  # with where they sit
    exits: list[tuple[str, int, bool]] = field(default_factory=list)  # (key, line, failure)
    hits: list[_Hit] = field(default_factory=list)  # the counted run-time routes


def _src(node: ast.AST, limit: int = 70) -> str:
    try:
        text = " ".join(ast.unparse(node).split())
    except (ValueError, TypeError, AttributeError, RecursionError):
        return type(node).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


_EXIT_CALLS = {"sys.exit", "os._exit", "exit", "quit", "os.abort", "os.kill", "os.killpg",
               "signal.raise_signal", "_thread.interrupt_main"}
_MUTATORS = {"update", "clear", "pop", "popitem", "setdefault", "__setitem__", "__delitem__",
             "__setattr__", "__delattr__", "append", "extend", "insert", "remove", "fill",
             "fill_", "zero_", "copy_", "put", "resize", "sort", "reverse"}
_FILE_WRITERS = {"write_text", "write_bytes", "touch", "unlink", "rename", "replace",
                 "symlink_to", "hardlink_to", "rmdir", "mkdir", "chmod"}
_OS_FILE_CALLS = {"os.open", "os.remove", "os.unlink", "os.rename", "os.replace", "os.symlink",
                  "os.link", "os.truncate", "os.chmod", "os.chown", "os.makedirs", "os.mkdir",
                  "os.rmdir", "os.removedirs", "shutil.copy", "shutil.copy2", "shutil.copyfile",
                  "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.copyfileobj"}
_STD_STREAMS = {"/dev/stdout", "/dev/stderr", "/dev/tty", "/proc/self/fd", "/dev/fd/"}


def _prefixed(q: str, *modules: str) -> bool:
    return any(q == m or q.startswith((m + ".", m + "(", m + "[")) for m in modules)


def _route(q: str) -> str | None:
    """The rule a dotted name belongs to when it is a run-time route, else None."""
    if _prefixed(q, "sys.modules"):
        return "sys.modules"
    if _prefixed(q, "importlib", "imp", "runpy", "zipimport", "pkgutil", "reload",
                 "sys.path", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache"):
        return "importlib"
    if _prefixed(q, "builtins", "__builtins__", "sys._getframe", "inspect.currentframe",
                 "inspect.stack", "inspect.getouterframes", "gc.get_referrers", "gc.get_objects"):
        return "builtins"
    if q in ("exec", "eval", "compile", "__import__"):
        return "exec"
    if _prefixed(q, "ctypes", "_ctypes", "cffi"):
        return "ctypes"
    if (_prefixed(q, "subprocess", "pty", "pexpect", "os.system", "os.popen", "os.fork",
                  "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "multiprocessing",
                  "concurrent.futures.ProcessPoolExecutor")
            or q.startswith(("os.exec", "os.spawn"))):
        return "subprocess"
    if _prefixed(q, "socket", "http", "urllib", "requests", "ssl", "ftplib", "smtplib",
                 "xmlrpc", "httpx", "aiohttp", "websocket", "websockets"):
        return "socket"
    if _prefixed(q, "signal", "atexit", "sys.settrace", "sys.setprofile", "sys.addaudithook",
                 "threading.settrace", "threading.setprofile", "sys.excepthook",
                 "sys.unraisablehook", "faulthandler"):
        return "signal"
    return None


def _facts(source: str, metric: str) -> _Facts | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # validate_source says why
    reader = _Reader(tree)
    parents = _parents(tree)
    f = _Facts()
    nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            hit = [a for a in node.names if a.name.split(".")[0] == PROTECTED_MODULE]
            if hit:
                f.imports.append(ast.dump(node))
                f.modules.update((a.asname or a.name.split(".")[0]) for a in hit)
        elif (isinstance(node, ast.ImportFrom)
              and (node.module or "").split(".")[0] == PROTECTED_MODULE):
            f.imports.append(ast.dump(node))
            f.names.update((a.asname or a.name) for a in node.names)
        bound: list[str] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = [node.name]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound = [node.id]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound = list(node.names)
        for name in bound:
            f.bindings[name] += 1
            f.binding_lines.setdefault(name, []).append(getattr(node, "lineno", 0))
    # p = prepare: an alias of the module is the module
    for name, q in reader.aliases.items():
        if q in f.modules:
            f.modules.add(name)
    protected = f.modules | f.names  # roots of everything that belongs to prepare
    uses_prepare = bool(protected)

    def prepare_ref(node: ast.AST, pred) -> bool:  # prepare.<name>, or <name> from prepare
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return node.value.id in f.modules and pred(node.attr)
        return isinstance(node, ast.Name) and node.id in f.names and pred(node.id)

    def is_hand_over(name: str) -> bool:
        return name == HAND_OVER

    def prepare_rooted(node: ast.AST) -> bool:
        """``node`` is (an attribute or item of) prepare, a name from it, or an object it
        made (DATA = prepare.load())."""
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        if not isinstance(node, ast.Name):
            return False
        if node.id in protected:
            return True
        alias = reader.aliases.get(node.id, "")
        return alias.split(".")[0].split("(")[0].split("[")[0] in protected

    def where(node: ast.AST) -> str:
        """The chain of blocks a statement sits in (a call moved under ``if False:`` moved)."""
        out = []
        while node in parents:
            parent, name = parents[node]
            if isinstance(parent, (ast.If, ast.While)):
                out.append(f"{type(parent).__name__}({ast.dump(parent.test)}).{name}")
            elif isinstance(parent, (ast.For, ast.AsyncFor)):
                out.append(f"for({ast.dump(parent.iter)}).{name}")
            elif isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.append(f"def {parent.name}.{name}")
            elif isinstance(parent, (ast.With, ast.Try, ast.Match, ast.match_case)):
                out.append(f"{type(parent).__name__}.{name}")
            node = parent
        return "/".join(reversed(out))

    def hit(rule: str, node: ast.AST, key_node: ast.AST | None = None) -> None:
        line = getattr(node, "lineno", 0)
        f.hits.append(_Hit(rule, ast.dump(key_node or node), line, _src(key_node or node)))

    marker = re.compile(re.escape(metric) + r"\s*:") if metric else None
    # print("val_bpb", end="") then print(": 0.5"): a line left open after the metric's name
    line_end = re.compile(re.escape(metric) + r"[ \t" + _UNKNOWN + r"]*$") if metric else None
    for node in nodes:
        if prepare_ref(node, _is_eval_name) and isinstance(node, ast.Attribute):
            f.eval_attrs.add(node.attr)
        if prepare_ref(node, is_hand_over) and isinstance(node, ast.Attribute):
            f.eval_attrs.add(node.attr)
        # -- simple statements: evaluation, hand-over, printing the metric ------------------
        if isinstance(node, ast.stmt) and not hasattr(node, "body"):
            subs = list(ast.walk(node))
            calls_eval = any(prepare_ref(s, _is_eval_name) for s in subs)
            hands_over = any(prepare_ref(s, is_hand_over) for s in subs)
            prints = False
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if marker and not docstring:
                for s in subs:
                    out = reader.outputs(s) if isinstance(s, ast.Call) else None
                    if out is not None and (marker.search(out) or line_end.search(out)):
                        prints = True
                        break
                    if isinstance(s, (ast.expr, ast.Constant)) and not isinstance(
                            s, (ast.Name, ast.Attribute)):
                        text = reader.text(s)
                        if text and marker.search(text):
                            prints = True
                            break
            if calls_eval:
                f.evals.append((ast.dump(node), node.lineno))
            if (calls_eval or hands_over) and isinstance(node, (ast.Assign, ast.AnnAssign)):
                # val_bpb = prepare.evaluate_bpb(...) or prepare.hand_over(model, DATA)
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    f.eval_targets.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            if prints and not calls_eval:
                f.prints.append((ast.dump(node), node.lineno))
            if hands_over:
                f.hand_overs.append((f"{where(node)}:{ast.dump(node)}", node.lineno))
        # -- dotted names: the run-time routes ----------------------------------------------
        if isinstance(node, (ast.Name, ast.Attribute)):
            parent, name = parents.get(node, (None, ""))
            if isinstance(parent, ast.Attribute) and name == "value":
                pass  # only the whole chain counts: os.system, not os
            else:
                q = reader.qual(node) or ""
                found = None if isinstance(node, ast.Name) and not isinstance(
                    node.ctx, ast.Load) else _route(q)
                if found is None and isinstance(node, ast.Attribute) and node.attr in (
                        "__builtins__", "__globals__", "__subclasses__", "__code__",
                        "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame"):
                    found = "builtins"
                if found is not None:
                    key = parent if isinstance(parent, ast.Call) and name == "func" else node
                    hit(found, node, key)
                if q in _EXIT_CALLS and isinstance(parent, ast.Call) and name == "func":
                    f.exits.append((ast.dump(parent), node.lineno, _failure_exit(parent, reader)))
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
                    if prepare_rooted(node.value):
                        hit("prepare", node, parents.get(node, (node,))[0])
                    elif _prefixed(q, "time"):
                        hit("clock", node, parents.get(node, (node,))[0])
                    elif q in ("sys.stdout", "sys.stderr", "builtins.print"):
                        hit("stdout", node, parents.get(node, (node,))[0])
                if isinstance(node, ast.Attribute) and node.attr == "val" and uses_prepare:
                    hit("validation", node)
                if isinstance(node, ast.Attribute) and q.startswith(("sys.__stdout__",
                                                                     "sys.__stderr__")):
                    hit("stdout", node)
            if isinstance(node, ast.Name) and node.id == "is_val" and uses_prepare:
                hit("validation", node)
            if (isinstance(node, ast.Name) and node.id == "print"
                    and isinstance(node.ctx, (ast.Store, ast.Del))):
                hit("stdout", node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                node.name == "print":
            hit("stdout", node)
        if isinstance(node, ast.Attribute) and node.attr == "is_val" and uses_prepare:
            hit("validation", node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""])
            found = next((r for r in map(_route, names) if r is not None), None)
            if found is not None:
                hit(found, node)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            value = node.value
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
                    value.func.id in ("globals", "locals", "vars"):
                hit("namespace", node, parents.get(node, (node,))[0])
            elif prepare_rooted(value):
                hit("prepare", node, parents.get(node, (node,))[0])
        if isinstance(node, ast.Call):
            _calls(node, reader, f, hit, prepare_rooted, uses_prepare)
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if reader.qual(exc) in ("SystemExit", "KeyboardInterrupt"):
                failure = isinstance(node.exc, ast.Call) and _failure_exit(node.exc, reader)
                f.exits.append((ast.dump(node), node.lineno, failure))
        if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp, ast.Call)):
            parent = parents.get(node, (None, ""))[0]
            if isinstance(parent, (ast.BinOp, ast.JoinedStr, ast.FormattedValue)) or (
                    isinstance(node, ast.Constant) and isinstance(parent, ast.Expr)):
                continue  # the whole expression is looked at once; a docstring does nothing
            text = reader.text(node) if not isinstance(node, ast.Constant) or isinstance(
                node.value, (str, bytes)) else None
            if text:
                if "prepare.py" in text and not isinstance(node, ast.Constant):
                    hit("prepare.py", node)
                if "val.bin" in text and uses_prepare:
                    hit("validation", node)
                if any(s in text for s in _STD_STREAMS):
                    hit("stdout", node)
    return f


def _failure_exit(call: ast.Call, reader: _Reader) -> bool:
    """sys.exit(1), os._exit(2), sys.exit("message"): an exit that can only end as a crash."""
    q = reader.qual(call.func) or ""
    if q == "os.abort":
        return True
    if not call.args:
        return False
    n = reader.num(call.args[0])
    if n is not None:
        return n != 0 and q not in ("os.kill", "os.killpg")
    text = reader.text(call.args[0])
    return bool(text) and q in ("sys.exit", "exit", "quit", "SystemExit")


def _calls(node: ast.Call, reader: _Reader, f: _Facts, hit, prepare_rooted,
           uses_prepare: bool) -> None:
    func = node.func
    q = reader.qual(func) or ""
    args = node.args
    # setattr(prepare, ...), object.__setattr__(prepare, ...), setattr(time, "time", ...)
    if (q in ("setattr", "delattr") or q.endswith((".__setattr__", ".__delattr__"))) and args:
        target = reader.qual(args[0]) or ""
        if prepare_rooted(args[0]):
            hit("prepare", node)
        elif _prefixed(target, "time"):
            hit("clock", node)
        elif target in ("sys", "builtins") or _prefixed(target, "sys.stdout", "sys.stderr"):
            hit("stdout" if target != "builtins" else "builtins", node)
    # prepare.EVAL_TOKENS.update(...), DATA.token_bytes.fill(0)
    if isinstance(func, ast.Attribute) and func.attr in _MUTATORS and prepare_rooted(func.value):
        hit("prepare", node)
    # globals().update(...), vars(prepare), prepare.__dict__
    if isinstance(func, ast.Attribute) and func.attr in _MUTATORS and isinstance(
            func.value, ast.Call) and isinstance(func.value.func, ast.Name) and \
            func.value.func.id in ("globals", "locals", "vars"):
        hit("namespace", node)
    if q == "vars" and args and (prepare_rooted(args[0]) or (reader.qual(args[0]) or "")
                                 in reader.imported.values()):
        hit("namespace", node)
    if q == "getattr" and len(args) >= 2:
        name = reader.text(args[1])
        if name in ("val", "is_val") and uses_prepare:
            hit("validation", node)
        elif name and _UNKNOWN not in name and _route(f"{reader.qual(args[0])}.{name}"):
            hit(_route(f"{reader.qual(args[0])}.{name}"), node)
        elif name in ("__builtins__", "__globals__", "__dict__", "__subclasses__"):
            hit("builtins", node)
    # documents("val") / documents(split="val")
    if isinstance(func, ast.Attribute) and func.attr == "documents" and uses_prepare:
        values = list(args) + [k.value for k in node.keywords]
        if any(reader.text(v) == "val" for v in values):
            hit("validation", node)
    # open("/abs/path", "w"), Path("/abs").write_text(...), shutil.copy(..., "/abs")
    path_args: list[ast.AST] = []
    writes = False
    if q in ("open", "io.open", "codecs.open") and args:
        mode_node = args[1] if len(args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        mode = reader.text(mode_node) if mode_node is not None else "r"
        writes = mode is None or any(c in mode for c in "wax+" + _UNKNOWN)
        n = reader.num(args[0])
        if n in (1, 2) and writes:
            hit("stdout", node)
        path_args = [args[0]]
    elif (q in ("os.fdopen", "os.write") and args and reader.num(args[0]) in (1, 2)) or q in (
            "os.dup2", "os.dup", "contextlib.redirect_stdout", "contextlib.redirect_stderr"):
        hit("stdout", node)
    elif q in _OS_FILE_CALLS:
        writes, path_args = True, list(args)
    elif isinstance(func, ast.Attribute) and func.attr in _FILE_WRITERS | {"open"}:
        inner = func.value
        while isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Div):
            inner = inner.left
        if isinstance(inner, ast.Call) and (reader.qual(inner.func) or "").split(".")[-1] in (
                "Path", "PosixPath", "PurePath"):
            if func.attr == "open":
                mode_node = args[0] if args else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                mode = reader.text(mode_node) if mode_node is not None else "r"
                writes = mode is None or any(c in mode for c in "wax+" + _UNKNOWN)
            else:
                writes = True
            path_args = inner.args[:1]
    if writes:
        for p in path_args:
            text = reader.text(p) or ""
            if text.startswith(("/", "~")) or "../" in text or text == "..":
                hit("files", node)
                break


# ------------------------------------------------------------------------------------------
# the check


_DO = {
    "prepare.py": "edit only the train script",
    "sys.modules": "use the modules through their names, as imported",
    "namespace": "assign the names directly instead of writing to globals()/vars()",
    "importlib": "import what the script needs at the top, once, as it is",
    "builtins": "leave the builtins and the interpreter's frames alone",
    "exec": "write the code out in the script instead",
    "ctypes": "stay in Python and torch",
    "subprocess": "do the work in this process; a trial runs one training script",
    "socket": "a trial has no network; work with the data prepare.py gives",
    "signal": "let the runner own signals, exit and tracing",
    "clock": "the budget clock is the runner's; make training faster instead",
    "validation": "train on DATA.train only; the validation split is for the evaluator",
    "files": "write only inside the working directory (or the SIGMALOOP_METRICS file)",
    "stdout": "print progress with print(); the summary block is printed as it is",
    "prepare": "leave prepare alone: change the training, not the measurement "
               "(monkeypatching the fixed data or metric)",
}


def _changed_lines(old: str, new: str) -> set[int]:
    """Lines of ``new`` (1-based) the edit inserted or replaced."""
    a, b = old.splitlines(), new.splitlines()
    out: set[int] = set()
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            out.update(range(j1 + 1, j2 + 1))
    return out


def _added(was: list[tuple], now: list[tuple], changed: set[int]) -> tuple | None:
    """One item (key, line, ...) of ``now`` whose key ``now`` has more often than ``was``: one
    on a line the edit changed where there is one. None when nothing was added."""
    extra = Counter(item[0] for item in now)
    extra.subtract(Counter(item[0] for item in was))
    candidates = [item for item in now if extra[item[0]] > 0]
    if not candidates:
        return None
    return min(candidates, key=lambda item: (item[1] not in changed, item[1]))


def _same(was: list[tuple], now: list[tuple]) -> bool:
    return Counter(item[0] for item in was) == Counter(item[0] for item in now)


@functools.lru_cache(maxsize=16)
def _cached(source: str, metric: str) -> _Facts | None:
    return _facts(source, metric)


def _anchor(f: _Facts) -> int | None:
    """The line where the trained model leaves the script: the hand-over, else the evaluation,
    else the printed metric."""
    for group in (f.hand_overs, f.evals, f.prints):
        if group:
            return min(line for _, line in group)
    return None


def _early_exits(f: _Facts) -> list[tuple[str, int]]:
    """Exits that could end the script successfully before its anchor."""
    anchor = _anchor(f)
    if anchor is None:
        return []
    return [(key, line) for key, line, failure in f.exits if line < anchor and not failure]


def check_edit(old: str, new: str, metric: str = "val_bpb") -> None:
    """Raise :class:`GuardViolation` when the edit ``old`` → ``new`` adds a way for the code
    under test to reach its own verdict; every rule counts only what the edit adds.

    The rules (each message names its rule):
      prepare.py   no new mention of prepare.py (opening, copying or rewriting it);
      imports      the statements importing prepare stay exactly as they are;
      prepare      no assignment, setattr, item write or mutating call on prepare, a name
                   from it, or an object it returned (monkeypatching evaluate_bpb, EVAL_TOKENS,
                   hand_over, DATA);
      hand_over    the base's prepare.hand_over(...) call stays, unchanged and where it is;
      redefines    nothing new is bound to prepare, a name from it, the evaluation it calls
                   or the variable holding the evaluation's result;
      evaluation   the statements calling the evaluation stay the same (they may move);
      summary      no new or changed statement printing ``<metric>:``, however the text is
                   put together ("val_" + "bpb:", f-strings, %, format, chr, join, slicing,
                   sys.stdout.write, os.write, a line left open with end="");
      exit         no new exit that could end well (sys.exit(), os._exit(0), raise
                   SystemExit) before the model is handed over (or evaluated, or the metric
                   printed); a failure exit (sys.exit(1), fail(...)) is fine;
      sys.modules, namespace (globals()/locals()/vars() writes), importlib (also sys.path),
      builtins (also frames), exec (exec/eval/compile/__import__), ctypes, subprocess
      (also os.system/popen/exec*/spawn*/fork), socket (and other network modules), signal
      (also atexit and trace hooks), clock (patching time.*), validation (DATA.val, is_val,
      documents("val"), "val.bin"), files (writes to absolute paths), stdout (raw routes
      around print(): os.write(1, ...), sys.__stdout__, /dev/stdout, rebinding print or
      sys.stdout): none new.

    A first line of defence, not a sandbox (see the module docstring). A script that does not
    parse passes: :func:`sigmaloop.edits.validate_source` reports it.
    """
    metric = metric or ""
    if new.count("prepare.py") > old.count("prepare.py"):
        line = next((i for i, ln in enumerate(new.splitlines(), 1) if "prepare.py" in ln), None)
        raise GuardViolation(
            "prepare.py",
            "the edit mentions prepare.py; prepare.py (data, tokenizer, metric) is fixed: edit "
            "only the train script", line)
    was, now = _cached(old, metric), _cached(new, metric)
    if was is None or now is None:
        return
    changed = _changed_lines(old, new)
    if sorted(was.imports) != sorted(now.imports):
        raise GuardViolation(
            "imports",
            "the edit changes the imports from prepare (the fixed data and metric); leave them "
            "as they are", min(changed, default=None))
    _check_hits(was, now, changed, ("prepare",))
    if was.hand_overs and not _same(was.hand_overs, now.hand_overs):
        extra = _added(was.hand_overs, now.hand_overs, changed)
        raise GuardViolation(
            "hand_over",
            "the edit removes, changes or moves the prepare.hand_over(...) call that gives "
            "the trained model to the evaluator; keep it exactly as it is, where it is",
            extra[1] if extra else None)
    guarded = was.modules | was.names | {PROTECTED_MODULE} | was.eval_attrs | was.eval_targets
    for name in sorted(guarded):
        if now.bindings[name] > was.bindings[name]:
            lines = now.binding_lines.get(name) or [0]
            line = min(lines, key=lambda ln: (ln not in changed, ln))
            raise GuardViolation(
                "redefines",
                f"the edit (re)defines {name!r}, which belongs to the fixed evaluation; "
                "the metric must come from prepare.py unchanged", line or None)
    if not _same(was.evals, now.evals):
        extra = _added(was.evals, now.evals, changed)
        raise GuardViolation(
            "evaluation",
            "the edit changes the evaluation call; it is fixed: change the training, not the "
            "measurement", extra[1] if extra else None)
    if not _same(was.prints, now.prints):
        extra = _added(was.prints, now.prints, changed)
        raise GuardViolation(
            "summary",
            f"the edit changes or adds a line printing {metric} (the summary the verdict "
            "reads); the line printing the metric is fixed: change the training, not the "
            "measurement", extra[1] if extra else None)
    extra = _added(_early_exits(was), _early_exits(now), changed)
    if extra is not None:
        raise GuardViolation(
            "exit",
            f"the edit adds an exit before line {_anchor(now)}, where the model is handed over "
            "(or evaluated); end a failed run with fail(...) or sys.exit(1), else let the "
            "script run to its end", extra[1])
    _check_hits(was, now, changed, tuple(_DO))


def _check_hits(was: _Facts, now: _Facts, changed: set[int], rules: tuple[str, ...]) -> None:
    for rule in rules:
        extra = _added([(h.key, h.line, h) for h in was.hits if h.rule == rule],
                       [(h.key, h.line, h) for h in now.hits if h.rule == rule], changed)
        if extra is not None:
            h = extra[2]
            raise GuardViolation(rule, f"the edit adds `{h.text}`, which {_WHAT[rule]}; "
                                 f"{_DO[rule]}", h.line or None)


_WHAT = {
    "sys.modules": "reaches into sys.modules (where prepare lives once imported)",
    "namespace": "writes names through globals()/locals()/vars() or a module's dict",
    "importlib": "loads, reloads or redirects modules at run time",
    "builtins": "reaches the interpreter's builtins or frames",
    "exec": "runs code the guard cannot read",
    "ctypes": "calls native code through ctypes",
    "subprocess": "starts another process",
    "socket": "opens a network connection",
    "signal": "installs a signal, exit or trace hook",
    "clock": "patches the time module (the budget clock)",
    "validation": "reads the validation split",
    "files": "writes a file outside the working directory",
    "stdout": "writes to stdout around print() (a forged summary's route)",
    "prepare": "writes to prepare (the fixed data and evaluation) or to what it returned",
    "prepare.py": "mentions prepare.py (the fixed data, tokenizer and metric)",
}
