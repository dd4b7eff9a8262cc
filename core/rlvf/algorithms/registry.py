"""The algorithm registries' types: what an entry is given and returns, and the registry of one kind.

Entries reach the registries through the `register_algorithms` hook (the built-ins: rlvf.algorithms.builtin).
This module imports no torch at import time: the plugin registry (`rlvf plugins`) is built from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlvf.errors import ConfigError

if TYPE_CHECKING:
    import torch

# kind (the `register_algorithms` argument) -> what one entry is called in messages
ALGORITHM_KINDS = {
    "advantage": "advantage estimator",
    "policy_loss": "policy loss",
    "loss_aggregation": "loss aggregation",
    "kl_estimator": "KL estimator",
    "value_loss": "value loss",
}


def algorithm(name: str | None = None, **declares: Any) -> Callable:
    """Declare what an algorithm function needs: keyword arguments become attributes of it (e.g.
    `needs_values=True`), so the trainer never tests an entry's name; `name`: the name it registers under by
    default (else its `__name__`)."""
    def mark(function):
        if name is not None:
            function.algorithm_name = name
        for key, value in declares.items():
            setattr(function, key, value)
        return function
    return mark


def declared(function: Callable, attribute: str) -> bool:
    """Whether a registry entry declared `attribute` (see `algorithm`)."""
    return bool(getattr(function, attribute, False))


class AlgorithmRegistry:
    """The named functions of one kind. An entry may be a reference "module:attribute", imported on first use."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable | str] = {}

    @staticmethod
    def default_name(function: Callable | str) -> str:
        if isinstance(function, str):
            return function.rpartition(":")[2]
        return getattr(function, "algorithm_name", function.__name__)

    def add(self, name: str, function: Callable | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = function

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Callable:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def items(self) -> Iterator[tuple[str, Callable]]:
        return ((name, self[name]) for name in self._entries)

    def get_checked(self, name: str) -> Callable:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._entries))}")
        return self[name]


def call_with_options(function: Callable, *args: Any, options: dict[str, Any], what: str) -> Any:
    """Call a registry entry with user options, naming the entry when an option does not exist."""
    try:
        return function(*args, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"{what}: {exc}") from None
        raise


@dataclass
class AdvantageInputs:
    scores: torch.Tensor  # [B] sequence-level reward of each completion (the reward mix; no KL)
    group_ids: torch.Tensor  # [B] which prompt each completion answers (its GRPO group)
    mask: torch.Tensor  # [B, T]
    token_kl: torch.Tensor | None = None  # [B, T] per-token KL to the reference (when there is one)
    kl_penalty: torch.Tensor | None = None  # [B, T] beta * token_kl, only when algorithm.kl_in = "reward"
    values: torch.Tensor | None = None  # [B, T] critic values of the states before each completion token
    # Step rewards (rlvf.api.StepScores; rlvf.algorithms.advantages.step_token_rewards): [B, T] weight x step score
    # on the token that ends each step, and [B] the part of `scores` their reductions make up (sum of weight x
    # reduction), which token_rewards() replaces by the steps themselves; None without step rewards
    step_rewards: torch.Tensor | None = None
    step_part: torch.Tensor | None = None

    def sequence_rewards(self) -> torch.Tensor:
        """[B] r_i = score_i - sum_t kl_penalty_it: the KL-in-reward form for sequence-level estimators."""
        if self.kl_penalty is None:
            return self.scores
        return self.scores - (self.kl_penalty * self.mask).sum(-1)

    def token_rewards(self) -> torch.Tensor:
        """[B, T] r_t = -kl_penalty_t at every token, plus the score on the last real token (InstructGPT). With step
        rewards: plus step_rewards (each step's weight x score on the token ending it), and the last token gets
        scores - step_part (the scalar rewards' weighted sum) in place of the score, so that a step reward counts by
        its steps and not also by its reduction; one step ending at the text's end is exactly its scalar form."""
        import torch

        rewards = torch.zeros_like(self.mask) if self.kl_penalty is None else -self.kl_penalty * self.mask
        scores = self.scores
        if self.step_rewards is not None:
            rewards = rewards + self.step_rewards.to(rewards.dtype) * self.mask
            scores = scores - self.step_part
        positions = torch.arange(self.mask.shape[1], dtype=self.mask.dtype)
        last = (positions * (self.mask > 0)).argmax(-1)  # the last position where mask is 1 (0 if none)
        score = scores.to(rewards.dtype) * (self.mask.sum(-1) > 0)  # rows without loss tokens get none
        return rewards.index_put((torch.arange(len(last)), last), score, accumulate=True)


@dataclass
class Advantages:
    """What an estimator returns when a critic learns from it: `returns` are its value targets [B, T]."""

    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None = None  # [B, T]


@dataclass
class BatchTotals:
    """Counts over the whole batch of one optimiser step (all its micro-batches)."""

    sequences: int
    tokens: int
    max_tokens: int  # the generation budget: Dr.GRPO's constant normaliser
