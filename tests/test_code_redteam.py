"""The `code` reward's red team: every exploit of `rlvf_code.exploits` scores 0 on HumanEval problems and on
assert-list rows, while the reference solutions of the same rows score 1. bench/code_redteam.py prints the
same scores as a table (and, run against the old in-process harness, what each exploit scored there)."""

from __future__ import annotations

import shutil

import pytest

from rlvf_code import CodeReward
from rlvf_code.exploits import EXPLOITS
from rlvf_tasks.code_tasks import SimpleFunctionsTask, humaneval_problems

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

# Problems whose tests take different shapes: ==, abs(x - y) < tol, None results, lists, module helpers
# from the prompt (find_zero's poly, decode_cyclic's encode_cyclic), random inputs.
HUMANEVAL = (0, 2, 4, 12, 29, 32, 38, 53)


def _rows() -> list[dict]:
    problems = humaneval_problems()
    rows = [{"prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"], "code_prompt": p["prompt"],
             "solution": p["prompt"] + p["canonical_solution"]} for p in (problems[i] for i in HUMANEVAL)]
    for row in SimpleFunctionsTask().load("eval")[:3]:
        rows.append({"prompt": row["question"], "tests": row["tests"], "entry_point": None, "code_prompt": None,
                     "solution": row["reference"], "function": row["entry_point"]})
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def reward():
    with CodeReward(timeout=1.0, cache_size=0) as code:
        yield code


def score(reward: CodeReward, programs: list[str]) -> list[float]:
    # A completion may repeat the prompt it continues (HumanEval), as models do: its helpers come along.
    completions = [f"```python\n{row['code_prompt'] or ''}\n{program}\n```" for row, program in zip(ROWS, programs,
                                                                                                     strict=True)]
    return reward([row["prompt"] for row in ROWS], completions,
                  **{column: [row[column] for row in ROWS] for column in ("tests", "entry_point", "code_prompt")})


def test_reference_solutions_score_one(reward):
    assert score(reward, [row["solution"] for row in ROWS]) == [1.0] * len(ROWS)


def test_at_least_twelve_distinct_exploit_classes():
    assert len({exploit.name for exploit in EXPLOITS}) == len(EXPLOITS) >= 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("exploit", EXPLOITS, ids=[exploit.name for exploit in EXPLOITS])
def test_exploit_scores_zero(exploit, reward):
    programs = [exploit.program(row.get("function") or row["entry_point"]) for row in ROWS]
    scores = score(reward, programs)
    assert scores == [0.0] * len(ROWS), dict(zip(HUMANEVAL + ("simple",) * 3, scores, strict=True))
    # the pool is still sound afterwards
    assert score(reward, [row["solution"] for row in ROWS]) == [1.0] * len(ROWS)
