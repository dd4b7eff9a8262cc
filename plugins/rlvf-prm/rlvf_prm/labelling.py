"""Step labels without a labeller (Monte Carlo, as in Math-Shepherd): sample completions on a verifiable task,
split them into steps, and label step k by whether continuations sampled from the prompt and the completion up to
the end of step k reach an answer the accuracy reward verifies:

    hard label = 1 if any of the N continuations is verified correct, else 0
    soft label = the fraction of the N that are

A completion's last step, when the completion ended there (it was not cut at max_new_tokens), needs no
continuation: its label is the completion's own verdict."""

from __future__ import annotations

import json
from typing import Any

from rlvf.api import (
    CORRECT,
    ConfigError,
    ModelConfig,
    RewardMix,
    SamplingParams,
    build_sampler,
    encode_prompts,
    load_policy,
    mix_from_config,
    task_from_config,
)
from rlvf_prm.steps import split_steps, step_spans


def _verdicts(accuracy_mix: RewardMix, name: str, rows: list[dict[str, Any]], texts: list[str]) -> list[float | None]:
    """The accuracy reward's score of each text, each scored with its task row's columns."""
    keys = sorted({key for row in rows for key in row} - {"prompt"})
    columns = {key: [row.get(key) for row in rows] for key in keys}
    return accuracy_mix.score([row["prompt"] for row in rows], texts, **columns).per_reward[name]


def generate_step_rows(config, registry) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step-labelled rows from the [task] (`prm.rows`; see the module's docstring), and statistics of them: each
    row has the task row's columns, `prompt`, `completion`, `steps`, `labels`, `correct` (the completion's
    verdict), `continuations_correct` (per step: how many of the N were verified, None for a step labelled by
    the completion's verdict) and `verified_by`."""
    prm, rows_config = config.prm, config.prm.rows
    for key in ("n", "continuations", "batch_size", "max_new_tokens"):
        if getattr(rows_config, key) < 1:
            raise ConfigError(f"prm.rows.{key} must be at least 1, got {getattr(rows_config, key)}")
    if rows_config.max_steps is not None and rows_config.max_steps < 1:
        raise ConfigError(f"prm.rows.max_steps must be at least 1 (or unset: every step), got {rows_config.max_steps}")
    if rows_config.n > 1 and rows_config.temperature <= 0:
        raise ConfigError(f"prm.rows.n = {rows_config.n} completions per prompt need prm.rows.temperature > 0")
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    accuracy = rows_config.accuracy_reward or mix.names[0]
    if accuracy not in mix.names:
        raise ConfigError(f"prm.rows.accuracy_reward '{accuracy}' is not in the reward mix ({', '.join(mix.names)})")
    accuracy_mix = RewardMix([entry for entry in mix.entries if entry.name == accuracy])
    task_rows = task.rows(rows_config.split, limit=rows_config.limit)
    if not task_rows:
        raise ConfigError(f"{task.where()} has no rows in split '{rows_config.split}' to label steps on")

    policy = load_policy(ModelConfig(name=rows_config.model or config.model.name, dtype=config.model.dtype))
    tokenizer = policy.tokenizer
    sampler = build_sampler(registry, config.sampling, policy.model, tokenizer, path=policy.path, seed=config.seed,
                            batch_size=rows_config.batch_size)
    prompt_ids = encode_prompts(tokenizer, [row["prompt"] for row in task_rows])
    samples = sampler.sample(prompt_ids, SamplingParams(temperature=rows_config.temperature, top_p=rows_config.top_p,
                                                        max_new_tokens=rows_config.max_new_tokens, n=rows_config.n),
                             seed=config.seed)
    sampled_rows = [task_rows[samples.prompt_index(i)] for i in range(len(samples.texts))]
    verdicts = _verdicts(accuracy_mix, accuracy, sampled_rows, samples.texts)

    # The completions kept: not empty, judged by the accuracy reward, each (prompt, completion) once.
    kept, seen = [], set()
    for i, text in enumerate(samples.texts):
        key = (samples.prompt_index(i), text)
        spans = step_spans(text, prm.separator)
        if verdicts[i] is None or not spans or key in seen:
            continue
        seen.add(key)
        kept.append((i, spans[: rows_config.max_steps] if rows_config.max_steps else spans, len(spans)))

    # Every step that needs continuations: a prefix of its completion, up to the step's separator.
    prefixes, owners = [], []  # owners[j] = (kept index, step index)
    for index, (i, spans, total) in enumerate(kept):
        text = samples.texts[i]
        for k, (_, end) in enumerate(spans):
            if k == total - 1 and not samples.truncated[i]:
                continue  # the completion ended after this step: its verdict labels it
            prefix = text[: end + len(prm.separator)] if text.startswith(prm.separator, end) else text[:end]
            prefixes.append((i, prefix))
            owners.append((index, k))
    continuation_tokens = rows_config.continuation_max_new_tokens or rows_config.max_new_tokens
    counts: dict[tuple[int, int], int] = {}
    if prefixes:
        continued = sampler.sample(
            [prompt_ids[samples.prompt_index(i)] + tokenizer(prefix, add_special_tokens=False)["input_ids"]
             for i, prefix in prefixes],
            SamplingParams(temperature=rows_config.temperature, top_p=rows_config.top_p,
                           max_new_tokens=continuation_tokens, n=rows_config.continuations), seed=config.seed + 1)
        full_texts = [prefixes[continued.prompt_index(j)][1] + continuation
                      for j, continuation in enumerate(continued.texts)]
        rows_of = [sampled_rows[prefixes[continued.prompt_index(j)][0]] for j in range(len(full_texts))]
        continuation_verdicts = _verdicts(accuracy_mix, accuracy, rows_of, full_texts)
        for j, value in enumerate(continuation_verdicts):
            owner = owners[continued.prompt_index(j)]
            counts[owner] = counts.get(owner, 0) + int((value or 0.0) >= CORRECT)

    n, continued_steps = rows_config.continuations, set(owners)
    rows = []
    for index, (i, spans, _) in enumerate(kept):
        text, correct = samples.texts[i], float(verdicts[i] >= CORRECT)
        steps = split_steps(text, prm.separator)[: len(spans)]
        labels, continuations_correct = [], []
        for k in range(len(spans)):
            if (index, k) in continued_steps:
                hits = counts.get((index, k), 0)
                labels.append(float(hits > 0) if rows_config.label == "hard" else hits / n)
                continuations_correct.append(hits)
            else:
                labels.append(correct)
                continuations_correct.append(None)
        task_columns = {key: value for key, value in sampled_rows[i].items() if key not in ("completion", "steps",
                                                                                            "labels")}
        rows.append({**task_columns, "completion": text, "steps": steps, "labels": labels, "correct": correct,
                     "truncated": samples.truncated[i], "continuations_correct": continuations_correct,
                     "continuations": n, "label_kind": rows_config.label, "verified_by": accuracy})
    all_labels = [y for row in rows for y in row["labels"]]
    stats = {"prompts": len(task_rows), "samples": len(samples.texts),
             "sample_accuracy": sum((v or 0.0) >= CORRECT for v in verdicts) / len(verdicts),
             "rows": len(rows), "steps": len(all_labels), "continuations_sampled": len(prefixes) * n,
             "steps_labelled_correct": sum(y >= 0.5 for y in all_labels),
             "rows_with_a_wrong_step": sum(any(y < 0.5 for y in row["labels"]) for row in rows)}
    return rows, stats


def write_rows(path, rows: list[dict[str, Any]]) -> None:
    """The rows as JSONL, written to a temporary file first: a run killed while writing leaves no partial file."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    partial.replace(path)


def read_rows(path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
