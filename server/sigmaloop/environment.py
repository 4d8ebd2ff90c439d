"""What a trial's environment holds: an allow-list of our variables plus the trial contract."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from .models import TrialSpec

#: What a trial gets from our environment by default: names, and name prefixes (the trial
#: contract, locale, interpreter and environment managers, compilers, CUDA/ROCm/BLAS/threading
#: knobs). Everything else stays out unless ``runner.env_allow`` names it.
ENV_ALLOW_NAMES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "HOME", "TMPDIR",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "VIRTUAL_ENV",
    "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CC", "CXX",
    "TOKENIZERS_PARALLELISM", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
ENV_ALLOW_PREFIXES = (
    "LC_", "SIGMALOOP_", "CUDA_", "NVIDIA_", "ROCM_", "HIP_", "HSA_", "OMP_", "MKL_", "OPENBLAS_",
    "BLIS_", "VECLIB_", "NUMEXPR_", "KMP_", "GOTO_", "TORCH_", "PYTORCH_", "TORCHINDUCTOR_", "TRITON_",
    "NCCL_", "CUBLAS_", "CUDNN_", "XLA_", "JAX_",
)
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")
_URL_CREDENTIALS_RE = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def scrub_env(env: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The part of ``env`` a trial may see: the allow-list (:data:`ENV_ALLOW_NAMES`,
    :data:`ENV_ALLOW_PREFIXES`) minus anything secret-looking inside it (a name with KEY,
    TOKEN, SECRET, PASSWORD, CREDENTIAL, AUTH… — unless listed by exact name — or a URL with
    credentials), plus the names in ``allow`` (``runner.env_allow``), which pass as they are."""
    allowed = set(allow)
    out: dict[str, str] = {}
    for name, value in env.items():
        if name in allowed:
            out[name] = value
            continue
        if name not in ENV_ALLOW_NAMES:
            if not name.startswith(ENV_ALLOW_PREFIXES):
                continue
            if any(w in name.upper() for w in _SECRET_WORDS):
                continue
        if _URL_CREDENTIALS_RE.search(value):
            continue
        out[name] = value
    return out


def trial_env(spec: TrialSpec, env_allow: Iterable[str] = ()) -> dict[str, str]:
    """The environment a trial runs with (see the module docstring)."""
    env = scrub_env(os.environ, env_allow)
    env.update(
        SIGMALOOP_TIME_BUDGET=str(spec.budget),
        SIGMALOOP_SEED=str(spec.seed),
        SIGMALOOP_METRICS=str(spec.metrics_path),
        SIGMALOOP_EXP_ID=str(spec.exp_id),
        PYTHONUNBUFFERED="1",
    )
    env.pop("SIGMALOOP_MODEL", None)  # only the runner says where a model is handed over
    if spec.evaluator is not None and spec.model_path:
        env["SIGMALOOP_MODEL"] = spec.model_path
    env.update(spec.env)
    return env


