"""Rewards and reward mixes.

A reward is any callable with the TRL batch signature `reward(prompts, completions, **columns)`, called
with keyword arguments as TRL calls it, returning one `float | None` per completion; `None` means "not
applicable to this sample". It may be async. A reward registered as a class is built with its options as
keyword arguments.

Completions follow TRL's convention (`rlvf.api.text.reward_completions`): a list of messages
(`[{"role": "assistant", "content": text}]`) when the prompt is conversational, a string when it is a string.
A reward may declare the dataset columns it reads with a `columns` attribute (`columns = ("answer",)` on the
function or class); `check_reward_columns` then refuses, before training or evaluation starts, rows that lack one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rlvf.api.text import completion_text, reward_completions
from rlvf.config import Aggregation, RewardConfig, RewardEntry, StepReduction
from rlvf.errors import ConfigError, RewardError

OnError = Literal["raise", "zero"]
AGGREGATIONS = get_args(Aggregation)


@dataclass
class RewardSpec:
    """A registered reward: how to build it and how to describe it."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    takes_options: bool  # classes take options; plain functions are used as they are

    @classmethod
    def from_callable(cls, reward, *, name=None, description=None, plugin="") -> RewardSpec:
        if not callable(reward):
            raise RewardError(f"reward {name or reward!r} from {plugin or 'unknown plugin'} is not callable")
        name = name or getattr(reward, "__name__", None)
        if not name:
            raise RewardError(f"reward {reward!r} from {plugin or 'unknown plugin'} needs a name")
        doc = (inspect.getdoc(reward) or "").strip()
        return cls(
            name=name,
            factory=reward,
            description=description or (doc.splitlines()[0] if doc else ""),
            plugin=plugin,
            takes_options=inspect.isclass(reward),
        )

    def options(self) -> dict[str, Any]:
        """The constructor options with their defaults (for listings and config validation)."""
        if not self.takes_options:
            return {}
        params = inspect.signature(self.factory).parameters.values()
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def build(self, **options) -> Callable[..., Any]:
        if not self.takes_options:
            if options:
                raise RewardError(f"reward '{self.name}' takes no options, got {sorted(options)}")
            return self.factory
        known = self.options()
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(self.factory).parameters.values())
        unknown = sorted(set(options) - set(known))
        if unknown and not accepts_any:
            raise RewardError(
                f"reward '{self.name}' has no option {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(sorted(known)) or 'none'}"
            )
        try:
            return self.factory(**options)
        except Exception as exc:
            raise RewardError(f"reward '{self.name}' (from {self.plugin}) could not be built: "
                              f"{type(exc).__name__}: {exc}") from exc


def _is_number(value: Any) -> bool:
    """A real number: Python, numpy or a one-element torch scalar; not a string, a bool or None."""
    return hasattr(value, "__float__") and not isinstance(value, (str, bytes, bool))


def step_spans(text: str, separator: str = "\n") -> list[tuple[int, int]]:
    """(start, end) of each step of `text`, the pieces between separators that hold more than whitespace: the step
    is `text[start:end]`, its closing separator not in it; it starts where the step before it ended with its
    separator (blank lines before it are its own). `end` is what StepScores.ends holds. [] for whitespace only."""
    spans, start, offset = [], 0, 0
    for piece in text.split(separator):
        if piece.strip():
            spans.append((start, offset + len(piece)))
            start = offset + len(piece) + len(separator)
        offset += len(piece) + len(separator)
    return spans


@dataclass
class StepScores:
    """Step-level scores of one completion (a process reward): `scores[k]` for step k, which ends at character
    `ends[k]` (exclusive) of the completion's text (`completion_text`); `ends` strictly increasing, the last at
    most the text's length. A reward may return one per completion in place of a float (or None). The mix sees
    its reduction (`[reward.mix.NAME] step_reduction`, MixResult.per_reward) and keeps the steps
    (MixResult.steps); estimators on token rewards (reinforce_pp, gae) get each step's weight x score on the token
    holding its last character (algorithm.step_rewards). Scores that do not fit the text (or are not finite) fail
    that sample under the reward's on_error policy."""

    scores: list[float]
    ends: list[int]

    @classmethod
    def split(cls, text: str, scores: Sequence[float], separator: str = "\n") -> StepScores:
        """The steps of `text` as the non-empty pieces between `separator`s (step_spans), scored `scores` in order."""
        return cls(scores=[float(s) for s in scores], ends=[end for _, end in step_spans(text, separator)])

    def problem(self, text_length: int | None) -> str | None:
        """What is wrong with these scores, or None."""
        if not all(hasattr(part, "__len__") and not isinstance(part, str) for part in (self.scores, self.ends)):
            return f"scores and ends must be lists, got {type(self.scores).__name__} and {type(self.ends).__name__}"
        if len(self.scores) != len(self.ends):
            return f"{len(self.scores)} step scores but {len(self.ends)} step ends"
        if len(self.scores) == 0:
            return "no steps (return None for 'not applicable')"
        if any(not _is_number(s) or not math.isfinite(float(s)) for s in self.scores):
            return f"a step score is not a finite number: {list(self.scores)}"
        if any(not _is_number(e) or float(e) != int(e) for e in self.ends):
            return f"step ends must be whole character offsets: {list(self.ends)}"
        ends = [int(e) for e in self.ends]
        if any(b <= a for a, b in itertools.pairwise(ends)) or ends[0] <= 0:
            return f"step ends must be positive and increasing: {ends}"
        if text_length is not None and ends[-1] > text_length:
            return f"step end {ends[-1]} is past the completion's {text_length} characters"
        return None

    def plain(self) -> StepScores:
        """These scores as Python floats and ends as ints (a reward may give numpy or torch scalars)."""
        return StepScores(scores=[float(s) for s in self.scores], ends=[int(e) for e in self.ends])

    def reduced(self, how: StepReduction) -> float:
        """The one number of these scores for the mix and group estimators: the lowest step ("min": a solution is
        as good as its worst step), the last step ("last"), or the mean ("mean")."""
        if how == "min":
            return float(min(self.scores))
        if how == "last":
            return float(self.scores[-1])
        if how == "mean":
            return float(sum(self.scores) / len(self.scores))
        raise ConfigError(f"step_reduction '{how}' is not one of {', '.join(get_args(StepReduction))}")


@dataclass
class MixEntry:
    """One reward in a mix. `name` is the output column; it defaults to the reward's registered name."""

    name: str
    function: Callable[..., Any]
    weight: float = 1.0
    on_error: OnError = "raise"
    columns: tuple[str, ...] | None = None  # the columns it reads; none: the function's `columns` attribute
    step_reduction: StepReduction = "min"  # how step scores (StepScores) become its one number: min, last or mean

    def __post_init__(self):
        if self.step_reduction not in get_args(StepReduction):
            raise ConfigError(f"reward '{self.name}': step_reduction '{self.step_reduction}' is not one of "
                              f"{', '.join(get_args(StepReduction))}")

    def needed_columns(self) -> tuple[str, ...]:
        return tuple(self.columns if self.columns is not None else reward_columns(self.function))


def reward_columns(reward: Any) -> tuple[str, ...]:
    """The dataset columns a reward declares it reads: its `columns` attribute (a string or a sequence of
    them, on the function, the class or the instance); none declared: ()."""
    declared = getattr(reward, "columns", None) or ()
    if isinstance(declared, str):
        declared = (declared,)
    return tuple(str(column) for column in declared)


@dataclass
class MixResult:
    """Scores of one batch: the mixed reward and each reward's own values (kept for metrics)."""

    total: list[float | None]
    per_reward: dict[str, list[float | None]]
    failures: dict[str, int]
    reward_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)  # batches a reward raised on and was re-run sample by sample
    # the step scores of rewards that returned some (StepScores, None where a completion has none); per_reward
    # holds their reductions (MixEntry.step_reduction)
    steps: dict[str, list[StepScores | None]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat per-batch metrics: mean of each reward over the samples it applied to, failure counts."""
        out: dict[str, float] = {}
        for name, values in self.per_reward.items():
            scored = [v for v in values if v is not None]
            if scored:
                out[f"reward/{name}/mean"] = sum(scored) / len(scored)
            out[f"reward/{name}/applicable"] = len(scored) / max(len(values), 1)
            out[f"reward/{name}/failures"] = float(self.failures.get(name, 0))
            out[f"reward/{name}/retries"] = float(self.retries.get(name, 0))
            for key, value in self.reward_metrics.get(name, {}).items():
                out[f"reward/{name}/{key}"] = float(value)
        mixed = [v for v in self.total if v is not None]
        if mixed:
            out["reward/mean"] = sum(mixed) / len(mixed)
        return out


class RewardMix:
    """Several rewards combined with weights.

    `sum`: the weighted sum of the rewards that apply to a sample (`None` ones are left out).
    `normalize_then_sum`: each reward is first standardised (z-score) over the samples it applies to,
    within each group when `group_ids` are given (e.g. the G completions of one prompt), then summed.
    A sample to which no reward applies gets `None`.
    """

    def __init__(self, entries: Sequence[MixEntry], aggregation: Aggregation = "sum", eps: float = 1e-6):
        if not entries:
            raise RewardError("a reward mix needs at least one reward")
        if aggregation not in AGGREGATIONS:
            raise RewardError(f"unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}")
        names = [e.name for e in entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RewardError(f"reward {', '.join(duplicates)} appears twice in the mix; give each a distinct name")
        self.entries = list(entries)
        self.aggregation = aggregation
        self.eps = eps
        self.warned: set[str] = set()  # rewards whose first batch error has been reported

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], group_ids: Sequence[Any] | None = None,
              **columns: Sequence[Any]) -> MixResult:
        n = len(completions)
        if len(prompts) != n:
            raise RewardError(f"{len(prompts)} prompts but {n} completions")
        for key, values in columns.items():
            if len(values) != n:
                raise RewardError(f"column '{key}' has {len(values)} values for {n} completions")
        completions = reward_completions(prompts, completions)  # TRL's form: messages for chat prompts
        failures: dict[str, int] = {}
        retries: dict[str, int] = {}

        def retried(entry: MixEntry, exc: Exception) -> None:
            retries[entry.name] = retries.get(entry.name, 0) + 1
            if entry.name not in self.warned:
                self.warned.add(entry.name)
                print(f"rlvf: warning: reward '{entry.name}' raised on a batch of {n} "
                      f"({type(exc).__name__}: {exc}); re-running it sample by sample (counted as "
                      f"reward/{entry.name}/retries; reported once)", file=sys.stderr, flush=True)

        per_reward = _gather(
            {e.name: (lambda e=e: _call_batch(e, prompts, completions, columns, failures, retried))
             for e in self.entries}
        )
        steps = {}
        for entry in self.entries:
            values = per_reward[entry.name]
            if any(isinstance(v, StepScores) for v in values):
                steps[entry.name] = [v if isinstance(v, StepScores) else None for v in values]
                per_reward[entry.name] = [v.reduced(entry.step_reduction) if isinstance(v, StepScores) else v
                                          for v in values]
        total = self._aggregate(per_reward, group_ids, n)
        reward_metrics = {}
        for entry in self.entries:
            pop = getattr(entry.function, "pop_metrics", None)
            if callable(pop):
                reward_metrics[entry.name] = dict(pop())
        return MixResult(total=total, per_reward=per_reward, failures=failures, reward_metrics=reward_metrics,
                         retries=retries, steps=steps)

    def _aggregate(self, per_reward, group_ids, n) -> list[float | None]:
        if self.aggregation == "normalize_then_sum":
            per_reward = {name: _standardise(values, group_ids, self.eps) for name, values in per_reward.items()}
        total: list[float | None] = []
        for i in range(n):
            parts = [(e.weight, per_reward[e.name][i]) for e in self.entries]
            applicable = [w * v for w, v in parts if v is not None]
            total.append(sum(applicable) if applicable else None)
        return total


def _standardise(values: list[float | None], group_ids, eps: float) -> list[float | None]:
    groups: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None:
            groups.setdefault(group_ids[i] if group_ids is not None else 0, []).append(i)
    out: list[float | None] = list(values)
    for members in groups.values():
        xs = [values[i] for i in members]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
        for i in members:
            # Equal values standardise to exactly 0, not to the rounding error of their mean divided by eps.
            out[i] = 0.0 if max(xs) == min(xs) else (values[i] - mean) / (std + eps)
    return out


def _call_batch(entry: MixEntry, prompts, completions, columns, failures: dict[str, int],
                retried: Callable[[MixEntry, Exception], None] = lambda entry, exc: None):
    """Call one reward on the batch: its values, or an awaitable of them for `_gather` to resolve.

    If the call raises, the batch is re-run sample by sample, so the error names the sample at fault and
    the `zero` policy scores only the failing samples 0; `retried` is told (a retry is counted and reported
    even when every sample then succeeds).
    """
    n = len(completions)
    try:
        # Keyword arguments, as TRL calls them: `def f(completions, **kwargs)` works unchanged.
        result = entry.function(prompts=list(prompts), completions=list(completions),
                                **{k: list(v) for k, v in columns.items()})
    except Exception as exc:
        retried(entry, exc)
        return _per_sample(entry, prompts, completions, columns, failures)
    if not inspect.isawaitable(result):
        return _check_values(entry, result, n, failures, completions=completions)

    async def finish():
        try:
            values = await result
        except Exception as exc:
            retried(entry, exc)
            return await _per_sample(entry, prompts, completions, columns, failures)
        return _check_values(entry, values, n, failures, completions=completions)
    return finish()


async def _per_sample(entry, prompts, completions, columns, failures):
    values: list[float | None] = []
    for i in range(len(completions)):
        try:
            one = entry.function(prompts=[prompts[i]], completions=[completions[i]],
                                 **{k: [v[i]] for k, v in columns.items()})
            if inspect.isawaitable(one):
                one = await one
        except Exception as exc:
            values.append(_sample_failed(entry, i, f"{type(exc).__name__}: {exc}", failures, exc))
            continue
        values.extend(_check_values(entry, one, 1, failures, offset=i, completions=[completions[i]]))
    return values


def _sample_failed(entry: MixEntry, index: int, detail: str, failures: dict[str, int], cause=None) -> float:
    """Apply the entry's failure policy to one sample: raise, or score it 0 and count it."""
    if entry.on_error == "raise":
        raise RewardError(f"reward '{entry.name}' failed on sample {index}: {detail}", sample=index) from cause
    failures[entry.name] = failures.get(entry.name, 0) + 1
    return 0.0


def _check_values(entry: MixEntry, values, n: int, failures: dict[str, int], offset: int = 0,
                  completions=None) -> list[float | StepScores | None]:
    """Validate a reward's output. A wrong shape is a bug in the reward and always an error; a bad value
    (NaN, a string, step scores that do not fit the completion's text) fails that sample under the entry's
    policy."""
    if not isinstance(values, (list, tuple)):
        raise RewardError(f"reward '{entry.name}' returned {type(values).__name__}; expected a list of {n} floats")
    if len(values) != n:
        raise RewardError(f"reward '{entry.name}' returned {len(values)} values for {n} completions")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, StepScores):
            length = None if completions is None else len(completion_text(completions[i]))
            problem = v.problem(length)
            out.append(v.plain() if problem is None else _sample_failed(entry, offset + i, f"step scores: {problem}",
                                                                         failures))
            continue
        f = float(v) if hasattr(v, "__float__") else None  # numbers, numpy and torch scalars; not strings
        if f is None:
            out.append(_sample_failed(entry, offset + i, f"returned {v!r}; expected a float or None", failures))
        elif not math.isfinite(f):
            out.append(_sample_failed(entry, offset + i, f"returned {f}; use None for 'not applicable'", failures))
        else:
            out.append(f)
    return out


def _gather(calls: dict[str, Callable[[], Any]]) -> dict[str, list[float | None]]:
    """Run every reward; the async ones concurrently on one event loop."""
    results = {name: call() for name, call in calls.items()}
    pending = {name: r for name, r in results.items() if inspect.isawaitable(r)}
    if pending:
        async def run_all():
            return await asyncio.gather(*pending.values())
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if in_loop:  # e.g. called from a notebook: run the loop in a helper thread
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                done = pool.submit(asyncio.run, run_all()).result()
        else:
            done = asyncio.run(run_all())
        results.update(zip(pending, done, strict=True))
    return results


def mix_from_config(config: RewardConfig, registry, default_rewards: dict[str, float] | None = None) -> RewardMix:
    """Build the mix a `RewardConfig` describes; with no `mix` entries, the task's default rewards."""
    mix = config.mix or {name: RewardEntry(weight=weight) for name, weight in (default_rewards or {}).items()}
    if not mix:
        raise RewardError("no rewards: add [reward.mix] entries to the config (or pass --reward NAME)")
    entries = []
    for key, entry in mix.items():
        spec = registry.reward(entry.reward or key)
        if config.executor == "ray":  # built in Ray actors, called through a stand-in (rlvf.engine.executors)
            from rlvf.engine.executors import RayReward

            function = RayReward.from_spec(spec, entry.options, config.ray)
        else:
            function = spec.build(**entry.options)
        # The built reward's own declaration (an option may rename a column); a Ray stand-in has none, so the
        # class's, unless an option renames a column (`answer_column`), which only the instance knows.
        columns = reward_columns(function)
        if not columns and not any(option.endswith("_column") for option in entry.options):
            columns = reward_columns(spec.factory)
        entries.append(MixEntry(name=key, function=function, weight=entry.weight, on_error=entry.on_error,
                                columns=columns, step_reduction=entry.step_reduction))
    return RewardMix(entries, aggregation=config.aggregation)


def check_reward_columns(mix: RewardMix, rows: Sequence[dict[str, Any]], where: str) -> None:
    """Refuse rows that lack a column a reward of the mix declares it needs (`columns`), before anything
    heavy runs. `where` names the rows in the message, e.g. "task 'my-qa' (data/qa.jsonl)"."""
    for entry in mix.entries:
        for column in entry.needed_columns():
            for row in rows:
                if column not in row:
                    have = ", ".join(sorted(row)) or "none"
                    raise ConfigError(f"reward '{entry.name}' needs column '{column}', which {where} rows do not "
                                      f"have (they have: {have})")


def check_task_columns(mix: RewardMix, task, split: str = "train", limit: int = 16,
                       rows: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`check_reward_columns` on a task's first rows of `split` (given, or loaded: building them also checks
    the task's template against its columns); returns the rows checked."""
    rows = list(rows[:limit]) if rows is not None else task.rows(split, limit=limit)
    check_reward_columns(mix, rows, task_where(task))
    return rows


def task_where(task) -> str:
    """How messages name a task's rows: "task 'my-qa' (data/qa.jsonl)", or "task 'arithmetic'"."""
    where = getattr(task, "where", None)
    if callable(where):
        return where()
    return f"task '{task.name}'"
