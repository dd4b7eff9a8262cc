"""Sampling from a separate `vllm serve` (`rlvf vllm-serve`) over its API, weights synced through a directory."""

from __future__ import annotations

import os
import time
from typing import Any

from rlvf.errors import ConfigError
from rlvf.sampling.base import Samples, SamplingParams, finish_samples
from rlvf.sampling.vllm import request_seeds, vllm_sampling_options


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
        """One API call with retries (rlvf.engine.http: no connection, timeouts, 408, 429, 5xx); a ConfigError
        naming the server and the endpoint when it fails for good."""
        import json
        import urllib.error
        import urllib.request

        from rlvf.engine.http import Retries, RetriesExhausted, call_with_retries, retryable_status

        data = json.dumps(payload).encode() if payload is not None else None
        answered = False

        def send() -> tuple[Any, str | None]:
            nonlocal answered
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
                return (json.loads(body) if body else None), None
            except urllib.error.HTTPError as exc:
                answered = True
                error = f"HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}"
                if exc.code in (401, 403):
                    error += (" (the server wants a token: sampling.vllm_server_api_key or $RLVF_VLLM_API_KEY, the "
                              "one `rlvf vllm-serve --api-key` was given)")
                if retryable_status(exc.code):
                    return None, error
                raise ConfigError(f"sampling.vllm_server: {method} {self.url}{path} failed: {error}") from None
            except (urllib.error.URLError, OSError) as exc:
                answered = False
                return None, str(getattr(exc, "reason", exc))

        try:
            return call_with_retries(send, Retries(retries=self.retries, backoff=2.0))
        except RetriesExhausted as exc:
            hint = "" if answered else (" (is it running? start it with `rlvf vllm-serve MODEL`, which enables the "
                                        "endpoints weight sync needs)")
            raise ConfigError(f"sampling.vllm_server: {method} {self.url}{path} failed after {exc.attempts} "
                              f"attempt(s): {exc.why}{hint}") from None

    def sample(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int | None = None) -> Samples:
        from concurrent.futures import ThreadPoolExecutor

        options = vllm_sampling_options(params, self.eos_ids)

        def complete(ids_and_seed) -> dict[str, Any]:
            ids, request_seed = ids_and_seed
            payload = {"model": self.served_model, "prompt": list(ids), "return_token_ids": True, **options}
            if request_seed is not None:
                payload["seed"] = request_seed
            return self._request("POST", "/v1/completions", payload)

        requests = list(zip(prompt_ids, request_seeds(seed, len(prompt_ids)), strict=True))
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            responses = list(pool.map(complete, requests))
        completion_ids, logprobs = [], []
        for response in responses:
            for choice in sorted(response["choices"], key=lambda c: c["index"]):
                completion_ids.append(list(choice["token_ids"]))
                logprobs.append(list(choice["logprobs"]["token_logprobs"]))
        return finish_samples(self.tokenizer, self.eos_ids, completion_ids, logprobs, params)

    def sync_weights(self, model) -> float:
        from safetensors.torch import save_file

        from rlvf.models.lora import merged_weights

        start = time.perf_counter()
        # Every name of the state dict, tied ones too (save_pretrained would drop lm_head.weight): vLLM's CPU backend
        # keeps its own copy of a tied LM head, which only a weight of that name updates. Shared storage is cloned
        # because safetensors refuses it. With LoRA: the merged weights under the base model's names.
        weights, seen = {}, set()
        for name, tensor in merged_weights(model).items():
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
