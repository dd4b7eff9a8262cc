"""The core's samplers, registered through the `register_samplers` hook like any plugin's (entry point
`builtin-samplers` of the rlvf distribution). Each factory imports its sampler when called, so listing plugins
stays cheap."""

from __future__ import annotations

from rlvf.api.hookspecs import hookimpl
from rlvf.errors import ConfigError


def hf_sampler(config, model, tokenizer, *, path, seed, batch_size):
    """rlvf's own decode loop on the transformers model (exact log-probs)."""
    from rlvf.sampling.hf import HFSampler

    if config.vllm_server:
        raise ConfigError("sampling.vllm_server is set but sampling.sampler = 'hf': choose one")
    return HFSampler(model, tokenizer, batch_size=batch_size)


def vllm_sampler(config, model, tokenizer, *, path, seed, batch_size):
    """A vLLM engine in the trainer's process, or the server at sampling.vllm_server."""
    from rlvf.sampling import vllm

    if config.vllm_server:
        return _server_sampler(config, model, tokenizer)
    if missing := vllm.vllm_missing():
        raise ConfigError(f"sampling.sampler = '{config.sampler}', but {missing}")
    return _engine_sampler(config, model, tokenizer, path=path, seed=seed)


def auto_sampler(config, model, tokenizer, *, path, seed, batch_size):
    """vLLM if it is installed (or sampling.vllm_server is set), else HF; the choice is printed."""
    from rlvf.sampling import vllm
    from rlvf.sampling.hf import HFSampler

    if config.vllm_server:
        return _server_sampler(config, model, tokenizer)
    if missing := vllm.vllm_missing():
        return HFSampler(model, tokenizer, batch_size=batch_size, description=f"hf ({missing})")
    return _engine_sampler(config, model, tokenizer, path=path, seed=seed)


def _engine_sampler(config, model, tokenizer, *, path, seed):
    """The in-process engine: it loads the model from `path` (default: where `model` was loaded from) in
    `model`'s dtype."""
    from rlvf.sampling.base import eos_ids
    from rlvf.sampling.vllm import VLLMSampler

    return VLLMSampler(path or model.name_or_path, tokenizer, eos_ids=eos_ids(model, tokenizer),
                       dtype=str(model.dtype).removeprefix("torch."), seed=seed,
                       kv_cache_gb=config.vllm_kv_cache_gb, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                       max_model_len=config.vllm_max_model_len, enforce_eager=config.vllm_enforce_eager,
                       tensor_parallel_size=config.vllm_tensor_parallel_size)


def _server_sampler(config, model, tokenizer):
    from rlvf.sampling.base import eos_ids
    from rlvf.sampling.vllm_server import VLLMServerSampler

    sampler = VLLMServerSampler(config.vllm_server, tokenizer, eos_ids=eos_ids(model, tokenizer),
                                weights_dir=config.vllm_server_weights_dir, api_key=config.vllm_server_api_key)
    sampler.sync_weights(model)  # the server samples this model, whatever it was started with
    return sampler


@hookimpl
def register_samplers(register):
    register("auto", auto_sampler)
    register("hf", hf_sampler)
    register("vllm", vllm_sampler)
