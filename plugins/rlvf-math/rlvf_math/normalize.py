"""Text-level clean-up of an extracted answer, and exact comparison of plain numbers.

Pure string work (no sympy), so the parent process can settle the common cases without the pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from rlvf_math.extract import matching_brace

_UNICODE = {
    "−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": "/", "π": r"\pi ", "∞": r"\infty ",
    "√": r"\sqrt ", "≤": r"\le ", "≥": r"\ge ", "≠": r"\ne ", "²": "^2", "³": "^3", "∪": r"\cup ",
    "∩": r"\cap ", "±": r"\pm ", "∓": r"\mp ", "°": "", "€": "", "£": "", "¥": "", "₹": "",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}
# Commands whose argument is kept as it is: the wrapper carries no mathematical meaning.
_UNWRAP = ("text", "textbf", "textit", "textrm", "textnormal", "mathrm", "mathbf", "mathit", "mathsf",
           "mathnormal", "mbox", "hbox", "boxed", "fbox", "emph", "operatorname", "bm", "boldsymbol")
_UNWRAP_RE = re.compile(r"\\(?:{})\s*(?=\{{)".format("|".join(_UNWRAP)))
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])")
_SPACES = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\displaystyle(?![a-zA-Z])|\\limits(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])")
_DELIMITERS = re.compile(r"\\\$|\$|\\\(|\\\)|\\\[|\\\]")
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\,|\\!|\{,\}|\\ |\\;)(?=\d{3}(?!\d))")
_COMMA_THOUSANDS = re.compile(r"(?<![\d.,])([1-9]\d{0,2})((?:,\d{3})+)(?![\d,])")
_SPACE_THOUSANDS = re.compile(r"-?\d{1,3}(?: \d{3})+(?:[.,]\d+)?")
_DOT_THOUSANDS_DECIMAL_COMMA = re.compile(r"(-?\d{1,3}(?:\.\d{3})+),(\d+)")  # European 1.234,5
# Words that are mathematics, never a unit to drop.
MATH_WORDS = {"or", "and", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi",
              "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "infty", "inf", "oo", "i", "e"}
_SINGLE_LETTER_UNITS = set("mgslhLK")
_TRAILING_WORDS = re.compile(
    r"^(?P<value>.*?[\d}).!%]|.*?[\d\\].*?\S\s)\s*(?P<words>(?:[A-Za-z]+\.?(?:\s*\^\s*\{?[23]\}?)?(?:[\s/-]+|$))+)$")
_SCIENTIFIC = re.compile(r"(?<![A-Za-z\\\d.])(\d+(?:\.\d+)?|\.\d+)[eE]([+-]?\d+)(?![\d.])")

# Spaces that carry no meaning: next to a bracket, operator or comma (`\\pi r` and `2 x` keep theirs).
_LOOSE_SPACE = re.compile(r"\s+(?=[^\w\\])|(?<=[^\w])\s+")
_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")
_MAX_PLAIN_NUMBER_CHARS = 400
MIN_SIGNIFICANT_DIGITS = 6
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\s*\{(\d+)\}")


def unwrap_commands(text: str) -> str:
    """`\\text{5 cm}` -> ` 5 cm `: keep the argument of purely typographic commands."""
    for _ in range(50):
        match = _UNWRAP_RE.search(text)
        if not match:
            return text
        open_index = match.end()
        close = matching_brace(text, open_index)
        if close < 0:
            return text[:match.start()] + text[open_index + 1:]
        text = text[:match.start()] + " " + text[open_index + 1:close] + " " + text[close + 1:]
    return text


def strip_units(text: str) -> str:
    """`18 dollars`, `5 cm^2`, `\\frac{1}{2} inch` -> the value; words that are mathematics stay."""
    match = _TRAILING_WORDS.match(text)
    if not match:
        return text
    words = re.findall(r"[A-Za-z]+", match.group("words"))
    if any(w.lower() in MATH_WORDS for w in words):
        return text
    single_letter_glued = len(words) == 1 and len(words[0]) == 1 and not text[match.start("words") - 1].isspace()
    if len(words) == 1 and len(words[0]) == 1 and (words[0] not in _SINGLE_LETTER_UNITS or single_letter_glued):
        return text  # `2x`, `3 x`: a variable, not a unit
    return match.group("value").strip()


def _repeating_decimal_as_fraction(match: re.Match) -> str:
    """`0.1\\overline{6}` -> `\\frac{1}{6}`."""
    sign, whole, fixed, repeating = match.groups()
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed)) + Fraction(
        int(repeating), (10 ** len(repeating) - 1) * 10 ** len(fixed))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def normalize(text: str) -> str:
    """Clean an answer's text: wrappers, sizing, spacing, degrees, currency, thousands separators, units."""
    for char, replacement in _UNICODE.items():
        if char in text:
            text = text.replace(char, replacement)
    text = text.replace(r"\left.", "").replace(r"\right.", "")
    text = _SIZING.sub("", text)
    text = unwrap_commands(text)
    text = _DELIMITERS.sub(" ", text)
    text = _DEGREES.sub("", text)
    text = text.replace(r"\%", "%").replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    text = text.replace(r"\!", "")  # a negative thin space never separates anything: `7,\!250` is 7,250
    text = _THIN_THOUSANDS.sub("", text)
    text = text.replace("{,}", ".")  # decimal comma in European LaTeX: 2{,}5
    text = _SPACES.sub(" ", text)
    text = _REPEATING.sub(_repeating_decimal_as_fraction, text)
    text = _SCIENTIFIC.sub(r"\1\\times 10^{\2}", text)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".;").strip()
    text = strip_units(text)
    if not text.startswith(("(", "[", r"\{", "{")):  # inside brackets a comma separates elements
        text = _COMMA_THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), text)
    if _SPACE_THOUSANDS.fullmatch(text):
        text = text.replace(" ", "")
    european = _DOT_THOUSANDS_DECIMAL_COMMA.fullmatch(text)
    if european:
        text = european.group(1).replace(".", "") + "." + european.group(2)
    return _LOOSE_SPACE.sub("", text)


# Two numbers joined by an arithmetic operator, in a normalised answer: a calculation left undone ("4*10",
# "21-1", "4 \times 10"), or multiplied by juxtaposition ("(4)(10)", "4(10)", "(4)10"), unless it is
# scientific notation (1.5 \times 10^{3}).
_UNEVALUATED = re.compile(r"(?:\d|\))\s*(?:[-+*]|\\times|\\cdot|\\div)\s*[-+]?\(?\s*[-+]?\d"
                          r"|(?:\d|\)|\})\s*\(\s*[-+]?\(?\s*\d|\)\s*\d")
_SCIENTIFIC_FORM = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)\s*(?:\\times|\\cdot|\*)\s*10\^(?:\{-?\d+\}|-?\d+)")


def unevaluated_arithmetic(text: str) -> bool:
    """Is this normalised answer arithmetic on numbers that was not carried out (e.g. `4*10` for 40)?

    Of a chain (`4*10=40`, `x=2\\cdot3+1=7`) only the value it ends on counts, as in `final_value`."""
    text = final_value(text)
    return bool(_UNEVALUATED.search(text)) and not _SCIENTIFIC_FORM.fullmatch(text)


def _top_level_sides(text: str) -> tuple[list[str], list[str]]:
    """`a=b\\approx c` -> (["a", "b", "c"], ["=", "~"]), cutting only outside brackets."""
    sides, ops, depth, start, i = [], [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif depth == 0 and ch == "=" and text[i - 1:i] not in ("<", ">", "!") and text[i + 1:i + 2] != "=":
            sides.append(text[start:i])
            ops.append("=")
            start = i + 1
        elif depth == 0 and text.startswith(r"\approx", i):
            sides.append(text[start:i])
            ops.append("~")
            start = i = i + len(r"\approx")
            continue
        i += 1
    sides.append(text[start:])
    return sides, ops


def final_value(text: str) -> str:
    """The value a chain of equalities ends on: `x=2\\cdot3+1=7` -> `7`; an approximation after an exact
    value keeps the exact one: `\\frac{2}{3}\\approx0.67` -> `\\frac{2}{3}` (`x\\approx0.67` -> `0.67`)."""
    sides, ops = _top_level_sides(text)
    if not ops:
        return text
    if "~" in ops:
        exact = sides[:ops.index("~") + 1]
        if not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", exact[-1])):
            return exact[-1]
        return sides[ops.index("~") + 1]
    return sides[-1]


def plain_number(text: str) -> Fraction | None:
    """The exact value of a plain number like `-12`, `3.75`, `.5`, `7/8`; None for anything else."""
    if len(text) > _MAX_PLAIN_NUMBER_CHARS or not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def decimal_places(text: str) -> int | None:
    """Digits after the point of a decimal literal like `0.33`; None if `text` is no decimal literal."""
    if not _DECIMAL.fullmatch(text):
        return None
    return len(text.split(".")[1])


_DECIMAL_LITERAL = re.compile(r"(?<![\d.])\d*\.\d+(?![\d.])")
# An entry of a tuple, vector, matrix or an interval endpoint written as a decimal answers an exact gold entry
# when it is that entry rounded to the digits written, with at least this many significant digits (0.67 for
# 2/3, 1.4142 for sqrt 2; never 0.7 for 2/3).
MIN_ROUNDED_ENTRY_DIGITS = 2


def significant_digits(literal: str) -> int:
    return len(re.sub(r"\D", "", literal).lstrip("0"))


def decimal_literals(text: str) -> dict[Fraction, tuple[int, int]]:
    """The decimal literals of an answer by absolute value: {3/4: (places, significant digits)} for `0.75`."""
    found: dict[Fraction, tuple[int, int]] = {}
    for match in _DECIMAL_LITERAL.finditer(text[:_MAX_PLAIN_NUMBER_CHARS * 4]):
        literal = match.group()
        value = Fraction(literal)
        places = (len(literal.split(".")[1]), significant_digits(literal))
        found[value] = min(found.get(value, places), places)  # `0.5` and `0.50`: the coarser one
    return found


@dataclass(frozen=True)
class Tolerance:
    """How exactly two numbers must agree, given how the answers were written."""

    rel_tol: float
    gold_places: int | None  # the gold is a decimal literal with this many places (a rounded value)
    pred_has_decimal: bool  # the prediction contains a decimal literal: an approximation
    pred_places: int | None  # the prediction is a decimal literal with this many places...
    pred_significant: int  # ...and this many significant digits
    gold_decimals: dict = field(default_factory=dict)  # decimal literals of each side, see `decimal_literals`
    pred_decimals: dict = field(default_factory=dict)
    entry: bool = False  # comparing entries of a tuple, vector, matrix or interval (see MIN_ROUNDED_ENTRY_DIGITS)

    @classmethod
    def for_texts(cls, gold_text: str, pred_text: str, rel_tol: float) -> Tolerance:
        pred_places = decimal_places(pred_text)
        significant = significant_digits(pred_text) if pred_places is not None else 0
        return cls(rel_tol, decimal_places(gold_text), bool(re.search(r"\d*\.\d", pred_text)), pred_places,
                   significant, decimal_literals(gold_text), decimal_literals(pred_text))

    def for_entries(self) -> Tolerance:
        return replace(self, entry=True)

    def approximates(self, exact, approximation, unit_in_last_place) -> bool:
        """Is the decimal prediction a faithful approximation of the exact gold: within `rel_tol`, or
        written with at least MIN_SIGNIFICANT_DIGITS digits that are all right (0.333333 for 1/3)?"""
        difference = abs(exact - approximation)
        if difference <= self.rel_tol * abs(exact):
            return True
        return (self.pred_places is not None and self.pred_significant >= MIN_SIGNIFICANT_DIGITS
                and difference < unit_in_last_place)


def numbers_match(gold: Fraction, pred: Fraction, tolerance: Tolerance) -> bool:
    """Equality of two exact values, allowing for a rounded decimal on either side.

    A decimal prediction must approximate the gold faithfully (see `Tolerance.approximates`). An exact
    prediction matches a gold decimal that is its rounding (1/3 for gold 0.33): the problem asked for it.
    """
    if gold == pred:
        return True
    if tolerance.pred_has_decimal:
        return tolerance.approximates(gold, pred, Fraction(1, 10 ** (tolerance.pred_places or 0)))
    if tolerance.gold_places:
        return round(pred, tolerance.gold_places) == gold
    return False


def compare_plain(gold_text: str, pred_text: str, rel_tol: float) -> bool | None:
    """Verdict when both normalized answers are plain numbers, else None (needs the full parser)."""
    gold = plain_number(gold_text)
    pred = plain_number(pred_text)
    if gold is None or pred is None:
        return None
    return numbers_match(gold, pred, Tolerance.for_texts(gold_text, pred_text, rel_tol))
