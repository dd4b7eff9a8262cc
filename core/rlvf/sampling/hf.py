"""rlvf's own decode loop on a transformers model with a KV cache (the trainer's weights: nothing to sync)."""

from __future__ import annotations

from rlvf.sampling.base import Samples, SamplingParams, eos_ids, finish_samples


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
        return finish_samples(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

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
