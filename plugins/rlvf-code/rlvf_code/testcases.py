"""Test formats and how each becomes sandbox runs.

- HumanEval: `tests` is source defining `check(candidate)`, with an `entry_point` column; one test.
- Asserts: `tests` is a list of Python statements (usually `assert f(x) == y`); one test each.
- Stdin/stdout: `tests` is a list of `{"input": ..., "output": ...}` (or APPS' `{"inputs": [...],
  "outputs": [...]}`); one run per case, stdout compared with whitespace normalised.

HumanEval and assert tests run in a single program: a harness executes the candidate, then each test
with its own time limit, and reports each pass tagged with a random nonce it read from stdin before the
candidate ran. So a candidate that exits early (`sys.exit(0)`) or prints fake results scores nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Seconds granted on top of the per-test budgets for the interpreter and harness themselves.
HARNESS_OVERHEAD_SECONDS = 1.0

# The nonce stays a local of _main (not a global a candidate could read through `import __main__`).
# In-process tests cannot be made tamper-proof against a deliberate attacker (an object whose __eq__ is
# always true passes any assert); the nonce stops early exits and printed fake reports.
_HARNESS = '''\
def _main(candidate, tests, budget):
    import os, signal, sys
    nonce = sys.stdin.readline().strip()
    report = os.dup(1)  # reports survive a candidate that closes or redirects stdout

    class TestTimeout(BaseException):
        pass

    def on_alarm(signum, frame):
        raise TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}

    def run(source, filename):
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            exec(compile(source, filename, "exec"), namespace)
            return True
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            print(filename, "failed:", type(exc).__name__, str(exc)[:200], file=sys.stderr)
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    if run(candidate, "solution.py"):
        for index, test in enumerate(tests):
            if run(test, "test_%%d.py" %% index):
                os.write(report, ("%%s %%d\\n" %% (nonce, index)).encode())


_main(%(candidate)r, %(tests)r, %(budget)r)
'''


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


def harness_program(candidate: str, statements: Sequence[str], per_test_seconds: float) -> tuple[str, str]:
    """The program running `statements` against `candidate`, and the nonce to feed it on stdin."""
    source = _HARNESS % {"candidate": candidate, "tests": list(statements), "budget": float(per_test_seconds)}
    return source, secrets.token_hex(16)


def harness_timeout(n_statements: int, per_test_seconds: float) -> float:
    return per_test_seconds * (n_statements + 1) + HARNESS_OVERHEAD_SECONDS


def passed_statements(stdout: bytes, nonce: str, n_statements: int) -> list[bool]:
    """Which statements the harness reported as passed (only lines carrying this run's nonce count)."""
    passed = [False] * n_statements
    for line in stdout.decode(errors="replace").splitlines():
        tag, _, index = line.strip().partition(" ")
        if tag == nonce and index.isdigit() and int(index) < n_statements:
            passed[int(index)] = True
    return passed


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
