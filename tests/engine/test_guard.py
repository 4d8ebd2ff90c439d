"""The guard: every source's edit is read before it runs; obvious cheats are refused, honest
edits of the real trainer are not, and code the base already had never counts against an edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigmaloop import guard
from sigmaloop.diff import unified_diff
from sigmaloop.edits import EditError
from sigmaloop.guard import GuardViolation, check_edit
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Proposal, Status

from enginekit import edit

TRAINER = Path(__file__).resolve().parents[2] / "trainer" / "train.py"


@pytest.fixture(scope="module")
def trainer() -> str:
    """The embedded trainer, ending with prepare.hand_over(model, DATA) (as under sigmaloop)."""
    source = TRAINER.read_text(encoding="utf-8")
    if "prepare.hand_over(" not in source:  # a checkout from before the evaluator
        source = source.replace("val_bpb = prepare.evaluate_bpb(train_model, DATA)",
                                "val_bpb = prepare.hand_over(model, DATA)")
    assert source.count("val_bpb = prepare.hand_over(model, DATA)") == 1
    return source


AFTER_MODEL = "model = GPT().to(DEVICE)\n"  # a place mid-script, after the data is loaded


def added(source: str, code: str) -> str:
    """The trainer with ``code`` added right after the model is built."""
    return edit(source, AFTER_MODEL, AFTER_MODEL + code)


# ------------------------------------------------------------------------------------------
# honest edits pass


HONEST = {
    "learning rate": ("MATRIX_LR = 0.02", "MATRIX_LR = 0.03"),
    "a layer norm": (
        "        self.fc_out = nn.Linear(mlp_ratio * d, d, bias=False)\n",
        "        self.fc_out = nn.Linear(mlp_ratio * d, d, bias=False)\n"
        "        self.ln = nn.LayerNorm(d)\n"),
    "the MLP activation": ("F.relu(self.fc(rms_norm(x))).square()", "F.gelu(self.fc(rms_norm(x)))"),
    "a helper function": (
        "def lr_multiplier(frac):\n",
        "def cosine(frac):\n    return 0.5 * (1 + math.cos(math.pi * frac))\n\n\n"
        "def lr_multiplier(frac):\n"),
    "a comment": ("MLP_RATIO = 4  #", "MLP_RATIO = 4  # wider might help;"),
    "a progress line": ("    if done:\n        break\n",
                        "    if step % 100 == 0:\n        print(f'step {step} loss {loss_value:.3f}')\n"
                        "    if done:\n        break\n"),
    "a timing read": ("tok_per_s = 0.0\n", "tok_per_s = 0.0\nloop_start = time.perf_counter()\n"),
    "a checkpoint in the working dir": (
        "if metrics_file:\n    metrics_file.close()\n",
        "if metrics_file:\n    metrics_file.close()\ntorch.save(model.state_dict(), 'ckpt.pt')\n"),
    "a failure exit before the hand-over": (
        "if metrics_file:\n    metrics_file.close()\n",
        "if metrics_file:\n    metrics_file.close()\nif num_params > 1e12:\n    sys.exit(1)\n"),
    "an extra check with fail()": (
        "GRAD_ACCUM = TOTAL_BATCH_TOKENS",
        "if MLP_RATIO < 1:\n    fail('MLP_RATIO must be >= 1')\nGRAD_ACCUM = TOTAL_BATCH_TOKENS"),
    "another matmul precision": (
        "    torch.backends.cudnn.allow_tf32 = True\n",
        "    torch.backends.cudnn.allow_tf32 = True\n    torch.set_float32_matmul_precision('high')\n"),
}


def test_the_unmodified_trainer_passes(trainer):
    check_edit(trainer, trainer)
    check_edit(trainer, edit(trainer, "ROPE_BASE = 10000.0", "ROPE_BASE = 20000.0"))


@pytest.mark.parametrize("name", HONEST)
def test_honest_edits_of_the_trainer_pass(trainer, name):
    old, new = HONEST[name]
    check_edit(trainer, edit(trainer, old, new))


def test_what_the_base_already_does_is_never_counted_against_an_edit(trainer):
    # ctypes for mallopt, sys.exit in fail(), globals()[_name] reads, os._exit(0) at the end,
    # sys.excepthook and sys.path.insert: all in the base; an edit near them passes
    new = edit(trainer, "_libc.mallopt(-3, 1 << 30)", "_libc.mallopt(-3, 1 << 29)")
    with pytest.raises(GuardViolation, match="rule 'ctypes'"):  # a changed native call is new
        check_edit(trainer, new)
    moved = edit(trainer, "sys.stdout.flush()\nos._exit(0)\n", "sys.stdout.flush()\n\nos._exit(0)\n")
    check_edit(trainer, moved + "\n")
    check_edit(trainer, edit(trainer, "def fail(reason):\n", "def fail(reason):  # crash\n"))


# ------------------------------------------------------------------------------------------
# each route is caught when the edit introduces it


CHEATS = {
    # forged summary: the metric's line put together some other way
    "summary": [
        'print("val_" + "bpb:          0.5")\n',
        'M = "val_bpb"\nprint(f"{M}: 0.5")\n',
        'print(f"{\'val\'}_bpb: {0.5}")\n',
        'print("{}_{}: {}".format("val", "bpb", 0.5))\n',
        'print("%s_bpb: %f" % ("val", 0.5))\n',
        'print("".join(chr(c) for c in [118, 97, 108, 95, 98, 112, 98, 58]), 0.5)\n',
        'print(chr(118) + "al_bpb:", 0.5)\n',
        'print("bpb_lav"[::-1] + ":", 0.5)\n',
        'sys.stdout.write("val_bpb: 0.5\\n")\n',
        'os.write(1, b"val_bpb: 0.5\\n")\n',
        'print("val_bpb", end="")\nprint(":   0.5")\n',
        'line = "val_" + "bpb"\nsys.stdout.write(line + ": 0.5\\n")\n',
    ],
    "sys.modules": ['sys.modules["prepare"].evaluate_bpb = lambda *a: 0.5\n',
                    'p = sys.modules.get("prepare")\n'],
    "namespace": ['globals()["DATA"] = None\n', 'globals().update(DATA=None)\n',
                  'vars(prepare)["EVAL_TOKENS"] = {}\n'],
    "importlib": ['import importlib\nimportlib.reload(prepare)\n',
                  'from importlib import reload\n', 'sys.path.insert(0, "/tmp/elsewhere")\n'],
    "builtins": ['import builtins\n', '__builtins__.len = lambda x: 0\n',
                 'frame = sys._getframe()\n'],
    "prepare": ['prepare.evaluate_bpb = lambda *a: 0.5\n', 'prepare.EVAL_TOKENS = {"cpu": 1}\n',
                'prepare.EVAL_TOKENS["cpu"] = 1\n', 'prepare.hand_over = lambda m, d: None\n',
                'setattr(prepare, "evaluate_bpb", len)\n', 'prepare.EVAL_TOKENS.update(cpu=1)\n',
                'DATA.token_bytes[:] = 100\n'],
    "validation": ['X = DATA.val\n', 'X = getattr(DATA, "val")\n', 'X = prepare.is_val("doc")\n',
                   'X = list(prepare.get_source(prepare.resolve_config()).documents("val"))\n',
                   'X = np.fromfile(str(DATA.path) + "/val.bin")\n',
                   'X = np.fromfile(os.path.join(DATA.path, "val" + ".bin"))\n'],
    "exit": ['print("---")\nos._exit(0)\n', 'sys.exit()\n', 'sys.exit(0)\n',
             'raise SystemExit\n'],
    "exec": ['exec("X = 1")\n', 'X = eval("1 + 1")\n', 'code = compile("1", "f", "eval")\n',
             'np2 = __import__("numpy")\n'],
    "ctypes": ['import ctypes\nctypes.memset(0, 0, 1)\n', 'from ctypes import CDLL\n'],
    "subprocess": ['import subprocess\nsubprocess.run(["ls"])\n', 'os.system("ls")\n',
                   'os.popen("ls")\n', 'os.execv("/bin/sh", ["sh"])\n'],
    "socket": ['import socket\n', 'import urllib.request\n'],
    "signal": ['import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n',
               'import atexit\natexit.register(print, "bye")\n', 'sys.settrace(None)\n'],
    "clock": ['time.time = lambda: 0.0\n', 'setattr(time, "perf_counter", lambda: 0.0)\n'],
    "files": ['open("/tmp/notes", "w").write("1")\n',
              'from pathlib import Path\nPath("/tmp/notes").write_text("1")\n',
              'import shutil\nshutil.copy("train.py", "/tmp/train.py")\n'],
    "stdout": ['os.write(1, b"hello\\n")\n', 'sys.__stdout__.write("hello")\n',
               'import io\nsys.stdout = io.StringIO()\n', 'def print(*a, **k):\n    pass\n'],
}


@pytest.mark.parametrize("rule,code", [(r, c) for r, codes in CHEATS.items() for c in codes])
def test_each_route_is_refused_when_the_edit_adds_it(trainer, rule, code):
    new = added(trainer, code)
    with pytest.raises(GuardViolation) as info:
        check_edit(trainer, new)
    assert info.value.rule == rule, str(info.value)
    line = new[: new.index(code)].count("\n") + 1  # where the added code starts
    assert info.value.line in range(line, line + code.count("\n")), str(info.value)
    assert f"rule {rule!r}, line {info.value.line}: " in str(info.value)
    assert isinstance(info.value, EditError)  # callers that catch invalid edits catch it too


def test_the_hand_over_stays_as_it_is(trainer):
    call = "val_bpb = prepare.hand_over(model, DATA)\n"
    for new in (edit(trainer, call, "val_bpb = 0.9\n"),
                edit(trainer, call, "val_bpb = prepare.hand_over(GPT(), DATA)\n"),
                edit(trainer, call, f"if step < 0:\n    {call}"),
                edit(trainer, call, "")):
        with pytest.raises(GuardViolation, match=r"rule 'hand_over'.*prepare\.hand_over"):
            check_edit(trainer, new)


def test_an_exit_after_the_hand_over_is_fine(trainer):
    new = edit(trainer, "steps_timed = max(", "if step == 0:\n    sys.exit(0)\nsteps_timed = max(")
    check_edit(trainer, new)


def test_messages_say_what_to_do(trainer):
    with pytest.raises(GuardViolation) as info:
        check_edit(trainer, added(trainer, "import subprocess\n"))
    assert str(info.value).startswith("rule 'subprocess', line ")
    assert "`import subprocess`" in str(info.value) and "do the work in this process" in str(info.value)


def test_a_script_without_prepare_keeps_its_own_validation(trainer):
    own = "import numpy as np\nval = np.load('val.npy')\nLR = 0.1\nprint(f'val_loss: {val.mean()}')\n"
    check_edit(own, own.replace("LR = 0.1", "LR = 0.2\nX = np.fromfile('val.bin')"), "val_loss")
    with pytest.raises(GuardViolation, match="rule 'summary'"):
        check_edit(own, own.replace("LR = 0.1", "LR = 0.2\nprint('val_' + 'loss: 0')"), "val_loss")


# ------------------------------------------------------------------------------------------
# every source goes through it: the real engine


FORGED = 'BIAS = 0.0\nprint("val_" + "bpb:          0.1")'


@pytest.mark.parametrize("source", ["user", "tune", "llm:some-model"])
def test_a_cheating_proposal_is_rejected_before_it_runs(engine, source):
    new = edit(engine.head_source(), "BIAS = 0.0", FORGED)
    exp = engine.add_proposal(Proposal(new, "a forged summary", source, predicted_delta=-0.5))
    assert exp.status == Status.REJECTED and exp.reason == Reason.INVALID_EDIT
    assert exp.detail.startswith("guard: rule 'summary', line 8: ")
    assert "printing val_bpb" in exp.detail
    assert exp.diff and "val_" in exp.diff  # what was refused stays readable


def test_a_users_diff_goes_through_the_guard(engine):
    old = engine.head_source()
    diff = unified_diff(old, edit(old, "DEPTH = 4", "DEPTH = 4\nimport subprocess"), "train.py")
    exp = engine.propose_diff(diff, "shell out")
    assert exp.status == Status.REJECTED and exp.reason == Reason.INVALID_EDIT
    assert exp.detail.startswith("guard: rule 'subprocess', line ")


def test_an_honest_proposal_still_runs(engine):
    exp = engine.add_proposal(Proposal(edit(engine.head_source(), "BIAS = 0.0", "BIAS = -0.1"),
                                       "lower bias", "user"))
    assert exp.status == Status.PROPOSED


def test_the_tuners_proposals_pass_the_guard(engine, monkeypatch):
    calls = []
    real = guard.check_edit

    def spy(old, new, metric="val_bpb"):
        calls.append((old, new, metric))
        return real(old, new, metric)

    monkeypatch.setattr(guard, "check_edit", spy)
    exp = engine.propose("tune")
    assert exp.source == "tune" and exp.status == Status.PROPOSED
    assert len(calls) == 1
    old, new, metric = calls[0]
    assert old == engine.head_source() and new != old and metric == "val_bpb"
