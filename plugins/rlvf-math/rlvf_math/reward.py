"""The `math` reward: 1.0 when a completion's final answer is equivalent to the gold answer, else 0.0."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from rlvf.api import RewardError, final_turn_text
from rlvf_math.extract import extract_answer, extract_gold
from rlvf_math.pool import VerifierPool
from rlvf_math.verify import DEFAULT_REL_TOL, Verdict, quick_verdict

METRIC_NAMES = ("verified", "no_answer", "parse_failures", "timeouts", "worker_crashes", "cache_hits",
                "fast_path")


class MathReward:
    """1.0 if the final answer is mathematically equivalent to the `answer` column. When the gold answer is a
    number, arithmetic left undone (`4 * 10` for 40) scores 0 unless `allow_unevaluated` is set."""

    columns: tuple[str, ...] = ("answer",)  # the dataset columns it reads (checked before training starts)

    def __init__(self, timeout: float = 5.0, workers: int = 2, rel_tol: float = DEFAULT_REL_TOL,
                 cache_size: int = 100_000, answer_column: str = "answer", allow_unevaluated: bool = False):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.rel_tol = rel_tol
        self.allow_unevaluated = allow_unevaluated
        self.cache_size = cache_size
        self.answer_column = answer_column
        self.columns = (answer_column,)
        self._pool = VerifierPool(workers)
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._metrics: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Sequence[Any]
                 ) -> list[float | None]:
        if self.answer_column not in columns:
            raise RewardError(
                f"the math reward needs the gold answers in a column named '{self.answer_column}', "
                f"but the batch has only: {', '.join(sorted(columns)) or 'no columns'}"
            )
        golds = columns[self.answer_column]
        scores: list[float | None] = [None] * len(completions)
        waiting: dict[tuple[str, str], list[int]] = {}
        counts: Counter[str] = Counter()
        for i, (gold, completion) in enumerate(zip(golds, completions, strict=True)):
            if gold is None:
                continue  # no gold: the reward does not apply
            counts["verified"] += 1
            prediction = extract_answer(final_turn_text(completion))
            if prediction is None:
                counts["no_answer"] += 1
                scores[i] = 0.0
                continue
            key = (extract_gold(str(gold)), prediction)
            verdict = self._cached(key)
            if verdict is not None:
                counts["cache_hits"] += 1
            else:
                verdict = quick_verdict(*key, rel_tol=self.rel_tol, allow_unevaluated=self.allow_unevaluated)
                if verdict is not None:
                    counts["fast_path"] += 1
                    self._remember(key, verdict)
            if verdict is not None:
                scores[i] = float(verdict.correct)
                counts["parse_failures"] += verdict.parse_failure
                continue
            waiting.setdefault(key, []).append(i)
        if waiting:
            self._verify_in_pool(waiting, scores, counts)
        with self._lock:
            self._metrics.update(counts)
        return scores

    def _verify_in_pool(self, waiting: dict[tuple[str, str], list[int]], scores: list, counts: Counter) -> None:
        keys = list(waiting)
        tasks = [{"gold": gold, "pred": pred, "rel_tol": self.rel_tol, "allow_unevaluated": self.allow_unevaluated}
                 for gold, pred in keys]
        for key, outcome in zip(keys, self._pool.run(tasks, self.timeout), strict=True):
            verdict = Verdict(outcome.correct, outcome.parse_failure)
            if outcome.status == "timeout":
                counts["timeouts"] += len(waiting[key])
            elif outcome.status == "crashed":
                counts["worker_crashes"] += len(waiting[key])
            counts["parse_failures"] += verdict.parse_failure * len(waiting[key])
            if outcome.status != "crashed":  # a crash may be the machine's fault: try again next time
                self._remember(key, verdict)
            for i in waiting[key]:
                scores[i] = float(verdict.correct)
        counts["cache_hits"] += sum(len(indices) - 1 for indices in waiting.values())

    def _cached(self, key: tuple[str, str]) -> Verdict | None:
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
            return verdict

    def _remember(self, key: tuple[str, str], verdict: Verdict) -> None:
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call (verifications, timeouts, parse failures, cache hits...), reset."""
        with self._lock:
            metrics = {name: float(self._metrics.get(name, 0)) for name in METRIC_NAMES}
            self._metrics.clear()
        return metrics

    def close(self) -> None:
        """Stop the worker processes (also done at interpreter exit)."""
        self._pool.close()
