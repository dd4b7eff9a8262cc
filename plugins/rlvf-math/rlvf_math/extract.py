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
# A number as written in prose: optional sign, thousands groups (`12,500`, `12 500`, `1.234,5`), a decimal
# point or a decimal comma (`3,75`; not `1,2,3`, a list), a simple fraction. Digits glued to a letter before
# them are part of a word (`QX7ZR`, `H2O`), not a number.
_NUMBER = re.compile(r"""
    (?<![A-Za-z\d.])[-−]?(?<![A-Za-z\d.])
    (?: \d{1,3}(?:\.\d{3})+,\d+(?![\d.,]\d|\d)
      | \d{1,3}(?:,\d{3})+(?![\d]|,\d)
      | \d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)
      | \d+ )
    (?:\.\d+|,\d+(?![\d,]|\.\d))?
    (?:\s?/\s?\d+(?![\d.,]\d))?
  | (?<![\w.])[-−]?\.\d+
""", re.VERBOSE)
# Letters right after a number that make it a code, not a quantity with a unit (`7ZR`, `3B2`).
_WORD_AFTER_NUMBER = re.compile(r"[A-Z]|[A-Za-z]+\d")
# What may separate the numbers of a list that ends a text: `2, 5`, `2 and 5`, `x = 1 or x = -2`.
_LIST_GAP = re.compile(r"\s*(?:,|;|,?\s*(?:and|or))\s*(?:[A-Za-z](?:_\w+)?\s*=\s*)?", re.IGNORECASE)
# The label of a value in prose: `x = ` in `x = 3` (not the `x` of `2x = 3`).
_PROSE_LABEL = re.compile(r"(?<![\w\\])([A-Za-z](?:_\w+)?)\s*=\s*$")
# What may separate math segments (`$x=1$ and $x=-2$`) or gold boxes that make one answer.
_CONNECTOR_GAP = re.compile(r"[\s$]*(?:,|;|\\quad|\\text\s*\{\s*(?:,|and|or)?\s*\}|,?\s*(?:and|or))?[\s$]*",
                            re.IGNORECASE)
# LaTeX written without `$` delimiters around the last number: `\\frac{7}{4}`, `-3\\sqrt{2}`.
_LATEX_PIECE = r"(?:\\[A-Za-z]+\s*|[{}^_\d.+*/()-])"
_BARE_LATEX = re.compile(rf"[-−]?{_LATEX_PIECE}*\\[A-Za-z]+{_LATEX_PIECE}*")
# Brackets around the last number of a text that make it one answer: `(1, 4)`, `{2, 5}`, `[0, 3)`.
_NUMERIC_GROUP = re.compile(r"[\s\d.,;/+-]*")
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


def last_boxed(text: str, parts_gap: re.Pattern | None = None) -> str | None:
    """The last boxed answer, joined with the boxes just before it on the same line (or, with `parts_gap`, with
    the boxes before it separated only by text matching `parts_gap`)."""
    spans = boxed_spans(text)
    if not spans:
        return None
    parts = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[1]:parts[-1][0]]
        if parts_gap is not None and not parts_gap.fullmatch(gap):
            break
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


# Where the answer stated in prose ends: "12 dollars, since ...", "5 (the others fail)".
_PROSE_CLAUSE = re.compile(r",\s+(?=[a-z]{2,}\b)|\s+\(|;\s")


def answer_phrase(text: str) -> str | None:
    """The answer after the last "final answer is" / "answer:" in the text."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    for match in reversed(matches):
        segment = _sentence(text[match.end():])
        math = _first_math(segment)
        # in prose the answer ends where a clause begins
        segment = _PROSE_CLAUSE.split(segment, maxsplit=1)[0] if math is segment else math
        segment = segment.strip().strip("*").strip()
        if segment:
            return segment
    return None


def gsm8k_answer(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return matches[-1].strip() if matches else None


def _prose_numbers(text: str) -> list[re.Match]:
    return [m for m in _NUMBER.finditer(text) if not _WORD_AFTER_NUMBER.match(text, m.end())]


def _enclosing_numeric_group(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of the brackets around text[start:end] if they hold only numbers (`(1, 4)`, `{2,5}`)."""
    opener = max(text.rfind(ch, 0, start) for ch in "([{")
    if opener < 0 or not _NUMERIC_GROUP.fullmatch(text, opener + 1, start):
        return None
    closers = [i for i in (text.find(ch, end) for ch in ")]}") if i >= 0]
    if not closers:
        return None
    closer = min(closers)
    if not _NUMERIC_GROUP.fullmatch(text, end, closer) or "," not in text[opener:closer]:
        return None
    return opener, closer + 1


def _last_number(text: str, numbers: list[re.Match]) -> str:
    """The last number of a text, with the numbers listed just before it (`2, 5`, `x = 1 or x = -2`) or the
    brackets around it (`(1, 4)`): a list stays a list, so that it answers a gold list and never a single value."""
    last = numbers[-1]
    for latex in _BARE_LATEX.finditer(text, max(0, last.start() - 200), min(len(text), last.end() + 200)):
        if latex.start() <= last.start() and last.end() <= latex.end() and latex.group().count("{") == latex.group(
                ).count("}"):
            return latex.group().strip()
    group = _enclosing_numeric_group(text, last.start(), last.end())
    if group:
        return text[group[0]:group[1]]
    values = [last.group()]
    for previous, current in zip(reversed(numbers[:-1]), reversed(numbers[1:]), strict=True):
        if not _LIST_GAP.fullmatch(text, previous.end(), current.start()) or (
                _prose_label(text, previous.start()) != _prose_label(text, current.start())):
            break  # `2x = 12 and x = 6` is a step and its result, not two solutions
        values.append(previous.group())
    return ", ".join(reversed(values))


def _prose_label(text: str, start: int) -> str | None:
    label = _PROSE_LABEL.search(text[max(0, start - 20):start])
    return label.group(1) if label else None


def last_expression(text: str) -> str | None:
    """Fallback: the last math segment if nothing numeric follows it, else the last number.

    Math segments separated only by "and", "or" or commas are one answer (`$x=1$ and $x=-2$`). Of a
    calculation only its result is kept ("2 + 3 = 5" answers 5, see `final_side`)."""
    numbers = _prose_numbers(text)
    segments = list(_MATH_SEGMENT.finditer(text))
    if not segments and _is_bare_formula(text):
        return final_side(text.strip().rstrip("."))  # `3x - y + 2 = 0` written without `$`
    if segments:
        last = segments[-1]
        if not numbers or numbers[-1].start() < last.end():
            parts = [last]
            for previous in reversed(segments[:-1]):
                if not _CONNECTOR_GAP.fullmatch(text, previous.end(), parts[-1].start()) or (
                        _segment_label(previous) != _segment_label(last)):
                    break  # `$2x = 12$ and $x = 6$`: a step and its result
                parts.append(previous)
            contents = [final_side(next(g for g in part.groups() if g is not None)).strip()
                        for part in reversed(parts)]
            return ", ".join(c for c in contents if c) or None
    if numbers:
        return _last_number(text, numbers)
    return None


def _is_bare_formula(text: str) -> bool:
    """A short one-line text that is all math (variables, no words): `3x - y + 2 = 0`, `y = 3x + 2`."""
    text = text.strip()
    return (0 < len(text) <= 200 and "\n" not in text and bool(_variables(text))
            and not re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", " ", text)))


def _segment_label(segment: re.Match) -> str | None:
    """What a math segment names before its first `=` (`x` in `$x = 1$`), None for a bare value."""
    content = next(g for g in segment.groups() if g is not None)
    cuts = _top_level_equals(content)
    return re.sub(r"\s+", "", content[:cuts[0]]) if cuts else None


def _top_level_equals(expression: str) -> list[int]:
    depth = 0
    cuts = []
    for i, ch in enumerate(expression):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "=" and depth == 0 and expression[i - 1:i] not in ("<", ">", "!") and expression[i + 1:i + 2] != "=":
            cuts.append(i)
    return cuts


def _variables(expression: str) -> str:
    """The letters of an expression that name variables: LaTeX commands, environment names and subscripts
    removed."""
    expression = re.sub(r"\\(?:text|begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+|_\{[^{}]*\}|_\w", " ", expression)
    return "".join(re.findall(r"[A-Za-z]", expression))


def _is_name_text(expression: str) -> bool:
    """`x`, `a_1`, `(a, b)`, `AB:CD`, `x + y`: variables only, no numbers (subscripts aside)."""
    without_subscripts = re.sub(r"_\{[^{}]*\}|_\w", "", expression)
    return bool(_variables(expression)) and not re.search(r"\d", without_subscripts)


def final_side(expression: str) -> str:
    """Of a calculation or a labelled value, the value: `x = 2 \\cdot 3 + 1 = 7` -> `7`, `(a,b) = (1,4)` ->
    `(1,4)`. An equation stays whole (`3x - y + 2 = 0`, `y = 3x + 2`): its sides are not a calculation."""
    cuts = _top_level_equals(expression)
    if not cuts or (len(cuts) > 1 and _TOP_LEVEL_LIST.search(_top_level(expression))):
        return expression  # `k = 0, k = \frac{1}{2}`: several labelled values, for the parser to read
    first, last = expression[:cuts[0]], expression[cuts[-1] + 1:]
    if _variables(last) or not (_is_name_text(first) or _FUNCTION_VALUE.fullmatch(first) or not _variables(first)):
        return expression
    sides = [expression[a + 1:b] for a, b in zip([-1, *cuts], [*cuts, len(expression)], strict=True)]
    if len({float(side) for side in sides if _PLAIN_NUMBER.fullmatch(side.strip())}) > 1:
        return expression  # `x = 7 = 8` is false, not an answer of 8: the verifier sees the whole chain
    return last


_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# `f(2)`, `P(A)`, `g\left(\frac{1}{2}\right)`: a function's value at a point labels the value it equals.
_FUNCTION_VALUE = re.compile(r"\s*\\?[A-Za-z](?:_\{?\w+\}?)?\s*(?:\\left)?\(.*\)\s*")
_TOP_LEVEL_LIST = re.compile(r"[,;]|\b(?:and|or)\b")


def _top_level(expression: str) -> str:
    """`expression` with everything inside brackets removed."""
    depth, kept = 0, []
    for ch in expression:
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif depth == 0:
            kept.append(ch)
    return "".join(kept)
def extract_answer(completion: str) -> str | None:
    """The final answer of a model completion, or None if it states none."""
    text = completion[-MAX_SEARCH_CHARS:].replace("\\!", "")  # a negative thin space: `7,\!250` is 7,250
    for finder in (last_boxed, gsm8k_answer, answer_phrase, last_expression):
        found = finder(text)
        if found and found.strip():
            return found.strip()
    return None


def extract_gold(gold: str) -> str:
    """The gold answer: its box or GSM8K `####` part if it has one, else all of it.

    Of several boxes in a gold solution the last one is the answer, with the boxes just before it only
    if nothing but "and", "or" or a comma separates them (`\\boxed{2}, \\boxed{5}`: two solutions)."""
    text = str(gold).strip()
    found = last_boxed(text, parts_gap=_CONNECTOR_GAP) or gsm8k_answer(text)
    return (found or text).strip()
