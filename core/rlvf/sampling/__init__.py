"""Samplers: prompts in, completions with token ids and sampling log-probs out.

- base: SamplingParams, Samples, the Sampler protocol, and `build_sampler` (the one place samplers are built,
  from the samplers registered through the `register_samplers` hook);
- hf: rlvf's own decode loop on a transformers model; vllm: a vLLM engine in the trainer's process;
  vllm_server: a separate `rlvf vllm-serve`; builtin: the hook that registers "auto", "hf" and "vllm".

Nothing here imports torch or vLLM at import time.
"""

from rlvf.sampling.base import (  # noqa: F401
    Sampler,
    Samples,
    SamplingParams,
    build_sampler,
    model_sampler,
    sampler_from_config,
)
from rlvf.sampling.hf import HFSampler  # noqa: F401
from rlvf.sampling.vllm import VLLMSampler, vllm_missing, vllm_serve_command  # noqa: F401
from rlvf.sampling.vllm_server import VLLMServerSampler  # noqa: F401
