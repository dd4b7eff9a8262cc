"""The first hour with the CLI, as a new user meets it (issue #16): each test reproduces what used to go
wrong and shows what happens now."""

from __future__ import annotations

import json
import time

import tomllib

from conftest import REPO, run_rlvf
from rlvf.config import Config
from rlvf.config_docs import REFERENCE_FILE, every_stage_schema, reference_markdown
from rlvf.plugins import load_registry


def test_train_with_no_arguments_refuses_instead_of_starting_a_default_run(tmp_path):
    result = run_rlvf("train", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "needs a config" in result.stderr and "rlvf init" in result.stderr and "--defaults" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory left behind
    for stage in ("sft", "train-rm", "dpo", "train-judge"):
        assert "needs a config" in run_rlvf(stage, cwd=tmp_path, check=False).stderr


def test_init_writes_a_commented_starter_config_that_validates(tmp_path):
    out = run_rlvf("init", "simple_functions", cwd=tmp_path).stdout
    written = tmp_path / "rlvf.toml"
    assert "wrote rlvf.toml" in out and "rlvf train rlvf.toml" in out
    text = written.read_text()
    assert text.startswith("# rlvf starter config for the task 'simple_functions'")
    assert "# steps between checkpoints" in text  # the schema's comments come along
    config = Config.model_validate(tomllib.loads(text))
    assert config.task.name == "simple_functions"
    assert {name: entry.weight for name, entry in config.reward.mix.items()} == {"code": 1.0, "code_fence": 0.1}
    again = run_rlvf("init", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_rlvf("init", "nope", cwd=tmp_path, check=False).stderr.count("unknown task 'nope'") == 1


def test_options_may_come_after_overrides(tmp_path):
    config = tmp_path / "t.toml"
    config.write_text('[task]\nname = "arithmetic"\n[train]\nsteps = 3\n')
    out = run_rlvf("train", str(config), "--dry-run", f"train.output_dir={json.dumps(str(tmp_path / 'x'))}",
                   "train.prompts_per_step=2").stdout
    assert "# would run: 3 steps x 2 prompts x 8 completions of task 'arithmetic'" in out
    assert f'output_dir = "{tmp_path / "x"}"' in out
    # `--model` after the overrides reaches eval (the model is then checked first, in one line)
    result = run_rlvf("eval", str(config), "eval.limit=1", "--model", str(tmp_path / "missing"), check=False)
    assert "unrecognized arguments" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rlvf eval: error: --model = '{tmp_path / 'missing'}': no such directory; give a local model directory, "
        "an embedded model (smollm2-135m) or a hub id org/name"]


def test_dry_run_prints_the_resolved_config_and_what_would_run(tmp_path):
    out = run_rlvf("train", "--dry-run", "task.name=simple_functions", "algorithm=ppo", cwd=tmp_path).stdout
    resolved = tomllib.loads(out.split("# would run:")[0])
    assert resolved["algorithm"]["advantage"] == "gae" and resolved["train"]["group_size"] == 8  # defaults included
    assert "rewards code x1, code_fence x0.1 (sum)" in out and "(400 train rows, 100 eval rows)" in out
    assert list(tmp_path.iterdir()) == []
    bad = run_rlvf("train", "--dry-run", "reward.mix.nope=1", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "unknown reward 'nope'" in bad.stderr


def test_a_missing_model_is_one_line_and_fast_offline(tmp_path):
    from rlvf.errors import ConfigError
    from rlvf.models.names import resolve_model

    started = time.monotonic()
    result = run_rlvf("eval", "model.name=someone/not-cached-model", "eval.limit=1", check=False)
    assert time.monotonic() - started < 20  # it used to retry the hub for ~28 s
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "rlvf eval: error: model.name = 'someone/not-cached-model': there is no directory 'someone/not-cached-model' "
        "here and the hub model is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; give a local model "
        "directory, an embedded model (smollm2-135m) or a hub id org/name"]
    for name, expected in ((str(tmp_path / "no-such-dir"), "no such directory"),
                           (str(tmp_path), "a directory without config.json"),
                           ("runs/demo/final", "no such directory")):
        try:
            resolve_model(name)
        except ConfigError as exc:
            assert f"model.name = '{name}'" in str(exc) and expected in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{name} resolved")


def test_reward_by_reference_without_a_plugin(tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **columns):\n    '''Shorter is better.'''\n"
        "    return [1.0 / (1 + len(c)) for c in completions]\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "completion": "abc"}) + "\n")
    config = tmp_path / "run.toml"
    config.write_text('[reward.mix]\nbrief = { reward = "my_rewards.py:short", weight = 2.0 }\n')
    scored = json.loads(run_rlvf("score", str(config), "--input", str(rows), cwd=tmp_path).stdout)
    assert scored["brief"] == 0.25 and scored["reward"] == 0.5
    flag = json.loads(run_rlvf("score", "--reward", "my_rewards.py:short", "--input", str(rows), cwd=tmp_path).stdout)
    assert flag["my_rewards.py:short"] == 0.25
    assert run_rlvf("score", "--reward", "json:dumps", "--input", str(rows), cwd=tmp_path,
                    check=False).returncode == 2  # importable, but not a reward: it fails on the batch, by name
    for reference, message in (("nowhere.py:short", "there is no file nowhere.py"),
                               ("my_rewards.py:long", "my_rewards.py has no 'long'"),
                               ("no_such_pkg_xyz.rewards:f", "importing no_such_pkg_xyz.rewards raised "
                                                              "ModuleNotFoundError")):
        result = run_rlvf("score", "--reward", reference, "--input", str(rows), cwd=tmp_path, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_weights_and_biases_is_checked_before_anything_runs(tmp_path):
    result = run_rlvf("train", "--dry-run", 'train.report_to=["wandb"]', cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "train.report_to: Value error, 'wandb' needs the wandb package: pip install wandb" in result.stderr


def test_help_points_to_the_config_reference_and_the_reference_is_current():
    for command in ("train", "sft", "config"):
        assert REFERENCE_FILE in run_rlvf(command, "--help").stdout
    reference = reference_markdown(every_stage_schema(load_registry()))  # the plugins' stages too
    assert (REPO / REFERENCE_FILE).read_text() == reference + "\n", (
        f"{REFERENCE_FILE} is stale: regenerate it with `rlvf config --reference > {REFERENCE_FILE}`")
    for section, key in (("train", "keep_checkpoints"), ("sampling", "vllm_server"), ("reward.ray", "actors"),
                         ("rm", "margin"), ("judge", "format_weight"), ("judge.rows", "n")):
        assert f"## `[{section}]`" in reference and f"| `{key}` |" in reference


def test_config_prints_a_resolved_config_that_loads_back(tmp_path):
    out = run_rlvf("config", "train.lr=3e-6", "algorithm=dapo").stdout
    config = every_stage_schema(load_registry()).model_validate(tomllib.loads(out))  # every stage's sections
    assert config.train.lr == 3e-6 and config.algorithm.policy_loss_options == {"eps_low": 0.2, "eps_high": 0.28}
