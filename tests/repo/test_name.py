"""The product has one name: nothing we ship says the old one except the migration and its test."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OLD = "research" + "loop"  # spelled in two parts so this file does not match itself
ALLOWED = {"server/sigmaloop/migrate.py", "tests/engine/test_migrate.py"}


def test_old_name_only_in_the_migration():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    offenders = []
    for rel in filter(None, files.decode().split("\0")):
        path = REPO / rel
        if rel in ALLOWED or not path.is_file() or path.is_symlink():
            continue
        if OLD in rel.lower() or OLD in path.read_bytes().decode("utf-8", "replace").lower():
            offenders.append(rel)
    assert offenders == [], f"the old name appears in {offenders}"


def test_wheel_carries_the_trainer_template(tmp_path):
    """A non-editable install starts a project from package data, byte for byte trainer/."""
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sigmaloop-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for name in ("prepare.py", "train.py", "program.md"):
            assert zf.read(f"sigmaloop/trainer/{name}") == (REPO / "trainer" / name).read_bytes()
