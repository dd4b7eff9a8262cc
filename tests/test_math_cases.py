"""The labelled (gold, completion, verdict) suites, checked in-process and through the reward's worker pool:
tests/data/math/cases.jsonl (realistic completions: GSM8K, MATH-style boxes, extraction, structures, text
choices, adversarial) and field_cases.jsonl (one answer format per category, in the shape of the field's
graders' regression tests, each with near-misses and exploits that must score 0)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from rlvf_math import MathReward, verify

DATA = Path(__file__).parent / "data" / "math"
SUITES = {name: [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
          for name in ("cases", "field_cases")}
CASES, FIELD_CASES = SUITES["cases"], SUITES["field_cases"]
CATEGORIES = {"gsm8k", "math_boxed", "extraction", "structures", "choice_text", "adversarial"}
FIELD_CATEGORIES = {"prose_numbers", "digits_in_words", "plain_text_gold", "chains_approx", "equations", "labelled",
                    "several_solutions", "multi_boxed_gold", "inequalities_intervals", "matrices", "rounding",
                    "sets_plain_braces", "unevaluated"}


def test_suite_is_big_and_covers_every_category():
    assert len(CASES) >= 300
    counts = Counter(case["category"] for case in CASES)
    assert set(counts) == CATEGORIES
    negatives = sum(not case["expected"] for case in CASES)
    assert negatives >= 150, "near-misses that must not match are half of the point"


def test_field_suite_covers_every_class_with_near_misses():
    assert len(FIELD_CASES) >= 150
    assert set(Counter(case["category"] for case in FIELD_CASES)) == FIELD_CATEGORIES
    for category in FIELD_CATEGORIES:
        labels = {case["expected"] for case in FIELD_CASES if case["category"] == category}
        if category != "digits_in_words":
            assert labels == {True, False}, f"{category} needs answers that match and near-misses that do not"
    assert sum(not case["expected"] for case in FIELD_CASES) >= 70


@pytest.mark.parametrize("case", [c for cases in SUITES.values() for c in cases],
                         ids=[f"{name}-{i}-{c['category']}" for name, cases in SUITES.items()
                              for i, c in enumerate(cases)])
def test_case(case):
    assert verify(case["gold"], case["completion"]) is case["expected"], (
        f"gold {case['gold']!r}, completion {case['completion'][-200:]!r}")


@pytest.mark.parametrize("suite", SUITES)
def test_reward_through_the_pool_agrees_with_the_suite(suite):
    cases = SUITES[suite]
    reward = MathReward(timeout=10.0, workers=2)
    try:
        scores = reward([""] * len(cases), [c["completion"] for c in cases], answer=[c["gold"] for c in cases])
        metrics = reward.pop_metrics()
    finally:
        reward.close()
    wrong = [(c["gold"], c["completion"][-80:]) for c, s in zip(cases, scores, strict=True) if s != c["expected"]]
    assert not wrong
    assert metrics["verified"] == len(cases)
    assert metrics["timeouts"] == 0
