"""The realistic (gold, completion, verdict) suite in tests/data/math/cases.jsonl, checked in-process and
through the reward's worker pool."""

import json
from collections import Counter
from pathlib import Path

import pytest

from rlvf_math import MathReward, verify

CASES_FILE = Path(__file__).parent / "data" / "math" / "cases.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]
CATEGORIES = {"gsm8k", "math_boxed", "extraction", "structures", "choice_text", "adversarial"}


def test_suite_is_big_and_covers_every_category():
    assert len(CASES) >= 300
    counts = Counter(case["category"] for case in CASES)
    assert set(counts) == CATEGORIES
    negatives = sum(not case["expected"] for case in CASES)
    assert negatives >= 150, "near-misses that must not match are half of the point"


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['category']}" for i, c in enumerate(CASES)])
def test_case(case):
    assert verify(case["gold"], case["completion"]) is case["expected"], (
        f"gold {case['gold']!r}, completion {case['completion'][-200:]!r}")


def test_reward_through_the_pool_agrees_with_the_suite():
    reward = MathReward(timeout=10.0, workers=2)
    try:
        scores = reward([""] * len(CASES), [c["completion"] for c in CASES], answer=[c["gold"] for c in CASES])
        metrics = reward.pop_metrics()
    finally:
        reward.close()
    wrong = [(c["gold"], c["completion"][-80:]) for c, s in zip(CASES, scores, strict=True) if s != c["expected"]]
    assert not wrong
    assert metrics["verified"] == len(CASES)
    assert metrics["timeouts"] == 0
