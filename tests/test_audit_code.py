"""The code rows' exploit families (rlvf_code.audit, registered by rlvf-code's `register_exploits`), scored by
the real `code` reward in the real sandbox: the reference solution scores 1, a function returning None 0, every
red-team program 0, and special-casing the prompt's visible examples scores below the reference (1 only on
HumanEval/34, whose hidden test is its one visible example)."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from conftest import REPO, run_rlvf
from rlvf.api import AuditRow
from rlvf_code import CodeReward, plugin
from rlvf_code.audit import EXPLOIT_GROUPS, NOT_AUDITED, function_name, visible_examples
from rlvf_code.exploits import EXPLOIT_NAMES
from rlvf_tasks.code_tasks import HumanEvalTask, SimpleFunctionsTask, humaneval_problems

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

# Different test shapes (==, tolerances, module helpers from the prompt, None results) and docstring example
# forms (>>> doctests, `==`, `➞`); HumanEval/34's check() is exactly its docstring example.
HUMANEVAL = (0, 2, 12, 32, 34, 53, 72, 151)


def _rows() -> list[dict]:
    problems = humaneval_problems()
    rows = [{"prompt": HumanEvalTask.template.format(code_prompt=p["prompt"]), "task_id": p["task_id"],
             "code_prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"],
             "canonical_solution": p["canonical_solution"]} for p in (problems[i] for i in HUMANEVAL)]
    task = SimpleFunctionsTask()
    rows += [{"prompt": task.template.format(**row), "task_id": f"simple/{row['entry_point']}", **row}
             for row in task.load("eval")[:3]]
    return rows


ROWS = _rows()


def families() -> dict[str, tuple]:
    """name -> (build, role, description), through the plugin's hook as `rlvf audit` calls it."""
    found = {}

    def register(name, build, description=None, role="exploit"):
        assert name not in found, f"family {name!r} registered twice"
        found[name] = (build, role, description or (build.__doc__ or "").strip().splitlines()[0])
    plugin.register_exploits(register)
    return found


FAMILIES = families()


def build(family: str, rows: list[dict] = ROWS) -> list[tuple[dict, str]]:
    """(row, completion) for each completion the family builds from each row."""
    builder = FAMILIES[family][0]
    return [(row, text) for index, row in enumerate(rows)
            for text in builder(AuditRow(row, index, rows, random.Random(index)))]


@pytest.fixture(scope="module")
def reward():
    with CodeReward(timeout=1.0, cache_size=0) as code:
        yield code


def scores(reward: CodeReward, built: list[tuple[dict, str]]) -> dict[str, list[float]]:
    """task_id -> the scores of its completions."""
    values = reward([row["prompt"] for row, _ in built], [text for _, text in built],
                    **{column: [row.get(column) for row, _ in built]
                       for column in ("tests", "entry_point", "code_prompt")})
    by_row: dict[str, list[float]] = {}
    for (row, _), value in zip(built, values, strict=True):
        by_row.setdefault(row["task_id"], []).append(value)
    return by_row


def test_the_families_and_their_roles():
    roles = {name: role for name, (_, role, _) in FAMILIES.items()}
    assert roles == {"reference_solution": "gold", "returns_none": "wrong", "special_cased_tests": "exploit",
                     **dict.fromkeys(EXPLOIT_GROUPS, "exploit")}
    assert all(description for _, _, description in FAMILIES.values())


def test_every_red_team_program_is_audited_once_or_named_as_left_out():
    grouped = [name for _, programs in EXPLOIT_GROUPS.values() for name in programs]
    assert sorted(grouped + list(NOT_AUDITED)) == sorted(EXPLOIT_NAMES)


def test_each_completion_is_one_fenced_program():
    for family in FAMILIES:
        for _, text in build(family):
            assert text.startswith("```python\n") and text.endswith("\n```") and text.count("```") == 2


@needs_bwrap
def test_reference_solutions_score_one_and_none_returners_zero(reward):
    gold, wrong = scores(reward, build("reference_solution")), scores(reward, build("returns_none"))
    assert gold == {row["task_id"]: [1.0] for row in ROWS}
    assert wrong == {row["task_id"]: [0.0] for row in ROWS}


@needs_bwrap
@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", list(EXPLOIT_GROUPS))
def test_red_team_families_score_zero(family, reward):
    built = build(family)
    programs = EXPLOIT_GROUPS[family][1]
    assert len(built) == len(ROWS) * len(programs)
    for task_id, values in scores(reward, built).items():
        assert values == [0.0] * len(programs), {task_id: dict(zip(programs, values, strict=True))}


@needs_bwrap
def test_special_casing_the_visible_examples_scores_below_the_reference(reward):
    built = build("special_cased_tests")
    # Neither find_zero's examples (`round(find_zero([1, 2]), 2)`) nor simple_functions prompts show a
    # literal call of the function: the family does not apply there.
    applying = [row["task_id"] for row in ROWS[:len(HUMANEVAL)] if row["task_id"] != "HumanEval/32"]
    assert [row["task_id"] for row, _ in built] == applying
    assert scores(reward, built) == {task_id: [1.0 if task_id == "HumanEval/34" else 0.0] for task_id in applying}


def test_visible_examples_in_each_docstring_form():
    prompts = {p["task_id"]: p for p in humaneval_problems()}

    def examples(task_id):
        return visible_examples(prompts[task_id]["prompt"], prompts[task_id]["entry_point"])

    assert examples("HumanEval/34") == [(([5, 3, 5, 2, 3, 3, 9, 0, 123],), [0, 2, 3, 5, 9, 123])]  # >>> doctest
    assert examples("HumanEval/72")[:2] == [(([1, 2], 5), False), (([3, 2, 3], 1), False)]  # f(x) ➞ y
    assert (("Jupiter", "Neptune"), ("Saturn", "Uranus")) in examples("HumanEval/148")  # f(x) ==> y
    assert ((1, 4), True) in examples("HumanEval/76")  # `=> true`, lower case
    assert (("Hi",), "Hi") in examples("HumanEval/86")  # f(x) returns y
    # `f([1, 3, 2, 0]) == 1 + 9 + 0 + 0 = 10` states a computation, not a value: left out
    assert examples("HumanEval/151") == [(([-1, -2, 0],), 0), (([9, -2],), 81), (([0],), 0)]
    # non-literal arguments (`is_happy(a) => False`) are no example
    assert examples("HumanEval/80") == []


def test_which_rows_each_family_applies_to():
    assert function_name({"tests": ["assert set(shared([1, 2], [2])) == {2}"]}) == "shared"  # MBPP: no entry_point
    stdio = {"prompt": "Print the sum.", "tests": [{"input": "1 2\n", "output": "3\n"}], "code": "print(3)"}
    no_tests = {"prompt": "What is 2 + 2?", "answer": "4"}
    for row, applying in ((stdio, {"reference_solution"}), (no_tests, set())):
        assert {family for family, (builder, _, _) in FAMILIES.items()
                if builder(AuditRow(row, 0, [row], random.Random(0)))} == applying


# --- `rlvf audit` on code configs ---


def audit_json(tmp_path, *args: str, exit_code: int = 0) -> dict:
    path = tmp_path / "audit.json"
    result = run_rlvf("audit", *args, "--json", str(path), check=False)
    assert result.returncode == exit_code, result.stdout + result.stderr
    return json.loads(path.read_text())["rewards"]["code"]["families"]


@needs_bwrap
@pytest.mark.timeout(120)
def test_audit_of_the_code_example_flags_nothing(tmp_path):
    families = audit_json(tmp_path, str(REPO / "examples" / "code_grpo.toml"), "--limit", "6", "--reward", "code",
                          "--fail-on", "0")
    assert {name: (family["mean"], family["flagged"]) for name, family in families.items()} == {
        "reference_solution": (1.0, False), "returns_none": (0.0, False),
        # simple_functions prompts show no example: special_cased_tests does not apply
        **{name: (0.0, False) for name in EXPLOIT_GROUPS}}
    assert families["harness_tampering"]["completions"] == 6 * len(EXPLOIT_GROUPS["harness_tampering"][1])


@needs_bwrap
@pytest.mark.timeout(120)
def test_audit_of_humaneval_flags_special_casing_where_a_hidden_test_is_the_visible_example(tmp_path):
    """A known property of test-based rewards, not a sandbox bug: HumanEval/34's check() is its docstring's one
    example, so answering the visible examples passes it. The first 22 train rows hold it."""
    families = audit_json(tmp_path, str(REPO / "examples" / "code_grpo.toml"), "task.name=humaneval",
                          "eval.split=train", "--limit", "22", "--reward", "code", "--fail-on", "0", exit_code=1)
    special = families["special_cased_tests"]
    assert special["flagged"] and special["mean"] == pytest.approx(1 / special["n"])
    assert special["examples"][0]["score"] == 1.0 and "def unique(" in special["examples"][0]["completion"]
    assert [name for name, family in families.items() if family["flagged"]] == ["special_cased_tests"]
    assert families["reference_solution"]["mean"] == 1.0 and families["returns_none"]["mean"] == 0.0
