"""Stage 2: rewrite an extracted answer into one canonical spelling before it is parsed.

Only rewrites that never change the mathematical value belong here (spacing, ``\\left``/``\\right``, ``\\dfrac``,
``\\text{}``, units after a number, thousands separators, unicode symbols, trailing punctuation). Anything that needs
to know the structure (``x = 5`` → ``5``, percentages, degrees) happens on the parsed tree in ``equivalence``.
"""

from __future__ import annotations

import re

from reward_fns.braces import strip_wrappers

_UNICODE = {
    "\u2212": "-",  # minus sign
    "\u2013": "-",
    "\u00d7": r"\times ",
    "\u22c5": r"\cdot ",
    "\u00b7": r"\cdot ",
    "\u00f7": r"\div ",
    "\u03c0": r"\pi ",
    "\u221a": r"\sqrt",
    "\u221e": r"\infty ",
    "\u2264": r"\le ",
    "\u2265": r"\ge ",
    "\u2260": r"\ne ",
    "\u00b1": r"\pm ",
    "\u2213": r"\mp ",
    "\u2248": r"\approx ",
    "\u222a": r"\cup ",
    "\u2229": r"\cap ",
    "\u2208": r"\in ",
    "\u00b0": "°",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\uff0c": ",",
    "\u3002": ".",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

# Commands whose argument is kept as plain content.
_TEXT_WRAPPERS = (
    "text",
    "textbf",
    "textit",
    "textrm",
    "textsf",
    "texttt",
    "textnormal",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mathnormal",
    "boldsymbol",
    "bm",
    "mbox",
    "hbox",
    "emph",
    "underline",
    "overline",
    "displaystyle",
    "boxed",
    "fbox",
)
_DROPPED_WRAPPERS = ("phantom", "hphantom", "vphantom", "label", "tag")

# Explicit thousands separators: MATH's ``10,\\!080`` (a comma and a negative thin space) and ``10{,}080`` (a comma
# in a group). They are never list commas, so they go before spacing commands turn ``\\!`` into a space.
_EXPLICIT_THOUSANDS = re.compile(r"(\d)\s*(?:,\s*\\!|\{\s*,\s*\})\s*(?=\d)")

_SIMPLE_REWRITES = [
    (re.compile(r"\\\\"), r" \\rowsep "),
    (re.compile(r"\\begin\s*\{\s*(?:[pbvBV]?matrix|smallmatrix|array)\s*\}(?:\s*\{[^{}]*\})?"), r" \\matrixbegin "),
    (re.compile(r"\\end\s*\{\s*(?:[pbvBV]?matrix|smallmatrix|array)\s*\}"), r" \\matrixend "),
    (re.compile(r"\\hline(?![a-zA-Z])"), " "),
    (re.compile(r"\\mathbb\s*\{?\s*R\s*\}?"), r"(-\\infty,\\infty)"),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\s*\.?"), ""),
    (re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|mathop|middle)(?![a-zA-Z])"), ""),
    # No LaTeX command starts with "quad" but \\quad itself: "\\quadx_2" is \\quad glued to x_2 by a space-stripper.
    (re.compile(r"\\(?:q?quad)"), ","),
    (re.compile(r"\\(?:[,;:! ]|enspace|thinspace|medspace|thickspace|negthinspace)"), " "),
    (re.compile(r"~"), " "),
    (re.compile(r"\\(?:lbrace)(?![a-zA-Z])"), r"\\{"),
    (re.compile(r"\\(?:rbrace)(?![a-zA-Z])"), r"\\}"),
    (re.compile(r"\\(?:lvert|rvert|vert|mid)(?![a-zA-Z])|\\\|"), "|"),
    (re.compile(r"\\(?:leq|leqslant|le)(?![a-zA-Z])"), r"\\le "),
    (re.compile(r"\\(?:geq|geqslant|ge)(?![a-zA-Z])"), r"\\ge "),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])"), r"\\ne "),
    (re.compile(r"\\operatorname\*?\{\s*([a-zA-Z]+)\s*\}"), r"\\\1 "),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|\\circ(?![a-zA-Z])"), "°"),
    (re.compile(r"\^\s*\{\s*\\prime\s*\}|\\prime(?![a-zA-Z])"), "'"),
    (re.compile(r"\\%|\\percent(?![a-zA-Z])"), "%"),
    (re.compile(r"\\\$|\$"), ""),
    (re.compile(r"\\(?:cdots|ldots|dots|dotsc|dotsb)(?![a-zA-Z])"), "..."),
    (re.compile(r"\{\s*,\s*\}"), ","),
    (re.compile(r"\\infin(?:ity)?(?![a-zA-Z])"), r"\\infty "),
]

_DELIMITERS = re.compile(r"^\s*(?:\\\[|\\\(|\$\$?)\s*|\s*(?:\\\]|\\\)|\$\$?)\s*$")
# A run of digit groups joined by commas; it is one grouped number only when every group after the first has three
# digits and the first has one to three (not starting with 0): "1,234,567" is one number, "27,54,108" a list.
_COMMA_RUN = re.compile(r"(?<![\d.,])\d+(?:,\d+)+(?!,?\d)")
_GROUPED = re.compile(r"[1-9]\d{0,2}(?:,\d{3})+")
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d.])")
_TRAILING_PUNCT = re.compile(r"[\s.,;:?]+$")  # not "!": 5! is a factorial
_PREAMBLE = re.compile(r"(?i)^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*")
_DEGREE_WORDS = re.compile(r"(?<=[\d}\s])\s*(?:degrees?|deg)\s*$", re.IGNORECASE)
_PERCENT_WORDS = re.compile(r"(?<=[\d}\s])\s*percent\s*$", re.IGNORECASE)
_ELEMENT_OF = re.compile(r"^\s*[a-zA-Z]\s*\\in\s*")
_WORD_UNIT_TAIL = re.compile(r"(?<=[\d})\]°%])(\s*)((?:[a-zA-Z]{2,}\.?(?:\^\{?\d\}?)?\s*)+)$")
_WORD_UNIT_HEAD = re.compile(r"^\s*(?:rs\.?|usd|inr|eur)\s*(?=\d)", re.IGNORECASE)

_GLUED_UNITS = frozenset("mm cm km kg mg ml cc mph kmh ft yd mi lb lbs oz hr hrs min sec sq deg units".split())

# Trailing words that are part of the mathematics, never units.
_MATH_WORDS = frozenset(
    {
        "pi",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "log",
        "ln",
        "exp",
        "sqrt",
        "and",
        "or",
        "inf",
        "infty",
        "infinity",
        "oo",
        "abs",
    }
)


def normalize_answer(answer: str) -> str:
    """The canonical spelling of ``answer`` (a LaTeX or plain-text final answer, already length-capped)."""
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], answer)
    text = text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    previous = None
    while previous != text:  # delimiters can nest: "$\[ x \]$"
        previous = text
        text = _DELIMITERS.sub("", text)
    text = _REPEATING_DECIMAL.sub(_repeating_decimal, text)
    text = strip_wrappers(text, _DROPPED_WRAPPERS, keep_content=False)
    text = strip_wrappers(text, _TEXT_WRAPPERS, keep_content=True)
    text = _EXPLICIT_THOUSANDS.sub(r"\1", text)
    for pattern, replacement in _SIMPLE_REWRITES:
        text = pattern.sub(replacement, text)
    text = _PREAMBLE.sub("", text)
    text = _DEGREE_WORDS.sub("°", text)
    text = _PERCENT_WORDS.sub("%", text)
    text = _WORD_UNIT_HEAD.sub("", text)
    text = _ELEMENT_OF.sub("", text)
    text = _group_thousands(text)
    text = _SPACED_THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), text)
    text = _strip_unit_words(text)
    text = _MIXED_LATEX.sub(_mixed_number, text)
    text = _MIXED_PLAIN.sub(lambda m: f"({m.group(1)}+{m.group(2)}/{m.group(3)})", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"(?:\s*,\s*)+", ",", text)
    return _TRAILING_PUNCT.sub("", text).strip(" ,")


# A whole number directly before a proper digit fraction is a mixed number (MATH writes 2\frac{1}{4} for 9/4).
_MIXED_LATEX = re.compile(r"(?<![\d.}^_])(\d+)\s*\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_MIXED_PLAIN = re.compile(r"(?<![\d.^_/])(\d+) +(\d+)/(\d+)(?![\d.])")


def _group_thousands(text: str) -> str:
    """``1,000,000`` → ``1000000``, but only outside brackets: inside ``(1,100)``, ``[2,400]`` or ``\\{3,500\\}`` a
    comma separates the items of a tuple, interval or set (the explicit separators were removed earlier)."""
    if "," not in text:
        return text
    depths = _bracket_depths(text)

    def ungroup(match: re.Match[str]) -> str:
        run = match.group(0)
        return run.replace(",", "") if not depths[match.start()] and _GROUPED.fullmatch(run) else run

    return _COMMA_RUN.sub(ungroup, text)


def _bracket_depths(text: str) -> list[int]:
    """The nesting depth of round, square and set brackets at each index (LaTeX ``{}`` groups do not count)."""
    depths, depth, index = [0] * (len(text) + 1), 0, 0
    while index < len(text):
        char = text[index]
        if text.startswith("\\{", index) or text.startswith("\\langle", index):
            depth += 1
        elif text.startswith("\\}", index) or text.startswith("\\rangle", index):
            depth = max(depth - 1, 0)
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        depths[index] = depth
        index += 1
    return depths


def _mixed_number(match: re.Match[str]) -> str:
    whole, numerator, denominator = match.groups()
    if int(numerator) >= int(denominator):
        return match.group(0)
    return f"({whole}+\\frac{{{numerator}}}{{{denominator}}})"


# 0.1\overline{6} is exactly 1/6 (before \overline is dropped as a text wrapper, which would leave 0.16).
_REPEATING_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d*)\\overline\s*\{\s*(\d{1,20})\s*\}")


def _repeating_decimal(match: re.Match[str]) -> str:
    whole, fixed, repeating = match.groups()
    denominator = 10 ** len(fixed) * (10 ** len(repeating) - 1)
    numerator = int(whole or "0") * denominator + int(fixed + repeating) - int(fixed or "0")
    return f"({numerator}/{denominator})"


def _strip_unit_words(text: str) -> str:
    """Drop trailing unit words after a number ("18 dollars", "5 cm^2", "3 sq units"), keep math words."""
    match = _WORD_UNIT_TAIL.search(text)
    if not match:
        return text
    spaced, unit = match.groups()
    words = re.findall(r"[a-zA-Z]+", unit)
    if any(word.lower() in _MATH_WORDS for word in words):
        return text
    # Glued to the number ("5cm"), only known units go: "3xy" is a product of variables.
    if not spaced and words[0].lower() not in _GLUED_UNITS:
        return text
    return text[: match.start()].rstrip()


_ARTICLES = re.compile(r"^(?:the|a|an)\s+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_CHOICE = re.compile(r"^\(?\s*([a-e])\s*\)?(?:\s|$|[.:)])")


def normalize_text(answer: str) -> str:
    """Canonical form of a word answer for string comparison: lower case, letters and digits only."""
    text = answer.lower().replace("\\", " ")
    text = _ARTICLES.sub("", text.strip())
    return _NON_WORD.sub(" ", text).strip()


def choice_letter(answer: str) -> str | None:
    """The multiple-choice letter an answer names ("C", "(C)", "(C) 12", "C)"), or None."""
    match = _CHOICE.match(answer.strip().lower())
    if match and (len(answer.strip()) <= 3 or answer.strip().startswith("(")):
        return match.group(1)
    return None
