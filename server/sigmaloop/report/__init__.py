"""The morning report: what a night of the loop kept, refuted and found weird, as one HTML page.

``model.build`` makes the :class:`MorningReport` (fields); ``page.render`` the self-contained
page; ``charts`` its inline SVG plots. ``Engine.report`` / ``Engine.write_report`` wire them to a
workspace; the CLI prints a terminal summary of the same fields.
"""

from .model import MorningReport, build
from .page import CSP, SECTIONS, render

__all__ = ["CSP", "SECTIONS", "MorningReport", "build", "render"]
