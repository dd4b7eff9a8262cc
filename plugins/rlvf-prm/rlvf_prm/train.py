"""`rlvf train-prm`: a process reward model on step-labelled rows, from `prm.dataset` or made from the [task] by
Monte-Carlo labelling (rlvf_prm.labelling); the model and how it reads steps are rlvf_prm.model's. Held-out
step-level AUC and first-error-step accuracy before and after (rlvf_prm.steps.step_metrics)."""

from __future__ import annotations

import json
from typing import Any

import torch

from rlvf.api import (
    ConfigError,
    apply_lora,
    check_batching,
    load_rows_by_prompt,
    prepare_output_dir,
    resolve_model,
    save_final,
    split_by_prompt,
    train_loop,
)
from rlvf_prm.config import PRMStageConfig
from rlvf_prm.labelling import generate_step_rows, read_rows, write_rows
from rlvf_prm.model import encode_steps, load_prm, score_heads, step_logits, step_loss, step_probabilities
from rlvf_prm.steps import normalize_step_row, step_metrics

ROWS_FILE = "rows.jsonl"  # the generated rows, in the run directory (reused by --resume)
STATS_FILE = "rows_stats.json"  # what generating them counted


def load_step_rows(config, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """The `train` or `eval` rows of `prm.dataset` (held out by prompt without a named eval split)."""
    return load_rows_by_prompt(config, split, seed, normalize_step_row, "prm.dataset")


def run_train_prm(config: PRMStageConfig, registry=None, *, resume: bool = False, force_resume: bool = False
                  ) -> dict[str, Any]:
    """Train a PRM from [model] on `prm.dataset` rows (or rows labelled on the [task]); report held-out step AUC,
    first-error-step accuracy, step accuracy and loss before and after; save it as a HF directory in
    `prm.output_dir`/final."""
    p = config.prm
    check_batching(p, "prm")
    run_dir = prepare_output_dir(p.output_dir, "prm.output_dir", config, resume=resume, force_resume=force_resume)
    generated: dict[str, Any] = {}
    if p.dataset:
        train_rows = load_step_rows(p, "train", seed=config.seed)
        eval_rows = load_step_rows(p, "eval", seed=config.seed)
    else:
        if registry is None:
            raise ConfigError("prm.dataset is not set and no plugin registry to label rows on the [task]")
        saved, stats = run_dir / ROWS_FILE, run_dir / STATS_FILE
        if resume and saved.is_file() and stats.is_file():  # labelling samples a lot: resumed, reuse its rows
            rows, generated = read_rows(saved), json.loads(stats.read_text())
        else:
            rows, generated = generate_step_rows(config, registry)
            write_rows(saved, rows)
            stats.write_text(json.dumps(generated, indent=2))  # after the rows: its presence means they are whole
        rows = [normalize_step_row(row, f"{saved} row {index}") for index, row in enumerate(rows)]
        train_rows = split_by_prompt(rows, "train", p.eval_fraction, config.seed)
        eval_rows = split_by_prompt(rows, "eval", p.eval_fraction, config.seed)
        if p.limit is not None:
            train_rows = train_rows[: p.limit]
    eval_rows = eval_rows[: p.eval_limit] if p.eval_limit is not None else eval_rows
    if not train_rows:
        raise ConfigError("train-prm: no training rows" + (f" (generated: {generated})" if generated else ""))

    torch.manual_seed(config.seed)  # the fresh score head
    model, tokenizer = load_prm(resolve_model(config.model.name), config.model.dtype, from_causal_lm=True)
    # [model] lora: adapters on the body; the fresh score head trains fully (peft's modules_to_save)
    apply_lora(model, config.model.lora, modules_to_save=score_heads(model))
    pad = tokenizer.pad_token_id

    def encode(rows):
        out = []
        for row in rows:
            ids, positions = encode_steps(tokenizer, row["prompt"], row["steps"], p.separator, p.max_length)
            if positions:  # a row whose first step does not fit in max_length has nothing to train
                out.append({"ids": ids, "positions": positions, "labels": row["labels"][: len(positions)]})
        return out

    train, held_out = encode(train_rows), encode(eval_rows)
    if not train:
        raise ConfigError(f"train-prm: no training row has a step within prm.max_length = {p.max_length} tokens")

    def loss_fn(examples):
        logits = step_logits(model, [e["ids"] for e in examples], [e["positions"] for e in examples], pad)
        labels = [e["labels"] for e in examples]
        loss = step_loss(logits, labels)
        flat = torch.cat([values.detach() for values in logits])
        targets = torch.tensor([y for row in labels for y in row], device=flat.device)
        return loss, {"step_accuracy": float(((flat > 0) == (targets >= 0.5)).float().sum())}

    def evaluate():
        if not held_out:
            return {}
        probabilities = step_probabilities(model, [e["ids"] for e in held_out], [e["positions"] for e in held_out],
                                           pad, batch_size=p.micro_batch_size)
        return step_metrics(probabilities, [e["labels"] for e in held_out])

    results = train_loop(model, train, loss_fn, evaluate, p, run_dir, config.seed, desc="train-prm",
                         weight=lambda e: float(len(e["positions"])), logged_config=config.model_dump(),
                         resume=resume)
    count = lambda rows, wanted: sum(int((y >= 0.5) == wanted) for e in rows for y in e["labels"])  # noqa: E731
    results |= {"train_rows": len(train), "eval_rows": len(held_out),
                "train_steps": sum(len(e["labels"]) for e in train), "eval_steps": sum(len(e["labels"])
                                                                                    for e in held_out),
                "train_wrong_steps": count(train, False), "eval_wrong_steps": count(held_out, False),
                "generated": generated}
    save_final(model, tokenizer, run_dir, results)
    return results
