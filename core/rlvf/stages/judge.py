"""LLM-as-judge: the probability a causal LM answers "yes" when asked whether a response is good, and
`rlvf train-judge`, which trains a judge to say yes to good responses and no to bad ones.

The judge reads one user message built from a template (`{prompt}`, `{completion}` and any column of the row,
e.g. `{answer}`), through the tokenizer's chat template with the assistant turn opened, or as plain text
followed by `PLAIN_SUFFIX` for a model without one. Its score is read from the logits of the next token:

    p = p(yes) / (p(yes) + p(no)) = sigmoid(s),   s = logsumexp(logits[yes ids]) - logsumexp(logits[no ids])

where the yes (no) ids are every single-token spelling of the words (`yes`, ` yes`, `Yes`, ` Yes`, ... as the
tokenizer has them). No sampling: one batched forward pass, the last position's logits only.

Training (`rlvf train-judge`) minimises, per (prompt, response, label) row,

    -log P(answer set of the label) = -log sigmoid(±s)  +  -log (p(yes) + p(no))

with `format_weight` on the second term. The first term is the binary cross-entropy of the quantity the
reward reads; the second keeps the probability mass on the two answers, so a judge served behind an
OpenAI-compatible server (which returns only the top log-probs) still shows them. With `format_weight = 1`
the sum is exactly the full-vocabulary cross-entropy of the label's answer set; with 0 it is the binary loss.

This module is shared by `rlvf train-judge` and the `judge` reward (plugin rlvf-judge); torch is imported
only by the functions that need it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rlvf.api.tasks import fill_template
from rlvf.api.text import completion_text
from rlvf.errors import ConfigError

DEFAULT_TEMPLATE = (
    "Here is a question and a response to it.\n\n"
    "Question:\n{prompt}\n\n"
    "Response:\n{completion}\n\n"
    "Is this response correct? Answer yes or no."
)
PLAIN_SUFFIX = "\nAnswer:"  # ends the judge text of a model without a chat template
DEFAULT_YES = ("yes",)
DEFAULT_NO = ("no",)


# --- the judge's input ---

def prompt_text(prompt: Any) -> str:
    """The question a judge sees: a text prompt as it is; of a chat prompt, the last user message (few-shot
    turns and the system prompt are the policy's instructions, not the question)."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            content = users[-1].get("content")
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return "" if content is None else str(content)
    return str(prompt)


def fill_judge_template(template: str, prompt: Any, completion: Any, columns: dict[str, Any] | None = None,
                        **extra: Any) -> str:
    """The judge's user message: `template` with `{prompt}`, `{completion}`, `{response}` (the same) and the
    row's columns filled in (in one pass: braces in the filled text are left alone)."""
    values = {**(columns or {}), **extra}
    values["prompt"], values["completion"] = prompt_text(prompt), completion_text(completion)
    values["response"] = values["completion"]
    return fill_template(template, values)


def uses_chat(tokenizer, chat: bool | None) -> bool:
    """Whether judge texts go through the chat template (none: if the tokenizer has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ConfigError("chat = true, but the judge's tokenizer has no chat template")
    return has_template if chat is None else chat


def judge_text(tokenizer, user_text: str, system_prompt: str | None = None, chat: bool = True) -> str:
    """The full text the judge model reads, ending where its answer starts."""
    if chat:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": user_text})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return plain_text(user_text, system_prompt)


def plain_text(user_text: str, system_prompt: str | None = None) -> str:
    """The judge text without a chat template (also what the server backend sends to /v1/completions)."""
    return (f"{system_prompt}\n\n" if system_prompt else "") + user_text + PLAIN_SUFFIX


def encode_judge(tokenizer, texts: list[str], chat: bool, max_length: int) -> list[list[int]]:
    """Token ids of judge texts (a chat template writes its own special tokens); a longer text keeps its last
    `max_length` tokens: the instruction and the end of the response, where the answer is read."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
        out.append(ids[-max_length:] or [tokenizer.pad_token_id])
    return out


# --- yes / no ---

def answer_variants(words: Any) -> list[str]:
    """The spellings looked for: each word as given, lower case, capitalised and upper case, each with and
    without a leading space."""
    if isinstance(words, str):
        words = [words]
    forms: list[str] = []
    for word in words:
        word = str(word).strip()
        if not word:
            raise ConfigError("a yes/no answer word is empty")
        for form in (word, word.lower(), word.capitalize(), word.upper()):
            for spelled in (form, " " + form):
                if spelled not in forms:
                    forms.append(spelled)
    return forms


def answer_token_ids(tokenizer, words: Any) -> list[int]:
    """Ids of the spellings of `words` that the tokenizer encodes as a single token."""
    ids: list[int] = []
    for spelled in answer_variants(words):
        encoded = tokenizer(spelled, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def yes_no_ids(tokenizer, yes: Any = DEFAULT_YES, no: Any = DEFAULT_NO) -> tuple[list[int], list[int]]:
    yes_ids, no_ids = answer_token_ids(tokenizer, yes), answer_token_ids(tokenizer, no)
    for side, words, ids in (("yes", yes, yes_ids), ("no", no, no_ids)):
        if not ids:
            raise ConfigError(f"the judge's tokenizer has no single token for any spelling of the {side} answer "
                              f"{list(words) if not isinstance(words, str) else [words]}: choose other words "
                              f"(options `{side}`)")
    shared = sorted(set(yes_ids) & set(no_ids))
    if shared:
        raise ConfigError(f"token ids {shared} spell both a yes and a no answer: choose distinct words")
    return yes_ids, no_ids


def yes_no_scores(logits, yes_ids: list[int], no_ids: list[int]):
    """From next-token logits [N, V]: (s [N], the log-odds of yes against no; log (p(yes) + p(no)) [N])."""
    import torch

    logits = logits.float()
    yes = torch.logsumexp(logits[:, yes_ids], dim=-1)
    no = torch.logsumexp(logits[:, no_ids], dim=-1)
    log_mass = torch.logaddexp(yes, no) - torch.logsumexp(logits, dim=-1)
    return yes - no, log_mass


def last_logits(model, sequences: list[list[int]], pad_id: int):
    """The next-token logits [N, V] after each sequence (with gradient if enabled): left padding with position
    ids counted from each sequence's first token, so a padded row computes what it would alone."""
    import torch

    device = next(model.parameters()).device
    width = max(map(len, sequences))
    input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], device=device)
    attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False,
                logits_to_keep=1)
    return out.logits[:, -1, :]


def judge_probabilities(model, sequences: list[list[int]], pad_id: int, yes_ids: list[int], no_ids: list[int],
                        batch_size: int = 16) -> tuple[list[float], list[float]]:
    """(p(yes) / (p(yes) + p(no)), p(yes) + p(no)) of each sequence, batched by length, in the input order."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    probabilities, masses = [0.0] * len(sequences), [0.0] * len(sequences)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            s, log_mass = yes_no_scores(last_logits(model, [sequences[i] for i in chunk], pad_id), yes_ids, no_ids)
            for i, p, m in zip(chunk, torch.sigmoid(s).tolist(), log_mass.exp().tolist(), strict=True):
                probabilities[i], masses[i] = p, m
    return probabilities, masses


def judge_loss(logits, labels, yes_ids: list[int], no_ids: list[int], format_weight: float = 1.0):
    """Per-row loss (see the module docstring) from next-token logits [N, V] and 0/1 labels [N]."""
    import torch.nn.functional as F

    s, log_mass = yes_no_scores(logits, yes_ids, no_ids)
    binary = F.binary_cross_entropy_with_logits(s, labels.float(), reduction="none")
    return binary - format_weight * log_mass, s, log_mass


def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count half); None without both classes."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return None
    ranked = sorted((s, y) for s, y in zip(scores, labels, strict=True))
    rank_sum, position = 0.0, 0
    while position < len(ranked):  # average ranks (1-based) over ties
        end = position
        while end < len(ranked) and ranked[end][0] == ranked[position][0]:
            end += 1
        average = (position + 1 + end) / 2
        rank_sum += average * sum(1 for _, y in ranked[position:end] if y)
        position = end
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


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
    from rlvf.stages.pairs import load_rows_by_prompt

    return load_rows_by_prompt(config, split, seed, normalize_row, "judge.dataset")


def generate_judge_rows(config, registry) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Labelled rows from a verifiable task: sample `judge.rows.model` (default: [model]) `judge.rows.n` times
    on each prompt of the [task]'s `judge.rows.split`, verify each sample with the reward mix (the accuracy
    reward, `judge.rows.accuracy_reward`, decides: verified-correct = 1, incorrect = 0). Duplicate responses of
    a prompt are kept once; samples the accuracy reward does not apply to, and empty ones, are left out."""
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config import ModelConfig
    from rlvf.models.loading import load_policy
    from rlvf.sampling import sampler_from_config
    from rlvf.stages.evaluate import CORRECT, evaluate

    rows_config = config.judge.rows
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    accuracy = rows_config.accuracy_reward or mix.names[0]
    policy = load_policy(ModelConfig(name=rows_config.model or config.model.name, dtype=config.model.dtype))
    sampler = sampler_from_config(config.sampling, policy.model, policy.tokenizer, path=policy.path, seed=config.seed,
                                  batch_size=rows_config.batch_size)
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
    return rows, stats


# --- rlvf train-judge ---

def run_train_judge(config, registry=None, *, resume: bool = False, force_resume: bool = False) -> dict[str, Any]:
    """Train [model] as a judge on `judge.dataset` rows (or rows generated from the [task]); report held-out
    AUC, accuracy and loss before and after; save the judge as a HF directory in `judge.output_dir`/final."""
    import torch

    from rlvf.models.loading import load_policy
    from rlvf.stages.pairs import split_by_prompt
    from rlvf.stages.supervised import check_batching, prepare_output_dir, save_final, train_loop

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
        rows, generated = generate_judge_rows(config, registry)
        with open(run_dir / "rows.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        train_rows = split_by_prompt(rows, "train", j.eval_fraction, config.seed)
        eval_rows = split_by_prompt(rows, "eval", j.eval_fraction, config.seed)
        if j.limit is not None:
            train_rows = train_rows[: j.limit]
    eval_rows = eval_rows[: j.eval_limit] if j.eval_limit is not None else eval_rows
    if not train_rows:
        raise ConfigError("train-judge: no training rows" + (f" (generated: {generated})" if generated else ""))

    policy = load_policy(config.model)
    model, tokenizer = policy.model, policy.tokenizer
    pad = tokenizer.pad_token_id
    chat = uses_chat(tokenizer, j.chat)
    yes_ids, no_ids = yes_no_ids(tokenizer, j.yes, j.no)
    template = j.template or DEFAULT_TEMPLATE

    def encode(rows):
        texts = [judge_text(tokenizer, fill_judge_template(template, r["prompt"], r["response"], r), j.system_prompt,
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
