"""Multi-aspect ratings: ask the judge for "aspect: score" lines, parse them, combine them with weights.

The judge's reply may put one aspect per line or several on one line ("helpfulness: 4, correctness: 3"); the
aspect names are matched case-insensitively, with `_`, `-` and spaces alike. A reply is unparsable (the reward
is `None` for it, and it is counted) when an aspect is missing, its score is not a number, or the score is
outside the scale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rlvf_judge.judging import QUOTING_RULES

DEFAULT_RUBRIC_TEMPLATE = (
    "You are rating a response to a question. " + QUOTING_RULES + "\n\n"
    "<question>\n{prompt}\n</question>\n\n"
    "<response>\n{completion}\n</response>\n\n"
    "Rate the response on each of these aspects with a whole number from {low} (worst) to {high} (best): "
    "{aspects}.\n"
    "Reply with one line per aspect, in the form \"aspect: score\", and nothing else."
)

# "name: 4", "**Name** = 4/5", "- name - 4": a name, a separator, a number (an optional "/ max" is ignored)
_RATING = re.compile(r"([A-Za-z][A-Za-z _\-]*?)\s*\**\s*[:=\-]\s*\**\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*\d+(?:\.\d+)?)?")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().strip("*").strip()).lower()


def check_rubric(rubric: Mapping[str, float], scale) -> tuple[dict[str, float], tuple[float, float]]:
    """Validated (weights by aspect, (low, high))."""
    if not isinstance(rubric, Mapping) or not rubric:
        raise ValueError("rubric must be a table of aspect = weight, e.g. { helpfulness = 0.5, correctness = 0.5 }")
    weights = {}
    for name, weight in rubric.items():
        if not _key(str(name)):
            raise ValueError(f"rubric aspect {name!r} has no name")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"rubric weight of '{name}' must be a number >= 0, got {weight!r}")
        weights[str(name)] = float(weight)
    if sum(weights.values()) <= 0:
        raise ValueError("the rubric weights sum to 0")
    if len({_key(name) for name in weights}) != len(weights):
        raise ValueError(f"rubric aspects {sorted(weights)} are not distinct (case, spaces, '_' and '-' aside)")
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be [low, high], got {scale!r}") from None
    if not low < high:
        raise ValueError(f"scale must be [low, high] with low < high, got {scale!r}")
    return weights, (low, high)


def parse_ratings(text: str, aspects) -> dict[str, float] | None:
    """{aspect: score} for every aspect, from the judge's reply; None if one is missing. The last rating of an
    aspect counts (a judge that corrects itself)."""
    wanted = {_key(name): name for name in aspects}
    found: dict[str, float] = {}
    for match in _RATING.finditer(text or ""):
        name = _key(match[1])
        # "overall helpfulness: 4" still names helpfulness: match the aspect a longer name ends with
        aspect = wanted.get(name) or next((a for k, a in wanted.items() if name.endswith(" " + k)), None)
        if aspect is not None:
            found[aspect] = float(match[2])
    return found if len(found) == len(wanted) else None


def combine(ratings: Mapping[str, float] | None, weights: Mapping[str, float], scale: tuple[float, float]
            ) -> float | None:
    """The weighted mean of the ratings, each mapped from [low, high] to [0, 1]; None if `ratings` is None or a
    rating lies outside the scale."""
    if ratings is None:
        return None
    low, high = scale
    total = 0.0
    for aspect, weight in weights.items():
        value = ratings[aspect]
        if not low <= value <= high:
            return None
        total += weight * (value - low) / (high - low)
    return total / sum(weights.values())


def rubric_score(text: str, weights: Mapping[str, float], scale: tuple[float, float]) -> float | None:
    return combine(parse_ratings(text, weights), weights, scale)
