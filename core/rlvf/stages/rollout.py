"""A step's completions as the trainer's tensors (Rollout), built from the sampler's Samples, and the old
log-probs recomputed by the trainer's own model for a sampler that computes them another way."""

from __future__ import annotations

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
    sampler_logprobs: torch.Tensor | None = None  # [B, T] the sampler's own, when old_logprobs are recomputed
    tis_weights: torch.Tensor | None = None  # [B, T] truncated importance weights (algorithm.tis_cap)
    returns: torch.Tensor | None = None  # [B, T] the critic's targets
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
                     "sampler_logprobs", "tis_weights"):
            if picked[name] is not None:
                picked[name] = picked[name][:, :tokens]
        return Rollout(**picked)


def rollout_from_samples(prompt_ids: list[list[int]], samples, *, pad_id: int, mask_truncated: bool,
                         device: torch.device, first_group: int = 0) -> Rollout:
    """The Rollout of `samples` (the sampler's completions of `prompt_ids`) on `device`: prompt + completion
    right-padded with `pad_id`, the sampler's log-probs as the old ones; with `mask_truncated`, completions cut at
    the token budget enter no loss. Groups are numbered from `first_group` (a rank's first prompt of the step)."""
    sequences = [prompt_ids[samples.prompt_index(i)] + ids for i, ids in enumerate(samples.completion_ids)]
    width, tokens = max(map(len, sequences)), max(1, max(map(len, samples.completion_ids)))
    input_ids = torch.tensor([seq + [pad_id] * (width - len(seq)) for seq in sequences])
    attention = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in sequences])
    completion_ids = torch.tensor([ids + [-1] * (tokens - len(ids)) for ids in samples.completion_ids])
    mask = (completion_ids != -1).float()
    if mask_truncated:
        mask = mask * (1 - torch.tensor(samples.truncated, dtype=torch.float))[:, None]
    old = torch.tensor([lp + [0.0] * (tokens - len(lp)) for lp in samples.logprobs])
    return Rollout(
        input_ids=input_ids.to(device), attention_mask=attention.to(device),
        completion_start=torch.tensor([len(prompt_ids[samples.prompt_index(i)]) for i in range(len(sequences))],
                                      device=device),
        completion_ids=completion_ids.to(device), mask=mask.to(device), old_logprobs=old.to(device),
        group_ids=torch.tensor([samples.prompt_index(i) + first_group for i in range(len(sequences))]),
    )


def completion_stats(samples, dist) -> dict[str, float]:
    """Length and truncation of the step's completions (every rank's under torchrun)."""
    lengths, truncated = [len(ids) for ids in samples.completion_ids], list(samples.truncated)
    if dist.enabled:
        gathered = dist.gather_objects((lengths, truncated))
        lengths, truncated = [n for part in gathered for n in part[0]], [f for part in gathered for f in part[1]]
    return {"completion/length_mean": sum(lengths) / len(lengths), "completion/length_max": max(lengths),
            "completion/truncated": sum(truncated) / len(lengths), "tokens/generated": sum(lengths)}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1))


def recompute_old_logprobs(rollout: Rollout, model, *, temperature: float, tis_cap: float | None, dist,
                           wrapped_policy: torch.nn.Module) -> dict[str, float]:
    """Replace the rollout's old log-probs, the sampler's (kept as sampler_logprobs), by `model`'s (the module that
    `wrapped_policy` wraps for `dist`), and set truncated importance weights min(ratio, tis_cap) if a cap is given;
    returns the mismatch between the two over the whole step's batch."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), dist.full_weights(wrapped_policy):
        trainer, _ = completion_logprobs(model, rollout, temperature)
    model.train(was_training)
    real = rollout.completion_ids != -1
    rollout.sampler_logprobs, rollout.old_logprobs = rollout.old_logprobs, trainer * real
    log_ratio = rollout.old_logprobs - rollout.sampler_logprobs  # log pi_trainer / pi_sampler, 0 on padding
    ratio = log_ratio.exp()
    if tis_cap is not None:
        rollout.tis_weights = ratio.clamp(max=tis_cap)
    # the metrics over the whole step's batch (every rank's rows under torchrun)
    log_ratio, real = dist.gather_rows(log_ratio), dist.gather_rows(real.float()) > 0
    ratio = log_ratio.exp()
    metrics = {"mismatch/kl": masked_mean(ratio - 1 - log_ratio, real),  # k3 estimate of KL(sampler || trainer)
               "mismatch/ratio_mean": masked_mean(ratio, real),
               "mismatch/ratio_max": float(ratio[real].max()) if bool(real.any()) else 1.0,
               "mismatch/ratio_min": float(ratio[real].min()) if bool(real.any()) else 1.0}
    if tis_cap is not None:
        metrics["mismatch/tis_clipped"] = masked_mean((ratio > tis_cap).float(), real)
    return metrics
