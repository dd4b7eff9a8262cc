"""`rlvf train-rm`: a Bradley-Terry reward model, and the pieces that score text with one.

The model is `AutoModelForSequenceClassification` with `num_labels = 1` built from a causal LM checkpoint (the
LM head is replaced by a fresh scalar head; transformers reads the score at the last non-padding token). It is
trained on preference pairs with

    loss = -log sigmoid(r(x, y+) - r(x, y-) - m)

(m = 0 is plain Bradley-Terry; a margin m > 0 asks the chosen reward to lead by at least m) and saved as a HF
directory with its tokenizer and `pad_token_id` set, which the `reward_model` reward (plugin rlvf-rm) loads.
The text a reward model reads is the whole conversation: a chat prompt with the completion as the assistant's
turn, through the tokenizer's chat template (as TRL's reward models read it), or the prompt text followed by the
completion.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rlvf.api.text import completion_text
from rlvf.config import Config
from rlvf.errors import ConfigError
from rlvf.models.loading import load_tokenizer, pick_device_and_dtype
from rlvf.models.names import resolve_model
from rlvf.stages.pairs import load_pairs
from rlvf.stages.supervised import check_batching, prepare_output_dir, save_final, train_loop


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float | None = None
                       ) -> torch.Tensor:
    """Per-pair loss -log sigmoid(r+ - r- - m), from the rewards of the chosen and rejected completions."""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference)


def reward_model_text(tokenizer, prompt: Any, completion: Any) -> tuple[str, bool]:
    """(The text a reward model scores, whether it came from the chat template)."""
    text = completion_text(completion)
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the prompt is a chat conversation but the reward model's tokenizer has no chat "
                              "template")
        return tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}], tokenize=False), True
    return ("" if prompt is None else str(prompt)) + text, False


def encode_for_reward(tokenizer, prompts: list[Any], completions: list[Any], max_length: int) -> list[list[int]]:
    """Token ids of each (prompt, completion) conversation; a longer one keeps its last `max_length` tokens
    (the end, where the score is read)."""
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text, chat = reward_model_text(tokenizer, prompt, completion)
        ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
        out.append(ids[-max_length:] or [tokenizer.pad_token_id])
    return out


def load_reward_model(path: str, dtype: str = "auto", from_causal_lm: bool = False, device=None):
    """(model, tokenizer) of a sequence-classification reward model with a single score, in eval mode.
    `from_causal_lm`: build one from a causal LM checkpoint (a fresh score head replaces its LM head)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    auto_device, torch_dtype = pick_device_and_dtype(dtype)
    try:
        tokenizer = load_tokenizer(path)
        if from_causal_lm:
            # The new score head is meant to be untrained: silence transformers' report of it.
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch_dtype)
            finally:
                transformers_logging.set_verbosity(verbosity)
        else:
            labels = AutoConfig.from_pretrained(path).num_labels
            if labels != 1:
                raise ConfigError(f"{path} is a classifier with {labels} labels; a reward model has a single score")
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not load reward model '{path}': {exc}") from None
    if model.config.pad_token_id is None:  # needed to find each sequence's last token in a padded batch
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device or auto_device).eval(), tokenizer


def reward_forward(model, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Scores [N] of token-id sequences (with gradient if enabled), right-padded into one batch."""
    device = next(model.parameters()).device
    width = max(map(len, sequences))
    input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences], device=device)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device)
    return model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, 0].float()


def reward_scores(model, sequences: list[list[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """Scores of many sequences, batched by length (less padding), in the input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            for i, value in zip(chunk, reward_forward(model, [sequences[i] for i in chunk], pad_id).tolist(),
                                strict=True):
                scores[i] = value
    return scores


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Summed statistics of pairs: accuracy (chosen scored higher; a tie counts half), margin, both means."""
    return {"accuracy": float((chosen > rejected).float().sum() + 0.5 * (chosen == rejected).float().sum()),
            "margin": float((chosen - rejected).sum()), "chosen": float(chosen.sum()),
            "rejected": float(rejected.sum())}


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


def run_train_rm(config: Config, registry=None, *, resume: bool = False, force_resume: bool = False
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
