"""Stage 3a: parse a normalised answer (LaTeX or plain text) into an answer tree (``reward_fns.expr``).

A hand-written tokenizer and recursive-descent parser: linear in the input, no ``eval``, no backtracking, with hard
caps on token count and nesting depth, so it is safe to run in-process on anything a model writes. It reads the
notation of final answers: numbers, ``\\frac``/``\\sqrt``/``\\binom``, powers, functions, ``\\pi``/``e``/``i``,
implicit multiplication, ±, %, degrees, relations, tuples, sets, intervals, unions and matrices.
"""

from __future__ import annotations

import re
from fractions import Fraction

from reward_fns.expr import (
    MINUS_ONE,
    ONE,
    ZERO,
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
)

MAX_TOKENS = 600
MAX_DEPTH = 60


class AnswerParseError(ValueError):
    """The answer is not mathematics this parser can read."""


# Function names, in LaTeX (``\sin``) and plain text (``sin``).
_FUNCTIONS = frozenset(
    {
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "arcsin",
        "arccos",
        "arctan",
        "arccot",
        "sinh",
        "cosh",
        "tanh",
        "coth",
        "asin",
        "acos",
        "atan",
        "ln",
        "log",
        "lg",
        "exp",
        "sqrt",
        "abs",
        "gcd",
        "lcm",
        "max",
        "min",
        "floor",
        "ceil",
        "det",
    }
)
_INVERSES = {"sin": "arcsin", "cos": "arccos", "tan": "arctan", "cot": "arccot"}
_FUNCTION_ALIASES = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "lg": "log10"}
_GREEK = frozenset(
    {
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "varepsilon",
        "zeta",
        "eta",
        "theta",
        "vartheta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "rho",
        "sigma",
        "tau",
        "upsilon",
        "phi",
        "varphi",
        "chi",
        "psi",
        "omega",
        "Gamma",
        "Delta",
        "Theta",
        "Lambda",
        "Xi",
        "Sigma",
        "Phi",
        "Psi",
        "Omega",
    }
)
# "\\approx" is kept apart from "=": in "x = 1/3 \\approx 0.33" the exact value before it is the answer.
APPROX = "~="
_RELATION_COMMANDS = {"le": "<=", "ge": ">=", "ne": "!=", "lt": "<", "gt": ">", "approx": APPROX, "eq": "="}
# Operators over an index range: the body is kept as a tree (no value), so only structure can decide them.
_BIG_OPERATORS = frozenset({"sum", "prod"})
_PRODUCT_COMMANDS = frozenset({"cdot", "times", "ast"})
_NOT_ARGUMENT_WORDS = _FUNCTIONS | {"and", "or"}
_INFINITY_WORDS = frozenset({"inf", "infty", "infinity", "oo"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+(?![a-zA-Z]))?)
  | (?P<cmd>\\[a-zA-Z]+|\\[{}])
  | (?P<word>[a-zA-Z]+)
  | (?P<op>\*\*|<=|>=|!=|=<|=>|[-+*/^_()\[\]{},;=<>!|'%°&:])
    """,
    re.VERBOSE,
)

ROW_SEPARATOR = "\\rowsep"  # what ``normalize`` turns a LaTeX ``\\`` into
MATRIX_BEGIN = "\\matrixbegin"
MATRIX_END = "\\matrixend"

_Token = tuple[str, str, bool]  # (kind, text, preceded by whitespace)


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    spaced = False
    length = len(text)
    while position < length:
        match = _TOKEN.match(text, position)
        if match is None:
            raise AnswerParseError(f"unexpected character {text[position]!r} at {position}")
        position = match.end()
        kind = match.lastgroup
        if kind == "space":
            spaced = True
            continue
        value = match.group(kind)
        if kind == "op":
            value = {"**": "^", "=<": "<=", "=>": ">="}.get(value, value)
        tokens.append((kind, value, spaced))
        spaced = False
        if len(tokens) > MAX_TOKENS:
            raise AnswerParseError(f"answer has more than {MAX_TOKENS} tokens")
    return tokens


def parse_answer(text: str) -> Node:
    """The answer tree of a normalised answer; raises ``AnswerParseError`` when it is not readable mathematics."""
    tokens = tokenize(text)
    if not tokens:
        raise AnswerParseError("empty answer")
    return _Parser(tokens).parse()


def parse_number(text: str) -> Num:
    """A numeral as an exact ``Num`` (``"3.14"`` → 157/50 with 2 decimals, ``"1e-3"`` → 1/1000)."""
    mantissa, _, exponent = text.lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole or "0") + fraction
    value = Fraction(int(digits), 10 ** len(fraction))
    if exponent:
        shift = int(exponent)
        if abs(shift) > 400:
            raise AnswerParseError(f"exponent {shift} of numeral {text!r} is out of range")
        value *= Fraction(10) ** shift
    decimals = len(fraction) - (int(exponent) if exponent else 0) if fraction or exponent else None
    return Num(value, decimals if decimals and decimals > 0 else None)


def _semicolon_groups(tokens: list[_Token]) -> list[list[_Token]] | None:
    """The tokens split at top-level semicolons, when commas also separate items at the top level; else None."""
    depth, groups, current, commas = 0, [], [], False
    for token in tokens:
        kind, value, _ = token
        if (kind == "op" and value in "([{") or (kind == "cmd" and value in ("\\{", "\\langle", MATRIX_BEGIN)):
            depth += 1
        elif (kind == "op" and value in ")]}") or (kind == "cmd" and value in ("\\}", "\\rangle", MATRIX_END)):
            depth -= 1
        if depth == 0 and (kind, value) == ("op", ";"):
            groups.append(current)
            current = []
            continue
        commas |= depth == 0 and (kind, value) == ("op", ",")
        current.append(token)
    groups.append(current)
    if len(groups) < 2 or not commas or not all(groups):
        return None
    return groups


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0
        self.abs_open = 0

    # -- token helpers -------------------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> _Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, kind: str, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == kind and (not values or token[1] in values)

    def at_op(self, *values: str) -> bool:
        return self.at("op", *values)

    def at_cmd(self, *names: str) -> bool:
        return self.at("cmd", *("\\" + name for name in names))

    def advance(self) -> _Token:
        token = self.peek()
        if token is None:
            raise AnswerParseError("unexpected end of answer")
        self.position += 1
        return token

    def expect_op(self, value: str) -> None:
        token = self.advance()
        if token[:2] != ("op", value):
            raise AnswerParseError(f"expected {value!r}, found {token[1]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise AnswerParseError(f"answer is nested more than {MAX_DEPTH} levels deep")

    # -- grammar -------------------------------------------------------------------------------------------------
    def parse(self) -> Node:
        groups = _semicolon_groups(self.tokens)
        if groups is not None:
            # "p=5, q=2; p=7, q=2": semicolons separate solutions, commas the parts of one solution.
            return Seq("", tuple(_Parser(group).parse() for group in groups), "")
        items = self.item_list(closers=())
        if self.position != len(self.tokens):
            raise AnswerParseError(f"unexpected {self.peek()[1]!r}")
        return items[0] if len(items) == 1 else Seq("", tuple(items), "")

    def at_separator(self) -> bool:
        return self.at_op(",", ";") or self.at("word", "and", "or")

    def item_list(self, closers: tuple[str, ...]) -> list[Node]:
        """Comma/semicolon/"and"/"or"-separated items up to one of ``closers`` (not consumed) or the end."""
        items: list[Node] = []
        while True:
            while self.at_separator():  # tolerate leading or doubled separators: "2, , 3"
                self.advance()
            token = self.peek()
            if token is None or (token[1] in closers and token[0] in ("op", "cmd")):
                return items
            items.append(self.item())
            if not self.at_separator():
                token = self.peek()
                if token is None or (token[1] in closers and token[0] in ("op", "cmd")):
                    return items
                raise AnswerParseError(f"unexpected {token[1]!r}")

    def item(self) -> Node:
        self.enter()
        parts = [self.relation()]
        while self.at_cmd("cup") or self.at("word", "U"):
            self.advance()
            parts.append(self.relation())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else Union(tuple(parts))

    def relation_op(self) -> str | None:
        token = self.peek()
        if token is None:
            return None
        if token[0] == "op" and token[1] in ("=", "<", ">", "<=", ">=", "!="):
            return token[1]
        if token[0] == "cmd" and token[1][1:] in _RELATION_COMMANDS:
            return _RELATION_COMMANDS[token[1][1:]]
        return None

    def relation(self) -> Node:
        parts = [self.ratio()]
        ops: list[str] = []
        while (op := self.relation_op()) is not None:
            self.advance()
            ops.append(op)
            parts.append(self.ratio())
        return parts[0] if not ops else Relation(tuple(ops), tuple(parts))

    def ratio(self) -> Node:
        """``a : b`` is the ratio a/b (``V_1:V_2 = 11:21``); a three-part ratio has no single value."""
        left = self.expression()
        if not self.at_op(":"):
            return left
        self.advance()
        right = self.expression()
        if self.at_op(":"):
            raise AnswerParseError("ratios of more than two parts are not supported")
        return Mul((left, Pow(right, MINUS_ONE)))

    def expression(self) -> Node:
        self.enter()
        node = self.signed_term()
        terms = [node]
        while True:
            if self.at_op("+"):
                self.advance()
                terms.append(self.term())
            elif self.at_op("-"):
                self.advance()
                terms.append(Neg(self.term()))
            elif self.at_cmd("pm", "mp"):
                self.advance()
                left = terms[0] if len(terms) == 1 else Add(tuple(terms))
                terms = [PlusMinus(left, self.term())]
            else:
                break
        self.depth -= 1
        return terms[0] if len(terms) == 1 else Add(tuple(terms))

    def signed_term(self) -> Node:
        if self.at_op("-"):
            self.advance()
            return Neg(self.term())
        if self.at_op("+"):
            self.advance()
            return self.term()
        if self.at_cmd("pm", "mp"):
            self.advance()
            return PlusMinus(ZERO, self.term())
        return self.term()

    def term(self) -> Node:
        factors = [self.unary()]
        while True:
            if self.at_op("*") or self.at_cmd(*_PRODUCT_COMMANDS):
                self.advance()
                factors.append(self.unary())
            elif self.at_op("/") or self.at_cmd("div"):
                self.advance()
                divisor = self.unary()
                left = factors[0] if len(factors) == 1 else Mul(tuple(factors))
                factors = [Mul((left, Pow(divisor, MINUS_ONE)))]
            elif self.starts_implicit_factor():
                factors.append(self.power())
            else:
                break
        return factors[0] if len(factors) == 1 else Mul(tuple(factors))

    def unary(self) -> Node:
        if self.at_op("-"):
            self.advance()
            return Neg(self.unary())
        if self.at_op("+"):
            self.advance()
            return self.unary()
        return self.power()

    def starts_implicit_factor(self) -> bool:
        token = self.peek()
        if token is None:
            return False
        kind, value, _ = token
        if kind in ("num", "word"):
            return value not in ("and", "or", "U")
        if kind == "cmd":
            name = value[1:]
            return not (
                name in _RELATION_COMMANDS
                or name in _PRODUCT_COMMANDS
                or name in ("div", "pm", "mp", "cup", "}", "rangle", "rfloor", "rceil", MATRIX_END[1:])
                or name == ROW_SEPARATOR[1:]
            )
        if kind == "op":
            if value == "|":
                return self.abs_open == 0
            return value in ("(", "{")
        return False

    def power(self) -> Node:
        base = self.postfix(self.atom())
        if self.at_op("^"):
            self.advance()
            exponent = self.exponent()
            return self.postfix(Pow(base, exponent))
        return base

    def exponent(self) -> Node:
        self.enter()
        if self.at_op("{"):
            node = self.group()
        elif self.at_op("-"):
            self.advance()
            node = Neg(self.power())
        elif self.at_op("+"):
            self.advance()
            node = self.power()
        else:
            node = self.power()
        self.depth -= 1
        return node

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at_op("!"):
                self.advance()
                node = Func("factorial", (node,))
            elif self.at_op("%"):
                self.advance()
                node = Percent(node)
            elif self.at_op("°"):
                self.advance()
                node = Degrees(node)
            elif self.at_op("'"):
                raise AnswerParseError("primes (derivatives) are not supported")
            else:
                return node

    def group(self) -> Node:
        """A LaTeX ``{...}`` group (braces are grouping, not a set)."""
        self.expect_op("{")
        items = self.item_list(closers=("}",))
        self.expect_op("}")
        if not items:
            raise AnswerParseError("empty group {}")
        return items[0] if len(items) == 1 else Seq("", tuple(items), "")

    def latex_argument(self) -> Node:
        """The argument of ``\\frac``/``\\sqrt``/``^``: a ``{group}``, or one token (``\\frac12`` is 1/2)."""
        if self.at_op("{"):
            return self.group()
        token = self.peek()
        if token is not None and token[0] == "num" and len(token[1]) > 1 and token[1].isdigit():
            # LaTeX reads a single character: split "12" into "1" and a remaining "2".
            self.tokens[self.position] = ("num", token[1][1:], False)
            return Num(Fraction(int(token[1][0])))
        if token is not None and token[0] == "word" and len(token[1]) > 1:
            self.tokens[self.position] = ("word", token[1][1:], False)
            return Sym(token[1][0])
        return self.atom()

    def atom(self) -> Node:
        self.enter()
        token = self.advance()
        kind, value, _ = token
        if kind == "num":
            node = self.based_number(value) if self.at_op("_") else parse_number(value)
        elif kind == "word":
            node = self.word(value)
        elif kind == "cmd":
            node = self.command(value[1:])
        elif value == "(":
            node = self.bracketed("(")
        elif value == "[":
            node = self.bracketed("[")
        elif value == "{":
            self.position -= 1
            node = self.group()
        elif value == "|":
            self.abs_open += 1
            inner = self.expression()
            self.abs_open -= 1
            self.expect_op("|")
            node = Func("abs", (inner,))
        else:
            raise AnswerParseError(f"unexpected {value!r}")
        self.depth -= 1
        return node

    def based_number(self, digits: str) -> Node:
        """``204_5``: a numeral in base 5, kept as written (a name for itself). Its decimal value would be a
        different answer: a problem that asks for base 5 wants the base-5 spelling, so ``54`` is not ``204_5``."""
        self.advance()
        braced = self.at_op("{")
        if braced:
            self.advance()
        token = self.advance()
        if braced:
            self.expect_op("}")
        if token[0] != "num" or not token[1].isdigit() or not 2 <= int(token[1]) <= 36 or not digits.isdigit():
            raise AnswerParseError(f"numeral {digits} with subscript {token[1]!r}: expected a base from 2 to 36")
        base = int(token[1])
        if any(int(digit) >= base for digit in digits):
            raise AnswerParseError(f"numeral {digits} has digits that base {base} does not have")
        return Sym(f"{digits}_{base}")

    def bracketed(self, opener: str) -> Node:
        items = self.item_list(closers=(")", "]"))
        closer = self.advance()[1]
        if len(items) == 1 and opener + closer in ("()", "[]"):
            return items[0]
        if not items:
            raise AnswerParseError(f"empty brackets {opener}{closer}")
        return Seq(opener, tuple(items), closer)

    def subscript_name(self, name: str) -> str:
        if not self.at_op("_"):
            return name
        self.advance()
        if self.at_op("{"):
            # A subscript is a label, not mathematics ("S_{MBCN}"): find its closing brace without parsing it.
            start, depth = self.position, 0
            while True:
                kind, value, _ = self.advance()
                depth += (kind, value) == ("op", "{")
                depth -= (kind, value) == ("op", "}")
                if depth == 0:
                    break
            inner = "".join(token[1] for token in self.tokens[start + 1 : self.position - 1])
            if not inner:
                raise AnswerParseError(f"empty subscript of {name}")
            return f"{name}_{inner}"
        return f"{name}_{self.advance()[1]}"

    def word(self, word: str) -> Node:
        lowered = word.lower()
        if len(word) == 1:
            return self.letter(word)
        if lowered == "pi":
            return Const("pi")
        if lowered in _INFINITY_WORDS:
            return Const("inf")
        if lowered in _FUNCTIONS:
            return self.function(_FUNCTION_ALIASES.get(lowered, lowered))
        if word in _GREEK:
            return Sym(self.subscript_name(word))
        if len(word) <= 3 and word.isalpha():
            # "xy", "abc": single-letter variables multiplied; split off one letter so that in "xy^2" the power
            # binds to y alone.
            self.tokens.insert(self.position, ("word", word[1:], False))
            return self.letter(word[0], subscript=False)
        raise AnswerParseError(f"unknown word {word!r}")

    def letter(self, letter: str, subscript: bool = True) -> Node:
        if letter == "e" and not self.at_op("_"):
            return Const("e")
        if letter == "i" and not self.at_op("_"):
            return Const("i")
        return Sym(self.subscript_name(letter) if subscript else letter)

    def command(self, name: str) -> Node:
        if name == "frac":
            numerator = self.latex_argument()
            denominator = self.latex_argument()
            return Mul((numerator, Pow(denominator, MINUS_ONE)))
        if name == "sqrt":
            if self.at_op("["):
                self.advance()
                index = self.expression()
                self.expect_op("]")
                return Func("root", (index, self.radicand()))
            return Func("sqrt", (self.radicand(),))
        if name in ("binom", "choose"):
            return Func("binom", (self.latex_argument(), self.latex_argument()))
        if name == "pi":
            return Const("pi")
        if name in ("infty", "infinity"):
            return Const("inf")
        if name in ("emptyset", "varnothing"):
            return Seq("{", (), "}")
        if name == "{":
            items = self.item_list(closers=("\\}",))
            self.advance()
            return Seq("{", tuple(items), "}")
        if name == "langle":
            items = self.item_list(closers=("\\rangle",))
            self.advance()
            return Seq("<", tuple(items), ">")
        if name in ("lfloor", "lceil"):
            inner = self.expression()
            closer = self.advance()[1]
            if closer != "\\r" + name[1:]:
                raise AnswerParseError(f"\\{name} closed by {closer!r}")
            return Func(name[1:], (inner,))
        if name == MATRIX_BEGIN[1:]:
            return self.matrix()
        if name in _BIG_OPERATORS:
            return self.big_operator(name)
        if name in _FUNCTIONS:
            return self.function(_FUNCTION_ALIASES.get(name, name))
        if name in _GREEK:
            return Sym(self.subscript_name(name))
        if name in ("exp",):
            return self.function("exp")
        raise AnswerParseError(f"unsupported command \\{name}")

    def big_operator(self, name: str) -> Node:
        """``\\sum_{k=0}^{n} body``: Func(name, (lower, upper, body)), the body running over the following product."""
        lower: Node = ZERO
        upper: Node = ZERO
        if self.at_op("_"):
            self.advance()
            lower = self.latex_argument()
        if self.at_op("^"):
            self.advance()
            upper = self.latex_argument()
        return Func(name, (lower, upper, self.term()))

    def radicand(self) -> Node:
        # "\sqrt(2)" is malformed LaTeX, but its writer meant the square root of 2, not "sqrt of '(' times 2".
        if self.at_op("("):
            self.advance()
            inner = self.expression()
            self.expect_op(")")
            return inner
        return self.latex_argument()

    def function(self, name: str) -> Node:
        if name == "sqrt":
            return Func("sqrt", (self.radicand(),))
        base: Node | None = None
        if name == "log" and self.at_op("_"):
            self.advance()
            base = self.latex_argument()
        power: Node | None = None
        if self.at_op("^"):  # \sin^2 x means (\sin x)^2
            self.advance()
            power = self.latex_argument()
        args = self.function_arguments()
        if name in ("gcd", "lcm", "max", "min"):
            node: Node = Func(name, args)
        elif len(args) != 1:
            raise AnswerParseError(f"{name} takes one argument, got {len(args)}")
        elif name == "log" and base is not None:
            node = Func("log", (base, args[0]))
        else:
            node = Func(name, args)
        if power is not None:
            if power in (MINUS_ONE, Neg(ONE)):
                # \sin^{-1} x is arcsin x, as in every textbook; for other functions it is ambiguous.
                if name not in _INVERSES:
                    raise AnswerParseError(f"ambiguous inverse notation {name}^{{-1}}")
                return Func(_INVERSES[name], node.args)
            node = Pow(node, power)
        return node

    def function_arguments(self) -> tuple[Node, ...]:
        if self.at_op("("):
            self.advance()
            items = self.item_list(closers=(")",))
            self.expect_op(")")
            if not items:
                raise AnswerParseError("function called with no argument")
            return tuple(items)
        if self.at_op("{"):
            return (self.group(),)
        # "\sin 2x" is sin(2x): the argument runs over a product of simple factors.
        factors = [self.power()]
        while self.at("num") or (self.at("word") and self.peek()[1].lower() not in _NOT_ARGUMENT_WORDS):
            factors.append(self.power())
        return (factors[0] if len(factors) == 1 else Mul(tuple(factors)),)

    def matrix(self) -> Node:
        rows: list[tuple[Node, ...]] = []
        cells: list[Node] = []
        while True:
            if self.at_cmd(MATRIX_END[1:]):
                self.advance()
                break
            if self.peek() is None:
                raise AnswerParseError("matrix is not closed")
            cells.append(self.item())
            if self.at_op("&"):
                self.advance()
            elif self.at_cmd(ROW_SEPARATOR[1:]):
                self.advance()
                rows.append(tuple(cells))
                cells = []
            elif not self.at_cmd(MATRIX_END[1:]):
                raise AnswerParseError(f"unexpected {self.peek()[1]!r} in a matrix")
        if cells:
            rows.append(tuple(cells))
        if not rows or len({len(row) for row in rows}) != 1:
            raise AnswerParseError("matrix rows have different lengths")
        return Matrix(tuple(rows))


__all__ = ["APPROX", "AnswerParseError", "parse_answer", "parse_number", "tokenize"]
