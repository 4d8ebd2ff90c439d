"""The one diff model: mapping lines and anchoring blocks agree with the diff they came from."""

from __future__ import annotations

import difflib
import random

import pytest

from sigmaloop.diff import (
    EditError,
    apply_unified_diff,
    change_blocks,
    parent_line,
    parse_hunks,
    unified_diff,
)

SCRIPT = "".join(f"LINE_{i} = {i}\n" for i in range(1, 61))


def _random_edit(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 6)):
        op, at = rng.choice("idr"), rng.randrange(len(lines))
        if op == "i":
            lines.insert(at, f"NEW_{rng.randrange(10**6)} = 0\n")
        elif op == "d" and len(lines) > 5:
            del lines[at]
        else:
            lines[at] = f"CHANGED_{rng.randrange(10**6)} = 1\n"
    return "".join(lines)


@pytest.mark.parametrize("seed", range(40))
def test_parent_line_maps_every_unchanged_line_to_its_parent(seed):
    rng = random.Random(seed)
    new = _random_edit(rng, SCRIPT)
    diff = unified_diff(SCRIPT, new)
    assert apply_unified_diff(SCRIPT, diff) == new
    old_lines, new_lines = SCRIPT.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            old_no, new_no = block.a + k + 1, block.b + k + 1
            got, text = parent_line(diff, new_no)
            assert got == old_no, (new_no, diff)
            assert text in (None, new_lines[new_no - 1])


@pytest.mark.parametrize("seed", range(20))
def test_change_blocks_point_at_the_changed_parent_lines(seed):
    rng = random.Random(100 + seed)
    new = _random_edit(rng, SCRIPT)
    info = change_blocks(unified_diff(SCRIPT, new))
    old_lines = SCRIPT.splitlines()
    assert info.blocks, "an edit has at least one block"
    for b in info.blocks:
        assert 0 <= b.start < len(old_lines) and b.span >= 0
        # the block can be found in the parent: one of its anchors is the parent's line there
        assert any(b.start + off < len(old_lines) and old_lines[b.start + off] == text
                   for text, off in b.candidates), (b, old_lines[b.start:b.start + b.span + 1])


def test_one_constant_change_is_named():
    info = change_blocks(unified_diff(SCRIPT, SCRIPT.replace("LINE_7 = 7", "LINE_7 = 70")))
    assert info.change == "LINE_7 7→70"
    assert [b.start for b in info.blocks] == [6]


def test_bad_diffs_have_no_blocks_and_map_lines_unchanged():
    assert change_blocks("not a diff at all\n").blocks == ()
    assert parent_line("garbage", 12) == (12, None)
    with pytest.raises(EditError, match="no hunks"):
        parse_hunks("just prose\n")


def test_hunks_carry_both_sides_numbers():
    (hunk,) = parse_hunks(unified_diff(SCRIPT, SCRIPT.replace("LINE_30 = 30\n", "")))
    assert (hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len) == (27, 7, 27, 6)
