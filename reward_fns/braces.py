"""Balanced-brace scanning shared by extraction and normalisation (linear time, depth-capped)."""

from __future__ import annotations

import re
from functools import lru_cache

MAX_BRACE_DEPTH = 64


def closing_brace(text: str, open_index: int) -> int | None:
    """Index just past the ``}`` matching the ``{`` at ``open_index``; None when unbalanced or nested too deep.

    Escaped braces (``\\{``, ``\\}``) do not count: they are literal set braces inside the group.
    """
    depth = 0
    index = open_index
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return None
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def strip_wrappers(text: str, names: tuple[str, ...], keep_content: bool) -> str:
    """Replace every ``\\name{content}`` by ``content`` (or by nothing), innermost wrappers included."""
    if "\\" not in text:
        return text
    pattern = _wrapper_pattern(names)
    search_from = 0
    # Each replacement removes at least one command, so the loop runs at most (number of commands) times.
    while True:
        match = pattern.search(text, search_from)
        if match is None:
            return text
        open_index = match.end() - 1
        end = closing_brace(text, open_index)
        if end is None:  # unbalanced: drop the command word, keep the rest as it is
            text = text[: match.start()] + text[open_index:]
            search_from = match.start() + 1
            continue
        content = text[open_index + 1 : end - 1] if keep_content else ""
        text = text[: match.start()] + content + text[end:]
        search_from = match.start()


@lru_cache(maxsize=16)
def _wrapper_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\\(?:" + "|".join(names) + r")(?![a-zA-Z])\s*\{")
