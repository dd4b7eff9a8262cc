"""rlvf's own decode loop on a transformers model with a KV cache (the trainer's weights: nothing to sync).

What makes it fast on a CPU, each measured on SmolLM2-135M (bench/sampler_bench.py, the GRPO workload):
- each distinct prompt is prefilled once and its KV cache repeated for its `n` completions;
- the cache is written into buffers allocated once per batch, not concatenated (copied) at every step;
- grouped K/V heads go to SDPA as they are (`enable_gqa`) instead of being copied to every query head;
- rows that have finished leave the batch (LEAVE_WHEN_FINISHED);
- a token is drawn by inverse CDF from one uniform number per row (~6 ms a step for 32 rows of a 49k vocabulary,
  where torch.multinomial's exponential noise over the whole vocabulary took ~38 ms).
What is sampled does not depend on how the batch is laid out: a step's uniform numbers are drawn for every row of
the batch in the same order whether or not it left, and the prefill's matmuls see the rows a per-copy prefill would
(see `_decode`). Only a step's row count changes once rows leave, which can change a matmul's last bits on a CPU
(~1e-5 in a log-prob on SmolLM2; the same tokens).
"""

from __future__ import annotations

import contextlib
import functools

from rlvf.models.attention import grouped_attention
from rlvf.models.loading import left_padded
from rlvf.sampling.base import Samples, SamplingParams, eos_ids, finish_samples

# Finished rows leave the batch once they are this fraction of it: copying the cache without them costs about an
# eighth of a decode step (SmolLM2, 32 rows), so it waits for several.
LEAVE_WHEN_FINISHED = 0.25


class HFSampler:
    """Batched sampling with a transformers causal LM (its weights are the trainer's: nothing to sync)."""

    name = "hf"
    exact_logprobs = True

    def __init__(self, model, tokenizer, batch_size: int = 64, description: str = "hf"):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = eos_ids(model, tokenizer)
        self.description = description

    def sync_weights(self, model) -> float:
        if model is not self.model:
            raise ValueError("the HF sampler samples from the model it was built with")
        return 0.0

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples:
        import torch

        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(seed)
        rows = [prompt for prompt in range(len(prompt_ids)) for _ in range(params.n)]  # prompt-major
        completion_ids, logprobs = [], []
        was_training = self.model.training
        self.model.eval()
        try:
            with grouped_attention(self.model):
                for start in range(0, len(rows), self.batch_size):
                    ids, lps = self._decode(prompt_ids, rows[start: start + self.batch_size], params, generator)
                    completion_ids += ids
                    logprobs += lps
        finally:
            self.model.train(was_training)
        return finish_samples(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

    def _decode(self, prompt_ids: list[list[int]], rows: list[int], params: SamplingParams, generator):
        """Complete prompt `rows[i]` in row i. The distinct prompts are prefilled once; their cache and last hidden
        state are repeated for their rows before the LM head, so every matmul of a decode step sees the rows a
        per-copy decode would (a CPU matmul's rounding can depend on its row count)."""
        import torch

        device = self.model.device
        pad = self.tokenizer.pad_token_id
        distinct = list(dict.fromkeys(rows))
        copies = torch.tensor([distinct.index(prompt) for prompt in rows], device=device)
        prompts = [prompt_ids[prompt] for prompt in distinct]
        input_ids, prompt_mask = left_padded(prompts, pad, device)
        width, batch = input_ids.shape[1], len(rows)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, -1:].index_select(0, copies)
        # The mask of every step at once: a step passes the first width + step columns.
        attention = torch.cat([prompt_mask.index_select(0, copies),
                               prompt_mask.new_ones((batch, params.max_new_tokens))], dim=1)
        tokens = torch.full((batch, params.max_new_tokens), pad, device=device)
        token_logprobs = torch.zeros((batch, params.max_new_tokens), device=device)
        live = torch.arange(batch, device=device)  # the rows still in the batch
        cache = _new_cache(width + params.max_new_tokens)
        with torch.inference_mode():
            with _repeat_rows_before_lm_head(self.model, copies):
                out = self.model(input_ids=input_ids, attention_mask=prompt_mask, past_key_values=cache,
                                 position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                                 logits_to_keep=1)
            cache.batch_select_indices(copies)
            is_eos = torch.zeros(out.logits.shape[-1], dtype=torch.bool, device=device)
            is_eos[sorted(self.eos_ids)] = True
            finished = torch.zeros(batch, dtype=torch.bool, device=device)  # of the live rows
            next_tokens = None  # the prefill's logits pick the first tokens
            for step in range(params.max_new_tokens):
                if step:
                    out = self.model(input_ids=next_tokens[:, None], attention_mask=attention[:, : width + step],
                                     position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
                next_tokens, next_logprobs = _pick(out.logits[:, -1, :].float(), params, generator, live, batch)
                next_tokens = torch.where(finished, pad, next_tokens)
                tokens[live, step] = next_tokens
                token_logprobs[live, step] = next_logprobs
                finished |= is_eos[next_tokens]
                done = int(finished.sum())
                if done == len(live):
                    break
                if done and done >= LEAVE_WHEN_FINISHED * len(live):
                    keep = (~finished).nonzero().squeeze(1)
                    live, next_tokens, positions = live[keep], next_tokens[keep], positions[keep]
                    attention, finished = attention[keep], finished[keep]
                    cache.batch_select_indices(keep)
                positions = positions + 1
        completion_ids, logprobs = [], []
        for row_tokens, row_logprobs in zip(tokens.tolist(), token_logprobs.tolist(), strict=True):
            length = next((i + 1 for i, t in enumerate(row_tokens) if t in self.eos_ids), len(row_tokens))
            completion_ids.append(row_tokens[:length])
            logprobs.append(row_logprobs[:length])
        return completion_ids, logprobs


def _pick(logits, params: SamplingParams, generator, live, batch: int):
    """The next token of each live row and its log-prob under softmax(logits / temperature).

    `logits` holds the rows `live` of a batch of `batch` rows. Each row's token is the first whose cumulative
    probability exceeds u × (the row's total), u ~ U[0, 1) drawn for every row of the batch so that the random
    stream, and hence every row's token, does not depend on which rows have already left. The sum runs in float64:
    in float32 the last bits of a cumulative sum near 1 would misweigh tokens of probability ~1e-7."""
    import torch

    if params.temperature <= 0:
        log_probs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, log_probs.gather(1, tokens[:, None]).squeeze(1)
    log_probs = torch.log_softmax(logits if params.temperature == 1 else logits / params.temperature, dim=-1)
    sampling = log_probs if params.top_p >= 1.0 else _nucleus(log_probs, params.top_p)
    uniform = torch.rand(batch, generator=generator, dtype=torch.float64, device=logits.device)
    if len(live) < batch:
        uniform = uniform.index_select(0, live)
    cumulative = sampling.exp().double().cumsum(dim=-1)
    total = cumulative[:, -1:]
    # right=True: the token i with cumulative[i - 1] <= u * total < cumulative[i], so one of probability > 0 (u < 1
    # and rounding to nearest keep u * total below the total)
    tokens = torch.searchsorted(cumulative, uniform[:, None] * total, right=True).squeeze(1)
    return tokens, log_probs.gather(1, tokens[:, None]).squeeze(1)


def _nucleus(log_probs, top_p: float):
    """`log_probs` with -inf outside the smallest set of most likely tokens whose mass reaches top_p. Looked for
    among the k most likely first, k growing while every row's set does not fit: sorting the whole vocabulary took
    ~100 ms a step for 32 rows of SmolLM2. The same numbers as a full sort: the mass before a token is a cumulative
    sum in descending order (a prefix of the full one), and it only grows along that order."""
    import torch

    k = 64
    while k * 16 <= log_probs.shape[-1]:  # at most 1024 of 49k: beyond that a sort costs less than another try
        top, order = log_probs.topk(k, dim=-1)
        if bool((_mass_before(top)[:, -1] >= top_p).all()):
            break
        k *= 4
    else:
        top, order = log_probs.sort(dim=-1, descending=True)
    kept = top.masked_fill(_mass_before(top) >= top_p, float("-inf"))
    return torch.full_like(log_probs, float("-inf")).scatter(1, order, kept)


def _mass_before(descending_log_probs):
    probs = descending_log_probs.exp()
    return probs.cumsum(dim=-1) - probs


def _new_cache(capacity: int):
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=functools.partial(_buffered_layer(), capacity))


@functools.cache
def _buffered_layer():
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """A DynamicLayer over buffers allocated once, `capacity` positions long: a step writes its keys and
        values in place instead of concatenating the whole cache into new tensors."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads = key_states.shape[:2]
            self.key_buffer = key_states.new_empty((batch, heads, self.capacity, key_states.shape[-1]))
            self.value_buffer = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self.key_buffer[:, :, self.length: end] = key_states
            self.value_buffer[:, :, self.length: end] = value_states
            self.length = end
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices) -> None:
            if self.is_initialized:
                self.key_buffer = self.key_buffer.index_select(0, indices)
                self.value_buffer = self.value_buffer.index_select(0, indices)
                self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]

    return BufferedLayer


@contextlib.contextmanager
def _repeat_rows_before_lm_head(model, copies):
    """Run the LM head on the last hidden state of row copies[i] in row i (the prefill's rows are the distinct
    prompts; the head then sees the rows a per-copy prefill would). Without a separate head, repeat the logits."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].index_select(0, copies), *args[1:]))
    try:
        yield
    finally:
        handle.remove()
