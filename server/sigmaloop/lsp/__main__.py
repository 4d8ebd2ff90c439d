"""``python -m sigmaloop.lsp`` (stdio) or ``python -m sigmaloop.lsp --tcp HOST:PORT``."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sigmaloop.lsp",
                                     description="sigmaloop language server")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="serve on TCP (debugging) instead of stdio")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pygls logs whole messages (initialize params carry the API key) at INFO/DEBUG: never.
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))

    _limit_arenas()
    from .. import secret

    secret.take_from_environment()  # the key (if the client put it there) leaves the environment
    from .server import make_server

    server = make_server()
    atexit.register(server.close)

    def on_signal(signum, _frame):
        server.close()
        _hard_exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            server.start_io()
    finally:
        server.close()
    # pygls reads stdin on a pool thread that only ends at EOF; a client waiting for the
    # process to exit before closing the pipe would wait forever on the interpreter's join.
    _hard_exit(0 if server.protocol._shutdown else 1)
    return 0


def _limit_arenas() -> None:
    """Trials, summaries and the stdin reader run on threads; glibc gives each its own malloc
    arena, which inflates RSS several-fold for a server that is mostly idle. Two is plenty."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except Exception:
        pass


def _hard_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
