"""The audit run: task rows -> completions of every exploit family -> scores of each reward -> per-family summary.

Scores come from `RewardMix.score`, the path training uses (the rows' prompts, the completion texts, the rows'
columns, each row's completions one group for `normalize_then_sum`), all completions in one call. A family's
`gain` on a reward is its mean minus the mean of the "wrong" families; an exploit with a gain is flagged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvf.api.exploits import AuditRow, ExploitFamily
from rlvf.api.rewards import RewardMix
from rlvf.errors import PluginError, RewardError

TOLERANCE = 1e-9  # float noise: a gain at or below it is no gain
MIX_TOTAL = "reward"  # the mixed reward's name, as in `rlvf score` and the training metrics
EXAMPLES = 3  # completions kept per reward and family: the highest-scoring ones


@dataclass(frozen=True)
class Completion:
    family: str
    row: int  # index among the audited rows
    text: str


@dataclass
class FamilyResult:
    """One family's scores under one reward."""

    family: ExploitFamily
    completions: int
    scored: list[tuple[Completion, float]]  # the completions the reward applied to (not None), with their scores
    gain: float | None = None  # mean - the wrong answers' mean

    @property
    def mean(self) -> float | None:
        return sum(score for _, score in self.scored) / len(self.scored) if self.scored else None

    @property
    def flagged(self) -> bool:
        """An exploit scoring above the wrong answers."""
        return self.family.role == "exploit" and self.gain is not None and self.gain > TOLERANCE

    def examples(self, count: int = EXAMPLES) -> list[tuple[Completion, float]]:
        return sorted(self.scored, key=lambda item: -item[1])[:count]  # stable: the first of equal scores first

    def share_of(self, gold_gain: float | None) -> float | None:
        """The gain as a share of the gold's gain (how much of a right answer's reward the exploit collects)."""
        return None if self.gain is None or gold_gain is None or gold_gain <= TOLERANCE else self.gain / gold_gain

    def to_json(self, gold_gain: float | None = None) -> dict[str, Any]:
        return {"role": self.family.role, "completions": self.completions, "n": len(self.scored), "mean": self.mean,
                "gain": self.gain, "share_of_gold_gain": self.share_of(gold_gain), "flagged": self.flagged,
                "examples": [{"row": c.row, "completion": c.text, "score": score} for c, score in self.examples()]}


@dataclass
class RewardResult:
    """Every family's scores under one reward of the mix, or the mix total."""

    name: str
    title: str  # e.g. "math (weight 1, from rlvf-math)"
    families: list[FamilyResult]

    def _pooled_mean(self, role: str) -> float | None:
        scores = [score for result in self.families if result.family.role == role for _, score in result.scored]
        return sum(scores) / len(scores) if scores else None

    @property
    def wrong_mean(self) -> float | None:
        return self._pooled_mean("wrong")

    @property
    def gold_mean(self) -> float | None:
        return self._pooled_mean("gold")

    @property
    def gold_gain(self) -> float | None:
        gold, wrong = self.gold_mean, self.wrong_mean
        return None if gold is None or wrong is None else gold - wrong

    @property
    def separates(self) -> bool | None:
        """Whether gold scores above wrong; None when either did not score."""
        return None if self.gold_gain is None else self.gold_gain > TOLERANCE

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "gold_mean": self.gold_mean, "wrong_mean": self.wrong_mean,
                "separates": self.separates,
                "families": {r.family.name: r.to_json(self.gold_gain) for r in self.families}}


@dataclass
class AuditReport:
    task: str
    split: str
    rows: int
    seed: int
    families: list[ExploitFamily]  # every registered family (some may apply to none of the rows)
    completions: list[Completion]
    results: list[RewardResult] = field(default_factory=list)

    @property
    def not_applicable(self) -> list[ExploitFamily]:
        used = {completion.family for completion in self.completions}
        return [family for family in self.families if family.name not in used]

    def flagged(self, margin: float = 0.0) -> list[tuple[RewardResult, FamilyResult]]:
        """(reward, family) of every exploit whose gain exceeds `margin`."""
        return [(reward, family) for reward in self.results for family in reward.families
                if family.flagged and family.gain > margin + TOLERANCE]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "rows": self.rows, "seed": self.seed,
                "completions": len(self.completions),
                "families": {f.name: {"role": f.role, "description": f.description, "plugin": f.plugin}
                             for f in self.families},
                "not_applicable": [f.name for f in self.not_applicable],
                "rewards": {result.name: result.to_json() for result in self.results},
                "flagged": [{"reward": r.name, "family": f.family.name, "gain": f.gain} for r, f in self.flagged()]}


def build_completions(families: Sequence[ExploitFamily], rows: Sequence[dict[str, Any]], seed: int
                      ) -> list[Completion]:
    """Every family's completions of every row; a family that raises or returns something else than texts is an
    error naming it, its plugin and the row."""
    completions = []
    for family in families:
        for index, row in enumerate(rows):
            audit_row = AuditRow(row=row, index=index, rows=rows, rng=random.Random(f"{seed}/{family.name}/{index}"))
            where = f"exploit family '{family.name}' (from {family.plugin or 'an unknown plugin'}) on row {index}"
            try:
                texts = family.build(audit_row)
            except Exception as exc:
                raise PluginError(f"{where} raised {type(exc).__name__}: {exc}") from exc
            if isinstance(texts, str) or not all(isinstance(text, str) for text in texts or ()):
                raise PluginError(f"{where} returned {texts!r}; expected a list of completion texts")
            completions += [Completion(family.name, index, text) for text in texts or ()]
    return completions


def score_completions(mix: RewardMix, rows: Sequence[dict[str, Any]], completions: Sequence[Completion],
                      ) -> dict[str, list[float | None]]:
    """Each reward's values (and the mix total's, as MIX_TOTAL) for every completion, in one `mix.score` call."""
    if not completions:
        return {name: [] for name in [*mix.names, MIX_TOTAL]}
    expanded = [rows[completion.row] for completion in completions]
    keys = {key for row in rows for key in row} - {"prompt"}
    columns = {key: [row.get(key) for row in expanded] for key in sorted(keys)}
    try:
        result = mix.score([row.get("prompt", "") for row in expanded], [c.text for c in completions],
                           group_ids=[c.row for c in completions], **columns)
    except RewardError as exc:
        if exc.sample is None:
            raise
        completion = completions[exc.sample]
        raise RewardError(f"row {completion.row}, exploit family '{completion.family}': {exc}") from exc
    return {**result.per_reward, MIX_TOTAL: result.total}


def summarise(name: str, title: str, families: Sequence[ExploitFamily], completions: Sequence[Completion],
              values: Sequence[float | None]) -> RewardResult:
    """One reward's result: each family that built completions, with its scores and its gain over wrong."""
    by_family: dict[str, FamilyResult] = {}
    for family in families:
        by_family[family.name] = FamilyResult(family, completions=0, scored=[])
    for completion, value in zip(completions, values, strict=True):
        entry = by_family[completion.family]
        entry.completions += 1
        if value is not None:
            entry.scored.append((completion, float(value)))
    result = RewardResult(name, title, [entry for entry in by_family.values() if entry.completions])
    wrong = result.wrong_mean
    for entry in result.families:
        entry.gain = None if wrong is None or entry.mean is None else entry.mean - wrong
    return result


def run_audit(mix: RewardMix, rows: Sequence[dict[str, Any]], families: Sequence[ExploitFamily], *, task: str,
              split: str, seed: int, titles: dict[str, str], total: bool = True) -> AuditReport:
    """Audit `mix` on `rows`: every family's completions scored by each reward (titled by `titles`), and by the
    mix total when `total`."""
    completions = build_completions(families, rows, seed)
    values = score_completions(mix, rows, completions)
    report = AuditReport(task=task, split=split, rows=len(rows), seed=seed, families=list(families),
                         completions=completions)
    names = [*mix.names, MIX_TOTAL] if total else mix.names
    report.results = [summarise(name, titles[name], families, completions, values[name]) for name in names]
    return report
