"""One trial runner per workspace: a second process waits, says who holds it, and gets it after."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from sigmaloop.trial_lock import TrialLock


def hold_in_another_process(state, seconds: float) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from sigmaloop.trial_lock import TrialLock
        lock = TrialLock({str(state)!r}, "cli")
        assert lock.acquire()
        print("held", flush=True)
        time.sleep({seconds})
        lock.release()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_waits_and_is_told_who_holds_it(tmp_path):
    other = hold_in_another_process(tmp_path, 1.5)
    lock = TrialLock(tmp_path, "editor")
    told = []
    t0 = time.monotonic()
    assert lock.acquire(on_wait=told.append, poll=0.05)
    waited = time.monotonic() - t0
    other.wait(timeout=10)
    assert waited > 0.8, waited  # it queued behind the CLI's trial
    assert told and told[0].pid == other.pid and told[0].kind == "cli"
    assert "the cli (pid" in told[0].describe()
    assert lock.holder().kind == "editor"
    lock.release()
    assert lock.holder() is None


def test_a_dead_holder_never_blocks(tmp_path):
    other = hold_in_another_process(tmp_path, 60)
    other.kill()
    other.wait()
    lock = TrialLock(tmp_path, "cli")
    assert lock.acquire(stop=threading.Event(), poll=0.05)  # the kernel dropped the dead one's lock
    lock.release()


def test_slots_of_one_engine_share_it_and_stop_gives_up_waiting(tmp_path):
    mine = TrialLock(tmp_path, "cli")
    assert mine.acquire() and mine.acquire()  # two slots, one engine
    mine.release()
    assert mine.held
    theirs = TrialLock(tmp_path, "editor")  # another engine (same process is fine for flock: new fd)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert theirs.acquire(stop=stop, poll=0.05) is False
    mine.release()
    assert theirs.acquire(stop=threading.Event(), poll=0.05)
    theirs.release()
