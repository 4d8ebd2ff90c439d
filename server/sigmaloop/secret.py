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
import ipaddress
import os
import re
import sys
import threading
from urllib.parse import urlsplit

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "not-needed"  # what a loopback server gets: local servers ignore the key
_PR_SET_DUMPABLE = 4
_MIN_SECRET = 8  # shorter values are too likely to occur by chance to be replaced blindly
_SK_RE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")

_lock = threading.Lock()
_key: str | None = None
_key_host: str | None = None  # the host the key is for
_trusted: set[str] = set()  # hosts the user said may receive the key
_secrets: set[str] = set()


class EndpointRefused(ValueError):
    """The key would go somewhere the user did not send it; the message says how to allow it.
    ``host`` is set when trusting that host would allow it (an editor asks the user)."""

    def __init__(self, message: str, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


def take_from_environment(env_name: str = KEY_ENV) -> str | None:
    """Move the key from the environment into memory (see the module docstring); returns it."""
    value = os.environ.pop(env_name, None)
    if value and value.strip():
        set_key(value.strip())
        _overwrite_initial_environment(value)
    if value is not None:
        protect_process()
    return key()


def set_key(value: str | None, host: str | None = None) -> None:
    """Use ``value`` as the LLM key from now on (``None``/empty: none), for ``host`` (default:
    the host of ``$OPENAI_BASE_URL``, else OpenAI's); it is also redacted everywhere."""
    global _key, _key_host
    with _lock:
        _key = (value or "").strip() or None
        _key_host = (host or host_of(os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)) if _key else None
        if _key:
            _secrets.add(_key)


def trust(host: str) -> None:
    """The user allows the key to go to ``host`` (``--trust-endpoint``, or a yes in the editor)."""
    with _lock:
        _trusted.add(host.strip().lower())


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_for(base_url: str | None, explicit: str | None = None) -> str:
    """The key to send to ``base_url`` (None: OpenAI's), or :class:`EndpointRefused`.

    * plain ``http://`` only to a loopback server (anything else would send it in the clear);
    * a loopback server gets a placeholder, unless the user trusts that host or set
      ``$OPENAI_BASE_URL`` to it with the key (an SSH tunnel to a real server);
    * otherwise only the host the key is for, or one the user trusts, gets it;
    * ``explicit``: a key the caller chose for this endpoint (only the http rule applies).
    """
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise EndpointRefused(f"llm.base_url {url!r} is not an http(s) URL; e.g. https://api.openai.com/v1")
    loopback = is_loopback(host)
    if parts.scheme == "http" and not loopback:
        raise EndpointRefused(f"llm.base_url {url} is plain http:// to another machine: the key would travel "
                              "in the clear; use https:// (plain http is only for servers on this machine)")
    if explicit:
        return explicit
    with _lock:
        current, for_host, trusted = _key, _key_host, host in _trusted
    if loopback and not trusted and host != for_host:
        return PLACEHOLDER_KEY
    if current is None:
        raise EndpointRefused(f"no API key for the LLM proposer: set {KEY_ENV} or llm.base_url "
                              "(a local OpenAI-compatible server such as http://127.0.0.1:11434/v1)")
    if host == for_host or trusted:
        return current
    raise EndpointRefused(
        f"llm.base_url points at {host}, but your API key is for {for_host}: sigmaloop does not send it "
        f"to a host a project's settings chose. If you trust {host}, run with --trust-endpoint {host} "
        "(in VS Code: answer Allow when asked), or set OPENAI_BASE_URL yourself", host=host)


def key() -> str | None:
    with _lock:
        return _key


def key_host() -> str | None:
    with _lock:
        return _key_host


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
    """Drop the key, the trusted hosts and every remembered secret (tests; removing the key)."""
    global _key, _key_host
    with _lock:
        _key = _key_host = None
        _secrets.clear()
        _trusted.clear()
