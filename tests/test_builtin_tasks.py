"""The built-in tasks of rlvf-tasks, loaded through the registry; sizes, splits and columns."""

from __future__ import annotations

import json

import pytest

from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.api.tasks import task_from_config
from rlvf.config import TaskConfig
from rlvf.errors import ConfigError
from rlvf.plugins import get_registry


def task(name, **options):
    return task_from_config(TaskConfig(name=name, options=options), get_registry())


def assert_disjoint(train, evaluation, key):
    assert not {r[key] for r in train} & {r[key] for r in evaluation}


def test_gsm_symbolic_has_numeric_answers_and_disjoint_splits():
    gsm = task("gsm_symbolic", train_size=60, eval_size=20)
    train, evaluation = gsm.rows("train"), gsm.rows("eval")
    assert len(train) == 60 and len(evaluation) == 20
    assert_disjoint(train, evaluation, "question")
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in evaluation)
    assert "\\boxed{}" in evaluation[0]["prompt"][-1]["content"]


def test_champ_has_all_270_problems_split_without_overlap():
    champ = task("champ")
    train, evaluation = champ.rows("train"), champ.rows("eval")
    assert len(train) + len(evaluation) == 270 and len(evaluation) == 54
    assert_disjoint(train, evaluation, "id")
    assert all(r["answer"] for r in train + evaluation)


def test_humaneval_has_164_problems_and_its_canonical_solutions_pass():
    humaneval = task("humaneval")
    rows = humaneval.rows("train") + humaneval.rows("eval")
    assert len(rows) == 164 and len({r["task_id"] for r in rows}) == 164
    sample = rows[:8]
    code = get_registry().reward("code").build()
    result = RewardMix([MixEntry("code", code)]).score(
        [r["prompt"] for r in sample], [r["code_prompt"] + r["canonical_solution"] for r in sample],
        **{key: [r[key] for r in sample] for key in ("tests", "entry_point", "code_prompt")})
    assert result.total == [1.0] * 8


def test_gsm8k_format_adapter_reads_a_local_file(tmp_path):
    source = tmp_path / "gsm.jsonl"
    source.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"work\n#### {i},000"}) + "\n"
                              for i in range(10)))
    gsm8k = task("gsm8k", dataset=str(source), eval_split=None, eval_fraction=0.2)
    train, evaluation = gsm8k.rows("train"), gsm8k.rows("eval")
    assert len(train) == 8 and len(evaluation) == 2
    assert all(r["answer"] == f"{r['question'][1:]}000" and "####" in r["solution"] for r in train)
    source.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ConfigError, match=r"row 0 of train .*no '#### answer' line"):
        task("gsm8k", dataset=str(source), eval_split=None).rows("train")
    with pytest.raises(ConfigError, match=r"needs options\.dataset"):
        task("gsm8k").rows("train")


def test_code_dataset_adapter_reads_mbpp_and_apps_layouts_and_the_code_reward_scores_them(tmp_path):
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"text": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3",
                                                                        "assert add(0, 0) == 0"]}) + "\n")
    apps = tmp_path / "apps.jsonl"
    apps.write_text(json.dumps({"question": "Print the sum of two numbers.",
                                "input_output": json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})})
                    + "\n")
    mbpp_rows = task("code_dataset", dataset=str(mbpp), eval_split=None, eval_fraction=0.0).rows("train")
    apps_rows = task("code_dataset", dataset=str(apps), layout="apps", eval_split=None, eval_fraction=0.0).rows("train")
    code = get_registry().reward("code").build()
    rows = mbpp_rows + apps_rows
    completions = ["```python\ndef add(a, b):\n    return a + b\n```",
                   "```python\na, b = map(int, input().split())\nprint(a + b)\n```"]
    scores = code(prompts=[r["prompt"] for r in rows], completions=completions, tests=[r["tests"] for r in rows])
    assert scores == [1.0, 1.0]
    with pytest.raises(ConfigError, match="not in apps layout"):
        task("code_dataset", dataset=str(mbpp), layout="apps", eval_split=None).rows("train")
