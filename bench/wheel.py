"""The product as a stranger gets it: build the wheel, install it into a clean venv, start a project.

    python bench/wheel.py [--budget 3] [--keep DIR]

Builds sigmaloop's wheel from this checkout, makes a fresh virtual environment (no access to the
checkout or its .venv), installs torch (TORCH_VERSION, default the 2.13.0 CPU wheel) and then the
wheel with its trainer extra, and from a folder outside the checkout runs what the README tells a
new user to run: ``sigmaloop init`` → ``sigmaloop prepare`` → ``sigmaloop baseline``. Every step's
time goes into one JSON line; any failing step prints its output and exits non-zero (CI runs this).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class StepFailed(RuntimeError):
    pass


def run(step: str, argv: list[str], cwd: Path, env: dict[str, str], timings: dict[str, float]) -> str:
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    timings[step] = round(time.monotonic() - t0, 2)
    if proc.returncode != 0:
        raise StepFailed(f"{step} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                         f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=3.0, help="training seconds of each baseline seed")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="sigmaloop-wheel-"))
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # A clean environment: nothing of the checkout's venv, no PYTHONPATH pointing into the repo.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    base_python = getattr(sys, "_base_executable", sys.executable)
    venv = root / "venv"
    vpy = venv / "bin" / "python"
    t_all = time.monotonic()
    result: dict[str, object] = {"bench": "wheel", "budget": args.budget}
    try:
        dist = root / "dist"
        run("build_wheel", [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(dist)],
            root, env, timings)
        wheels = sorted(dist.glob("sigmaloop-*.whl"))
        if len(wheels) != 1:
            raise StepFailed(f"expected one sigmaloop wheel in {dist}, found {[w.name for w in wheels]}")
        wheel = wheels[0]
        result["wheel"] = wheel.name
        run("make_venv", [base_python, "-m", "venv", str(venv)], root, env, timings)
        torch_version = os.environ.get("TORCH_VERSION", "2.13.0")
        run("install_torch", [str(vpy), "-m", "pip", "install", "-q", f"torch=={torch_version}"], root, env, timings)
        run("install_wheel", [str(vpy), "-m", "pip", "install", "-q", f"{wheel}[trainer]"], root, env, timings)
        where = run("import_check", [str(vpy), "-c", "import sigmaloop; print(sigmaloop.__file__)"],
                    root, env, timings).strip()
        if not where.startswith(str(venv)):
            raise StepFailed(f"sigmaloop was imported from {where}, not from the clean venv")
        cli = str(venv / "bin" / "sigmaloop")
        ws = root / "project"
        shutil.rmtree(ws, ignore_errors=True)
        run("init", [cli, "init", str(ws), "--budget", f"{args.budget:g}"], root, env, timings)
        run("prepare", [cli, "prepare"], ws, env, timings)
        run("baseline", [cli, "baseline"], ws, env, timings)
        status = json.loads(run("log", [cli, "log", "--json"], ws, env, timings).splitlines()[-1])
        result["baseline_status"] = status["status"]
        result["baseline_metric"] = status["metric"]
        result["ok"] = True
    except StepFailed as exc:
        print(str(exc), file=sys.stderr)
        result["ok"] = False
    result["seconds"] = timings
    result["total_s"] = round(time.monotonic() - t_all, 2)
    print(json.dumps(result))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
