"""The generated `simple_functions` code task: sizes, disjoint seeded splits, and tests that its reference
solutions pass and wrong ones fail through the real `code` reward (in the sandbox)."""

from __future__ import annotations

from rlvf.api.tasks import task_from_config
from rlvf.config import TaskConfig
from rlvf.plugins import get_registry
from rlvf_tasks.code_tasks import FAMILIES


def simple_functions(**options):
    return task_from_config(TaskConfig(name="simple_functions", options=options), get_registry())


def questions(rows):
    return [row["question"] for row in rows]


def test_sizes_and_disjoint_splits_without_repeats():
    task = simple_functions(train_size=300, eval_size=60)
    train, evaluation = task.rows("train"), task.rows("eval")
    assert len(train) == 300 and len(evaluation) == 60
    assert len(set(questions(train))) == 300 and len(set(questions(evaluation))) == 60
    assert not set(questions(train)) & set(questions(evaluation))
    assert {row["family"] for row in train} == {family.family for family in FAMILIES}


def test_seeded_rows_are_reproducible_and_the_eval_split_depends_on_the_seed_only():
    assert simple_functions(seed=3).rows("train") == simple_functions(seed=3).rows("train")
    evaluation = questions(simple_functions(seed=3).rows("eval"))
    assert evaluation == questions(simple_functions(seed=3, train_size=10).rows("eval"))
    assert evaluation != questions(simple_functions(seed=4).rows("eval"))


def test_every_variant_has_tests_that_a_constant_cannot_pass():
    pool = sum(len(family.variants()) for family in FAMILIES)
    rows = simple_functions(train_size=pool, eval_size=0).rows("train")
    assert len(set(questions(rows))) == pool
    for row in rows:
        expected = {test.rsplit(" == ", 1)[1] for test in row["tests"]}
        assert len(row["tests"]) >= 4 and len(expected) > 1, row["question"]


def test_prompt_is_chat_with_one_worked_example_and_the_fence_instruction():
    row = simple_functions().rows("eval", limit=1)[0]
    example_user, example_answer, question = row["prompt"]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert example_answer["content"].startswith("```python\ndef count_words(s):")
    assert question["content"].startswith(row["question"]) and question["content"].endswith("```python block.")
    assert example_user["content"].endswith("```python block.")
    assert simple_functions().default_rewards == {"code": 1.0, "code_fence": 0.1}


def test_reference_solutions_pass_and_wrong_ones_fail_in_the_code_reward():
    task = simple_functions(train_size=120, eval_size=40)
    rows = task.rows("train") + task.rows("eval")
    assert {row["family"] for row in rows} == {family.family for family in FAMILIES}
    references = [f"```python\n{row['reference']}```" for row in rows]
    wrong = [f"```python\ndef {row['entry_point']}(*args):\n    return None\n```" for row in rows]
    code = get_registry().reward("code").build()
    scores = code(prompts=[row["prompt"] for row in rows] * 2, completions=references + wrong,
                  **{key: [row[key] for row in rows] * 2 for key in ("tests", "entry_point")})
    assert scores[:len(rows)] == [1.0] * len(rows)
    assert all(score < 1.0 for score in scores[len(rows):])
