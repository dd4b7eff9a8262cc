"""rlvf-math: a sympy-based verifier of final math answers, as an rlvf reward plugin."""

from rlvf_math.extract import extract_answer, extract_gold
from rlvf_math.reward import MathReward


def verify(gold: str, completion: str) -> bool:
    """In-process check of one completion against a gold answer (no worker pool, no time limit)."""
    from rlvf_math.verify import verify_answers

    prediction = extract_answer(completion)
    return prediction is not None and verify_answers(extract_gold(gold), prediction).correct


__all__ = ["MathReward", "extract_answer", "extract_gold", "verify"]
