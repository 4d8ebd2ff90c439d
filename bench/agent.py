"""Bench the LLM proposer's own cost: ONE JSON line on stdout.

What it measures, against the scripted local Chat Completions server (tests/llm/fakeopenai.py,
zero think time) with the real trainer/train.py as the script:

* ``overhead_ms``: a whole ``propose()`` minus the time spent inside the HTTP request
  (context building + answer parsing + validation incl. the protected-evaluation check);
  also split into ``context_ms`` and ``validate_ms``.
* ``http_ms``: the round trip to the local fake server (the openai client included), i.e. what
  a zero-latency model would add; measured on the same calls.
* ``context_tokens`` against ``budget`` (llm.context_tokens, default 12000) at 10, 100 and 1000
  journal entries (a real SQLite journal, read back with ``Journal.list()``), and how many
  history lines had to be left out to fit.

Medians over ``--repeat`` proposals per size. Usage: ``python bench/agent.py [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "llm"))

from fakeopenai import FakeOpenAI, proposal  # noqa: E402

from sigmaloop.journal import Journal  # noqa: E402
from sigmaloop.models import CrashLocation, Status  # noqa: E402
from sigmaloop.proposers import ProposalContext  # noqa: E402
from sigmaloop.proposers.llm import LLMProposer, estimate_tokens  # noqa: E402

STATUSES = [Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.DISCARDED, Status.REJECTED,
            Status.DISCARDED, Status.TIMEOUT]


def fill(journal: Journal, n: int, logs: Path) -> None:
    journal.create(status=Status.KEPT, source="baseline", hypothesis="baseline (seed 42)",
                   metric=1.0, seed=42)
    for i in range(n - 1):
        status = STATUSES[i % len(STATUSES)]
        fields = dict(
            status=status, source="llm:bench" if i % 2 else "tune",
            hypothesis=f"idea {i}: raise MATRIX_LR to {0.02 + i * 1e-4:.4f} and shorten warmdown "
                       "because the loss is still falling at the end of the budget",
            predicted_delta=-0.004, delta=0.001 * ((i % 9) - 4), z=0.3 * ((i % 9) - 4),
            sigma=0.002, metric=1.0 + 0.001 * (i % 9), verdict="within noise",
            rationale="bench",
        )
        if status in (Status.CRASHED, Status.TIMEOUT):
            log = logs / f"{i}.log"
            log.write_text("".join(f"step {s:05d} | loss 3.1 | lr 0.02\n" for s in range(200))
                           + "Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
            fields.update(log_path=str(log), crash=CrashLocation("train.py", 250, "RuntimeError: OOM"))
        if status == Status.REJECTED:
            fields.update(verdict="rejected by user: no", rejection_reason="keep the model size fixed")
        journal.create(**fields)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--budget", type=int, default=12000)
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")
    source = (ROOT / "trainer" / "train.py").read_text()
    program_path = ROOT / "trainer" / "program.md"
    program = program_path.read_text() if program_path.exists() else ""
    edit = [("MATRIX_LR = 0.02", "MATRIX_LR = 0.03")]
    assert source.count(edit[0][0]) == 1, "trainer/train.py changed: update the bench edit"
    out: dict = {"bench": "agent", "script_lines": len(source.splitlines()),
                 "script_tokens": estimate_tokens(source), "budget": args.budget,
                 "repeat": args.repeat, "tokenizer": "tiktoken" if _has_tiktoken() else "chars/4"}
    sizes = {}
    with FakeOpenAI(default=proposal(edit, "higher Muon LR lowers val_bpb", -0.003)) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        proposer = LLMProposer(model="bench", base_url=fake.base_url, context_tokens=args.budget,
                               max_retries=0, timeout=10, k=2.0)
        proposer.propose(ProposalContext(source, "train.py", [], None, None, "val_bpb", True))  # warm
        for n in (10, 100, 1000):
            d = Path(tmp) / str(n)
            (d / "logs").mkdir(parents=True)
            with Journal(d / "journal.db") as journal:
                fill(journal, n, d / "logs")
                t = time.perf_counter()
                exps = journal.list()
                journal_ms = (time.perf_counter() - t) * 1000
            best = exps[0]
            totals, models, contexts, validates = [], [], [], []
            for _ in range(args.repeat):
                ctx = ProposalContext(source, "train.py", exps, best, 0.002, "val_bpb", True,
                                      program=program)
                t = time.perf_counter()
                p = proposer.propose(ctx)
                totals.append(time.perf_counter() - t)
                tm = proposer.last_timings
                models.append(tm["model"])
                contexts.append(tm["context"])
                validates.append(tm["validate"])
                assert "MATRIX_LR = 0.03" in p.new_source
            built = proposer.last_context
            med = statistics.median
            sizes[str(n)] = {
                "context_tokens": built.tokens,
                "within_budget": built.tokens <= args.budget,
                "dropped_lines": sum(built.dropped.values()),
                "overhead_ms": round(med([a - b for a, b in zip(totals, models)]) * 1000, 2),
                "context_ms": round(med(contexts) * 1000, 2),
                "validate_ms": round(med(validates) * 1000, 2),
                "http_ms": round(med(models) * 1000, 2),
                "journal_list_ms": round(journal_ms, 2),
            }
    out["entries"] = sizes
    print(json.dumps(out))
    return 0


def _has_tiktoken() -> bool:
    from sigmaloop.proposers import llm

    llm.estimate_tokens("x")
    return bool(llm._TIKTOKEN)


if __name__ == "__main__":
    sys.exit(main())
