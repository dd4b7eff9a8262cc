"""Policy losses, loss aggregations, KL estimators and the critic's value losses.

- policy losses: (logprobs, old_logprobs, advantages, mask, **options) -> (per-token loss [B, T], metrics)
- loss aggregations: (per-token loss, mask, BatchTotals) -> scalar; normalised by totals of the whole
  batch, so the losses of its micro-batches add up to the loss of the batch (gradient accumulation)
- KL estimators: (logprobs, ref_logprobs) -> per-token KL estimate [B, T]
- value losses: (values, old_values, returns, mask, clip) -> (per-token loss [B, T], metrics)
"""

from __future__ import annotations

import torch

from rlvf.algorithms.registry import BatchTotals

# --- KL estimators (log_ratio = log pi - log pi_ref, per token) ---

def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """r - log r - 1 with r = pi_ref / pi: unbiased and always >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


# --- policy losses ---

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

def seq_mean(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """GRPO: the mean over each sequence's tokens, then the mean over sequences."""
    per_sequence = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sequence.sum() / totals.sequences


def token_mean(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """DAPO: every token of the batch weighs the same."""
    return (loss * mask).sum() / max(totals.tokens, 1)


def constant_norm(loss: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    """Dr.GRPO: the sum over tokens divided by a constant (sequences x generation budget): no length bias."""
    return (loss * mask).sum() / (totals.sequences * totals.max_tokens)


# --- value losses (the critic's) ---

def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 max((V - R)^2, (V_old + clip(V - V_old, -clip, +clip) - R)^2) per token: the critic may not move its
    estimate further than `clip` from the one it had when the rollout was made (a large `clip`: plain MSE)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
    was_clipped = (clipped_loss > unclipped_loss).float() * mask
    return loss, {"value_clip_fraction": was_clipped.sum() / mask.sum().clamp(min=1)}
