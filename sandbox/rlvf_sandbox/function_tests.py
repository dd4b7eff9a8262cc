"""Function tests across a process boundary: the candidate never shares a process with its tests.

    from rlvf_sandbox import FunctionTests, Sandbox, run_function_tests

    suite = FunctionTests(candidate=model_code, tests=["assert add(1, 2) == 3"], per_test_seconds=5)
    with Sandbox() as sandbox:
        [report] = run_function_tests(sandbox, [suite])
    report.passed, report.reasons        # (True,), (None,)

Inside one sandbox run, a trusted harness forks the candidate's process before it reads any test, then
runs the tests itself; the functions they call are stubs that cross into the candidate's process with
plain data only (exact builtin types). See `_function_harness.py` for what holds and why.
"""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from rlvf_sandbox.sandbox import RunResult, Sandbox

# Seconds granted on top of the per-test budgets for the interpreter and harness themselves.
HARNESS_OVERHEAD_SECONDS = 1.0
_HARNESS_SOURCE = resources.files("rlvf_sandbox").joinpath("_function_harness.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class FunctionTests:
    """Trusted `tests` (Python statements, e.g. asserts or a HumanEval `check(candidate)` source and call)
    against an untrusted `candidate` program.

    `setup`: trusted code run before the tests, next to them (the problem's own helpers, e.g. the prompt a
    HumanEval completion continues). `entry_point`: a name always bound to the candidate's function of that
    name (HumanEval's `check(entry_point)`); besides it, every name a test mentions that the candidate
    defines and neither the builtins, `setup` nor an earlier test does is bound to the candidate's one.
    `per_test_seconds` bounds each test, its calls included, and loading the candidate."""

    candidate: str
    tests: Sequence[str]
    setup: str = ""
    entry_point: str | None = None
    per_test_seconds: float = 5.0

    @property
    def timeout(self) -> float:
        """The whole run's limit: loading and each test, twice over (a failed test reloads the candidate)."""
        return self.per_test_seconds * (2 * len(self.tests) + 1) + HARNESS_OVERHEAD_SECONDS


@dataclass(frozen=True)
class FunctionTestReport:
    """Per test: whether it passed and, if not, why (an assertion, a timeout, a value that is not plain
    data...). A harness that reported nothing (killed, out of memory) fails every test."""

    passed: tuple[bool, ...]
    reasons: tuple[str | None, ...]
    result: RunResult

    @property
    def n_passed(self) -> int:
        return sum(self.passed)


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def function_test_job(suite: FunctionTests) -> tuple[dict[str, Any], Callable[[RunResult], FunctionTestReport]]:
    """The `Sandbox.run` keyword arguments for `suite`, and the function reading its RunResult: for
    callers that batch these runs with others in one `run_many`."""
    nonce = secrets.token_hex(16)
    header = {"candidate": suite.candidate, "setup": suite.setup, "entry_point": suite.entry_point,
              "budget": float(suite.per_test_seconds), "tests": len(suite.tests)}
    # The tests and the nonce come as late stdin: the harness, forked from the sandbox worker, holds no copy
    # of them in memory when it forks the candidate's process.
    job = {"code": _HARNESS_SOURCE, "stdin": _frame(header), "timeout": suite.timeout, "cache_compiled": True,
           "late_stdin": b"".join([*(_frame(test) for test in suite.tests), _frame(nonce)])}
    return job, lambda result: read_report(result, nonce, len(suite.tests))


def read_report(result: RunResult, nonce: str, n_tests: int) -> FunctionTestReport:
    """The harness's report in `result` (only the line carrying this run's nonce counts)."""
    for line in result.stdout.decode(errors="replace").splitlines():
        tag, _, body = line.partition(" ")
        if tag != nonce:
            continue
        try:
            report = json.loads(body)
            passed = [p is True for p in report["passed"]]
            reasons = [r if isinstance(r, str) else None for r in report["reasons"]]
        except (ValueError, KeyError, TypeError):
            break
        if len(passed) == len(reasons) == n_tests:
            return FunctionTestReport(tuple(passed), tuple(reasons), result)
        break
    why = result.killed_by or f"exit code {result.exit_code}"
    reason = f"the harness reported nothing ({why}): {result.stderr_text[-300:]}".strip()
    return FunctionTestReport((False,) * n_tests, (reason,) * n_tests, result)


def run_function_tests(sandbox: Sandbox, suites: Sequence[FunctionTests]) -> list[FunctionTestReport]:
    """Run each suite in its own sandbox run, in parallel on the pool, in order."""
    jobs = [function_test_job(suite) for suite in suites]
    results = sandbox.run_many(job for job, _ in jobs)
    return [read(result) for (_, read), result in zip(jobs, results, strict=True)]
