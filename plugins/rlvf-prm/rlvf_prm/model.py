"""A process reward model (what `rlvf train-prm`, rlvf_prm.train, makes) and the pieces that score steps with one.

The model is `AutoModelForTokenClassification` with `num_labels = 1` built from a causal LM checkpoint: the LM
head is replaced by a fresh scalar head over every position's hidden state, p = sigmoid(logit). It reads

    prompt (as the sampler encodes it: a chat prompt through the chat template, assistant turn opened)
    + step 1's pieces + separator + step 2's pieces + separator + ...

where a step's pieces are its words, numbers and symbols (`PIECE`: a run of letters, a run of digits or one other
character, each with the whitespace before it), each tokenised on its own. The PRM is read at the last token of
every piece, and a step's score is the lowest of its reads:

    logit(step k) = min over the pieces j of step k of logit(prefix up to piece j)

trained with binary cross-entropy on per-step labels (soft labels as targets as they are; a wrong step's loss
falls on its lowest read, where the model learns to see the error). Two things follow by construction, whatever
the model learned: text on later lines cannot change a step's score (the reads are causal and nothing of a step
is tokenised with what follows it), and text appended to a step ("... = 17, this step is correct") can only
lower it (its pieces keep their tokens and reads; the appended ones add reads to the minimum).
Saved as a HF directory with its tokenizer and `pad_token_id` set, which the `prm` reward loads.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from rlvf.api import ConfigError, encode_prompts, load_tokenizer, pick_device_and_dtype

# A piece of a step: the whitespace before it and a run of letters, a run of digits, a run of underscores or one
# other character. "42 - 24 = 17" is "42", " -", " 24", " =", " 17"; a number is never cut inside.
PIECE = re.compile(r"\s*(?:[^\W\d_]+|\d+|_+|[^\w\s])")


def load_prm(path: str, dtype: str = "auto", from_causal_lm: bool = False, device=None):
    """(model, tokenizer) of a PRM, a token classifier with a single score, in eval mode. `from_causal_lm`: build
    one from a causal LM checkpoint (a fresh scalar head replaces its LM head; no dropout before it)."""
    from transformers import AutoConfig, AutoModelForTokenClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    auto_device, torch_dtype = pick_device_and_dtype(dtype)
    try:
        tokenizer = load_tokenizer(path)
        config = AutoConfig.from_pretrained(path)
        if from_causal_lm:
            config.num_labels, config.classifier_dropout = 1, 0.0
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()  # the new head is meant to be untrained: no report of it
            try:
                model = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=torch_dtype)
            finally:
                transformers_logging.set_verbosity(verbosity)
        else:
            architectures = getattr(config, "architectures", None) or []
            if not any(name.endswith("ForTokenClassification") for name in architectures) or config.num_labels != 1:
                raise ConfigError(f"{path} is not a process reward model (a token classifier with one score, as "
                                  f"`rlvf train-prm` saves it); it is {', '.join(architectures) or 'unknown'} with "
                                  f"{config.num_labels} labels")
            model = AutoModelForTokenClassification.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not load process reward model '{path}': {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device or auto_device).eval(), tokenizer


def score_heads(model) -> list[str]:
    """Names of the modules the token classifier adds to its body (`score`): what trains fully when the body
    trains LoRA adapters."""
    return [name for name, module in model.named_children() if module is not model.base_model]


def step_pieces(step: str) -> list[str]:
    """The pieces of a step (see PIECE); whitespace after its last piece is left out (`"".join` of the pieces is
    the step up to its last non-space character)."""
    return PIECE.findall(step)


def encode_steps(tokenizer, prompt: Any, steps: list[str], separator: str, max_length: int
                 ) -> tuple[list[int], list[list[int]]]:
    """(token ids, per step the positions of its reads) of a prompt and its steps, as the PRM reads them (see the
    module's docstring). Over `max_length` tokens, the prompt loses its beginning (down to one token, or none if
    it had none); steps that still do not fit whole are left out (fewer steps read than given)."""
    prompt_ids = encode_prompts(tokenizer, [prompt if prompt is not None else ""])[0]
    encoded_steps = []
    for step in steps:
        pieces = step_pieces(step)
        tail = step[len("".join(pieces)):] + separator  # trailing whitespace and the separator: not read
        ids = tokenizer([*pieces, tail], add_special_tokens=False)["input_ids"] if pieces else []
        encoded_steps.append(ids)
    completion = sum(len(piece) for ids in encoded_steps for piece in ids)
    keep = max(min(len(prompt_ids), 1), max_length - completion)
    ids = prompt_ids[len(prompt_ids) - keep:] if keep < len(prompt_ids) else list(prompt_ids)
    positions: list[list[int]] = []
    for step_ids in encoded_steps:
        if len(ids) + sum(map(len, step_ids)) > max_length:
            break
        reads = []
        for piece in step_ids[:-1]:
            ids += piece
            if piece:
                reads.append(len(ids) - 1)
        ids += step_ids[-1] if step_ids else []
        if not reads:  # a step with nothing to read (no piece, or pieces without tokens): no step the PRM sees
            break
        positions.append(reads)
    return ids, positions


def step_logits(model, sequences: list[list[int]], positions: list[list[list[int]]], pad_id: int
                ) -> list[torch.Tensor]:
    """Per sequence, the PRM's logit [steps] of each step (the lowest of its reads; with gradient if enabled), from
    one right-padded batch."""
    device = next(model.parameters()).device
    width = max(map(len, sequences))
    input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences], device=device)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device)
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[..., 0].float()
    out = []
    for row, steps in enumerate(positions):
        reads = [logits[row, torch.tensor(step, dtype=torch.long, device=device)].min() for step in steps]
        out.append(torch.stack(reads) if reads else logits.new_zeros(0))
    return out


def step_loss(logits: list[torch.Tensor], labels: list[list[float]]) -> torch.Tensor:
    """Binary cross-entropy summed over every scored step of every sequence (soft labels are targets as they
    are)."""
    flat = torch.cat(logits)
    # a sequence cut at max_length has fewer steps read than labels: its first steps are the ones scored
    targets = torch.tensor([y for row, values in zip(labels, logits, strict=True) for y in row[: values.numel()]],
                           device=flat.device)
    return F.binary_cross_entropy_with_logits(flat, targets, reduction="sum")


def step_probabilities(model, sequences: list[list[int]], positions: list[list[list[int]]], pad_id: int,
                       batch_size: int = 16) -> list[list[float]]:
    """p(step correct) of each step of many sequences, batched by length, in the input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: list[list[float]] = [[] for _ in sequences]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [i for i in order[start: start + batch_size] if positions[i]]
            if not chunk:
                continue
            logits = step_logits(model, [sequences[i] for i in chunk], [positions[i] for i in chunk], pad_id)
            for i, values in zip(chunk, logits, strict=True):
                out[i] = torch.sigmoid(values).tolist()
    return out
