"""``python -m researchloop.lsp`` (stdio) or ``python -m researchloop.lsp --tcp HOST:PORT``."""

from __future__ import annotations

import argparse
import atexit
import logging
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m researchloop.lsp",
                                     description="researchloop language server")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="serve on TCP (debugging) instead of stdio")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pygls logs whole messages (initialize params carry the API key) at INFO/DEBUG: never.
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))

    from .server import make_server

    server, adapter = make_server()
    atexit.register(adapter.close)

    def on_signal(signum, _frame):
        adapter.close()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            server.start_io()
    finally:
        adapter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
