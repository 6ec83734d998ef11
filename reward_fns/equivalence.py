"""Stage 3: decide whether an extracted answer is equivalent to a ground truth.

Order of checks, cheapest first: identical canonical strings; word answers and multiple-choice letters; then the
parsed trees, compared by structure (tuples in order; sets, bare lists and ± in any order but complete: a subset of
a multi-answer gold is wrong; intervals with their brackets; inequalities as intervals; equations up to a non-zero
factor; matrices cell by cell) down to scalars. Scalars are compared exactly when rational, numerically at 50 digits
otherwise (probabilistic identity testing at fixed random points for expressions with variables), with written
decimals held to the precision they were written with. Only what stays undecided (values too large to evaluate)
goes to sympy, through the caller's bounded ``symbolic`` check.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from reward_fns import evaluate as ev
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
    PlusMinus,
    Pow,
    Relation,
    Seq,
    Sym,
    Union,
    any_node,
    children,
    contains,
    free_symbols,
    has_decimal,
)
from reward_fns.normalize import choice_letter, normalize_answer, normalize_text
from reward_fns.parse import AnswerParseError, parse_answer

# Exact-looking expressions that evaluate in floating point (π, √2, ...) must agree to this relative precision.
TIGHT_TOLERANCE = Fraction(1, 10**30)
IDENTITY_POINTS = 4
MAX_ITEMS = 64
MAX_PLUS_MINUS_EXPANSION = 16


class SymbolicTimeout(Exception):
    """The bounded symbolic check ran out of time (raised by the caller's ``symbolic`` callable)."""


SymbolicCheck = Callable[[Node, Node], "bool | None"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison: ``reason`` is "correct", "wrong", "parse_error", "timeout" or
    "undecided"; ``method`` names the check that decided it."""

    equal: bool
    reason: str
    method: str = ""


@dataclass
class _State:
    rel_tol: float
    symbolic: SymbolicCheck | None
    timed_out: bool = False
    undecided: bool = False
    methods: list[str] = field(default_factory=list)


def parse_cached(text: str) -> Node:
    """Parse a normalised answer, remembering recent results (ground truths repeat across a group of samples)."""
    cached = _PARSE_CACHE.get(text)
    if cached is not None:
        if isinstance(cached, AnswerParseError):
            raise cached
        return cached
    try:
        node: Node | AnswerParseError = parse_answer(text)
    except AnswerParseError as error:
        node = error
    except RecursionError:
        node = AnswerParseError("answer is nested too deeply")
    if len(_PARSE_CACHE) >= 4096:
        _PARSE_CACHE.clear()
    _PARSE_CACHE[text] = node
    if isinstance(node, AnswerParseError):
        raise node
    return node


_PARSE_CACHE: dict[str, Node | AnswerParseError] = {}


def answers_equivalent(
    pred: str, gold: str, rel_tol: float = 1e-4, symbolic: SymbolicCheck | None = None
) -> Verdict:
    """Whether the answer string ``pred`` is equivalent to the ground-truth answer string ``gold``."""
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if not pred_norm:
        return Verdict(False, "no_answer", "empty")
    if pred_norm == gold_norm:
        return Verdict(True, "correct", "string")
    word_verdict = _compare_words(pred_norm, gold_norm)
    if word_verdict is not None:
        return word_verdict
    try:
        gold_tree = parse_cached(gold_norm)
    except AnswerParseError:
        # A gold that is not mathematics ("east", "no solution"): only a word match counts.
        equal = normalize_text(pred_norm) == normalize_text(gold_norm)
        return Verdict(equal, "correct" if equal else "wrong", "text")
    try:
        pred_tree = parse_cached(pred_norm)
    except AnswerParseError:
        return Verdict(False, "parse_error", "parse")
    state = _State(rel_tol=rel_tol, symbolic=symbolic)
    try:
        equal = _equal(pred_tree, gold_tree, state)
    except RecursionError:
        return Verdict(False, "parse_error", "too_deep")
    if equal:
        return Verdict(True, "correct", "+".join(dict.fromkeys(state.methods)) or "structure")
    if state.timed_out:
        return Verdict(False, "timeout", "symbolic")
    if state.undecided:
        return Verdict(False, "undecided", "symbolic")
    return Verdict(False, "wrong", "+".join(dict.fromkeys(state.methods)) or "structure")


def _compare_words(pred: str, gold: str) -> Verdict | None:
    """Multiple-choice letters and yes/no style answers, decided before any parsing."""
    gold_letter = choice_letter(gold)
    if gold_letter is not None and len(gold.strip("() ")) == 1:
        pred_letter = choice_letter(pred)
        if pred_letter is not None:
            return Verdict(pred_letter == gold_letter, "correct" if pred_letter == gold_letter else "wrong", "choice")
    gold_words = normalize_text(gold)
    if gold_words in _WORD_ANSWERS:
        equal = normalize_text(pred) == gold_words
        return Verdict(equal, "correct" if equal else "wrong", "text")
    return None


_WORD_ANSWERS = frozenset({"yes", "no", "true", "false", "none", "odd", "even", "neither", "both"})


# -- trees -------------------------------------------------------------------------------------------------------
def _equal(pred: Node, gold: Node, state: _State) -> bool:
    if pred == gold:
        state.methods.append("structure")
        return True
    pred, gold = _unwrap(pred), _unwrap(gold)
    pred, gold = _strip_assignments(pred, gold)
    if contains(gold, PlusMinus) or contains(pred, PlusMinus):
        return _equal_plus_minus(pred, gold, state)
    gold_intervals, pred_intervals = _as_interval_set(gold), _as_interval_set(pred)
    if gold_intervals is not None and pred_intervals is not None and (_is_set_like(gold) or _is_set_like(pred)):
        return _equal_interval_sets(pred_intervals, gold_intervals, state)
    if isinstance(gold, Relation) or isinstance(pred, Relation):
        if isinstance(gold, Relation) and isinstance(pred, Relation):
            return _equal_relations(pred, gold, state)
        return False
    if isinstance(gold, Matrix) or isinstance(pred, Matrix):
        return _equal_matrices(pred, gold, state)
    if isinstance(gold, Seq) or isinstance(pred, Seq):
        return _equal_sequences(pred, gold, state)
    if isinstance(gold, Union) or isinstance(pred, Union):
        return False
    return _equal_scalars(pred, gold, state)


def _unwrap(node: Node) -> Node:
    """A one-element set is its element for comparison purposes ({5} vs 5)."""
    if isinstance(node, Seq) and node.opener in ("{", "") and len(node.items) == 1:
        return node.items[0]
    return node


def _is_name(node: Node) -> bool:
    """A left-hand side that only names the answer: ``x``, ``a_1``, ``f(x)``, ``xy`` reads as such too."""
    if isinstance(node, Sym):
        return True
    return isinstance(node, Mul) and len(node.factors) <= 2 and all(isinstance(f, Sym) for f in node.factors)


def _assignment_value(node: Node) -> Node | None:
    """The value named by ``x = 5`` (or by a worked chain ``x = 6/2 = 3``: its last member)."""
    if isinstance(node, Relation) and set(node.ops) == {"="} and _is_name(node.parts[0]):
        return node.parts[-1]
    return None


def _strip_assignments(pred: Node, gold: Node) -> tuple[Node, Node]:
    """``x = 5`` is the answer 5 (and ``x = 2, y = 3`` the pair 2, 3), unless both sides are equations that have
    to be compared as equations (``y = 2x + 3`` against ``2x - y + 3 = 0``)."""
    pred_value, gold_value = _assignment_value(pred), _assignment_value(gold)
    if isinstance(pred, Relation) and isinstance(gold, Relation):
        if pred_value is not None and gold_value is not None:
            return pred_value, gold_value
        return pred, gold
    return (pred_value or _strip_items(pred), gold_value or _strip_items(gold))


def _strip_items(node: Node) -> Node:
    if isinstance(node, Seq) and node.opener == "" and any(_assignment_value(i) is not None for i in node.items):
        return Seq("", tuple(_assignment_value(i) or i for i in node.items), "")
    return node


def _is_set_like(node: Node) -> bool:
    """Trees that must be read as sets of reals: unions, inequalities, half-open or mixed intervals."""
    if isinstance(node, (Union, Relation)):
        return True
    if isinstance(node, Seq):
        if node.opener == "" and node.items and all(isinstance(i, (Relation, Union)) for i in node.items):
            return True
        return len(node.items) == 2 and (
            node.opener + node.closer in ("(]", "[)") or any(any_node(item, _is_infinity) for item in node.items)
        )
    return False


def _is_infinity(node: Node) -> bool:
    return isinstance(node, Const) and node.name == "inf"


# -- plus/minus ----------------------------------------------------------------------------------------------------
def _expand_plus_minus(node: Node) -> list[Node]:
    """All sign choices of the ± in ``node`` (``2 ± √3`` → [2 + √3, 2 − √3])."""
    if isinstance(node, PlusMinus):
        lefts, rights = _expand_plus_minus(node.left), _expand_plus_minus(node.right)
        return [Add((left, sign(right))) for left in lefts for right in rights for sign in (_identity, Neg)]
    parts = children(node)
    if not parts or not contains(node, PlusMinus):
        return [node]
    options = [_expand_plus_minus(part) for part in parts]
    combos = list(itertools.islice(itertools.product(*options), MAX_PLUS_MINUS_EXPANSION + 1))
    if len(combos) > MAX_PLUS_MINUS_EXPANSION:
        raise _TooComplex
    return [_rebuild(node, combo) for combo in combos]


class _TooComplex(Exception):
    pass


def _identity(node: Node) -> Node:
    return node


def _rebuild(node: Node, parts: tuple[Node, ...]) -> Node:
    if isinstance(node, Add):
        return Add(parts)
    if isinstance(node, Mul):
        return Mul(parts)
    if isinstance(node, Neg):
        return Neg(parts[0])
    if isinstance(node, Func):
        return Func(node.name, parts)
    if isinstance(node, Percent):
        return Percent(parts[0])
    if isinstance(node, Degrees):
        return Degrees(parts[0])
    if isinstance(node, Relation):
        return Relation(node.ops, parts)
    if isinstance(node, Seq):
        return Seq(node.opener, parts, node.closer)
    if isinstance(node, Union):
        return Union(parts)
    if isinstance(node, Pow):
        return Pow(parts[0], parts[1])
    raise _TooComplex


def _as_value_set(node: Node) -> list[Node]:
    if isinstance(node, Seq) and node.opener in ("{", ""):
        values: list[Node] = []
        for item in node.items:
            values.extend(_expand_plus_minus(_assignment_value(item) or item))
        return values
    return _expand_plus_minus(node)


def _equal_plus_minus(pred: Node, gold: Node, state: _State) -> bool:
    """± stands for two values: compare the complete sets of values, in any order."""
    try:
        pred_values, gold_values = _as_value_set(pred), _as_value_set(gold)
    except _TooComplex:
        return False
    state.methods.append("plus_minus")
    return _match_unordered(pred_values, gold_values, state)


# -- sequences, sets, matrices -------------------------------------------------------------------------------------
def _match_unordered(pred_items: list[Node] | tuple[Node, ...], gold_items, state: _State) -> bool:
    """Every gold item matched by a distinct pred item and nothing left over (no credit for a subset)."""
    if len(pred_items) != len(gold_items) or len(gold_items) > MAX_ITEMS:
        return False
    remaining = list(pred_items)
    for gold_item in gold_items:
        for index, pred_item in enumerate(remaining):
            if _equal(pred_item, gold_item, state):
                del remaining[index]
                break
        else:
            return False
    return True


def _match_ordered(pred_items, gold_items, state: _State) -> bool:
    if len(pred_items) != len(gold_items) or len(gold_items) > MAX_ITEMS:
        return False
    return all(_equal(p, g, state) for p, g in zip(pred_items, gold_items))


def _equal_sequences(pred: Node, gold: Node, state: _State) -> bool:
    if not (isinstance(pred, Seq) and isinstance(gold, Seq)):
        return False
    unordered_kinds = ("{", "")
    if gold.opener in unordered_kinds and pred.opener in unordered_kinds:
        return _match_unordered(pred.items, gold.items, state)
    if gold.opener == "" or pred.opener == "":
        # A bare list against a bracketed one: the model dropped (or added) the brackets of a tuple.
        ordered = gold if gold.opener else pred
        if ordered.opener == "{":
            return _match_unordered(pred.items, gold.items, state)
        return _match_ordered(pred.items, gold.items, state)
    if gold.opener == "{" or pred.opener == "{":
        return False
    same_brackets = _bracket_kind(pred) == _bracket_kind(gold)
    return same_brackets and _match_ordered(pred.items, gold.items, state)


def _bracket_kind(node: Seq) -> str:
    # A vector <a, b> and a tuple (a, b) are the same ordered pair.
    return {"<": "(", ">": ")"}.get(node.opener, node.opener) + {">": ")"}.get(node.closer, node.closer)


def _equal_matrices(pred: Node, gold: Node, state: _State) -> bool:
    def cells(node: Node) -> tuple[tuple[Node, ...], ...] | None:
        if isinstance(node, Matrix):
            return node.rows
        if isinstance(node, Seq) and node.opener in ("(", "[", "<"):
            return tuple((item,) for item in node.items)  # a tuple is a column vector
        return None

    pred_rows, gold_rows = cells(pred), cells(gold)
    if pred_rows is None or gold_rows is None:
        return False
    if _shape(pred_rows) != _shape(gold_rows) and _is_vector(pred_rows) and _is_vector(gold_rows):
        # a row vector written against a column vector (or a tuple)
        pred_rows = tuple((cell,) for row in pred_rows for cell in row)
        gold_rows = tuple((cell,) for row in gold_rows for cell in row)
    if len(pred_rows) != len(gold_rows) or any(len(p) != len(g) for p, g in zip(pred_rows, gold_rows)):
        return False
    state.methods.append("matrix")
    return all(_equal(p, g, state) for p_row, g_row in zip(pred_rows, gold_rows) for p, g in zip(p_row, g_row))


def _shape(rows: tuple[tuple[Node, ...], ...]) -> tuple[int, int]:
    return len(rows), len(rows[0]) if rows else 0


def _is_vector(rows: tuple[tuple[Node, ...], ...]) -> bool:
    return 1 in _shape(rows)


# -- intervals and inequalities ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Interval:
    low: Node
    low_closed: bool
    high: Node
    high_closed: bool


_NEG_INF = Neg(Const("inf"))
_POS_INF = Const("inf")


def _as_interval_set(node: Node) -> list[_Interval] | None:
    """The node as a union of intervals, or None when it is not one."""
    if isinstance(node, Union):
        intervals: list[_Interval] = []
        for part in node.parts:
            converted = _as_interval_set(part)
            if converted is None:
                return None
            intervals.extend(converted)
        return intervals
    if isinstance(node, Seq):
        if node.opener in ("(", "[") and node.closer in (")", "]") and len(node.items) == 2:
            low, high = node.items
            return [_Interval(low, node.opener == "[", high, node.closer == "]")]
        if node.opener == "" and node.items:
            parts = [_as_interval_set(item) for item in node.items]
            if all(part is not None for part in parts):
                return [interval for part in parts for interval in part]
        return None
    if isinstance(node, Relation):
        return _relation_interval(node)
    return None


def _relation_interval(node: Relation) -> list[_Interval] | None:
    """``x > 3`` → (3, ∞); ``-2 < x <= 5`` → (-2, 5]; only for one variable between constants."""
    if any(op in ("=", "!=") for op in node.ops):
        return None
    variables = [index for index, part in enumerate(node.parts) if isinstance(part, Sym)]
    if len(variables) != 1 or any(free_symbols(p) for i, p in enumerate(node.parts) if i != variables[0]):
        return None
    position = variables[0]
    low, low_closed, high, high_closed = _NEG_INF, False, _POS_INF, False
    for index, op in enumerate(node.ops):
        left, right = index, index + 1
        if position not in (left, right):
            continue
        other = node.parts[right if position == left else left]
        closed = op in ("<=", ">=")
        # Normalise to "variable < other" (upper bound) or "variable > other" (lower bound).
        variable_is_smaller = (op in ("<", "<=")) == (position == left)
        if variable_is_smaller:
            high, high_closed = other, closed
        else:
            low, low_closed = other, closed
    return [_Interval(low, low_closed, high, high_closed)]


def _equal_interval_sets(pred: list[_Interval], gold: list[_Interval], state: _State) -> bool:
    state.methods.append("interval")

    def same(a: _Interval, b: _Interval) -> bool:
        return (
            a.low_closed == b.low_closed
            and a.high_closed == b.high_closed
            and _equal_scalars(a.low, b.low, state)
            and _equal_scalars(a.high, b.high, state)
        )

    if len(pred) != len(gold):
        return False
    remaining = list(pred)
    for interval in gold:
        match = next((i for i, candidate in enumerate(remaining) if same(candidate, interval)), None)
        if match is None:
            return False
        del remaining[match]
    return True


# -- equations and inequalities ------------------------------------------------------------------------------------
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def _equal_relations(pred: Relation, gold: Relation, state: _State) -> bool:
    """Same relation up to a non-zero factor (a positive one for inequalities): ``2x + 2y = 6`` ≡ ``x + y = 3``."""
    if len(pred.ops) != 1 or len(gold.ops) != 1:
        return len(pred.ops) == len(gold.ops) and pred.ops == gold.ops and _match_ordered(pred.parts, gold.parts, state)
    pred_op, gold_op = pred.ops[0], gold.ops[0]
    pred_f = Add((pred.parts[0], Neg(pred.parts[1])))
    if pred_op != gold_op:
        if _FLIP[pred_op] != gold_op:
            return False
        pred_f = Neg(pred_f)  # a > b is -(a - b) < 0
    gold_f = Add((gold.parts[0], Neg(gold.parts[1])))
    symbols = free_symbols(pred_f) | free_symbols(gold_f)
    if not symbols:
        return _match_ordered(pred.parts, gold.parts, state) or (
            gold_op in ("=", "!=") and _match_ordered(pred.parts[::-1], gold.parts, state)
        )
    ratio = _constant_ratio(pred_f, gold_f, symbols)
    state.methods.append("equation")
    if ratio is None:
        return False
    return ratio > 0 if gold_op not in ("=", "!=") else True


def _constant_ratio(pred: Node, gold: Node, symbols: frozenset[str]) -> object | None:
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


# -- scalars -------------------------------------------------------------------------------------------------------
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


def _equal_scalars(pred: Node, gold: Node, state: _State) -> bool:
    if isinstance(pred, (Seq, Matrix, Relation, Union)) or isinstance(gold, (Seq, Matrix, Relation, Union)):
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


def _compare_readings(pred: _Reading, gold: _Reading, state: _State) -> bool | None:
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


def _identity_test(pred: Node, gold: Node, symbols: frozenset[str], state: _State) -> bool | None:
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


def _symbolic(pred: Node, gold: Node, state: _State) -> bool:
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


__all__ = ["SymbolicTimeout", "Verdict", "answers_equivalent", "parse_cached"]
