"""LoRA ([model] lora, rlvf.models.lora) in every training stage, on the tiny models of conftest: only the adapters
train, the reference policy is the model with its adapters off (and equals the base model), checkpoints hold the
adapters and resume exactly, and the final directory is the merged model, which every command loads as a plain
one, with the adapters beside it in peft's layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_resume_stages import SECTIONS
from test_resume_stages import _command as stage_command
from test_stage_reference import _logged
from test_trainer import in_process_trainer, toy, toy_config, training_metrics  # noqa: F401 (toy: a fixture)

from conftest import run_rlvf
from rlvf.config import ModelConfig, load_config
from rlvf.errors import ConfigError
from rlvf.models.forward import completion_logprobs
from rlvf.models.loading import load_policy
from rlvf.models.lora import adapter_weights, adapters_disabled, has_adapters, merged_weights

LORA = "model.lora={r = 8, alpha = 16}"


def lora_parameters(model) -> list[str]:
    return [name for name, _ in model.named_parameters() if "lora_" in name]


def with_peft_adapters(base_model, adapter_dir: Path):
    """`base_model` with the adapters of `adapter_dir` as peft itself loads them."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(adapter_dir)).eval()


# --- the config ---

def test_lora_is_off_by_default_and_turned_on_by_a_table_in_any_override_form():
    assert load_config().model.lora is None
    for override in ("model.lora={}", "model.lora=true", "model.lora.r=16", 'model.lora={"r": 16, "alpha": 32}',
                     "model.lora={r = 16, alpha = 32, dropout = 0.0, target_modules = \"all-linear\"}"):
        lora = load_config(None, [override]).model.lora
        assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (16, 32.0, 0.0, "all-linear"), override
    assert load_config(None, ["model.lora.r=4", 'model.lora.target_modules=["q_proj", "v_proj"]']).model.lora \
        .target_modules == ["q_proj", "v_proj"]
    assert load_config(None, ["model.lora={}", "model.lora=false"]).model.lora is None
    with pytest.raises(ConfigError, match=r"model\.lora\.rank: unknown key"):
        load_config(None, ["model.lora.rank=8"])
    with pytest.raises(ConfigError, match=r"model\.lora\.r: .*at least 1"):
        load_config(None, ["model.lora.r=0"])


def test_target_modules_that_match_nothing_are_one_clear_error(tiny_model_dir):
    from rlvf.config import LoraConfig
    from rlvf.models.lora import apply_lora

    model = load_policy(ModelConfig(name=str(tiny_model_dir))).model
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules: .*not_a_module"):
        apply_lora(model, LoraConfig(target_modules=["not_a_module"]))


# --- RL ---

def _logprobs(model, rollout) -> torch.Tensor:
    with torch.no_grad():
        return completion_logprobs(model.eval(), rollout, temperature=1.0)[0] * rollout.mask


@pytest.mark.timeout(300)
def test_grpo_with_lora_trains_only_the_adapters_against_the_base_model_as_reference(toy, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    model_dir, data, site = toy
    run_dir = tmp_path / "run"
    config = load_config(None, [*toy_config(model_dir, data, run_dir, steps=4, eval_before=False, save_every=0,
                                            lr=3e-2), "algorithm.beta=0.04", LORA])
    trainer = in_process_trainer(config, site)
    base = load_policy(ModelConfig(name=str(model_dir))).model.eval()
    assert trainer.reference is trainer.model  # no second copy of the weights
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable == lora_parameters(trainer.model) and trainable
    assert trainer._parameter_names() == trainable
    assert sum(len(group["params"]) for group in trainer.optimizer.param_groups) == len(trainable)
    trainer.run()

    kl = [m["kl"] for m in training_metrics(run_dir)]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 1e-6  # the policy starts as the reference, then moves
    rollout, _, _ = trainer.rollout(trainer.prompts_for_step(0)[:2])
    adapted = _logprobs(trainer.model, rollout)
    with adapters_disabled(trainer.model):  # the reference: the base model's log-probs
        assert torch.allclose(_logprobs(trainer.model, rollout), _logprobs(base, rollout), atol=1e-6)
    assert (adapted - _logprobs(base, rollout)).abs().max() > 1e-3  # training moved the adapted policy
    assert [p.requires_grad for p in trainer.model.parameters()].count(True) == len(trainable)  # as it was

    # only the adapters changed: the merged weights minus the adapters' update are the base weights
    base_weights = base.state_dict()
    frozen = {name.replace(".base_layer", ""): tensor for name, tensor in trainer.model.state_dict().items()
              if "lora_" not in name}
    assert frozen.keys() == base_weights.keys()
    assert all(torch.equal(frozen[name], tensor) for name, tensor in base_weights.items())
    assert any(tensor.abs().sum() > 0 for name, tensor in adapter_weights(trainer.model).items() if "lora_B" in name)

    # the final directory: the merged model, loaded as a plain one, computes the adapted policy
    final = run_dir / "final"
    assert (final / "model.safetensors").is_file() and (final / "adapter" / "adapter_config.json").is_file()
    plain = load_policy(ModelConfig(name=str(final))).model
    assert not has_adapters(plain)
    assert set(load_file(final / "model.safetensors")) <= set(base_weights)
    assert torch.allclose(_logprobs(plain, rollout), adapted, atol=1e-5)
    assert torch.allclose(_logprobs(with_peft_adapters(AutoModelForCausalLM.from_pretrained(model_dir),
                                                       final / "adapter"), rollout), adapted, atol=1e-5)
    merged = merged_weights(trainer.model)
    assert merged.keys() == base_weights.keys()  # what the vLLM samplers receive: the base model's names


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithm", [["algorithm.beta=0.04"],
                                       ['algorithm.preset="ppo"', "algorithm.beta=0.01", "critic.lr=3e-3"],
                                       ['algorithm.preset="ppo"', "critic.share_policy_backbone=true",
                                        "critic.lr=3e-3"]], ids=["grpo", "ppo", "ppo-shared-backbone"])
def test_lora_resume_reproduces_an_uninterrupted_run(toy, tmp_path, algorithm):  # noqa: F811
    model_dir, data, site = toy
    common = dict(steps=6, save_every=3, eval_before=False, epochs=2, mini_batch_size=16, lr=3e-2)
    straight = load_config(None, [*toy_config(model_dir, data, tmp_path / "straight", **common), *algorithm, LORA])
    trainer = in_process_trainer(straight, site)
    if trainer.critic is not None and not trainer.critic.shares_policy:  # a critic of its own trains fully
        assert not has_adapters(trainer.critic.module)
        assert all(p.requires_grad for p in trainer.critic.parameters())
    trainer.run()

    interrupted = load_config(None, [*toy_config(model_dir, data, tmp_path / "resumed", **common), *algorithm, LORA])
    in_process_trainer(interrupted.model_copy(update={"train": interrupted.train.model_copy(
        update={"steps": 4})}), site).run()  # checkpoints at steps 3 and 4
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-000003"
    assert (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(checkpoint.glob("*.safetensors"))  # the adapters, not the whole model
    for written in ("checkpoints/step-000004", "final"):  # as if killed during step 4
        shutil.rmtree(tmp_path / "resumed" / written)
    (tmp_path / "resumed" / "results.json").unlink()
    resumed = in_process_trainer(interrupted, site, resume=True)
    assert resumed.step == 3
    resumed.run()
    expected, got = training_metrics(tmp_path / "straight"), training_metrics(tmp_path / "resumed")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    for name, tensor in load_file(tmp_path / "straight" / "final" / "model.safetensors").items():
        assert torch.allclose(load_file(tmp_path / "resumed" / "final" / "model.safetensors")[name], tensor,
                              rtol=1e-5, atol=1e-7), name


def test_a_checkpoint_of_full_weights_does_not_resume_a_lora_run(toy, tmp_path):  # noqa: F811
    model_dir, data, site = toy
    overrides = toy_config(model_dir, data, tmp_path / "run", steps=1, eval_before=False, save_every=1)
    in_process_trainer(load_config(None, overrides), site).run()
    (tmp_path / "run" / "results.json").unlink()
    config = load_config(None, [*overrides, LORA, "train.steps=2"])
    with pytest.raises(ConfigError, match="holds full weights but the run trains LoRA adapters"):
        in_process_trainer(config, site, resume=True, force_resume=True)


# --- the supervised stages ---

def _stage_outputs(stage: str, model_path, ids: torch.Tensor, adapter_dir: Path | None = None) -> torch.Tensor:
    """What the command that consumes the stage's final model computes with it: a reward model's scores (the
    `reward_model` reward's loader), else the causal LM's logits (rlvf eval, rlvf train, the judge's local
    backend). With `adapter_dir`: the base model `model_path` with those adapters, as peft loads them."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlvf_rm.model import load_reward_model

    if adapter_dir is not None:
        base = (AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1) if stage == "train-rm"
                else AutoModelForCausalLM.from_pretrained(model_path))
        model = with_peft_adapters(base, adapter_dir)
    elif stage == "train-rm":
        model = load_reward_model(str(model_path))[0]
    else:
        model = load_policy(ModelConfig(name=str(model_path))).model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", list(SECTIONS))
def test_a_supervised_stage_trains_lora_saves_the_merged_model_and_resumes(tmp_path, char_model_dir, tiny_model_dir,
                                                                        stage):
    section = SECTIONS[stage]
    base_model = tiny_model_dir if stage == "train-judge" else char_model_dir
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def command(run_dir: Path) -> list[str]:
        return [*stage_command(tmp_path, stage, run_dir, char_model_dir, tiny_model_dir), LORA,
                f"{section}.lr=3e-2"]

    run_rlvf(*command(straight))
    results = json.loads((straight / "results.json").read_text())
    assert results["after"]["loss"] < results["before"]["loss"], results  # it learns
    for checkpoint in (straight / "checkpoints").glob("step-*"):  # the adapters and the optimizer, not the model
        assert (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
        assert not list(checkpoint.glob("*.safetensors"))

    final = straight / "final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    ids = torch.tensor([[5, 9, 12, 7, 3, 20, 11]])
    merged = _stage_outputs(stage, final, ids)
    assert torch.allclose(merged, _stage_outputs(stage, base_model, ids, adapter_dir=final / "adapter"), atol=1e-4)
    if stage != "train-rm":  # (a reward model's head is new: it has no output before training to compare with)
        assert (merged - _stage_outputs(stage, base_model, ids)).abs().max() > 1e-3

    # --resume after a kill at step 6: the checkpoint of step 4 gives the uninterrupted run's metrics and weights
    shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns("final", "results.json"))
    for checkpoint in (resumed / "checkpoints").glob("step-*"):
        if int(checkpoint.name.split("-")[1]) > 4:
            shutil.rmtree(checkpoint)
    again = run_rlvf(*command(resumed), "--resume")
    assert f"resuming {resumed} from step 4 of 10" in again.stderr
    expected, got = _logged(straight), _logged(resumed)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    expected_weights = load_file(final / "model.safetensors")
    got_weights = load_file(resumed / "final" / "model.safetensors")
    assert expected_weights.keys() == got_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.allclose(got_weights[name], tensor, rtol=1e-5, atol=1e-7), name


# --- the vLLM sampler ---

@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_grpo_with_lora_and_the_vllm_sampler_sends_the_engine_the_merged_weights(tmp_path):
    from test_vllm import hf_logprobs

    from rlvf.models.loading import encode_prompts
    from rlvf.plugins import get_registry
    from rlvf.stages.rl import Trainer

    overrides = {
        "model.name": "smollm2-135m", "model.lora": {"r": 16, "alpha": 32}, "task.name": "arithmetic",
        "reward.mix.math": 1.0, "reward.mix.boxed": 0.1, "sampling.sampler": "vllm", "sampling.max_new_tokens": 16,
        "sampling.vllm_kv_cache_gb": 0.5, "algorithm.beta": 0.0, "train.steps": 2, "train.prompts_per_step": 2,
        "train.group_size": 4, "train.micro_batch_size": 8, "train.lr": 1e-3, "train.save_every": 0,
        "train.eval_before": False, "train.report_to": ["jsonl"], "train.output_dir": str(tmp_path / "run"),
        "eval.limit": 2, "eval.max_new_tokens": 16,
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    trainer = Trainer(config, get_registry())
    assert trainer.sampler.name == "vllm" and has_adapters(trainer.model)
    trainer.run()
    for record in training_metrics(tmp_path / "run"):  # each step sampled from the adapted policy of the last
        assert -1e-6 < record["mismatch/kl"] < 1e-3

    prompt = encode_prompts(trainer.tokenizer, [trainer.train_rows[0]["prompt"]])[0]
    fixed = trainer.tokenizer("\\boxed{12}", add_special_tokens=False)["input_ids"]
    engine = trainer.sampler
    assert torch.allclose(torch.tensor(engine.logprobs_of(prompt, fixed)), hf_logprobs(trainer.model, prompt, fixed),
                          atol=5e-4)
    with torch.no_grad():  # adapters that change the policy a lot: the engine follows them
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    engine.sync_weights(trainer.model)
    adapted = hf_logprobs(trainer.model, prompt, fixed)
    with adapters_disabled(trainer.model):
        assert (adapted - hf_logprobs(trainer.model, prompt, fixed)).abs().max() > 0.05
    assert torch.allclose(torch.tensor(engine.logprobs_of(prompt, fixed)), adapted, atol=5e-4)


# --- several ranks ---

@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_lora_under_ddp_matches_one_process(char_model_dir, tmp_path):
    """Two gloo ranks with DDP over a model whose base weights have no gradient: the adapters' gradients and the
    metrics equal one process's on the same global batch (GRPO with a KL to the adapters-off reference)."""
    from test_distributed import PER_MICRO_BATCH, launch, overrides

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": f"say digits {i}"}) + "\n" for i in range(24)))

    def args(run: str) -> list[str]:
        return [*overrides(char_model_dir, data, tmp_path / run, "grpo_batch", steps=2), LORA]

    single = launch(tmp_path / "single.pt", args("single"))
    ranks = launch(tmp_path / "ddp.pt", [*args("ddp"), 'train.parallel="ddp"'], ranks=2)
    assert ranks["world_size"] == 2
    for step, (a, b) in enumerate(zip(single["grads"], ranks["grads"], strict=True)):
        trained = sorted(name for name, grad in a.items() if grad is not None)
        assert trained == sorted(name for name, grad in b.items() if grad is not None)
        assert trained and all("lora_" in name for name in trained)
        for name in trained:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=lambda m, s=step, n=name:
                                       f"step {s}, gradient of {n}: {m}")
    for a, b in zip(single["metrics"], ranks["metrics"], strict=True):
        for key in set(a) - set(PER_MICRO_BATCH):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert (tmp_path / "ddp" / "final" / "adapter" / "adapter_model.safetensors").is_file()


def test_lora_with_fsdp_is_refused_before_the_model_loads(monkeypatch, toy, tmp_path):  # noqa: F811
    from rlvf.engine.distributed import Distributed

    model_dir, data, site = toy
    monkeypatch.setattr("rlvf.stages.rl.init_distributed", lambda parallel: Distributed(parallel, rank=0, world_size=2))
    config = load_config(None, [*toy_config(model_dir, data, tmp_path / "run"), LORA, 'train.parallel="fsdp"'])
    with pytest.raises(ConfigError, match=r"model\.lora with train\.parallel = 'fsdp' is not supported"):
        in_process_trainer(config, site)
