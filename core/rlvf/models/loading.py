"""Loading a causal LM and its tokenizer on the right device: CUDA with bf16 where present, else CPU fp32."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvf.config import ModelConfig
from rlvf.errors import ConfigError
from rlvf.models.names import resolve_model


@dataclass
class Policy:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    device: Any  # torch.device
    path: str  # where it was loaded from


def pick_device_and_dtype(dtype: str = "auto"):
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda")
        default = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:  # bf16 is slow on CPUs without AVX-512 bf16: float32
        device, default = torch.device("cpu"), torch.float32
    return device, default if dtype == "auto" else getattr(torch, dtype)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")  # left: generation appends on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(config: ModelConfig, path: str | None = None) -> Policy:
    """Load `config.name` (or an explicit `path`, e.g. a checkpoint) for training or sampling."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-shard bars would bury the training progress bar
    path = resolve_model(path, key="--model") if path else resolve_model(config.name)
    device, dtype = pick_device_and_dtype(config.dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        tokenizer = load_tokenizer(path)
    except OSError as exc:
        raise ConfigError(f"could not load model '{path}' (model.name): {exc}") from None
    return Policy(model=model, tokenizer=tokenizer, device=device, path=path)


def encode_prompts(tokenizer, prompts: list[Any]) -> list[list[int]]:
    """Token ids of prompts: chat prompts (lists of messages) through the model's chat template with the
    assistant turn opened; text prompts as they are."""
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) if isinstance(p, list)
             else p for p in prompts]
    chat = [isinstance(p, list) for p in prompts]
    # A chat template already writes its special tokens; plain text gets the tokenizer's own.
    return [tokenizer(text, add_special_tokens=not is_chat)["input_ids"] for text, is_chat in zip(texts, chat,
                                                                                                 strict=True)]


def left_padded(sequences: list[list[int]], pad_id: int, device=None):
    """(token ids [N, longest] with each sequence ending in the last column, `pad_id` before it; the attention mask,
    1 on the sequence's tokens): prompts laid out so that every one's next token comes at the same position."""
    import torch

    width = max(map(len, sequences))
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return ids, mask
