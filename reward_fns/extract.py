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

Only the text after the last closing reasoning tag (``</think>``) is searched; a response whose reasoning never
closed has no answer (a box inside unfinished thinking is a draft, and rewarding it invites reward hacking). All
patterns are linear-time and run on a bounded tail of the response.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from reward_fns.braces import closing_brace

ALL_FORMATS = ("boxed", "answer_line", "answer_is", "hash", "bold", "inline_math", "last_number")


@dataclass(frozen=True)
class Extraction:
    """The raw answer text (None when there is none) and how it was found (or why not)."""

    answer: str | None
    method: str


_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning|thought)>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning|thought)>", re.IGNORECASE)


def extract_answer(
    response: str, formats: tuple[str, ...], max_tail_chars: int = 20_000, max_answer_chars: int = 1_000
) -> Extraction:
    """The final answer of ``response``, trying ``formats`` in order."""
    closes = list(_THINK_CLOSE.finditer(response))
    if closes:
        response = response[closes[-1].end() :]
    elif _THINK_OPEN.search(response[:max_tail_chars]) or _THINK_OPEN.search(response[-max_tail_chars:]):
        return Extraction(None, "unfinished_think")
    tail = response[-max_tail_chars:]
    for name in formats:
        answer = _EXTRACTORS[name](tail)
        if answer is _TRUNCATED:
            return Extraction(None, "truncated_answer")
        if answer is None:
            continue
        answer = answer.strip()
        if not answer:
            continue
        if len(answer) > max_answer_chars:
            return Extraction(None, "answer_too_long")
        return Extraction(answer, name)
    return Extraction(None, "no_answer")


def answer_of_ground_truth(ground_truth: str) -> str:
    """Ground truths are sometimes stored as ``\\boxed{x}`` or as a full GSM8K solution ending in ``#### x``."""
    if "\\boxed" in ground_truth or "\\fbox" in ground_truth:
        boxed = _boxed(ground_truth)
        if isinstance(boxed, str) and boxed.strip():
            return boxed
    if "####" in ground_truth:
        hashed = _hash(ground_truth)
        if hashed:
            return hashed
    return ground_truth


_TRUNCATED = "\x00truncated"  # sentinel: a final answer box that never closed

_BOX = re.compile(r"\\(?:boxed|fbox)\b")


def _boxed(text: str) -> str | None:
    starts = list(_BOX.finditer(text))
    if not starts:
        return None
    last = starts[-1]
    paragraph_start = text.rfind("\n\n", 0, last.start())
    contents: list[str] = []
    covered_until = -1
    for match in starts:
        if match.start() < paragraph_start or match.start() < covered_until:
            continue  # an earlier paragraph, or a box nested inside the previous one
        content, end = _box_content(text, match.end())
        if content is None:
            if match is last:
                return _TRUNCATED
            continue
        covered_until = end
        content = content.strip()
        if content and content not in contents:
            contents.append(content)
    return ", ".join(contents) if contents else None


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
_SENTENCE_TAIL = re.compile(r"(?i)(?:\.|,|;)?\s*(?:I hope it is correct|hope this helps)[^\n]*$")


def _clean_line(answer: str) -> str:
    answer = _SENTENCE_TAIL.sub("", answer).strip()
    boxed = _boxed(answer)
    if isinstance(boxed, str):
        return boxed
    # "5. This is because ..." : the answer ends at the first sentence break that is not a decimal point.
    sentence_end = re.search(r"(?<!\d)\.(?:\s|$)|\.(?=\s+[A-Z])", answer)
    if sentence_end:
        answer = answer[: sentence_end.start()]
    return answer.strip().strip("*_").strip()


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


def _answer_line(text: str) -> str | None:
    match = _last(_ANSWER_LINE, text)
    return _clean_line(match.group(1)) if match else None


def _answer_is(text: str) -> str | None:
    match = _last(_ANSWER_IS, text)
    return _clean_line(match.group(1)) if match else None


def _hash(text: str) -> str | None:
    match = _last(_HASH, text)
    return _clean_line(match.group(1)) if match else None


def _final_paragraph(text: str) -> str:
    stripped = text.rstrip()
    start = stripped.rfind("\n\n")
    return stripped[start + 2 :] if start >= 0 else stripped


def _bold(text: str) -> str | None:
    for match in reversed(list(_BOLD.finditer(_final_paragraph(text)))):
        content = match.group(1).strip()
        if content and not re.search(r"(?i)answer|solution|step", content):
            return content.rstrip(".")
    return None


def _inline_math(text: str) -> str | None:
    match = _last(_INLINE_MATH, _final_paragraph(text))
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None)


def _last_number(text: str) -> str | None:
    match = _last(_NUMBER, text)
    return match.group(0).rstrip(",") if match else None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": _boxed,
    "answer_line": _answer_line,
    "answer_is": _answer_is,
    "hash": _hash,
    "bold": _bold,
    "inline_math": _inline_math,
    "last_number": _last_number,
}
