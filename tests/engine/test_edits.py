"""Edits of the train script: diffs, search/replace, validation, changed lines, constants."""

from __future__ import annotations

import ast

import pytest

from sigmaloop.diff import apply_unified_diff, changed_lines, unified_diff
from sigmaloop.edits import (
    EditError,
    apply_search_replace,
    find_constants,
    format_value,
    set_constants,
    validate_source,
)

SCRIPT = '''\
"""A tiny trainer."""
import random

import torch

# model
DEPTH = 4  # transformer layers
MATRIX_LR = 0.04   # Muon lr
WARMUP_FRAC: float = 0.1
WEIGHT_DECAY = -1e-3  # negative on purpose
USE_QK_NORM = True
SEED = 42
NAME = "gpt"
BETAS = (0.9, 0.95)
lowercase_lr = 0.1
TOTAL = DEPTH * 2


def main():
    random.seed(SEED)
    torch.manual_seed(SEED)
    for _ in range(DEPTH):
        x = MATRIX_LR * 2
    print(f"val_bpb: {x:.4f}")


if __name__ == "__main__":
    main()
'''


# ---------------------------------------------------------------- diffs


def test_diff_round_trip():
    new = SCRIPT.replace("DEPTH = 4", "DEPTH = 6").replace(
        "        x = MATRIX_LR * 2\n", "        x = MATRIX_LR * 3\n        x += 1\n"
    )
    diff = unified_diff(SCRIPT, new)
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n")
    assert "-DEPTH = 4  # transformer layers" in diff
    assert "+DEPTH = 6  # transformer layers" in diff
    assert apply_unified_diff(SCRIPT, diff) == new
    assert unified_diff(SCRIPT, SCRIPT) == ""


def test_diff_round_trip_without_final_newline():
    old = "A = 1\nB = 2"
    new = "A = 1\nB = 3"
    diff = unified_diff(old, new, path="x.py")
    assert "\\ No newline at end of file" in diff
    assert diff.startswith("--- a/x.py")
    assert apply_unified_diff(old, diff) == new
    assert apply_unified_diff(new, unified_diff(new, old + "\n")) == old + "\n"


def test_diff_applies_when_lines_moved():
    new = SCRIPT.replace("USE_QK_NORM = True", "USE_QK_NORM = False")
    diff = unified_diff(SCRIPT, new)
    shifted = "# a new header line\n# another\n" + SCRIPT
    assert apply_unified_diff(shifted, diff) == "# a new header line\n# another\n" + new


def test_diff_that_does_not_apply():
    new = SCRIPT.replace("DEPTH = 4", "DEPTH = 6")
    diff = unified_diff(SCRIPT, new)
    changed_base = SCRIPT.replace("DEPTH = 4  # transformer layers", "DEPTH = 8  # layers")
    with pytest.raises(EditError) as exc:
        apply_unified_diff(changed_base, diff)
    message = str(exc.value)
    assert "hunk 1" in message and "does not apply" in message
    assert "DEPTH = 8  # layers" in message


def test_diff_errors_are_specific():
    with pytest.raises(EditError, match="no hunks"):
        apply_unified_diff(SCRIPT, "just some prose\n")
    two_files = (
        "--- a/train.py\n+++ b/train.py\n@@ -7 +7 @@\n-DEPTH = 4  # transformer layers\n"
        "+DEPTH = 5\n--- a/other.py\n+++ b/other.py\n@@ -1 +1 @@\n-x\n+y\n"
    )
    with pytest.raises(EditError, match="2 files"):
        apply_unified_diff(SCRIPT, two_files)
    truncated = (
        "--- a/train.py\n+++ b/train.py\n@@ -7,3 +7,3 @@\n-DEPTH = 4  # transformer layers\n"
    )
    with pytest.raises(EditError, match="truncated"):
        apply_unified_diff(SCRIPT, truncated)


def test_git_style_diff_applies():
    new = SCRIPT.replace("SEED = 42", "SEED = 42\nEXTRA = 1")
    diff = unified_diff(SCRIPT, new)
    git_diff = "diff --git a/train.py b/train.py\nindex 1234567..89abcde 100644\n" + diff
    assert apply_unified_diff(SCRIPT, git_diff) == new


def test_diff_without_line_numbers_is_located_by_context():
    diff = (
        "--- a/train.py\n+++ b/train.py\n@@ ... @@\n"
        " # model\n-DEPTH = 4  # transformer layers\n+DEPTH = 5  # transformer layers\n"
    )
    assert apply_unified_diff(SCRIPT, diff) == SCRIPT.replace("DEPTH = 4", "DEPTH = 5")


# ---------------------------------------------------------------- search/replace


def test_search_replace():
    out = apply_search_replace(
        SCRIPT, [("DEPTH = 4", "DEPTH = 6"), ("x = MATRIX_LR * 2", "x = MATRIX_LR * 3")]
    )
    assert "DEPTH = 6  # transformer layers" in out and "MATRIX_LR * 3" in out


def test_search_replace_missing_and_ambiguous():
    with pytest.raises(EditError) as exc:
        apply_search_replace(SCRIPT, [("DEPTH = 4", "DEPTH = 5"), ("DEPTH = 99", "x")])
    assert "block 2" in str(exc.value) and "missing" in str(exc.value)
    with pytest.raises(EditError) as exc:
        apply_search_replace(SCRIPT, [("SEED)", "SEED + 1)")])
    assert "block 1" in str(exc.value) and "ambiguous" in str(exc.value)
    assert "2 times" in str(exc.value)
    with pytest.raises(EditError, match="empty"):
        apply_search_replace(SCRIPT, [("", "x")])


# ---------------------------------------------------------------- validation


def test_syntax_error_message_has_line_and_column():
    broken = SCRIPT.replace("DEPTH = 4  #", "DEPTH = = 4  #")
    with pytest.raises(EditError) as exc:
        validate_source(broken, SCRIPT)
    message = str(exc.value)
    assert message.startswith("the edit does not parse:")
    assert "line 7" in message and "column" in message
    assert exc.value.line == 7 and exc.value.col is not None


def test_noop_rejected():
    with pytest.raises(EditError, match="the edit changes nothing"):
        validate_source(SCRIPT, SCRIPT)
    with pytest.raises(EditError, match="only comments or formatting"):
        validate_source(SCRIPT.replace("# transformer layers", "# layers"), SCRIPT)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("SEED = 42", "SEED = 7"),
        lambda s: s.replace("torch.manual_seed(SEED)", "torch.manual_seed(1234)"),
        lambda s: s.replace("random.seed(SEED)", "random.seed(SEED + 1)"),
        lambda s: s.replace("SEED = 42", "SEED = 1  # lucky").replace(
            "torch.manual_seed(SEED)", "torch.manual_seed(SEED * 3)"
        ),
    ],
)
def test_seed_only_edit_rejected(edit):
    with pytest.raises(EditError, match="changing only the seed is never a finding"):
        validate_source(edit(SCRIPT), SCRIPT)


def test_seed_only_edit_rejected_for_numpy_and_cuda():
    old = "import numpy as np\nnp.random.seed(1)\ntorch.cuda.manual_seed_all(1)\nLR = 0.1\n"
    new = "import numpy as np\nnp.random.seed(2)\ntorch.cuda.manual_seed_all(2)\nLR = 0.1\n"
    with pytest.raises(EditError, match="seed"):
        validate_source(new, old)


def test_real_changes_accepted():
    validate_source(SCRIPT.replace("DEPTH = 4", "DEPTH = 5"), SCRIPT)
    # a seed change together with a real change is a real change
    validate_source(
        SCRIPT.replace("DEPTH = 4", "DEPTH = 5").replace("SEED = 42", "SEED = 1"), SCRIPT
    )
    validate_source(SCRIPT.replace("x = MATRIX_LR * 2", "x = MATRIX_LR * 2.5"), SCRIPT)


# ---------------------------------------------------------------- changed lines


def test_changed_lines_modify_insert_delete():
    old = "a\nb\nc\nd\ne\n"
    assert changed_lines(old, "a\nB\nc\nd\ne\n") == [(2, 2)]
    assert changed_lines(old, "a\nb\nnew\nc\nd\ne\n") == [(2, 2)]  # follows line 2
    assert changed_lines(old, "top\na\nb\nc\nd\ne\n") == [(1, 1)]  # precedes line 1
    assert changed_lines(old, "a\nb\nc\nd\ne\nend\n") == [(5, 5)]
    assert changed_lines(old, "a\nd\ne\n") == [(2, 3)]
    assert changed_lines(old, "A\nb\nc\nd\nE\n") == [(1, 1), (5, 5)]
    assert changed_lines(old, old) == []


def test_changed_lines_on_script():
    new = SCRIPT.replace("DEPTH = 4", "DEPTH = 6")
    line = SCRIPT.splitlines().index("DEPTH = 4  # transformer layers") + 1
    assert changed_lines(SCRIPT, new) == [(line, line)]


# ---------------------------------------------------------------- constants


def test_find_constants():
    found = {c.name: c for c in find_constants(SCRIPT)}
    assert set(found) == {
        "DEPTH",
        "MATRIX_LR",
        "WARMUP_FRAC",
        "WEIGHT_DECAY",
        "USE_QK_NORM",
        "SEED",
    }
    assert found["DEPTH"].value == 4 and type(found["DEPTH"].value) is int
    assert found["MATRIX_LR"].value == 0.04
    assert found["WARMUP_FRAC"].value == 0.1  # annotated
    assert found["WEIGHT_DECAY"].value == -0.001 and found["WEIGHT_DECAY"].text == "-1e-3"
    assert found["USE_QK_NORM"].value is True
    lines = SCRIPT.splitlines()
    for c in found.values():
        assert lines[c.lineno - 1][c.col : c.end_col] == c.text


def test_find_constants_skips_reassigned_and_unicode_offsets():
    src = 'LR = 0.1\nLR = 0.2\nΔ = 1\nNOTE = "é"; STEPS = 10  # é\n'
    found = {c.name: c for c in find_constants(src)}
    assert set(found) == {"STEPS"}
    steps = found["STEPS"]
    assert src.splitlines()[steps.lineno - 1][steps.col : steps.end_col] == "10"
    assert set_constants(src, {"STEPS": 20}) == src.replace("STEPS = 10", "STEPS = 20")


def test_set_constants_keeps_comments_and_layout():
    out = set_constants(
        SCRIPT,
        {"DEPTH": 6, "MATRIX_LR": 0.0612345, "USE_QK_NORM": False, "WEIGHT_DECAY": -0.002},
    )
    assert "DEPTH = 6  # transformer layers\n" in out
    assert "MATRIX_LR = 0.06123   # Muon lr\n" in out
    assert "USE_QK_NORM = False\n" in out
    assert "WEIGHT_DECAY = -0.002  # negative on purpose\n" in out
    assert changed_lines(SCRIPT, out) == [(7, 8), (10, 11)]
    ast.parse(out)
    again = {c.name: c.value for c in find_constants(out)}
    assert again["DEPTH"] == 6 and type(again["DEPTH"]) is int
    assert again["USE_QK_NORM"] is False
    with pytest.raises(EditError, match="no top-level numeric constant named NAME"):
        set_constants(SCRIPT, {"NAME": 1})
    with pytest.raises(EditError, match="does not parse"):
        set_constants("A = = 1\n", {"A": 2})


def test_set_constants_two_on_one_line():
    src = "A = 1; B = 2.5  # both\n"
    assert set_constants(src, {"A": 10, "B": 0.5}) == "A = 10; B = 0.5  # both\n"


@pytest.mark.parametrize(
    "value, like, text",
    [
        (3.0, 1.0, "3.0"),
        (3, 1.0, "3.0"),  # a float slot stays a float
        (3.0, 1, "3"),  # an int slot stays an int
        (0.06, 0.04, "0.06"),
        (1e-5, 1e-4, "1e-5"),
        (1.5e6, 1.0, "1.5e6"),
        (1e16, 1.0, "1e16"),
        (123456.0, 1.0, "1.235e5"),
        (0.0, 0.1, "0.0"),
        (-0.25, -0.1, "-0.25"),
        (True, False, "True"),
        (7, 4, "7"),
    ],
)
def test_float_formatting(value, like, text):
    assert format_value(value, like) == text
    parsed = ast.literal_eval(text)
    assert type(parsed) is type(like)
    assert parsed == pytest.approx(value, rel=1e-3)


def test_float_formatting_round_trip_many():
    for v in [0.04, 0.1, 0.9, 0.999, 3e-4, 2.5e-3, 12.0, 100.0, 0.333333, 1234.5678]:
        text = format_value(v, 1.0)
        parsed = ast.literal_eval(text)
        assert isinstance(parsed, float)
        assert parsed == pytest.approx(v, rel=1e-3)
        assert format_value(parsed, 1.0) == text  # stable
    with pytest.raises(EditError):
        format_value(float("nan"), 1.0)
