"""Decide whether a parsed prediction is mathematically equivalent to a parsed gold answer.

Order per pair: structural equality, then numbers (exact, or with `rel_tol` where a decimal is involved),
then numeric probing at fixed points and symbolic simplification for expressions with variables.
Anything doubtful is "not equivalent": a false positive rewards a wrong answer.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any

import mpmath  # shipped with sympy
import sympy

from rlvf_math.normalize import MIN_ROUNDED_ENTRY_DIGITS, numbers_match
from rlvf_math.normalize import Tolerance as Context
from rlvf_math.parse import Bracketed, Choice, Collection, MatrixAnswer, Relation, Text, as_real_set

_PRECISION = 40  # digits for numeric comparison of exact expressions
_EXACT_TOLERANCE = sympy.Float("1e-25", _PRECISION)
# Points at which two expressions in the same variables are compared; irregular values avoid coincidences.
_PROBE_VALUES = ("0.6180339887", "1.4142135623", "-0.7320508075", "2.2360679774", "-1.9318516525",
                 "0.4142135623", "3.1415926535", "-2.7182818284")
_MAX_COLLECTION = 64
_MAX_ALGEBRA_OPS = 200
_MAX_ALGEBRA_EXPONENT = 60
_INEQUALITY_ORDER = {">": "<", ">=": "<="}
_EQUATION_OPS = ("=", "!=")


def equivalent(gold, pred, ctx: Context) -> bool:
    gold, pred = _reduce_relation(gold, ctx, ctx.gold_decimals), _reduce_relation(pred, ctx, ctx.pred_decimals)
    if type(gold) is type(pred) and gold == pred:
        return True
    if isinstance(gold, (Text, Choice)) or isinstance(pred, (Text, Choice)):
        return False
    if isinstance(gold, Relation) or isinstance(pred, Relation):
        return _relation_equivalent(gold, pred, ctx)
    if isinstance(gold, sympy.Set) or isinstance(pred, sympy.Set):
        return _sets_equal(as_real_set(gold), as_real_set(pred), ctx)
    if _inequalities(gold) or _inequalities(pred):  # `t > -1 and t < 2` against `(-1, 2)`
        return _sets_equal(as_real_set(gold), as_real_set(pred), ctx)
    if isinstance(gold, Collection) or isinstance(pred, Collection):
        return _collection_equivalent(gold, pred, ctx)
    if isinstance(gold, (Bracketed, MatrixAnswer)) or isinstance(pred, (Bracketed, MatrixAnswer)):
        return _sequence_equivalent(gold, pred, ctx)
    if isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr):
        return expressions_equal(gold, pred, ctx)
    return False


def _inequalities(node) -> bool:
    """A bare list of conditions on a variable, like `x < -1 or x > 2`."""
    return isinstance(node, Collection) and not node.braces and all(
        isinstance(item, Relation) and all(op in ("<", "<=", ">", ">=", "!=") for op in item.ops)
        for item in node.items)


def _drop_membership(node):
    """`x \\in [1, 2]` answers `[1, 2]`."""
    if isinstance(node, Relation) and node.ops == ("in",) and isinstance(node.sides[0], sympy.Symbol):
        return node.sides[1]
    return node


def _reduce_relation(node, ctx: Context, decimals: dict):
    """A relation as what it states: `x \\in [1, 2]` -> `[1, 2]`, `\\frac{2}{3} \\approx 0.67` -> 2/3,
    `x = 2 \\cdot 3 + 1 = 7` -> `x = 7`, `4 \\cdot 10 = 40` -> 40. Anything else stays as it is."""
    node = _drop_membership(node)
    if not isinstance(node, Relation):
        return node
    node = _without_approximation(node)
    if isinstance(node, Relation) and all(op == "=" for op in node.ops):
        return _equality_chain_value(node, ctx, decimals)
    return node


def _without_approximation(relation: Relation):
    """An approximation after an exact value keeps the exact value (`\\frac{2}{3} \\approx 0.67` is 2/3);
    after a name it is the value (`x \\approx 0.67` reads `x = 0.67`)."""
    if "~" not in relation.ops:
        return relation
    cut = relation.ops.index("~")
    sides, ops = relation.sides[:cut + 1], relation.ops[:cut]
    if _is_name(sides[-1]):
        return Relation((*ops, "="), (*sides, relation.sides[cut + 1]))
    return Relation(ops, sides) if ops else sides[0]


def _equality_chain_value(relation: Relation, ctx: Context, decimals: dict):
    """`name = a = b = value` -> `name = value`; `a = value` with no name -> value. The sides without
    variables must all be equal (or the last one a faithful rounding of them): `x = 5 = 6` stays a relation,
    which answers nothing."""
    sides = relation.sides
    names = [i for i, side in enumerate(sides) if _is_name(side)]
    if len(names) > 1 or (names and names[0] not in (0, len(sides) - 1)):
        return relation
    if len(sides) == 2 and names:
        return relation  # `x = 3`: compared as it is
    if names and names[0] == len(sides) - 1:
        sides = tuple(reversed(sides))  # `7 = 2 \\cdot 3 + 1 = x`
    values = sides[1:] if names else sides
    if not names and not all(isinstance(v, sympy.Expr) and not v.free_symbols for v in values):
        return relation  # `3x - y + 2 = 0`: an equation, not a calculation
    constants = [v for v in values if isinstance(v, sympy.Expr) and not v.free_symbols]
    value = values[-1]
    for earlier in constants[:-1]:
        if not expressions_equal(earlier, constants[-1], replace(ctx, entry=False)):
            if value is constants[-1] and _rounded_entry(earlier, constants[-1], decimals):
                value = earlier  # `x = \\frac{2}{3} = 0.67`: the exact value, as with \\approx
                continue
            return relation
    if not names:
        return value
    return Relation(("=",), (sides[0], value))


# -- relations


def _is_name(node) -> bool:
    """A side that names the unknown rather than giving a value: `x`, `a_1`, `AB`, `f(x)`, `m:n`, `(a, b)`."""
    if isinstance(node, (Bracketed, Collection)):
        return bool(node.items) and all(_is_name(item) for item in node.items)
    return isinstance(node, sympy.Expr) and bool(node.free_symbols) and not node.atoms(sympy.Number) - {
        sympy.Integer(-1)}


def _relation_equivalent(gold, pred, ctx: Context) -> bool:
    if isinstance(gold, Relation) and isinstance(pred, Relation):
        return _relations_equal(gold, pred, ctx)
    relation, other = (gold, pred) if isinstance(gold, Relation) else (pred, gold)
    if relation.ops == ("=",):  # `x = 3` answers `3`
        left, right = relation.sides
        value = right if _is_name(left) else (left if _is_name(right) else None)
        if value is None:
            return False
        return equivalent(value, other, ctx) if relation is gold else equivalent(other, value, ctx)
    if isinstance(other, (sympy.Set, Bracketed, Collection)):
        return _sets_equal(as_real_set(gold), as_real_set(pred), ctx)
    return False


def _relations_equal(gold: Relation, pred: Relation, ctx: Context) -> bool:
    if len(gold.ops) == len(pred.ops):
        if gold.ops == pred.ops and all(equivalent(g, p, ctx) for g, p in zip(gold.sides, pred.sides, strict=True)):
            return True
        flipped = tuple(_flip(op) for op in reversed(pred.ops))
        reversed_sides = reversed(pred.sides)
        if gold.ops == flipped and all(equivalent(g, p, ctx) for g, p in zip(gold.sides, reversed_sides, strict=True)):
            return True
    gold_set, pred_set = as_real_set(gold), as_real_set(pred)
    if gold_set is not None and pred_set is not None:
        return _sets_equal(gold_set, pred_set, ctx)
    if len(gold.ops) == 1 and len(pred.ops) == 1 and all(isinstance(s, sympy.Expr) for s in gold.sides + pred.sides):
        return _single_relations_equal(gold, pred)
    return False


def _flip(op: str) -> str:
    return {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)


def _single_relations_equal(gold: Relation, pred: Relation) -> bool:
    """`y = 2x + 1` vs `2x + 1 = y` vs `2y - 4x = 2`: the same relation up to a constant factor
    (a positive one for inequalities)."""
    gold_op, gold_difference = _as_difference(gold)
    pred_op, pred_difference = _as_difference(pred)
    if gold_op != pred_op:
        return False
    if not (gold_difference.free_symbols or pred_difference.free_symbols):
        return False
    ratio = _constant_ratio(gold_difference, pred_difference)
    if ratio is None:
        return False
    return ratio > 0 if gold_op not in _EQUATION_OPS else ratio != 0


def _as_difference(relation: Relation) -> tuple[str, sympy.Expr]:
    """`a op b` as `(a - b) op 0` with op one of =, !=, <, <=."""
    op = relation.ops[0]
    left, right = relation.sides
    if op in _INEQUALITY_ORDER:
        return _INEQUALITY_ORDER[op], right - left
    return op, left - right


def _constant_ratio(first: sympy.Expr, second: sympy.Expr) -> float | None:
    """The constant c with first = c * second, found at the probe points, or None if it is not constant."""
    symbols = sorted(first.free_symbols | second.free_symbols, key=str)
    ratios = []
    for point in _probe_points(symbols):
        a, b = _complex_value(first, point), _complex_value(second, point)
        if a is None or b is None or b == 0:
            continue
        ratios.append(a / b)
    if len(ratios) < 3:
        return None
    first_ratio = ratios[0]
    if any(abs(r - first_ratio) > 1e-9 * max(1, abs(first_ratio)) for r in ratios):
        return None
    if abs(first_ratio.imag) > 1e-12 or first_ratio == 0:
        return None
    return float(first_ratio.real)


# -- sets, lists, tuples, matrices


def _sets_equal(gold_set, pred_set, ctx: Context) -> bool:
    if gold_set is None or pred_set is None:
        return False
    if gold_set == pred_set:
        return True
    ctx = ctx.for_entries()  # interval endpoints may be rounded like entries of a tuple
    gold_parts, pred_parts = _intervals(gold_set), _intervals(pred_set)
    if gold_parts is None or pred_parts is None or len(gold_parts) != len(pred_parts):
        return False
    return all(
        g.left_open == p.left_open and g.right_open == p.right_open
        and expressions_equal(g.start, p.start, ctx) and expressions_equal(g.end, p.end, ctx)
        for g, p in zip(gold_parts, pred_parts, strict=True)
    )


def _intervals(value) -> list[sympy.Interval] | None:
    parts = value.args if isinstance(value, sympy.Union) else (value,)
    if not all(isinstance(part, sympy.Interval) for part in parts):
        return None
    return sorted(parts, key=lambda part: float(part.start))


def _items(node) -> tuple[Any, ...] | None:
    if isinstance(node, (Collection, Bracketed)):
        return node.items
    if isinstance(node, MatrixAnswer) and (len(node.rows) == 1 or all(len(row) == 1 for row in node.rows)):
        return tuple(item for row in node.rows for item in row)  # a vector written as a matrix
    return None


def _collection_equivalent(gold, pred, ctx: Context) -> bool:
    gold_items, pred_items = _items(gold), _items(pred)
    if gold_items is None:
        gold_items = (gold,)
    if pred_items is None:
        pred_items = (pred,)
    if max(len(gold_items), len(pred_items)) > _MAX_COLLECTION:
        return False
    # several solutions: a solution written twice is one solution (a tuple keeps its repeats)
    if isinstance(gold, Collection):
        gold_items = tuple(dict.fromkeys(gold_items))
    if isinstance(pred, Collection):
        pred_items = tuple(dict.fromkeys(pred_items))
    both_sets = all(isinstance(n, Collection) and n.braces for n in (gold, pred))
    if len(gold_items) != len(pred_items) and not both_sets:
        return False
    if isinstance(gold, Bracketed) or isinstance(pred, Bracketed):
        # a bare list against a tuple keeps the tuple's order; braces are a set, never a tuple
        if any(isinstance(n, Collection) and n.braces for n in (gold, pred)):
            return False
        if _repeated_labels(gold_items) or _repeated_labels(pred_items):
            return False  # `x = 1, x = 2` is two solutions, not the point (1, 2)
        return all(equivalent(g, p, ctx.for_entries()) for g, p in zip(gold_items, pred_items, strict=True))
    if both_sets:  # sets: {1, 2, 2} is {1, 2}
        return all(any(equivalent(g, p, ctx) for p in pred_items) for g in gold_items) and all(
            any(equivalent(g, p, ctx) for g in gold_items) for p in pred_items)
    unused = list(pred_items)
    for item in gold_items:
        match = next((i for i, candidate in enumerate(unused) if equivalent(item, candidate, ctx)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def _repeated_labels(items) -> bool:
    labels = [str(item.sides[0]) for item in items
              if isinstance(item, Relation) and item.ops == ("=",) and _is_name(item.sides[0])]
    return len(labels) != len(set(labels))


def _sequence_equivalent(gold, pred, ctx: Context) -> bool:
    ctx = ctx.for_entries()
    if isinstance(gold, MatrixAnswer) and isinstance(pred, MatrixAnswer):
        if len(gold.rows) != len(pred.rows) or len(gold.rows[0]) != len(pred.rows[0]):
            return False
        pairs = (pair for gr, pr in zip(gold.rows, pred.rows, strict=True) for pair in zip(gr, pr, strict=True))
        return all(equivalent(g, p, ctx) for g, p in pairs)
    if isinstance(gold, Bracketed) and isinstance(pred, Bracketed) and (gold.open, gold.close) != (
            pred.open, pred.close):
        return False  # [1, 2) is not (1, 2]
    gold_items, pred_items = _items(gold), _items(pred)
    if gold_items is None or pred_items is None or len(gold_items) != len(pred_items):
        return False
    return all(equivalent(g, p, ctx) for g, p in zip(gold_items, pred_items, strict=True))


# -- expressions


def expressions_equal(gold: sympy.Expr, pred: sympy.Expr, ctx: Context) -> bool:
    if gold == pred:
        return True
    if gold.has(sympy.UnevaluatedExpr) or pred.has(sympy.UnevaluatedExpr):
        return False  # huge numbers: only an identical form is trusted
    if gold.free_symbols or pred.free_symbols:
        return _symbolic_equal(gold, pred)
    if ctx.entry and _rounded_entry_match(gold, pred, ctx):
        return True
    written = ctx.pred_decimals
    if ctx.pred_has_decimal and not any(_written_decimal(atom, written) for atom in pred.atoms(sympy.Rational)):
        ctx = replace(ctx, pred_has_decimal=False)  # `\\frac{2}{3} \\approx 0.67` answers with 2/3, exact
    if gold.is_Rational and pred.is_Rational:
        return numbers_match(Fraction(gold.p, gold.q), Fraction(pred.p, pred.q), ctx)
    return _numbers_close(gold, pred, ctx)


def _rounded_entry_match(gold: sympy.Expr, pred: sympy.Expr, ctx: Context) -> bool:
    """An entry written as a decimal against an exact entry on the other side: the decimal must be the exact
    value rounded to the places written (see MIN_ROUNDED_ENTRY_DIGITS). Two decimals must be equal."""
    gold_decimal = _written_decimal(gold, ctx.gold_decimals)
    pred_decimal = _written_decimal(pred, ctx.pred_decimals)
    if gold_decimal and pred_decimal:
        return False
    if pred_decimal:
        return _rounded_entry(gold, pred, ctx.pred_decimals)
    if gold_decimal:
        return _rounded_entry(pred, gold, ctx.gold_decimals, min_digits=0)  # the gold sets the precision
    return False


def _written_decimal(value: sympy.Expr, decimals: dict) -> bool:
    return value.is_Rational and abs(Fraction(value.p, value.q)) in decimals


def _rounded_entry(exact: sympy.Expr, decimal: sympy.Expr, decimals: dict,
                   min_digits: int = MIN_ROUNDED_ENTRY_DIGITS) -> bool:
    """Is the Rational `decimal`, written as a decimal literal, `exact` rounded to the places written (within
    half a unit in the last place), with at least `min_digits` significant digits?"""
    if not decimal.is_Rational:
        return False
    written = decimals.get(abs(Fraction(decimal.p, decimal.q)))
    if written is None or written[1] < min_digits:
        return False
    exact_value = _complex_value(exact)
    if exact_value is None or abs(exact_value.imag) > 1e-30:
        return False
    with mpmath.workdps(_PRECISION):
        difference = abs(exact_value.real - mpmath.mpf(decimal.p) / decimal.q)
        return bool(difference <= mpmath.mpf(1) / (2 * 10 ** written[0]))


def _numbers_close(gold: sympy.Expr, pred: sympy.Expr, ctx: Context) -> bool:
    gold_value, pred_value = _complex_value(gold), _complex_value(pred)
    if gold_value is None or pred_value is None:
        return False
    if ctx.gold_places and not ctx.pred_has_decimal and abs(pred_value.imag) < 1e-30:
        # an exact prediction whose rounding is the decimal gold (gold 1.41, prediction sqrt(2))
        rounded = sympy.Float(pred_value.real, _PRECISION).round(ctx.gold_places)
        return rounded == sympy.Float(gold_value.real, _PRECISION).round(ctx.gold_places)
    if ctx.pred_has_decimal:
        return ctx.approximates(gold_value, pred_value, mpmath.mpf(10) ** -(ctx.pred_places or 0))
    scale = max(abs(gold_value), abs(pred_value))
    return scale == 0 or abs(gold_value - pred_value) <= _EXACT_TOLERANCE * scale


def _complex_value(expr: sympy.Expr, point: dict | None = None):
    """The value (at `point`) as an mpmath complex at `_PRECISION` digits, or None if not a finite number."""
    try:
        value = expr.evalf(_PRECISION, subs=point)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if not value.is_number or value.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    real, imag = value.as_real_imag()
    if not (real.is_Number and imag.is_Number):
        return None
    with mpmath.workdps(_PRECISION):
        return mpmath.mpc(mpmath.mpf(real), mpmath.mpf(imag))


def _probe_points(symbols) -> list[dict]:
    points = []
    for shift in range(len(_PROBE_VALUES)):
        points.append({s: sympy.Float(_PROBE_VALUES[(shift + 3 * k) % len(_PROBE_VALUES)], 15)
                       for k, s in enumerate(symbols)})
    return points


def _symbolic_equal(gold: sympy.Expr, pred: sympy.Expr) -> bool:
    """Equal as functions of their variables: disproved at any probe point, proved by algebra or by
    agreement at every probe point."""
    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    agreeing = 0
    for point in _probe_points(symbols):
        a, b = _complex_value(gold, point), _complex_value(pred, point)
        if a is None or b is None:
            continue
        if abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b)):
            return False
        agreeing += 1
    if agreeing >= 4:
        return True
    if not _small_enough_for_algebra(gold) or not _small_enough_for_algebra(pred):
        return False
    difference = gold - pred
    return sympy.expand(difference) == 0 or sympy.simplify(difference) == 0


def _small_enough_for_algebra(expr: sympy.Expr) -> bool:
    """`expand((x+2)**100000)` would run for minutes: keep algebra to answer-sized expressions."""
    if sympy.count_ops(expr) > _MAX_ALGEBRA_OPS:
        return False
    return all(not (p.exp.is_Number and abs(p.exp) > _MAX_ALGEBRA_EXPONENT) for p in expr.atoms(sympy.Pow))
