"""prepare.py: cache idempotence and keys, the validation split, bad input, the HTTP source."""

import http.server
import json
import os
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trainerkit import TRAINER, cache_entries, clean_env, run_py

sys.path.insert(0, str(TRAINER))
import prepare


def snapshot(entry: Path):
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in entry.iterdir()}


def test_second_prepare_is_a_no_op(prepared):
    before = snapshot(prepared["entry"])
    p = run_py(TRAINER / "prepare.py", prepared["env"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"cache up to date: {prepared['entry']}"
    assert snapshot(prepared["entry"]) == before
    assert cache_entries(prepared["cache"]) == [prepared["entry"].name]
    meta = json.loads((prepared["entry"] / "meta.json").read_text())
    assert meta["vocab_size"] == 2048 and meta["dtype"] == "uint16"


def test_cache_key_changes_with_vocab_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMALOOP_CACHE", str(tmp_path))
    for var in ("SIGMALOOP_DATA", "SIGMALOOP_VOCAB_SIZE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("hello world\n")

    def key(**kw):
        cfg = prepare.resolve_config(**kw)
        return prepare.cache_key(cfg, prepare.get_source(cfg))

    base = key()
    assert base.startswith("stdlib-v8192-")
    assert key() == base  # stable
    assert key(vocab_size=4096) != base
    folder = key(source=str(tmp_path / "corpus"))
    assert folder != base and folder.startswith("files-")
    # Editing a file changes the source fingerprint, so a stale entry is never reused.
    (tmp_path / "corpus" / "a.txt").write_text("hello world, edited\n")
    assert key(source=str(tmp_path / "corpus")) != folder
    # The environment resolves exactly like the flag (train.py relies on this).
    monkeypatch.setenv("SIGMALOOP_VOCAB_SIZE", "4096")
    assert key() == key(vocab_size=4096)


def test_validation_split_never_overlaps_training(prepared, monkeypatch):
    src = prepare.StdlibSource()
    train_ids = [d for d, _ in src.documents("train")]
    val_ids = [d for d, _ in src.documents("val")]
    assert val_ids and train_ids
    assert not set(train_ids) & set(val_ids)
    assert len(train_ids) + len(val_ids) == len(src.files)
    assert all(prepare.is_val(d) for d in val_ids)
    # The cached splits agree with the rule (document counts recorded at build time).
    meta = json.loads((prepared["entry"] / "meta.json").read_text())
    assert meta["splits"]["val"]["docs"] == len(val_ids)
    assert meta["splits"]["train"]["docs"] == len(train_ids)
    # Parquet rows are split per row, by file path and row number.
    ids = [f"x.parquet#{i}" for i in range(2000)]
    n_val = sum(map(prepare.is_val, ids))
    assert 50 < n_val < 150  # ~1 in 20


def make_parquet(path: Path, n_rows=400, column="text"):
    """Rows of real-looking text (stdlib source lines), enough for both splits."""
    lines = Path(os.__file__).read_text().splitlines()
    rows = ["\n".join(lines[(i * 7) % 900 : (i * 7) % 900 + 40]) for i in range(n_rows)]
    pq.write_table(pa.table({column: rows}), path)


def bad_prepare(tmp_path, source, *needles):
    cache = tmp_path / "cache"
    p = run_py(TRAINER / "prepare.py",
               clean_env(SIGMALOOP_CACHE=cache, SIGMALOOP_VOCAB_SIZE=300),
               args=["--source", str(source)])
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    assert "error:" in p.stderr
    for needle in needles:
        assert needle in p.stderr, p.stderr
    assert cache_entries(cache) == []  # nothing half-written, no temp dir left behind
    return p.stderr


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    bad_prepare(tmp_path, tmp_path / "empty", "no data files found", str(tmp_path / "empty"))


def test_missing_source(tmp_path):
    bad_prepare(tmp_path, tmp_path / "nope", "does not exist")


def test_text_file_not_utf8(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for i in range(30):
        (d / f"ok{i}.txt").write_text("some text " * 200)
    (d / "latin1.txt").write_bytes(b"caf\xe9 " * 100)
    bad_prepare(tmp_path, d, "latin1.txt", "not valid UTF-8")


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads chmod-000 files; test_text_file_not_utf8 and "
                    "test_parquet_garbage cover unreadable content")
    d = tmp_path / "data"
    d.mkdir()
    for i in range(30):
        (d / f"ok{i}.txt").write_text("some text " * 200)
    (d / "secret.txt").write_text("x")
    (d / "secret.txt").chmod(0)
    bad_prepare(tmp_path, d, "secret.txt", "cannot read")


def test_parquet_garbage(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "shard.parquet").write_text("this is not parquet")
    bad_prepare(tmp_path, d, "shard.parquet", "not a readable parquet file")


def test_parquet_without_text_column(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_parquet(d / "shard.parquet", n_rows=20, column="content")
    bad_prepare(tmp_path, d, "no 'text' column", "content")


def test_glob_matching_a_directory(tmp_path):
    d = tmp_path / "data"
    (d / "dir.txt").mkdir(parents=True)
    (d / "a.txt").write_text("hello " * 100)
    bad_prepare(tmp_path, f"{d}/*.txt", "dir.txt", "is a directory")


def test_too_little_data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "tiny.txt").write_text("hello world " * 100)
    bad_prepare(tmp_path, d, "too small", "more data")


def test_parquet_folder_builds(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_parquet(d / "a.parquet")
    (d / "notes.md").write_text("# notes\n" + "words and more words\n" * 50)
    cache = tmp_path / "cache"
    env = clean_env(SIGMALOOP_CACHE=cache, SIGMALOOP_VOCAB_SIZE=300, SIGMALOOP_DATA=d)
    p = run_py(TRAINER / "prepare.py", env)
    assert p.returncode == 0, p.stderr
    [entry] = cache_entries(cache)
    assert entry.startswith("files-v300-")
    meta = json.loads((cache / entry / "meta.json").read_text())
    assert meta["splits"]["train"]["docs"] > meta["splits"]["val"]["docs"] > 0


# --- HTTP source against a local server -------------------------------------------------


class ShardServer:
    """Serves files from a folder on 127.0.0.1; optionally fails the first request of each."""

    def __init__(self, root: Path, fail_first=False):
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                f = root / self.path.lstrip("/")
                if fail_first and n == 1:
                    self.send_error(503, "try again")
                elif not f.is_file():
                    self.send_error(404, "not found")
                else:
                    body = f.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def http_env(cache, url):
    return clean_env(SIGMALOOP_CACHE=cache, SIGMALOOP_VOCAB_SIZE=300,
                     SIGMALOOP_DATA="climbmix", SIGMALOOP_DATA_URL=url,
                     SIGMALOOP_NUM_SHARDS=1)


def test_http_source_retries_then_succeeds(tmp_path):
    shards = tmp_path / "srv"
    shards.mkdir()
    make_parquet(shards / "shard_00000.parquet")
    make_parquet(shards / f"shard_{prepare.CLIMBMIX_VAL_SHARD:05d}.parquet", n_rows=200)
    server = ShardServer(shards, fail_first=True)
    try:
        cache = tmp_path / "cache"
        p = run_py(TRAINER / "prepare.py", http_env(cache, server.url))
        assert p.returncode == 0, p.stderr
        assert "retrying" in p.stderr
        assert server.hits == {"/shard_00000.parquet": 2, "/shard_06542.parquet": 2}
        [entry] = cache_entries(cache)
        assert entry.startswith("climbmix-v300-")
        # Second run: nothing downloaded again, nothing rebuilt.
        p = run_py(TRAINER / "prepare.py", http_env(cache, server.url))
        assert p.returncode == 0 and "cache up to date" in p.stdout
        assert sum(server.hits.values()) == 4
    finally:
        server.close()


def test_http_source_404_is_a_clear_error(tmp_path):
    shards = tmp_path / "srv"
    shards.mkdir()
    make_parquet(shards / "shard_00000.parquet")  # the validation shard is missing
    server = ShardServer(shards)
    try:
        cache = tmp_path / "cache"
        p = run_py(TRAINER / "prepare.py", http_env(cache, server.url))
        assert p.returncode != 0
        assert "Traceback" not in p.stderr
        assert "HTTP 404" in p.stderr and "shard_06542.parquet" in p.stderr
        assert server.hits["/shard_06542.parquet"] == 1  # a 404 is not retried
        assert cache_entries(cache) == []
        leftovers = [p.name for p in (cache / "downloads").rglob("*") if p.is_file()]
        assert leftovers == ["shard_00000.parquet"]  # only complete downloads are kept
    finally:
        server.close()
