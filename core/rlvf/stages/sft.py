"""`rlvf sft`: supervised fine-tuning on demonstrations, with the loss on completion tokens only.

Demonstrations come from a `datasets` source with `prompt` / `completion` columns (text, or chat messages) or
a chat `messages` column (the last assistant turn is the completion, the turns before it the prompt), or from
the [task]'s rows with `sft.completion_template` filled from their columns (e.g. the gold answer).

Loss: the mean negative log-likelihood of the completion tokens, -1/N sum_t log p(y_t | x, y_<t), over the N
completion tokens of an optimiser step. With `packing`, the examples of a micro-batch share rows (each row
holds several examples back to back); position ids restart at every example, from which transformers builds
a block-diagonal causal mask, so no example attends to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rlvf.api.tasks import DatasetTask, fill_template, task_from_config
from rlvf.api.text import completion_text
from rlvf.config import Config
from rlvf.errors import ConfigError
from rlvf.models.loading import load_policy
from rlvf.models.lora import apply_lora
from rlvf.stages import supervised


@dataclass
class SFTExample:
    prompt_ids: list[int]
    completion_ids: list[int]


def normalize_demonstration(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A demonstration as {prompt, completion}: from prompt/completion columns or a chat `messages` column."""
    if "completion" in row and row["completion"] is not None:
        return {"prompt": row.get("prompt") or "", "completion": completion_text(row["completion"])}
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        if messages[-1].get("role") != "assistant":
            raise ConfigError(f"{where}: the last message must be the assistant's (it is the completion)")
        return {"prompt": messages[:-1], "completion": completion_text(messages[-1:])}
    raise ConfigError(f"{where}: row has neither 'completion' nor 'messages' (it has {', '.join(sorted(row))}); "
                      "map the columns with sft.columns")


def demonstrations(config: Config, registry, split: str) -> list[dict[str, Any]]:
    """The `train` or `eval` demonstrations of [sft] (a datasets source, or the task's rows + template)."""
    s = config.sft
    if s.dataset:
        source = DatasetTask("sft.dataset", s.dataset, dataset_config=s.dataset_config, data_files=s.data_files,
                             train_split=s.train_split, eval_split=s.eval_split, eval_fraction=s.eval_fraction,
                             columns=s.columns, seed=config.seed)
        return [normalize_demonstration(row, f"{s.dataset} ({split}) row {i}")
                for i, row in enumerate(source.load(split))]
    if not s.completion_template:
        raise ConfigError("[sft] needs demonstrations: set sft.dataset (prompt/completion or messages columns), "
                          "or sft.completion_template to write completions from the [task]'s rows")
    task = task_from_config(config.task, registry)
    return [{"prompt": row["prompt"], "completion": fill_template(s.completion_template, row)}
            for row in task.rows(split)]


def encode_demonstrations(tokenizer, rows: list[dict[str, Any]], max_length: int) -> list[SFTExample]:
    examples = []
    for row in rows:
        prompt_ids, completion_ids = supervised.fit_length(
            supervised.encode_prompt(tokenizer, row["prompt"]),
            supervised.encode_completion(tokenizer, row["completion"]), max_length)
        examples.append(SFTExample(prompt_ids, completion_ids))
    return examples


def _rows(examples: list[SFTExample], packing: bool, max_length: int) -> list[list[SFTExample]]:
    """Which examples share a row: one each, or packed first-fit into rows of at most max_length tokens."""
    if not packing:
        return [[e] for e in examples]
    rows: list[list[SFTExample]] = []
    lengths: list[int] = []
    for example in examples:
        size = len(example.prompt_ids) + len(example.completion_ids)
        for i, used in enumerate(lengths):
            if used + size <= max_length:
                rows[i].append(example)
                lengths[i] += size
                break
        else:
            rows.append([example])
            lengths.append(size)
    return rows


def completion_nll(model, examples: list[SFTExample], pad_id: int, packing: bool = False,
                   max_length: int = 1024) -> tuple[torch.Tensor, int]:
    """(Summed negative log-likelihood of the examples' completion tokens, number of those tokens). The LM
    head only runs on the hidden states that predict completion tokens."""
    device = next(model.parameters()).device
    ids, labels, positions = [], [], []
    for row in _rows(examples, packing, max_length):
        row_ids, row_labels, row_positions = [], [], []
        for e in row:
            sequence = e.prompt_ids + e.completion_ids
            row_ids += sequence
            # The first token of an example is never a target: nothing of this example precedes it.
            row_labels += [-100] * max(len(e.prompt_ids), 1) + e.completion_ids[max(1 - len(e.prompt_ids), 0):]
            row_positions += list(range(len(sequence)))
        ids.append(row_ids)
        labels.append(row_labels)
        positions.append(row_positions)
    width = max(map(len, ids))
    input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in ids], device=device)
    label_ids = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=device)
    if packing:
        # Padding continues the positions of its row's last example: it may attend to that example but no real
        # token attends to it (causality), and it is never a target.
        position_ids = torch.tensor([r + list(range(r[-1] + 1, r[-1] + 1 + width - len(r))) for r in positions],
                                    device=device)
        # No cache: with one, transformers would not look for packed sequences in the position ids.
        hidden = model.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    else:
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], device=device)
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
    targets = label_ids[:, 1:]
    predicting = targets != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][predicting]).float()
    nll = F.cross_entropy(logits, targets[predicting], reduction="sum")
    return nll, int(predicting.sum())


def run_sft(config: Config, registry, *, resume: bool = False, force_resume: bool = False) -> dict[str, Any]:
    s = config.sft
    supervised.check_batching(s, "sft")
    task_eval = supervised.task_evaluator(config, registry) if s.eval_task else None
    train_rows, eval_rows = demonstrations(config, registry, "train"), demonstrations(config, registry, "eval")
    if not train_rows:
        raise ConfigError("[sft]: no training demonstrations")
    run_dir = supervised.prepare_output_dir(s.output_dir, "sft.output_dir", config, resume=resume,
                                            force_resume=force_resume)
    torch.manual_seed(config.seed)
    policy = load_policy(config.model)
    model, tokenizer = apply_lora(policy.model, config.model.lora), policy.tokenizer  # [model] lora: adapters train
    train = encode_demonstrations(tokenizer, train_rows, s.max_length)
    held_out = encode_demonstrations(tokenizer, eval_rows[: s.eval_limit], s.max_length)
    pad = tokenizer.pad_token_id

    def loss_fn(examples):
        nll, tokens = completion_nll(model, examples, pad, s.packing, s.max_length)
        return nll, {"completion_tokens": tokens}

    def evaluate():
        metrics = {}
        if held_out:
            total, tokens = 0.0, 0
            for start in range(0, len(held_out), s.micro_batch_size):
                nll, n = completion_nll(model, held_out[start: start + s.micro_batch_size], pad)
                total, tokens = total + float(nll), tokens + n
            metrics["loss"] = total / max(tokens, 1)
        if task_eval is not None:
            metrics |= task_eval(model, tokenizer)
        return metrics

    results = supervised.train_loop(model, train, loss_fn, evaluate, s, run_dir, config.seed,
                         weight=lambda e: len(e.completion_ids), desc="sft", logged_config=config.model_dump(),
                         resume=resume)
    results["train_examples"], results["eval_examples"] = len(train), len(held_out)
    supervised.save_final(model, tokenizer, run_dir, results)
    return results

