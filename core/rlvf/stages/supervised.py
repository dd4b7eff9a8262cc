"""What the supervised stages share (`rlvf sft`, `rlvf train-rm`, `rlvf dpo`): encoding a prompt and its
completion the way the sampler does, and one optimisation loop with held-out evaluation before and after.

The loop knows nothing of the stage: it gets examples, a `loss_fn(micro_batch) -> (summed loss, summed
stats)` and a `weight(example)` (how many loss terms an example holds: its completion tokens for SFT, 1 for
a pair), and divides by the batch's total weight, so micro-batches add up to the batch's mean.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rlvf.api.text import completion_text
from rlvf.config import Config, FinetuneConfig
from rlvf.engine.metrics import MetricsLogger
from rlvf.engine.rundir import check_run_dir
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts


def prepare_output_dir(template: str, key: str, **fields: str) -> Path:
    """The run directory, checked before any model is loaded (rlvf.engine.rundir.check_run_dir, as `rlvf train`
    does): a file, an unwritable path or a directory that already holds files is refused in one line."""
    return check_run_dir(Path(template.format(**fields)), key)


def encode_completion(tokenizer, completion: Any) -> list[int]:
    """Token ids of a completion as the policy would have sampled them: its text, then EOS (which is also
    the end of the assistant turn in chat templates such as SmolLM2's)."""
    ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


def encode_prompt(tokenizer, prompt: Any) -> list[int]:
    """A prompt's ids as the trainer and sampler encode it (chat messages through the chat template)."""
    return encode_prompts(tokenizer, [prompt if prompt is not None else ""])[0]


def fit_length(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut a prompt + completion to `max_length` tokens: the prompt loses its beginning first (down to half
    the budget, at least one token), then the completion its end."""
    if len(prompt_ids) + len(completion_ids) <= max_length:
        return prompt_ids, completion_ids
    keep_prompt = max(1, min(len(prompt_ids), max(max_length - len(completion_ids), max_length // 2)))
    prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:] if prompt_ids else prompt_ids
    return prompt_ids, completion_ids[: max(max_length - len(prompt_ids), 1)]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimiser step `step` of `total`: linear warm-up, then constant,
    linear decay to 0 or cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def total_steps(config: FinetuneConfig, n_examples: int) -> int:
    return config.max_steps if config.max_steps is not None else math.ceil(config.epochs * n_examples /
                                                                           config.batch_size)


def batches(n_examples: int, config: FinetuneConfig, seed: int):
    """Index lists of the optimiser steps: a seeded reshuffle per pass, batches running across passes."""
    steps = total_steps(config, n_examples)
    end = steps * config.batch_size if config.max_steps is not None else config.epochs * n_examples
    orders: dict[int, list[int]] = {}
    for step in range(steps):
        picked = []
        for position in range(step * config.batch_size, min((step + 1) * config.batch_size, end)):
            epoch, index = divmod(position, n_examples)
            if epoch not in orders:
                order = list(range(n_examples))
                random.Random(seed * 1_000_003 + epoch).shuffle(order)
                orders = {epoch: order}
            picked.append(orders[epoch][index])
        yield picked


def check_batching(config: FinetuneConfig, key: str) -> None:
    if config.batch_size <= 0 or config.micro_batch_size <= 0:
        raise ConfigError(f"{key}.batch_size and {key}.micro_batch_size must be positive")
    if config.max_length < 2:
        raise ConfigError(f"{key}.max_length must be at least 2 tokens")


def train_loop(model, train: Sequence[Any], loss_fn: Callable, evaluate_fn: Callable[[], dict[str, float]],
               config: FinetuneConfig, run_dir: Path, seed: int, *, weight: Callable[[Any], float] = lambda _: 1.0,
               desc: str = "train", logged_config: dict | None = None,
               finish_fn: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """Optimise `model` on `train`; returns {"before": held-out metrics, "after": ..., "steps": n}.

    `loss_fn(examples)` returns (a scalar tensor: the loss summed over the examples' loss terms, a dict of
    summed statistics); both are divided by the summed `weight` of the optimiser step's examples.
    `finish_fn()`, if given, adds metrics measured once after training (e.g. a sampled KL) to "after"."""
    if not train:
        raise ConfigError(f"{desc}: no training examples")
    steps = total_steps(config, len(train))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                  betas=config.adam_betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, config.warmup_steps, config.lr_schedule))
    logger = MetricsLogger(run_dir, config.report_to, config=logged_config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    def held_out(step: int) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            metrics = evaluate_fn()
        logger.log(step, {f"eval/{k}": v for k, v in metrics.items()})
        return metrics

    results: dict[str, Any] = {"before": held_out(0)}
    from tqdm.auto import tqdm

    progress = tqdm(total=steps, desc=desc, unit="step", disable=not config.progress, dynamic_ncols=True)
    for step, indices in enumerate(batches(len(train), config, seed), start=1):
        begin = time.perf_counter()
        model.train()
        examples = [train[i] for i in indices]
        total = sum(weight(e) for e in examples) or 1.0
        sums: dict[str, float] = {}
        loss_value = 0.0
        for start in range(0, len(examples), config.micro_batch_size):
            loss, stats = loss_fn(examples[start: start + config.micro_batch_size])
            (loss / total).backward()
            loss_value += float(loss.detach()) / total
            for name, value in stats.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {"loss": loss_value, **{name: value / total for name, value in sums.items()},
                   "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
                   "examples": len(examples), "time/step": time.perf_counter() - begin}
        logger.log(step, metrics)
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}")
        if config.eval_every and step % config.eval_every == 0 and step < steps:
            held_out(step)
    progress.close()
    results["after"] = held_out(steps)
    if finish_fn is not None:
        model.eval()
        extra = finish_fn()
        logger.log(steps, {f"eval/{k}": v for k, v in extra.items()})
        results["after"] |= extra
    results["steps"] = steps
    logger.close()
    return results


def save_final(model, tokenizer, run_dir: Path, results: dict[str, Any]) -> Path:
    """The trained model as a HF directory (run_dir/final) and the results next to it."""
    final = run_dir / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    results["final_model"] = str(final)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return final


def task_evaluator(config: Config, registry) -> Callable[[Any, Any], dict[str, float]]:
    """A function (model, tokenizer) -> the [task]'s held-out metrics under [eval] and the reward mix, each
    prefixed `task/` (for `sft.eval_task` and `dpo.eval_task`)."""
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.stages.evaluate import evaluate

    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)

    def run(model, tokenizer) -> dict[str, float]:
        report = evaluate(model, tokenizer, task, mix, config.eval, seed=config.seed)
        return {f"task/{k}": v for k, v in report.summary().items()}
    return run
