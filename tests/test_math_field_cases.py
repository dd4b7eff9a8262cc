"""Cases in the shape of the field's graders' regression tests (tests/data/math/field_cases.jsonl), one class of
answer format per category, each with near-misses and exploits that must score 0; checked in-process and
through the reward's worker pool."""

import json
from collections import Counter
from pathlib import Path

import pytest

from rlvf_math import MathReward, verify

CASES_FILE = Path(__file__).parent / "data" / "math" / "field_cases.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]
CATEGORIES = {"prose_numbers", "digits_in_words", "plain_text_gold", "chains_approx", "equations", "labelled",
              "several_solutions", "multi_boxed_gold", "inequalities_intervals", "matrices", "rounding",
              "sets_plain_braces", "unevaluated"}


def test_suite_covers_every_class_with_near_misses():
    assert len(CASES) >= 150
    assert set(Counter(case["category"] for case in CASES)) == CATEGORIES
    for category in CATEGORIES:
        labels = {case["expected"] for case in CASES if case["category"] == category}
        if category != "digits_in_words":
            assert labels == {True, False}, f"{category} needs answers that match and near-misses that do not"
    assert sum(not case["expected"] for case in CASES) >= 70


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
