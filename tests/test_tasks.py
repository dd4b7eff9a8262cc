"""Tasks: the built-in ones through the registry, and tasks declared in config from `datasets` sources."""

from __future__ import annotations

import json

import pytest

from rlvf.api.tasks import fill_template, task_from_config
from rlvf.config import TaskConfig
from rlvf.errors import ConfigError
from rlvf.plugins import get_registry


def make_task(**fields):
    return task_from_config(TaskConfig(**fields), get_registry())


def test_arithmetic_rows_are_seeded_with_disjoint_splits():
    task = make_task(name="arithmetic", options={"train_size": 300, "eval_size": 50})
    train, evaluation = task.rows("train"), task.rows("eval")
    assert len(evaluation) == 50 and len(train) == 300
    assert not {r["question"] for r in train} & {r["question"] for r in evaluation}
    assert all(str(eval(r["expression"])) == r["answer"] for r in evaluation)  # our own generated input
    assert task.rows("eval") == evaluation  # same seed, same rows
    other_seed = make_task(name="arithmetic", options={"eval_size": 50, "seed": 1}).rows("eval")
    assert [r["question"] for r in other_seed] != [r["question"] for r in evaluation]


def test_arithmetic_prompt_is_chat_with_a_worked_example():
    row = make_task(name="arithmetic").rows("eval", limit=1)[0]
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["user", "assistant", "user"] and "\\boxed{9}" in row["prompt"][1]["content"]
    assert row["prompt"][-1]["content"].startswith(f"Calculate {row['expression']}.")


def test_config_can_override_a_registered_tasks_prompt():
    row = make_task(name="arithmetic", system_prompt="Be brief.", few_shot=[], chat=False,
                    template="Q: {expression} =").rows("eval", limit=1)[0]
    assert row["prompt"] == f"Be brief.\n\nQ: {row['expression']} ="


def test_unknown_task_option_and_task_are_named():
    with pytest.raises(ConfigError, match="task 'arithmetic' has no option 'size'"):
        make_task(name="arithmetic", options={"size": 5})
    with pytest.raises(Exception, match="unknown task 'nope'"):
        make_task(name="nope")


def test_template_leaves_latex_braces_alone():
    assert fill_template("Solve {q}. Put it in \\boxed{} or \\text{cm}.", {"q": "1+1"}) == \
        "Solve 1+1. Put it in \\boxed{} or \\text{cm}."


def write_rows(path, n):
    path.write_text("".join(json.dumps({"q": f"question {i}", "a": str(i)}) + "\n" for i in range(n)))


def test_dataset_task_from_local_jsonl_with_column_mapping_and_held_out_split(tmp_path):
    source = tmp_path / "qa.jsonl"
    write_rows(source, 20)
    task = make_task(name="myqa", dataset=str(source), columns={"question": "q", "answer": "a"},
                     eval_fraction=0.25, template="Answer: {question}", rewards={"qa": 1.0})
    train, evaluation = task.rows("train"), task.rows("eval")
    assert len(train) == 15 and len(evaluation) == 5
    assert not {r["question"] for r in train} & {r["question"] for r in evaluation}
    assert evaluation[0]["prompt"] == [{"role": "user", "content": f"Answer: {evaluation[0]['question']}"}]
    assert evaluation[0]["answer"] == evaluation[0]["question"].split()[-1]
    assert task.default_rewards == {"qa": 1.0}


def test_dataset_task_from_named_files_csv_and_parquet(tmp_path):
    import datasets

    rows = [{"q": f"q{i}", "a": str(i)} for i in range(6)]
    datasets.Dataset.from_list(rows[:4]).to_csv(tmp_path / "train.csv")
    datasets.Dataset.from_list(rows[4:]).to_parquet(tmp_path / "test.parquet")
    csv_task = make_task(name="t", dataset="csv", data_files={"train": str(tmp_path / "train.csv")},
                         columns={"question": "q"})
    train, held_out = csv_task.rows("train"), csv_task.rows("eval")
    assert len(held_out) == 1 and sorted(r["question"] for r in train + held_out) == ["q0", "q1", "q2", "q3"]
    parquet = make_task(name="t", dataset="parquet", data_files={"train": str(tmp_path / "test.parquet"),
                        "test": str(tmp_path / "test.parquet")}, eval_split="test", columns={"question": "q"})
    assert [r["question"] for r in parquet.rows("eval")] == ["q4", "q5"]


def test_dataset_task_errors_name_the_column_and_the_source(tmp_path):
    source = tmp_path / "qa.jsonl"
    write_rows(source, 4)
    with pytest.raises(ConfigError, match=r"task 'bad': dataset '.*qa.jsonl' has no column 'question_text'"):
        make_task(name="bad", dataset=str(source), columns={"question": "question_text"}).rows("train")
    with pytest.raises(ConfigError, match="could not load split 'train' of dataset 'no/such-local-dir'"):
        make_task(name="bad", dataset="no/such-local-dir").rows("train")
