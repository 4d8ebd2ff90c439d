"""sigmaloop.toml: the workspace's committed settings, with defaults that work.

Secrets never live here: the LLM key comes from the environment or the editor's secret store.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "sigmaloop.toml"
STATE_DIR = ".sigmaloop"


class ConfigError(ValueError):
    """A bad value in sigmaloop.toml, naming the key and what to do."""


@dataclass
class ExperimentConfig:
    train_script: str = "train.py"
    command: str = "python train.py"  # a leading "python" means the trial interpreter
    metric: str = "val_bpb"
    direction: str = "minimize"  # or "maximize"
    budget: float = 60.0  # training seconds per trial
    grace: float = 120.0  # start-up + eval allowance until the overhead is measured: kill at 2 x budget + grace
    kill_margin: float = 10.0  # once learned: kill at budget + 2 x overhead + kill_margin (see killlimit.py)
    # where the judged number comes from: "auto" = the fixed evaluator (the base commit's prepare.py,
    # in its own sandbox) when the project's prepare.py can score a handed-over model, else the
    # script's own printed metric ("self-reported"); "off" = always the printed metric
    evaluator: str = "auto"
    tag: str = "main"  # research branch sigmaloop/<tag>


@dataclass
class JudgeConfig:
    # baseline seeds (>= 2); 6 give sigma 5 degrees of freedom before any candidate (judge.py)
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44, 45, 46, 47])
    k: float = 2.0  # keep at the one-sided level of k sigma (Student's t on sigma's dof)
    confirm_z: float = 1.0  # a first run this many sigma (of a paired difference) better earns a rerun
    max_runs: int = 3  # a would-be keep just short of the bar after its confirmation earns one more seed
    borderline: float = 1.0  # ... when its z is within this of the critical value
    confirm_margin: float = 1.0  # unused since confirm_z; still read so older configs load
    min_sigma_rel: float = 0.0005  # sigma floor, relative to the reference metric
    # a gain this large (in sigma, or in % of the reference metric) is kept only after a look
    implausible_sigma: float = 30.0
    implausible_pct: float = 5.0
    # over budget: trained (the runner's clock) past budget + the reference runs' overhead + this
    budget_tolerance: float = 0.10  # fraction of the budget ...
    budget_tolerance_s: float = 2.0  # ... but at least this many seconds
    # early pruning: stop a candidate whose training curve is clearly behind the reference seeds'
    # own curves (beyond their spread) at the same fraction of the budget; never a baseline or a
    # confirmation, never before prune_after of the budget
    prune: bool = True
    prune_after: float = 0.3


@dataclass
class RunnerConfig:
    slots: int = 1
    python: str = ""  # interpreter for trials; "" = the one running sigmaloop
    env_allow: list[str] = field(default_factory=list)  # secret-looking variables a trial needs
    gpus: list[str] = field(default_factory=list)  # one per slot; [] = detect / CPU
    sandbox: str = "auto"  # auto (bubblewrap where it runs) | on (refuse without it) | off
    network: bool = False  # may a sandboxed trial use the network?
    read_only: list[str] = field(default_factory=list)  # more paths a sandboxed trial may read (~ ok)
    log_cap_mb: float = 64.0  # a trial's log keeps its head and tail past this many MiB
    executor: str = "local"  # local (subprocesses here) | ray (a Ray cluster: pip install 'sigmaloop[ray]')


@dataclass
class RayConfig:
    address: str = ""  # "" = a local Ray started for the run; "auto" or "ray://host:10001" = join that cluster
    cpus_per_trial: int = 1  # on CPU-only clusters: CPUs each trial reserves (its threads)


@dataclass
class ProposerConfig:
    kind: str = "tune"  # tune | llm | mixed
    mix: list[str] = field(default_factory=lambda: ["llm", "tune"])  # order for kind = "mixed"
    exclude: list[str] = field(default_factory=list)  # constants the tuner leaves alone


@dataclass
class LLMConfig:
    model: str = "gpt-4o-mini"
    base_url: str = ""  # "" = OpenAI; any OpenAI-compatible server otherwise
    temperature: float = 0.7
    timeout: float = 120.0
    max_retries: int = 3
    context_tokens: int = 12000


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def lower_is_better(self) -> bool:
        return self.experiment.direction == "minimize"

    def trial_python(self) -> str:
        return self.runner.python or sys.executable

    def trial_command(self) -> list[str]:
        """The run command as argv, with a leading ``python`` bound to the trial interpreter."""
        argv = shlex.split(self.experiment.command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.trial_python()
        return argv


_SECTIONS = {
    "experiment": ExperimentConfig,
    "judge": JudgeConfig,
    "runner": RunnerConfig,
    "proposer": ProposerConfig,
    "llm": LLMConfig,
    "ray": RayConfig,
}


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Check a value against the type of its default; say which key is wrong."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, not {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, not {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, not {value!r}")
        return list(value)
    return value


def _validate(cfg: Config) -> None:
    e, j, r = cfg.experiment, cfg.judge, cfg.runner
    if e.direction not in ("minimize", "maximize"):
        raise ConfigError(f'experiment.direction must be "minimize" or "maximize", not {e.direction!r}')
    if not e.budget > 0:
        raise ConfigError(f"experiment.budget must be > 0 seconds, not {e.budget}")
    if e.evaluator not in ("auto", "off"):
        raise ConfigError(f'experiment.evaluator must be "auto" or "off", not {e.evaluator!r}')
    for name in ("implausible_sigma", "implausible_pct", "budget_tolerance", "budget_tolerance_s"):
        if not getattr(j, name) > 0:
            raise ConfigError(f"judge.{name} must be > 0, not {getattr(j, name)}")
    if e.grace < 0:
        raise ConfigError(f"experiment.grace must be >= 0 seconds, not {e.grace}")
    if e.kill_margin < 0:
        raise ConfigError(f"experiment.kill_margin must be >= 0 seconds, not {e.kill_margin}")
    if not e.command.strip():
        raise ConfigError("experiment.command is empty: set it to e.g. \"python train.py\"")
    if not e.metric.strip():
        raise ConfigError('experiment.metric is empty: set it to e.g. "val_bpb"')
    if not e.tag or any(c in e.tag for c in " ~^:?*[\\") or ".." in e.tag:
        raise ConfigError(f"experiment.tag {e.tag!r} is not usable in a git branch name")
    if len(j.seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in j.seeds):
        raise ConfigError(f"judge.seeds must list at least 2 integer seeds, not {j.seeds!r}")
    if len(set(j.seeds)) != len(j.seeds):
        raise ConfigError(f"judge.seeds must be distinct, not {j.seeds!r}")
    if not j.k > 0:
        raise ConfigError(f"judge.k must be > 0, not {j.k}")
    if j.max_runs < 2:
        raise ConfigError(f"judge.max_runs must be >= 2 (a run and its confirmation), not {j.max_runs}")
    if not j.borderline >= 0:
        raise ConfigError(f"judge.borderline must be >= 0, not {j.borderline}")
    if not j.confirm_z >= 0:
        raise ConfigError(f"judge.confirm_z must be >= 0, not {j.confirm_z}")
    if r.slots < 1:
        raise ConfigError(f"runner.slots must be >= 1, not {r.slots}")
    if r.sandbox not in ("auto", "on", "off"):
        raise ConfigError(f'runner.sandbox must be "auto", "on" or "off", not {r.sandbox!r}')
    if r.executor not in ("local", "ray"):
        raise ConfigError(f'runner.executor must be "local" or "ray", not {r.executor!r}')
    if cfg.ray.cpus_per_trial < 1:
        raise ConfigError(f"ray.cpus_per_trial must be >= 1, not {cfg.ray.cpus_per_trial}")
    if not 0 < j.prune_after < 1:
        raise ConfigError(f"judge.prune_after must be a fraction of the budget in (0, 1), not {j.prune_after}")
    if not r.log_cap_mb > 0:
        raise ConfigError(f"runner.log_cap_mb must be > 0, not {r.log_cap_mb}")
    if cfg.proposer.kind not in ("tune", "llm", "mixed"):
        raise ConfigError(f'proposer.kind must be "tune", "llm" or "mixed", not {cfg.proposer.kind!r}')
    for kind in cfg.proposer.mix:
        if kind not in ("tune", "llm"):
            raise ConfigError(f'proposer.mix entries must be "tune" or "llm", not {kind!r}')


def from_dict(data: dict[str, Any], where: str = CONFIG_NAME) -> Config:
    cfg = Config()
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        target = getattr(cfg, section)
        known = {f.name for f in fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown key {section}.{key} (known: {', '.join(sorted(known))})"
                )
            default = getattr(target, key)
            try:
                setattr(target, key, _coerce(f"{section}.{key}", default, value))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    try:
        _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def load(workspace: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read sigmaloop.toml from a workspace (a missing file means all defaults), with
    ``overrides`` (e.g. editor settings) layered over it and checked by the same rules.

    ``overrides`` is shaped like the TOML (``{"experiment": {"budget": 5}}``) or uses dotted
    keys (``{"experiment.budget": 5}``); a ``None`` or ``""`` value leaves the file's value alone.
    A bad override raises :class:`ConfigError` naming the key and saying it came from there."""
    path = Path(workspace) / CONFIG_NAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file or delete it for defaults") from None
    cfg = from_dict(data, str(path))  # the file's own errors name the file
    if not overrides:
        return cfg
    settings: dict[str, dict[str, Any]] = {}
    for key, value in _flat_overrides(overrides).items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"settings: {key!r} must name a section and a key, e.g. experiment.budget")
        if value is not None and value != "":
            settings.setdefault(section, {})[name] = value
    _check_types(settings, "settings")
    layered = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, values in settings.items():
        layered.setdefault(section, {}).update(values)
    return from_dict(layered, f"settings over {path}")


def _flat_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            for name, v in value.items():
                out[f"{key}.{name}"] = v
        else:
            out[str(key)] = value
    return out


def _check_types(data: dict[str, Any], where: str) -> None:
    """Sections, keys and value types only (the rules across keys need the whole config)."""
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        target = _SECTIONS[section]()
        known = {f.name for f in fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {section}.{key} (known: {', '.join(sorted(known))})")
            try:
                _coerce(f"{section}.{key}", getattr(target, key), value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None


_REST_TOML = """\
[judge]
seeds = [42, 43, 44, 45, 46, 47] # baseline seeds; sigma comes from their spread (fewer: see judge docs)
k = 2.0                          # keep only improvements beyond k sigma (t-corrected for few seeds)

[runner]
slots = 1                        # trials at a time (one GPU each where there are GPUs)
python = ""                      # interpreter for trials; "" = the one running sigmaloop
env_allow = []                   # variables beyond the default allow-list a trial needs
sandbox = "auto"                 # trials in bubblewrap: auto | on (refuse without) | off
network = false                  # network inside the sandbox
read_only = []                   # more paths trials may read, e.g. ["~/data"] (~ is found as ~ inside)

[proposer]
kind = "tune"                    # tune (built-in Optuna tuner) | llm | mixed

[llm]
model = "gpt-4o-mini"
base_url = ""                    # any OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1
temperature = 0.7
timeout = 120
"""


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(experiment: ExperimentConfig, notes: list[str] | tuple[str, ...] = (),
           read_only: list[str] | tuple[str, ...] = ()) -> str:
    """sigmaloop.toml text for these experiment settings (other sections at their defaults).

    ``notes`` become comment lines at the top (e.g. how the run command was chosen). The text
    is checked by loading it back, so what is written is what the engine will read.
    """
    e = experiment
    rows = [
        ("train_script", toml_string(e.train_script), "the one file the agent edits"),
        ("command", toml_string(e.command), 'run in the experiment\'s worktree; "python" = trial interpreter'),
        ("metric", toml_string(e.metric), 'read from the "name: value" summary lines the script prints'),
        ("direction", toml_string(e.direction), '"minimize" or "maximize"'),
        ("budget", _number(e.budget), "training seconds per trial (SIGMALOOP_TIME_BUDGET)"),
        ("grace", _number(e.grace), "start-up + eval allowance until measured: kill at 2 x budget + grace"),
        ("kill_margin", _number(e.kill_margin), "then: kill at budget + 2 x learned overhead + kill_margin"),
        ("tag", toml_string(e.tag), "research branch: sigmaloop/<tag>"),
    ]
    lines = [
        "# sigmaloop settings (committed). The LLM API key never goes here: set OPENAI_API_KEY",
        '# or use "Sigmaloop: Set API Key" in VS Code.',
        *(f"# {note}" for note in notes),
        "",
        "[experiment]",
    ]
    for key, value, comment in rows:
        line = f"{key} = {value}"
        if len(line) < 33:
            lines.append(f"{line:<33}# {comment}")
        else:  # a long value (a launcher command): the comment goes above it
            lines += [f"# {key}: {comment}", line]
    rest = _REST_TOML
    if read_only:  # paths the project's trials read outside the repository (e.g. its data cache)
        listed = "[" + ", ".join(toml_string(p) for p in read_only) + "]"
        rest = rest.replace("read_only = []                   #", f"read_only = {listed}  #", 1)
    text = "\n".join(lines) + "\n\n" + rest
    loaded = from_dict(tomllib.loads(text), CONFIG_NAME).experiment
    if loaded != e:  # pragma: no cover - a rendering bug, not a user error
        raise ConfigError(f"internal error: {CONFIG_NAME} did not round-trip ({loaded} != {e})")
    return text


def write(workspace: Path, experiment: ExperimentConfig, notes: list[str] | tuple[str, ...] = (),
          read_only: list[str] | tuple[str, ...] = ()) -> Path:
    """Write sigmaloop.toml for these experiment settings; invalid ones raise ConfigError."""
    path = Path(workspace) / CONFIG_NAME
    path.write_text(render(experiment, notes, read_only), encoding="utf-8")
    return path


def state_dir(workspace: Path) -> Path:
    return Path(workspace) / STATE_DIR

