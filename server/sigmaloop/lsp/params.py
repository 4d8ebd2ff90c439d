"""Typed parameters: command arguments and request params → the dataclasses of :mod:`.protocol`.

Arguments come positional (``[14, "too slow"]``, in field order) or as one object
(``[{"id": 14, "reason": "too slow"}]``, camelCase names); defaults fill what is left out. The
conversion is cattrs with strict hooks (no ``"14"`` or ``true`` for an integer, no number for a
string, a list must be a list) and unknown names are refused; a mismatch is a
:class:`ParamsError` that names the argument and what it must be.

pygls's own command-argument conversion is not used: it structures only as many arguments as
were sent, so a parameter with a default fails when the client sends ``[]`` (VS Code does for a
command without arguments), and lsprotocol's converter is lenient (``true`` or ``1.7`` become the
integer 1, ``5`` the string "5").
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin

import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .protocol import camel


class ParamsError(ValueError):
    """Arguments that do not fit a command's parameters; the message names the argument."""


def _strict(kind: type, what: str):
    def hook(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"must be {what}, not {value!r}")
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise TypeError(f"must be {what}, not {value!r}")
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind, what in ((int, "an integer"), (float, "a number"), (str, "a string"),
                       (bool, "true or false")):
        conv.register_structure_hook(kind, _strict(kind, what))

    def dataclass_hook(cls: type) -> Any:
        renames = {f.name: override(rename=camel(f.name)) for f in fields(cls)}
        return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames)

    def literal_hook(tp: Any) -> Any:
        allowed = get_args(tp)

        def hook(value: Any, _type: Any) -> Any:
            if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
                raise TypeError(f"must be {' or '.join(repr(a) for a in allowed)}, not {value!r}")
            return value

        return hook

    def list_hook(tp: Any) -> Any:
        (item,) = get_args(tp) or (Any,)

        def hook(value: Any, _type: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"must be a list, not {value!r}")
            return [conv.structure(v, item) for v in value]

        return hook

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, literal_hook)
    conv.register_structure_hook_factory(lambda t: get_origin(t) is list, list_hook)
    conv.register_structure_hook_factory(dataclasses.is_dataclass, dataclass_hook)
    return conv


converter = _make_converter()


def plain(value: Any) -> Any:
    """pygls hands unknown methods' params over as namedtuples: back to JSON values."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def structure(cls: type, arguments: Any, what: str) -> Any:
    """Command arguments (positional ``[a, b]``, or one object ``[{"a": …}]``) or request
    params (an object) → ``cls``; :class:`ParamsError` names the argument and what it must be."""
    arguments = plain(arguments)
    names = [camel(f.name) for f in fields(cls)]
    if arguments is None:
        data: Any = {}
    elif isinstance(arguments, dict):
        data = arguments
    elif isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], dict):
        data = arguments[0]
    elif isinstance(arguments, list):
        if len(arguments) > len(names):
            raise ParamsError(f"{what} takes at most {len(names)} argument"
                              f"{'s' if len(names) != 1 else ''} ({', '.join(names) or 'none'}), "
                              f"got {len(arguments)}")
        data = dict(zip(names, arguments))
    else:
        raise ParamsError(f"{what}: arguments must be a list or an object, not {arguments!r}")
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        raise ParamsError(f"{what}: {_explain(exc, names)}") from None


def _explain(exc: BaseException, names: list[str]) -> str:
    problems = []
    for leaf, name in _leaves(exc, ""):
        if isinstance(leaf, KeyError):
            problems.append(f"needs {name or leaf.args[0]} (arguments: [{', '.join(names)}])")
        elif isinstance(leaf, cattrs.ForbiddenExtraKeysError):
            problems.append(f"unknown argument{'s' if len(leaf.extra_fields) > 1 else ''} "
                            f"{', '.join(sorted(leaf.extra_fields))} (known: {', '.join(names)})")
        elif name:
            text = str(leaf)
            problems.append(f"{name} {text if text.startswith('must be') else 'is invalid: ' + text}")
        else:
            problems.append(str(leaf))
    return "; ".join(problems) or str(exc)


try:
    _Group = BaseExceptionGroup
except NameError:  # Python 3.10: cattrs depends on the backport
    from exceptiongroup import BaseExceptionGroup as _Group


def _leaves(exc: BaseException, name: str):
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        yield exc, name
        return
    if isinstance(exc, _Group):
        for sub in exc.exceptions:
            sub_name = name
            for note in getattr(sub, "__notes__", ()):
                attr = getattr(note, "name", None)
                if isinstance(attr, str):
                    sub_name = f"{name}.{camel(attr)}" if name else camel(attr)
            yield from _leaves(sub, sub_name)
        return
    yield exc, name
