"""Fixtures for the trainer tests: one prepared cache per session."""

import pytest
from trainerkit import TEST_VOCAB, TRAINER, cache_entries, clean_env, run_py


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """SIGMALOOP_CACHE in a tmp dir, prepared once with the default (stdlib) source."""
    cache = tmp_path_factory.mktemp("rlcache")
    env = clean_env(SIGMALOOP_CACHE=cache, SIGMALOOP_VOCAB_SIZE=TEST_VOCAB)
    p = run_py(TRAINER / "prepare.py", env)
    assert p.returncode == 0, p.stderr
    assert "prepared:" in p.stdout, p.stdout
    entries = cache_entries(cache)
    assert len(entries) == 1 and not entries[0].startswith("."), entries
    return {"cache": cache, "env": env, "entry": cache / entries[0]}
