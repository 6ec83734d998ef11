"""Stage 1: find the final answer in a model response.

Formats, each a function of the response text returning the raw answer or None:

- ``boxed``: the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces (several boxes in the final paragraph
  are one multi-part answer: ``\\boxed{2}, \\boxed{3}`` → ``2, 3``);
- ``answer_line``: a line ``Answer: X`` / ``Final Answer: X`` (the DAPO/Minerva format; markdown bold allowed);
- ``answer_is``: "the (final) answer is X";
- ``hash``: GSM8K's ``#### X``;
- ``bold``: the last markdown ``**X**`` in the final paragraph;
- ``inline_math``: the last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` in the final paragraph;
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

ALL_FORMATS = ("boxed", "answer_line", "answer_is", "hash", "bold", "inline_math", "last_number")
LENIENT_TIERS = (("boxed",), ("answer_line", "answer_is", "hash"), ("bold",), ("inline_math",), ("last_number",))


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
            # The last statement wins; of two on the same line, the enclosing (earlier) one: in
            # "Answer: the answer is 5" both formats match, and the line is one statement.
            _, _, name, answer = max((response.rfind("\n", 0, pos), -pos, name, answer) for pos, name, answer in found)
            if len(answer) > max_answer_chars:
                return Extraction(None, "answer_too_long")
            return Extraction(answer, name)
    return Extraction(None, "no_answer")


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


# What may separate the boxes of one multi-part answer: spacing, punctuation, "and"/"or", "$x =".
_CONNECTIVE_GAP = re.compile(
    r"(?:[\s$,;:.&~]|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|\beither\b"
    r"|[a-zA-Z](?:_\{?\w+\}?)?\s*=){0,40}"
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


_ANSWER_LINE = re.compile(r"(?im)^[ \t>*#_]*(?:final[ \t]+)?answer[ \t]*[*_]*[ \t]*[:：][ \t]*[*_]*[ \t]*(\S[^\n]*)$")
_ANSWER_IS = re.compile(
    r"(?i)\b(?:final[ \t]+)?answer[ \t]+(?:is|should[ \t]+be|would[ \t]+be)[ \t]*[:：]?[ \t]*([^\n]+)"
)
_HASH = re.compile(r"####[ \t]*([^\n]+)")
_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")
_INLINE_MATH = re.compile(
    r"\$\$([^$]{1,1000})\$\$|\$([^$\n]{1,1000})\$|\\\((.{1,1000}?)\\\)|\\\[(.{1,1000}?)\\\]", re.DOTALL
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_PREAMBLE = re.compile(r"(?i)^(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t]+is[ \t]*[:：]?[ \t]*")
_SENTENCE_TAIL = re.compile(r"(?i)(?:\.|,|;)?\s*(?:I hope it is correct|hope this helps)[^\n]*$")


def _clean_line(answer: str) -> str:
    answer = _SENTENCE_TAIL.sub("", answer).strip()
    answer = _PREAMBLE.sub("", answer)  # "Final Answer: The final answer is 5"
    boxed = _boxed(answer)
    if isinstance(boxed, tuple):
        return boxed[0]
    # "5. This is because ..." : the answer ends at the first sentence break that is not a decimal point.
    sentence_end = re.search(r"(?<!\d)\.(?:\s|$)|\.(?=\s+[A-Z])", answer)
    if sentence_end:
        answer = answer[: sentence_end.start()]
    return answer.strip().strip("*_").strip().rstrip(".")


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


def _line_format(pattern: re.Pattern[str]) -> Callable[[str], Located | None]:
    def extract(text: str) -> Located | None:
        match = _last(pattern, text)
        return (_clean_line(match.group(1)), match.start()) if match else None

    return extract


_answer_line = _line_format(_ANSWER_LINE)
_answer_is = _line_format(_ANSWER_IS)
_hash = _line_format(_HASH)


_MAX_PARAGRAPH_CHARS = 5_000


def _final_paragraph(text: str) -> tuple[str, int]:
    """The last paragraph (at most 5,000 characters of it) and where it starts."""
    stripped = text.rstrip()
    start = max(stripped.rfind("\n\n") + 2, len(stripped) - _MAX_PARAGRAPH_CHARS, 0)
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
    match = _last(_INLINE_MATH, paragraph)
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None), offset + match.start()


def _last_number(text: str) -> Located | None:
    match = _last(_NUMBER, text)
    return (match.group(0).rstrip(","), match.start()) if match else None


_EXTRACTORS: dict[str, Callable[[str], Located | str | None]] = {
    "boxed": _boxed,
    "answer_line": _answer_line,
    "answer_is": _answer_is,
    "hash": _hash,
    "bold": _bold,
    "inline_math": _inline_math,
    "last_number": _last_number,
}
