"""sigmaloop: an autoresearch-style experiment loop (engine, language server, CLI)."""

__version__ = "0.1.0"
