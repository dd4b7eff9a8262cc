"""The `code` reward against programs that try to score without solving: one row per exploit.

    .venv/bin/python bench/code_redteam.py [--problems 0,2,4,12,29,32,38,53] [--simple 4]

Each exploit of `rlvf_code.exploits` is scored on HumanEval problems (check(candidate) tests) and on
`simple_functions` rows (assert lists); the reference solutions are scored next to them. Every exploit
must score 0 everywhere; the table prints the mean score and the number of problems it scored on.
Prints a table; asserts nothing (tests/test_code_redteam.py holds the assertions).
"""

from __future__ import annotations

import argparse
import time

from rlvf_code import CodeReward
from rlvf_code.exploits import EXPLOITS
from rlvf_tasks.code_tasks import humaneval_problems


def humaneval_rows(indices: list[int]) -> list[dict]:
    problems = humaneval_problems()
    return [{"prompt": problems[i]["prompt"], "tests": problems[i]["test"], "entry_point": problems[i]["entry_point"],
             "solution": problems[i]["prompt"] + problems[i]["canonical_solution"]} for i in indices]


def simple_function_rows(count: int) -> list[dict]:
    from rlvf_tasks.code_tasks import SimpleFunctionsTask

    rows = SimpleFunctionsTask().load("eval")[:count]
    return [{"prompt": row["question"], "tests": row["tests"], "entry_point": row["entry_point"],
             "solution": row["reference"]} for row in rows]


def score(reward: CodeReward, rows: list[dict], programs: list[str]) -> list[float]:
    """A HumanEval program follows the prompt it continues (its helpers, e.g. `poly`), as completions do."""
    completions = [f"```python\n{row['prompt'] if isinstance(row['tests'], str) else ''}\n{program}\n```"
                   for row, program in zip(rows, programs, strict=True)]
    return reward([row["prompt"] for row in rows], completions, tests=[row["tests"] for row in rows],
                  entry_point=[row["entry_point"] if isinstance(row["tests"], str) else None for row in rows],
                  code_prompt=[row["prompt"] if isinstance(row["tests"], str) else None for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="0,2,4,12,29,32,38,53", help="HumanEval problem indices")
    parser.add_argument("--simple", type=int, default=4, help="simple_functions eval rows")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per test")
    options = parser.parse_args()
    rows = humaneval_rows([int(i) for i in options.problems.split(",")]) + simple_function_rows(options.simple)
    n = len(rows)
    print(f"{n} problems: HumanEval {options.problems} and {options.simple} simple_functions rows\n")
    print("| program | mean score | problems scored > 0 | seconds |")
    print("|---|---:|---:|---:|")
    with CodeReward(timeout=options.timeout, cache_size=0) as reward:
        for name, programs in [("reference solutions", [row["solution"] for row in rows])] + [
                (exploit.name, [exploit.program(row["entry_point"]) for row in rows]) for exploit in EXPLOITS]:
            started = time.perf_counter()
            scores = score(reward, rows, programs)
            seconds = time.perf_counter() - started
            print(f"| {name} | {sum(scores) / n:.2f} | {sum(s > 0 for s in scores)}/{n} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
