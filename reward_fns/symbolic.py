"""Stage 3c: the last resort, sympy, for scalars the numeric stage could not decide (values too large to
evaluate). It runs inside a grading worker (``reward_fns.bounded``), so a simplification that never ends is killed
rather than waited for. Trees are converted directly (no string parsing, no ``eval``)."""

from __future__ import annotations

import sympy

from reward_fns.expr import (
    Add,
    Const,
    Degrees,
    Func,
    Mul,
    Neg,
    Node,
    Num,
    Percent,
    Pow,
    Sym,
)

_CONSTANTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo}
_UNARY = {
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "cot": sympy.cot,
    "sec": sympy.sec,
    "csc": sympy.csc,
    "arcsin": sympy.asin,
    "arccos": sympy.acos,
    "arctan": sympy.atan,
    "arccot": sympy.acot,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "tanh": sympy.tanh,
    "coth": sympy.coth,
    "ln": sympy.log,
    "exp": sympy.exp,
    "abs": sympy.Abs,
    "factorial": sympy.factorial,
    "floor": sympy.floor,
    "ceil": sympy.ceiling,
}


class Unconvertible(ValueError):
    pass


def to_sympy(node: Node) -> sympy.Expr:
    """The sympy expression of a scalar tree (unevaluated powers, so building it never computes huge numbers)."""
    if isinstance(node, Num):
        return sympy.Rational(node.value.numerator, node.value.denominator)
    if isinstance(node, Sym):
        return sympy.Symbol(node.name)
    if isinstance(node, Const):
        return _CONSTANTS[node.name]
    if isinstance(node, Add):
        return sympy.Add(*map(to_sympy, node.terms))
    if isinstance(node, Mul):
        return sympy.Mul(*map(to_sympy, node.factors))
    if isinstance(node, Neg):
        return -to_sympy(node.operand)
    if isinstance(node, Pow):
        return sympy.Pow(to_sympy(node.base), to_sympy(node.exponent), evaluate=False)
    if isinstance(node, Percent):
        return to_sympy(node.operand) / 100
    if isinstance(node, Degrees):
        return to_sympy(node.operand)
    if isinstance(node, Func):
        return _function(node)
    raise Unconvertible(f"{type(node).__name__} is not a scalar")


def _function(node: Func) -> sympy.Expr:
    args = [to_sympy(arg) for arg in node.args]
    if node.name in _UNARY and len(args) == 1:
        return _UNARY[node.name](args[0])
    if node.name == "root":
        return sympy.root(args[1], args[0])
    if node.name == "log":
        return sympy.log(args[-1], args[0]) if len(args) == 2 else sympy.log(args[0])
    if node.name == "log10":
        return sympy.log(args[0], 10)
    if node.name == "binom":
        return sympy.binomial(args[0], args[1])
    if node.name in ("gcd", "lcm"):
        return (sympy.gcd if node.name == "gcd" else sympy.lcm)(*args)
    if node.name in ("max", "min"):
        return (sympy.Max if node.name == "max" else sympy.Min)(*args)
    raise Unconvertible(f"unsupported function {node.name}")


def symbolic_equal(pred: Node, gold: Node) -> bool | None:
    """True/False when sympy can decide pred == gold, None when it cannot."""
    try:
        difference = to_sympy(pred) - to_sympy(gold)
    except (Unconvertible, TypeError, ValueError):
        return None
    simplified = sympy.simplify(sympy.powsimp(difference, force=False))
    if simplified == 0:
        return True
    if simplified.is_number and simplified.is_zero is False:
        return False
    return None
