"""The LLM proposer: an edit of the train script from any OpenAI-compatible Chat Completions API.

Works with OpenAI and with OpenAI-compatible servers (Ollama, vLLM, LM Studio, llama.cpp):
``llm.base_url``, ``llm.model``, ``llm.temperature``, ``llm.timeout``, ``llm.max_retries`` and
``llm.context_tokens`` come from sigmaloop.toml; the key from ``OPENAI_API_KEY`` or an
explicit ``api_key`` (the language server passes the editor's secret). The key is never
written to the config, the journal, a log or an exception message.

One proposal:

1. **Context** (:func:`build_messages`): program.md, the script with line numbers (never
   truncated), best result and sigma, the researcher's reasons for rejected proposals, recent
   experiments as a table, tails of recent crash logs and the ideas already tried, fitted to
   ``llm.context_tokens`` by dropping the lowest-priority parts first.
2. **Answer**: one JSON object ``{hypothesis, predicted_delta, rationale, edits: [{search,
   replace}]}`` requested with ``response_format`` json_schema; a server that rejects that (a
   400 naming response_format) is asked for json_object, then for a fenced ```json block.
3. **Validation** before anything runs (:func:`check_answer`): every search text occurs once,
   the result parses, changes code (not only the seed), and passes the guard every proposal
   passes (:func:`sigmaloop.guard.check_edit`: the fixed evaluation left alone, no forged
   summary, no run-time route around either). A failed answer is shown back to the model with
   the problem (the guard's message names the rule and the line), at most
   ``llm.max_retries`` times, then :class:`LLMProposalError` (the engine records a
   rejected "no valid proposal" experiment and the loop goes on).
4. **Transport**: the client's own retries are off; 429 and 5xx are retried here with
   backoff honouring ``Retry-After`` (at most ``llm.max_retries`` times per request); a timeout
   or a refused connection fails at once with a message naming the base URL.

Token usage (prompt/completion/total, every attempt) goes to ``Proposal.params["usage"]``,
which the engine stores as ``Experiment.usage``.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigmaloop import guard, lifecycle, secret
from sigmaloop.edits import EditError, apply_search_replace, validate_source
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Experiment, Proposal, Status
from sigmaloop.proposers.base import ProposalContext, ProposalError

log = logging.getLogger(__name__)

__all__ = [
    "LLMProposalError",
    "LLMProposer",
    "Usage",
    "build_messages",
    "check_answer",
    "estimate_tokens",
    "parse_answer",
    "set_api_key",
]

KEY_ENV = "OPENAI_API_KEY"
MAX_BACKOFF_S = 60.0
CRASH_TAIL_LINES = 20
MAX_TABLE_ROWS = 40
MAX_CRASH_TAILS = 3
MAX_REJECTION_REASONS = 10
FEEDBACK_ECHO_CHARS = 4000  # how much of a failed answer is shown back to the model


def set_api_key(key: str | None) -> None:
    """Use ``key`` for every LLM proposer built afterwards (e.g. from the editor's secret store).

    It is kept in memory only (:mod:`sigmaloop.secret`); ``None`` goes back to ``OPENAI_API_KEY``.
    """
    secret.set_key(key)


def _adopt_environment_key() -> None:
    """Library use, where no CLI or language server took the key from the environment: hold
    ``OPENAI_API_KEY`` like they would (without removing it from the caller's environment)."""
    env_key = (os.environ.get(KEY_ENV) or "").strip()
    if env_key and secret.key() is None:
        secret.set_key(env_key)


class LLMProposalError(ProposalError):
    """No valid proposal from the model; ``usage`` holds the tokens spent trying."""

    def __init__(self, message: str, usage: dict[str, int] | None = None):
        super().__init__(message)
        self.usage = dict(usage or {})


class AnswerError(ValueError):
    """The model's answer is not a usable proposal; the message is shown to the model."""


# ------------------------------------------------------------------------------------------
# tokens


def _load_tiktoken() -> Callable[[str], int] | None:
    if os.environ.get("SIGMALOOP_NO_TIKTOKEN"):
        return None
    try:  # only in the trainer extra; its encodings may need a download: fall back quietly
        import tiktoken

        enc = tiktoken.get_encoding("o200k_base")
    except Exception:
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


_TIKTOKEN: Callable[[str], int] | bool | None = False  # False: not tried yet


def estimate_tokens(text: str) -> int:
    """Tokens of ``text``: tiktoken when it is importable and loads, else ≈ chars / 4."""
    global _TIKTOKEN
    if _TIKTOKEN is False:
        _TIKTOKEN = _load_tiktoken()
    if _TIKTOKEN:
        return _TIKTOKEN(text)  # type: ignore[operator]
    return (len(text) + 3) // 4


MESSAGE_OVERHEAD = 4  # role and separators per chat message


def messages_tokens(messages: Sequence[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages) + 2


# ------------------------------------------------------------------------------------------
# the prompt

SYSTEM_PROMPT = """\
You are a research engineer improving a training script in an automated experiment loop.
Each proposal edits only {script} and runs as one fixed-time-budget trial; a noise-aware
judge keeps it only if {metric} gets {better} by more than run-to-run noise.

Rules:
- Edit only {script}. The data, tokenizer and evaluation ({metric}) are fixed: never touch
  prepare.py, its imports, the evaluation call or the line that prints {metric}.
- One idea per proposal, with a falsifiable hypothesis. Do not repeat ideas already tried.
- Keep the script runnable: it must parse and finish within its time budget.
- Changing only the random seed, comments or formatting is not an experiment.

Reply with ONE JSON object and nothing else (if you cannot, put it in a single ```json block):
{{
  "hypothesis": "one sentence: the change and its expected effect",
  "predicted_delta": <number: expected change of {metric}, new minus current; {sign_rule}>,
  "rationale": "why you expect it, briefly",
  "question": <the id (a number) of the open research question this tests, or null>,
  "edits": [{{"search": "exact text copied from {script}", "replace": "its replacement"}}]
}}
Each "search" must be copied exactly from the script (whitespace included, WITHOUT the
line-number prefix shown below) and occur exactly once; include enough lines to be unique.
"""


@dataclass
class _Part:
    """A block of the user message; optional parts are dropped or shortened to fit."""

    title: str
    lines: list[str]
    priority: int  # higher = kept longer
    drop_from_end: bool = True  # lines are newest-first: drop from the end (oldest)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _numbered(source: str) -> str:
    lines = source.splitlines()
    width = max(3, len(str(len(lines))))
    return "\n".join(f"{i:>{width}}| {line}" for i, line in enumerate(lines, 1))


def _one_line(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(path: str | None, n: int = CRASH_TAIL_LINES, max_bytes: int = 16384) -> list[str]:
    if not path or not os.path.exists(path):
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln.rstrip()[:300] for ln in data.splitlines()[-n:]]


IN_FLIGHT = frozenset({Status.PROPOSED, Status.ACCEPTED, Status.QUEUED, Status.RUNNING})


def _is_user_rejection(e: Experiment) -> bool:
    return e.status == Status.REJECTED and e.reason == Reason.USER_REJECTED


def _context_parts(ctx: ProposalContext, k: float | None) -> list[_Part]:
    exps = [e for e in ctx.experiments if e.confirms is None]
    proposals = [e for e in exps if not e.is_baseline]
    newest = list(reversed(proposals))

    # the researcher's reasons for rejecting proposals (highest optional priority)
    reasons = [
        f'- #{e.id} "{_one_line(e.hypothesis, 100)}": {_one_line(e.rejection_reason or "", 200)}'
        for e in reversed(exps)
        if _is_user_rejection(e) and e.rejection_reason
    ][:MAX_REJECTION_REASONS]

    # ideas running now in other slots (parallel trials): propose something else
    in_flight = [f'- #{e.id} "{_one_line(e.hypothesis, 120)}" ({e.status.value})'
                 for e in proposals if e.status in IN_FLIGHT][:MAX_TABLE_ROWS]

    # recent experiments, newest first
    rows = []
    for e in newest[:MAX_TABLE_ROWS]:
        status, why = e.status.value, lifecycle.short(e)
        verdict = status if why in ("", status) else f"{status}: {_one_line(why, 50)}"
        rows.append(
            f"| {e.id} | {_one_line(e.source, 16)} | {_one_line(e.hypothesis, 90)} | "
            f"{_fmt(e.predicted_delta, '+.4f')} | {_fmt(e.delta, '+.4f')} | {_fmt(e.z, '+.1f')} | "
            f"{verdict} |"
        )
    in_table = {e.id for e in newest[:MAX_TABLE_ROWS]}

    # tails of recent crash logs
    crashes = []
    for e in newest:
        if len(crashes) >= MAX_CRASH_TAILS:
            break
        if e.status not in (Status.CRASHED, Status.TIMEOUT):
            continue
        tail = _tail(e.log_path)
        where = f" at {e.crash.file}:{e.crash.line}: {e.crash.message}" if e.crash else ""
        if tail or where:
            crashes.append(
                f'#{e.id} ({e.status.value}{where}) "{_one_line(e.hypothesis, 80)}"\n```\n'
                + "\n".join(tail)
                + "\n```"
            )

    # ideas already tried, beyond the table (oldest dropped first)
    seen: set[str] = set()
    tried = []
    for e in newest:
        h = _one_line(e.hypothesis, 120)
        if e.id in in_table or not h or h.lower() in seen:
            continue
        seen.add(h.lower())
        tried.append(f"- #{e.id} {h} → {e.status.value}")

    # the researcher's open questions: what the next proposals should help answer
    tested: dict[int, list[str]] = {}
    for e in proposals:
        if e.question is not None:
            tested.setdefault(e.question, []).append(f"#{e.id} {e.status.value}")
    questions = []
    for q in ctx.questions:
        decision = f" (what would change the researcher's decision: {_one_line(q.decision, 200)})" if q.decision else ""
        so_far = tested.get(q.id, [])
        tried = f"; tested so far by {', '.join(so_far[-6:])}" if so_far else "; not tested yet"
        questions.append(f"- Q{q.id}: {_one_line(q.text, 300)}{decision}{tried}")

    header = "| id | source | hypothesis | predicted Δ | measured Δ | z | verdict |\n|---|---|---|---|---|---|---|"
    parts = [
        _Part('Open research questions (propose an edit that tests one; give its id as "question")',
              questions, 45),
        _Part("Reasons the researcher gave for rejecting proposals (respect them)", reasons, 40),
        _Part("In flight now in other slots (results pending; propose a different idea)", in_flight, 35),
        _Part(
            "Recent experiments, newest first (Δ = new − reference; z > 0 is better, in noise units)",
            [header, *rows],
            30,
        ),
        _Part("Ideas already tried (do not repeat), newest first", tried, 20),
        _Part("Tails of recent crash logs", crashes, 10),
    ]
    return [p for p in parts if p.lines and p.lines != [header]]


def _status_text(ctx: ProposalContext, k: float | None) -> str:
    better = "lower" if ctx.lower_is_better else "higher"
    lines = [f"Metric: {ctx.metric or 'the metric'} ({better} is better)."]
    if ctx.best is not None and ctx.best.metric is not None:
        lines.append(
            f"Best so far: {ctx.best.metric:.6f} (experiment #{ctx.best.id}, {ctx.best.source})."
        )
    else:
        lines.append("Best so far: none measured yet.")
    if ctx.sigma:
        need = (
            f" (a change is kept when it beats about {k:g} × √2 × sigma = {k * math.sqrt(2) * ctx.sigma:.6f})"
            if k
            else ""
        )
        lines.append(f"Run-to-run noise sigma: {ctx.sigma:.6f}{need}.")
    else:
        lines.append("Run-to-run noise sigma: not measured yet.")
    return "\n".join(lines)


def _render(parts: list[_Part]) -> str:
    return "".join(f"\n\n## {p.title}\n" + "\n".join(p.lines) for p in parts if p.lines)


@dataclass
class BuiltContext:
    messages: list[dict[str, str]]
    tokens: int
    budget: int
    dropped: dict[str, int] = field(default_factory=dict)  # part title -> lines left out


def build_messages(
    ctx: ProposalContext, budget: int, k: float | None = None, reserve: int = 0
) -> BuiltContext:
    """The chat messages for one proposal, within ``budget - reserve`` tokens.

    Mandatory: the instructions, the script (whole) and the status; program.md next (cut
    with a note only if it alone can't fit); then, in priority order, rejection reasons,
    recent experiments, ideas tried, crash tails, each shortened oldest-first.
    Raises ProposalError when the script alone does not fit.
    """
    better = "lower" if ctx.lower_is_better else "higher"
    sign_rule = (
        "negative means better, since lower is better"
        if ctx.lower_is_better
        else "positive means better, since higher is better"
    )
    system = SYSTEM_PROMPT.format(
        script=ctx.script_name,
        metric=ctx.metric or "the metric",
        better=better,
        sign_rule=sign_rule,
    )
    script = f"## Current {ctx.script_name} (line numbers are not part of the file)\n```python\n{_numbered(ctx.source)}\n```"
    status = _status_text(ctx, k)
    ask = "\n\nPropose the next experiment as the JSON object described."
    limit = budget - reserve

    def total(program_text: str, optional: str) -> int:
        user = program_text + script + "\n\n" + status + optional + ask
        return messages_tokens([{"content": system}, {"content": user}])

    base = total("", "")
    if base > limit:
        raise ProposalError(
            f"{ctx.script_name} alone needs about {base} tokens of context but llm.context_tokens "
            f"is {budget} (with {reserve} kept for a retry); raise llm.context_tokens "
            "(the script is never cut)"
        )
    program = ""
    if ctx.program.strip():
        program = f"## Instructions from the researcher (program.md)\n{ctx.program.strip()}\n\n"
        if total(program, "") > limit:
            room = (limit - base) * 4 - 200
            program = (
                "## Instructions from the researcher (program.md, cut to fit)\n"
                + ctx.program.strip()[: max(0, room)]
                + "\n[... program.md cut to fit llm.context_tokens ...]\n\n"
            )
            while program and total(program, "") > limit:
                program = program[: int(len(program) * 0.9)]

    parts = _context_parts(ctx, k)
    kept = [_Part(p.title, [], p.priority) for p in parts]
    dropped: dict[str, int] = {}
    # fill by priority: each part takes as many lines (newest first) as still fit
    for src, dst in sorted(zip(parts, kept), key=lambda pair: -pair[0].priority):
        used = total(program, _render(kept))
        for i, line in enumerate(src.lines):
            dst.lines.append(line)
            cost = (
                estimate_tokens(line)
                + 1
                + (estimate_tokens(dst.title) + 4 if len(dst.lines) == 1 else 0)
            )
            if used + cost > limit:
                dst.lines.pop()
                dropped[src.title] = len(src.lines) - i
                break
            used += cost
        if dst.lines and dst.lines[0].startswith("| id |") and len(dst.lines) == 1:
            dst.lines.clear()  # a table header without rows
    # the estimate per line is additive; re-check the rendered whole and trim if needed
    optional = _render(kept)
    while total(program, optional) > limit:
        victim = min((p for p in kept if p.lines), key=lambda p: p.priority, default=None)
        if victim is None:
            break
        victim.lines.pop()
        dropped[victim.title] = dropped.get(victim.title, 0) + 1
        optional = _render(kept)
    user = program + script + "\n\n" + status + optional + ask
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return BuiltContext(messages, messages_tokens(messages), budget, dropped)


# ------------------------------------------------------------------------------------------
# the answer

PROPOSAL_SCHEMA: dict[str, Any] = {
    "name": "proposal",
    "strict": True,
    "schema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["hypothesis", "predicted_delta", "rationale", "question", "edits"],
        "properties": {
            "hypothesis": {"type": "string"},
            "predicted_delta": {"type": "number"},
            "rationale": {"type": "string"},
            "question": {"type": ["integer", "null"]},
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["search", "replace"],
                    "properties": {"search": {"type": "string"}, "replace": {"type": "string"}},
                },
            },
        },
    },
}

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE_RE = re.compile(r"```[ \t]*(json)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_answer(content: str | None) -> dict[str, Any]:
    """The JSON object of an answer: the whole reply, or its one ```json block."""
    if content is None or not content.strip():
        raise AnswerError("the reply was empty; reply with the JSON object")
    text = _THINK_RE.sub("", content).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        blocks = _FENCE_RE.findall(text)
        labelled = [b for label, b in blocks if label]
        candidates = labelled or [b for _, b in blocks]
        if len(candidates) != 1:
            where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise AnswerError(
                f"the reply is not valid JSON ({where}) and does not hold exactly one ```json "
                "block; reply with ONE JSON object only"
            ) from None
        try:
            data = json.loads(candidates[0])
        except json.JSONDecodeError as exc2:
            raise AnswerError(
                f"the ```json block is not valid JSON (line {exc2.lineno}, column "
                f"{exc2.colno}: {exc2.msg}); check quotes and escapes (newlines in strings are \\n)"
            ) from None
    if not isinstance(data, dict):
        raise AnswerError(f"the reply is JSON but a {type(data).__name__}, not an object")
    return data


_NUMBER_PREFIX_RE = re.compile(r"^ *\d+\| ?")


def _strip_line_numbers(text: str) -> str | None:
    """``text`` without the ``  12| `` prefixes the prompt shows, if every line has one."""
    lines = text.splitlines(keepends=True)
    if not lines or not all(_NUMBER_PREFIX_RE.match(ln) or not ln.strip() for ln in lines):
        return None
    return "".join(_NUMBER_PREFIX_RE.sub("", ln, count=1) for ln in lines)


def _edit_blocks(data: dict[str, Any], script_name: str) -> list[tuple[str, str]]:
    edits = data.get("edits")
    if not isinstance(edits, list) or not edits:
        raise AnswerError('"edits" must be a non-empty list of {"search": ..., "replace": ...}')
    blocks = []
    for i, item in enumerate(edits, 1):
        if not isinstance(item, dict):
            raise AnswerError(f"edit {i} is not an object with search and replace")
        target = item.get("file") or item.get("path") or item.get("filename")
        if target and os.path.basename(str(target)) != os.path.basename(script_name):
            raise AnswerError(
                f"edit {i} targets {target}; only {script_name} may be edited (prepare.py and "
                "every other file are fixed)"
            )
        search, replace = item.get("search"), item.get("replace")
        if not isinstance(search, str) or not isinstance(replace, str):
            raise AnswerError(f'edit {i} needs string fields "search" and "replace"')
        blocks.append((search, replace))
    return blocks


def _apply(source: str, blocks: list[tuple[str, str]]) -> str:
    try:
        return apply_search_replace(source, blocks)
    except EditError as first:
        # a model that copied the line-number prefixes: strip them and try once more
        fixed = []
        changed = False
        for search, replace in blocks:
            s = _strip_line_numbers(search) if search not in source else None
            if s is not None:
                r = _strip_line_numbers(replace)
                fixed.append((s, r if r is not None else replace))
                changed = True
            else:
                fixed.append((search, replace))
        if changed:
            try:
                return apply_search_replace(source, fixed)
            except EditError:
                pass
        raise AnswerError(str(first)) from None


def check_answer(
    data: dict[str, Any], source: str, script_name: str = "train.py", metric: str = "val_bpb"
) -> tuple[str, str, float, str]:
    """(new_source, hypothesis, predicted_delta, rationale) of a valid answer, else AnswerError."""
    hypothesis = data.get("hypothesis")
    if not isinstance(hypothesis, str) or not hypothesis.strip():
        raise AnswerError('"hypothesis" must be a non-empty string')
    predicted = data.get("predicted_delta")
    if isinstance(predicted, str):
        try:
            predicted = float(predicted.strip())
        except ValueError:
            predicted = None
    if (
        isinstance(predicted, bool)
        or not isinstance(predicted, (int, float))
        or not math.isfinite(predicted)
    ):
        raise AnswerError(
            '"predicted_delta" must be a finite number (the expected change of the metric)'
        )
    rationale = data.get("rationale", "")
    if not isinstance(rationale, str):
        rationale = json.dumps(rationale)
    blocks = _edit_blocks(data, script_name)
    new = _apply(source, blocks)
    try:
        validate_source(new, source)
        guard.check_edit(source, new, metric)
    except EditError as exc:
        raise AnswerError(str(exc)) from None
    return new, hypothesis.strip(), float(predicted), rationale.strip()


# ------------------------------------------------------------------------------------------
# usage


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0

    def add(self, usage: Any) -> None:
        self.requests += 1
        if usage is None:
            return
        p = getattr(usage, "prompt_tokens", None) or 0
        c = getattr(usage, "completion_tokens", None) or 0
        t = getattr(usage, "total_tokens", None) or (p + c)
        self.prompt_tokens += int(p)
        self.completion_tokens += int(c)
        self.total_tokens += int(t)

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
        }


# ------------------------------------------------------------------------------------------
# the proposer

FORMATS = ("json_schema", "json_object", "text")


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LLMProposer:
    """Proposes search/replace edits of the train script from a Chat Completions model."""

    def __init__(
        self,
        *,
        model: str = "gpt-4o-mini",
        base_url: str = "",
        api_key: str | None = None,
        temperature: float = 0.7,
        timeout: float = 120.0,
        max_retries: int = 3,
        context_tokens: int = 12000,
        k: float | None = None,
        max_backoff: float = MAX_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.model = model
        self.base_url = base_url.strip()
        self._key = api_key  # never logged, stored or put in a message
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.context_tokens = context_tokens
        self.k = k
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._format = FORMATS[0]
        self._client: Any = None
        self._client_key = ""  # sha256 of the key the client was built with
        self.last_context: BuiltContext | None = None  # for the bench and the editor
        self.last_timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    def __repr__(self) -> str:  # no key here
        return f"LLMProposer(model={self.model!r}, base_url={self.base_url!r})"

    @classmethod
    def from_config(
        cls, config: Any, state_dir: Path | str | None = None, api_key: str | None = None
    ) -> LLMProposer:
        llm = getattr(config, "llm", config)
        judge = getattr(config, "judge", None)
        return cls(
            model=llm.model,
            base_url=llm.base_url,
            api_key=api_key,
            temperature=llm.temperature,
            timeout=llm.timeout,
            max_retries=llm.max_retries,
            context_tokens=llm.context_tokens,
            k=getattr(judge, "k", None),
        )

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def display_url(self) -> str:
        if self.base_url:
            return self.base_url
        return os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def _redact(self, text: str) -> str:
        secret.remember(self._key)
        secret.remember(os.environ.get(KEY_ENV))
        return secret.redact(text)

    def _error(self, message: str, usage: Usage) -> LLMProposalError:
        return LLMProposalError(self._redact(message), usage.as_dict())

    def _get_client(self) -> Any:
        _adopt_environment_key()
        try:  # the key goes only where the user sent it (secret.key_for says the rules)
            key = secret.key_for(self.base_url or None, explicit=self._key)
        except secret.EndpointRefused as exc:
            raise ProposalError(str(exc)) from None
        fingerprint = hashlib.sha256(f"{key}\0{self.base_url}".encode()).hexdigest()
        if self._client is not None and fingerprint == self._client_key:
            return self._client  # rebuilt when the key changes (e.g. set in the editor)
        import openai

        kwargs: dict[str, Any] = dict(api_key=key, timeout=self.timeout, max_retries=0)
        if self.base_url:
            kwargs["base_url"] = self.base_url
        self._client = openai.OpenAI(**kwargs)
        self._client_key = fingerprint
        return self._client

    def observe(self, experiment: Experiment) -> None:
        """Nothing to learn online: every proposal reads the whole journal."""

    # -- one request ---------------------------------------------------------------------------
    def _request(self, messages: list[dict[str, str]], usage: Usage) -> str | None:
        """One completion, with our own bounded retries and response_format fallback."""
        import openai

        client = self._get_client()
        transient = 0
        while True:
            kwargs: dict[str, Any] = dict(
                model=self.model, messages=messages, temperature=self.temperature
            )
            if self._format == "json_schema":
                kwargs["response_format"] = {"type": "json_schema", "json_schema": PROPOSAL_SCHEMA}
            elif self._format == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            try:
                resp = client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                raise self._error(
                    f"the model {self.model} at {self.display_url} did not answer within "
                    f"{self.timeout:g} s (llm.timeout); raise llm.timeout or use a faster model",
                    usage,
                ) from None
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc.__context__
                why = f" ({type(cause).__name__}: {cause})" if cause else ""
                raise self._error(
                    f"cannot connect to the LLM server at {self.display_url}{why}; is it running? "
                    "check llm.base_url",
                    usage,
                ) from None
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = str(getattr(exc, "message", "") or exc)
                if (
                    status == 400
                    and "response_format" in message.lower()
                    and self._format != "text"
                ):
                    nxt = FORMATS[FORMATS.index(self._format) + 1]
                    log.info(
                        "%s rejects response_format %s; trying %s",
                        self.display_url,
                        self._format,
                        nxt,
                    )
                    self._format = nxt
                    continue
                if status == 429 or status >= 500:
                    if transient >= self.max_retries:
                        raise self._error(
                            f"the LLM server at {self.display_url} answered {status} "
                            f"{'(rate limited)' if status == 429 else '(server error)'} "
                            f"{transient + 1} times: {_one_line(message, 200)}",
                            usage,
                        ) from None
                    wait = _retry_after(exc)
                    if wait is None:
                        wait = 0.5 * 2**transient
                    wait = min(wait, self.max_backoff)
                    transient += 1
                    log.info(
                        "LLM server %s answered %s; retry %d in %.1f s",
                        self.display_url,
                        status,
                        transient,
                        wait,
                    )
                    self._sleep(wait)
                    continue
                if status == 401:
                    hint = f"set {KEY_ENV} (or the key in the editor)"
                elif status == 404:
                    hint = f"is llm.model {self.model!r} served there, and llm.base_url right?"
                else:
                    hint = "check llm.model and llm.base_url"
                raise self._error(
                    f"the LLM server at {self.display_url} answered {status}: "
                    f"{_one_line(message, 300)}; {hint}",
                    usage,
                ) from None
            usage.add(getattr(resp, "usage", None))
            choices = getattr(resp, "choices", None) or []
            if not choices:
                raise AnswerError("the reply had no choices")
            choice = choices[0]
            content = getattr(choice.message, "content", None)
            if getattr(choice, "finish_reason", None) == "length":
                raise AnswerError(
                    "the reply was cut off (token limit); make the edits smaller: search only the "
                    "lines you change plus enough context to be unique"
                )
            refusal = getattr(choice.message, "refusal", None)
            if not content and refusal:
                raise AnswerError(f"the model refused: {_one_line(refusal, 200)}")
            return content

    # -- the proposal --------------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> Proposal:
        t0 = time.perf_counter()
        self._get_client()  # no key and no base_url: say so before building anything
        reserve = min(1500, self.context_tokens // 8) if self.max_retries else 0
        built = build_messages(ctx, self.context_tokens, self.k, reserve=reserve)
        self.last_context = built
        timings = {"context": time.perf_counter() - t0, "model": 0.0, "validate": 0.0}
        usage = Usage()
        messages = list(built.messages)
        problems: list[str] = []
        for attempt in range(1, self.max_retries + 2):
            t1 = time.perf_counter()
            content: str | None = None
            try:
                content = self._request(messages, usage)
                timings["model"] += time.perf_counter() - t1
                t2 = time.perf_counter()
                try:
                    data = parse_answer(content)
                    new, hypothesis, predicted, rationale = check_answer(
                        data, ctx.source, ctx.script_name, ctx.metric
                    )
                finally:
                    timings["validate"] += time.perf_counter() - t2
            except AnswerError as exc:
                problem = self._redact(str(exc))
                problems.append(problem)
                log.info("LLM answer %d rejected: %s", attempt, problem)
                messages = [*built.messages, *self._feedback(content, problem, reserve)]
                continue
            self.last_timings = timings
            asked = data.get("question")
            open_ids = {q.id for q in ctx.questions}
            return Proposal(
                question=asked if isinstance(asked, int) and not isinstance(asked, bool)
                and asked in open_ids else None,
                new_source=new,
                hypothesis=self._redact(hypothesis),
                source=self.name,
                predicted_delta=predicted,
                rationale=self._redact(rationale),
                params={
                    "attempts": attempt,
                    "response_format": self._format,
                    "context_tokens": built.tokens,
                    "usage": usage.as_dict(),
                    **({"rejected_answers": problems} if problems else {}),
                },
            )
        self.last_timings = timings
        raise self._error(
            f"{self.name} gave no valid edit in {self.max_retries + 1} attempts; last problem: "
            f"{problems[-1]}",
            usage,
        )

    def _feedback(self, content: str | None, problem: str, reserve: int) -> list[dict[str, str]]:
        """The failed answer (shortened) and what was wrong with it, within ``reserve`` tokens."""
        note = (
            f"Your previous answer could not be used: {problem}\n"
            "Reply again with ONE corrected JSON object (same fields). Copy search texts exactly "
            "from the script, without the line-number prefix."
        )
        room = max(0, reserve - messages_tokens([{"content": note}]) - MESSAGE_OVERHEAD - 20) * 4
        echo = (content or "")[: min(room, FEEDBACK_ECHO_CHARS)]
        if content and len(echo) < len(content):
            echo += "\n[... cut ...]"
        out = []
        if echo:
            out.append({"role": "assistant", "content": echo})
        out.append({"role": "user", "content": note})
        return out
