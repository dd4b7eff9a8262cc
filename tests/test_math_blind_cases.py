"""A suite labelled blind (tests/data/math/blind_cases.jsonl): written from the answer classes and the grading
policy alone, by someone who never read rlvf-math or ran it. First run: 242 of 259 (93.4%), no false
positive. Four of the 17 misses were fixed since (an equation written without `$`, `f(2) = 7`, `k = 0, k =
\\frac{1}{2}` in one segment, a chain of matrices), so it is no longer wholly blind. It does not require 100%:
no false positive at all, and no more misses than the 13 left (12 are lone decimals such as `3.14` for pi,
which rlvf-math refuses on purpose: a lone decimal must give 6 correct digits; one is `|x| < 2` for
(-2, 2)). bench/math_verify_bench.py prints the same numbers."""

import json
from pathlib import Path

from rlvf_math import verify

CASES_FILE = Path(__file__).parent / "data" / "math" / "blind_cases.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]


def test_no_false_positive_and_agreement_as_measured():
    assert len(CASES) >= 250
    verdicts = [verify(case["gold"], case["completion"]) for case in CASES]
    false_positives = [(c["gold"], c["completion"][-120:]) for c, v in zip(CASES, verdicts, strict=True)
                       if v and not c["expected"]]
    assert false_positives == []
    misses = [(c["category"], c["gold"], c["completion"][-80:]) for c, v in zip(CASES, verdicts, strict=True)
              if c["expected"] and not v]
    assert len(misses) <= 13, misses
