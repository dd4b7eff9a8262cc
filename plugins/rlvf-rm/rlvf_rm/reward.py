"""The `reward_model` reward: scores (prompt, completion) with a sequence-classification reward model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class RewardModelReward:
    """The score of a reward model (`rlvf train-rm` output or any HF sequence-classification RM) for each
    (prompt, completion).

    Options: `path` (required: the model directory or hub id), `batch_size` (sequences per forward pass),
    `max_length` (tokens; a longer conversation keeps its end), `normalize` (standardise scores with the running
    mean and standard deviation of every score seen so far, this batch included), `clip` (then clip to
    [-clip, clip]), `dtype` and `device` ("auto": bf16 on CUDA, else float32 on the CPU).
    """

    def __init__(self, path: str | None = None, batch_size: int = 16, max_length: int = 1024,
                 normalize: bool = False, clip: float | None = None, dtype: str = "auto", device: str = "auto"):
        if not path:
            raise ValueError("the reward_model reward needs options.path, the reward model's directory, e.g. "
                             'rm = { reward = "reward_model", options = { path = "runs/rm/final" } }')
        if batch_size <= 0 or max_length <= 0:
            raise ValueError("batch_size and max_length must be positive")
        if clip is not None and clip <= 0:
            raise ValueError("clip must be positive (or unset)")
        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self.normalize, self.clip = normalize, clip
        from rlvf_rm.model import load_reward_model  # torch: only once the reward is built

        self.model, self.tokenizer = load_reward_model(path, dtype, device=None if device == "auto" else device)
        self.count, self.mean, self._m2 = 0, 0.0, 0.0  # running statistics (Welford) of the raw scores
        self._metrics: dict[str, float] = {}

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / self.count) if self.count else 0.0

    def _update(self, values: list[float]) -> None:
        for value in values:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (value - self.mean)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        if not completions:
            return []
        from rlvf_rm.model import encode_for_reward, reward_scores

        ids = encode_for_reward(self.tokenizer, list(prompts), list(completions), self.max_length)
        raw = reward_scores(self.model, ids, self.tokenizer.pad_token_id, self.batch_size)
        scores = raw
        if self.normalize:
            self._update(raw)
            scale = self.std if self.std > 1e-8 else 1.0
            scores = [(value - self.mean) / scale for value in raw]
        if self.clip is not None:
            scores = [max(-self.clip, min(self.clip, value)) for value in scores]
        mean = sum(raw) / len(raw)
        self._metrics = {"raw_mean": mean, "raw_std": math.sqrt(sum((v - mean) ** 2 for v in raw) / len(raw))}
        if self.normalize:
            self._metrics |= {"running_mean": self.mean, "running_std": self.std}
        return scores

    def pop_metrics(self) -> dict[str, float]:
        """Statistics of the last batch (raw score mean and std; running mean and std when normalising)."""
        metrics, self._metrics = self._metrics, {}
        return metrics
