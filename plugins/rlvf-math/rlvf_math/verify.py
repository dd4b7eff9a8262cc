"""Verify one prediction against one gold answer, in-process (the pool's workers run this)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvf_math.equivalence import equivalent
from rlvf_math.normalize import Tolerance, compare_plain, normalize, plain_number, unevaluated_arithmetic
from rlvf_math.parse import Text, parse_answer, text_key

DEFAULT_REL_TOL = 1e-6
_LISTING_COMMA = re.compile(r",\s")
MAX_ANSWER_CHARS = 1_000


@dataclass(frozen=True)
class Verdict:
    correct: bool
    parse_failure: bool = False  # the prediction is not mathematics we can read (compared as text)


def quick_verdict(gold_answer: str, pred_answer: str, rel_tol: float = DEFAULT_REL_TOL,
                  allow_unevaluated: bool = False) -> Verdict | None:
    """The verdict when it needs no sympy (identical text, two plain numbers, a calculation left undone),
    else None.

    A gold answer that is a number asks for a number: `\\boxed{4 * 10}` does not answer "Calculate 4 * 10",
    although sympy finds it equal to 40 (a policy trained on arithmetic learned to box the question's
    expression). `allow_unevaluated` accepts such answers."""
    if len(gold_answer) > MAX_ANSWER_CHARS or len(pred_answer) > MAX_ANSWER_CHARS:
        return Verdict(False, parse_failure=True)
    gold_text, pred_text = normalize(gold_answer), normalize(pred_answer)
    if gold_text == pred_text:
        return Verdict(True)
    if not allow_unevaluated and plain_number(gold_text) is not None and unevaluated_arithmetic(pred_text):
        return Verdict(False)
    plain = compare_plain(gold_text, pred_text, rel_tol)
    return None if plain is None else Verdict(plain)


def verify_answers(gold_answer: str, pred_answer: str, rel_tol: float = DEFAULT_REL_TOL,
                   allow_unevaluated: bool = False) -> Verdict:
    """Is the extracted prediction `pred_answer` equivalent to the extracted gold `gold_answer`?"""
    quick = quick_verdict(gold_answer, pred_answer, rel_tol, allow_unevaluated)
    if quick is not None:
        return quick
    gold_text, pred_text = normalize(gold_answer), normalize(pred_answer)
    # A comma followed by a space lists ("5, 0", also two boxes joined: `\\boxed{5}, \\boxed{0}`); only "5,0" may be
    # a decimal comma. normalize() drops that space, so the raw answers decide.
    gold_readings = parse_answer(gold_text, decimal_comma=not _LISTING_COMMA.search(gold_answer))
    pred_readings = parse_answer(pred_text, decimal_comma=not _LISTING_COMMA.search(pred_answer))
    parse_failure = all(isinstance(p, Text) for p in pred_readings)
    if parse_failure or all(isinstance(g, Text) for g in gold_readings):
        return Verdict(text_key(gold_text) == text_key(pred_text), parse_failure)
    ctx = Tolerance.for_texts(gold_text, pred_text, rel_tol)
    correct = any(equivalent(g, p, ctx) for g in gold_readings for p in pred_readings)
    return Verdict(correct, parse_failure)
