"""Compare rlvf-math with Hugging Face's Math-Verify: verifications per second and agreement.

    .venv/bin/python bench/math_verify_bench.py [--cases FILE [FILE ...]] [--workers 2] [--repeat 4]

By default both labelled suites run, tests/data/math/cases.jsonl and tests/data/math/field_cases.jsonl; each
file gets a row per verifier with its agreement with the labels and its false positives and negatives apart.

Math-Verify is never a dependency of rlvf or rlvf-math: it runs in its own venv (`.venv-bench`, created
and filled with `pip install math-verify[antlr4_13_2]` on first use, or `--math-verify-python PATH`),
in a process pool of the same size as ours, on the same (gold, completion) pairs. Both sides are warmed
up (workers started, imports done) before timing. Our cache is disabled for the timing so every pair is
really verified; a second row shows a GRPO-like batch where each completion comes back `--repeat` times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = [ROOT / "tests" / "data" / "math" / name for name in ("cases.jsonl", "field_cases.jsonl",
                                                                    "blind_cases.jsonl")]
BENCH_VENV = ROOT / ".venv-bench"

# Runs inside the Math-Verify venv: argv = cases file, workers, repeat; prints one JSON object.
MATH_VERIFY_RUNNER = r"""
import json, sys, time
from concurrent.futures import ProcessPoolExecutor

def check(pair):
    from math_verify import parse, verify
    gold, completion = pair
    if "$" not in gold and "\\boxed" not in gold:
        gold = "$" + gold + "$"
    try:
        return bool(verify(parse(gold), parse(completion)))
    except Exception:
        return False

def warm(_):
    import math_verify  # noqa: F401
    return check(("$1$", "$1$"))

if __name__ == "__main__":
    path, workers, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cases = [json.loads(line) for line in open(path) if line.strip()]
    pairs = [(c["gold"], c["completion"]) for c in cases]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(warm, range(workers * 4)))
        start = time.perf_counter()
        verdicts = list(pool.map(check, pairs, chunksize=8))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(check, pairs * repeat, chunksize=8))
        repeat_seconds = time.perf_counter() - start
    print(json.dumps({"verdicts": verdicts, "seconds": seconds, "repeat_seconds": repeat_seconds}))
"""


def math_verify_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BENCH_VENV} with math-verify (once)...", file=sys.stderr)
        venv.create(BENCH_VENV, with_pip=True)
    probe = subprocess.run([str(python), "-c", "import math_verify"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "math-verify[antlr4_13_2]"], check=True)
    return str(python)


def run_math_verify(python: str, cases_path: Path, workers: int, repeat: int) -> dict:
    done = subprocess.run([python, "-c", MATH_VERIFY_RUNNER, str(cases_path), str(workers), str(repeat)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_rlvf_math(cases: list[dict], workers: int, repeat: int, timeout: float) -> dict:
    from rlvf_math import MathReward

    completions = [c["completion"] for c in cases]
    golds = [c["gold"] for c in cases]
    uncached = MathReward(timeout=timeout, workers=workers, cache_size=0)
    cached = MathReward(timeout=timeout, workers=workers)
    try:
        for reward in (uncached, cached):  # start the workers and import sympy before timing
            reward(["p"] * 4, [r"\boxed{x+1}", r"\boxed{\frac12}", "(1,2)", "x=1"], answer=["1+x", "0.5", "(1,2)", "1"])
        start = time.perf_counter()
        scores = uncached([""] * len(cases), completions, answer=golds)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        cached([""] * len(cases) * repeat, completions * repeat, answer=golds * repeat)
        repeat_seconds = time.perf_counter() - start
        metrics = uncached.pop_metrics()
    finally:
        uncached.close()
        cached.close()
    return {"verdicts": [s == 1.0 for s in scores], "seconds": seconds, "repeat_seconds": repeat_seconds,
            "timeouts": metrics["timeouts"]}


def _display(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, nargs="+", default=DEFAULT_CASES,
                        help="JSONL files with gold, completion, expected (default: both suites)")
    parser.add_argument("--workers", type=int, default=2, help="processes for each verifier")
    parser.add_argument("--repeat", type=int, default=4, help="copies of each completion in the batch row")
    parser.add_argument("--timeout", type=float, default=5.0, help="rlvf-math time limit per verification")
    parser.add_argument("--math-verify-python", help="a python that has math-verify installed")
    args = parser.parse_args()
    python = math_verify_python(args.math_verify_python)

    header = (f"{'cases':<36} {'verifier':<12} {'pairs':>6} {'verif/s':>9} {'verif/s x' + str(args.repeat):>12} "
              f"{'agree w/ labels':>16} {'false pos':>10} {'false neg':>10}")
    print(f"{args.workers} worker processes for each verifier\n")
    print(header)
    print("-" * len(header))
    notes = []
    for path in args.cases:
        cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        expected = [bool(c["expected"]) for c in cases]
        ours = run_rlvf_math(cases, args.workers, args.repeat, args.timeout)
        theirs = run_math_verify(python, path, args.workers, args.repeat)
        n = len(cases)
        for name, result in (("rlvf-math", ours), ("Math-Verify", theirs)):
            verdicts = result["verdicts"]
            agree = sum(v == e for v, e in zip(verdicts, expected, strict=True)) / n
            false_pos = sum(v and not e for v, e in zip(verdicts, expected, strict=True))
            false_neg = sum(e and not v for v, e in zip(verdicts, expected, strict=True))
            print(f"{_display(path)!s:<36} {name:<12} {n:>6} {n / result['seconds']:>9.0f} "
                  f"{n * args.repeat / result['repeat_seconds']:>12.0f} {agree:>16.1%} {false_pos:>10} {false_neg:>10}")
        same = sum(a == b for a, b in zip(ours["verdicts"], theirs["verdicts"], strict=True)) / n
        notes.append(f"{_display(path)}: rlvf-math {theirs['seconds'] / ours['seconds']:.1f}x the verifications/s "
                     f"of Math-Verify, same verdict on {same:.1%} of pairs, rlvf-math timeouts: {ours['timeouts']:.0f}")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
