"""What the supervised stages share (`rlvf sft`, `rlvf train-rm`, `rlvf dpo`, `rlvf train-judge`): encoding a
prompt and its completion the way the sampler does, and one optimisation loop with held-out evaluation before
and after, checkpoints every `save_every` optimiser steps and `--resume` (rlvf.engine.checkpoint). A stage trains
LoRA adapters ([model] lora) by putting them on its model (rlvf.models.lora.apply_lora) before the loop: the loop
optimises what requires grad, checkpoints hold the adapters, and the final model is saved merged.

The loop knows nothing of the stage: it gets examples, a `loss_fn(micro_batch) -> (summed loss, summed
stats)` and a `weight(example)` (how many loss terms an example holds: its completion tokens for SFT, 1 for
a pair), and divides by the batch's total weight, so micro-batches add up to the batch's mean.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rlvf.api.text import completion_text
from rlvf.config import Config, FinetuneConfig
from rlvf.engine.checkpoint import check_resume, latest_checkpoint, restore, save_checkpoint, say_resuming
from rlvf.engine.data import indices_at
from rlvf.engine.metrics import MetricsLogger, read_metrics
from rlvf.engine.optim import adamw_with_schedule
from rlvf.engine.rundir import RESULTS_FILE, check_run_dir, write_run_config
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts
from rlvf.models.lora import save_trained

# Keys of a supervised stage's own section that may differ on --resume: how long to train, how often to
# save/evaluate/log, where to report.
RESUMABLE_OWN_KEYS = ("epochs", "max_steps", "save_every", "keep_checkpoints", "eval_every", "report_to", "progress",
                      "output_dir")


def resumable_keys(section: str) -> tuple[str, ...]:
    """What may differ on --resume of the stage of `section`: its own RESUMABLE_OWN_KEYS and [eval] (as `rlvf train`
    allows). Other stages' sections are not in its config (each stage has its own schema), so they never count."""
    return (*(f"{section}.{key}" for key in RESUMABLE_OWN_KEYS), "eval.")


def prepare_output_dir(template: str, key: str, config=None, *, resume: bool = False, force_resume: bool = False,
                       **fields: str) -> Path:
    """The run directory, checked before any model is loaded (rlvf.engine.rundir.check_run_dir, as `rlvf train`
    does): a file, an unwritable path or a directory that already holds files (unless `resume`) is refused in
    one line. On `resume`, the run must have been started with the same `config` (its training keys), or
    `force_resume`."""
    directory = check_run_dir(Path(template.format(**fields)), key, resume=resume, command="--resume")
    if resume and config is not None:
        check_resume(directory, config.model_dump(mode="json"), force_resume, resumable_keys(key.split(".")[0]))
    return directory


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


def total_steps(config: FinetuneConfig, n_examples: int) -> int:
    return config.max_steps if config.max_steps is not None else math.ceil(config.epochs * n_examples /
                                                                           config.batch_size)


def batches(n_examples: int, config: FinetuneConfig, seed: int, start: int = 0):
    """Index lists of the optimiser steps after `start` (rlvf.engine.data: a seeded reshuffle per pass, batches
    running across passes), so a resumed run reads what an uninterrupted one does."""
    steps = total_steps(config, n_examples)
    end = steps * config.batch_size if config.max_steps is not None else config.epochs * n_examples
    for step in range(start, steps):
        yield indices_at(seed, n_examples, step * config.batch_size, min((step + 1) * config.batch_size, end))


def check_batching(config: FinetuneConfig, key: str) -> None:
    if config.batch_size <= 0 or config.micro_batch_size <= 0:
        raise ConfigError(f"{key}.batch_size and {key}.micro_batch_size must be positive")
    if config.max_length < 2:
        raise ConfigError(f"{key}.max_length must be at least 2 tokens")
    if config.save_every < 0 or config.keep_checkpoints < 0:
        raise ConfigError(f"{key}.save_every and {key}.keep_checkpoints must be 0 or more")


def train_loop(model, train: Sequence[Any], loss_fn: Callable, evaluate_fn: Callable[[], dict[str, float]],
               config: FinetuneConfig, run_dir: Path, seed: int, *, weight: Callable[[Any], float] = lambda _: 1.0,
               desc: str = "train", logged_config: dict | None = None,
               finish_fn: Callable[[], dict[str, float]] | None = None, resume: bool = False) -> dict[str, Any]:
    """Optimise `model` on `train`; returns {"before": held-out metrics, "after": ..., "steps": n}.

    `loss_fn(examples)` returns (a scalar tensor: the loss summed over the examples' loss terms, a dict of
    summed statistics); both are divided by the summed `weight` of the optimiser step's examples.
    `finish_fn()`, if given, adds metrics measured once after training (e.g. a sampled KL) to "after".
    A checkpoint is saved every `config.save_every` steps (before the last); `resume` continues from the newest
    one (weights, optimizer, schedule, RNG, step), and a finished run resumed returns its saved results.
    `logged_config` (the run's config) is saved as the run's config.json and sent to W&B."""
    if not train:
        raise ConfigError(f"{desc}: no training examples")
    steps = total_steps(config, len(train))
    results_file = run_dir / RESULTS_FILE
    if resume and results_file.is_file():
        finished = json.loads(results_file.read_text())
        if finished.get("steps", -1) >= steps:
            return finished
    parameters = [p for p in model.parameters() if p.requires_grad]  # with LoRA: the adapters (rlvf.models.lora)
    optimizer, scheduler = adamw_with_schedule(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                               betas=config.adam_betas, total=steps, warmup=config.warmup_steps,
                                               schedule=config.lr_schedule)
    start = 0
    checkpoint = latest_checkpoint(run_dir, "its output_dir") if resume else None
    if checkpoint is not None:
        start = restore(checkpoint, model, optimizer, scheduler)
        say_resuming(run_dir, checkpoint, steps)
    if logged_config is not None:
        write_run_config(run_dir, logged_config)
    logger = MetricsLogger(run_dir, config.report_to, resume_step=start, config=logged_config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    def held_out(step: int) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            metrics = evaluate_fn()
        logger.log(step, {f"eval/{k}": v for k, v in metrics.items()})
        return metrics

    results: dict[str, Any] = {"before": held_out(0) if start == 0 else _logged_before(run_dir)}
    from tqdm.auto import tqdm

    progress = tqdm(total=steps, initial=start, desc=desc, unit="step", disable=not config.progress,
                    dynamic_ncols=True)
    for step, indices in enumerate(batches(len(train), config, seed, start), start=start + 1):
        begin = time.perf_counter()
        model.train()
        examples = [train[i] for i in indices]
        total = sum(weight(e) for e in examples) or 1.0
        sums: dict[str, float] = {}
        loss_value = 0.0
        for first in range(0, len(examples), config.micro_batch_size):
            loss, stats = loss_fn(examples[first: first + config.micro_batch_size])
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
        # Not at the last step: the final model follows, and every record a checkpoint's step keeps in
        # metrics.jsonl was logged before it.
        if config.save_every and step % config.save_every == 0 and step < steps:
            save_checkpoint(run_dir, step, model, optimizer_state=optimizer.state_dict(),
                            scheduler_state=scheduler.state_dict(), data_position=step * config.batch_size,
                            keep=config.keep_checkpoints)
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


def _logged_before(run_dir: Path) -> dict[str, float]:
    """The held-out metrics before training of a resumed run, as it logged them at step 0."""
    logged = [r for r in read_metrics(run_dir) if r["step"] == 0 and any(k.startswith("eval/") for k in r)]
    if not logged:
        print(f"{run_dir / 'metrics.jsonl'} has no evaluation at step 0: the results have no 'before'",
              file=sys.stderr, flush=True)
        return {}
    return {k.removeprefix("eval/"): v for k, v in logged[0].items() if k != "step"}


def save_final(model, tokenizer, run_dir: Path, results: dict[str, Any]) -> Path:
    """The trained model as a HF directory (run_dir/final; with LoRA the merged model, its adapters in
    final/adapter/: rlvf.models.lora.save_trained) and the results next to it; the results of a finished run
    (resumed: they name its final model) are saved already."""
    if "final_model" in results:
        return Path(results["final_model"])
    final = run_dir / "final"
    save_trained(model, tokenizer, final)
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
