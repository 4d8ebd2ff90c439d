"""Engine fixtures; the workspace builders live in enginekit.py."""

from enginekit import engine, workspace  # noqa: F401  (pytest fixtures)
