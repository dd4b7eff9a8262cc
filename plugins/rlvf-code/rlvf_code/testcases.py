"""Test formats and how each becomes sandbox runs.

- HumanEval: `tests` is source defining `check(candidate)`, with an `entry_point` column; one test.
- Asserts: `tests` is a list of Python statements (usually `assert f(x) == y`); one test each.
- Stdin/stdout: `tests` is a list of `{"input": ..., "output": ...}` (or APPS' `{"inputs": [...],
  "outputs": [...]}`); one run per case, stdout compared with whitespace normalised.

HumanEval and assert tests run through rlvf-sandbox's function tests: the tests run in a trusted harness
process, the candidate in another one, and only plain data crosses between them (`rlvf_sandbox.
function_tests`). A stdin/stdout program runs alone; the expected output never enters the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StdioCase:
    input: str
    output: str


@dataclass(frozen=True)
class TestSuite:
    """The tests of one row: either statements run after the candidate, or stdin/stdout cases."""

    statements: tuple[str, ...] = ()
    cases: tuple[StdioCase, ...] = ()
    entry_point: str | None = None  # set for HumanEval-style tests, whose completions may be bodies

    @property
    def size(self) -> int:
        return len(self.statements) + len(self.cases)


def parse_tests(tests: Any, entry_point: str | None, row: int) -> TestSuite:
    """Read a row's `tests` value in any supported format."""
    if isinstance(tests, str) and tests.lstrip()[:1] in ("[", "{"):
        with contextlib.suppress(ValueError):
            tests = json.loads(tests)  # datasets often store structured tests serialised
    if isinstance(tests, str):
        if not entry_point:
            raise ValueError(f"row {row}: HumanEval-style tests (a `check(candidate)` source) need the "
                             "'entry_point' column naming the function to check")
        return TestSuite(statements=(f"{tests}\n\ncheck({entry_point})\n",), entry_point=entry_point)
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        tests = [{"input": i, "output": o} for i, o in zip(tests["inputs"], tests["outputs"], strict=True)]
    if isinstance(tests, Sequence) and all(isinstance(t, str) for t in tests):
        return TestSuite(statements=tuple(tests))
    if isinstance(tests, Sequence) and all(isinstance(t, dict) and "input" in t and "output" in t for t in tests):
        return TestSuite(cases=tuple(StdioCase(_text(t["input"]), _text(t["output"])) for t in tests))
    raise ValueError(f"row {row}: cannot read tests of type {type(tests).__name__}; expected a HumanEval "
                     "`check` source, a list of assert statements, or a list of {'input', 'output'} cases")


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(map(str, value)) + "\n"
    return str(value)


def setup_code(code_prompt: str | None) -> str:
    """The trusted code a function-body completion continues (HumanEval's prompt: imports and helpers the
    tests call, such as `poly` or `encode_cyclic`), when it is Python; else nothing."""
    if not code_prompt:
        return ""
    try:
        compile(code_prompt, "prompt.py", "exec")
    except (SyntaxError, ValueError):
        return ""
    return code_prompt


def normalise_output(text: str) -> list[str]:
    """Lines with runs of whitespace collapsed, without leading or trailing blank lines."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def with_prompt(code: str, prompt: str | None, entry_point: str | None, mode: str) -> str:
    """Prepend the problem's prompt when the completion is only a function body (HumanEval style).

    `auto`: prepend the whole prompt unless the code defines `entry_point` itself, in which case only
    the prompt's imports are prepended (a full rewrite of the function still needs `from typing ...`).
    """
    if not prompt or mode == "never":
        return code
    if mode == "always":
        return prompt + code
    if entry_point and re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        imports = [line for line in prompt.splitlines() if re.match(r"(import|from)\s+\w", line)]
        return "\n".join([*imports, code]) if imports else code
    return prompt + code
