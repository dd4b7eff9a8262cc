"""`rlvf train-rm`: a Bradley-Terry reward model on [preference] pairs, from the [model] checkpoint, trained with

    loss = -log sigmoid(r(x, y+) - r(x, y-) - m)

(m = 0 is plain Bradley-Terry; a margin m > 0 asks the chosen reward to lead by at least m); the model and how it
reads a conversation are rlvf_rm.model's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rlvf.api import (
    ConfigError,
    apply_lora,
    check_batching,
    load_pairs,
    pair_metrics,
    prepare_output_dir,
    resolve_model,
    save_final,
    train_loop,
)
from rlvf_rm.config import RMStageConfig
from rlvf_rm.model import encode_for_reward, load_reward_model, reward_forward, reward_scores, score_heads


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float | None = None
                       ) -> torch.Tensor:
    """Per-pair loss -log sigmoid(r+ - r- - m), from the rewards of the chosen and rejected completions."""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference)


def encode_pairs(tokenizer, pairs: list[dict[str, Any]], max_length: int, margin_column: str | None = None,
                 margin: float = 0.0) -> list[dict[str, Any]]:
    prompts = [p["prompt"] for p in pairs]
    chosen = encode_for_reward(tokenizer, prompts, [p["chosen"] for p in pairs], max_length)
    rejected = encode_for_reward(tokenizer, prompts, [p["rejected"] for p in pairs], max_length)
    out = []
    for index, (pair, c, r) in enumerate(zip(pairs, chosen, rejected, strict=True)):
        extra = 0.0
        if margin_column is not None:
            if pair.get(margin_column) is None:
                raise ConfigError(f"rm.margin_column: pair {index} has no '{margin_column}' value")
            extra = float(pair[margin_column])
        out.append({"chosen": c, "rejected": r, "margin": margin + extra})
    return out


def run_train_rm(config: RMStageConfig, registry=None, *, resume: bool = False, force_resume: bool = False
                 ) -> dict[str, Any]:
    r = config.rm
    check_batching(r, "rm")
    train_pairs = load_pairs(config.preference, "train", seed=config.seed)
    eval_pairs = load_pairs(config.preference, "eval", seed=config.seed)[: r.eval_limit]
    if not train_pairs:
        raise ConfigError(f"preference.dataset {config.preference.dataset} has no training pairs")
    run_dir = prepare_output_dir(r.output_dir, "rm.output_dir", config, resume=resume, force_resume=force_resume)
    torch.manual_seed(config.seed)  # the fresh score head
    model, tokenizer = load_reward_model(resolve_model(config.model.name), config.model.dtype, from_causal_lm=True)
    # [model] lora: adapters on the body; the fresh score head trains fully (peft's modules_to_save)
    apply_lora(model, config.model.lora, modules_to_save=score_heads(model))
    pad = tokenizer.pad_token_id
    train = encode_pairs(tokenizer, train_pairs, r.max_length, r.margin_column, r.margin)
    held_out = encode_pairs(tokenizer, eval_pairs, r.max_length, r.margin_column, r.margin)

    def loss_fn(examples):
        scores = reward_forward(model, [e["chosen"] for e in examples] + [e["rejected"] for e in examples], pad)
        chosen, rejected = scores[: len(examples)], scores[len(examples):]
        margins = torch.tensor([e["margin"] for e in examples], device=scores.device)
        loss = bradley_terry_loss(chosen, rejected, margins if r.margin or r.margin_column else None).sum()
        return loss, pair_metrics(chosen.detach(), rejected.detach())

    def evaluate():
        if not held_out:
            return {}
        scores = reward_scores(model, [e["chosen"] for e in held_out] + [e["rejected"] for e in held_out], pad,
                               batch_size=r.micro_batch_size * 2)
        chosen = torch.tensor(scores[: len(held_out)])
        rejected = torch.tensor(scores[len(held_out):])
        margins = torch.tensor([e["margin"] for e in held_out])
        loss = bradley_terry_loss(chosen, rejected, margins if r.margin or r.margin_column else None).mean()
        return {"loss": float(loss), **{k: v / len(held_out) for k, v in pair_metrics(chosen, rejected).items()}}

    results = train_loop(model, train, loss_fn, evaluate, r, run_dir, config.seed, desc="train-rm",
                         logged_config=config.model_dump(), resume=resume)
    results["train_pairs"], results["eval_pairs"] = len(train), len(held_out)
    save_final(model, tokenizer, run_dir, results)
    return results
