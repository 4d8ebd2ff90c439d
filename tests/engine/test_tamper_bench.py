"""Smoke test of bench/tamper.py without running trials: every case edits today's trainer.

The bench finds its cheats by anchors in trainer/train.py; when the trainer changes so that an
anchor is gone, this fails here (fast) instead of in the middle of a long bench run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from enginekit import bench_module

REPO = Path(__file__).resolve().parents[2]




def test_every_case_edits_the_trainer_into_valid_python(tmp_path):
    bench = bench_module("tamper")
    src = (REPO / "trainer" / "train.py").read_text()
    ctx = {"ws": tmp_path, "budget": 2.0, "reference": 3.0, "forged": 2.9}
    names = [c.name for c in bench.CASES]
    assert len(names) == len(set(names))
    assert sum(not c.honest for c in bench.CASES) >= 12
    assert sum(c.honest for c in bench.CASES) == 3
    for case in bench.CASES:
        new = case.edit(src, ctx)
        assert new != src, case.name
        ast.parse(new)


def test_state_cheat_never_carries_its_mark_literally(tmp_path):
    """The mark the state-tampering trial writes must not be in its source (the journal stores
    the diff): a mark found in the workspace afterwards can only come from the trial's writes."""
    bench = bench_module("tamper")
    case = next(c for c in bench.CASES if c.name == "tamper_state")
    new = case.edit((REPO / "trainer" / "train.py").read_text(), {"ws": tmp_path})
    assert bench.MARK not in new
