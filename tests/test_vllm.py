"""The vLLM sampler on the embedded SmolLM2-135M-Instruct: its log-probs equal the trainer's on the same tokens,
weights pushed into the running engine change them to the trainer's new ones, and GRPO trains with it.

Tests marked `vllm` need vLLM installed (`make setup` installs it; deselect with -m 'not vllm'). One engine
serves the module; the GRPO run starts its own, as `rlvf train` does.
"""

from __future__ import annotations

import copy
import json
import math
import time

import pytest
import torch

from rlvf.config import ModelConfig, SamplingConfig, load_config
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts, load_policy
from rlvf.plugins import load_registry
from rlvf.sampling import HFSampler, Samples, SamplingParams, build_sampler, vllm_missing


def make_sampler(kind, model, tokenizer, **options):
    return build_sampler(load_registry(), SamplingConfig(sampler=kind), model, tokenizer, **options)

PROMPTS = [[{"role": "user", "content": "What is 12 + 7? Put the answer in \\boxed{}."}],
           [{"role": "user", "content": "Name a colour."}], "The capital of France is"]


def hf_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of `completion` after `prompt` from one full forward pass of a transformers model."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.fixture(scope="module")
def policy():
    return load_policy(ModelConfig(name="smollm2-135m"))


@pytest.fixture(scope="module")
def engine(policy):
    if vllm_missing():
        pytest.fail(f"{vllm_missing()} (or deselect these tests with -m 'not vllm')")
    sampler = make_sampler("vllm", policy.model, policy.tokenizer, path=policy.path, seed=0)
    yield sampler
    sampler.sync_weights(policy.model)


@pytest.fixture(scope="module")
def prompt_ids(policy):
    return encode_prompts(policy.tokenizer, PROMPTS)


@pytest.mark.vllm
@pytest.mark.timeout(300)  # includes starting the engine (~15 s)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_the_trainers_on_the_same_tokens(policy, engine, prompt_ids, temperature):
    assert not engine.exact_logprobs and engine.description.startswith("vllm")
    params = SamplingParams(temperature=temperature, max_new_tokens=24, n=3)
    samples = engine.sample(prompt_ids, params, seed=1)
    assert isinstance(samples, Samples) and len(samples.completion_ids) == 9
    eos = policy.tokenizer.eos_token_id
    for i, completion in enumerate(samples.completion_ids):
        assert len(samples.logprobs[i]) == len(completion) > 0
        assert samples.truncated[i] == (len(completion) == 24 and completion[-1] != eos)
        assert samples.texts[i] == policy.tokenizer.decode(completion, skip_special_tokens=True)
        expected = hf_logprobs(policy.model, prompt_ids[samples.prompt_index(i)], completion, temperature)
        assert torch.allclose(torch.tensor(samples.logprobs[i]), expected, atol=5e-4), (i, completion)
    # the same seed gives the same completions; another seed others
    assert engine.sample(prompt_ids, params, seed=1).completion_ids == samples.completion_ids
    assert engine.sample(prompt_ids, params, seed=2).completion_ids != samples.completion_ids


@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_a_seeded_batch_larger_than_one_prefill_step(policy, engine):
    """More prompt tokens than the engine prefills in one step (4096 here, as a GRPO step of 64 few-shot
    prompts has): with chunked prefill this crashed on CPUs, whose seeded generators cannot rewind."""
    prompts = [list(range(1000 + 50 * i, 1000 + 50 * i + 450)) for i in range(10)]
    samples = engine.sample(prompts, SamplingParams(temperature=1.0, max_new_tokens=2, n=2), seed=0)
    assert len(samples.completion_ids) == 20 and all(samples.completion_ids)


@pytest.mark.vllm
@pytest.mark.timeout(120)
def test_greedy_and_stop_strings_agree_with_the_hf_sampler(policy, engine, prompt_ids):
    hf = HFSampler(policy.model, policy.tokenizer)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    greedy = engine.sample(prompt_ids, params)
    assert greedy.completion_ids == hf.sample(prompt_ids, params).completion_ids
    stop = greedy.texts[0][3:6]
    with_stop = SamplingParams(temperature=0, max_new_tokens=12, stop=[stop])
    cut, hf_cut = engine.sample(prompt_ids[:1], with_stop), hf.sample(prompt_ids[:1], with_stop)
    assert cut.texts == hf_cut.texts == [greedy.texts[0][: greedy.texts[0].find(stop) + len(stop)]]
    assert cut.completion_ids == hf_cut.completion_ids and cut.truncated == [False]


def check_weight_sync(sampler, model, tokenizer, prompt: list[int]) -> float:
    """Weights pushed into `sampler` move its log-probs (scored and sampled) to those of a perturbed copy of
    `model`, and pushing `model` back restores them; returns the seconds of one sync."""
    fixed = tokenizer("The answer is \\boxed{19}.", add_special_tokens=False)["input_ids"]
    original = hf_logprobs(model, prompt, fixed)
    assert torch.allclose(torch.tensor(sampler.logprobs_of(prompt, fixed)), original, atol=5e-4)

    perturbed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the MLPs and the (tied) embedding: a tied LM head must follow too
        for name, parameter in perturbed.named_parameters():
            if ".mlp." in name or "embed_tokens" in name:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    target = hf_logprobs(perturbed, prompt, fixed)
    assert (target - original).abs().max() > 0.05  # the perturbation matters
    assert torch.allclose(torch.tensor(sampler.logprobs_of(prompt, fixed)), original, atol=5e-4)  # not synced yet

    seconds = sampler.sync_weights(perturbed)
    synced = torch.tensor(sampler.logprobs_of(prompt, fixed))
    assert torch.allclose(synced, target, atol=5e-4), (synced - target).abs().max()
    # sampled log-probs follow too (the prefix cache of the old weights is gone)
    samples = sampler.sample([prompt], SamplingParams(temperature=1.0, max_new_tokens=16, n=2), seed=3)
    for completion, logprobs in zip(samples.completion_ids, samples.logprobs, strict=True):
        assert torch.allclose(torch.tensor(logprobs), hf_logprobs(perturbed, prompt, completion), atol=5e-4)

    sampler.sync_weights(model)  # back to the original weights
    assert torch.allclose(torch.tensor(sampler.logprobs_of(prompt, fixed)), original, atol=5e-4)
    return seconds


@pytest.mark.vllm
@pytest.mark.timeout(120)
def test_weight_sync_moves_the_engine_to_the_trainers_weights(policy, engine, prompt_ids):
    seconds = check_weight_sync(engine, policy.model, policy.tokenizer, prompt_ids[0])
    print(f"weight sync of {sum(p.numel() for p in policy.model.parameters()) / 1e6:.0f}M parameters: {seconds:.2f} s")
    assert seconds < 60


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_episodes_of_an_environment_run_on_the_vllm_sampler(policy, engine, prompt_ids):
    """Multi-turn episodes (rlvf.sampling.episodes) on vLLM: the observation's tokens sit between the model's turns
    with log-prob 0, and the model's later turns have the log-probs the trainer computes on the whole context."""
    from rlvf.api import Environment, Episode, Observation
    from rlvf.sampling.episodes import run_episodes

    class Again(Episode):
        def step(self, text, finished):
            self.state["nudges"] = self.state.get("nudges", 0) + 1
            return Observation(" Check it once more:", role="inline")

    class AgainEnvironment(Environment):
        name = "again"

        def start(self, row, context):
            return Again()

    rows = [{"prompt": PROMPTS[0]}]
    samples = run_episodes(engine, policy.tokenizer, AgainEnvironment().configured(max_turns=2, max_tokens=64),
                           rows, prompt_ids[:1], SamplingParams(temperature=1.0, max_new_tokens=16, n=2), seed=5)
    inserted = policy.tokenizer(" Check it once more:", add_special_tokens=False)["input_ids"]
    second_turns = 0
    for ids, flags, logprobs, state in zip(samples.completion_ids, samples.generated, samples.logprobs,
                                           samples.states, strict=True):
        assert [t for t, f in zip(ids, flags, strict=True) if not f] == inserted
        assert state == {"nudges": 2}  # both turns are stepped, the last one too
        start = flags.index(0)
        assert sum(flags[:start]) > 0 and all(lp == 0.0 for lp, f in zip(logprobs, flags, strict=True) if not f)
        later = [i for i, f in enumerate(flags) if f and i > start]
        if later:  # the second turn, sampled by vLLM after the observation, scored by the trainer's model
            trainer = hf_logprobs(policy.model, prompt_ids[0], ids)[later]
            assert torch.allclose(torch.tensor([logprobs[i] for i in later]), trainer, atol=2e-3)
            second_turns += 1
    assert second_turns


# Tests that share the module's engine come first: the engines the tests below build for their trainers tear
# down vLLM's process-wide parallel groups when they are freed, and the shared engine cannot step after that.
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_grpo_with_the_vllm_sampler(tmp_path, capsys):
    from rlvf.plugins import get_registry
    from rlvf.stages.rl import Trainer

    overrides = {
        "model.name": "smollm2-135m", "task.name": "arithmetic", "reward.mix.math": 1.0, "reward.mix.boxed": 0.1,
        "sampling.sampler": "vllm", "sampling.max_new_tokens": 16, "sampling.vllm_kv_cache_gb": 0.5,
        "algorithm.beta": 0.0, "algorithm.loss_aggregation": "token_mean", "algorithm.tis_cap": 2.0,
        "train.steps": 2, "train.prompts_per_step": 2, "train.group_size": 4, "train.micro_batch_size": 8,
        "train.lr": 1e-5, "train.save_every": 0, "train.eval_before": False, "train.report_to": ["jsonl"],
        "train.output_dir": str(tmp_path / "run"), "eval.limit": 4, "eval.max_new_tokens": 16,
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    begin = time.perf_counter()
    trainer = Trainer(config, get_registry())
    assert trainer.sampler.name == "vllm" and "sampler: vllm" in capsys.readouterr().err
    results = trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:
        assert -1e-6 < record["mismatch/kl"] < 1e-3  # the engine and the trainer agree (k3 >= 0 up to rounding)
        assert record["mismatch/ratio_mean"] == pytest.approx(1.0, abs=1e-2)
        assert record["mismatch/ratio_min"] <= 1.0 <= record["mismatch/ratio_max"] < 1.1
        assert record["mismatch/tis_clipped"] == 0.0
        assert record["time/weight_sync"] > 0 and "time/old_logprobs" not in record  # on-policy: no second pass
    assert "accuracy" in results["after"]
    # after the last optimiser step the engine holds the trained weights, not the initial ones
    prompt = encode_prompts(trainer.tokenizer, [trainer.train_rows[0]["prompt"]])[0]
    fixed = trainer.tokenizer("\\boxed{12}", add_special_tokens=False)["input_ids"]
    trained = hf_logprobs(trainer.model, prompt, fixed)
    assert torch.allclose(torch.tensor(trainer.sampler.logprobs_of(prompt, fixed)), trained, atol=5e-4)
    print(f"GRPO with vLLM: 2 steps, {time.perf_counter() - begin:.0f} s in all; per step: "
          + ", ".join(f"{r['time/step']:.1f} s (sync {r['time/weight_sync']:.2f} s)" for r in steps))


def test_auto_falls_back_to_hf_and_says_why(tiny_model_dir, monkeypatch):
    import rlvf.sampling.vllm

    policy = load_policy(ModelConfig(name=str(tiny_model_dir)))
    monkeypatch.setattr(rlvf.sampling.vllm, "vllm_missing", lambda: "vLLM is not installed")
    sampler = make_sampler("auto", policy.model, policy.tokenizer)
    assert isinstance(sampler, HFSampler) and sampler.description == "hf (vLLM is not installed)"
    assert sampler.exact_logprobs and sampler.sync_weights(policy.model) == 0.0
    with pytest.raises(ConfigError, match="not installed"):
        make_sampler("vllm", policy.model, policy.tokenizer)
    with pytest.raises(ConfigError, match="not an installed sampler"):
        make_sampler("sglang", policy.model, policy.tokenizer)


class ShiftedSampler(HFSampler):
    """An HF sampler that reports its log-probs shifted by `delta`, as if another implementation computed them."""

    exact_logprobs = False

    def __init__(self, model, tokenizer, delta: float):
        super().__init__(model, tokenizer)
        self.delta, self.synced = delta, 0

    def sample(self, prompt_ids, params, seed=None):
        samples = super().sample(prompt_ids, params, seed)
        samples.logprobs = [[lp + self.delta for lp in row] for row in samples.logprobs]
        return samples

    def sync_weights(self, model) -> float:
        self.synced += 1
        return 0.0


def test_recomputed_old_logprobs_measure_the_mismatch_and_tis_caps_it(tiny_model_dir, tmp_path, monkeypatch):
    """Without vLLM: a sampler whose log-probs are off by a known amount. The trainer recomputes the old
    log-probs, logs the mismatch (ratio exp(-delta), k3 KL), weights the loss by min(ratio, tis_cap), and
    syncs the sampler after the optimiser step."""
    import rlvf.stages.rl
    from rlvf import hookimpl
    from rlvf.api.text import completion_text
    from rlvf.plugins import PluginInfo, load_registry

    class EvenLength:  # a reward that differs between completions of a random model: advantages are not all 0
        @hookimpl
        def register_rewards(self, register):
            # chat prompts give TRL's chat completions ([{"role": "assistant", "content": ...}]): read their text
            register(lambda prompts, completions, **_: [float(len(completion_text(c)) % 2) for c in completions],
                     name="even")

        @hookimpl
        def register_samplers(self, register):
            register("shifted", lambda config, model, tokenizer, **_: ShiftedSampler(model, tokenizer, delta))

    def registry():
        loaded = load_registry()
        loaded.add_plugin(EvenLength(), PluginInfo("even", "even", "0", "even = test"))
        return loaded

    delta = 0.2  # the sampler claims each token 0.2 nats likelier than it is: ratio = exp(-0.2) ~ 0.82
    overrides = {
        "model.name": str(tiny_model_dir), "task.name": "arithmetic", "reward.mix.even": 1.0,
        "sampling.max_new_tokens": 6, "sampling.sampler": "shifted", "algorithm.beta": 0.0, "algorithm.tis_cap": 0.5,
        "train.prompts_per_step": 2, "train.group_size": 4, "train.progress": False,
        "train.report_to": ["jsonl"], "train.output_dir": str(tmp_path / "run"),
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    trainer = rlvf.stages.rl.Trainer(config, registry())
    assert isinstance(trainer.sampler, ShiftedSampler)
    metrics = trainer.train_step()
    ratio = math.exp(-delta)
    assert metrics["mismatch/ratio_mean"] == pytest.approx(ratio, abs=1e-3)
    assert metrics["mismatch/ratio_min"] == pytest.approx(ratio, abs=1e-3) == metrics["mismatch/ratio_max"]
    assert metrics["mismatch/kl"] == pytest.approx(ratio - 1 + delta, abs=1e-3)
    assert metrics["mismatch/tis_clipped"] == 1.0  # every weight 0.82 is capped at 0.5
    # the same step without the correction: the same samples, and a gradient twice as large
    del overrides["algorithm.tis_cap"]
    overrides["train.output_dir"] = str(tmp_path / "plain")
    uncorrected = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    plain = rlvf.stages.rl.Trainer(uncorrected, registry()).train_step()
    assert "mismatch/tis_clipped" not in plain and plain["reward/mean"] == metrics["reward/mean"]
    assert plain["grad_norm"] > 1e-6 and metrics["grad_norm"] == pytest.approx(0.5 * plain["grad_norm"], rel=1e-3)
    # one optimiser step per rollout: the update's own forward gave the old log-probs (no separate pass)
    assert "time/old_logprobs" not in metrics and "time/weight_sync" in metrics and trainer.sampler.synced == 1
