"""Algorithm pieces as small named functions in registries; the trainer only looks them up by name.

- advantage estimators: (AdvantageInputs, **options) -> advantages [B, T]
- policy losses: (logprobs, old_logprobs, advantages, mask, **options) -> (per-token loss [B, T], metrics)
- loss aggregations: (per-token loss, mask, BatchTotals) -> scalar; normalised by totals of the whole
  batch, so the losses of its micro-batches add up to the loss of the batch (gradient accumulation)
- KL estimators: (logprobs, ref_logprobs) -> per-token KL estimate [B, T]

Shapes: B sequences (completions), T completion tokens (right-padded); `mask` is 1 on real tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlvf.errors import ConfigError


class Registry(dict):
    """Named functions of one kind; `@REGISTRY.register("name")` adds one."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable:
        def add(function):
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self[name] = function
            return function
        return add

    def get_checked(self, name: str) -> Callable:
        if name not in self:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self))}")
        return self[name]


ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
POLICY_LOSSES = Registry("policy loss")
LOSS_AGGREGATIONS = Registry("loss aggregation")
KL_ESTIMATORS = Registry("KL estimator")


@dataclass
class AdvantageInputs:
    scores: torch.Tensor  # [B] sequence-level reward of each completion (KL already folded in if asked)
    group_ids: torch.Tensor  # [B] which prompt each completion answers (its GRPO group)
    mask: torch.Tensor  # [B, T]
    token_kl: torch.Tensor | None = None  # [B, T] per-token KL to the reference, for token-level estimators


@dataclass
class BatchTotals:
    """Counts over the whole batch of one optimiser step (all its micro-batches)."""

    sequences: int
    tokens: int
    max_tokens: int  # the generation budget: Dr.GRPO's constant normaliser


# --- advantage estimators ---

def _group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per element: the mean and (unbiased, as torch.std) standard deviation of its group, and whether all
    of its group's values are equal (exactly, not up to the rounding error of the mean)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    count = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, torch.ones_like(values))
    mean = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, values) / count
    centred = values - mean[inverse]
    var = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, centred ** 2) / (count - 1).clamp(min=1)
    high = torch.full((groups,), -torch.inf, dtype=values.dtype).scatter_reduce(0, inverse, values, "amax")
    low = torch.full((groups,), torch.inf, dtype=values.dtype).scatter_reduce(0, inverse, values, "amin")
    return mean[inverse], var.sqrt()[inverse], (high == low)[inverse]


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(inputs: AdvantageInputs, scale_std: bool = True, normalize: str = "group",
                    eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) over the completion's group, shared by all its tokens.

    `scale_std=False` is Dr.GRPO (no division by the std); `normalize="batch"` takes the std over the
    whole batch instead of the group (the mean stays the group's).
    """
    if normalize not in ("group", "batch"):
        raise ConfigError(f"grpo: normalize must be 'group' or 'batch', got {normalize!r}")
    mean, group_std, constant = _group_stats(inputs.scores, inputs.group_ids)
    advantages = inputs.scores - mean
    if scale_std:
        std = group_std if normalize == "group" else inputs.scores.std().expand_as(advantages)
        advantages = advantages / (std + eps)
    # A group whose rewards are all equal carries no signal. Its advantages must be exactly 0: the rounding
    # error of its mean (~1e-8), divided by std + eps, would become a gradient that Adam, which normalises
    # magnitudes away, turns into a full-size random step.
    advantages = advantages.masked_fill(constant, 0.0)
    return advantages[:, None] * inputs.mask


# --- KL estimators (log_ratio = log pi - log pi_ref, per token) ---

@KL_ESTIMATORS.register("k1")
def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """r - log r - 1 with r = pi_ref / pi: unbiased and always >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


# --- policy losses ---

@POLICY_LOSSES.register("clipped")
def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.2
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A), per token.
    eps_high > eps_low is DAPO's clip-higher."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).float() * mask
    return loss, {"clip_fraction": was_clipped.sum() / mask.sum().clamp(min=1)}


# --- loss aggregations ---

@LOSS_AGGREGATIONS.register("seq_mean")
def seq_mean(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """GRPO: the mean over each sequence's tokens, then the mean over sequences."""
    per_sequence = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sequence.sum() / totals.sequences


@LOSS_AGGREGATIONS.register("token_mean")
def token_mean(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """DAPO: every token of the batch weighs the same."""
    return (loss * mask).sum() / max(totals.tokens, 1)


@LOSS_AGGREGATIONS.register("constant_norm")
def constant_norm(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """Dr.GRPO: the sum over tokens divided by a constant (sequences x generation budget): no length bias."""
    return (loss * mask).sum() / (totals.sequences * totals.max_tokens)


def describe() -> dict[str, list[str]]:
    """What each registry holds (for `rlvf algorithms` and error messages)."""
    return {registry.kind: sorted(registry) for registry in
            (ADVANTAGE_ESTIMATORS, POLICY_LOSSES, LOSS_AGGREGATIONS, KL_ESTIMATORS)}


def call_with_options(function: Callable, *args: Any, options: dict[str, Any], what: str) -> Any:
    """Call a registry entry with user options, naming the entry when an option does not exist."""
    try:
        return function(*args, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"{what}: {exc}") from None
        raise
