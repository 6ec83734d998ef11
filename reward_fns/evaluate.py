"""Stage 3b: the value of an answer tree, exact where it can be and bounded everywhere.

Rational arithmetic is exact (``fractions.Fraction``), so ``1/2004!`` and ``1/2006!`` stay different numbers;
anything irrational is evaluated with mpmath at 50 significant digits in a private context (thread-safe, and
untouched by whatever else in the process changes ``mpmath.mp``). Every operation that could blow up checks the
size of its result first (exact powers and factorials by bit count, floating powers by the binary exponent of the
result) and raises ``TooLarge`` instead of computing it, so evaluation always finishes in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import mpmath

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

DIGITS = 50
MAX_EXACT_BITS = 200_000  # ~60k decimal digits: exact arithmetic beyond this switches to floating point
MAX_EXACT_FACTORIAL = 20_000
MAX_BINARY_EXPONENT = 2**40  # |log2 value| beyond which a floating value is "too large" to be worth computing

_TRIGONOMETRIC = frozenset({"sin", "cos", "tan", "cot", "sec", "csc"})

_ctx = mpmath.MPContext()
_ctx.dps = DIGITS

Value = Any  # Fraction | mpf | mpc


class NotNumeric(ValueError):
    """The tree has no single numeric value here (a free symbol, a set, an unsupported function)."""


class TooLarge(NotNumeric):
    """The value is too large (or too small) to evaluate within the caps."""


class Undefined(NotNumeric):
    """Division by zero or a value outside a function's domain at this point."""


def evaluate(node: Node, env: Mapping[str, Value] | None = None) -> Value:
    """The value of a scalar tree, with free symbols taken from ``env``."""
    return _Evaluator(env or {}).value(node)


def to_float_context(value: Value) -> Any:
    """``value`` as an mpmath number of the private context."""
    if isinstance(value, Fraction):
        return _ctx.mpf(value.numerator) / value.denominator
    return value


def is_real(value: Value) -> bool:
    """Real, or complex with a negligible imaginary part."""
    if not isinstance(value, _ctx.mpc):
        return True
    return bool(abs(value.imag) <= abs(value) * _ctx.mpf(10) ** (-(DIGITS - 15)))


def real_part(value: Value) -> Value:
    return value.real if isinstance(value, _ctx.mpc) else value


def is_exact(value: Value) -> bool:
    return isinstance(value, Fraction)


def close(a: Value, b: Value, rel_tol: Any) -> bool:
    """Whether two values agree within a relative tolerance (absolute near an exact zero)."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b if rel_tol == 0 else abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))
    a, b = to_float_context(a), to_float_context(b)
    if _ctx.isinf(a) or _ctx.isinf(b):
        return bool(a == b)
    if _ctx.isnan(a) or _ctx.isnan(b):
        return False
    scale = max(abs(a), abs(b))
    if scale == 0:
        return True
    tolerance = to_float_context(rel_tol) if isinstance(rel_tol, Fraction) else _ctx.mpf(rel_tol)
    if not isinstance(a, _ctx.mpc) and not isinstance(b, _ctx.mpc):
        return bool(abs(a - b) <= tolerance * scale)
    # Complex values: each component on its own scale (3 is not 3 + 0.0001i), above the rounding noise of the
    # whole value (e^{i pi} evaluates to -1 + 1e-50 i).
    noise = scale * _ctx.mpf(10) ** (-(DIGITS - 10))
    for part_a, part_b in ((_ctx.re(a), _ctx.re(b)), (_ctx.im(a), _ctx.im(b))):
        difference = abs(part_a - part_b)
        if difference > noise and difference > tolerance * max(abs(part_a), abs(part_b)):
            return False
    return True


def near_zero(value: Value) -> bool:
    """Whether a floating result is zero up to rounding (cancellation leaves ~1e-50 × the operands' size)."""
    if isinstance(value, Fraction):
        return value == 0
    return bool(abs(value) < _ctx.mpf(10) ** (-(DIGITS - 15)))


def random_points(names: frozenset[str], count: int) -> list[dict[str, Value]]:
    """Deterministic, well-spread sample points (both signs) for probabilistic identity testing."""
    points = []
    ordered = sorted(names)
    for trial in range(count):
        point = {}
        for position, name in enumerate(ordered):
            seed = (sum(map(ord, name)) * 7919 + trial * 104729 + position * 1299709) % 1_000_003
            magnitude_part = _ctx.mpf(seed % 9973 + 1) / 4987 + _ctx.mpf(1) / 3  # in (1/3, 2.34)
            sign = -1 if (trial + position) % 3 == 1 else 1
            point[name] = sign * magnitude_part
        points.append(point)
    return points


def _exact_bits(value: Fraction) -> int:
    return value.numerator.bit_length() + value.denominator.bit_length()


def _to_exact_int(value: Value) -> int | None:
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    return None


def _check_float(value: Value) -> Value:
    if isinstance(value, (_ctx.mpf, _ctx.mpc)):
        if _ctx.isnan(value):
            raise Undefined("not a number")
        if not _ctx.isinf(value) and value != 0:
            exponent = _ctx.mag(value)
            if abs(exponent) > MAX_BINARY_EXPONENT:
                raise TooLarge("value out of range")
    return value


def _exact_or_float(value: Fraction) -> Value:
    # Rounding a huge exact number to 50 digits would make N and N + 1 look equal: refuse instead.
    if _exact_bits(value) > MAX_EXACT_BITS:
        raise TooLarge("exact value too large")
    return value


class _Evaluator:
    def __init__(self, env: Mapping[str, Value]) -> None:
        self.env = env

    def value(self, node: Node) -> Value:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Add):
            return self.add(node)
        if isinstance(node, Mul):
            return self.mul(node)
        if isinstance(node, Neg):
            return -self.value(node.operand)
        if isinstance(node, Pow):
            return self.power(self.value(node.base), self.value(node.exponent))
        if isinstance(node, Const):
            return self.constant(node.name)
        if isinstance(node, Sym):
            if node.name not in self.env:
                raise NotNumeric(f"free symbol {node.name}")
            return self.env[node.name]
        if isinstance(node, Func):
            return _check_float(self.function(node))
        if isinstance(node, Percent):
            return self.mul_values(self.value(node.operand), Fraction(1, 100))
        if isinstance(node, Degrees):
            return self.value(node.operand)
        raise NotNumeric(f"{type(node).__name__} has no single value")

    @staticmethod
    def constant(name: str) -> Value:
        if name == "pi":
            return _ctx.pi + 0
        if name == "e":
            return _ctx.e + 0
        if name == "i":
            return _ctx.mpc(0, 1)
        return _ctx.inf

    def add(self, node: Add) -> Value:
        total: Value = Fraction(0)
        for term in node.terms:
            part = self.value(term)
            if isinstance(total, Fraction) and isinstance(part, Fraction):
                total = _exact_or_float(total + part)
            else:
                total = _check_float(to_float_context(total) + to_float_context(part))
        return total

    def mul(self, node: Mul) -> Value:
        product: Value = Fraction(1)
        for factor in node.factors:
            product = self.mul_values(product, self.value(factor))
        return product

    @staticmethod
    def mul_values(a: Value, b: Value) -> Value:
        if isinstance(a, Fraction) and isinstance(b, Fraction):
            return _exact_or_float(a * b)
        a, b = to_float_context(a), to_float_context(b)
        if (_ctx.isinf(a) and b == 0) or (_ctx.isinf(b) and a == 0):
            raise Undefined("0 * infinity")
        return _check_float(a * b)

    def power(self, base: Value, exponent: Value) -> Value:
        if isinstance(base, Fraction) and isinstance(exponent, Fraction):
            exact = self.exact_power(base, exponent)
            if exact is not None:
                return exact
        base_f, exponent_f = to_float_context(base), to_float_context(exponent)
        if base_f == 0:
            if _ctx.re(exponent_f) > 0:
                return Fraction(0)
            raise Undefined("0 to a non-positive power")
        if _ctx.isinf(base_f) or _ctx.isinf(exponent_f):
            raise Undefined("power involving infinity")
        # Refuse before computing: the result's binary exponent is about exponent * log2|base|.
        size = abs(_ctx.re(exponent_f)) * abs(_ctx.log(abs(base_f), 2)) + abs(_ctx.im(exponent_f)) * 8
        if size > MAX_BINARY_EXPONENT:
            raise TooLarge("power out of range")
        if isinstance(base_f, _ctx.mpf) and base_f < 0 and isinstance(exponent, Fraction):
            odd_root = exponent.denominator % 2 == 1
            if odd_root:  # real odd roots of negatives: (-8)^(1/3) = -2
                magnitude_part = _ctx.power(-base_f, exponent_f)
                return _check_float(-magnitude_part if exponent.numerator % 2 else magnitude_part)
        return _check_float(_ctx.power(base_f, exponent_f))

    @staticmethod
    def exact_power(base: Fraction, exponent: Fraction) -> Value | None:
        if exponent.denominator == 1:
            n = exponent.numerator
            if base == 0:
                if n <= 0:
                    raise Undefined("0 to a non-positive power")
                return Fraction(0)
            if abs(base) == 1:
                return base ** (n % 2) if base < 0 else Fraction(1)
            if _exact_bits(base) * abs(n) > MAX_EXACT_BITS:
                raise TooLarge("exact power too large")
            return base**n
        # Rational powers are exact only for perfect powers: 8^(2/3) = 4, 4^(-1/2) = 1/2.
        if base < 0 or exponent.denominator > 64 or _exact_bits(base) > 4096:
            return None
        root = exponent.denominator
        numerator_root = _integer_root(base.numerator, root)
        denominator_root = _integer_root(base.denominator, root)
        if numerator_root is None or denominator_root is None:
            return None
        return _Evaluator.exact_power(Fraction(numerator_root, denominator_root), Fraction(exponent.numerator))

    def function(self, node: Func) -> Value:
        name = node.name
        args = [self.argument(arg, name) for arg in node.args]
        if name == "sqrt":
            return self.power(args[0], Fraction(1, 2))
        if name == "root":
            index = args[0]
            if index == 0:
                raise Undefined("zeroth root")
            return self.power(args[1], 1 / index if isinstance(index, Fraction) else 1 / to_float_context(index))
        if name == "factorial":
            return self.factorial(args[0])
        if name == "binom":
            return self.binomial(args[0], args[1])
        if name == "abs":
            return abs(args[0])
        if name in ("floor", "ceil"):
            return self.rounding(name, args[0])
        if name in ("gcd", "lcm"):
            return self.gcd_lcm(name, args)
        if name in ("max", "min"):
            reals = [to_float_context(arg) for arg in args]
            if any(isinstance(x, _ctx.mpc) for x in reals):
                raise Undefined(f"{name} of complex values")
            pick = max if name == "max" else min
            return args[reals.index(pick(reals))]
        if name == "exp":
            return self.power(_ctx.e + 0, args[0])
        if name == "log" and len(args) == 2:
            return self.logarithm(args[1]) / self.logarithm(args[0])
        if name in ("log", "ln"):
            return self.logarithm(args[0])
        if name == "log10":
            return self.logarithm(args[0]) / _ctx.log(10)
        return self.transcendental(name, to_float_context(args[0]))

    def argument(self, node: Node, function_name: str) -> Value:
        # tan 60° is the tangent of 60 degrees, not of 60 radians
        if isinstance(node, Degrees) and function_name in _TRIGONOMETRIC:
            return self.mul_values(self.value(node.operand), _ctx.pi / 180)
        return self.value(node)

    @staticmethod
    def logarithm(value: Value) -> Value:
        if value == 0:
            raise Undefined("log of 0")
        if isinstance(value, Fraction) and value > 0:
            # log of a huge exact rational without converting it to a float first
            return _ctx.log(value.numerator) - _ctx.log(value.denominator)
        return _ctx.log(to_float_context(value))

    @staticmethod
    def transcendental(name: str, x: Value) -> Value:
        if abs(x) > 2**64:
            raise TooLarge(f"{name} of a huge argument")
        table = {
            "sin": _ctx.sin,
            "cos": _ctx.cos,
            "tan": _ctx.tan,
            "cot": _ctx.cot,
            "sec": _ctx.sec,
            "csc": _ctx.csc,
            "arcsin": _ctx.asin,
            "arccos": _ctx.acos,
            "arctan": _ctx.atan,
            "arccot": _ctx.acot,
            "sinh": _ctx.sinh,
            "cosh": _ctx.cosh,
            "tanh": _ctx.tanh,
            "coth": _ctx.coth,
        }
        if name not in table:
            raise NotNumeric(f"unsupported function {name}")
        try:
            return table[name](x)
        except (ZeroDivisionError, ValueError) as error:
            raise Undefined(f"{name} undefined here") from error

    @staticmethod
    def factorial(value: Value) -> Value:
        n = _to_exact_int(value)
        if n is not None:
            if n < 0:
                raise Undefined("factorial of a negative integer")
            if n <= MAX_EXACT_FACTORIAL:
                return Fraction(math.factorial(n))
            raise TooLarge("exact factorial too large")
        x = to_float_context(value)
        if isinstance(x, _ctx.mpf) and x > 0 and x * _ctx.log(x, 2) > MAX_BINARY_EXPONENT:
            raise TooLarge("factorial out of range")
        try:
            return _ctx.gamma(x + 1)
        except (ValueError, ZeroDivisionError) as error:
            raise Undefined("factorial undefined here") from error

    def binomial(self, n: Value, k: Value) -> Value:
        n_int, k_int = _to_exact_int(n), _to_exact_int(k)
        if n_int is not None and k_int is not None:
            if k_int < 0 or (n_int >= 0 and k_int > n_int):
                return Fraction(0)
            if n_int >= 0 and min(k_int, n_int - k_int) * max(n_int, 1).bit_length() <= MAX_EXACT_BITS:
                return Fraction(math.comb(n_int, k_int))
        return self.mul_values(
            self.factorial(n), self.power(self.mul_values(self.factorial(k), self.factorial(n - k)), Fraction(-1))
        )

    @staticmethod
    def rounding(name: str, value: Value) -> Value:
        if isinstance(value, Fraction):
            return Fraction(math.floor(value) if name == "floor" else math.ceil(value))
        if isinstance(value, _ctx.mpc):
            raise Undefined(f"{name} of a complex value")
        if abs(value) > 2**200:
            raise TooLarge(f"{name} of a huge value")
        rounded = _ctx.floor(value) if name == "floor" else _ctx.ceil(value)
        return Fraction(int(rounded))

    @staticmethod
    def gcd_lcm(name: str, args: list[Value]) -> Value:
        integers = [_to_exact_int(arg) for arg in args]
        if any(value is None for value in integers):
            raise Undefined(f"{name} of non-integers")
        result = math.gcd(*integers) if name == "gcd" else math.lcm(*integers)
        return Fraction(result)


def _integer_root(value: int, root: int) -> int | None:
    """The exact integer ``root``-th root of ``value`` >= 0, or None."""
    if value < 2:
        return value
    guess = round(value ** (1 / root)) if value.bit_length() < 1000 else _float_free_root(value, root)
    for candidate in (guess - 1, guess, guess + 1):
        if candidate >= 0 and candidate**root == value:
            return candidate
    return None


def _float_free_root(value: int, root: int) -> int:
    low, high = 0, 1 << (value.bit_length() // root + 1)
    while low < high:
        middle = (low + high + 1) // 2
        if middle**root <= value:
            low = middle
        else:
            high = middle - 1
    return low


def log_abs(node: Node) -> Value:
    """log|value| of a product/power/factorial tree whose value itself is too large to evaluate.

    Only the shapes that produce astronomically large answers are handled (towers of powers, factorials and
    products of them); anything else raises ``NotNumeric``. Comparing these is sound in one direction only:
    different logarithms prove different values, equal ones prove nothing at this precision.
    """
    if isinstance(node, Neg):
        return log_abs(node.operand)
    if isinstance(node, Mul):
        return sum((log_abs(factor) for factor in node.factors), _ctx.mpf(0))
    if isinstance(node, Pow):
        try:
            exponent = to_float_context(evaluate(node.exponent))
        except TooLarge:
            raise
        if isinstance(exponent, _ctx.mpc):
            raise NotNumeric("complex exponent")
        return exponent * log_abs(node.base)
    if isinstance(node, Func) and node.name == "binom":
        n, k = (to_float_context(evaluate(arg)) for arg in node.args)
        if isinstance(n, _ctx.mpc) or isinstance(k, _ctx.mpc) or not 0 <= k <= n:
            raise NotNumeric("binomial outside the natural range")
        return _ctx.loggamma(n + 1) - _ctx.loggamma(k + 1) - _ctx.loggamma(n - k + 1)
    if isinstance(node, Func) and node.name == "factorial":
        n = to_float_context(evaluate(node.args[0]))
        if isinstance(n, _ctx.mpc) or n < 0:
            raise NotNumeric("factorial of a non-natural number")
        return _ctx.loggamma(n + 1)
    try:
        value = evaluate(node)
    except TooLarge:
        raise NotNumeric("no logarithm for this shape") from None
    if value == 0:
        raise Undefined("log of 0")
    if isinstance(value, Fraction):
        return _ctx.log(abs(value.numerator)) - _ctx.log(value.denominator)
    return _ctx.log(abs(value))


def log_magnitude(node: Node) -> tuple[int, Value]:
    """``(1, log|v|)`` or, for towers too tall even for that, ``(2, log log|v|)``."""
    try:
        return 1, log_abs(node)
    except TooLarge:
        pass
    if isinstance(node, Neg):
        return log_magnitude(node.operand)
    if not isinstance(node, Pow):
        raise NotNumeric("no logarithm for this shape")
    base_log = log_abs(node.base)
    exponent_log = log_abs(node.exponent)
    if base_log <= 0:
        raise NotNumeric("tower over a base of magnitude <= 1")
    return 2, exponent_log + _ctx.log(base_log)


def same_level(a: tuple[int, Value], b: tuple[int, Value]) -> tuple[Value, Value] | None:
    """Bring two log magnitudes to the same level (None when that is impossible)."""
    (level_a, value_a), (level_b, value_b) = a, b
    while level_a < level_b:
        if value_a <= 0:
            return None
        level_a, value_a = level_a + 1, _ctx.log(value_a)
    while level_b < level_a:
        if value_b <= 0:
            return None
        level_b, value_b = level_b + 1, _ctx.log(value_b)
    return value_a, value_b


def prime_power_form(node: Node) -> tuple[int, Fraction] | None:
    """``b^e`` with an integer base and an exactly evaluable exponent as ``(r, k·e)`` where ``b = r^k`` and ``r``
    is not itself a perfect power; a canonical form for comparing huge powers without computing them."""
    if not isinstance(node, Pow):
        return None
    try:
        base, exponent = evaluate(node.base), evaluate(node.exponent)
    except NotNumeric:
        return None
    if not (isinstance(base, Fraction) and isinstance(exponent, Fraction)) or base.denominator != 1 or base < 2:
        return None
    root, power = base.numerator, 1
    for k in range(root.bit_length(), 1, -1):
        candidate = _integer_root(root, k)
        if candidate is not None and candidate > 1:
            root, power = candidate, k
            break
    return root, exponent * power
