"""The `rlvf` command line as users run it."""

from __future__ import annotations

import json

from conftest import run_rlvf

ROWS = [
    {"prompt": "2+2?", "completion": "It is \\boxed{4}", "answer": "4", "id": 1},
    {"prompt": "Capital of France?", "completion": "The answer is Paris.", "answer": "Paris", "id": 2},
    {"prompt": "3*3?", "completion": "\\boxed{6}", "answer": "9", "id": 3},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_writes_row_fields_each_reward_and_the_mix_and_prints_a_summary(tmp_path):
    source, output = write_jsonl(tmp_path / "rows.jsonl", ROWS), tmp_path / "scored.jsonl"
    result = run_rlvf("score", "--reward", "qa_exact", "--reward", "boxed:0.5", "--input", str(source),
                      "--output", str(output))
    scored = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in scored] == [1, 2, 3] and scored[0]["answer"] == "4"
    assert [(r["qa_exact"], r["boxed"], r["reward"]) for r in scored] == [(1, 1, 1.5), (1, 0, 1), (0, 1, 0.5)]
    summary = result.stderr
    assert "qa_exact" in summary and "0.6667" in summary  # mean of qa_exact
    assert "reward" in summary and "1.0000" in summary  # mean of the mix
    assert "3 rows scored" in summary


def test_score_with_a_config_file_and_overrides(tmp_path):
    source = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    config = tmp_path / "run.toml"
    config.write_text('[reward.mix]\nexact = { reward = "qa_exact", weight = 2.0 }\n')
    out = run_rlvf("score", str(config), "reward.mix.exact.weight=3", "--input", str(source)).stdout
    assert [json.loads(line)["reward"] for line in out.splitlines()] == [3.0, 3.0, 0.0]
    assert all("exact" in json.loads(line) for line in out.splitlines())


def test_score_names_the_line_of_a_malformed_row(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"prompt": "x"}\n')
    result = run_rlvf("score", "--reward", "boxed", "--input", str(source), check=False)
    assert result.returncode == 2 and "rows.jsonl:3: row has no 'completion' field" in result.stderr
    source.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    assert "rows.jsonl:2: expected a JSON object" in run_rlvf("score", "--reward", "boxed", "--input", str(source),
                                                              check=False).stderr


def test_score_names_the_line_where_a_reward_fails_and_zero_policy_continues(tmp_path):
    rows = [dict(ROWS[0]), {"prompt": "p", "completion": "x"}]  # the second has no `answer`
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = run_rlvf("score", "--reward", "qa", "--input", str(source), check=False)
    assert result.returncode == 2
    assert "rows.jsonl:2: reward 'qa' failed on sample 1" in result.stderr
    result = run_rlvf("score", "--reward", "qa", "--on-error", "zero", "--input", str(source))
    assert [json.loads(line)["qa"] for line in result.stdout.splitlines()] == [1.0, 0.0]
    assert "failures" in result.stderr


def test_rewards_tasks_and_algorithms_listings():
    assert "max_length=512" in run_rlvf("rewards").stdout
    algorithms = run_rlvf("algorithms").stdout
    assert "seq_mean, token_mean" in algorithms and "gae, grpo, reinforce, reinforce_pp, rloo" in algorithms
    assert "ppo                        advantage = 'gae'" in algorithms  # the presets
    tasks = json.loads(run_rlvf("tasks", "--json").stdout)
    assert {"arithmetic"} <= {t["name"] for t in tasks}
    rows = [json.loads(line) for line in run_rlvf("tasks", "arithmetic", "--limit", "2").stdout.splitlines()]
    assert len(rows) == 2 and all("answer" in r and "prompt" in r for r in rows)


def test_unknown_command_arguments_fail_cleanly():
    result = run_rlvf("score", "--reward", "boxed:heavy", "--input", "x.jsonl", check=False)
    assert result.returncode == 2 and "the weight after ':' must be a number" in result.stderr


def test_score_with_the_math_reward_reads_the_answer_column(tmp_path):
    rows = [{"completion": "So the total is \\boxed{\\frac{1}{2}}.", "answer": "0.5"},
            {"completion": "#### 7,425,000", "answer": "$7425000$"},
            {"completion": "The answer is \\boxed{\\pm 2021}", "answer": "2021"}]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = run_rlvf("score", "--reward", "math", "--input", str(source)).stdout
    assert [json.loads(line)["math"] for line in out.splitlines()] == [1.0, 1.0, 0.0]
