"""The researchloop language server (``python -m researchloop.lsp``): an adapter over the engine."""

from .server import COMMANDS, make_server

__all__ = ["COMMANDS", "make_server"]
