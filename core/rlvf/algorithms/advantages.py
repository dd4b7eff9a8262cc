"""Advantage estimators: (AdvantageInputs, **options) -> advantages [B, T], or `Advantages` (advantages and the
returns a critic learns from). One declared `needs_values=True` gets the critic's values in its inputs (the trainer
builds a critic for it), one declared `needs_groups=True` needs group_size >= 2.

Shapes: B sequences (completions), T completion tokens (right-padded); `mask` is 1 on real tokens.
"""

from __future__ import annotations

import torch

from rlvf.algorithms.registry import AdvantageInputs, Advantages, algorithm
from rlvf.errors import ConfigError


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


@algorithm(needs_groups=True)
def grpo_advantages(inputs: AdvantageInputs, scale_std: bool = True, normalize: str = "group",
                    eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) over the completion's group, shared by all its tokens.

    `scale_std=False` is Dr.GRPO (no division by the std); `normalize="batch"` takes the std over the
    whole batch instead of the group (the mean stays the group's).
    """
    if normalize not in ("group", "batch"):
        raise ConfigError(f"grpo: normalize must be 'group' or 'batch', got {normalize!r}")
    rewards = inputs.sequence_rewards()
    mean, group_std, constant = group_stats(rewards, inputs.group_ids)
    advantages = rewards - mean
    if scale_std:
        std = group_std if normalize == "group" else rewards.std().expand_as(advantages)
        advantages = advantages / (std + eps)
    # A group whose rewards are all equal carries no signal. Its advantages must be exactly 0: the rounding
    # error of its mean (~1e-8), divided by std + eps, would become a gradient that Adam, which normalises
    # magnitudes away, turns into a full-size random step.
    advantages = advantages.masked_fill(constant, 0.0)
    return advantages[:, None] * inputs.mask


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


@algorithm(needs_groups=True)
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
    _, _, constant = group_stats(rewards, inputs.group_ids)
    advantages = advantages.masked_fill(constant | (count < 2), 0.0)
    return _per_token(advantages, inputs.mask, whiten)


def discounted_sum_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s over the real tokens of each row."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def reinforce_pp_advantages(inputs: AdvantageInputs, gamma: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++: token rewards r_t = -kl_penalty_t, plus the score at the last token (token_rewards());
    returns to go G_t = sum_{s >= t} gamma^(s-t) r_s; A_t = (G_t - mean(G)) / (std(G) + eps) with the mean
    and std over every real token of the batch (global normalisation, no critic and no groups needed)."""
    returns = discounted_sum_to_go(inputs.token_rewards(), inputs.mask, gamma)
    return masked_whiten(returns, inputs.mask, eps)


@algorithm(needs_values=True)
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


def token_at(tokenizer, ids: list[int], end: int) -> int:
    """The index of the token of `ids` whose decoded text holds character end - 1 (the last of a step ending at
    `end`), counted as the sampler's stop-string cut counts tokens (rlvf.sampling.base.tokens_covering)."""
    from rlvf.sampling.base import tokens_covering

    return max(tokens_covering(tokenizer, ids, end) - 1, 0)


def step_token_rewards(tokenizer, completion_ids: list[list[int]], texts: list[str], steps: dict[str, list],
                       weights: dict[str, float], reductions: dict[str, list[float | None]],
                       width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AdvantageInputs.step_rewards and step_part from a MixResult's step scores (`steps`: reward name -> one
    StepScores or None per completion, offsets into `texts`) and their reductions (`reductions`:
    MixResult.per_reward): weight x score of each step on the completion token holding the step's last character
    ([B, width]), and per completion the sum of weight x reduction of its step rewards ([B]), the part of the mixed
    score the steps replace. A step ending at the text's end lands on the completion's last token: the tokens past
    the text (EOS, the rest of a stop string's last token) close the last step, and a one-step reward is then
    exactly its scalar form."""
    rewards, part = torch.zeros(len(completion_ids), width), torch.zeros(len(completion_ids))
    for name, scored in steps.items():
        for i, steps_of_one in enumerate(scored):
            if steps_of_one is None:
                continue
            part[i] += weights[name] * reductions[name][i]
            for end, score in zip(steps_of_one.ends, steps_of_one.scores, strict=True):
                ids = completion_ids[i]
                token = len(ids) - 1 if end >= len(texts[i]) else token_at(tokenizer, ids, end)
                rewards[i, min(max(token, 0), width - 1)] += weights[name] * score
    return rewards, part
