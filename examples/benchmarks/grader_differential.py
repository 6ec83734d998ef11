"""Differential testing of math graders: real benchmark answers, respelled and nearly missed.

The answers are read at run time from a directory of benchmark JSONL files (MATH500, AIME24, AMC23, GSM8K,
OlympiadBench, Minerva; whichever are present). Each distinct answer yields variants with a label known by
construction:

- respellings (equivalent): the answer boxed, inside other delimiters, as a stated final answer, behind a label
  (``x =``, ``(x, y) =``), with LaTeX spacing commands and ``\\left``/``\\right``, with thousands separators, as a
  fraction in another notation, as a decimal, as a mixed number, with a unit, as a percentage or an angle, as
  several boxes (in another order, for a list);
- near misses (not equivalent): one digit off, a tuple swapped, a sign flipped, a subset of a list, an extra
  member, and a hedge (a second, different boxed answer).

Near misses are made only for answers whose value is a plain number or a list/tuple of them, so that each one is
wrong for sure; respellings only where the spelling keeps the value for sure. Every disagreement of a grader with
the label is then triaged: ``ours-wrong`` (reward_fns disagrees with the label), ``theirs-wrong`` (the peer does,
reward_fns does not) or ``policy`` (the peer does, on a variant kind whose label is a grading convention the peer
does not share; the reason is listed).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from grader_external import ExternalCase, last_box

RESPELLINGS = (
    "boxed",
    "delimiters",
    "final_answer_line",
    "label",
    "spacing",
    "thousands",
    "fraction",
    "decimal",
    "mixed_number",
    "unit",
    "percent",
    "degrees",
    "several_boxes",
)
NEAR_MISSES = ("digit_off", "swapped_tuple", "sign", "subset", "extra_member", "hedge")

# Variant kinds whose label is a grading convention, with the reason (a peer that disagrees there has a policy,
# not a bug).
POLICY_REASONS = {
    "percent": "a percentage is read both as x/100 and as x (datasets write the answer 28 as 28%); math-verify "
    "reads x% as x/100 only",
    "degrees": "an angle in degrees matches the bare number (MATH writes 90^\\circ and 90 for the same answer)",
    "mixed_number": "MATH writes 2\\frac{1}{4} for 9/4; math-verify reads it as a product",
    "hedge": "two different boxed final answers are a hedge, wrong even if one of them is right; math-verify "
    "accepts when any extracted answer matches",
}


@dataclass(frozen=True)
class Answer:
    benchmark: str
    text: str


# -- reading the answers ------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _clean(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text[1:-1].strip()
    return text


def read_answers(directory: Path) -> list[Answer]:
    """The distinct answers of every benchmark file present in ``directory`` (first benchmark to give one wins)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"--differential {directory}: expected a directory of benchmark JSONL files")
    found: list[Answer] = []
    readers = {
        "math500.jsonl": lambda row: [row["answer"]],
        "aime24.jsonl": lambda row: [str(row["answer"])],
        "amc23.jsonl": lambda row: [_plain_float(row["answer"])],
        "gsm8k.jsonl": lambda row: [row["answer"].rsplit("####", 1)[1]],
        "olympiadbench.jsonl": lambda row: _olympiad_answers(row),
        "minerva_math.jsonl": lambda row: [last_box(row["solution"]) or ""],
    }
    seen: set[str] = set()
    for name, read in readers.items():
        path = directory / name
        if not path.exists():
            continue
        for row in _rows(path):
            for text in read(row):
                text = _clean(str(text))
                if text and text not in seen and len(text) <= 200:
                    seen.add(text)
                    found.append(Answer(name.removesuffix(".jsonl"), text))
    return found


def _plain_float(value) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def _olympiad_answers(row: dict) -> list[str]:
    answers = row["final_answer"]
    if isinstance(answers, str):
        try:
            answers = ast.literal_eval(answers)
        except (ValueError, SyntaxError):
            answers = [answers]
    return [str(answer) for answer in answers] if len(answers) == 1 else []


# -- the shape of an answer -----------------------------------------------------------------------------------------
_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}|(-?)(\d+)/(\d+)")
_GROUPED_INTEGER = re.compile(r"\d{1,3}(?:,\d{3})+")


def _number_value(text: str) -> Fraction | None:
    """The value of a plain number (integer, decimal, fraction), or None."""
    text = text.strip()
    if _GROUPED_INTEGER.fullmatch(text):
        text = text.replace(",", "")
    if _INTEGER.fullmatch(text) or _DECIMAL.fullmatch(text):
        return Fraction(text)
    match = _FRACTION.fullmatch(text)
    if match:
        sign, numerator, denominator = (match.group(1), match.group(2), match.group(3))
        if numerator is None:
            sign, numerator, denominator = match.group(4), match.group(5), match.group(6)
        if int(denominator) == 0:
            return None
        return Fraction(int(numerator), int(denominator)) * (-1 if sign else 1)
    return None


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def _numbers_of_list(text: str) -> list[str] | None:
    """The items of a bare list of plain numbers ("2, 3, 5"), or None."""
    if any(bracket in text for bracket in "()[]{}") or "," not in text or _GROUPED_INTEGER.fullmatch(text.strip()):
        return None
    items = _split_top_level(text)
    return items if len(items) >= 2 and all(_number_value(item) is not None for item in items) else None


def _numbers_of_tuple(text: str) -> list[str] | None:
    """The items of a parenthesised tuple of plain numbers ("(3, 4)"), or None."""
    body = re.fullmatch(r"\\left\s*\((.*)\\right\s*\)|\((.*)\)", text.strip())
    if body is None:
        return None
    inner = body.group(1) if body.group(1) is not None else body.group(2)
    if any(bracket in inner for bracket in "()[]{}"):
        return None
    items = _split_top_level(inner)
    return items if len(items) >= 2 and all(_number_value(item) is not None for item in items) else None


# -- spellings ----------------------------------------------------------------------------------------------------
def _latex_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _terminating_decimal(value: Fraction) -> str | None:
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return None
    places = max(twos, fives, 1)
    scaled = abs(value) * 10**places
    digits = str(int(scaled)).rjust(places + 1, "0")
    return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]


def _digit_off(text: str) -> str:
    """The last digit of ``text`` changed."""
    match = list(re.finditer(r"\d", text))[-1]
    digit = int(match.group(0))
    return text[: match.start()] + str((digit + 1) % 10) + text[match.end() :]


# Golds that state a set, a relation or words rather than a value: "x = ..." in front of them is not a label.
_NOT_A_VALUE = re.compile(
    r"=|<|>|\$|\\(?:cup|cap|in|le|ge|leq|geq|leqslant|geqslant|text|mathrm|ne|neq|quad|qquad)(?![a-zA-Z])"
)


def _box(text: str) -> str:
    return f"So the answer is $\\boxed{{{text}}}$."


def variants(answer: Answer) -> list[ExternalCase]:
    """Every variant of one answer, each a (response, gold, label) case tagged with its kind."""
    gold = answer.text
    out: list[ExternalCase] = []

    def add(kind: str, response: str, label: bool) -> None:
        out.append(
            ExternalCase(
                id=f"{answer.benchmark}:{len(out)}:{kind}",
                source="math",
                response=response,
                gold=gold,
                label=label,
                note=kind,
                peer_gold=gold,
                peer_pred=response,
            )
        )

    add("boxed", _box(gold), True)
    add("delimiters", f"Hence the result is \\(\\boxed{{{gold}}}\\).", True)
    add("final_answer_line", f"We are done.\n\nFinal Answer: The final answer is ${gold}$. I hope it is correct.", True)
    value = _number_value(gold)
    tuple_items, list_items = _numbers_of_tuple(gold), _numbers_of_list(gold)
    if not list_items and not _NOT_A_VALUE.search(gold):
        label = "(x, y)" if tuple_items and len(tuple_items) == 2 else "x"
        add("label", _box(f"{label} = {gold}"), True)
    if tuple_items or list_items:
        items = tuple_items or list_items
        spaced = ",\\ ".join(items)
        add("spacing", _box(f"\\left( {spaced} \\right)" if tuple_items else spaced), True)
    if value is not None:
        add("spacing", _box(f"\\, {gold} \\,"), True)
        if value.denominator == 1 and abs(value) >= 1000:
            grouped = f"{abs(value.numerator):,}"
            sign = "-" if value < 0 else ""
            add("thousands", _box(sign + grouped), True)
            add("thousands", _box(sign + grouped.replace(",", "{,}")), True)
            add("thousands", _box(sign + grouped.replace(",", ",\\!")), True)
        if value.denominator != 1:
            add("fraction", _box(f"{value.numerator}/{value.denominator}"), True)
            add("fraction", _box(_latex_number(value).replace("\\frac", "\\dfrac")), True)
            decimal = _terminating_decimal(value)
            if decimal is not None and decimal != gold:
                add("decimal", _box(decimal), True)
            if abs(value) > 1:
                whole, rest = divmod(abs(value.numerator), value.denominator)
                sign = "-" if value < 0 else ""
                add("mixed_number", _box(f"{sign}{whole}\\frac{{{rest}}}{{{value.denominator}}}"), True)
        elif "." not in gold:
            add("decimal", _box(f"{value.numerator}.0"), True)
        add("unit", _box(f"{gold} \\text{{ units}}"), True)
        if value.denominator == 1 and value > 0:
            add("percent", _box(f"{gold}\\%"), True)
            add("degrees", _box(f"{gold}^\\circ"), True)
        # near misses: the value is a plain number, so each of these is wrong for sure
        add("digit_off", _box(_digit_off(gold)), False)
        if value != 0:
            add("sign", _box(f"-{gold}" if not gold.startswith("-") else gold[1:]), False)
        add("hedge", f"It is $\\boxed{{{gold}}}$ or possibly $\\boxed{{{_digit_off(gold)}}}$.", False)
    if list_items:
        boxes = ", ".join(f"\\boxed{{{item}}}" for item in reversed(list_items))
        add("several_boxes", f"The solutions are ${boxes}$.", True)
        add("several_boxes", " and ".join(f"\\(\\boxed{{{item}}}\\)" for item in list_items), True)
        values = [_number_value(item) for item in list_items]
        if len(set(values)) == len(values):  # a list with a repeated member has no proper subset of one less
            add("subset", _box(", ".join(list_items[:-1])), False)
        extra = _latex_number(max(values) + 1)
        add("extra_member", _box(", ".join([*list_items, extra])), False)
        add("digit_off", _box(_digit_off(gold)), False)
    if tuple_items:
        if len({_number_value(item) for item in tuple_items}) == len(tuple_items):
            add("swapped_tuple", _box("(" + ", ".join(reversed(tuple_items)) + ")"), False)
        first = tuple_items[0]
        negated = first[1:] if first.startswith("-") else f"-{first}"
        if _number_value(first) != 0:
            add("sign", _box("(" + ", ".join([negated, *tuple_items[1:]]) + ")"), False)
        add("digit_off", _box("(" + ", ".join([*tuple_items[:-1], _digit_off(tuple_items[-1])]) + ")"), False)
    return out


def generate(directory: Path) -> list[ExternalCase]:
    return [case for answer in read_answers(directory) for case in variants(answer)]


# -- triage -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Triage:
    case: ExternalCase
    ours: bool
    theirs: bool
    verdict: str  # "ours-wrong", "theirs-wrong" or "policy"
    reason: str = ""


def triage(cases: list[ExternalCase], ours: list[bool], theirs: list[bool]) -> list[Triage]:
    """Every case where a grader disagrees with the label, classified."""
    triaged = []
    for case, our_verdict, their_verdict in zip(cases, ours, theirs):
        if our_verdict != case.label:
            triaged.append(Triage(case, our_verdict, their_verdict, "ours-wrong"))
        elif their_verdict != case.label:
            reason = POLICY_REASONS.get(case.note, "")
            triaged.append(Triage(case, our_verdict, their_verdict, "policy" if reason else "theirs-wrong", reason))
    return triaged


def counts_by_kind(cases: list[ExternalCase]) -> Counter:
    return Counter(case.note for case in cases)


__all__ = ["NEAR_MISSES", "POLICY_REASONS", "RESPELLINGS", "Triage", "generate", "read_answers", "triage", "variants"]
