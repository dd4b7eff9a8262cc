"""Preference pairs (x, y+, y-) for reward-model training and DPO.

Two sources:
- any `datasets` source with `prompt` / `chosen` / `rejected` columns (renamed with `preference.columns`),
  in text form or in chat form: `chosen` and `rejected` as message lists, with the prompt either its own
  column or the messages the two conversations share before their last (assistant) turn;
- `generate_pairs`: sample a policy on a verifiable task and pair a verified-correct completion (chosen)
  with an incorrect one (rejected) of the same prompt, and optionally with itself with only its final answer
  changed (`hard_negatives`); `rlvf pairs` writes them as JSONL.

Every pair comes out as a dict with `prompt` (text or messages), `chosen` and `rejected` (completion texts),
plus the source row's other columns.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

from rlvf.api.rewards import RewardMix, check_task_columns
from rlvf.api.tasks import DatasetTask, Task, split_held_out
from rlvf.api.text import completion_text, with_final_answer_changed, with_sign_dropped
from rlvf.config import DatasetSource, PairsConfig, PreferenceConfig
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts
from rlvf.sampling import Sampler, SamplingParams, model_sampler
from rlvf.stages.evaluate import CORRECT, score_samples

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _clean_messages(messages: list[dict]) -> list[dict]:
    """Messages as plain {role, content} dicts (an Arrow round trip adds None for keys other rows have)."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def normalize_pair(row: dict[str, Any], where: str) -> dict[str, Any]:
    """One pair in rlvf's form (see the module docstring); `where` names the row in error messages."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    missing = [key for key, value in (("chosen", chosen), ("rejected", rejected)) if value is None]
    if missing:
        raise ConfigError(f"{where}: row has no {' or '.join(map(repr, missing))} (it has "
                          f"{', '.join(sorted(row)) or 'nothing'}); map the columns with preference.columns")
    if prompt is None:
        if not (_is_messages(chosen) and _is_messages(rejected)):
            raise ConfigError(f"{where}: row has no 'prompt'; without one, 'chosen' and 'rejected' must be chat "
                              "conversations that share their turns before the last")
        if chosen[:-1] != rejected[:-1] or not chosen[:-1]:
            raise ConfigError(f"{where}: 'chosen' and 'rejected' must share every turn but their last (the prompt)")
        prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
    if _is_messages(prompt):
        prompt = _clean_messages(prompt)
    elif not isinstance(prompt, str):
        raise ConfigError(f"{where}: 'prompt' must be text or chat messages, got {type(prompt).__name__}")
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list, dict)):
            raise ConfigError(f"{where}: '{key}' must be text or chat messages, got {type(value).__name__}")
    return {**row, "prompt": prompt, "chosen": completion_text(chosen), "rejected": completion_text(rejected)}


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def split_by_prompt(pairs: list[dict[str, Any]], split: str, eval_fraction: float, seed: int) -> list[dict[str, Any]]:
    """A seeded train/eval partition of the prompts: all pairs of one prompt land on the same side, so held-out
    pairs never share a prompt with training pairs."""
    keys = list(dict.fromkeys(prompt_key(p["prompt"]) for p in pairs))
    chosen = {row["key"] for row in split_held_out([{"key": k} for k in keys], split, eval_fraction, seed)}
    return [p for p in pairs if prompt_key(p["prompt"]) in chosen]


def load_rows_by_prompt(config: DatasetSource, split: str, seed: int, normalize, what: str) -> list[dict[str, Any]]:
    """The `train` or `eval` rows of a [DatasetSource], each passed through `normalize(row, where)`; without a
    named eval split, held-out rows are those of a held-out fraction of the prompts (split_by_prompt)."""
    source = DatasetTask(what, config.dataset, dataset_config=config.dataset_config,
                         data_files=config.data_files, columns=config.columns)
    split_name = config.eval_split if split == "eval" and config.eval_split else config.train_split
    rows = [normalize(row, f"{config.dataset} ({split_name} split) row {index}")
            for index, row in enumerate(source._load_split(split_name))]
    if not config.eval_split:
        rows = split_by_prompt(rows, split, config.eval_fraction, seed)
    if split == "train" and config.limit is not None:
        rows = rows[: config.limit]
    return rows


def load_pairs(config: PreferenceConfig, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """The `train` or `eval` pairs of the [preference] source."""
    if not config.dataset:
        raise ConfigError("preference.dataset is not set: point it at prompt/chosen/rejected data (a hub id, a "
                          "directory or a .jsonl/.json/.parquet/.csv file), or make pairs from a task with "
                          "`rlvf pairs CONFIG --output pairs.jsonl`")
    return load_rows_by_prompt(config, split, seed, normalize_pair, "preference.dataset")


def pair_metrics(chosen, rejected) -> dict[str, float]:
    """Summed statistics of pairs from the scores [N] (tensors) of their chosen and rejected completions: accuracy
    (chosen scored higher; a tie counts half), margin, both means (for `rlvf train-rm` and `rlvf dpo`)."""
    return {"accuracy": float((chosen > rejected).float().sum() + 0.5 * (chosen == rejected).float().sum()),
            "margin": float((chosen - rejected).sum()), "chosen": float(chosen.sum()),
            "rejected": float(rejected.sum())}


def generate_pairs(model, tokenizer, task: Task, mix: RewardMix, config: PairsConfig,
                   accuracy_reward: str | None = None, seed: int = 0,
                   sampler: Sampler | None = None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample `config.n` completions per prompt of the task's split (with `sampler`, default the HF one), score
    them with the mix, and pair distinct correct completions (accuracy reward >= 1) with distinct incorrect ones
    of the same prompt, up to `pairs_per_prompt` per prompt. Returns the pairs and counts."""
    accuracy_reward = accuracy_reward or mix.names[0]
    if accuracy_reward not in mix.names:
        raise ConfigError(f"eval.accuracy_reward '{accuracy_reward}' is not in the reward mix ({', '.join(mix.names)})")
    if config.n < 2 or config.temperature <= 0:
        raise ConfigError("pairs.n must be >= 2 and pairs.temperature > 0: pairs need different samples of a prompt")
    if task.environment is not None:
        raise ConfigError(f"task.environment = '{task.environment.name}': preference pairs are made from single "
                          "completions; remove task.environment for `rlvf pairs`")
    rows = task.rows(config.split, limit=config.limit)
    if not rows:
        raise ConfigError(f"task '{task.name}' has no rows in split '{config.split}'")
    check_task_columns(mix, task, rows=rows)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                            n=config.n)
    sampler = sampler or model_sampler(model, tokenizer, batch_size=config.batch_size)
    samples = sampler.sample(encode_prompts(tokenizer, [r["prompt"] for r in rows]), params, seed=seed)
    _, result = score_samples(mix, rows, samples)
    accuracy, total = result.per_reward[accuracy_reward], result.total
    rng = random.Random(seed)
    buckets = []  # per row: its distinct correct and incorrect samples, each with its mixed reward
    for index in range(len(rows)):
        correct: dict[str, float | None] = {}
        wrong: dict[str, float | None] = {}
        for i in range(index * config.n, (index + 1) * config.n):
            if accuracy[i] is None or not samples.texts[i].strip():
                continue
            bucket = correct if accuracy[i] >= CORRECT else wrong
            bucket.setdefault(samples.texts[i], total[i])
        buckets.append((correct, wrong))
    hard: list[list[str]] = []
    if config.hard_negatives:
        items = [(row["prompt"], chosen, row) for row, (correct, _) in zip(rows, buckets, strict=True)
                 for chosen in correct]
        hard = verified_hard_negatives(mix, accuracy_reward, items, config.hard_negatives, rng,
                                       sign_dropped=config.sign_dropped)
    hard_by_sample = iter(hard)
    pairs: list[dict[str, Any]] = []
    mixed_prompts = hard_negatives = 0
    for row, (correct, wrong) in zip(rows, buckets, strict=True):
        for chosen in correct if config.hard_negatives else ():
            for rejected in next(hard_by_sample):
                if rejected not in correct:
                    pairs.append({**row, "chosen": chosen, "rejected": rejected, "chosen_reward": correct[chosen],
                                  "rejected_reward": None, "hard_negative": True})
                    hard_negatives += 1
        if not correct or not wrong:
            continue
        mixed_prompts += 1
        combinations = list(itertools.product(correct, wrong))
        rng.shuffle(combinations)
        for chosen, rejected in _spread(combinations, config.pairs_per_prompt):
            pairs.append({**row, "chosen": chosen, "rejected": rejected,
                          "chosen_reward": correct[chosen], "rejected_reward": wrong[rejected],
                          "hard_negative": False})
    scored = [v for v in accuracy if v is not None]
    stats = {"prompts": len(rows), "samples": len(samples.texts),
             "sample_accuracy": sum(v >= CORRECT for v in scored) / max(len(scored), 1),
             "prompts_with_a_pair": mixed_prompts, "hard_negative_pairs": hard_negatives, "pairs": len(pairs)}
    return pairs, stats


def verified_hard_negatives(mix: RewardMix, accuracy_reward: str, items: list[tuple[Any, str, dict[str, Any]]],
                            per_item: int, rng: random.Random, *, sign_dropped: bool = False) -> list[list[str]]:
    """Hard negatives of verified-correct completions, for `rlvf pairs` and `rlvf train-judge` alike: for each
    (prompt, completion, row) of `items`, up to `per_item` distinct copies of the completion with only its final
    answer changed (with_final_answer_changed on the row's `answer`), kept only if the accuracy reward rejects
    them (a changed copy can still be right: the answer written a second way, `56.0`). With `sign_dropped`, a
    negative answer's copy without its minus sign too (with_sign_dropped). One list per item, in order; [] for a
    row without an `answer`."""
    candidates: list[tuple[int, Any, str, dict[str, Any]]] = []  # (item index, prompt, changed completion, row)
    for index, (prompt, completion, row) in enumerate(items):
        if row.get("answer") is None:
            continue
        changed = {with_final_answer_changed(completion, str(row["answer"]), rng) for _ in range(per_item)}
        if sign_dropped:
            changed.add(with_sign_dropped(completion, str(row["answer"])))
        candidates += [(index, prompt, text, row) for text in sorted(changed - {None, completion})]
    out: list[list[str]] = [[] for _ in items]
    if not candidates:
        return out
    keys = sorted({key for *_, row in candidates for key in row} - {"prompt"})
    verdicts = mix.score([prompt for _, prompt, _, _ in candidates], [text for _, _, text, _ in candidates],
                         **{key: [row.get(key) for *_, row in candidates] for key in keys}).per_reward[accuracy_reward]
    for (index, _, text, _), verdict in zip(candidates, verdicts, strict=True):
        if verdict is not None and verdict < CORRECT:
            out[index].append(text)
    return out


def _spread(combinations: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """Up to k (chosen, rejected) combinations, preferring ones that reuse neither side."""
    picked, used = [], set()
    for chosen, rejected in combinations:
        if ("c", chosen) not in used and ("r", rejected) not in used:
            picked.append((chosen, rejected))
            used |= {("c", chosen), ("r", rejected)}
    rest = [c for c in combinations if c not in picked]
    return (picked + rest)[:k]
