"""Every stage, run by the CLI on a fixed seed with tiny models, logs the metrics stored in
tests/data/stage_reference.json: a refactor that changes what a stage computes fails here.

The references were recorded before the core was reshaped (issue #18). A change that means to alter a stage's
numbers re-records them, and says why in its commit:

    RLVF_RECORD_STAGE_REFERENCE=1 .venv/bin/pytest tests/test_stage_reference.py
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

from conftest import HAS_DIGIT_PLUGIN, REPO, run_rlvf, write_distribution
from rlvf_judge.judging import UNQUOTED_TEMPLATE

REFERENCE = REPO / "tests" / "data" / "stage_reference.json"
RECORD = os.environ.get("RLVF_RECORD_STAGE_REFERENCE") == "1"
# Wall-clock numbers differ from run to run; everything else is a function of the seed.
VOLATILE = ("time/", "tokens_per_second")


def _setting(key: str, value) -> str:
    """A command-line override: key=TOML value."""
    if isinstance(value, dict):
        return key + "={" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return f"{key}={json.dumps(value)}"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _pairs(n: int = 24) -> list[dict]:
    """Preference pairs of a toy preference: the chosen answer holds a digit."""
    rng = random.Random(0)
    return [{"prompt": f"q{i} {''.join(rng.choice('abcdef') for _ in range(4))}:",
             "chosen": f" {rng.randint(0, 99)} ok", "rejected": f" {''.join(rng.choice('xyz') for _ in range(3))}"}
            for i in range(n)]


def _stage_commands(tmp_path: Path, char_model: Path, tiny_model: Path) -> dict[str, list[str]]:
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"question": f"say digits {i}"} for i in range(24)])
    sums = _write_jsonl(tmp_path / "sums.jsonl", [{"q": f"{a}+{b}=", "a": f"{a + b}"}
                                                  for a, b in [(i % 10, (3 * i) % 10) for i in range(40)]])
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    judged = _write_jsonl(tmp_path / "judged.jsonl", [
        {"prompt": f"question {i}", "response": f"answer {i % 7}" if i % 2 == 0 else "no idea",
         "label": int(i % 2 == 0)}
        for i in range(32)])
    model = _setting("model.name", str(char_model))
    rl = [model, _setting("task.name", "toy"), _setting("task.dataset", str(prompts)), _setting("task.chat", False),
          _setting("task.template", "{question}:"), _setting("reward.mix.has_digit", 1.0),
          _setting("sampling.sampler", "hf"), _setting("sampling.max_new_tokens", 8),
          _setting("eval.max_new_tokens", 8), _setting("eval.limit", 4), "train.progress=false",
          "train.steps=2", "train.prompts_per_step=2", "train.group_size=4", "train.lr=3e-3", "train.eval_before=true"]
    preference = [model, _setting("preference.dataset", str(pairs))]
    return {
        "rl-grpo": ["train", *rl, "algorithm.beta=0.04", _setting("train.output_dir", str(tmp_path / "grpo"))],
        "rl-ppo": ["train", *rl, _setting("algorithm.preset", "ppo"), "algorithm.beta=0.02", "train.epochs=2",
                   "train.mini_batch_size=4", _setting("train.output_dir", str(tmp_path / "ppo"))],
        "sft": ["sft", model, _setting("sft.dataset", str(sums)), _setting("sft.columns", {"prompt": "q",
                                                                                          "completion": "a"}),
                "sft.max_steps=3", "sft.batch_size=8", "sft.micro_batch_size=4", "sft.lr=3e-3", "sft.progress=false",
                _setting("sft.output_dir", str(tmp_path / "sft"))],
        "train-rm": ["train-rm", *preference, "rm.max_steps=3", "rm.batch_size=8", "rm.micro_batch_size=4",
                     "rm.lr=1e-3", "rm.progress=false", _setting("rm.output_dir", str(tmp_path / "rm"))],
        "dpo": ["dpo", *preference, "dpo.max_steps=3", "dpo.batch_size=8", "dpo.micro_batch_size=4", "dpo.lr=1e-3",
                "dpo.kl_prompts=2", "dpo.kl_max_new_tokens=4", "dpo.progress=false",
                _setting("dpo.output_dir", str(tmp_path / "dpo"))],
        "train-judge": ["train-judge", _setting("model.name", str(tiny_model)), _setting("judge.dataset", str(judged)),
                        "judge.max_steps=3", "judge.batch_size=8", "judge.micro_batch_size=4", "judge.lr=1e-3",
                        "judge.progress=false",
                        # the question the reference was recorded with (the default until issue #19)
                        _setting("judge.template", UNQUOTED_TEMPLATE),
                        _setting("judge.output_dir", str(tmp_path / "judge"))],
    }


def _logged(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{key: value for key, value in record.items() if not key.startswith(VOLATILE)} for record in records]


def _differences(expected, actual, where: str) -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        problems = [f"{where}: keys {sorted(set(expected) ^ set(actual))} are on one side only"] \
            if set(expected) != set(actual) else []
        for key in sorted(set(expected) & set(actual)):
            problems += _differences(expected[key], actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} records, expected {len(expected)}"]
        return [p for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for p in _differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, int | float):
        if math.isnan(expected) and math.isnan(actual):
            return []
        # tolerance for summation order (another CPU, another thread count), not for another computation
        close = math.isclose(expected, actual, rel_tol=1e-3, abs_tol=1e-4)
        return [] if close else [f"{where}: {actual} != {expected}"]
    return [] if expected == actual else [f"{where}: {actual!r} != {expected!r}"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_stage_reproduces_its_stored_reference_metrics(tmp_path, char_model_dir, tiny_model_dir):
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(site, "rlvf-has-digit", "rlvf_has_digit", HAS_DIGIT_PLUGIN, {"has_digit": "rlvf_has_digit"})
    env = {"PYTHONPATH": str(site)}
    measured = {}
    for stage, command in _stage_commands(tmp_path, char_model_dir, tiny_model_dir).items():
        run_rlvf(*command, env=env)
        output_dir = Path(json.loads(command[-1].split("=", 1)[1]))
        measured[stage] = _logged(output_dir)
    if RECORD:
        REFERENCE.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    reference = json.loads(REFERENCE.read_text())
    assert sorted(reference) == sorted(measured), "a stage is missing from the stored reference: re-record it"
    problems = [p for stage in reference for p in _differences(reference[stage], measured[stage], stage)]
    assert not problems, "\n".join(problems[:40])
