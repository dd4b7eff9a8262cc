"""The supervised stages (`rlvf sft`, `train-rm`, `dpo`, `train-judge`) checkpoint and resume like `rlvf train`: a
run SIGKILLed after a checkpoint and resumed logs the same metrics and ends with the same weights as one that
was never interrupted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_stage_reference import _logged, _setting, _stage_commands

from conftest import BIN, kill_when, run_rlvf

STEPS = 10
SECTIONS = {"sft": "sft", "train-rm": "rm", "dpo": "dpo", "train-judge": "judge"}


def _command(tmp_path: Path, stage: str, output_dir: Path, char_model: Path, tiny_model: Path) -> list[str]:
    """The stage's command of the stage reference test, for STEPS steps with a checkpoint every 2 into
    `output_dir`."""
    section = SECTIONS[stage]
    command = _stage_commands(tmp_path, char_model, tiny_model)[stage][:-1]  # its last setting is the output_dir
    return [*command, f"{section}.max_steps={STEPS}", f"{section}.save_every=2", f"{section}.keep_checkpoints=0",
            _setting(f"{section}.output_dir", str(output_dir))]


def _final_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "final" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", list(SECTIONS))
def test_a_supervised_stage_killed_with_sigkill_resumes_as_if_never_stopped(tmp_path, char_model_dir,
                                                                           tiny_model_dir, stage):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_rlvf(*_command(tmp_path, stage, straight, char_model_dir, tiny_model_dir))

    args = [str(BIN / "rlvf"), *_command(tmp_path, stage, killed, char_model_dir, tiny_model_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = killed / "checkpoints"
    kill_when(process, lambda: any(checkpoints.glob("step-*")))
    assert not (killed / "results.json").exists(), "the run finished before it was killed"
    last_saved = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
    assert 2 <= last_saved < STEPS

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=240, env=os.environ)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} from step {last_saved} of {STEPS}" in resumed.stderr
    expected, got = _logged(straight), _logged(killed)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    expected_weights, got_weights = _final_weights(straight), _final_weights(killed)
    assert expected_weights.keys() == got_weights.keys()
    for name, tensor in expected_weights.items():
        assert got_weights[name].allclose(tensor, rtol=1e-5, atol=1e-7), name
    results = json.loads((killed / "results.json").read_text())
    assert results["before"] == pytest.approx(json.loads((straight / "results.json").read_text())["before"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_of_a_supervised_stage_refuses_another_config_and_returns_a_finished_run(tmp_path, char_model_dir,
                                                                                       tiny_model_dir):
    run_dir = tmp_path / "sft"
    command = _command(tmp_path, "sft", run_dir, char_model_dir, tiny_model_dir)
    fresh = run_rlvf(*command, "--resume")  # nothing there yet: starts fresh
    assert f"--resume: no checkpoint in {run_dir}: starting fresh" in fresh.stderr
    logged = (run_dir / "metrics.jsonl").read_text()

    again = run_rlvf(*command, "--resume")  # a finished run: nothing more is trained, the same results
    assert again.stdout == fresh.stdout
    assert (run_dir / "metrics.jsonl").read_text() == logged

    refused = run_rlvf(*command, "sft.lr=0.001", "--resume", check=False)
    assert refused.returncode == 2, refused.stderr
    message = refused.stderr.strip().splitlines()[-1]
    assert "sft.lr: 0.003 -> 0.001" in message and "--force-resume" in message
