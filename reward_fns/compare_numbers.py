"""Scalars: two single values compared exactly when rational, numerically at 50 digits otherwise.

Expressions with variables are compared by probabilistic identity testing at fixed random points; written decimals
are held to the precision they were written with; percentages and degrees are read both ways; values too large to
evaluate are compared through logarithms and prime-power forms, and only what stays undecided goes to sympy
through the caller's bounded ``symbolic`` check.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from reward_fns import evaluate as ev
from reward_fns.comparison import State, SymbolicTimeout
from reward_fns.expr import (
    Add,
    Const,
    Degrees,
    Func,
    Matrix,
    Mul,
    Neg,
    Node,
    Num,
    Percent,
    Pow,
    Relation,
    Seq,
    Union,
    children,
    contains,
    free_symbols,
    has_decimal,
)

# Exact-looking expressions that evaluate in floating point (π, √2, ...) must agree to this relative precision.
TIGHT_TOLERANCE = Fraction(1, 10**30)
IDENTITY_POINTS = 4


@dataclass(frozen=True)
class _Reading:
    """One way to read a scalar: its tree and, for a plain written decimal, how many places it was written to."""

    node: Node
    decimals: int | None


def _readings(node: Node) -> list[_Reading]:
    """A percentage is read as x/100 and as x; an angle in degrees as x and as x·π/180."""
    if isinstance(node, Percent):
        inner = _plain_decimals(node.operand)
        return [
            _Reading(Mul((node.operand, Num(Fraction(1, 100)))), None if inner is None else inner + 2),
            _Reading(node.operand, inner),
        ]
    if isinstance(node, Degrees):
        return [
            _Reading(node.operand, _plain_decimals(node.operand)),
            _Reading(Mul((node.operand, Const("pi"), Num(Fraction(1, 180)))), None),
        ]
    return [_Reading(node, _plain_decimals(node))]


def _plain_decimals(node: Node) -> int | None:
    if isinstance(node, Neg):
        return _plain_decimals(node.operand)
    if isinstance(node, Num):
        return node.decimals
    return None


_NOT_SCALAR = (Seq, Matrix, Relation, Union)


def equal_scalars(pred: Node, gold: Node, state: State) -> bool:
    # A tuple, set, matrix or relation anywhere inside (``-[0, 1)``) leaves no scalar to compare, and nothing for
    # sympy to decide either.
    if contains(pred, _NOT_SCALAR) or contains(gold, _NOT_SCALAR):
        return False
    if pred == gold:
        return True
    undecided = False
    for gold_reading in _readings(gold):
        for pred_reading in _readings(pred):
            result = _compare_readings(pred_reading, gold_reading, state)
            if result:
                return True
            undecided |= result is None
    if undecided:
        return _symbolic(pred, gold, state)
    return False


def _compare_readings(pred: _Reading, gold: _Reading, state: State) -> bool | None:
    symbols = free_symbols(pred.node) | free_symbols(gold.node)
    if symbols:
        return _identity_test(pred.node, gold.node, symbols, state)
    try:
        pred_value, gold_value = ev.evaluate(pred.node), ev.evaluate(gold.node)
    except ev.TooLarge:
        return _compare_magnitudes(pred.node, gold.node)
    except ev.Undefined:
        return False
    except ev.NotNumeric:
        return None
    state.methods.append("numeric")
    return _values_match(pred_value, gold_value, pred, gold, state.rel_tol)


def _values_match(pred_value, gold_value, pred: _Reading, gold: _Reading, rel_tol: float) -> bool:
    if ev.is_exact(pred_value) and ev.is_exact(gold_value) and pred_value == gold_value:
        return True
    approximate = has_decimal(pred.node) or has_decimal(gold.node)
    if not approximate:
        if ev.is_exact(pred_value) and ev.is_exact(gold_value):
            return False
        if ev.is_exact(gold_value) and gold_value == 0:
            return ev.near_zero(pred_value)
        return ev.close(pred_value, gold_value, TIGHT_TOLERANCE)
    difference = abs(ev.to_float_context(pred_value) - ev.to_float_context(gold_value))
    slack = 1 + Fraction(1, 10**9)
    if gold.decimals is not None:
        # The gold was written rounded to `gold.decimals` places: the prediction must round to it, and be at least
        # as precise ("3.1" does not match a gold of "3.14").
        if pred.decimals is not None and pred.decimals < gold.decimals:
            return bool(difference == 0)
        return bool(difference <= ev.to_float_context(Fraction(5, 10 ** (gold.decimals + 1)) * slack))
    if pred.decimals is not None:
        # A rounded prediction of an exact gold: correctly rounded, and precise enough (rel_tol).
        rounding = ev.to_float_context(Fraction(5, 10 ** (pred.decimals + 1)) * slack)
        return bool(difference <= rounding) and ev.close(pred_value, gold_value, rel_tol * float(slack))
    return ev.close(pred_value, gold_value, rel_tol)


def _identity_test(pred: Node, gold: Node, symbols: frozenset[str], state: State) -> bool | None:
    """Equal as functions: agree at every sample point where both are defined (at least two such points)."""
    tolerance = state.rel_tol if has_decimal(pred) or has_decimal(gold) else TIGHT_TOLERANCE
    agreed = 0
    for point in ev.random_points(symbols, IDENTITY_POINTS):
        try:
            pred_value = ev.evaluate(pred, point)
        except ev.TooLarge:
            return None
        except ev.NotNumeric:
            pred_value = None
        try:
            gold_value = ev.evaluate(gold, point)
        except ev.TooLarge:
            return None
        except ev.NotNumeric:
            gold_value = None
        if pred_value is None or gold_value is None:
            if (pred_value is None) != (gold_value is None):
                return False
            continue
        both_zero = ev.near_zero(pred_value) and ev.near_zero(gold_value)
        if not both_zero and not ev.close(pred_value, gold_value, tolerance):
            return False
        agreed += 1
    state.methods.append("identity")
    return True if agreed >= 2 else None


def constant_ratio(pred: Node, gold: Node, symbols: frozenset[str]) -> object | None:
    """The constant c with pred = c * gold as functions of ``symbols`` (None when there is none)."""
    ratios = []
    for point in ev.random_points(symbols, IDENTITY_POINTS + 2):
        try:
            p, g = ev.evaluate(pred, point), ev.evaluate(gold, point)
        except ev.NotNumeric:
            continue
        if ev.near_zero(g) or ev.near_zero(p):
            continue
        ratio = ev.to_float_context(p) / ev.to_float_context(g)
        if not ev.is_real(ratio):
            return None
        ratios.append(ev.real_part(ratio))
    if len(ratios) < 2 or not all(ev.close(r, ratios[0], TIGHT_TOLERANCE) for r in ratios):
        return None
    return ratios[0]


def _compare_magnitudes(pred: Node, gold: Node) -> bool | None:
    """Values too large to evaluate: first cancel the terms both sides share (``X + 1`` against ``X``), then
    compare logarithms, which proves values different when they differ (equal ones prove nothing), then compare
    powers in a canonical prime-power form."""
    cancelled = _compare_after_cancelling(pred, gold)
    if cancelled is not None:
        return cancelled
    try:
        pred_log, gold_log = ev.log_magnitude(pred), ev.log_magnitude(gold)
    except ev.Undefined:  # log of 0: one side is exactly zero and the other (too large to evaluate) is not
        return False
    except (ev.NotNumeric, ValueError, ZeroDivisionError):
        return None
    try:
        levels = ev.same_level(pred_log, gold_log)
    except (ValueError, ZeroDivisionError):
        return None
    if levels is None:
        return None
    pred_log, gold_log = levels
    if not ev.close(pred_log, gold_log, Fraction(1, 10**25)):
        return False
    pred_power, gold_power = ev.prime_power_form(pred), ev.prime_power_form(gold)
    if pred_power is not None and gold_power is not None:
        return pred_power == gold_power  # 4^(2^99) and 2^(2^100) are both 2^(2^100)
    return None


def _terms(node: Node) -> list[Node]:
    return list(node.terms) if isinstance(node, Add) else [node]


def _compare_after_cancelling(pred: Node, gold: Node) -> bool | None:
    """pred − gold with the shared terms removed, when what is left can be evaluated."""
    pred_terms, gold_terms = _terms(pred), _terms(gold)
    remaining_gold = list(gold_terms)
    pred_rest = []
    for term in pred_terms:
        if term in remaining_gold:
            remaining_gold.remove(term)
        else:
            pred_rest.append(term)
    if len(pred_rest) == len(pred_terms):
        return None  # nothing shared
    try:
        difference = ev.evaluate(Add((*pred_rest, *(Neg(term) for term in remaining_gold))))
    except ev.NotNumeric:
        return None
    return ev.near_zero(difference)


def _sympy_can_try(node: Node) -> bool:
    """sympy evaluates factorials, binomials and integer powers eagerly: with huge arguments it would only burn
    the whole time limit, so such trees stay undecided."""
    if isinstance(node, Func) and node.name in ("factorial", "binom"):
        for argument in node.args:
            try:
                value = ev.evaluate(argument)
            except ev.NotNumeric:
                return False
            if not ev.is_exact(value) or abs(value) > 10**6:
                return False
    if isinstance(node, Pow):
        try:
            ev.evaluate(node.exponent)
        except ev.TooLarge:
            return False
        except ev.NotNumeric:
            pass
    return all(_sympy_can_try(child) for child in children(node))


def _symbolic(pred: Node, gold: Node, state: State) -> bool:
    if not (_sympy_can_try(pred) and _sympy_can_try(gold)):
        state.undecided = True
        return False
    if state.symbolic is None:
        state.undecided = True
        return False
    try:
        result = state.symbolic(pred, gold)
    except SymbolicTimeout:
        state.timed_out = True
        return False
    if result is None:
        state.undecided = True
        return False
    state.methods.append("symbolic")
    return result


__all__ = ["IDENTITY_POINTS", "TIGHT_TOLERANCE", "constant_ratio", "equal_scalars"]
