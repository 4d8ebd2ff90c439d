"""Files made from the journal: autoresearch's results.tsv and a full export (jsonl / csv).

Kept apart from the storage: the journal answers queries, this module writes what people and
other tools read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .journal import Journal
from .models import MEASURED, Experiment, Status

_FIELDS = [f.name for f in dataclasses.fields(Experiment)]
_FLATTEN = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


def write_results_tsv(journal: Journal, path: str | os.PathLike[str]) -> int:
    """autoresearch's results.tsv (5 columns; ``val_bpb`` whatever the metric is called).

    One row per finished experiment with a commit, in the order they finished (rejected ones
    never ran and are left out). Returns the number of rows written.
    """
    lines = ["commit\tval_bpb\tmemory_gb\tstatus\tdescription"]
    n = 0
    for e in journal.finished_with_commit():
        if e.status in (Status.CRASHED, Status.TIMEOUT):
            status = "crash"
        elif e.status == Status.KEPT or (e.is_baseline and e.status in MEASURED):
            status = "keep"
        elif e.status in (Status.DISCARDED, Status.TAMPERED, Status.OVER_BUDGET, Status.PRUNED):
            status = "discard"  # autoresearch's three words; the description says which
        else:  # rejected: never ran
            continue
        crashed = status == "crash"
        metric = 0.0 if crashed or e.metric is None else e.metric  # pruned: never measured, 0 like a crash
        vram = None if crashed else e.summary.get("peak_vram_mb")
        memory = 0.0 if vram is None else float(vram) / 1024
        if e.is_baseline:
            desc = f"baseline (seed {e.seed})" if e.seed is not None else "baseline"
        else:
            desc = e.hypothesis.replace("\r\n", " ").translate(_FLATTEN).strip()
            if e.status in (Status.TAMPERED, Status.OVER_BUDGET):
                desc = f"[{e.status.value}: {e.reason}] {desc}"
            elif e.status == Status.PRUNED:
                desc = f"[pruned at {e.timings.get('pruned_at', 0):.0%}] {desc}"
        lines.append(f"{(e.commit or '')[:7]}\t{metric:.6f}\t{memory:.1f}\t{status}\t{desc}")
        n += 1
    write_atomic(Path(path), "\n".join(lines) + "\n")
    return n


def export(journal: Journal, path: str | os.PathLike[str], fmt: str = "jsonl") -> int:
    """Every field of every experiment, oldest first: ``jsonl`` (one object a line) or
    ``csv`` (dict fields and ``crash`` as JSON text, None as empty). Returns the count."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"export format must be 'jsonl' or 'csv', not {fmt!r}")
    records = [as_json(e) for e in journal.list()]
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(f, fieldnames=_FIELDS)
            writer.writeheader()
            for rec in records:
                writer.writerow({k: _cell(v) for k, v in rec.items()})
    os.replace(tmp, target)
    return len(records)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value


def as_json(e: Experiment) -> dict[str, Any]:
    """Every field of an experiment as JSON values (the status by its name)."""
    rec = dataclasses.asdict(e)
    rec["status"] = e.status.value
    return rec


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
