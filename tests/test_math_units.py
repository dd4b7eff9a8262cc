"""Extraction, normalization and parsing of single answers."""

import pytest

from rlvf_math.extract import extract_answer, extract_gold
from rlvf_math.normalize import normalize
from rlvf_math.parse import Bracketed, Choice, Collection, Text, parse_answer
from rlvf_math.verify import verify_answers


@pytest.mark.parametrize(("completion", "answer"), [
    (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{\frac{1}{2}}}{3}}", r"\frac{\sqrt{\frac{1}{2}}}{3}"),
    (r"first \boxed{1} then \boxed{2}", "1, 2"),
    ("first \\boxed{1}\nthen \\boxed{2}", "2"),
    (r"\fbox{7}", "7"),
    (r"\boxed 7.", "7"),
    ("blah\n#### 1,234", "1,234"),
    ("The final answer is $\\frac{2}{3}$. I hope it is correct.", r"\frac{2}{3}"),
    ("Answer: 2.5.", "2.5"),
    ("The answer is $\\$35$.", r"\$35"),
    ("so x = 3 and y = 4, hence 7 apples", "7"),
    ("thus $x + y = 7$ and then", "7"),
    ("no numbers at all", None),
])
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


def test_extract_gold_keeps_whole_answer_without_a_box():
    assert extract_gold("x = 2 or x = 3") == "x = 2 or x = 3"
    assert extract_gold(r"The answer is $\boxed{5}$") == "5"
    assert extract_gold("#### 42") == "42"


@pytest.mark.parametrize(("raw", "clean"), [
    ("7,425,000", "7425000"),
    ("1 000", "1000"),
    (r"1\,000", "1000"),
    (r"\$18", "18"),
    ("18 dollars", "18"),
    (r"5 \text{ cm}^2", "5"),
    (r"30^\circ", "30"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"0.\overline{3}", r"\frac{1}{3}"),
    ("2x", "2x"),
    ("1.5e-3", r"1.5\times 10^{-3}"),
])
def test_normalize(raw, clean):
    assert normalize(raw) == clean


def test_parse_structures():
    assert isinstance(parse_answer("(1, 2)")[0], Bracketed)
    assert isinstance(parse_answer(r"\{1, 2\}")[0], Collection)
    assert parse_answer("(C)") == [Choice("C")]
    assert isinstance(parse_answer("Sunday")[0], Text)
    assert len(parse_answer("2,74")) == 2  # a list, or a decimal comma


@pytest.mark.parametrize("nasty", [
    "(" * 10_000 + "1" + ")" * 10_000,
    "-" * 5_000 + "1",
    r"10^{10^{10^{10}}}",
    r"100000!",
    r"\frac{" * 3_000 + "1" + "}{2}" * 3_000,
    "x" * 5_000,
    r"\sqrt{" * 2_000 + "2" + "}" * 2_000,
])
@pytest.mark.timeout(20)
def test_pathological_answers_are_refused_fast_in_process(nasty):
    verdict = verify_answers("1", nasty)
    assert verdict.correct is False
