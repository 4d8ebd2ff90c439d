"""
Fixed data, tokenizer and metric for sigmaloop trials. The agent does NOT edit this file.

    python prepare.py                          # default source: this Python's stdlib sources
    python prepare.py --source /data/corpus    # a folder (or glob) of .txt/.md/.py/.parquet files
    python prepare.py --source climbmix        # climbmix parquet shards over HTTP
    python prepare.py --vocab-size 4096        # tokenizer size (default 8192)

The same settings come from the environment (flags win): SIGMALOOP_DATA (source),
SIGMALOOP_VOCAB_SIZE, SIGMALOOP_NUM_SHARDS (climbmix training shards),
SIGMALOOP_DATA_URL (climbmix base URL), SIGMALOOP_CACHE (cache root, default
~/.cache/sigmaloop). train.py resolves its data through `load()` here, so both always
agree on the source.

What gets built, once per (source fingerprint, tokenizer config), in one directory
<cache>/<source>-v<vocab>-<hash>/:
    tokenizer.tiktoken  BPE merges (base64 token, rank per line), trained with rustbpe
    token_bytes.npy     UTF-8 byte length of every token id (0 for special tokens)
    train.bin, val.bin  token ids (uint16 or uint32), every document prefixed by <|bos|>
                        (inside a sigmaloop trial val.bin reads as empty: only the evaluator sees it)
    meta.json           config, counts, dtype; written last
The directory is assembled under a temporary name and renamed into place, so a failed or
interrupted run never leaves a half-written entry, and a second run reuses it untouched.
"""

from __future__ import annotations

import argparse
import base64
import glob as globlib
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------
# Fixed constants (part of the metric: do not change between trials)
# ---------------------------------------------------------------------------

PREP_VERSION = 1  # bump when the on-disk format or the split rule changes
DEFAULT_VOCAB_SIZE = 8192
# GPT-4 style split pattern with \p{N}{1,2} (as karpathy/autoresearch uses).
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
BOS_TOKEN = "<|bos|>"
VAL_MODULUS = 20  # a document is validation iff hash(its id) % 20 == 0  (about 5%)
TOKENIZER_MAX_CHARS = 200_000_000  # cap on training text fed to the BPE trainer
TOKENIZER_DOC_CAP = 10_000  # long documents are truncated for tokenizer training only
MIN_SPLIT_TOKENS = 4096  # either split smaller than this is an error, not a model

# Evaluation: fixed per device type, never taken from train.py.
# The number of windows is EVAL_TOKENS // EVAL_SEQ_LEN, capped by the size of the validation
# split (so for a given data cache and device the evaluated tokens are always the same).
EVAL_SEQ_LEN = {"cuda": 2048, "mps": 1024, "cpu": 256}
EVAL_BATCH_SIZE = {"cuda": 32, "mps": 8, "cpu": 16}
EVAL_TOKENS = {"cuda": 20 * 2**20, "mps": 2**19, "cpu": 2**15}  # cpu: eval is ~5% of a 30 s trial

# climbmix (the dataset karpathy/autoresearch uses), pre-shuffled parquet shards with a
# `text` column; the last shard is the pinned validation shard.
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542
DEFAULT_NUM_SHARDS = 2
HTTP_ATTEMPTS = 5
HTTP_BACKOFF_S = 0.5  # sleeps 0.5, 1, 2, 4 s between attempts
HTTP_TIMEOUT_S = 60

TEXT_SUFFIXES = (".txt", ".md", ".py", ".text", ".rst", ".jsonl", ".json", ".csv", ".html")


class PrepareError(Exception):
    """Bad input or environment: the message says what, where and what to do."""


# ---------------------------------------------------------------------------
# Configuration (flags > environment > defaults)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    source: str  # "stdlib", "climbmix", or a folder / file / glob
    vocab_size: int
    num_shards: int
    data_url: str
    cache_root: Path


def _int_setting(name: str, value, lo: int, hi: int) -> int:
    try:
        v = int(str(value).strip())
    except ValueError:
        raise PrepareError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise PrepareError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


def resolve_config(source=None, vocab_size=None, num_shards=None) -> Config:
    env = os.environ
    source = source or env.get("SIGMALOOP_DATA", "").strip() or "stdlib"
    vocab = _int_setting(
        "vocab size (--vocab-size / SIGMALOOP_VOCAB_SIZE)",
        vocab_size or env.get("SIGMALOOP_VOCAB_SIZE", "").strip() or DEFAULT_VOCAB_SIZE,
        260,
        2**20,
    )
    shards = _int_setting(
        "number of shards (--num-shards / SIGMALOOP_NUM_SHARDS)",
        num_shards or env.get("SIGMALOOP_NUM_SHARDS", "").strip() or DEFAULT_NUM_SHARDS,
        1,
        CLIMBMIX_VAL_SHARD,
    )
    url = env.get("SIGMALOOP_DATA_URL", "").strip() or CLIMBMIX_URL
    cache = env.get("SIGMALOOP_CACHE", "").strip()
    root = Path(cache).expanduser() if cache else Path.home() / ".cache" / "sigmaloop"
    return Config(source, vocab, shards, url.rstrip("/"), root)


# ---------------------------------------------------------------------------
# Sources: each yields documents (doc_id, text) and has a cheap fingerprint
# ---------------------------------------------------------------------------


def _stable_hash(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def is_val(doc_id: str) -> bool:
    """The pinned validation rule: depends only on the document's id (its relative path)."""
    return _stable_hash(doc_id) % VAL_MODULUS == 0


def _stat_fingerprint(root: Path, files: list[Path]) -> list:
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(root)) if root else str(f), st.st_size, st.st_mtime_ns])
    return out


class Source:
    name = "data"

    def fingerprint(self) -> dict:
        raise NotImplementedError

    def documents(self, split: str):
        """Yield (doc_id, text) for split 'train' or 'val', in a fixed order."""
        raise NotImplementedError

    def total_bytes(self) -> int | None:
        return None


class StdlibSource(Source):
    """The running Python's standard-library .py files (offline, ~30 MB), site-packages excluded."""

    name = "stdlib"

    def __init__(self):
        self.root = Path(sysconfig.get_paths()["stdlib"]).resolve()
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")
            )
            files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
        if not files:
            raise PrepareError(f"no .py files found under the stdlib path {self.root}")
        # Order by hash of the relative path (fixed, and mixes packages evenly).
        self.files = sorted(files, key=lambda f: (_stable_hash(self._id(f)), self._id(f)))

    def _id(self, f: Path) -> str:
        return f.relative_to(self.root).as_posix()

    def fingerprint(self):
        return {"kind": "stdlib", "python": sys.version.split()[0], "root": str(self.root),
                "files": _stat_fingerprint(self.root, self.files)}

    def total_bytes(self):
        return sum(f.stat().st_size for f in self.files)

    def documents(self, split):
        for f in self.files:
            doc_id = self._id(f)
            if is_val(doc_id) != (split == "val"):
                continue
            # A handful of stdlib test files are deliberately not UTF-8; replace, don't fail.
            yield doc_id, f.read_bytes().decode("utf-8", errors="replace")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise PrepareError(
            f"{path} is a directory, not a data file. Point the source at its parent folder "
            "or remove it from the glob."
        ) from None
    except OSError as e:
        raise PrepareError(
            f"cannot read {path}: {e.strerror or e}. Fix its permissions or remove it from the data."
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrepareError(
            f"{path} is not valid UTF-8 text (byte {e.start}: {e.reason}). Convert it to UTF-8 "
            "or remove it from the data."
        ) from None


def _parquet_texts(path: Path):
    """Yield the `text` column of a parquet file, row group by row group."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except IsADirectoryError:
        raise PrepareError(f"{path} is a directory, not a parquet file.") from None
    except OSError as e:
        raise PrepareError(
            f"cannot read {path}: {e}. Fix its permissions or remove it from the data."
        ) from None
    except Exception as e:  # pyarrow raises ArrowInvalid for non-parquet bytes
        raise PrepareError(
            f"{path} is not a readable parquet file ({e}). Re-download or remove it."
        ) from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise PrepareError(
            f"{path} has no 'text' column (columns: {', '.join(names) or 'none'}). "
            "Parquet data needs one string column named 'text'."
        )
    for rg in range(pf.num_row_groups):
        try:
            col = pf.read_row_group(rg, columns=["text"]).column("text")
        except Exception as e:
            raise PrepareError(f"{path}: cannot read row group {rg} ({e}).") from None
        for text in col.to_pylist():
            yield text or ""


class FilesSource(Source):
    """A folder (searched recursively), a single file, or a glob of text / parquet files."""

    def __init__(self, spec: str):
        self.spec = spec
        p = Path(spec).expanduser()
        if any(ch in spec for ch in "*?["):
            matches = sorted(Path(m) for m in globlib.glob(str(p), recursive=True))
            self.root = Path(os.path.commonpath([str(m) for m in matches])) if matches else None
            if self.root is not None and self.root.is_file():
                self.root = self.root.parent
            files = matches
            where = f"the glob {spec!r}"
        elif p.is_dir():
            self.root = p
            files = sorted(
                f for f in p.rglob("*")
                if not any(part.startswith(".") for part in f.relative_to(p).parts)
                and (f.suffix in TEXT_SUFFIXES or f.suffix == ".parquet")
                and not f.is_dir()
            )
            where = f"the folder {p}"
        elif p.exists():
            self.root = p.parent
            files = [p]
            where = str(p)
        else:
            raise PrepareError(
                f"data source {spec!r} does not exist. Use 'stdlib' (default), 'climbmix', "
                "or a folder / file / glob of .txt/.md/.py/.parquet files."
            )
        if not files:
            raise PrepareError(
                f"no data files found in {where} (looked for {', '.join(TEXT_SUFFIXES)}, .parquet). "
                "Add text or parquet files, or unset SIGMALOOP_DATA to use the stdlib default."
            )
        for f in files:
            if f.is_dir():
                raise PrepareError(
                    f"{f} (matched by {where}) is a directory, not a data file. "
                    "Narrow the glob or remove it."
                )
        self.files = files
        self.name = "files"

    def _id(self, f: Path) -> str:
        return f.relative_to(self.root).as_posix()

    def fingerprint(self):
        try:
            files = _stat_fingerprint(self.root, self.files)
        except OSError as e:
            raise PrepareError(f"cannot stat {e.filename}: {e.strerror}.") from None
        return {"kind": "files", "root": str(self.root.resolve()), "files": files}

    def total_bytes(self):
        return sum(f.stat().st_size for f in self.files)

    def documents(self, split):
        want_val = split == "val"
        for f in self.files:
            fid = self._id(f)
            if f.suffix == ".parquet":
                for i, text in enumerate(_parquet_texts(f)):
                    if is_val(f"{fid}#{i}") == want_val:
                        yield f"{fid}#{i}", text
            elif is_val(fid) == want_val:
                yield fid, _read_text(f)


def download(url: str, dest: Path, attempts: int = HTTP_ATTEMPTS) -> Path:
    """Fetch url to dest atomically, retrying transient failures with exponential backoff."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = None
    for attempt in range(1, attempts + 1):
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code in (400, 401, 403, 404, 410):  # permanent: retrying will not help
                tmp.unlink(missing_ok=True)
                raise PrepareError(
                    f"download failed: {url} -> {last}. Check SIGMALOOP_DATA_URL / the shard "
                    "number, or use a local source (SIGMALOOP_DATA=<folder>)."
                ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = str(getattr(e, "reason", e))
        tmp.unlink(missing_ok=True)
        if attempt < attempts:
            delay = HTTP_BACKOFF_S * 2 ** (attempt - 1)
            print(f"download {url}: attempt {attempt}/{attempts} failed ({last}); "
                  f"retrying in {delay:.1f}s", file=sys.stderr)
            time.sleep(delay)
    raise PrepareError(
        f"download failed after {attempts} attempts: {url} ({last}). Check the network or "
        "SIGMALOOP_DATA_URL, or use a local source (SIGMALOOP_DATA=<folder>)."
    )


class ClimbmixSource(Source):
    """Shards 0..N-1 for training plus the pinned last shard for validation, over HTTP."""

    name = "climbmix"

    def __init__(self, cfg: Config):
        self.url = cfg.data_url
        self.train_ids = list(range(cfg.num_shards))
        self.dir = cfg.cache_root / "downloads" / hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @staticmethod
    def _name(i: int) -> str:
        return f"shard_{i:05d}.parquet"

    def fingerprint(self):
        return {"kind": "climbmix", "url": self.url, "train": self.train_ids,
                "val": CLIMBMIX_VAL_SHARD}

    def fetch(self):
        for i in [*self.train_ids, CLIMBMIX_VAL_SHARD]:
            download(f"{self.url}/{self._name(i)}", self.dir / self._name(i))

    def documents(self, split):
        ids = [CLIMBMIX_VAL_SHARD] if split == "val" else self.train_ids
        for i in ids:
            for j, text in enumerate(_parquet_texts(self.dir / self._name(i))):
                yield f"{self._name(i)}#{j}", text


def get_source(cfg: Config) -> Source:
    if cfg.source == "stdlib":
        return StdlibSource()
    if cfg.source == "climbmix":
        return ClimbmixSource(cfg)
    return FilesSource(cfg.source)


# ---------------------------------------------------------------------------
# Cache entry naming
# ---------------------------------------------------------------------------


def cache_key(cfg: Config, source: Source) -> str:
    spec = {"version": PREP_VERSION, "source": source.fingerprint(), "vocab_size": cfg.vocab_size,
            "pattern": SPLIT_PATTERN, "bos": BOS_TOKEN, "val_modulus": VAL_MODULUS,
            "tok_max_chars": TOKENIZER_MAX_CHARS, "tok_doc_cap": TOKENIZER_DOC_CAP}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{source.name}-v{cfg.vocab_size}-{digest}"


def _progress(**kw):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=0.5, **kw)


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def _train_tokenizer(source: Source, vocab_size: int, total_bytes: int | None):
    import rustbpe

    bar = _progress(desc="tokenizer: reading train docs", unit="B", unit_scale=True,
                    total=total_bytes)

    def texts():
        n = 0
        for _, text in source.documents("train"):
            doc = text[:TOKENIZER_DOC_CAP]
            n += len(doc)
            bar.update(len(text.encode("utf-8", "surrogatepass")))
            yield doc
            if n >= TOKENIZER_MAX_CHARS:
                return

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(texts(), vocab_size - 1, pattern=SPLIT_PATTERN)  # -1: room for BOS
    bar.close()
    ranks = {bytes(k): v for k, v in tok.get_mergeable_ranks()}
    return tok.get_pattern(), ranks


def _make_encoding(pattern: str, ranks: dict[bytes, int]):
    import tiktoken

    return tiktoken.Encoding(name="sigmaloop", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={BOS_TOKEN: len(ranks)})


def _save_ranks(path: Path, ranks: dict[bytes, int]):
    with open(path, "w") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(tok).decode()} {rank}\n")


def _load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text().splitlines():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    return ranks


# ---------------------------------------------------------------------------
# Build / load
# ---------------------------------------------------------------------------


def _tokenize_split(enc, source: Source, split: str, out_path: Path, dtype, total_bytes):
    bos = enc.encode_single_token(BOS_TOKEN)
    n_tokens = n_docs = 0
    bar = _progress(desc=f"tokenizing {split}", unit="B", unit_scale=True, total=total_bytes)
    batch: list[str] = []

    def flush(f):
        nonlocal n_tokens, n_docs
        for ids in enc.encode_ordinary_batch(batch, num_threads=os.cpu_count() or 1):
            arr = np.asarray([bos, *ids], dtype=dtype)
            arr.tofile(f)
            n_tokens += len(arr)
            n_docs += 1
        batch.clear()

    with open(out_path, "wb") as f:
        for _, text in source.documents(split):
            batch.append(text)
            bar.update(len(text.encode("utf-8", "surrogatepass")))
            if len(batch) >= 256:
                flush(f)
        flush(f)
    bar.close()
    return n_tokens, n_docs


def _build(cfg: Config, source: Source, final: Path):
    cfg.cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=cfg.cache_root))
    try:
        t0 = time.time()
        if isinstance(source, ClimbmixSource):
            source.fetch()
        total = source.total_bytes()
        pattern, ranks = _train_tokenizer(source, cfg.vocab_size, total)
        enc = _make_encoding(pattern, ranks)
        if enc.n_vocab != cfg.vocab_size:
            raise PrepareError(
                f"the data is too small to learn a {cfg.vocab_size}-token vocabulary (got "
                f"{enc.n_vocab}). Use a smaller --vocab-size or more data."
            )
        _save_ranks(tmp / "tokenizer.tiktoken", ranks)
        token_bytes = np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)],
                               dtype=np.int32)
        token_bytes[enc.encode_single_token(BOS_TOKEN)] = 0  # special: excluded from bpb
        np.save(tmp / "token_bytes.npy", token_bytes)
        dtype = np.uint16 if cfg.vocab_size <= 2**16 else np.uint32
        counts = {}
        for split in ("train", "val"):
            n_tok, n_docs = _tokenize_split(enc, source, split, tmp / f"{split}.bin", dtype, total)
            if n_tok < MIN_SPLIT_TOKENS:
                raise PrepareError(
                    f"the {split} split of {cfg.source!r} has only {n_tok} tokens in {n_docs} "
                    f"documents (need >= {MIN_SPLIT_TOKENS}). Validation takes 1 in "
                    f"{VAL_MODULUS} documents (files, or parquet rows) by a hash of its path; "
                    "the data is too small: add more data or split it into more files."
                )
            counts[split] = {"tokens": n_tok, "docs": n_docs}
        meta = {"version": PREP_VERSION, "source": cfg.source, "vocab_size": cfg.vocab_size,
                "dtype": np.dtype(dtype).name, "pattern": pattern, "bos_token": BOS_TOKEN,
                "splits": counts, "build_seconds": round(time.time() - t0, 1),
                "fingerprint": source.fingerprint() if not isinstance(source, StdlibSource) else
                {"kind": "stdlib", "root": str(source.root), "n_files": len(source.files)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)  # atomic publish
        except OSError:
            if not (final / "meta.json").exists():  # not a concurrent twin: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_stale_temps(root: Path, max_age_s: float = 3600):
    """Remove temp build dirs left behind by killed processes (never a live one)."""
    if not root.is_dir():
        return
    for p in root.glob(".tmp-*"):
        try:
            if time.time() - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def prepare(cfg: Config | None = None, verbose: bool = True) -> Path:
    """Build the cache entry for cfg if it is missing; return its path. Idempotent."""
    cfg = cfg or resolve_config()
    source = get_source(cfg)
    final = cfg.cache_root / cache_key(cfg, source)
    if (final / "meta.json").exists():
        if verbose:
            print(f"cache up to date: {final}")
        return final
    _clean_stale_temps(cfg.cache_root)
    print(f"preparing {cfg.source!r} (vocab {cfg.vocab_size}) -> {final}", file=sys.stderr)
    _build(cfg, source, final)
    if verbose:
        meta = json.loads((final / "meta.json").read_text())
        s = meta["splits"]
        print(f"prepared: {final}  train {s['train']['tokens']:,} tokens / "
              f"{s['train']['docs']} docs, val {s['val']['tokens']:,} tokens / "
              f"{s['val']['docs']} docs, {meta['build_seconds']}s")
    return final


@dataclass
class Data:
    path: Path
    vocab_size: int
    bos_id: int
    train: np.ndarray  # memmap of token ids
    val: np.ndarray
    token_bytes: np.ndarray  # int32 [vocab_size]
    meta: dict

    def tokenizer(self):
        return _make_encoding(self.meta["pattern"], _load_ranks(self.path / "tokenizer.tiktoken"))


def _tokens(path: Path, dtype) -> np.ndarray:
    # Empty where it is hidden (a sigmaloop trial's sandbox blanks val.bin): np.memmap refuses
    # a zero-length file.
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def load(cfg: Config | None = None) -> Data:
    """Prepare if needed, then memory-map the token arrays of the resolved source."""
    path = prepare(cfg, verbose=False)
    meta = json.loads((path / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return Data(
        path=path,
        vocab_size=meta["vocab_size"],
        bos_id=meta["vocab_size"] - 1,
        train=_tokens(path / "train.bin", dtype),
        val=_tokens(path / "val.bin", dtype),
        token_bytes=np.load(path / "token_bytes.npy"),
        meta=meta,
    )


# ---------------------------------------------------------------------------
# Evaluation (the fixed metric)
# ---------------------------------------------------------------------------


def eval_windows(data: Data, device_type: str) -> tuple[int, int]:
    """(sequence length, number of windows) evaluated on this device type."""
    T = EVAL_SEQ_LEN[device_type]
    n_max = (len(data.val) - 1) // T
    return T, min(EVAL_TOKENS[device_type] // T, n_max)


def evaluate_bpb(model, data: Data | None = None) -> float:
    """Bits per byte of `model` on the fixed validation windows.

    model(idx) must return logits (B, T, V) for idx (B, T) of token ids. The windows are
    EVAL_SEQ_LEN tokens, spread evenly over the whole validation split; the loss is summed
    nats of every target token with a non-zero byte length (the BOS token has zero bytes),
    divided by the summed bytes of those targets and by ln 2.
    """
    import torch
    import torch.nn.functional as F

    data = data or load()
    if len(data.val) == 0:
        raise PrepareError("the validation split is not readable here (inside a sigmaloop trial only "
                           "the evaluator reads it): call hand_over(model) instead")
    param = next(model.parameters())
    device = param.device
    T, n = eval_windows(data, device.type)
    B = EVAL_BATCH_SIZE[device.type]
    stride = (len(data.val) - 1 - T) // max(n - 1, 1) if n > 1 else 0
    starts = np.arange(n, dtype=np.int64) * stride
    token_bytes = torch.from_numpy(data.token_bytes.astype(np.int64)).to(device)
    was_training = model.training
    model.eval()
    total_nats = 0.0
    total_bytes = 0
    try:
        with torch.no_grad():
            for i in range(0, n, B):
                rows = np.stack([np.asarray(data.val[s : s + T + 1], dtype=np.int64)
                                 for s in starts[i : i + B]])
                xy = torch.from_numpy(rows).to(device)
                x, y = xy[:, :-1], xy[:, 1:]
                if device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        logits = model(x)
                else:
                    logits = model(x)
                nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                       y.reshape(-1), reduction="none")
                nbytes = token_bytes[y.reshape(-1)]
                total_nats += (nats * (nbytes > 0)).sum().item()
                total_bytes += int(nbytes.sum().item())
    finally:
        model.train(was_training)
    return total_nats / (math.log(2) * total_bytes)


# ---------------------------------------------------------------------------
# Hand-over: the trial gives its model to the fixed evaluator
# ---------------------------------------------------------------------------

MODEL_ENV = "SIGMALOOP_MODEL"  # set by sigmaloop: where the trial writes its exported model


def export_model(model, path: str | os.PathLike) -> Path:
    """Write ``model`` as a torch.export program (weights included) that maps token ids (B, T)
    to logits (B, T, V), with the batch size free; atomically, so a half-written file never
    counts as a handed-over model."""
    import torch

    device = next(model.parameters()).device
    T = EVAL_SEQ_LEN[device.type]
    example = torch.zeros((EVAL_BATCH_SIZE[device.type], T), dtype=torch.long, device=device)
    batch = torch.export.Dim("batch", min=1, max=4096)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    finally:
        model.train(was_training)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.part{dest.suffix}")
    torch.export.save(program, tmp)
    os.replace(tmp, dest)
    return dest


def hand_over(model, data: Data | None = None) -> float | None:
    """The end of a trial. Under sigmaloop ($SIGMALOOP_MODEL set) the model is exported there and
    scored by a separate process running this file from the research branch's base commit; the
    trial itself cannot read the validation split, and returns None. Run by hand, the model is
    evaluated here and its val_bpb returned."""
    path = os.environ.get(MODEL_ENV, "").strip()
    if path:
        export_model(model, path)
        return None
    return evaluate_bpb(model, data)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Prepare sigmaloop data, tokenizer and cache.")
    ap.add_argument("--source", help="stdlib (default) | climbmix | folder | file | glob "
                    "(env SIGMALOOP_DATA)")
    ap.add_argument("--vocab-size", help=f"BPE vocabulary size incl. BOS (default "
                    f"{DEFAULT_VOCAB_SIZE}; env SIGMALOOP_VOCAB_SIZE)")
    ap.add_argument("--num-shards", help="climbmix training shards (default "
                    f"{DEFAULT_NUM_SHARDS}; env SIGMALOOP_NUM_SHARDS)")
    args = ap.parse_args(argv)
    try:
        prepare(resolve_config(args.source, args.vocab_size, args.num_shards))
    except PrepareError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare.py: interrupted; nothing was cached", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
