"""GRPO on a CUDA device in bf16: full and LoRA updates, and the HF sampler's log-probs against the training forward.
bench/gpu_check.py runs these on a GPU machine (`pytest -m gpu`); without CUDA they skip. They build on the tiny
character-level model of conftest (no weights from a hub) and register their task and reward in-process (no
`datasets`, no task plugin), so they run on a bare GPU image."""

from __future__ import annotations

import json

import pytest
import torch

from rlvf import hookimpl
from rlvf.api.tasks import Task
from rlvf.config import load_config
from rlvf.models.forward import completion_logprobs
from rlvf.plugins import PluginInfo, load_registry
from rlvf.stages.rl import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def digits(prompts, completions, **columns):
    """Fraction of the completion's characters that are digits."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


class DigitsTask(Task):
    name = "cuda-digits"
    template = "{question}:"
    chat = False
    default_rewards = {"digits": 1.0}

    def load(self, split):
        return [{"question": f"say digits {i}"} for i in range(16 if split == "train" else 4)]


class DigitsPlugin:
    @hookimpl
    def register_tasks(self, register):
        register(DigitsTask())

    @hookimpl
    def register_rewards(self, register):
        register(digits)


def bf16_trainer(model_dir, output_dir, **overrides) -> Trainer:
    values = {
        "model.name": str(model_dir), "model.dtype": "bfloat16", "task.name": "cuda-digits", "reward.mix.digits": 1.0,
        "sampling.sampler": "hf", "sampling.max_new_tokens": 12, "train.prompts_per_step": 4, "train.group_size": 4,
        "train.micro_batch_size": 8, "train.lr": 1e-2, "train.output_dir": str(output_dir),
        "train.report_to": ["jsonl"], "train.progress": False, "train.eval_before": False, "train.save_every": 0,
        "algorithm.beta": 0.0, **overrides,
    }
    registry = load_registry()
    registry.add_plugin(DigitsPlugin(), PluginInfo("cuda-digits", "test-gpu", "0", "cuda-digits = tests/test_gpu.py"))
    return Trainer(load_config(None, [f"{key}={json.dumps(value)}" for key, value in values.items()]), registry)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def train_steps(trainer: Trainer, steps: int) -> list[dict[str, float]]:
    records = []
    for _ in range(steps):
        records.append(trainer.train_step())
        trainer.step += 1
    return records


@pytest.mark.timeout(120)
def test_grpo_steps_train_the_policy_in_bf16_on_cuda(char_model_dir, tmp_path):
    trainer = bf16_trainer(char_model_dir, tmp_path / "run")
    assert trainer.model.device.type == "cuda"
    assert {p.dtype for p in trainer.model.parameters()} == {torch.bfloat16}
    before = weights(trainer.model)
    for metrics in train_steps(trainer, 2):
        assert torch.isfinite(torch.tensor([metrics["loss"], metrics["grad_norm"]])).all(), metrics
        assert metrics["grad_norm"] > 0
        assert metrics["tokens/generated"] > 0
    after = weights(trainer.model)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) == len(before), sorted(set(before) - set(changed))


@pytest.mark.timeout(120)
def test_lora_steps_train_only_the_adapters_on_cuda(char_model_dir, tmp_path):
    trainer = bf16_trainer(char_model_dir, tmp_path / "run", **{"model.lora": {"r": 4, "alpha": 8}})
    trained = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    before = weights(trainer.model)
    for metrics in train_steps(trainer, 2):
        assert torch.isfinite(torch.tensor([metrics["loss"], metrics["grad_norm"]])).all(), metrics
    after = weights(trainer.model)
    frozen_changed = [n for n in before if n not in trained and not torch.equal(before[n], after[n])]
    assert not frozen_changed
    assert any(not torch.equal(before[n], after[n]) for n in trained if "lora_B" in n)  # B starts at 0


@pytest.mark.timeout(120)
def test_hf_sampler_logprobs_agree_with_the_training_forward_in_bf16(char_model_dir, tmp_path):
    """The HF sampler's log-probs (one token at a time through a KV cache) are what the trainer takes as pi_old
    with several epochs; in bf16 on CUDA they may differ from the training forward (other kernels), but only by
    rounding."""
    trainer = bf16_trainer(char_model_dir, tmp_path / "run")
    rollout, _, _ = trainer.rollout(trainer.prompts_for_step(0))
    with torch.no_grad():
        forward, _ = completion_logprobs(trainer.model, rollout, trainer.config.sampling.temperature)
    difference = (forward.float() - rollout.old_logprobs.float()).abs() * rollout.mask
    assert float(difference.sum() / rollout.mask.sum()) < 0.05
    assert float(difference.max()) < 0.5
