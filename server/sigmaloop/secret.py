"""The LLM key: held in this process's memory only, and cut out of every text we store or send.

* :func:`take_from_environment` moves ``OPENAI_API_KEY`` out of the environment before any child
  process starts (git, trials, pip): it leaves ``os.environ``, its bytes in the process's
  original environment block (what ``/proc/<pid>/environ`` shows) are overwritten, and the
  process marks itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``) so other processes of the
  same user can't read its memory or environment.
* :func:`set_key` takes a key handed over by the editor (over the LSP connection).
* :func:`redact` is the one redactor: logs, crash messages, verdicts, prompts and exports pass
  through it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading

KEY_ENV = "OPENAI_API_KEY"
_PR_SET_DUMPABLE = 4
_MIN_SECRET = 8  # shorter values are too likely to occur by chance to be replaced blindly
_SK_RE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")

_lock = threading.Lock()
_key: str | None = None
_secrets: set[str] = set()


def take_from_environment(env_name: str = KEY_ENV) -> str | None:
    """Move the key from the environment into memory (see the module docstring); returns it."""
    value = os.environ.pop(env_name, None)
    if value and value.strip():
        set_key(value.strip())
        _overwrite_initial_environment(value)
    if value is not None:
        protect_process()
    return key()


def set_key(value: str | None) -> None:
    """Use ``value`` as the LLM key from now on (``None``/empty: none); it is also redacted."""
    global _key
    with _lock:
        _key = (value or "").strip() or None
        if _key:
            _secrets.add(_key)


def key() -> str | None:
    with _lock:
        return _key


def remember(value: str | None) -> None:
    """Another value to cut out of stored text (e.g. a key from a config the user passed)."""
    if value and len(value.strip()) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value.strip())


def redact(text: str) -> str:
    """``text`` with every known secret (and anything shaped like an OpenAI key) as ``***``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return _SK_RE.sub("sk-***", text)


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for raw bytes (a trial's log); unchanged when nothing is known to hide."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        data = data.replace(s.encode(), b"***")
    return data


def protect_process() -> bool:
    """Mark this process non-dumpable (Linux): same-user processes can't read its memory or
    ``/proc/<pid>/environ``. Returns whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _overwrite_initial_environment(value: str) -> None:
    """Overwrite ``value`` in the environment block the kernel shows as /proc/self/environ
    (unsetenv only drops the pointer; the bytes stay). Best effort, Linux only."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        env_start, env_end = int(fields[47]), int(fields[48])  # fields 50, 51 of proc(5)
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
        needle = value.encode()
        at = block.find(needle)
        while at != -1 and env_start + at + len(needle) <= env_end:
            ctypes.memset(env_start + at, ord("*"), len(needle))
            at = block.find(needle, at + len(needle))


def forget() -> None:
    """Drop the key and every remembered secret (tests; a user removing the key)."""
    global _key
    with _lock:
        _key = None
        _secrets.clear()
