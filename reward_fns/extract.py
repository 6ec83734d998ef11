"""Stage 1: find the final answer in a model response.

Formats, each a function of the response text returning the raw answer or None:

- ``boxed``: the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces (several boxes in the final paragraph
  are one multi-part answer: ``\\boxed{2}, \\boxed{3}`` → ``2, 3``);
- ``final_answer``: "Final Answer: X" or "the final answer is X" anywhere in a line;
- ``answer_line``: a line ``Answer: X`` / ``Final Answer: X`` (the DAPO/Minerva format; markdown bold allowed);
- ``answer_is``: "the (final) answer is X";
- ``hash``: GSM8K's ``#### X``;
- ``bold``: the last markdown ``**X**`` in the final paragraph;
- ``inline_math``: the last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` in the final paragraph;
- ``conclusion``: the value a concluding prose sentence of the final paragraph states ("Therefore, there are 12
  ways"; "Thus the volume of $V$ is 120"), in the same tier as ``inline_math`` (the later one wins);
- ``last_number``: the last number in the response.

Formats come in tiers (``reward_fns.sources``): tiers are tried in order, and within a tier the match that comes
last in the response wins ("Answer: 12 ... actually the answer is 14" is 14). Only the text after the last closing
reasoning tag (``</think>``) is searched; a response whose reasoning never closed has no answer (a box inside
unfinished thinking is a draft, and rewarding it invites reward hacking). Boxes are searched in the whole response
(a literal scan); every other pattern is linear-time and runs on a bounded tail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from reward_fns.braces import closing_brace

ALL_FORMATS = (
    "boxed",
    "final_answer",
    "answer_line",
    "answer_is",
    "hash",
    "bold",
    "inline_math",
    "conclusion",
    "last_number",
)
LENIENT_TIERS = (
    ("boxed", "final_answer"),
    ("answer_line", "answer_is", "hash"),
    ("bold",),
    ("inline_math", "conclusion"),
    ("last_number",),
)


@dataclass(frozen=True)
class Extraction:
    """The raw answer text (None when there is none) and how it was found (or why not)."""

    answer: str | None
    method: str


_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning|thought)>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning|thought)>", re.IGNORECASE)


def extract_answer(
    response: str,
    tiers: tuple[tuple[str, ...], ...],
    max_tail_chars: int = 20_000,
    max_answer_chars: int = 1_000,
) -> Extraction:
    """The final answer of ``response``, trying the format ``tiers`` in order."""
    closes = list(_THINK_CLOSE.finditer(response))
    if closes:
        response = response[closes[-1].end() :]
    elif _THINK_OPEN.search(response[:max_tail_chars]) or _THINK_OPEN.search(response[-max_tail_chars:]):
        return Extraction(None, "unfinished_think")
    tail = response[-max_tail_chars:]
    for tier in tiers:
        found: list[tuple[int, str, str]] = []
        for name in tier:
            located = _EXTRACTORS[name](response if name == "boxed" else tail)
            if located is _TRUNCATED:
                return Extraction(None, "truncated_answer")
            if located is None:
                continue
            answer, position = located
            if name != "boxed":
                position += len(response) - len(tail)
            answer = answer.strip()
            if answer:
                found.append((position, name, answer))
        if found:
            # The last statement wins; of two in the same statement (line or sentence), the enclosing (earlier)
            # one: in "Answer: the answer is 5" both formats match, and they are one statement.
            _, _, name, answer = max((_statement_start(response, p), -p, name, answer) for p, name, answer in found)
            if len(answer) > max_answer_chars:
                return Extraction(None, "answer_too_long")
            return Extraction(answer, name)
    return Extraction(None, "no_answer")


def _statement_start(text: str, position: int) -> int:
    """Where the line, sentence or display formula holding ``position`` starts (single-line responses hold many
    sentences)."""
    window = max(position - _MAX_STATEMENT_CHARS, 0)  # a longer statement counts as starting there
    return max(window, *(text.rfind(boundary, window, position) for boundary in _STATEMENT_BOUNDARIES))


_STATEMENT_BOUNDARIES = ("\n", ". ", "$$", "\\]")
_MAX_STATEMENT_CHARS = 5_000


def answer_of_ground_truth(ground_truth: str) -> str:
    """Ground truths are sometimes stored as ``\\boxed{x}`` or as a full GSM8K solution ending in ``#### x``."""
    if "\\boxed" in ground_truth or "\\fbox" in ground_truth:
        boxed = _boxed(ground_truth)
        if isinstance(boxed, tuple) and boxed[0].strip():
            return boxed[0]
    if "####" in ground_truth:
        hashed = _hash(ground_truth)
        if hashed:
            return hashed[0]
    return ground_truth


Located = tuple[str, int]  # (answer text, where it was found)
_TRUNCATED = "\x00truncated"  # sentinel: a final answer box that never closed

_BOX = re.compile(r"\\(?:boxed|fbox)\b")


def _boxed(text: str) -> Located | str | None:
    """The last box; boxes joined only by connectives ("$x=\\boxed{2}$ and $\\boxed{3}$") are one answer."""
    starts = list(_BOX.finditer(text))
    if not starts:
        return None
    contents: list[str] = []
    next_start = None
    for match in reversed(starts):
        content, end = _box_content(text, match.end())
        if content is None:
            if next_start is None:
                return _TRUNCATED
            continue
        if next_start is not None:
            if end > next_start:
                continue  # a box nested inside the later one
            if not _CONNECTIVE_GAP.fullmatch(text[end:next_start]):
                break
        next_start = match.start()
        content = content.strip()
        if content and content not in contents:
            contents.append(content)
    if not contents:
        return None
    return ", ".join(reversed(contents)), starts[-1].start()


# What may separate the boxes of one multi-part answer: spacing, punctuation, math delimiters ("\\(\\boxed{1}\\) and
# \\(\\boxed{2}\\)"), "and"/"or", a label ("$x =", "y_2 ="), a noun before "and" ("\\boxed{1} papers and \\boxed{2}")
# or a short remark that ends in "and" ("\\text{ for part (a) and }"). Anything else (a hedge: "or possibly") ends it.
_CONNECTIVE_GAP = re.compile(
    r"(?:[\s$,;:.&~]|\\[()\[\]]|\\quad|\\qquad|\\text\{[^{}]{0,40}?\b(?:and|or)\s*\}|\band\b|\bor\b|\beither\b"
    r"|[a-zA-Z]{2,20}\s+and\b|[a-zA-Z](?:_\{?\w+\}?)?\s*=){0,40}"
)


def _box_content(text: str, after_command: int) -> tuple[str | None, int]:
    """The argument of a box command and the index just past it."""
    index = after_command
    while index < len(text) and text[index] == " ":
        index += 1
    if index < len(text) and text[index] == "{":
        end = closing_brace(text, index)
        return (None, index) if end is None else (text[index + 1 : end - 1], end)
    # "\boxed 5": the argument is the next run of non-space characters.
    match = _BARE_ARGUMENT.match(text, index)
    return (match.group(0), match.end()) if match else (None, index)


_BARE_ARGUMENT = re.compile(r"[^\s$]+")


# The markers of answer statements; the answer is the rest of the line after the last marker that has one.
# "Answer: X" at the start of a line ("Final Answer: X" anywhere is the ``final_answer`` format).
_ANSWER_LINE = re.compile(r"(?im)^[ \t>*#_]*(?:final[ \t]+)?answer[ \t]*[*_]*[ \t]*[:：][ \t]*[*_]*[ \t]*")
_ANSWER_IS = re.compile(r"(?i)\b(?:final[ \t]+)?answer[ \t]+(?:is|should[ \t]+be|would[ \t]+be)[ \t]*[:：]?[ \t]*")
_HASH = re.compile(r"####[ \t]*")
_FINAL_ANSWER = re.compile(r"(?i)\bfinal[ \t]+answer(?:[ \t]*[*_]*[ \t]*[:：]|[ \t]+is)[ \t]*[:：]?[ \t]*[*_]*[ \t]*")
_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")
# Formulas: an escaped dollar ``\\$`` is content, not a delimiter ("$\\$12.40$"); inline ``$...$`` and ``\\(...\\)``
# stay on one line (a "$" at the end of one line and another on a later one are more often two currency signs, or
# broken LaTeX, than one formula), display ``$$...$$`` and ``\\[...\\]`` may span lines.
_INLINE_MATH = re.compile(
    r"(?<!\\)\$\$((?:[^$\\]|\\.){1,1000}?)\$\$|(?<!\\)\$((?:[^$\n\\]|\\[^\n]){1,1000}?)\$"
    r"|\\\(([^\n]{1,1000}?)\\\)|\\\[(.{1,1000}?)\\\]",
    re.DOTALL,
)
# Inline delimiters paired across a line break: not a formula, and not prose for the last-number fallback either.
_BROKEN_INLINE_MATH = re.compile(
    r"(?<!\\)\$(?!\$)[^$]{0,1000}\n[^$]{0,1000}(?<!\\)\$|\\\((?:(?!\\\))[^\n]){0,1000}\n.{0,1000}?\\\)", re.DOTALL
)
# A number, not a digit inside a word ("AZYUK2A", "H2O" hold no answer).
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# A number inside a word ("AZYUK2A", "H2O") is no answer: letters (or a digit run) on both sides.
_INSIDE_A_WORD = re.compile(r"[A-Za-z_]\d+[A-Za-z]")
_PREAMBLE = re.compile(r"(?i)^(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t]+is[ \t]*[:：]?[ \t]*")
_SENTENCE_TAIL = re.compile(r"(?i)(?:\.|,|;)?\s*(?:I hope it is correct|hope this helps)[^\n]*$")


def _clean_line(answer: str) -> str:
    answer = _SENTENCE_TAIL.sub("", answer).strip()
    answer = _PREAMBLE.sub("", answer)  # "Final Answer: The final answer is 5"
    boxed = _boxed(answer)
    if isinstance(boxed, tuple):
        return boxed[0]
    # "5. This is because ..." : the answer ends at the first sentence break that is not a decimal point.
    sentence_end = _SENTENCE_END.search(answer)
    if sentence_end:
        answer = answer[: sentence_end.start()]
    answer = answer.strip().strip("*_").strip().rstrip(".").strip(_QUOTES)
    return _stated_value(answer) or answer


_QUOTES = "\"'“”‘’`"


_SENTENCE_END = re.compile(r"(?<!\d)\.(?:\s|$)|\.(?=\s+[A-Z])")
# Prose that states its answer: "The largest $n$ is 34", "there are 12 ways", "Jane started 3 hours ago".
_MATH_SPAN = re.compile(r"(?<!\\)\$(?:[^$\\]|\\.){0,1000}\$|\\\([^\n]{0,1000}?\\\)|\\\[.{0,1000}?\\\]", re.DOTALL)
_TWO_WORDS = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}[ \t,]+[a-zA-Z]{2,}(?![a-zA-Z])")
_COPULA = re.compile(
    r"(?i)\b(?:is|are|equals|was|were|be|becomes|(?:increases|decreases|grows|falls|rises|drops)[ \t]+by)\b"
    r"(?:[ \t]+(?:approximately|about|exactly|equal[ \t]+to))?[ \t:]*"
)
_STATED_VALUE = re.compile(
    r"(?<!\\)\$(?:[^$\\]|\\.){1,1000}\$|\\\([^\n]{1,1000}?\\\)"
    r"|(?<![A-Za-z\d.])-?(?:\d[\d,]*(?:\.\d+)?(?:/\d+)?|\.\d+)(?:[ \t]*%)?"
)


def _stated_value(sentence: str) -> str | None:
    """The value a prose sentence states: what follows its last "is"/"are"/"equals", or its only number or formula;
    None when the sentence is not prose or states no single value ("there are 3 or 4 ways" is a hedge)."""
    outside = _MATH_SPAN.sub(lambda m: "$" * len(m.group(0)), sentence)  # same length, no words inside math
    if not _TWO_WORDS.search(outside):
        return None
    copulas = list(_COPULA.finditer(outside))
    if copulas:
        value = _STATED_VALUE.match(sentence, copulas[-1].end())
        if value is None or _STATED_VALUE.search(sentence, value.end()):
            return None
    else:
        values = list(_STATED_VALUE.finditer(sentence))
        value = values[0] if len(values) == 1 else None
    if value is None:
        return None
    text = value.group(0)
    return _MATH_SPAN.sub(lambda m: _strip_delimiters(m.group(0)), text).strip()


def _strip_delimiters(formula: str) -> str:
    return formula[2:-2] if formula.startswith(("\\(", "\\[")) else formula[1:-1]


# A concluding sentence in prose ("Therefore, there are 12 distinct sequences."): read like an answer line.
_CONCLUSION = re.compile(
    r"(?i)\b(?:therefore|thus|hence|so|finally|altogether|in[ \t]+total|in[ \t]+conclusion)\b[ \t,]*"
    r"((?:[^.\n$]|(?<!\\)\$[^$\n]{0,200}\$|\.(?=\d)){1,300})"
)


def _conclusion(text: str) -> Located | None:
    paragraph, offset = _final_paragraph(text)
    for match in reversed(list(_CONCLUSION.finditer(paragraph))):
        value = _stated_value(_SENTENCE_TAIL.sub("", match.group(1)).strip())
        if value:
            return value, offset + match.start()
    return None


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


_MAX_LINE_CHARS = 2_000  # twice the default answer cap: a longer answer is refused anyway


def _line_format(marker: re.Pattern[str]) -> Callable[[str], Located | None]:
    """The rest of the line after the last ``marker`` that is followed by something (linear: markers are found
    first, and only their own lines are read)."""

    def extract(text: str) -> Located | None:
        for match in reversed(list(marker.finditer(text))):
            line_end = text.find("\n", match.end())
            # The answer is at most a sentence: what lies beyond _MAX_LINE_CHARS of a line is never read.
            end = min(len(text) if line_end < 0 else line_end, match.end() + _MAX_LINE_CHARS)
            content = text[match.end() : end].strip()
            if content:
                return _clean_line(content), match.start()
        return None

    return extract


_final_answer_statement = _line_format(_FINAL_ANSWER)


def _final_answer(text: str) -> Located | None:
    """A final-answer statement, unless it is prose that states no value ("Final Answer: see above"): then the
    box it would outrank stays the answer."""
    if "final" not in text and "Final" not in text and "FINAL" not in text:
        return None
    located = _final_answer_statement(text)
    if located is None:
        return None
    answer, _ = located
    outside = _MATH_SPAN.sub(lambda m: "$" * len(m.group(0)), answer)
    return None if _TWO_WORDS.search(outside) else located


_answer_line = _line_format(_ANSWER_LINE)
_answer_is = _line_format(_ANSWER_IS)
_hash = _line_format(_HASH)


_MAX_PARAGRAPH_CHARS = 5_000


def _final_paragraph(text: str) -> tuple[str, int]:
    """The last paragraph (at most 5,000 characters of it) and where it starts (0 when there is one paragraph)."""
    stripped = text.rstrip()
    blank_line = stripped.rfind("\n\n")
    start = max(0 if blank_line < 0 else blank_line + 2, len(stripped) - _MAX_PARAGRAPH_CHARS)
    return stripped[start:], start


def _bold(text: str) -> Located | None:
    paragraph, offset = _final_paragraph(text)
    for match in reversed(list(_BOLD.finditer(paragraph))):
        content = match.group(1).strip()
        if content and not _NOT_AN_ANSWER.search(content):
            return content.rstrip("."), offset + match.start()
    return None


_NOT_AN_ANSWER = re.compile(r"(?i)answer|solution|step")


def _inline_math(text: str) -> Located | None:
    paragraph, offset = _final_paragraph(text)
    if "$" not in paragraph and "\\(" not in paragraph and "\\[" not in paragraph:
        return None
    match = _last(_INLINE_MATH, paragraph)
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None), offset + match.start()


def _last_number(text: str) -> Located | None:
    if "\n" in text and ("$" in text or "\\(" in text):
        text = _BROKEN_INLINE_MATH.sub(lambda m: " " * len(m.group(0)), text)
    if _INSIDE_A_WORD.search(text):
        text = _INSIDE_A_WORD.sub(lambda m: m.group(0)[0] + "x" * (len(m.group(0)) - 2) + m.group(0)[-1], text)
    match = _last(_NUMBER, text) if _DIGIT.search(text) else None  # the search skips digit-free text in C
    return (match.group(0).rstrip(","), match.start()) if match else None


_DIGIT = re.compile(r"\d")


_EXTRACTORS: dict[str, Callable[[str], Located | str | None]] = {
    "boxed": _boxed,
    "final_answer": _final_answer,
    "answer_line": _answer_line,
    "answer_is": _answer_is,
    "hash": _hash,
    "bold": _bold,
    "inline_math": _inline_math,
    "conclusion": _conclusion,
    "last_number": _last_number,
}
