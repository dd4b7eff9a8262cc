"""Training under torchrun (gloo, 2 CPU processes) equals training in one process on the same global batch.

tests/distributed_run.py runs the real Trainer with completions that do not depend on the rank, so the two runs see
the same rollouts; what may differ is only how the work is split: each rank samples, scores and trains on half of
each step's prompts, the advantages need the whole batch (batch-normalised estimators here), the loss normalisers
are global, and DDP / FSDP2 reduce the gradients. Compared: every parameter's gradient at each optimiser step and
the logged metrics. Checkpoints hold full weights and optimizer state: one written by 2 ranks resumes in 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import BIN, REPO

pytestmark = pytest.mark.distributed

SCRIPT = REPO / "tests" / "distributed_run.py"
ALGORITHMS = {
    # GRPO with the std over the whole batch, KL to a reference model in the loss, mean over sequences
    "grpo_batch": ["algorithm.advantage_options={normalize=\"batch\"}", "algorithm.beta=0.04"],
    # REINFORCE++: returns whitened over every token of the batch, KL in the reward, mean over tokens
    "reinforce_pp": ["algorithm.preset=\"reinforce_pp\"", "algorithm.beta=0.04"],
    # PPO: a critic with its own decoder (a second DDP module), GAE whitened over the batch
    "ppo": ["algorithm.preset=\"ppo\"", "algorithm.beta=0.04", "critic.lr=1e-2"],
}


def overrides(model_dir, data, output_dir, algorithm: str, **train) -> list[str]:
    values = {
        "model.name": str(model_dir), "task.name": "digits", "task.dataset": str(data), "task.chat": False,
        "task.template": "{question}:", "reward.mix.digits": 1.0, "sampling.sampler": "hf",
        "sampling.max_new_tokens": 10, "eval.max_new_tokens": 4, "eval.limit": 2, "train.output_dir": str(output_dir),
        "train.report_to": ["jsonl"], "train.progress": False, "train.eval_before": False, "train.save_every": 0,
        "train.prompts_per_step": 4, "train.group_size": 4, "train.micro_batch_size": 3, "train.lr": 1e-2,
        "train.max_grad_norm": 1e9, **{f"train.{k}": v for k, v in train.items()},
    }
    return [f"{key}={json.dumps(value)}" for key, value in values.items()] + ALGORITHMS[algorithm]


def launch(out, args: list[str], ranks: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if ranks == 1:
        command = [sys.executable, str(SCRIPT), str(out), *args]
    else:
        command = [str(BIN / "torchrun"), "--nproc_per_node", str(ranks), "--master_port", str(_free_port()),
                   str(SCRIPT), str(out), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return torch.load(out)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"question": f"say digits {i}"}) + "\n" for i in range(24)))
    return path


@pytest.fixture(scope="module")
def single(char_model_dir, data, tmp_path_factory):
    """Three steps in one process, per algorithm (computed once, shared by the tests)."""
    cache = {}

    def run(algorithm: str) -> dict:
        if algorithm not in cache:
            where = tmp_path_factory.mktemp(f"single-{algorithm}")
            cache[algorithm] = launch(where / "out.pt", overrides(char_model_dir, data, where / "run", algorithm,
                                                                  steps=3))
        return cache[algorithm]
    return run


# Means over micro-batches: equal only where the micro-batches hold the same rows (micro_batch_size = group_size).
PER_MICRO_BATCH = ("kl", "entropy", "ratio/mean", "clip_fraction", "value_loss", "value_clip_fraction")


def assert_same(expected: dict, got: dict, steps: slice = slice(None), skip: tuple[str, ...] = ()) -> None:
    exp_grads, got_grads = expected["grads"][steps], got["grads"]
    assert len(got_grads) == len(exp_grads) > 0
    for step, (a, b) in enumerate(zip(exp_grads, got_grads, strict=True)):
        assert a.keys() == b.keys()
        for name in a:
            assert b[name] is not None, (step, name)
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=lambda m, s=step, n=name:
                                       f"step {s}, gradient of {n}: {m}")
    for a, b in zip(expected["metrics"][steps], got["metrics"], strict=True):
        assert a.keys() == b.keys()
        for key in set(a) - set(skip):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("parallel, algorithm", [("ddp", "grpo_batch"), ("fsdp", "reinforce_pp"), ("ddp", "ppo")])
def test_two_ranks_match_one_process_on_the_same_global_batch(parallel, algorithm, single, char_model_dir, data,
                                                              tmp_path):
    got = launch(tmp_path / "out.pt", [*overrides(char_model_dir, data, tmp_path / "run", algorithm, steps=2),
                                       f"train.parallel=\"{parallel}\""], ranks=2)
    assert got["world_size"] == 2
    expected = single(algorithm)
    # micro-batches of 3 rows: 6 in one process (the last of 1 row), 3 on each rank (the last of 2)
    assert_same(expected, got, steps=slice(0, 2), skip=PER_MICRO_BATCH)
    assert expected["metrics"][0]["loss"] != 0 and expected["metrics"][0]["kl"] >= 0
    # the final model is the full one, loadable as any HF directory
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.timeout(240)
def test_a_checkpoint_of_two_fsdp_ranks_resumes_in_one_process(single, char_model_dir, data, tmp_path):
    args = overrides(char_model_dir, data, tmp_path / "run", "reinforce_pp", save_every=1)
    launch(tmp_path / "first.pt", [*args, "train.steps=1", "train.parallel=\"fsdp\""], ranks=2)
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "trainer_state.pt").is_file()
    resumed = launch(tmp_path / "resumed.pt", [*args, "train.steps=3", "--resume"])
    assert [m["step"] for m in resumed["metrics"]] == [1, 2, 3]  # step 1 logged by the 2 ranks, then resumed
    resumed["metrics"] = resumed["metrics"][1:]
    # Steps 2 and 3 after the resume equal those of an unbroken run: the weights (step 2's gradients) and the AdamW
    # moments (the update of step 2, hence step 3's gradients) came back whole from the sharded run.
    assert_same(single("reinforce_pp"), resumed, steps=slice(1, 3))


def test_prompts_must_divide_between_the_ranks(monkeypatch, char_model_dir, data, tmp_path):
    from rlvf.config import load_config
    from rlvf.engine.distributed import Distributed
    from rlvf.errors import ConfigError
    from rlvf.plugins import load_registry
    from rlvf.stages.rl import Trainer

    monkeypatch.setattr("rlvf.stages.rl.init_distributed", lambda parallel: Distributed(parallel, rank=0, world_size=2))
    # the `digits` reward lives in distributed_run.py: an installed reward instead
    config = load_config(None, [a for a in overrides(char_model_dir, data, tmp_path / "run", "grpo_batch",
                                                     prompts_per_step=3) if "digits" not in a]
                         + ["reward.mix.boxed=1.0"])
    with pytest.raises(ConfigError, match="prompts_per_step = 3 must be divisible by the 2 ranks"):
        Trainer(config, load_registry())
    monkeypatch.setenv("WORLD_SIZE", "2")
    from rlvf.engine.distributed import init_distributed

    with pytest.raises(ConfigError, match=r"train\.parallel = 'none'"):
        init_distributed("none")


@pytest.mark.vllm
def test_vllm_tensor_parallel_size_reaches_the_engine(monkeypatch, tiny_model_dir):
    """What can be checked without GPUs: the engine is asked for the configured tensor-parallel size (the
    separate-server mode is tested against a real server in test_vllm_server.py)."""
    import vllm

    from rlvf.config import SamplingConfig
    from rlvf.models.loading import load_tokenizer
    from rlvf.sampling import sampler_from_config

    asked = {}

    class Engine:
        def __init__(self, **options):
            asked.update(options)

    monkeypatch.setattr(vllm, "LLM", Engine)
    model = type("Model", (), {"dtype": torch.float32, "generation_config": None, "name_or_path": str(tiny_model_dir)})
    tokenizer = load_tokenizer(str(tiny_model_dir))
    sampler_from_config(SamplingConfig(sampler="vllm", vllm_tensor_parallel_size=4), model(), tokenizer)
    assert asked["tensor_parallel_size"] == 4 and asked["model"] == str(tiny_model_dir)
