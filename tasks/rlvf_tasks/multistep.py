"""`multistep`: arithmetic expressions of 2-4 operations (sums, differences, products, parentheses where the
order needs them), generated offline from a seed, whose reference solution takes one operation per line:

    Calculate (17 + 25) - 8 * 3.          17 + 25 = 42
                                          8 * 3 = 24
                                          42 - 24 = 18
                                          The answer is \\boxed{18}.

A task with real steps: a process reward model (plugins/rlvf-prm) scores each line. The `math` reward checks the
final answer."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rlvf.api import ConfigError, Task

PRECEDENCE = {"+": 1, "-": 1, "*": 2}
INSTRUCTION = "Work it out one operation per line, then put the final answer in \\boxed{}."


@dataclass(frozen=True)
class Number:
    value: int


@dataclass(frozen=True)
class Operation:
    operator: str
    left: Number | Operation
    right: Number | Operation


def value_of(node: Number | Operation) -> int:
    if isinstance(node, Number):
        return node.value
    left, right = value_of(node.left), value_of(node.right)
    return left + right if node.operator == "+" else left - right if node.operator == "-" else left * right


def expression_text(node: Number | Operation) -> str:
    """The expression with the parentheses its order needs: a child of lower precedence is bracketed, and a right
    child of equal precedence too (a - (b - c), and so that the reading order is the order of the steps)."""
    if isinstance(node, Number):
        return str(node.value)
    level = PRECEDENCE[node.operator]
    left, right = expression_text(node.left), expression_text(node.right)
    if isinstance(node.left, Operation) and PRECEDENCE[node.left.operator] < level:
        left = f"({left})"
    if isinstance(node.right, Operation) and PRECEDENCE[node.right.operator] <= level:
        right = f"({right})"
    return f"{left} {node.operator} {right}"


def solution_steps(node: Number | Operation) -> list[str]:
    """One line per operation, each on values already computed: left subtree, right subtree, then the node."""
    if isinstance(node, Number):
        return []
    steps = solution_steps(node.left) + solution_steps(node.right)
    return [*steps, f"{value_of(node.left)} {node.operator} {value_of(node.right)} = {value_of(node)}"]


def solution_text(node: Operation) -> str:
    return "\n".join([*solution_steps(node), f"The answer is \\boxed{{{value_of(node)}}}."])


def _random_tree(rng: random.Random, operations: int, operators: list[str], low: int, high: int
                 ) -> Number | Operation:
    if operations == 0:
        return Number(rng.randint(low, high))
    on_left = rng.randint(0, operations - 1)  # how many of the other operations go to the left subtree
    return Operation(rng.choice(operators), _random_tree(rng, on_left, operators, low, high),
                     _random_tree(rng, operations - 1 - on_left, operators, low, high))


def _acceptable(node: Number | Operation, max_factor: int, allow_negative: bool, max_value: int) -> bool:
    """Every intermediate result within bounds: no product of a factor above `max_factor` (the model's
    multiplication table), no negative value unless allowed, nothing above `max_value` in size."""
    if isinstance(node, Number):
        return True
    if not (_acceptable(node.left, max_factor, allow_negative, max_value)
            and _acceptable(node.right, max_factor, allow_negative, max_value)):
        return False
    if node.operator == "*" and max(abs(value_of(node.left)), abs(value_of(node.right))) > max_factor:
        return False
    value = value_of(node)
    return (allow_negative or value >= 0) and abs(value) <= max_value


def generate_problem(rng: random.Random, options: dict[str, Any], attempts: int = 1000) -> dict[str, Any]:
    """One row: `expression`, `answer`, `solution` (one operation per line), `operations`."""
    operations = rng.randint(options["min_operations"], options["max_operations"])
    for _ in range(attempts):
        tree = _random_tree(rng, operations, options["operators"], options["min_operand"], options["max_operand"])
        if _acceptable(tree, options["max_factor"], options["allow_negative"], options["max_value"]):
            return {"expression": expression_text(tree), "answer": str(value_of(tree)),
                    "solution": solution_text(tree), "operations": operations}
    raise ConfigError(f"task 'multistep': no expression of {operations} operations within the options "
                      f"(max_factor={options['max_factor']}, max_value={options['max_value']}, allow_negative="
                      f"{options['allow_negative']}) in {attempts} draws; loosen them")


class MultistepTask(Task):
    """Seeded multi-step arithmetic; eval rows never share an expression with train rows."""

    name = "multistep"
    description = ("arithmetic of 2-4 operations with parentheses, solved one operation per line (a task with "
                   "steps, for process rewards); answer in \\boxed{}")
    template = "Calculate {expression}. " + INSTRUCTION
    few_shot = [("Calculate (6 + 9) * 2 - 5. " + INSTRUCTION,
                 "6 + 9 = 15\n15 * 2 = 30\n30 - 5 = 25\nThe answer is \\boxed{25}.")]
    default_rewards = {"math": 1.0}
    options = {
        "train_size": 2000, "eval_size": 100, "seed": 0,
        "min_operations": 2, "max_operations": 4,  # operations per expression (one solution line each)
        "min_operand": 1, "max_operand": 30,  # the numbers written in the expression
        "max_factor": 12,  # both sides of a product at most this (a product of intermediate results too)
        "max_value": 999,  # every intermediate result at most this in size
        "allow_negative": False,  # intermediate results below 0
        "operators": ["+", "-", "*"],
    }

    def _check_options(self) -> None:
        o = self.options
        if not 1 <= o["min_operations"] <= o["max_operations"]:
            raise ConfigError("task 'multistep': need 1 <= min_operations <= max_operations, got "
                              f"{o['min_operations']} and {o['max_operations']}")
        if not 0 <= o["min_operand"] <= o["max_operand"]:
            raise ConfigError("task 'multistep': need 0 <= min_operand <= max_operand, got "
                              f"{o['min_operand']} and {o['max_operand']}")
        unknown = [op for op in o["operators"] if op not in PRECEDENCE]
        if unknown or not o["operators"]:
            raise ConfigError(f"task 'multistep': operators must be some of {', '.join(PRECEDENCE)}, got "
                              f"{o['operators']}")

    def load(self, split: str) -> list[dict[str, Any]]:
        self._check_options()
        train_size, eval_size = self.options["train_size"], self.options["eval_size"]
        rng = random.Random(self.options["seed"])
        # One stream of distinct expressions: the first eval_size are eval, the rest train, so the eval rows are
        # the same whatever train_size is, and the splits never share an expression.
        pool, seen = [], set()
        draws = 0
        while len(pool) < train_size + eval_size:
            draws += 1
            if draws > 20 * (train_size + eval_size) + 1000:
                raise ConfigError(f"task 'multistep': only {len(pool)} distinct expressions under these options, "
                                  f"{train_size + eval_size} asked (train_size + eval_size)")
            row = generate_problem(rng, self.options)
            if row["expression"] not in seen:
                seen.add(row["expression"])
                pool.append(row)
        return pool[:eval_size] if split == "eval" else pool[eval_size:]
