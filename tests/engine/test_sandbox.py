"""The trial is untrusted code: probes an attacker would try, each a small real trial in a real
bubblewrap sandbox. Every probe must fail, and nothing outside the trial may change."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sigmaloop import sandbox
from sigmaloop.models import Outcome, TrialSpec
from sigmaloop.runner import run_trial

from enginekit import git, make_workspace

KEY = "sk-planted-0123456789abcdef"


class Box:
    """A workspace with a real git repo, a journal-like state folder and two experiment worktrees."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.home = tmp_path / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY MATERIAL\n")
        (self.home / ".aws").mkdir()
        (self.home / ".aws" / "credentials").write_text("aws_secret_access_key = planted\n")
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the parent (this process) holds the key
        self.cache = tmp_path / "cache"
        (self.cache / "data").mkdir(parents=True)
        (self.cache / "data" / "train.bin").write_bytes(b"tokens")
        monkeypatch.setenv("SIGMALOOP_CACHE", str(self.cache))
        self.ws = make_workspace(tmp_path / "ws")
        state = self.ws / ".sigmaloop"
        (state / "logs").mkdir(parents=True)
        (state / "metrics").mkdir()
        self.journal = state / "journal.db"
        self.journal.write_bytes(b"SQLite format 3\x00 baseline rows")
        for n in (1, 2):
            git(self.ws, "worktree", "add", "-q", "--detach", str(state / "worktrees" / f"exp-{n}"))
        self.wt = state / "worktrees" / "exp-1"
        self.other = state / "worktrees" / "exp-2"
        (self.other / "train.py").write_text("OTHER = 1\n")
        self.hooks = self.ws / ".git" / "hooks"
        self.metrics = state / "metrics" / "1.jsonl"
        self.log = state / "logs" / "1.log"
        self.n = 0

    def run(self, body: str, budget: float = 5.0, **policy) -> tuple[str, object]:
        self.n += 1
        script = self.wt / f"probe{self.n}.py"
        script.write_text(textwrap.dedent(body))
        spec = TrialSpec(
            exp_id=1, cwd=str(self.wt), command=[sys.executable, script.name], budget=budget, seed=1,
            log_path=str(self.log), metrics_path=str(self.metrics), metric="val_bpb", grace=10,
            workspace_root=str(self.wt),
            sandbox=sandbox.policy_for(self.ws, self.wt, self.metrics, **policy),
        )
        result = run_trial(spec)
        return self.log.read_text(errors="replace"), result


@pytest.fixture
def box(tmp_path, monkeypatch) -> Box:
    why = sandbox.availability()
    assert why is None, f"these probes need bubblewrap (scripts/test.sh installs it): {why}"
    return Box(tmp_path, monkeypatch)


def test_an_honest_trial_still_works(box):
    log, result = box.run("""
        import json, os, tempfile
        import numpy  # from the interpreter's site-packages, visible read-only
        data = open(os.path.join(os.environ["SIGMALOOP_CACHE"], "data", "train.bin"), "rb").read()
        assert data == b"tokens"
        with open(os.environ["SIGMALOOP_METRICS"], "a") as f:
            f.write(json.dumps({"step": 1, "t": 0.1, "frac": 1.0, "loss": 2.5}) + "\\n")
        open("scratch.txt", "w").write("mine")          # its own worktree is writable
        tempfile.NamedTemporaryFile(dir="/tmp").close()  # a private /tmp
        open(os.path.expanduser("~/.cache-note"), "w").write("x")  # an empty, writable HOME
        print("---")
        print("val_bpb: 1.234")
    """)
    assert result.outcome == Outcome.OK and result.metric == 1.234 and result.sandboxed, log
    assert (box.wt / "scratch.txt").read_text() == "mine"
    assert '"loss": 2.5' in box.metrics.read_text()
    assert not (box.home / ".cache-note").exists()  # the real home never saw it


def test_the_key_is_in_no_visible_process(box):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                              env={**os.environ, "OPENAI_API_KEY": KEY})
    try:
        log, result = box.run(f"""
            import glob, os
            found, seen = [], 0
            for path in glob.glob("/proc/[0-9]*/environ"):
                seen += 1
                try:
                    if b"{KEY}" in open(path, "rb").read():
                        found.append(path)
                except OSError:
                    pass
            print("processes", seen, "leaks", found, "ppid", os.getppid())
            print("env", "{KEY}" in str(os.environ))
            print("---")
            print("val_bpb: 1.0")
        """)
    finally:
        holder.kill()
    assert result.outcome == Outcome.OK, log
    assert "leaks []" in log and "env False" in log, log
    assert f"pid {holder.pid}" not in log
    seen = int(log.split("processes ")[1].split()[0])
    assert seen <= 3, log  # its own PID namespace: bwrap's init, the trial (and nothing of ours)


def test_git_hooks_cannot_be_planted(box):
    before = sorted(p.name for p in box.hooks.iterdir())
    log, _ = box.run(f"""
        import os
        for target in ["{box.hooks}/post-checkout", "../../../.git/hooks/post-checkout"]:
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "w") as f:
                    f.write("#!/bin/sh\\ncurl evil\\n")
                os.chmod(target, 0o755)
                print("wrote", target)
            except OSError as exc:
                print("refused", target, type(exc).__name__)
        print("---")
        print("val_bpb: 1.0")
    """)
    assert sorted(p.name for p in box.hooks.iterdir()) == before, log
    assert not (box.hooks / "post-checkout").exists()


def test_the_journal_and_logs_are_out_of_reach(box):
    before = box.journal.read_bytes()
    log, _ = box.run(f"""
        for path in ["{box.journal}", "../../journal.db"]:
            try:
                open(path, "r+b").write(b"rewritten baseline")
                print("EDITED", path)
            except OSError as exc:
                print("refused", path, type(exc).__name__)
        print("---")
        print("val_bpb: 1.0")
    """)
    assert box.journal.read_bytes() == before
    assert "EDITED" not in log, log


def test_another_experiments_worktree_is_out_of_reach(box):
    log, _ = box.run(f"""
        try:
            open("{box.other}/train.py", "w").write("HIJACKED = 1\\n")
            print("HIJACKED")
        except OSError as exc:
            print("refused", type(exc).__name__)
        print("---")
        print("val_bpb: 1.0")
    """)
    assert (box.other / "train.py").read_text() == "OTHER = 1\n"
    assert "HIJACKED" not in log.replace('"HIJACKED = 1', ""), log


def test_no_network_unless_allowed(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        deadline = time.time() + 8
        while time.time() < deadline:
            try:
                accepted.append(server.accept())
                return
            except OSError:
                continue

    probe = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
            print("CONNECTED")
        except OSError as exc:
            print("refused", type(exc).__name__)
        print("---")
        print("val_bpb: 1.0")
    """
    t = threading.Thread(target=accept)
    t.start()
    log, _ = box.run(probe)
    t.join()
    assert "CONNECTED" not in log and not accepted, log
    # runner.network = true opens it (same probe, same listener)
    t = threading.Thread(target=accept)
    t.start()
    log, _ = box.run(probe, network=True)
    t.join()
    server.close()
    assert "CONNECTED" in log and accepted, log


def test_a_setsid_daemon_dies_with_its_trial(box):
    marker = box.wt / "daemon-was-here"
    log, result = box.run(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1.0)
                open("{marker}", "w").write("alive")
                os._exit(0)
            os._exit(0)
        print("---")
        print("val_bpb: 1.0")
    """)
    assert result.outcome == Outcome.OK, log
    time.sleep(2.0)
    assert not marker.exists()


def test_home_secrets_are_hidden(box):
    log, _ = box.run(f"""
        for path in ["{box.home}/.ssh/id_ed25519", "{box.home}/.aws/credentials", "/root/.ssh/id_rsa"]:
            try:
                print("READ", open(path).read())
            except OSError as exc:
                print("hidden", path, type(exc).__name__)
        print("---")
        print("val_bpb: 1.0")
    """)
    assert "PRIVATE KEY MATERIAL" not in log and "planted" not in log and "READ" not in log, log


def test_a_printed_key_is_redacted_from_the_log_and_the_error(box):
    """Should a key reach a trial anyway (here: written into its script), stored text hides it."""
    from sigmaloop import secret

    secret.set_key(KEY)
    try:
        log, result = box.run(f"""
            print("leaking {KEY} now")
            raise SystemExit("FAIL: {KEY}")
        """)
    finally:
        secret.set_key(None)
    assert KEY not in log and "leaking *** now" in log, log
    assert KEY not in result.error


def test_the_key_leaves_the_process_environment(tmp_path):
    """The CLI/LSP take the key out of their environment before any child starts; its bytes are
    gone from /proc/<pid>/environ too, and the process is non-dumpable."""
    code = textwrap.dedent("""
        import ctypes, os, subprocess, sys
        from sigmaloop import secret
        secret.take_from_environment()
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OPENAI_API_KEY'))"],
                               capture_output=True, text=True).stdout.strip()
        mine = open("/proc/self/environ", "rb").read()
        print("child", child, "proc", b"planted-0123" in mine, "dumpable", ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
        print("kept", secret.key() == os.environ.get("EXPECT"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "OPENAI_API_KEY": KEY, "EXPECT": KEY}).stdout
    assert "child None proc False dumpable 0" in out and "kept True" in out, out


def test_read_only_paths_in_the_home_are_found_where_the_trial_looks(box):
    """runner.read_only = ["~/.cache/autoresearch"]: readable at its real path and at ~ inside
    (the trial's HOME is a private one), never writable; the rest of the home stays hidden."""
    cache = box.home / ".cache" / "autoresearch"
    cache.mkdir(parents=True)
    (cache / "tokenizer.pkl").write_text("TOK")
    log, result = box.run(f"""
        import os
        print("home", open(os.path.expanduser("~/.cache/autoresearch/tokenizer.pkl")).read())
        print("real", open("{cache}/tokenizer.pkl").read())
        try:
            open("{cache}/tokenizer.pkl", "w").write("HACKED")
        except OSError as exc:
            print("write refused", type(exc).__name__)
        try:
            open("{box.home}/.ssh/id_ed25519").read()
            print("SSH READ")
        except OSError:
            print("ssh hidden")
        print("---")
        print("val_bpb: 1.0")
    """, read_only=["~/.cache/autoresearch"])
    assert result.outcome == Outcome.OK, log
    assert "home TOK" in log and "real TOK" in log and "write refused" in log and "ssh hidden" in log, log
    assert (cache / "tokenizer.pkl").read_text() == "TOK"
