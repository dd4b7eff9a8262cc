"""On-policy updates take their old log-probs from the training forward: one rollout, one optimiser step (one epoch,
one mini-batch) means pi_old is the policy of that step, so the separate no-grad pass over the rollout is skipped.

A sampler whose log-probs differ from the trainer's (as vLLM's do) is an HF sampler reporting them perturbed by a
known, token-dependent amount: the mismatch metrics and the TIS weights then have something to measure. Each case
runs one real step twice on a tiny model, through train_step (the on-policy path) and through the Trainer's pieces
with the separate pass (the path every update took before), and compares the gradients and the metrics.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvf import hookimpl
from rlvf.api.text import completion_text
from rlvf.config import load_config
from rlvf.plugins import PluginInfo, load_registry
from rlvf.sampling import HFSampler
from rlvf.stages.rl import Trainer

pytestmark = pytest.mark.timeout(300)

VOLATILE = ("time/", "tokens_per_second")


class PerturbedSampler(HFSampler):
    """HF completions whose reported log-probs are off by 0.1 * sin(3 t + token): another implementation's."""

    exact_logprobs = False

    def sample(self, prompt_ids, params, seed=None):
        samples = super().sample(prompt_ids, params, seed)
        samples.logprobs = [[lp + 0.1 * math.sin(3 * t + token)
                             for t, (lp, token) in enumerate(zip(lps, ids, strict=True))]
                            for lps, ids in zip(samples.logprobs, samples.completion_ids, strict=True)]
        return samples

    def sync_weights(self, model) -> float:
        return 0.0


class ToyPlugin:
    @hookimpl
    def register_rewards(self, register):  # completions of a random model differ in length: advantages are not 0
        register(lambda prompts, completions, **_: [float(len(completion_text(c)) % 2) for c in completions],
                 name="even")

    @hookimpl
    def register_samplers(self, register):
        register("perturbed", lambda config, model, tokenizer, **_: PerturbedSampler(model, tokenizer))


def trainer(model_dir, output_dir, sampler: str = "perturbed", **settings) -> Trainer:
    values = {
        "model.name": str(model_dir), "task.name": "arithmetic", "reward.mix.even": 1.0,
        "sampling.max_new_tokens": 8, "sampling.sampler": sampler, "algorithm.beta": 0.0,
        "train.prompts_per_step": 2, "train.group_size": 4, "train.micro_batch_size": 3, "train.progress": False,
        "train.report_to": ["jsonl"], "train.output_dir": str(output_dir), **settings,
    }
    registry = load_registry()
    registry.add_plugin(ToyPlugin(), PluginInfo("toy", "toy", "0", "toy = test"))
    return Trainer(load_config(None, [f"{key}={json.dumps(value)}" for key, value in values.items()]), registry)


def measured(metrics: dict[str, float]) -> set[str]:
    return {key for key in metrics if not key.startswith(VOLATILE)}


def keep_gradients(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """The gradient of every parameter at each optimiser step, as the optimiser sees it."""
    grads: list[dict[str, torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(lambda *_: grads.append(
        {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}))
    return grads


def step_with_a_separate_pass(trainer: Trainer) -> dict[str, float]:
    """train_step as it ran before on-policy updates: the trainer's own old log-probs from a no-grad pass over the
    rollout, then advantages and the update with them."""
    rows = trainer.prompts_for_step(trainer.step)
    rollout, samples, metrics = trainer.rollout(rows)
    metrics |= trainer.recompute_old_logprobs(rollout)
    scores, reward_metrics = trainer.score(rows, samples)
    metrics |= reward_metrics | trainer.compute_advantages(rollout, scores)
    train_on, kept = trainer._rows_to_train(rollout, scores)
    return metrics | kept | trainer.update(train_on)


@pytest.mark.parametrize("settings", [{}, {"algorithm.tis_cap": 1.05},
                                      {"algorithm.beta": 0.04, "algorithm.kl_in": "loss"}],
                         ids=["grpo", "tis", "kl_in_loss"])
def test_an_on_policy_update_equals_one_with_a_separate_pass(tiny_model_dir, tmp_path, settings):
    on_policy = trainer(tiny_model_dir, tmp_path / "on_policy", **settings)
    separate = trainer(tiny_model_dir, tmp_path / "separate", **settings)
    assert on_policy.on_policy()
    got, expected = keep_gradients(on_policy), keep_gradients(separate)
    got_metrics, expected_metrics = on_policy.train_step(), step_with_a_separate_pass(separate)

    assert "time/old_logprobs" not in got_metrics  # no second pass
    assert len(got) == len(expected) == 1 and got[0].keys() == expected[0].keys()
    assert "model.embed_tokens.weight" in got[0]  # the tied LM head's gradient reaches the embedding
    for name, grad in expected[0].items():
        torch.testing.assert_close(got[0][name], grad, rtol=1e-5, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")
    assert expected_metrics["grad_norm"] > 1e-4
    assert measured(got_metrics) == measured(expected_metrics)
    for key in measured(expected_metrics):
        assert got_metrics[key] == pytest.approx(expected_metrics[key], rel=1e-5, abs=1e-7), key
    # the sampler's perturbation is measured: ratios on both sides of 1, a TIS cap that clips some tokens
    assert got_metrics["mismatch/ratio_min"] < 0.99 < 1.01 < got_metrics["mismatch/ratio_max"]
    assert got_metrics["mismatch/kl"] > 1e-4 and got_metrics["ratio/mean"] == 1.0
    if "algorithm.tis_cap" in settings:
        assert 0 < got_metrics["mismatch/tis_clipped"] < 1
    if settings.get("algorithm.beta"):
        assert got_metrics["kl"] == 0.0  # the reference is the policy before its first step


@pytest.mark.parametrize("settings", [{"train.epochs": 2}, {"train.mini_batch_size": 4},
                                      {"algorithm.beta": 0.04, "algorithm.kl_in": "reward"}],
                         ids=["two_epochs", "two_mini_batches", "kl_in_reward"])
def test_several_optimiser_steps_or_a_kl_reward_take_the_separate_pass(tiny_model_dir, tmp_path, settings):
    several = trainer(tiny_model_dir, tmp_path / "run", **settings)
    assert not several.on_policy()
    metrics = several.train_step()
    assert metrics["time/old_logprobs"] > 0 and metrics["mismatch/kl"] > 1e-4
    # an on-policy rollout cannot feed several optimiser steps: its old log-probs would be the latest step's
    if several._optimizer_steps_per_step() > 1:
        rollout, _, _ = several.rollout(several.prompts_for_step(1))
        rollout.on_policy = True
        with pytest.raises(ValueError, match="exactly one optimiser step"):
            several.update(rollout)


def test_with_the_hf_sampler_the_ratio_of_an_on_policy_step_is_exactly_one(tiny_model_dir, tmp_path):
    hf = trainer(tiny_model_dir, tmp_path / "run", sampler="hf")
    assert hf.sampler.exact_logprobs and hf.on_policy()
    metrics = hf.train_step()
    assert metrics["ratio/mean"] == 1.0 and metrics["clip_fraction"] == 0.0 and metrics["grad_norm"] > 1e-4
    assert not [key for key in metrics if key.startswith("mismatch/") or key == "time/old_logprobs"]
