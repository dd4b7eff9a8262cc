"""Algorithm pieces as small named functions in registries; the trainer only looks them up by name.

- advantage estimators: (AdvantageInputs, **options) -> advantages [B, T], or `Advantages` (advantages and
  the returns a critic learns from); an entry registered with `needs_values=True` gets the critic's values
  in its inputs (the trainer builds a critic for it), one with `needs_groups=True` needs group_size >= 2
- policy losses: (logprobs, old_logprobs, advantages, mask, **options) -> (per-token loss [B, T], metrics)
- loss aggregations: (per-token loss, mask, BatchTotals) -> scalar; normalised by totals of the whole
  batch, so the losses of its micro-batches add up to the loss of the batch (gradient accumulation)
- KL estimators: (logprobs, ref_logprobs) -> per-token KL estimate [B, T]
- value losses: (values, old_values, returns, mask, clip) -> (per-token loss [B, T], metrics)

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

    def register(self, name: str, **declares: Any) -> Callable:
        """Add a function under `name`; keyword arguments become attributes of it that tell the trainer what
        the entry needs (e.g. `needs_values=True`), so the trainer never tests an entry's name."""
        def add(function):
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            for key, value in declares.items():
                setattr(function, key, value)
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
VALUE_LOSSES = Registry("value loss")


def declared(function: Callable, attribute: str) -> bool:
    """Whether a registry entry declared `attribute` (see Registry.register)."""
    return bool(getattr(function, attribute, False))


@dataclass
class AdvantageInputs:
    scores: torch.Tensor  # [B] sequence-level reward of each completion (the reward mix; no KL)
    group_ids: torch.Tensor  # [B] which prompt each completion answers (its GRPO group)
    mask: torch.Tensor  # [B, T]
    token_kl: torch.Tensor | None = None  # [B, T] per-token KL to the reference (when there is one)
    kl_penalty: torch.Tensor | None = None  # [B, T] beta * token_kl, only when algorithm.kl_in = "reward"
    values: torch.Tensor | None = None  # [B, T] critic values of the states before each completion token

    def sequence_rewards(self) -> torch.Tensor:
        """[B] r_i = score_i - sum_t kl_penalty_it: the KL-in-reward form for sequence-level estimators."""
        if self.kl_penalty is None:
            return self.scores
        return self.scores - (self.kl_penalty * self.mask).sum(-1)

    def token_rewards(self) -> torch.Tensor:
        """[B, T] r_t = -kl_penalty_t at every token, plus the score on the last real token (InstructGPT)."""
        rewards = torch.zeros_like(self.mask) if self.kl_penalty is None else -self.kl_penalty * self.mask
        positions = torch.arange(self.mask.shape[1], dtype=self.mask.dtype)
        last = (positions * (self.mask > 0)).argmax(-1)  # the last position where mask is 1 (0 if none)
        score = self.scores.to(rewards.dtype) * (self.mask.sum(-1) > 0)  # rows without loss tokens get none
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


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over the masked entries of the whole batch (unbiased std); 0 off the mask.
    All-equal values give exactly 0 (not their mean's rounding error divided by eps)."""
    selected = values[mask > 0]
    if selected.numel() < 2 or bool(selected.max() == selected.min()):
        return torch.zeros_like(values)
    return (values - selected.mean()) / (selected.std() + eps) * mask


def _per_token(advantages: torch.Tensor, mask: torch.Tensor, whiten_them: bool) -> torch.Tensor:
    """Sequence advantages [B] spread over each completion's tokens [B, T], optionally whitened."""
    advantages = advantages[:, None] * mask
    return masked_whiten(advantages, mask) if whiten_them else advantages


@ADVANTAGE_ESTIMATORS.register("grpo", needs_groups=True)
def grpo_advantages(inputs: AdvantageInputs, scale_std: bool = True, normalize: str = "group",
                    eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) over the completion's group, shared by all its tokens.

    `scale_std=False` is Dr.GRPO (no division by the std); `normalize="batch"` takes the std over the
    whole batch instead of the group (the mean stays the group's).
    """
    if normalize not in ("group", "batch"):
        raise ConfigError(f"grpo: normalize must be 'group' or 'batch', got {normalize!r}")
    rewards = inputs.sequence_rewards()
    mean, group_std, constant = _group_stats(rewards, inputs.group_ids)
    advantages = rewards - mean
    if scale_std:
        std = group_std if normalize == "group" else rewards.std().expand_as(advantages)
        advantages = advantages / (std + eps)
    # A group whose rewards are all equal carries no signal. Its advantages must be exactly 0: the rounding
    # error of its mean (~1e-8), divided by std + eps, would become a gradient that Adam, which normalises
    # magnitudes away, turns into a full-size random step.
    advantages = advantages.masked_fill(constant, 0.0)
    return advantages[:, None] * inputs.mask


@ADVANTAGE_ESTIMATORS.register("reinforce")
def reinforce_advantages(inputs: AdvantageInputs, whiten: bool = False) -> torch.Tensor:
    """REINFORCE with a mean baseline: A_i = r_i - (1/B) sum_j r_j over the batch, shared by all tokens of the
    completion (r_i = sequence_rewards(): the score minus the summed KL penalty when kl_in = "reward").

    The baseline does not change the expected gradient (E[grad log pi] = 0) but lowers its variance.
    `whiten`: then normalise to mean 0, std 1 over the batch's tokens (masked_whiten).
    """
    rewards = inputs.sequence_rewards()
    constant = bool(rewards.max() == rewards.min())
    advantages = torch.zeros_like(rewards) if constant else rewards - rewards.mean()
    return _per_token(advantages, inputs.mask, whiten)


@ADVANTAGE_ESTIMATORS.register("rloo", needs_groups=True)
def rloo_advantages(inputs: AdvantageInputs, whiten: bool = False) -> torch.Tensor:
    """REINFORCE leave-one-out: A_i = r_i - (1/(G-1)) sum_{j != i} r_j over the G completions of its prompt
    (= G/(G-1) (r_i - mean of the group)), shared by all tokens; r_i = sequence_rewards().

    The baseline of each sample uses only the other samples, so it is independent of it: unbiased.
    A group whose rewards are all equal (or a group of one) gets exactly 0.
    """
    rewards = inputs.sequence_rewards()
    _, inverse = torch.unique(inputs.group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    total = torch.zeros(groups, dtype=rewards.dtype).index_add_(0, inverse, rewards)[inverse]
    count = torch.zeros(groups, dtype=rewards.dtype).index_add_(0, inverse, torch.ones_like(rewards))[inverse]
    advantages = rewards - (total - rewards) / (count - 1).clamp(min=1)
    _, _, constant = _group_stats(rewards, inputs.group_ids)
    advantages = advantages.masked_fill(constant | (count < 2), 0.0)
    return _per_token(advantages, inputs.mask, whiten)


def _discounted_sum_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s over the real tokens of each row."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp_advantages(inputs: AdvantageInputs, gamma: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++: token rewards r_t = -kl_penalty_t, plus the score at the last token (token_rewards());
    returns to go G_t = sum_{s >= t} gamma^(s-t) r_s; A_t = (G_t - mean(G)) / (std(G) + eps) with the mean
    and std over every real token of the batch (global normalisation, no critic and no groups needed)."""
    returns = _discounted_sum_to_go(inputs.token_rewards(), inputs.mask, gamma)
    return masked_whiten(returns, inputs.mask, eps)


@ADVANTAGE_ESTIMATORS.register("gae", needs_values=True)
def gae_advantages(inputs: AdvantageInputs, gamma: float = 1.0, lam: float = 0.95, whiten: bool = True,
                   eps: float = 1e-8) -> Advantages:
    """Generalised advantage estimation (PPO) on token rewards r_t (token_rewards(): -kl_penalty_t at every
    token, the score at the last) and critic values V_t:

        delta_t = r_t + gamma V_{t+1} - V_t        (V = 0 after the last real token)
        A_t = delta_t + gamma lam A_{t+1}           returns R_t = A_t + V_t (the critic's targets)

    `whiten`: normalise the advantages over the batch's tokens (the returns stay unwhitened).
    """
    if inputs.values is None:
        raise ConfigError("advantage estimator 'gae' needs critic values (AdvantageInputs.values)")
    mask = inputs.mask
    rewards, values = inputs.token_rewards(), inputs.values.to(mask.dtype) * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_values = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    if whiten:
        advantages = masked_whiten(advantages, mask, eps)
    return Advantages(advantages=advantages, returns=returns)


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


# --- value losses (the critic's) ---

@VALUE_LOSSES.register("clipped")
def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 max((V - R)^2, (V_old + clip(V - V_old, -clip, +clip) - R)^2) per token: the critic may not move its
    estimate further than `clip` from the one it had when the rollout was made (a large `clip`: plain MSE)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
    was_clipped = (clipped_loss > unclipped_loss).float() * mask
    return loss, {"value_clip_fraction": was_clipped.sum() / mask.sum().clamp(min=1)}


def describe() -> dict[str, list[str]]:
    """What each registry holds (for `rlvf algorithms` and error messages)."""
    return {registry.kind: sorted(registry) for registry in
            (ADVANTAGE_ESTIMATORS, POLICY_LOSSES, LOSS_AGGREGATIONS, KL_ESTIMATORS, VALUE_LOSSES)}


def call_with_options(function: Callable, *args: Any, options: dict[str, Any], what: str) -> Any:
    """Call a registry entry with user options, naming the entry when an option does not exist."""
    try:
        return function(*args, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"{what}: {exc}") from None
        raise
