"""Find the final answer in a free-form completion (pure string work: no sympy, cheap in the parent)."""

from __future__ import annotations

import re

# Only the tail of a very long completion is searched: final answers sit at the end.
MAX_SEARCH_CHARS = 20_000

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|would\s+be|should\s+be|=|:)\s*:?",
    re.IGNORECASE,
)
_MATH_SEGMENT = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\\)\$((?:\\.|[^$\\])+?)\$", re.DOTALL)
# A number as written in prose: optional sign, thousands groups, decimals, a simple fraction.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# Boxed answers this close together on one line are one answer listed in parts ("\boxed{2} and \boxed{3}").
_MAX_GAP_BETWEEN_PARTS = 40


def matching_brace(text: str, open_index: int) -> int:
    """Index of the `}` closing the `{` at `open_index`, or -1 if it is never closed."""
    depth = 0
    i = open_index
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped brace `\{` does not count
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Outermost `\\boxed{...}` / `\\fbox{...}` (also `\\boxed 5`) as (start, end, content)."""
    spans: list[tuple[int, int, str]] = []
    for match in _BOXED.finditer(text):
        start = match.start()
        if spans and start < spans[-1][1]:
            continue  # nested inside the previous box
        i = match.end()
        if i < len(text) and text[i] == "{":
            close = matching_brace(text, i)
            if close < 0:
                continue
            spans.append((start, close + 1, text[i + 1:close]))
        else:
            word = re.match(r"[^\s$]+", text[i:])
            if word:
                spans.append((start, i + word.end(), word.group().rstrip(".,")))
    return spans


def last_boxed(text: str) -> str | None:
    """The last boxed answer, joined with the boxes just before it on the same line."""
    spans = boxed_spans(text)
    if not spans:
        return None
    parts = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[1]:parts[-1][0]]
        if "\n" in gap or len(gap) > _MAX_GAP_BETWEEN_PARTS:
            break
        parts.append(span)
    return ", ".join(content for _, _, content in reversed(parts))


def _sentence(text: str) -> str:
    """The first line with text, cut at the end of its first sentence (a period not inside a number)."""
    for line in text.split("\n"):
        if line.strip():
            text = line
            break
    end = re.search(r"\.(?=\s|$)", text)  # "is 2.5." ends at its second period
    if end:
        text = text[:end.start()]
    return text.strip()


def _first_math(segment: str) -> str:
    match = _MATH_SEGMENT.search(segment)
    if match:
        return next(g for g in match.groups() if g is not None)
    return segment


def answer_phrase(text: str) -> str | None:
    """The answer after the last "final answer is" / "answer:" in the text."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    for match in reversed(matches):
        segment = _sentence(text[match.end():])
        segment = _first_math(segment).strip().strip("*").strip()
        if segment:
            return segment
    return None


def gsm8k_answer(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return matches[-1].strip() if matches else None


def last_expression(text: str) -> str | None:
    """Fallback: the last math segment if nothing numeric follows it, else the last number.

    Of a math segment with `=` only the part after the last `=` is kept: "2 + 3 = 5" answers 5.
    """
    numbers = list(_NUMBER.finditer(text))
    segments = list(_MATH_SEGMENT.finditer(text))
    if segments:
        last = segments[-1]
        if not numbers or numbers[-1].start() < last.end():
            content = next(g for g in last.groups() if g is not None)
            return _after_last_equals(content).strip() or None
    if numbers:
        return numbers[-1].group()
    return None


def _after_last_equals(expression: str) -> str:
    depth = 0
    cut = 0
    for i, ch in enumerate(expression):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "=" and depth == 0 and expression[i - 1:i] not in ("<", ">", "!"):
            cut = i + 1
    return expression[cut:]


def extract_answer(completion: str) -> str | None:
    """The final answer of a model completion, or None if it states none."""
    text = completion[-MAX_SEARCH_CHARS:]
    for finder in (last_boxed, gsm8k_answer, answer_phrase, last_expression):
        found = finder(text)
        if found and found.strip():
            return found.strip()
    return None


def extract_gold(gold: str) -> str:
    """The gold answer: its box or GSM8K `####` part if it has one, else all of it."""
    text = str(gold).strip()
    found = last_boxed(text) or gsm8k_answer(text)
    return (found or text).strip()
