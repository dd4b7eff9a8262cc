"""The RL loop end to end on tiny real models: it learns, it resumes exactly, it survives SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, kill_when, run_rlvf, write_distribution
from rlvf.config import Config, load_config
from rlvf.plugins import PluginInfo, load_registry
from rlvf.stages.rl import Trainer

DIGITS_PLUGIN = """
from rlvf import hookimpl

def digits(prompts, completions, **columns):
    '''Fraction of the completion's characters that are digits (a verifiable, dense toy reward).'''
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

@hookimpl
def register_rewards(register):
    register(digits)
"""

TIMING_KEYS = ("time/", "tokens_per_second")


def toy_config(model_dir, data_file, output_dir, report_to=("jsonl",), **train) -> list[str]:
    overrides = {
        "model.name": str(model_dir), "task.name": "digits", "task.dataset": str(data_file),
        "task.chat": False, "task.template": "{question}:", "reward.mix.digits": 1.0,
        "sampling.sampler": "hf", "sampling.max_new_tokens": 12, "eval.max_new_tokens": 12, "eval.limit": 8,
        "train.output_dir": str(output_dir), "train.report_to": report_to, "train.progress": False,
        "train.prompts_per_step": 4, "train.group_size": 8, "train.micro_batch_size": 16, "train.lr": 3e-3,
        "algorithm.beta": 0.0, **{f"train.{k}": v for k, v in train.items()},
    }
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


@pytest.fixture
def toy(tmp_path, char_model_dir):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": f"say digits {i}"}) + "\n" for i in range(40)))
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(site, "rlvf-digits", "rlvf_digits", DIGITS_PLUGIN, {"digits": "rlvf_digits"})
    return char_model_dir, data, site


def in_process_trainer(config: Config, site, resume=False, force_resume=False) -> Trainer:
    import importlib
    import sys

    sys.path.insert(0, str(site))
    try:
        module = importlib.import_module("rlvf_digits")
    finally:
        sys.path.remove(str(site))
    registry = load_registry()
    registry.add_plugin(module, PluginInfo("digits", "rlvf-digits", "0.1.0", "digits = rlvf_digits"))
    return Trainer(config, registry, resume=resume, force_resume=force_resume)


def training_metrics(run_dir) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in records if "loss" in r]


@pytest.mark.timeout(300)
def test_reward_rises_on_a_tiny_model(toy, tmp_path):
    model_dir, data, site = toy
    config = load_config(None, toy_config(model_dir, data, tmp_path / "run", report_to=["jsonl", "tensorboard"],
                                          steps=30, eval_before=True))
    results = in_process_trainer(config, site).run()
    rewards = [m["reward/mean"] for m in training_metrics(tmp_path / "run")]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, f"reward did not rise: first steps {rewards[:5]}, last steps {rewards[-5:]}"
    assert results["after"]["reward/digits"] > results["before"]["reward/digits"] + 0.3
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()

    # The run's artefacts: TensorBoard events and curves drawn by `rlvf plot`.
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    plotted = run_rlvf("plot", str(tmp_path / "run")).stdout.strip()
    assert plotted.endswith("curves.png") and Path(plotted).stat().st_size > 20_000
    # `rlvf eval` on the trained model agrees with the trainer's own final evaluation.
    evaluated = run_rlvf("eval", *toy_config(model_dir, data, tmp_path / "unused"), "--model",
                         str(tmp_path / "run" / "final"), env={"PYTHONPATH": str(site)}).stdout
    assert f"{results['after']['reward/digits']:.4f}" in evaluated


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithm", [[], ['algorithm.preset="ppo"', "algorithm.beta=0.01", "critic.lr=3e-3"]],
                         ids=["grpo", "ppo"])
def test_resume_reproduces_an_uninterrupted_run(toy, tmp_path, algorithm):
    model_dir, data, site = toy
    common = dict(steps=6, save_every=3, eval_before=False, epochs=2, mini_batch_size=16)
    straight = load_config(None, [*toy_config(model_dir, data, tmp_path / "straight", **common), *algorithm])
    in_process_trainer(straight, site).run()

    interrupted = load_config(None, [*toy_config(model_dir, data, tmp_path / "resumed", **common), *algorithm])
    first_half = in_process_trainer(interrupted.model_copy(update={"train": interrupted.train.model_copy(
        update={"steps": 4})}), site)
    first_half.run()  # checkpoints at steps 3 and 4
    # As if the run had been killed during step 4: its checkpoint, final model and results never written.
    for written in ("checkpoints/step-000004", "final"):
        shutil.rmtree(tmp_path / "resumed" / written)
    (tmp_path / "resumed" / "results.json").unlink()
    resumed = in_process_trainer(interrupted, site, resume=True)
    assert resumed.step == 3
    if resumed.critic is not None:  # the critic's weights and optimizer come back from the checkpoint
        assert (tmp_path / "resumed" / "checkpoints" / "step-000003" / "critic" / "critic.safetensors").is_file()
        assert resumed.critic.optimizer.state_dict()["state"]
    resumed.run()
    expected, got = training_metrics(tmp_path / "straight"), training_metrics(tmp_path / "resumed")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


def start_toy_run(toy, run_dir, stdout, text: bool = True, **options):
    """`rlvf train` on the toy task in a subprocess, as a user starts it: (process, its argv, its env)."""
    model_dir, data, site = toy
    args = [str(BIN / "rlvf"), "train", *toy_config(model_dir, data, run_dir, eval_before=False, **options)]
    env = {**os.environ, "PYTHONPATH": str(site)}
    # A shell that starts the suite in the background (`make test &`) ignores SIGINT, and the child would inherit
    # that; the Ctrl-C tests need the terminal's default, which Python turns into KeyboardInterrupt.
    process = subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.PIPE, text=text,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, args, env


@pytest.mark.timeout(300)
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(toy, tmp_path):
    run_dir = tmp_path / "run"
    process, args, env = start_toy_run(toy, run_dir, steps=40, save_every=2, stdout=subprocess.DEVNULL, text=False)
    checkpoints = run_dir / "checkpoints"
    kill_when(process, lambda: any(checkpoints.glob("step-00000[4-9]")), seconds=120)
    saved = sorted(p.name for p in checkpoints.glob("step-*"))
    assert saved, "no checkpoint was written before the kill"
    last_saved = int(saved[-1].split("-")[1])

    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    steps = [m["step"] for m in training_metrics(run_dir)]
    assert steps == list(range(1, 41)), f"resumed after step {last_saved}: logged steps {steps}"
    assert (run_dir / "final" / "model.safetensors").is_file()

    # Resuming a finished run trains nothing more and reports the same results.
    logged = (run_dir / "metrics.jsonl").read_text()
    again = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and again.stdout == resumed.stdout
    assert (run_dir / "metrics.jsonl").read_text() == logged


def test_an_existing_run_directory_is_not_overwritten(toy, tmp_path):
    model_dir, data, site = toy
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    config = load_config(None, toy_config(model_dir, data, tmp_path / "run", steps=1))
    with pytest.raises(Exception, match="already holds a run: resume it with --resume"):
        in_process_trainer(config, site)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kl_in", ["loss", "reward"])
def test_kl_to_a_reference_model_is_measured_and_grows_from_zero(toy, tmp_path, kl_in):
    model_dir, data, site = toy
    overrides = toy_config(model_dir, data, tmp_path / "run", steps=4, eval_before=False)
    config = load_config(None, [*overrides, "algorithm.beta=0.04", f"algorithm.kl_in={json.dumps(kl_in)}"])
    trainer = in_process_trainer(config, site)
    assert trainer.reference is not None
    trainer.run()
    kl = [m["kl"] for m in training_metrics(tmp_path / "run")]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert all(value >= 0 for value in kl) and kl[-1] > 1e-6  # k3 is non-negative; training moves away


def learning_run(toy, tmp_path, *extra: str, steps: int = 30) -> tuple[Trainer, list[dict]]:
    model_dir, data, site = toy
    config = load_config(None, [*toy_config(model_dir, data, tmp_path / "run", steps=steps, eval_before=False,
                                            save_every=0), *extra])
    trainer = in_process_trainer(config, site)
    trainer.run()
    return trainer, training_metrics(tmp_path / "run")


def assert_reward_rises(metrics: list[dict]) -> None:
    rewards = [m["reward/mean"] for m in metrics]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, f"reward did not rise: first steps {rewards[:5]}, last steps {rewards[-5:]}"


@pytest.mark.timeout(60)
def test_ppo_with_a_critic_and_kl_in_the_reward_learns(toy, tmp_path):
    trainer, metrics = learning_run(toy, tmp_path, 'algorithm.preset="ppo"', "algorithm.beta=0.01",
                                    "critic.lr=3e-3")
    assert trainer.critic is not None and trainer.critic.backbone is not None and trainer.reference is not None
    assert_reward_rises(metrics)
    assert all(key in metrics[-1] for key in ("value_loss", "value_clip_fraction", "critic/explained_variance", "kl"))
    # the critic learns to predict the returns: its explained variance grows
    explained = [m["critic/explained_variance"] for m in metrics if "critic/explained_variance" in m]
    assert sum(explained[-5:]) / 5 > sum(explained[:5]) / 5


@pytest.mark.timeout(60)
def test_rloo_learns_without_a_critic(toy, tmp_path):
    trainer, metrics = learning_run(toy, tmp_path, 'algorithm.preset="rloo"')
    assert trainer.critic is None and "value_loss" not in metrics[-1]
    assert_reward_rises(metrics)


@pytest.mark.timeout(60)
def test_a_value_head_on_the_policy_backbone_trains(toy, tmp_path):
    trainer, metrics = learning_run(toy, tmp_path, 'algorithm.preset="ppo"', "critic.share_policy_backbone=true",
                                    "critic.lr=3e-3", "critic.vf_coef=0.1", steps=8)
    assert trainer.critic.backbone is None  # no second model: only Linear(hidden, 1)
    assert sum(p.numel() for p in trainer.critic.parameters()) == trainer.model.config.hidden_size + 1
    assert trainer.critic.head.weight.abs().sum() > 0  # it started at 0 and learned
    assert all(m["value_loss"] >= 0 and "critic/grad_norm" in m for m in metrics)
    assert not (tmp_path / "run" / "final" / "critic").exists()  # the final HF model is the policy alone


# --- issue #16: checkpoints verified, run directories checked first, resume and Ctrl-C say what they do ---

def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle: same size, other content
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle: middle + 64]) + data[middle + 64:])


def interrupted_run(toy, tmp_path, steps=4, **train) -> tuple[list[str], Path]:
    """A run of `steps` steps that saved every 2, then lost its final model and results (as if killed)."""
    model_dir, data, site = toy
    overrides = toy_config(model_dir, data, tmp_path / "run", steps=steps, save_every=2, eval_before=False, **train)
    in_process_trainer(load_config(None, overrides), site).run()
    shutil.rmtree(tmp_path / "run" / "final")
    (tmp_path / "run" / "results.json").unlink()
    return overrides, tmp_path / "run"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(toy, tmp_path, capsys, how):
    from rlvf.engine.rundir import checkpoint_problem

    overrides, run_dir = interrupted_run(toy, tmp_path)
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000004"]
    assert all((p / "manifest.json").is_file() and checkpoint_problem(p) is None for p in checkpoints.iterdir())
    damage(checkpoints / "step-000004" / "model.safetensors", how)
    capsys.readouterr()

    resumed = in_process_trainer(load_config(None, overrides), toy[2], resume=True)
    err = capsys.readouterr().err
    reason = "truncated" if how == "truncate" else "corrupted, checksum mismatch"
    assert f"checkpoint step-000004 is damaged (model.safetensors: {reason}" in err
    assert "; resuming from step-000002\n" in err and f"resuming {run_dir} from step 2 of 4" in err
    assert resumed.step == 2
    resumed.run()  # rewrites step 4 whole
    assert [m["step"] for m in training_metrics(run_dir)] == [1, 2, 3, 4]
    assert checkpoint_problem(checkpoints / "step-000004") is None


@pytest.mark.timeout(120)
def test_no_usable_checkpoint_is_one_clear_error(toy, tmp_path):
    from rlvf.errors import ConfigError

    overrides, run_dir = interrupted_run(toy, tmp_path)
    damage(run_dir / "checkpoints" / "step-000004" / "trainer_state.pt", "truncate")
    (run_dir / "checkpoints" / "step-000002" / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as error:
        in_process_trainer(load_config(None, overrides), toy[2], resume=True)
    message = str(error.value)
    assert "\n" not in message
    assert "step-000004 (trainer_state.pt: truncated" in message and "step-000002 (model.safetensors: missing)" \
        in message and "remove the directory to start over, or set train.output_dir" in message


@pytest.mark.timeout(120)
def test_keep_checkpoints_keeps_the_newest_n(toy, tmp_path):
    _, run_dir = interrupted_run(toy, tmp_path, steps=8, keep_checkpoints=3)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000004", "step-000006",
                                                                          "step-000008"]
    shutil.rmtree(tmp_path / "run")
    _, run_dir = interrupted_run(toy, tmp_path, steps=6, keep_checkpoints=0)  # 0: all
    assert len(list((run_dir / "checkpoints").iterdir())) == 3


def test_run_directory_problems_are_found_before_the_model_loads(toy, tmp_path):
    from rlvf.errors import ConfigError

    _, data, site = toy
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the run directory is checked first

    def trainer(output_dir, resume=False):
        return in_process_trainer(load_config(None, toy_config(missing_model, data, output_dir, steps=1)), site,
                                  resume=resume)

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=rf"train.output_dir = {a_file} is a file, not a directory: set "
                                          "train.output_dir to another path"):
        trainer(a_file)
    with pytest.raises(ConfigError, match=rf"{a_file} is a file, not a directory"):
        trainer(a_file / "run")
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"{finished} already holds a run: set train.output_dir to a new "
                                          r"directory \(or remove it; that run finished, see results.json\)"):
        trainer(finished)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command,section", [("sft", "sft"), ("train-rm", "rm"), ("dpo", "dpo"),
                                             ("train-judge", "judge")])
def test_supervised_stages_check_their_output_dir_before_loading(tmp_path, command, section):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": "x",
                                         "completion": str(i + 1), "response": str(i + 1), "label": i % 2}) + "\n"
                             for i in range(10)))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    data = {"sft": [f"sft.dataset={json.dumps(str(pairs))}"], "judge": [f"judge.dataset={json.dumps(str(pairs))}"],
            "rm": [f"preference.dataset={json.dumps(str(pairs))}"],
            "dpo": [f"preference.dataset={json.dumps(str(pairs))}"]}[section]
    key = f"{section}.output_dir"
    for output_dir, expected in ((a_file, f"{key} = {a_file} is a file, not a directory: set {key} to another path"),
                                 (tmp_path, f"{tmp_path} already holds a run: resume it with --resume, or set "
                                            f"{key} to a new directory")):
        result = run_rlvf(command, f"model.name={json.dumps(str(tmp_path / 'no-such-model'))}", *data,
                          f"{key}={json.dumps(str(output_dir))}", check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"rlvf {command}: error: {expected}"
        assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_resume_says_what_it_does_and_refuses_another_config(toy, tmp_path, capsys):
    from rlvf.errors import ConfigError

    model_dir, data, site = toy
    fresh = toy_config(model_dir, data, tmp_path / "fresh", steps=1, eval_before=False)
    in_process_trainer(load_config(None, fresh), site, resume=True)  # nothing there yet
    assert f"--resume: no checkpoint in {tmp_path / 'fresh'}: starting fresh" in capsys.readouterr().err

    overrides, run_dir = interrupted_run(toy, tmp_path)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["reward"]["mix"]["digits"]["weight"] == 1.0 and saved["train"]["steps"] == 4
    with pytest.raises(ConfigError) as error:
        in_process_trainer(load_config(None, [*overrides, "reward.mix.digits=2.0", "train.lr=0.001"]), site,
                           resume=True)
    message = str(error.value)
    assert "\n" not in message
    assert "reward.mix.digits.weight: 1.0 -> 2.0" in message and "train.lr: 0.003 -> 0.001" in message
    assert "--force-resume" in message
    capsys.readouterr()
    # train.steps (and logging, saving and evaluation settings) may change on a resume
    longer = in_process_trainer(load_config(None, [*overrides, "train.steps=6"]), site, resume=True)
    assert f"resuming {run_dir} from step 4 of 6" in capsys.readouterr().err and longer.step == 4
    forced = in_process_trainer(load_config(None, [*overrides, "reward.mix.digits=2.0"]), site, resume=True,
                                force_resume=True)
    assert "--force-resume: " in capsys.readouterr().err and forced.step == 4
    assert json.loads((run_dir / "config.json").read_text())["reward"]["mix"]["digits"]["weight"] == 2.0


@pytest.mark.timeout(240)
def test_ctrl_c_saves_a_checkpoint_and_prints_one_line(toy, tmp_path):
    import shlex

    run_dir = tmp_path / "run"
    process, _, env = start_toy_run(toy, run_dir, steps=500, save_every=100, stdout=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(training_metrics(run_dir) if (run_dir / "metrics.jsonl").exists()
                                         else []) < 3:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    step = int(last.split("interrupted at step ")[1].split(" ")[0])
    assert last.startswith(f"interrupted at step {step} (checkpoint saved); resume with rlvf train ")
    assert last.endswith(" --resume") and 3 <= step < 500
    assert (run_dir / "checkpoints" / f"step-{step:06d}" / "manifest.json").is_file()

    again = shlex.split(last.split("resume with ")[1])
    resumed = subprocess.run([str(BIN / "rlvf"), *again[1:], f"train.steps={step + 2}"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} from step {step} of {step + 2}" in resumed.stderr
    assert [m["step"] for m in training_metrics(run_dir)] == list(range(1, step + 3))


@pytest.mark.timeout(120)
def test_sample_completions_are_logged_with_their_rewards(toy, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model_dir, data, site = toy
    config = load_config(None, toy_config(model_dir, data, tmp_path / "run", report_to=["jsonl", "tensorboard"],
                                          steps=4, eval_before=False, save_every=0, log_completions_every=2))
    in_process_trainer(config, site).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] * 32 + [4] * 32  # prompts_per_step 4 x group_size 8
    for row in rows:
        text = row["completion"]
        assert row["prompt"].startswith("say digits ") and row["prompt"].endswith(":")
        assert row["rewards"]["digits"] == pytest.approx(sum(c.isdigit() for c in text) / max(len(text), 1))
        assert row["reward"] == pytest.approx(row["rewards"]["digits"])  # the mix: digits with weight 1
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert "completions/text_summary" in events.Tags()["tensors"]
    assert [e.step for e in events.Tensors("completions/text_summary")] == [2, 4]

    off = load_config(None, toy_config(model_dir, data, tmp_path / "off", steps=2, eval_before=False, save_every=0,
                                       log_completions_every=0))
    in_process_trainer(off, site).run()
    assert not (tmp_path / "off" / "completions.jsonl").exists()


@pytest.mark.timeout(240)
def test_a_second_ctrl_c_stops_at_once_and_leaves_every_checkpoint_whole(toy, tmp_path):
    import re

    from rlvf.engine.rundir import checkpoint_problem

    run_dir = tmp_path / "run"
    process, args, env = start_toy_run(toy, run_dir, steps=500, save_every=1, keep_checkpoints=0,
                                       stdout=subprocess.DEVNULL)
    checkpoints = run_dir / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(checkpoints.glob("step-000003")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.01)
    process.send_signal(signal.SIGINT)  # e.g. while a checkpoint is being written
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at step \d+ \((checkpoint saved|last checkpoint: step \d+)\); resume with "
                        r"rlvf train .* --resume", last), last
    saved = sorted(checkpoints.glob("step-*"))
    assert len(saved) >= 3 and all(checkpoint_problem(p) is None for p in saved)
    resumed = subprocess.run([*args, "--resume", f"train.steps={len(saved) + 1}"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {int(saved[-1].name.split('-')[1])} of {len(saved) + 1}" in resumed.stderr
