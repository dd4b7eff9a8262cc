"""Samplers: prompts in, completions with token ids and sampling log-probs out.

The HF sampler runs its own decode loop on a transformers model with a KV cache, so it returns the
log-prob of each sampled token under the temperature-scaled policy at no extra cost (the trainer uses them
as the "old" log-probs) and stops as soon as every sequence has finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    n: int = 1  # completions per prompt
    stop: list[str] = field(default_factory=list)  # extra stop strings (EOS always stops)


@dataclass
class Samples:
    """`n` completions for each prompt, flattened prompt-major: completion j of prompt i is at i * n + j."""

    completion_ids: list[list[int]]  # one per completion, EOS included when it was generated
    logprobs: list[list[float]]  # per completion token, under the temperature-scaled policy
    texts: list[str]
    truncated: list[bool]  # hit max_new_tokens without EOS or a stop string
    n: int

    def prompt_index(self, completion: int) -> int:
        return completion // self.n


class Sampler(Protocol):
    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples: ...


class HFSampler:
    """Batched sampling with a transformers causal LM (its weights are the trainer's: nothing to sync)."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = _eos_ids(model, tokenizer)

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples:
        import torch

        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(seed)
        expanded = [ids for ids in prompt_ids for _ in range(params.n)]
        completion_ids, logprobs = [], []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(expanded), self.batch_size):
                ids, lps = self._decode(expanded[start: start + self.batch_size], params, generator)
                completion_ids += ids
                logprobs += lps
        finally:
            self.model.train(was_training)
        texts, truncated = [], []
        for i, ids in enumerate(completion_ids):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            cut = _cut_at_stop(text, params.stop)
            if cut is not None:  # keep tokens up to the stop string: re-tokenising would change them
                keep = _tokens_covering(self.tokenizer, ids, len(cut))
                completion_ids[i], logprobs[i] = ids[:keep], logprobs[i][:keep]
                text = cut
            ended = bool(ids) and ids[-1] in self.eos_ids
            texts.append(text)
            truncated.append(not ended and cut is None and len(ids) >= params.max_new_tokens)
        return Samples(completion_ids=completion_ids, logprobs=logprobs, texts=texts,
                       truncated=truncated, n=params.n)

    def _decode(self, batch: list[list[int]], params: SamplingParams, generator):
        import torch

        device = self.model.device
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        finished = torch.zeros(len(batch), dtype=torch.bool, device=device)
        tokens, token_logprobs = [], []
        cache = None
        with torch.inference_mode():
            for _ in range(params.max_new_tokens):
                out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_tokens, next_logprobs = _pick(logits, params, generator)
                next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
                tokens.append(next_tokens)
                token_logprobs.append(next_logprobs)
                finished |= torch.isin(next_tokens, eos)
                if bool(finished.all()):
                    break
                input_ids = next_tokens[:, None]
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
        all_tokens = torch.stack(tokens, 1).tolist()
        all_logprobs = torch.stack(token_logprobs, 1).tolist()
        completion_ids, logprobs = [], []
        for row_tokens, row_logprobs in zip(all_tokens, all_logprobs, strict=True):
            length = next((i + 1 for i, t in enumerate(row_tokens) if t in self.eos_ids), len(row_tokens))
            completion_ids.append(row_tokens[:length])
            logprobs.append(row_logprobs[:length])
        return completion_ids, logprobs


def _pick(logits, params: SamplingParams, generator):
    """The next token of each row and its log-prob under softmax(logits / temperature)."""
    import torch

    if params.temperature <= 0:
        log_probs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, log_probs.gather(1, tokens[:, None]).squeeze(1)
    log_probs = torch.log_softmax(logits / params.temperature, dim=-1)
    sampling = log_probs
    if params.top_p < 1.0:  # nucleus: keep the smallest set of tokens whose mass reaches top_p
        sorted_lp, order = sampling.sort(dim=-1, descending=True)
        mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()
        sorted_lp = sorted_lp.masked_fill(mass_before >= params.top_p, float("-inf"))
        sampling = torch.full_like(sampling, float("-inf")).scatter(1, order, sorted_lp)
    tokens = torch.multinomial(sampling.exp(), 1, generator=generator).squeeze(1)
    return tokens, log_probs.gather(1, tokens[:, None]).squeeze(1)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return {i for i in ids if i is not None}


def _cut_at_stop(text: str, stops: list[str]) -> str | None:
    positions = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else None


def _tokens_covering(tokenizer, ids: list[int], n_chars: int) -> int:
    """The fewest leading tokens whose decoded text is at least `n_chars` long."""
    for keep in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:keep], skip_special_tokens=True)) >= n_chars:
            return keep
    return len(ids)


def make_sampler(kind: str, model, tokenizer, **options: Any) -> Sampler:
    if kind == "hf":
        return HFSampler(model, tokenizer, **options)
    raise ValueError(f"unknown sampler '{kind}'; available: hf")
