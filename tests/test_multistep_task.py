"""The generated `multistep` task (rlvf-tasks): seeded rows, disjoint splits, reference solutions whose every line
is one right operation on numbers already known, and the `math` reward on their final answers."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.api.tasks import task_from_config
from rlvf.config import TaskConfig
from rlvf.errors import ConfigError
from rlvf.plugins import get_registry

STEP = re.compile(r"^(\d+) ([+*-]) (\d+) = (-?\d+)$")
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
AST_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def multistep(**options):
    return task_from_config(TaskConfig(name="multistep", options=options), get_registry())


def evaluate_expression(text: str) -> int:
    """The value of an expression of integers, + - * and parentheses, by Python's own precedence (no eval)."""
    def value(node):
        if isinstance(node, ast.BinOp) and type(node.op) in AST_OPERATORS:
            return AST_OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected node {ast.dump(node)} in {text!r}")
    return value(ast.parse(text, mode="eval").body)


def test_rows_are_seeded_and_the_splits_share_no_expression():
    task = multistep(train_size=300, eval_size=50)
    train, evaluation = task.rows("train"), task.rows("eval")
    assert len(train) == 300 and len(evaluation) == 50
    assert not {r["expression"] for r in train} & {r["expression"] for r in evaluation}
    assert len({r["expression"] for r in train}) == 300
    assert multistep(train_size=300, eval_size=50).rows("train") == train  # the same rows every time
    assert multistep(train_size=10, eval_size=50).rows("eval") == evaluation  # eval does not move with train_size
    assert [r["expression"] for r in multistep(seed=1, eval_size=50).rows("eval")] != \
        [r["expression"] for r in evaluation]
    assert {"answer", "solution", "expression", "operations", "prompt"} <= set(train[0])


def test_every_solution_line_is_one_right_operation_on_known_numbers():
    rows = multistep(train_size=400, eval_size=0).rows("train")
    assert {r["operations"] for r in rows} == {2, 3, 4}
    assert any("(" in r["expression"] for r in rows) and any("*" in r["expression"] for r in rows)
    for row in rows:
        *steps, last = row["solution"].split("\n")
        assert last == f"The answer is \\boxed{{{row['answer']}}}."
        assert len(steps) == row["operations"] == row["expression"].count(" ") // 2
        assert evaluate_expression(row["expression"]) == int(row["answer"])
        known = [int(n) for n in re.findall(r"\d+", row["expression"])]  # the operands, then each result
        for step in steps:
            match = STEP.match(step)
            assert match, (row["expression"], step)
            left, op, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
            assert OPERATORS[op](left, right) == result, (row["expression"], step)
            for operand in (left, right):  # an operand is in the expression or an earlier line's result
                assert operand in known, (row["expression"], step)
                known.remove(operand)
            known.append(result)
        assert known == [int(row["answer"])]  # every number was used once, and the last result is the answer


def test_options_bound_the_operations_and_the_numbers():
    rows = multistep(train_size=200, eval_size=0, min_operations=4, max_operations=4, max_operand=9,
                     max_factor=5, operators=["+", "*"]).rows("train")
    for row in rows:
        assert row["operations"] == 4 and "-" not in row["expression"]
        assert max(int(n) for n in re.findall(r"\d+", row["expression"])) <= 9
        for step in row["solution"].split("\n")[:-1]:
            left, op, right, _ = STEP.match(step).groups()
            assert op != "*" or max(int(left), int(right)) <= 5
    for bad, message in [({"min_operations": 3, "max_operations": 2}, "min_operations <= max_operations"),
                         ({"operators": ["/"]}, "operators must be some of"),
                         ({"max_factor": 0, "operators": ["*"]}, "loosen them")]:
        with pytest.raises(ConfigError, match=message):
            multistep(train_size=5, eval_size=0, **bad).rows("train")


def test_the_prompt_shows_a_worked_example_one_operation_per_line():
    row = multistep().rows("eval", limit=1)[0]
    example_question, example, question = row["prompt"]
    assert example_question["content"].startswith("Calculate (6 + 9) * 2 - 5.")
    assert example["role"] == "assistant" and example["content"].count("\n") == 3 and "\\boxed{25}" in \
        example["content"]
    assert question["content"].startswith(f"Calculate {row['expression']}.") and "\\boxed{}" in question["content"]
    assert multistep().default_rewards == {"math": 1.0}


def test_math_scores_the_reference_solution_1_and_a_wrong_final_answer_0():
    rows = multistep(train_size=0, eval_size=20).rows("eval")
    math = RewardMix([MixEntry("math", get_registry().reward("math").build())])
    wrong = [r["solution"].replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{int(r['answer']) + 1}}}")
             for r in rows]
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    assert math.score(prompts, [r["solution"] for r in rows], answer=answers).total == [1.0] * 20
    assert math.score(prompts, wrong, answer=answers).total == [0.0] * 20
