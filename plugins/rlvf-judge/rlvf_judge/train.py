"""`rlvf train-judge`: train [model] to answer yes to label-1 rows and no to label-0 rows, on `judge.dataset`
or on rows sampled from the [task] and verified with its reward mix; the loss and the score it trains are
rlvf_judge.judging's."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import torch

from rlvf.api import (
    CORRECT,
    ConfigError,
    ModelConfig,
    apply_lora,
    build_sampler,
    check_batching,
    completion_text,
    evaluate,
    load_policy,
    load_rows_by_prompt,
    mix_from_config,
    prepare_output_dir,
    save_final,
    split_by_prompt,
    task_from_config,
    train_loop,
    verified_hard_negatives,
)
from rlvf_judge.config import JudgeStageConfig
from rlvf_judge.judging import (
    encode_judge,
    judge_loss,
    judge_probabilities,
    judge_text,
    judge_user_text,
    last_logits,
    roc_auc,
    uses_chat,
    yes_no_ids,
)

# --- rows for training: (prompt, response, label) ---

_TRUE = {"1", "true", "yes", "y", "correct"}
_FALSE = {"0", "false", "no", "n", "incorrect"}


def parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise ConfigError(f"{where}: label {value!r} is not 0/1, true/false or yes/no")


def normalize_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row with `prompt` (text or chat messages), `response` (text) and `label` (0 or 1)."""
    response = row.get("response", row.get("completion"))
    missing = [key for key, value in (("response", response), ("label", row.get("label"))) if value is None]
    if missing:
        raise ConfigError(f"{where}: row has no {' or '.join(map(repr, missing))} (it has "
                          f"{', '.join(sorted(row)) or 'nothing'}); map the columns with judge.columns")
    return {**row, "prompt": row.get("prompt") or "", "response": completion_text(response),
            "label": parse_label(row["label"], where)}


def load_judge_rows(config, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """The `train` or `eval` rows of `judge.dataset` (held out by prompt without a named eval split)."""
    return load_rows_by_prompt(config, split, seed, normalize_row, "judge.dataset")


def generate_judge_rows(config, registry) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Labelled rows from a verifiable task: sample `judge.rows.model` (default: [model]) `judge.rows.n` times
    on each prompt of the [task]'s `judge.rows.split`, verify each sample with the reward mix (the accuracy
    reward, `judge.rows.accuracy_reward`, decides: verified-correct = 1, incorrect = 0). Duplicate responses of
    a prompt are kept once; samples the accuracy reward does not apply to, and empty ones, are left out. Each
    verified-correct row is followed by its `judge.rows.hard_negatives` (hard_negative_rows)."""
    rows_config = config.judge.rows
    if rows_config.hard_negatives < 0:
        raise ConfigError(f"judge.rows.hard_negatives must be >= 0, got {rows_config.hard_negatives}")
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    accuracy = rows_config.accuracy_reward or mix.names[0]
    policy = load_policy(ModelConfig(name=rows_config.model or config.model.name, dtype=config.model.dtype))
    sampler = build_sampler(registry, config.sampling, policy.model, policy.tokenizer, path=policy.path,
                            seed=config.seed, batch_size=rows_config.batch_size)
    report = evaluate(policy.model, policy.tokenizer, task, mix, rows_config, seed=config.seed, sampler=sampler)
    rows, seen = [], set()
    for scored in report.rows:
        value, response = scored.get(accuracy), scored["completion"]
        key = (json.dumps(scored["prompt"], sort_keys=True, ensure_ascii=False), response)
        if value is None or not response.strip() or key in seen:
            continue
        seen.add(key)
        kept = {k: v for k, v in scored.items() if k not in ("completion", "correct", "reward", *mix.names)}
        rows.append({**kept, "response": response, "label": int(value >= CORRECT),
                     "verified_by": accuracy})
    positives = sum(r["label"] for r in rows)
    stats = {"prompts": report.prompts, "samples": report.samples, "sample_accuracy": report.accuracy,
             "rows": len(rows), "correct_rows": positives, "incorrect_rows": len(rows) - positives}
    if rows_config.hard_negatives:
        rows, stats["hard_negative_rows"] = hard_negative_rows(rows, rows_config.hard_negatives, mix, accuracy,
                                                               random.Random(config.seed))
        stats["rows"] = len(rows)
    return rows, stats


def hard_negative_rows(rows: list[dict[str, Any]], per_row: int, mix, accuracy: str, rng: random.Random
                       ) -> tuple[list[dict[str, Any]], int]:
    """`rows` with, after each label-1 row, up to `per_row` label-0 rows whose response is its response with only
    the final answer changed and rejected by the accuracy reward (rlvf.api.verified_hard_negatives, as `rlvf
    pairs` makes them); a changed response that repeats a row of its prompt is left out. Returns (rows, hard
    negatives added)."""
    if any(r["label"] for r in rows) and not any("answer" in r for r in rows):
        raise ConfigError("judge.rows.hard_negatives needs an `answer` column in the [task]'s rows (to change the "
                          "final answer of a correct response); this task has none: set it to 0")
    own = {"prompt", "response", "label", "verified_by", "hard_negative"}  # train-judge's fields, not task columns
    correct = [index for index, row in enumerate(rows) if row["label"]]
    changed = verified_hard_negatives(mix, accuracy, [(rows[i]["prompt"], rows[i]["response"],
                                                       {k: v for k, v in rows[i].items() if k not in own})
                                                      for i in correct], per_row, rng)
    seen = {(json.dumps(r["prompt"], sort_keys=True, ensure_ascii=False), r["response"]) for r in rows}
    after: dict[int, list[dict[str, Any]]] = {}
    for index, responses in zip(correct, changed, strict=True):
        row = rows[index]
        for response in responses:
            key = (json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False), response)
            if key not in seen:  # a changed response that repeats a row of its prompt is not a new row
                seen.add(key)
                after.setdefault(index, []).append({**row, "response": response, "label": 0, "verified_by": accuracy,
                                                    "hard_negative": True})
    combined = [out for index, row in enumerate(rows) for out in (row, *after.get(index, []))]
    return combined, sum(map(len, after.values()))


# --- rlvf train-judge ---

def run_train_judge(config: JudgeStageConfig, registry=None, *, resume: bool = False, force_resume: bool = False
                    ) -> dict[str, Any]:
    """Train [model] as a judge on `judge.dataset` rows (or rows generated from the [task]); report held-out
    AUC, accuracy and loss before and after; save the judge as a HF directory in `judge.output_dir`/final."""
    j = config.judge
    check_batching(j, "judge")
    run_dir = prepare_output_dir(j.output_dir, "judge.output_dir", config, resume=resume,
                                 force_resume=force_resume)
    generated: dict[str, float] = {}
    if j.dataset:
        train_rows = load_judge_rows(j, "train", seed=config.seed)
        eval_rows = load_judge_rows(j, "eval", seed=config.seed)
    else:
        if registry is None:
            raise ConfigError("judge.dataset is not set and no plugin registry to generate rows from the [task]")
        rows_path = run_dir / "rows.jsonl"
        if resume and rows_path.is_file():
            # the rows the interrupted run trained on: sampling again would cost minutes and could differ
            with open(rows_path, encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
            generated = {"rows": len(rows), "correct_rows": sum(r["label"] for r in rows), "rows_reused": 1.0}
        else:
            rows, generated = generate_judge_rows(config, registry)
            partial = rows_path.with_suffix(".jsonl.partial")
            with open(partial, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            partial.replace(rows_path)  # whole or absent: a resume never reads half the rows
        train_rows = split_by_prompt(rows, "train", j.eval_fraction, config.seed)
        eval_rows = split_by_prompt(rows, "eval", j.eval_fraction, config.seed)
        if j.limit is not None:
            train_rows = train_rows[: j.limit]
    eval_rows = eval_rows[: j.eval_limit] if j.eval_limit is not None else eval_rows
    if not train_rows:
        raise ConfigError("train-judge: no training rows" + (f" (generated: {generated})" if generated else ""))

    policy = load_policy(config.model)
    model, tokenizer = apply_lora(policy.model, config.model.lora), policy.tokenizer  # [model] lora: adapters train
    pad = tokenizer.pad_token_id
    chat = uses_chat(tokenizer, j.chat)
    yes_ids, no_ids = yes_no_ids(tokenizer, j.yes, j.no)

    def encode(rows):
        # the user message the `judge` reward builds for the same row, its template chosen the same way
        texts = [judge_text(tokenizer, judge_user_text(j.template, r["prompt"], r["response"], r), j.system_prompt,
                            chat) for r in rows]
        return [{"ids": ids, "label": r["label"]} for ids, r in zip(encode_judge(tokenizer, texts, chat,
                                                                                j.max_length), rows, strict=True)]

    train, held_out = encode(train_rows), encode(eval_rows)

    def loss_fn(examples):
        logits = last_logits(model, [e["ids"] for e in examples], pad)
        labels = torch.tensor([e["label"] for e in examples], device=logits.device)
        losses, s, log_mass = judge_loss(logits, labels, yes_ids, no_ids, j.format_weight)
        s = s.detach()
        return losses.sum(), {"accuracy": float(((s > 0).long() == labels).float().sum()),
                              "yes_no_mass": float(log_mass.detach().exp().sum())}

    def evaluate():
        if not held_out:
            return {}
        labels = [e["label"] for e in held_out]
        p, mass = judge_probabilities(model, [e["ids"] for e in held_out], pad, yes_ids, no_ids,
                                      batch_size=j.micro_batch_size)
        eps = 1e-12
        bce = [-math.log(max(q if y else 1 - q, eps)) for q, y in zip(p, labels, strict=True)]
        metrics = {"loss": sum(b - j.format_weight * math.log(max(m, eps)) for b, m in zip(bce, mass, strict=True))
                   / len(p), "binary_loss": sum(bce) / len(p),
                   "accuracy": sum((q > 0.5) == bool(y) for q, y in zip(p, labels, strict=True)) / len(p),
                   "yes_no_mass": sum(mass) / len(mass)}
        auc = roc_auc(p, labels)
        if auc is not None:
            metrics["auc"] = auc
        for name, wanted in (("p_yes/correct", 1), ("p_yes/incorrect", 0)):
            values = [q for q, y in zip(p, labels, strict=True) if y == wanted]
            if values:
                metrics[name] = sum(values) / len(values)
        return metrics

    results = train_loop(model, train, loss_fn, evaluate, j, run_dir, config.seed, desc="train-judge",
                         logged_config=config.model_dump(), resume=resume)
    results |= {"train_rows": len(train), "eval_rows": len(held_out),
                "train_positive": sum(e["label"] for e in train), "eval_positive": sum(e["label"] for e in held_out),
                "generated": generated}
    save_final(model, tokenizer, run_dir, results)
    return results
