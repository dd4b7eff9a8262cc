"""Steps of a completion, step-labelled rows, and the held-out metrics of a PRM. Torch-free.

A completion's steps are the pieces between separators that hold more than whitespace; a step starts after the
previous step's separator (blank lines before it are its own) and ends at its last character before the next
separator (`ends[k]`, exclusive), as rlvf.api.StepScores.split has them.
"""

from __future__ import annotations

import math
from typing import Any

from rlvf.api import ConfigError, completion_text, step_spans  # step_spans: the core's, the one definition of a step


def step_ends(text: str, separator: str = "\n") -> list[int]:
    """The end offset (exclusive) of each step of `text`, its separator left out: the `ends` of rlvf.api.StepScores
    (as StepScores.split makes them), which put step k's score on the token holding its last character; [] for a
    text of whitespace only."""
    return [end for _, end in step_spans(text, separator)]


def split_steps(text: str, separator: str = "\n") -> list[str]:
    """The steps of `text` without their closing separators: `separator.join` of them gives the text back up to
    its last step (trailing whitespace-only pieces are no step)."""
    return [text[start:end] for start, end in step_spans(text, separator)]


# --- rows: (prompt, steps, labels) ---

_TRUE = {"1", "true", "yes", "correct", "+"}
_FALSE = {"0", "false", "no", "incorrect", "-"}


def parse_step_label(value: Any, where: str) -> float:
    """A step label as a float in [0, 1]: 0/1, true/false, yes/no, +/-, or a probability."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: step label {value!r} is not in [0, 1]")
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return float(value.strip().lower() in _TRUE)
    raise ConfigError(f"{where}: step label {value!r} is not 0/1, true/false, yes/no or a float in [0, 1]")


def normalize_step_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row with `prompt` (text or chat messages; may be empty), `steps` (non-empty strings) and `labels` (one
    float in [0, 1] per step)."""
    steps, labels = row.get("steps"), row.get("labels")
    missing = [key for key, value in (("steps", steps), ("labels", labels)) if value is None]
    if missing:
        raise ConfigError(f"{where}: row has no {' or '.join(map(repr, missing))} (it has "
                          f"{', '.join(sorted(row)) or 'nothing'}); map the columns with prm.columns")
    if isinstance(steps, str) or not isinstance(steps, (list, tuple)) or not steps:
        raise ConfigError(f"{where}: 'steps' must be a non-empty list of strings, got {str(steps)[:80]!r}")
    if isinstance(labels, (str, int, float)) or not isinstance(labels, (list, tuple)):
        raise ConfigError(f"{where}: 'labels' must be a list with one label per step, got {str(labels)[:80]!r}")
    if len(labels) != len(steps):
        raise ConfigError(f"{where}: {len(steps)} steps but {len(labels)} labels")
    texts = []
    for index, step in enumerate(steps):
        text = completion_text(step) if not isinstance(step, str) else step
        if not text.strip():
            raise ConfigError(f"{where}: step {index} is empty")
        texts.append(text)
    return {**row, "prompt": row.get("prompt") or "", "steps": texts,
            "labels": [parse_step_label(value, f"{where} step {index}") for index, value in enumerate(labels)]}


# --- metrics ---

def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count half); None without both classes."""
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: pair[0])
    rank_sum, position = 0.0, 0
    while position < len(ranked):  # average ranks (1-based) over ties
        end = position
        while end < len(ranked) and ranked[end][0] == ranked[position][0]:
            end += 1
        rank_sum += (position + 1 + end) / 2 * sum(1 for _, y in ranked[position:end] if y)
        position = end
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def first_below(values: list[float], threshold: float = 0.5) -> int | None:
    """The index of the first value below `threshold`; None if there is none."""
    return next((index for index, value in enumerate(values) if value < threshold), None)


def step_metrics(probabilities: list[list[float]], labels: list[list[float]]) -> dict[str, float]:
    """Held-out metrics of per-step probabilities against per-step labels (a label counts as correct at >= 0.5):
    `auc` over all steps, `first_error_accuracy` (the first step predicted wrong, p < 0.5, is the first step
    labelled wrong, or both have none), `step_accuracy`, `loss` (binary cross-entropy per step, soft labels as
    they are), and the mean p of steps labelled correct and wrong."""
    flat_p = [p for row in probabilities for p in row]
    flat_y = [y for row in labels for y in row]
    if not flat_p:
        return {}
    eps = 1e-7
    hard = [int(y >= 0.5) for y in flat_y]
    metrics = {
        "loss": sum(-(y * math.log(max(p, eps)) + (1 - y) * math.log(max(1 - p, eps)))
                    for p, y in zip(flat_p, flat_y, strict=True)) / len(flat_p),
        "step_accuracy": sum((p >= 0.5) == bool(y) for p, y in zip(flat_p, hard, strict=True)) / len(flat_p),
        "first_error_accuracy": sum(first_below(p) == first_below(y) for p, y in zip(probabilities, labels,
                                                                                         strict=True))
        / len(probabilities),
    }
    auc = roc_auc(flat_p, hard)
    if auc is not None:
        metrics["auc"] = auc
    for name, wanted in (("p/correct_steps", 1), ("p/wrong_steps", 0)):
        values = [p for p, y in zip(flat_p, hard, strict=True) if y == wanted]
        if values:
            metrics[name] = sum(values) / len(values)
    return metrics
