"""Parse a normalized answer (LaTeX or plain text) into sympy objects and answer structures.

A small recursive-descent parser of our own: sympy's LaTeX parsers evaluate eagerly (`10^{10^{10}}` hangs),
lack `\\pi` juxtaposition, tuples, intervals and sets, so we build sympy objects ourselves with guards on
huge powers and factorials. Nothing is `eval`-ed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sympy
from sympy import Rational

from rlvf_math.normalize import MATH_WORDS

MAX_DEPTH = 40  # nesting of brackets/fractions/signs; deeper input is not a real answer
MAX_POWER_BITS = 100_000  # evaluate a numeric power only if the result fits in this many bits
MAX_FACTORIAL = 5_000
MAX_BINOMIAL_K = 1_000


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class Relation:
    """`x = 3`, `1 < x \\le 2`, `x \\in [0, 1]`: operators between consecutive sides."""
    ops: tuple[str, ...]
    sides: tuple[Any, ...]


@dataclass(frozen=True)
class Bracketed:
    """A tuple, a vector or an interval as written: `(1, 2)`, `[0, 1)`; which one depends on the other side."""
    open: str
    close: str
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Collection:
    """Answers whose order does not matter: `\\{1, 2\\}` (braces) or a bare list `2, 3` / `2 or 3`.
    `conjunction`: joined by "and" only, so as conditions on a variable they all hold (`x > 1 and x < 3`)."""
    items: tuple[Any, ...]
    braces: bool
    conjunction: bool = False


@dataclass(frozen=True)
class MatrixAnswer:
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Choice:
    letter: str


@dataclass(frozen=True)
class Text:
    """An answer that is words, not mathematics (`Sunday`, `odd`): compared as normalized text."""
    text: str


_TOKEN = re.compile(r"""
    (?P<number>\d+(?:\.\d+)?|\.\d+)
  | (?P<env>\\(?:begin|end)\s*\{[a-zA-Z*]+\}(?:\s*\{[lcr|\s]*\})?)
  | (?P<blackboard>\\mathbb\s*\{?\s*[A-Z]\s*\}?)
  | (?P<command>\\[A-Za-z]+|\\\\|\\[{}|%_&#])
  | (?P<word>[A-Za-z]+)
  | (?P<symbol><=|>=|!=|=<|=>|\*\*|[-+*/^_()\[\]{}|,;=<>!'&%:])
  | (?P<space>\s+)
""", re.VERBOSE)

_RELATIONS = {
    "=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "=<": "<=", "=>": ">=", "!=": "!=",
    r"\le": "<=", r"\leq": "<=", r"\leqslant": "<=", r"\ge": ">=", r"\geq": ">=", r"\geqslant": ">=",
    r"\lt": "<", r"\gt": ">", r"\ne": "!=", r"\neq": "!=", r"\approx": "~", r"\equiv": "=", r"\in": "in",
}
_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh,
    "tanh": sympy.tanh, "ln": sympy.log, "exp": sympy.exp, "log": sympy.log,
}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
          "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
          "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_INFINITY_WORDS = {"infty", "inf", "infinity", "oo"}
_SEPARATOR_WORDS = {"or", "and"}
_MATRIX_ENVS = {"matrix", "pmatrix", "bmatrix", "Bmatrix", "smallmatrix", "array"}
_OPEN_TO_CLOSE = {"(": ")", "[": "]"}
_BLACKBOARD_SETS = {"R": sympy.S.Reals}
_IGNORED_COMMANDS = {r"\displaystyle", r"\limits", r"\cdotp"}


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ParseError(f"unexpected character {text[pos]!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group()
        if kind == "space" or value in _IGNORED_COMMANDS:
            continue
        if kind == "word":
            tokens.extend(_split_word(value))
        elif kind == "env":
            name = re.search(r"\{([a-zA-Z*]+)\}", value).group(1)
            tokens.append((value[1:value.index("{")].strip(), name))  # ("begin" | "end", name)
        elif kind == "blackboard":
            tokens.append(("blackboard", re.sub(r"[^A-Z]", "", value[len(r"\mathbb"):])))
        else:
            tokens.append((kind, value))
    return tokens


def _split_word(word: str) -> list[tuple[str, str]]:
    """`pi`, `sin`, `or` stay words; `xy` is x times y; a longer unknown word means the answer is text."""
    lower = word.lower()
    if lower in MATH_WORDS or lower in _INFINITY_WORDS or lower in _FUNCTIONS or lower == "sqrt":
        return [("word", lower)]
    if len(word) > 2:
        raise ParseError(f"word {word!r}")
    return [("letter", ch) for ch in word]


def power(base, exponent):
    """`base**exponent`, left unevaluated when evaluating it would build a huge number."""
    if exponent.has(sympy.UnevaluatedExpr) or base.has(sympy.UnevaluatedExpr):
        return sympy.UnevaluatedExpr(sympy.Pow(base, exponent, evaluate=False))
    if base.is_Rational and exponent.is_Rational and abs(base) not in (0, 1):
        size = max(abs(base.p), base.q).bit_length()
        if abs(exponent.p) * size > MAX_POWER_BITS * exponent.q:
            return sympy.UnevaluatedExpr(sympy.Pow(base, exponent, evaluate=False))
    return sympy.Pow(base, exponent)


def factorial(value):
    if value.is_Integer and value > MAX_FACTORIAL:
        return sympy.UnevaluatedExpr(sympy.factorial(value, evaluate=False))
    if value.has(sympy.UnevaluatedExpr):
        return sympy.UnevaluatedExpr(sympy.factorial(value, evaluate=False))
    return sympy.factorial(value)


def binomial(n, k):
    if n.is_Integer and k.is_Integer and min(k, n - k) > MAX_BINOMIAL_K:
        return sympy.UnevaluatedExpr(sympy.binomial(n, k, evaluate=False))
    return sympy.binomial(n, k)


class Parser:
    """Recursive descent over the tokens. `pm_sign` picks the branch of `\\pm`; `percent` scales `x%`."""

    def __init__(self, text: str, pm_sign: int = 1, percent=sympy.S.One):
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.pm_sign = pm_sign
        self.percent = percent
        self.saw_pm = False
        self.saw_percent = False

    # -- token helpers
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[1] in values and token[0] != "letter"

    def advance(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ParseError("unexpected end")
        self.pos += 1
        return token

    def expect(self, *values: str) -> str:
        token = self.advance()
        if token[1] not in values:
            raise ParseError(f"expected {values[0]!r}, got {token[1]!r}")
        return token[1]

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nested too deeply")

    # -- grammar
    def parse(self):
        node = self.parse_list(end=None)
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return node

    def parse_list(self, end: tuple[str, ...] | None):
        """Items separated by `,`/`;`/`or`/`and` up to one of `end` (or the end of input). `;` separates
        groups of `,`-items: `a=1,b=2; a=3,b=4` is two solutions of two values each."""
        groups: list[list[Any]] = [[]]
        separators = set()
        while True:
            if end is not None and self.at(*end):
                break
            if self.peek() is None:
                break
            groups[-1].append(self.parse_relation())
            if self.at(";") or (self.peek() and self.peek()[0] == "word" and self.peek()[1] == "or"):
                separators.add(self.advance()[1])
                groups.append([])
                continue
            if self.at(",") or (self.peek() and self.peek()[0] == "word" and self.peek()[1] in _SEPARATOR_WORDS):
                separators.add(self.advance()[1])
                continue
            break
        groups = [group for group in groups if group]
        # `or` groups only labelled values (`a=1,b=2 or a=3,b=4`); in `1, 2 or 3` it lists like a comma
        or_lists = "or" in separators and not all(isinstance(item, Relation) for group in groups for item in group)
        if len(groups) == 1 or all(len(group) == 1 for group in groups) or or_lists:
            items = [item for group in groups for item in group]
        else:
            items = [group[0] if len(group) == 1 else Collection(tuple(group), braces=False) for group in groups]
        if len(items) == 1:
            return items[0]
        if not items:
            return None
        return Collection(tuple(items), braces=False, conjunction=separators == {"and"})

    def parse_relation(self):
        self.enter()
        sides = [self.parse_ratio()]
        ops = []
        while self.peek() is not None and self.peek()[1] in _RELATIONS and self.peek()[0] != "letter":
            ops.append(_RELATIONS[self.advance()[1]])
            sides.append(self.parse_ratio())
        self.depth -= 1
        if not ops:
            return sides[0]
        return Relation(tuple(ops), tuple(sides))

    def parse_ratio(self):
        """`2:5` is the ratio 2/5 (`AB:CD = 2:5` then names it); a ratio of three parts is not read."""
        left = self.parse_set_expression()
        if not self.at(":"):
            return left
        self.advance()
        right = self.parse_set_expression()
        _require_expr(left, right)
        if self.at(":"):
            raise ParseError("a ratio of more than two parts")
        if right == 0:
            raise ParseError("a ratio to zero")
        return left / right

    def parse_set_expression(self):
        left = self.parse_sum()
        while self.at(r"\cup", r"\cap", r"\setminus"):
            op = self.advance()[1]
            right = self.parse_sum()
            left_set, right_set = as_real_set(left), as_real_set(right)
            if left_set is None or right_set is None:
                raise ParseError("set operation on something that is not a set")
            if op == r"\cap":
                left = sympy.Intersection(left_set, right_set)
            elif op == r"\setminus":
                left = sympy.Complement(left_set, right_set)
            else:
                left = sympy.Union(left_set, right_set)
        return left

    def parse_sum(self):
        left = self.parse_term()
        while self.at("+", "-", r"\pm", r"\mp"):
            op = self.advance()[1]
            right = self.parse_term()
            if isinstance(left, MatrixAnswer) or isinstance(right, MatrixAnswer):
                left = matrix_arithmetic("+", left, matrix_arithmetic("*", sympy.Integer(self._sign(op)), right))
                continue
            _require_expr(left, right)
            left = left + self._sign(op) * right
        return left

    def _sign(self, op: str) -> int:
        if op in (r"\pm", r"\mp"):
            self.saw_pm = True
            return self.pm_sign if op == r"\pm" else -self.pm_sign
        return -1 if op == "-" else 1

    def parse_term(self):
        left = self.parse_unary()
        while True:
            if self.at("*", r"\cdot", r"\times", r"\ast"):
                self.advance()
                right = self.parse_unary()
            elif self.at("/", r"\div", r"\over"):
                self.advance()
                right = self.parse_unary()
                _require_expr(left, right)
                left = left / right
                continue
            elif self.starts_factor():
                right = self.parse_power()
            else:
                return left
            if isinstance(left, MatrixAnswer) or isinstance(right, MatrixAnswer):
                left = matrix_arithmetic("*", left, right)
                continue
            _require_expr(left, right)
            left = left * right

    def starts_factor(self) -> bool:
        """Can the next token begin a factor multiplied by juxtaposition (`2x`, `3\\pi`, `2(x+1)`)?"""
        token = self.peek()
        if token is None:
            return False
        kind, value = token
        if kind in ("number", "letter", "begin", "blackboard"):
            return True
        if kind == "word":
            return value not in _SEPARATOR_WORDS
        if kind == "command":
            return value not in _RELATIONS and value not in _BINARY_COMMANDS and value not in _CLOSERS
        return value in ("(", "{")

    def parse_unary(self):
        if self.at("-", "+", r"\pm", r"\mp"):
            self.enter()
            sign = self._sign(self.advance()[1])
            operand = self.parse_unary()
            self.depth -= 1
            if isinstance(operand, MatrixAnswer):
                return matrix_arithmetic("*", sympy.Integer(sign), operand)
            _require_expr(operand)
            return sign * operand
        return self.parse_power()

    def parse_power(self):
        base = self.parse_postfix()
        if self.at("^", "**"):
            self.advance()
            self.enter()
            exponent = self.parse_group() if self.at("{") else self.parse_unary()
            self.depth -= 1
            if isinstance(base, MatrixAnswer):
                return matrix_arithmetic("^", base, exponent)
            _require_expr(base, exponent)
            base = power(base, exponent)
            base = self.parse_postfix_operators(base)
        return base

    def parse_postfix(self):
        return self.parse_postfix_operators(self.parse_atom())

    def parse_postfix_operators(self, node):
        while True:
            if self.at("!"):
                self.advance()
                _require_expr(node)
                node = factorial(node)
            elif self.at("%", r"\%"):
                self.advance()
                self.saw_percent = True
                node = node * self.percent
            elif self.at("'"):
                self.advance()  # f'(x): prime marks rarely matter in a final answer
            else:
                return node

    def parse_group(self):
        """`{ ... }` as a LaTeX argument."""
        self.expect("{")
        self.enter()
        node = self.parse_list(end=("}",))
        self.depth -= 1
        self.expect("}")
        return node

    def parse_argument(self):
        """A LaTeX command argument: `{...}`, or a single digit/letter/command as in `\\frac12`."""
        if self.at("{"):
            return self.parse_group()
        kind, value = self.peek() or ("", "")
        if kind == "number":
            self.advance()
            if len(value) > 1 and "." not in value:
                self.tokens.insert(self.pos, ("number", value[1:]))  # \frac12: one digit per argument
                value = value[0]
            return Rational(value)
        return self.parse_atom()

    def parse_atom(self):
        token = self.peek()
        if token is None:
            raise ParseError("unexpected end")
        kind, value = token
        if kind == "number":
            self.advance()
            number = Rational(value)
            return self.mixed_fraction(number) if number.is_Integer else number
        if kind == "letter":
            self.advance()
            return self.parse_symbol(value)
        if kind == "word":
            return self.parse_word()
        if kind == "begin":
            return self.parse_environment()
        if kind == "blackboard":
            self.advance()
            if value not in _BLACKBOARD_SETS:
                raise ParseError(f"\\mathbb{{{value}}}")
            return _BLACKBOARD_SETS[value]
        if kind == "command":
            return self.parse_command()
        if value in ("(", "["):
            return self.parse_brackets()
        if value == "{":
            self.advance()
            self.enter()
            node = self.parse_list(end=("}",))
            self.depth -= 1
            self.expect("}")
            if isinstance(node, Collection):
                return Collection(node.items, braces=True)
            return node
        if value == "|":
            self.advance()
            self.enter()
            inner = self.parse_sum()
            self.depth -= 1
            self.expect("|")
            _require_expr(inner)
            return sympy.Abs(inner)
        raise ParseError(f"unexpected {value!r}")

    def mixed_fraction(self, whole):
        """`2\\frac{1}{2}` is two and a half when the fraction is written with integer literals."""
        if whole < 0 or not self.at(r"\frac"):
            return whole
        start, saved_tokens = self.pos, list(self.tokens)
        fraction = self.parse_command()
        literal = all((kind == "number" and "." not in value) or value in "{}"
                      for kind, value in self.tokens[start + 1:self.pos])
        if literal and fraction.is_Rational and fraction > 0:
            return whole + fraction
        self.pos, self.tokens = start, saved_tokens
        return whole

    def parse_symbol(self, letter: str):
        if letter == "e" and not self.at("_"):
            return sympy.E
        if letter == "i" and not self.at("_"):
            return sympy.I
        name = letter
        if self.at("_"):
            self.advance()
            if self.at("{"):
                self.advance()
                parts = []
                while not self.at("}"):
                    parts.append(self.advance()[1])
                    if len(parts) > 20:
                        raise ParseError("long subscript")
                self.advance()
                name += "_" + "".join(parts)
            else:
                name += "_" + self.advance()[1]
        return sympy.Symbol(name)

    def parse_word(self):
        word = self.advance()[1]
        if word == "pi":
            return sympy.pi
        if word in _INFINITY_WORDS:
            return sympy.oo
        if word == "sqrt":
            return sympy.sqrt(self.parse_function_argument())
        if word in _FUNCTIONS:
            return self.apply_function(word)
        if word == "e":
            return sympy.E
        if word == "i":
            return sympy.I
        raise ParseError(f"unexpected word {word!r}")

    def parse_function_argument(self):
        if self.at("("):
            self.advance()
            self.enter()
            node = self.parse_relation()
            self.depth -= 1
            self.expect(")")
            return node
        if self.at("{"):
            return self.parse_group()
        # `\sin 2x` is sin(2x): a run of juxtaposed factors
        node = self.parse_power()
        while self.peek() is not None and self.peek()[0] in ("number", "letter"):
            node = node * self.parse_power()
        return node

    def apply_function(self, name: str):
        base = None
        if name == "log" and self.at("_"):
            self.advance()
            base = self.parse_argument()
        exponent = None
        if self.at("^"):  # \sin^2 x
            self.advance()
            exponent = self.parse_argument()
        argument = self.parse_function_argument()
        _require_expr(argument)
        value = _FUNCTIONS[name](argument)
        if base is not None:
            value = sympy.log(argument, base)
        return power(value, exponent) if exponent is not None else value

    def parse_command(self):
        command = self.advance()[1]
        name = command[1:]
        if name in ("frac", "dfrac", "tfrac", "cfrac"):
            numerator = self.parse_argument()
            denominator = self.parse_argument()
            _require_expr(numerator, denominator)
            return numerator / denominator
        if name == "sqrt":
            index = None
            if self.at("["):
                self.advance()
                index = self.parse_sum()
                self.expect("]")
            radicand = self.parse_argument()
            _require_expr(radicand)
            if index is None:
                return sympy.sqrt(radicand)
            _require_expr(index)
            return power(radicand, 1 / index)
        if name in ("binom", "dbinom", "tbinom"):
            n = self.parse_argument()
            k = self.parse_argument()
            _require_expr(n, k)
            return binomial(n, k)
        if name == "pi":
            return sympy.pi
        if name == "infty":
            return sympy.oo
        if name in ("emptyset", "varnothing"):
            return sympy.S.EmptySet
        if name in _GREEK:
            return sympy.Symbol(name)
        if name in _FUNCTIONS:
            return self.apply_function(name)
        if name in ("pm", "mp"):
            self.pos -= 1
            return self.parse_unary()
        if name == "{":
            return self.parse_enclosed(r"\}", lambda items: Collection(items, braces=True))
        if name == "langle":
            return self.parse_enclosed(r"\rangle", lambda items: Bracketed("(", ")", items))
        if name in ("lfloor", "lceil"):
            self.enter()
            inner = self.parse_sum()
            self.depth -= 1
            self.expect(r"\rfloor" if name == "lfloor" else r"\rceil")
            _require_expr(inner)
            return sympy.floor(inner) if name == "lfloor" else sympy.ceiling(inner)
        if name in ("lvert", "vert", "|"):
            self.enter()
            inner = self.parse_sum()
            self.depth -= 1
            self.expect(r"\rvert", r"\vert", r"\|")
            _require_expr(inner)
            return sympy.Abs(inner)
        raise ParseError(f"unsupported command {command}")

    def parse_enclosed(self, close: str, build):
        self.enter()
        node = self.parse_list(end=(close,))
        self.depth -= 1
        self.expect(close)
        if isinstance(node, Collection):
            return build(node.items)
        if node is None:
            return build(())
        return build((node,))

    def parse_brackets(self):
        """`(x+1)` is a group; `(1, 2)`, `[0, 1)` are tuples or intervals."""
        opener = self.advance()[1]
        self.enter()
        node = self.parse_list(end=(")", "]"))
        self.depth -= 1
        closer = self.expect(")", "]")
        if isinstance(node, Collection):
            return Bracketed(opener, closer, node.items)
        if _OPEN_TO_CLOSE[opener] != closer:
            raise ParseError("mismatched brackets around a single item")
        return node

    def parse_environment(self):
        env = self.advance()[1]
        if env not in _MATRIX_ENVS:
            raise ParseError(f"environment {env}")
        rows: list[list[Any]] = [[]]
        while True:
            token = self.peek()
            if token is None:
                raise ParseError("unclosed matrix")
            if token[0] == "end":
                self.advance()
                break
            if token[1] == "&":
                self.advance()
                continue
            if token[1] == "\\\\":
                self.advance()
                rows.append([])
                continue
            rows[-1].append(self.parse_relation())
        rows = [row for row in rows if row]
        if not rows or len({len(row) for row in rows}) != 1:
            raise ParseError("ragged matrix")
        return MatrixAnswer(tuple(tuple(row) for row in rows))


_BINARY_COMMANDS = {r"\cdot", r"\times", r"\div", r"\pm", r"\mp", r"\cup", r"\cap", r"\setminus", r"\over", r"\ast"}
_CLOSERS = {r"\}", r"\rangle", r"\rfloor", r"\rceil", r"\rvert", r"\\", r"\%"}


MAX_MATRIX_POWER = 20


def matrix_arithmetic(op: str, left, right) -> MatrixAnswer:
    """A sum, product or small integer power of matrix literals (and scalars), carried out entry by entry."""
    try:
        if op == "^":
            if right == sympy.Symbol("T"):
                result = _as_matrix(left).T
            elif isinstance(right, sympy.Integer) and right == -1:
                result = _as_matrix(left).inv()
            elif isinstance(right, sympy.Integer) and 0 < right <= MAX_MATRIX_POWER:
                result = _as_matrix(left) ** int(right)
            else:
                raise ParseError("matrix power")
        elif op == "+":
            if not (isinstance(left, MatrixAnswer) and isinstance(right, MatrixAnswer)):
                raise ParseError("a matrix plus a scalar")
            result = _as_matrix(left) + _as_matrix(right)
        else:
            left_value = _as_matrix(left) if isinstance(left, MatrixAnswer) else left
            right_value = _as_matrix(right) if isinstance(right, MatrixAnswer) else right
            _require_expr(*(v for v in (left_value, right_value) if not isinstance(v, sympy.MatrixBase)))
            result = left_value * right_value
    except (sympy.ShapeError, sympy.NonSquareMatrixError, TypeError, ValueError) as error:
        raise ParseError(f"matrix arithmetic: {error}") from error
    if not isinstance(result, sympy.MatrixBase):
        raise ParseError("matrix arithmetic gave a scalar")
    return MatrixAnswer(tuple(tuple(sympy.expand(entry) for entry in result.row(i)) for i in range(result.rows)))


def _as_matrix(node: MatrixAnswer) -> sympy.ImmutableMatrix:
    for row in node.rows:
        _require_expr(*row)
    return sympy.ImmutableMatrix([list(row) for row in node.rows])


def _require_expr(*nodes) -> None:
    """Arithmetic applies to expressions only, not to tuples, sets or relations."""
    for node in nodes:
        if not isinstance(node, sympy.Expr):
            raise ParseError("arithmetic on a non-expression")


def as_real_set(node) -> sympy.Set | None:
    """The set of reals a node stands for (interval, union, inequality in one variable), if any."""
    if isinstance(node, sympy.Set):
        return node
    if isinstance(node, Bracketed) and len(node.items) == 2:
        low, high = node.items
        if not (isinstance(low, sympy.Expr) and isinstance(high, sympy.Expr)):
            return None
        if low.free_symbols or high.free_symbols or not (low.is_extended_real and high.is_extended_real):
            return None
        if low == sympy.oo or high == -sympy.oo or (low - high).is_positive:
            return None
        return sympy.Interval(low, high, node.open == "(", node.close == ")")
    if isinstance(node, Collection) and not node.braces:
        parts = [as_real_set(item) for item in node.items]
        if all(part is not None for part in parts):
            return sympy.Intersection(*parts) if node.conjunction else sympy.Union(*parts)
        return None
    if isinstance(node, Relation):
        return _relation_as_set(node)
    return None


_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def _relation_as_set(relation: Relation) -> sympy.Set | None:
    """`x > 3`, `3 \\ge x`, `1 < x \\le 2`, `x \\ne 0`, `x \\in [0, 1]` as sets of reals."""
    sides, ops = relation.sides, relation.ops
    variables = [i for i, side in enumerate(sides) if isinstance(side, sympy.Symbol)]
    if len(variables) != 1 or not all(isinstance(s, sympy.Expr) for s in sides):
        if ops == ("in",) and isinstance(sides[0], sympy.Symbol):
            return as_real_set(sides[1])
        return None
    where = variables[0]
    result = sympy.S.Reals
    for i, op in enumerate(ops):
        if where not in (i, i + 1):
            continue
        bound = sides[i + 1] if where == i else sides[i]
        if bound.free_symbols or not bound.is_extended_real:
            return None
        op = op if where == i else _FLIP.get(op)
        if op == "<":
            part = sympy.Interval.open(-sympy.oo, bound)
        elif op == "<=":
            part = sympy.Interval(-sympy.oo, bound)
        elif op == ">":
            part = sympy.Interval.open(bound, sympy.oo)
        elif op == ">=":
            part = sympy.Interval(bound, sympy.oo)
        elif op == "!=":
            part = sympy.Union(sympy.Interval.open(-sympy.oo, bound), sympy.Interval.open(bound, sympy.oo))
        else:
            return None
        result = sympy.Intersection(result, part)
    return result


_CHOICE = re.compile(r"(?:(?i:option|choice)\s*)?(?:\(([A-J])\)(?![,;]).*|([A-J])(?:[.:)].*)?)", re.DOTALL)


def parse_choice(text: str) -> Choice | None:
    """`C`, `(C)`, `(C) 12`, `C) 12`, `Option C`: a multiple-choice letter (upper case only)."""
    match = _CHOICE.fullmatch(text.strip())
    if not match:
        return None
    return Choice(match.group(1) or match.group(2))


def text_key(text: str) -> str:
    """Normalized words for comparing non-mathematical answers."""
    return re.sub(r"[\s{}\\.,;:!?'\"()*]", "", text.lower())


def _parse_with(text: str, pm_sign: int, percent) -> tuple[Any, Parser]:
    parser = Parser(text, pm_sign=pm_sign, percent=percent)
    return parser.parse(), parser


def parse_answer(text: str, decimal_comma: bool = True) -> list[Any]:
    """Every reading of an answer, most likely first: a choice letter, math (with `\\pm` expanded to
    both branches, `%` read as the number and as a fraction, `2,74` as a list and, with `decimal_comma`, a decimal
    comma), or else text."""
    choice = parse_choice(text)
    if choice is not None:
        return [choice]
    variants = [text]
    if decimal_comma and re.fullmatch(r"-?\d+,\d+", text):
        variants.append(text.replace(",", "."))
    readings: list[Any] = []
    for variant in variants:
        try:
            node, parser = _parse_with(variant, 1, sympy.S.One)
        except (ParseError, RecursionError, TypeError, ValueError, ZeroDivisionError):
            continue
        if parser.saw_pm:
            other, _ = _parse_with(variant, -1, sympy.S.One)
            if other != node:
                braces = isinstance(node, Collection) and node.braces
                node = Collection(_branches(node, other), braces=braces)
        readings.append(node)
        if parser.saw_percent:
            readings.append(_parse_with(variant, 1, Rational(1, 100))[0])
    if not readings:
        readings.append(Text(text_key(text)))
    return readings


def _branches(plus, minus) -> tuple[Any, ...]:
    """`\\pm` branches; a list like `1 \\pm 2, 5` or a set `\\{\\pm 1\\}` stays flat."""
    if isinstance(plus, Collection) and isinstance(minus, Collection) and plus.braces == minus.braces:
        return tuple(dict.fromkeys(plus.items + minus.items))
    return (plus, minus)
