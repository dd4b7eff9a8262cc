"""A step's completions as the trainer's tensors (Rollout), built from the sampler's Samples; the old log-probs
recomputed by the trainer's own model for a sampler that computes them another way, and the mismatch between the
two (Mismatch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvf.models.forward import completion_logprobs


@dataclass
class Rollout:
    """One step's completions as right-padded tensors; row i answers prompt group_ids[i]."""

    input_ids: torch.Tensor  # [B, L] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [B, L]
    completion_start: torch.Tensor  # [B] index of the first completion token
    completion_ids: torch.Tensor  # [B, T] right-padded
    mask: torch.Tensor  # [B, T] 1 on completion tokens that enter the loss
    old_logprobs: torch.Tensor  # [B, T] log-probs under the policy that sampled them
    group_ids: torch.Tensor  # [B]
    advantages: torch.Tensor | None = None  # [B, T]
    ref_logprobs: torch.Tensor | None = None  # [B, T]
    values: torch.Tensor | None = None  # [B, T] the critic's values when the rollout was made (no grad)
    sampler_logprobs: torch.Tensor | None = None  # [B, T] the sampler's own, when it computes them another way
    tis_weights: torch.Tensor | None = None  # [B, T] truncated importance weights (algorithm.tis_cap)
    returns: torch.Tensor | None = None  # [B, T] the critic's targets
    # [B, T] 1 on tokens the model sampled, 0 on those a multi-turn environment inserted (no log-prob of the
    # sampler's, no loss); None: every completion token was sampled
    generated: torch.Tensor | None = None
    # old_logprobs are not read: the rollout feeds one optimiser step, whose policy is pi_old, so the detached
    # log-probs of its own forward are the old ones (and are compared there with sampler_logprobs, if set)
    on_policy: bool = False
    padding: bool = False  # a stand-in without real rows (see stand_in)

    def stand_in(self) -> Rollout:
        """One row with an all-zero mask: it adds nothing to a loss or its gradient. A rank without rows of a
        (mini/micro-)batch runs it so that its collective operations match the other ranks'
        (rlvf.engine.distributed)."""
        part = self.select([0])
        part.mask = torch.zeros_like(part.mask)
        part.padding = True
        return part

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        rows = torch.as_tensor(rows, dtype=torch.long)
        picked = {name: (value[rows] if isinstance(value, torch.Tensor) else value)
                  for name, value in self.__dict__.items()}
        # Trim padding the selected rows do not need.
        width = int(picked["attention_mask"].sum(-1).max())
        tokens = max(1, int((picked["completion_ids"] != -1).sum(-1).max()))
        picked["input_ids"], picked["attention_mask"] = picked["input_ids"][:, :width], \
            picked["attention_mask"][:, :width]
        for name in ("completion_ids", "mask", "old_logprobs", "advantages", "ref_logprobs", "values", "returns",
                     "sampler_logprobs", "tis_weights", "generated"):
            if picked[name] is not None:
                picked[name] = picked[name][:, :tokens]
        return Rollout(**picked)


def rollout_from_samples(prompt_ids: list[list[int]], samples, *, pad_id: int, mask_truncated: bool,
                         device: torch.device, first_group: int = 0) -> Rollout:
    """The Rollout of `samples` (the sampler's completions of `prompt_ids`) on `device`: prompt + completion
    right-padded with `pad_id`, the sampler's log-probs as the old ones; with `mask_truncated`, completions cut at
    the token budget enter no loss, and neither do tokens a multi-turn environment inserted (Samples.generated).
    Groups are numbered from `first_group` (a rank's first prompt of the step)."""
    sequences = [prompt_ids[samples.prompt_index(i)] + ids for i, ids in enumerate(samples.completion_ids)]
    width, tokens = max(map(len, sequences)), max(1, max(map(len, samples.completion_ids)))
    input_ids = torch.tensor([seq + [pad_id] * (width - len(seq)) for seq in sequences])
    attention = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in sequences])
    completion_ids = torch.tensor([ids + [-1] * (tokens - len(ids)) for ids in samples.completion_ids])
    mask = (completion_ids != -1).float()
    generated = None
    if samples.generated is not None:
        generated = torch.tensor([flags + [0] * (tokens - len(flags)) for flags in samples.generated])
        mask = mask * generated
    if mask_truncated:
        mask = mask * (1 - torch.tensor(samples.truncated, dtype=torch.float))[:, None]
    old = torch.tensor([lp + [0.0] * (tokens - len(lp)) for lp in samples.logprobs])
    return Rollout(
        input_ids=input_ids.to(device), attention_mask=attention.to(device),
        completion_start=torch.tensor([len(prompt_ids[samples.prompt_index(i)]) for i in range(len(sequences))],
                                      device=device),
        completion_ids=completion_ids.to(device), mask=mask.to(device), old_logprobs=old.to(device),
        group_ids=torch.tensor([samples.prompt_index(i) + first_group for i in range(len(sequences))]),
        generated=None if generated is None else generated.to(device),
    )


def completion_stats(samples, dist) -> dict[str, float]:
    """Length and truncation of the step's completions, and of its episodes with an environment (every rank's
    under torchrun)."""
    from rlvf.sampling.episodes import episode_stats

    lengths, truncated = [len(ids) for ids in samples.completion_ids], list(samples.truncated)
    sampled = lengths if samples.generated is None else [sum(flags) for flags in samples.generated]
    episodes = samples if samples.generated is not None else None  # only episodes travel between ranks
    parts = [(lengths, truncated, sampled, episodes)]
    if dist.enabled:
        parts = dist.gather_objects(parts[0])
    lengths, truncated, sampled = ([value for part in parts for value in part[field]] for field in range(3))
    metrics = {"completion/length_mean": sum(lengths) / len(lengths), "completion/length_max": max(lengths),
               "completion/truncated": sum(truncated) / len(lengths), "tokens/generated": sum(sampled)}
    if episodes is not None:
        metrics |= episode_stats([part[3] for part in parts])
    return metrics


def loss_tokens_first(inputs):
    """AdvantageInputs whose [B, T] tensors have each row's loss tokens (mask 1) moved to the front, in order, and
    the permutation that did it: a token-level estimator (returns to go, GAE) then runs over a model's turns as
    one sequence, passing over the tokens a multi-turn environment inserted between them (which would otherwise
    cut the sum at every observation). A single-turn rollout's loss tokens are already first: nothing moves."""
    from rlvf.algorithms import AdvantageInputs

    order = torch.argsort((inputs.mask <= 0).to(torch.int8), dim=1, stable=True)
    moved = {name: (value.gather(1, order) if isinstance(value, torch.Tensor) and value.dim() == 2 else value)
             for name, value in vars(inputs).items()}
    return AdvantageInputs(**moved), order


def restore_token_order(inputs, result, order: torch.Tensor):
    """The AdvantageInputs and Advantages of loss_tokens_first's order back in the rollout's token order."""
    from rlvf.algorithms import AdvantageInputs, Advantages

    def back(value):
        return value if value is None else torch.empty_like(value).scatter_(1, order, value)
    restored = {name: (back(value) if isinstance(value, torch.Tensor) and value.dim() == 2 else value)
                for name, value in vars(inputs).items()}
    return AdvantageInputs(**restored), Advantages(advantages=back(result.advantages), returns=back(result.returns))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1))


def sampler_log_ratio(trainer_logprobs: torch.Tensor, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi_trainer - log pi_sampler per sampled completion token, 0 on padding and on tokens an environment
    inserted; where the sampled tokens are) for a rollout holding the sampler's log-probs as sampler_logprobs."""
    real = rollout.completion_ids != -1 if rollout.generated is None else rollout.generated > 0
    return trainer_logprobs.detach() * real - rollout.sampler_logprobs, real


def truncated_importance_weights(log_ratio: torch.Tensor, tis_cap: float) -> torch.Tensor:
    """min(pi_trainer / pi_sampler, tis_cap) per token: the tokens came from the sampler's policy."""
    return log_ratio.exp().clamp(max=tis_cap)


class Mismatch:
    """The mismatch between the sampler's log-probs and the trainer's, as token-weighted sums over any number of
    parts (micro-batches, ranks): metrics() equal those of one pass over the whole step's batch."""

    def __init__(self, tis_cap: float | None):
        self.tis_cap = tis_cap
        self.totals = {"tokens": 0.0, "kl": 0.0, "ratio": 0.0, "clipped": 0.0}
        self.ratio_max, self.ratio_min = -math.inf, math.inf

    def add(self, log_ratio: torch.Tensor, real: torch.Tensor) -> None:
        ratio, real = log_ratio.exp(), real.to(log_ratio.dtype)
        for name, values in (("tokens", real), ("kl", (ratio - 1 - log_ratio) * real),  # k3: KL(sampler || trainer)
                             ("ratio", ratio * real)):
            self.totals[name] += float(values.sum())
        if self.tis_cap is not None:
            self.totals["clipped"] += float(((ratio > self.tis_cap) * real).sum())
        if bool(real.any()):
            ratios = ratio[real > 0]
            self.ratio_max, self.ratio_min = max(self.ratio_max, float(ratios.max())), \
                min(self.ratio_min, float(ratios.min()))

    def metrics(self, dist) -> dict[str, float]:
        """The step's mismatch metrics (every rank's tokens under torchrun: all ranks call this)."""
        totals, ratio_max, ratio_min = self.totals, self.ratio_max, self.ratio_min
        if dist.enabled:
            parts = dist.gather_objects((totals, ratio_max, ratio_min))
            totals = {name: sum(part[0][name] for part in parts) for name in totals}
            ratio_max, ratio_min = max(part[1] for part in parts), min(part[2] for part in parts)
        tokens = max(totals["tokens"], 1.0)
        metrics = {"mismatch/kl": totals["kl"] / tokens, "mismatch/ratio_mean": totals["ratio"] / tokens,
                   "mismatch/ratio_max": ratio_max if totals["tokens"] else 1.0,
                   "mismatch/ratio_min": ratio_min if totals["tokens"] else 1.0}
        if self.tis_cap is not None:
            metrics["mismatch/tis_clipped"] = totals["clipped"] / tokens
        return metrics


def recompute_old_logprobs(rollout: Rollout, model, *, temperature: float, tis_cap: float | None, dist,
                           wrapped_policy: torch.nn.Module) -> dict[str, float]:
    """Replace the rollout's old log-probs, the sampler's (kept as sampler_logprobs), by `model`'s (the module that
    `wrapped_policy` wraps for `dist`), and set truncated importance weights min(ratio, tis_cap) if a cap is given;
    returns the mismatch between the two over the whole step's batch. A separate pass, for an update of several
    optimiser steps: with one, the update's own forward gives both (Rollout.on_policy)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), dist.full_weights(wrapped_policy):
        trainer, _ = completion_logprobs(model, rollout, temperature)
    model.train(was_training)
    rollout.sampler_logprobs = rollout.old_logprobs
    log_ratio, real = sampler_log_ratio(trainer, rollout)
    rollout.old_logprobs = trainer * real
    if tis_cap is not None:
        rollout.tis_weights = truncated_importance_weights(log_ratio, tis_cap)
    mismatch = Mismatch(tis_cap)
    mismatch.add(log_ratio, real)
    return mismatch.metrics(dist)
