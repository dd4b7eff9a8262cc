"""A Bradley-Terry reward model (what `rlvf train-rm`, rlvf_rm.train, makes) and the pieces that score text with
one.

The model is `AutoModelForSequenceClassification` with `num_labels = 1` built from a causal LM checkpoint (the
LM head is replaced by a fresh scalar head; transformers reads the score at the last non-padding token). It is
trained on preference pairs with

    loss = -log sigmoid(r(x, y+) - r(x, y-) - m)

(m = 0 is plain Bradley-Terry; a margin m > 0 asks the chosen reward to lead by at least m) and saved as a HF
directory with its tokenizer and `pad_token_id` set, which the `reward_model` reward loads.
The text a reward model reads is the whole conversation: a chat prompt with the completion as the assistant's
turn, through the tokenizer's chat template (as TRL's reward models read it), or the prompt text followed by the
completion.
"""

from __future__ import annotations

from typing import Any

import torch

from rlvf.api import ConfigError, completion_text, load_tokenizer, pick_device_and_dtype


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


def score_heads(model) -> list[str]:
    """Names of the modules a sequence-classification model adds to its body (`score` for Llama and Qwen): what
    trains fully when the body trains LoRA adapters."""
    return [name for name, module in model.named_children() if module is not model.base_model]


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
