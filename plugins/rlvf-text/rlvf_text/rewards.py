"""Format and text rewards. Each takes the TRL batch signature and returns one float per completion."""

from __future__ import annotations

import re
import string
from collections import Counter

from rlvf.api import completion_text, last_boxed

_THINK = re.compile(r"^\s*<think>(?P<thought>.*?)</think>(?P<answer>.*)$", re.DOTALL)
# Fences open and close at the start of a line (as in Markdown, and as the `code` reward extracts them).
_PYTHON_FENCE = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\n(?P<code>.*?)^[ \t]*```",
                           re.DOTALL | re.MULTILINE | re.IGNORECASE)


def boxed(prompts, completions, **columns) -> list[float]:
    """1.0 if the completion puts a non-empty final answer in \\boxed{}."""
    return [1.0 if (last_boxed(completion_text(c)) or "").strip() else 0.0 for c in completions]


def think_format(prompts, completions, **columns) -> list[float]:
    """1.0 if the completion is <think>reasoning</think> followed by an answer, each tag used once."""
    scores = []
    for completion in completions:
        text = completion_text(completion)
        match = _THINK.match(text)
        well_formed = (match is not None and match["thought"].strip() and match["answer"].strip()
                       and text.count("<think>") == 1 and text.count("</think>") == 1)
        scores.append(1.0 if well_formed else 0.0)
    return scores


def code_fence(prompts, completions, **columns) -> list[float]:
    """1.0 if the completion has a closed ```python (or ```py) block with non-empty code."""
    return [1.0 if any(m["code"].strip() for m in _PYTHON_FENCE.finditer(completion_text(c))) else 0.0
            for c in completions]


class OverlongPenalty:
    """Soft overlong penalty (DAPO): 0 up to max_length - buffer, then linearly down to -1 at max_length.

    Lengths are token counts from the `completion_ids` column, which rlvf's trainer (and TRL's) passes;
    without it, whitespace-separated words are counted.
    """

    def __init__(self, max_length: int = 512, buffer: int = 128):
        if not 0 < buffer <= max_length:
            raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max_length={max_length}")
        self.max_length, self.buffer = max_length, buffer

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        lengths = ([len(ids) for ids in completion_ids] if completion_ids is not None
                   else [len(completion_text(c).split()) for c in completions])
        soft_limit = self.max_length - self.buffer
        return [0.0 if n <= soft_limit else max(-1.0, (soft_limit - n) / self.buffer) for n in lengths]


class RepetitionPenalty:
    """Penalises repeated word n-grams: -max_penalty * (1 - distinct n-grams / all n-grams)."""

    def __init__(self, ngram: int = 3, max_penalty: float = 1.0):
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.ngram, self.max_penalty = ngram, max_penalty

    def __call__(self, prompts, completions, **columns) -> list[float]:
        scores = []
        for completion in completions:
            words = completion_text(completion).lower().split()
            grams = [tuple(words[i: i + self.ngram]) for i in range(len(words) - self.ngram + 1)]
            scores.append(-self.max_penalty * (1 - len(set(grams)) / len(grams)) if grams else 0.0)
        return scores


# --- question answering (SQuAD-style normalisation, exact match and token F1) ---

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation and articles, collapse white space."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def boxed_answers(text: str) -> list[str]:
    """The contents of every closed \\boxed{} (or \\fbox{}), in order."""
    answers = []
    while (content := last_boxed(text)) is not None:
        answers.append(content)
        text = text[: max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))]
    return answers[::-1]


def extract_answer(text: str) -> str:
    """The answer part of a completion: the \\boxed{} answer, else what follows the last 'answer is' /
    'Answer:', else the whole text. Boxes holding different answers are a hedge (`\\boxed{5} or \\boxed{6}`),
    not an answer: the answer is then empty, and scores 0."""
    boxed = boxed_answers(text)
    if boxed:
        return boxed[-1] if len({normalize_answer(answer) for answer in boxed}) == 1 else ""
    matches = _ANSWER_IS.findall(text)
    return matches[-1].strip() if matches else text


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def _best_against_answers(metric, completions, answer) -> list[float]:
    if answer is None:
        raise KeyError("the QA rewards need an 'answer' column (a string or a list of accepted strings)")
    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        golds = [gold] if isinstance(gold, str) else list(gold)
        prediction = extract_answer(completion_text(completion))
        scores.append(max(metric(prediction, g) for g in golds) if golds else 0.0)
    return scores


def qa_f1(prompts, completions, answer=None, **columns) -> list[float]:
    """Token-overlap F1 of the answer against the `answer` column (best over accepted answers)."""
    return _best_against_answers(token_f1, completions, answer)


def qa_exact(prompts, completions, answer=None, **columns) -> list[float]:
    """1.0 if the normalised answer equals the normalised `answer` column (any accepted answer)."""
    return _best_against_answers(lambda p, g: float(normalize_answer(p) == normalize_answer(g)), completions, answer)


qa_f1.columns = qa_exact.columns = ("answer",)  # the column they read (checked before training starts)
