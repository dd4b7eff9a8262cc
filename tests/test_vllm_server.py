"""The vLLM server sampler against a real `vllm serve` (started by `rlvf vllm-serve` on 127.0.0.1): its
log-probs equal the trainer's on the same tokens, weights synced over the server's API change them to the
trainer's new ones, GRPO trains with it, and a server that is not there is a clear error.

The server requires a token (`--api-key`) on every path, the weight-sync endpoints included.
Marked `vllm` (needs vLLM; `make setup` installs it). One server serves the module (~20 s to start).
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from test_vllm import PROMPTS, check_weight_sync, hf_logprobs

from rlvf.config import ModelConfig, SamplingConfig, load_config
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts, load_policy
from rlvf.sampling import HFSampler, SamplingParams, VLLMServerSampler, sampler_from_config, vllm_missing

RLVF = str(Path(sys.executable).with_name("rlvf"))
TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def policy():
    return load_policy(ModelConfig(name="smollm2-135m"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if vllm_missing():
        pytest.fail(f"{vllm_missing()} (or deselect these tests with -m 'not vllm')")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([RLVF, "vllm-serve", "smollm2-135m", "--port", str(port), "--kv-cache-gb", "0.5",
                                    "--api-key", TOKEN], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            ready = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(ready, timeout=5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("vllm-serve did not come up:\n" + log_path.read_text()[-3000:])
            time.sleep(1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def sampler(policy, server):
    return sampler_from_config(SamplingConfig(vllm_server=server, vllm_server_api_key=TOKEN), policy.model,
                               policy.tokenizer)


@pytest.mark.vllm
@pytest.mark.timeout(400)  # includes starting the server
def test_server_samples_carry_the_trainers_logprobs_and_follow_seeds(policy, sampler):
    assert isinstance(sampler, VLLMServerSampler) and not sampler.exact_logprobs
    assert sampler.description.startswith("vllm server http://127.0.0.1:")
    prompt_ids = encode_prompts(policy.tokenizer, PROMPTS)
    params = SamplingParams(temperature=0.7, max_new_tokens=20, n=3)
    samples = sampler.sample(prompt_ids, params, seed=1)
    assert len(samples.completion_ids) == 9
    eos = policy.tokenizer.eos_token_id
    for i, completion in enumerate(samples.completion_ids):
        assert len(samples.logprobs[i]) == len(completion) > 0
        assert samples.truncated[i] == (len(completion) == 20 and completion[-1] != eos)
        expected = hf_logprobs(policy.model, prompt_ids[samples.prompt_index(i)], completion, 0.7)
        assert torch.allclose(torch.tensor(samples.logprobs[i]), expected, atol=5e-4), (i, completion)
    assert sampler.sample(prompt_ids, params, seed=1).completion_ids == samples.completion_ids
    assert sampler.sample(prompt_ids, params, seed=2).completion_ids != samples.completion_ids
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    assert (sampler.sample(prompt_ids, greedy).completion_ids
            == HFSampler(policy.model, policy.tokenizer).sample(prompt_ids, greedy).completion_ids)


@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_weight_sync_over_the_api_moves_the_server_to_the_trainers_weights(policy, sampler):
    prompt = encode_prompts(policy.tokenizer, PROMPTS[:1])[0]
    seconds = check_weight_sync(sampler, policy.model, policy.tokenizer, prompt)
    print(f"weight sync over the API: {seconds:.2f} s")


@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_grpo_samples_from_the_server(server, tmp_path):
    from rlvf.plugins import get_registry
    from rlvf.stages.rl import Trainer

    overrides = {
        "model.name": "smollm2-135m", "task.name": "arithmetic", "reward.mix.math": 1.0, "reward.mix.boxed": 0.1,
        "sampling.vllm_server": server, "sampling.vllm_server_api_key": TOKEN, "sampling.max_new_tokens": 16,
        "algorithm.beta": 0.0, "algorithm.loss_aggregation": "token_mean",
        "train.steps": 2, "train.prompts_per_step": 2, "train.group_size": 4, "train.micro_batch_size": 8,
        "train.lr": 1e-5, "train.save_every": 0, "train.eval_before": False, "train.report_to": ["jsonl"],
        "train.output_dir": str(tmp_path / "run"), "eval.limit": 4, "eval.max_new_tokens": 16,
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    trainer = Trainer(config, get_registry())
    assert isinstance(trainer.sampler, VLLMServerSampler)
    trainer.run()
    steps = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:
        assert -1e-6 < record["mismatch/kl"] < 1e-3 and record["time/weight_sync"] > 0  # k3 >= 0 up to rounding
    prompt = encode_prompts(trainer.tokenizer, [trainer.train_rows[0]["prompt"]])[0]
    fixed = trainer.tokenizer("\\boxed{12}", add_special_tokens=False)["input_ids"]
    assert torch.allclose(torch.tensor(trainer.sampler.logprobs_of(prompt, fixed)),
                          hf_logprobs(trainer.model, prompt, fixed), atol=5e-4)


def test_a_server_that_is_not_there_is_a_clear_error(tiny_model_dir):
    policy = load_policy(ModelConfig(name=str(tiny_model_dir)))
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=r"sampling.vllm_server: GET .*/v1/models failed .*rlvf vllm-serve"):
        VLLMServerSampler(url, policy.tokenizer, eos_ids={0}, retries=0)
    with pytest.raises(ConfigError, match=r"sampling\.sampler = 'hf'"):
        sampler_from_config(SamplingConfig(vllm_server=url, sampler="hf"), policy.model, policy.tokenizer)


@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_every_endpoint_refuses_a_request_without_the_token(server, policy):
    import urllib.error

    requests = [("GET", "/v1/models", None),
                ("POST", "/v1/completions", {"model": "x", "prompt": [1], "max_tokens": 1}),
                ("POST", "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": "/etc"}}),
                ("POST", "/reset_prefix_cache", None), ("GET", "/health", None), ("GET", "/metrics", None)]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path, body in requests:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(server + path, data=data, method=method,
                                             headers={"Content-Type": "application/json", **headers})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 401, (method, path, headers)
    with pytest.raises(ConfigError, match=r"401.*wants a token"):
        VLLMServerSampler(server, policy.tokenizer, eos_ids={0}, retries=0)
