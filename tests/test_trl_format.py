"""TRL-format datasets and rewards work unchanged (issue #16): a `prompt` column is the prompt, conversational
prompts give rewards chat completions, and bad data is refused early in one line naming what to fix."""

from __future__ import annotations

import json

import pytest

from conftest import run_rlvf, write_distribution
from rlvf.api.rewards import MixEntry, RewardMix, check_task_columns
from rlvf.api.tasks import DatasetTask, fill_template
from rlvf.api.text import reward_completions
from rlvf.errors import ConfigError

# Reward functions as TRL's documentation writes them (same signatures and behaviour, written here).
TRL_REWARDS = r'''
import re

from rlvf import hookimpl


def reward_len(completions, **kwargs):
    """Standard format: completions are strings; closer to 20 characters is better."""
    return [-abs(20 - len(completion)) for completion in completions]


def format_reward(completions, **kwargs):
    """Conversational format: 1.0 for <think>...</think><answer>...</answer>."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def think_format_reward(completions, **kwargs):
    """TRL's think_format_reward: 1.0 when the content is <think>...</think> then anything, one <think>."""
    pattern = r"^<think>(?!.*<think>)(.*?)</think>.*$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content, re.DOTALL | re.MULTILINE) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def prompt_seen(prompts, completions, **kwargs):
    """1.0 when the prompt the reward sees is the dataset's own question (not a template's literal)."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [1.0 if "1+1" in text else 0.0 for text in texts]


def picky(prompts, completions, **kwargs):
    """Raises on a batch of more than one completion: every batch is retried sample by sample."""
    if len(completions) > 1:
        raise ValueError("batch too big")
    return [1.0]


@hookimpl
def register_rewards(register):
    for reward in (reward_len, format_reward, think_format_reward, prompt_seen, picky):
        register(reward)
'''


@pytest.fixture
def trl_site(site):
    directory, env = site
    write_distribution(directory, "trl-rewards", "trl_rewards", TRL_REWARDS, {"trl_rewards": "trl_rewards"})
    return env


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


CHAT_ROWS = [{"prompt": [{"role": "user", "content": f"What is 1+1? ({i})"}], "solution": "2"} for i in range(12)]
TEXT_ROWS = [{"prompt": f"what is 1+1? {i}", "solution": "2"} for i in range(12)]


# --- 1. a `prompt` column is the prompt ---

def test_a_string_prompt_column_is_the_prompt_with_no_mapping(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", TEXT_ROWS)
    row = DatasetTask("my-qa", str(data)).rows("train")[0]
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert row["prompt"][0]["content"].startswith("what is 1+1?")  # before: the literal "{question}"
    plain = DatasetTask("my-qa", str(data), chat=False, system_prompt="Be brief.").rows("train")[0]
    assert plain["prompt"].startswith("Be brief.\n\nwhat is 1+1?")


def test_a_chat_prompt_column_is_used_as_is_after_a_configured_system_prompt(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    row = DatasetTask("my-chat", str(data)).rows("train")[0]
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert row["prompt"][0]["content"].startswith("What is 1+1?")
    with_system = DatasetTask("my-chat", str(data), system_prompt="Think first.",
                              few_shot=[("What is 2+2?", "4")]).rows("train")[0]
    assert [m["role"] for m in with_system["prompt"]] == ["system", "user", "assistant", "user"]
    assert with_system["prompt"][0]["content"] == "Think first."
    with pytest.raises(ConfigError, match="'prompt' column holds chat messages, but chat = false"):
        DatasetTask("my-chat", str(data), chat=False).rows("train")


def test_a_template_naming_a_missing_column_is_an_error_naming_it_and_the_columns(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"q": "1+1", "solution": "2"}] * 3)
    with pytest.raises(ConfigError) as error:  # no prompt column and no template: "{question}", which rows lack
        DatasetTask("my-qa", str(data)).rows("train")
    assert str(error.value) == (f"task 'my-qa' ({data}): template placeholder '{{question}}' is not a column of "
                                "the rows (they have: q, solution)")
    with pytest.raises(ConfigError, match=r"placeholder '\{qestion\}'.*they have: q, solution"):
        DatasetTask("my-qa", str(data), template="Solve {qestion}").rows("train")


def test_latex_braces_stay_literal_but_an_unknown_word_placeholder_does_not():
    row = {"q": "x"}
    assert fill_template(r"{q}: \boxed{} \text{cm} x^{n} a_{ij} \frac{a}{b} \boxed{{q}}", row) == \
        r"x: \boxed{} \text{cm} x^{n} a_{ij} \frac{a}{b} \boxed{x}"
    with pytest.raises(ConfigError, match=r"'\{answer\}' is not a column"):
        fill_template("Q: {q} A: {answer}", row)


# --- 2. TRL's completion convention ---

def test_completions_follow_the_prompt_form():
    chat = [{"role": "user", "content": "hi"}]
    assert reward_completions([chat, "hi"], ["a", [{"role": "assistant", "content": "b"}]]) == \
        [[{"role": "assistant", "content": "a"}], "b"]
    assert reward_completions(["", None], [[{"role": "assistant", "content": "c"}], "d"]) == \
        [[{"role": "assistant", "content": "c"}], "d"]  # no prompt: the completion's own form


def tiny_train(model_dir, data, output_dir, rewards, chat):
    overrides = {
        "model.name": str(model_dir), "task.name": "trl-data", "task.dataset": str(data), "task.chat": chat,
        **{f"reward.mix.{name}": 1.0 for name in rewards},
        "sampling.sampler": "hf", "sampling.max_new_tokens": 6, "eval.max_new_tokens": 6, "eval.limit": 2,
        "train.output_dir": str(output_dir), "train.report_to": ["jsonl"], "train.progress": False,
        "train.steps": 1, "train.prompts_per_step": 2, "train.group_size": 2, "train.micro_batch_size": 4,
        "train.eval_before": False, "algorithm.beta": 0.0,
    }
    return ["train", *(f"{key}={json.dumps(value)}" for key, value in overrides.items())]


def step_metrics(run_dir) -> dict:
    return next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r)


@pytest.mark.timeout(300)
def test_trl_conversational_rewards_run_unchanged_in_rlvf_train(tmp_path, trl_site, tiny_model_dir):
    """Before: prompts were chat messages but completions strings, so `completion[0]["content"]` raised."""
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run_rlvf(*tiny_train(tiny_model_dir, data, tmp_path / "run", ["format_reward", "think_format_reward",
                                                                    "prompt_seen", "think_format"], chat=True),
             env=trl_site)
    metrics = step_metrics(tmp_path / "run")
    for name in ("format_reward", "think_format_reward", "think_format"):  # the last: the built-in one
        assert metrics[f"reward/{name}/failures"] == 0 and metrics[f"reward/{name}/retries"] == 0
        assert 0.0 <= metrics[f"reward/{name}/mean"] <= 1.0
    assert metrics["reward/prompt_seen/mean"] == 1.0  # the rows' own prompt, not "{question}"


@pytest.mark.timeout(300)
def test_a_trl_standard_reward_runs_unchanged_on_string_prompts(tmp_path, trl_site, char_model_dir):
    data = write_jsonl(tmp_path / "text.jsonl", TEXT_ROWS)
    run_rlvf(*tiny_train(char_model_dir, data, tmp_path / "run", ["reward_len", "prompt_seen"], chat=False),
             env=trl_site)
    metrics = step_metrics(tmp_path / "run")
    assert -20 <= metrics["reward/reward_len/mean"] <= 0 and metrics["reward/reward_len/retries"] == 0
    assert metrics["reward/prompt_seen/mean"] == 1.0


def test_rlvf_score_passes_chat_completions_for_chat_prompts_and_counts_retries(tmp_path, trl_site):
    chat = [{"role": "user", "content": "What is 1+1?"}]
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": chat, "completion": "<think>one and one</think><answer>2</answer>"},  # a string completion
        {"prompt": chat, "completion": [{"role": "assistant", "content": "2"}]},
    ])
    result = run_rlvf("score", "--reward", "format_reward", "--reward", "think_format_reward", "--reward", "picky",
                      "--input", str(rows), "--output", str(tmp_path / "scored.jsonl"), env=trl_site)
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["format_reward"] for r in scored] == [1.0, 0.0]
    assert [r["think_format_reward"] for r in scored] == [1.0, 0.0]
    # 4. the batch error of `picky` is not lost when every sample then succeeds
    assert [r["picky"] for r in scored] == [1.0, 1.0]
    assert result.stderr.count("reward 'picky' raised on a batch of 2 (ValueError: batch too big)") == 1
    picky_line = next(line for line in result.stderr.splitlines() if line.startswith("picky"))
    assert picky_line.split()[-2:] == ["0", "1"]  # failures 0, retries 1


# --- 3. dataset errors name the file, the line and the column ---

def test_a_malformed_jsonl_line_is_named_by_file_and_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a"}\n\n{"prompt": "b"\n')
    with pytest.raises(ConfigError, match=rf"^{data}:3: not valid JSON \(Expecting ',' delimiter"):
        DatasetTask("t", str(data)).rows("train")
    data.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=rf"^{data}:2: expected a JSON object"):
        DatasetTask("t", str(data)).rows("train")


def test_an_empty_data_file_says_it_is_empty(tmp_path):
    for name, text in [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.json", "[]"), ("empty.csv", "")]:
        data = tmp_path / name
        data.write_text(text)
        with pytest.raises(ConfigError, match=rf"^{data}: the file is (an )?empty"):
            DatasetTask("t", str(data)).rows("train")


def test_a_column_a_reward_needs_is_checked_on_the_first_rows(tmp_path):
    from rlvf.plugins import load_registry

    data = write_jsonl(tmp_path / "qa.jsonl", TEXT_ROWS)
    registry = load_registry()
    task = DatasetTask("my-qa", str(data))
    math = MixEntry("math", registry.reward("math").build())
    assert math.needed_columns() == ("answer",)
    with pytest.raises(ConfigError) as error:
        check_task_columns(RewardMix([math]), task)
    assert str(error.value) == (f"reward 'math' needs column 'answer', which task 'my-qa' ({data}) rows do not "
                                "have (they have: prompt, solution)")
    renamed = MixEntry("math", registry.reward("math").build(answer_column="solution"))
    check_task_columns(RewardMix([renamed]), task)  # the option renames the column the reward reads
    assert registry.reward("code").factory.columns == ("tests",)


def test_rlvf_train_refuses_missing_reward_columns_before_the_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", TEXT_ROWS)
    result = run_rlvf("train", "model.name=/no/such/model", "task.name=my-qa", f"task.dataset={data}",
                      "reward.mix.math=1.0", f"train.output_dir={tmp_path / 'run'}", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"rlvf train: error: reward 'math' needs column 'answer', which task 'my-qa' ({data}) rows do not have "
        "(they have: prompt, solution)")
    assert not (tmp_path / "run").exists()


# --- 5. `rlvf tasks --config` shows a config's task ---

def test_rlvf_tasks_shows_the_rows_of_a_task_declared_in_a_config(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", TEXT_ROWS)
    config = tmp_path / "run.toml"
    config.write_text(f'[task]\nname = "my-qa"\ndataset = "{data}"\nchat = false\neval_fraction = 0.25\n')
    rows = [json.loads(line) for line in run_rlvf("tasks", "--config", str(config), "--limit", "2").stdout.splitlines()]
    assert len(rows) == 2 and all(r["prompt"].startswith("what is 1+1?") for r in rows)
    all_eval = run_rlvf("tasks", "--config", str(config), "--limit", "100").stdout.splitlines()
    assert len(all_eval) == 3  # the held-out 25% of 12 rows
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a"}\n{oops}\n')
    config.write_text(f'[task]\nname = "my-qa"\ndataset = "{broken}"\n')
    result = run_rlvf("tasks", "--config", str(config), check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"rlvf tasks: error: {broken}:2: not valid JSON")


def test_the_readme_plugin_example_scores_string_and_chat_completions(tmp_path, site):
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    source = readme.split("# rlvf-short/rlvf_short/plugin.py\n", 1)[1].split("```", 1)[0]
    directory, env = site
    write_distribution(directory, "rlvf-short", "rlvf_short_plugin", source, {"short": "rlvf_short_plugin"})
    chat = [{"role": "user", "content": "Say hi."}]
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Say hi.", "completion": "hi"},
                                                 {"prompt": chat, "completion": "hi"},
                                                 {"prompt": chat, "completion": "x" * 300}])
    run_rlvf("score", "--reward", "short", "--input", str(rows), "--output", str(tmp_path / "out.jsonl"), env=env)
    assert [json.loads(line)["short"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1.0, 1.0, 0.0]
