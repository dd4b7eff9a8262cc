"""The `code` reward: run each completion's program against its row's tests in rlvf-sandbox."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlvf.api import RewardError, final_turn_text
from rlvf_code.extract import EXTRACTIONS, Extraction, extract_code
from rlvf_code.testcases import TestSuite, normalise_output, parse_tests, setup_code, with_prompt
from rlvf_sandbox import FunctionTests, Sandbox, function_test_job

PrependPrompt = Literal["auto", "always", "never"]
METRIC_NAMES = ("runs", "tests", "tests_passed", "timeouts", "killed", "sandbox_seconds", "cache_hits",
                "cache_misses", "no_code")


@dataclass
class _Job:
    """One program to score: a harness run for statements, or one run per stdin/stdout case."""

    key: str
    code: str
    suite: TestSuite
    setup: str  # trusted code the tests run next to (the problem's prompt)


class CodeReward:
    """Fraction of tests the extracted program passes, run in the sandbox.

    Columns: `tests` (HumanEval `check` source, list of asserts, or list of {"input", "output"} cases),
    `entry_point` (HumanEval only), optional `code_prompt` (the code to prepend to a function-body
    completion; defaults to the prompt itself when that is a string). Rows whose `tests` is None get None.
    """

    columns: tuple[str, ...] = ("tests",)  # the dataset columns it needs (checked before training starts)

    def __init__(
        self,
        extraction: Extraction = "fence_or_text",
        all_or_nothing: bool = False,
        timeout: float = 5.0,
        memory: str = "512M",
        workers: int | None = None,
        prepend_prompt: PrependPrompt = "auto",
        isolation: Literal["bwrap", "none"] = "bwrap",
        seccomp: bool | None = None,
        cache_size: int = 100_000,
    ):
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}, not {extraction!r}")
        if prepend_prompt not in ("auto", "always", "never"):
            raise ValueError(f"prepend_prompt must be auto, always or never, not {prepend_prompt!r}")
        self.extraction = extraction
        self.all_or_nothing = all_or_nothing
        self.timeout = float(timeout)  # per test
        self.memory = memory
        self.prepend_prompt = prepend_prompt
        self.cache_size = cache_size
        self._sandbox_options = dict(workers=workers, isolation=isolation, seccomp=seccomp, memory=memory)
        self._sandbox: Sandbox | None = None
        self._cache: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (passed, total)
        self._lock = threading.Lock()
        self._metrics = dict.fromkeys(METRIC_NAMES, 0.0)

    @property
    def sandbox(self) -> Sandbox:
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(**self._sandbox_options)
            return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self) -> CodeReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the reward ----

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Sequence[Any]
                 ) -> list[float | None]:
        tests = _column(columns, "tests")
        entry_points = columns.get("entry_point") or [None] * len(completions)
        code_prompts = columns.get("code_prompt") or [p if isinstance(p, str) else None for p in prompts]
        scores: list[float | None] = [None] * len(completions)
        jobs: dict[str, _Job] = {}
        row_keys: dict[int, str] = {}
        for i, completion in enumerate(completions):
            if tests[i] is None:
                continue
            try:
                suite = parse_tests(tests[i], entry_points[i], i)
            except ValueError as exc:
                raise RewardError(str(exc), sample=i) from None
            code = extract_code(final_turn_text(completion), self.extraction)
            if suite.entry_point and code is not None:
                code = with_prompt(code, code_prompts[i], suite.entry_point, self.prepend_prompt)
            if not code or not code.strip() or suite.size == 0:
                self._count(no_code=1)
                scores[i] = 0.0
                continue
            setup = setup_code(code_prompts[i]) if suite.entry_point else ""
            key = _cache_key(code, suite, setup, self.timeout, self.memory)
            row_keys[i] = key
            jobs.setdefault(key, _Job(key, code, suite, setup))
        outcomes = self._outcomes(list(jobs.values()))
        for i, key in row_keys.items():
            passed, total = outcomes[key]
            scores[i] = float(passed == total) if self.all_or_nothing else passed / total
        return scores

    def _outcomes(self, jobs: list[_Job]) -> dict[str, tuple[int, int]]:
        outcomes: dict[str, tuple[int, int]] = {}
        pending = []
        with self._lock:
            for job in jobs:
                if job.key in self._cache:
                    self._cache.move_to_end(job.key)
                    outcomes[job.key] = self._cache[job.key]
                else:
                    pending.append(job)
        self._count(cache_hits=len(jobs) - len(pending), cache_misses=len(pending))
        runs, owners = [], []
        for job in pending:
            for run in self._runs(job):
                runs.append(run[0])
                owners.append((job, run[1]))
        results = self.sandbox.run_many(runs) if runs else []
        passed: dict[str, int] = {job.key: 0 for job in pending}
        for result, (job, judge) in zip(results, owners, strict=True):
            passed[job.key] += judge(result)
            self._count(runs=1, sandbox_seconds=result.wall_seconds, timeouts=int(result.timed_out),
                        killed=int(result.killed_by is not None and not result.timed_out))
        with self._lock:
            for job in pending:
                outcomes[job.key] = (passed[job.key], job.suite.size)
                self._cache[job.key] = outcomes[job.key]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        self._count(tests=sum(job.suite.size for job in pending), tests_passed=sum(passed.values()))
        return outcomes

    def _runs(self, job: _Job):
        """(run keyword arguments, function of the RunResult giving the number of tests passed) pairs."""
        suite = job.suite
        if suite.statements:
            run, read_report = function_test_job(FunctionTests(
                candidate=job.code, tests=suite.statements, setup=job.setup, entry_point=suite.entry_point,
                per_test_seconds=self.timeout))
            yield run, lambda result: read_report(result).n_passed
        for case in suite.cases:
            expected = normalise_output(case.output)
            yield ({"code": job.code, "stdin": case.input, "timeout": self.timeout},
                   lambda result, expected=expected: int(
                       result.ok and normalise_output(result.stdout_text) == expected))

    # ---- metrics ----

    def _count(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._metrics[name] += amount

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call (runs, tests, timeouts, sandbox seconds, cache hits...), reset."""
        with self._lock:
            metrics, self._metrics = self._metrics, dict.fromkeys(METRIC_NAMES, 0.0)
        return metrics


def _column(columns: dict[str, Sequence[Any]], name: str) -> Sequence[Any]:
    if name not in columns:
        raise RewardError(f"the 'code' reward needs a '{name}' column in the dataset; got columns: "
                          f"{', '.join(sorted(columns)) or 'none'}")
    return columns[name]


def _cache_key(code: str, suite: TestSuite, setup: str, timeout: float, memory: str) -> str:
    payload = json.dumps([code, suite.statements, [(c.input, c.output) for c in suite.cases], setup, timeout,
                          memory])
    return hashlib.sha256(payload.encode()).hexdigest()
