"""The sigmaloop language server (``python -m sigmaloop.lsp``): an adapter over the engine."""

from .server import SigmaloopServer, make_server

__all__ = ["SigmaloopServer", "make_server"]
