"""The sigmaloop language server (``python -m sigmaloop.lsp``): an adapter over the engine."""

from .server import COMMANDS, make_server

__all__ = ["COMMANDS", "make_server"]
