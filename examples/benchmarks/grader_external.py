"""External grading data for ``grader_benchmark.py``, read from paths given on the command line (never copied here).

Two sources:

- a peer's test suite as JSONL, one ``{id, gold, pred, expected, note, mv}`` object a line (Math-Verify's own
  tests, ``mv`` naming the call and options each test used), mapped to a (response, ground truth) pair the way a
  verl user would grade it: a gold with a box as written; a worked gold without a box gives its last "final answer
  is $X$"; any other gold loses its math delimiters. A pred with a box as written; a pred that is one formula
  becomes ``The answer is \\boxed{X}``; prose as written. Over-escaped test strings (a doubled backslash before a
  command name, a literal ``\\n``) are unescaped first.
- benchmark reference solutions graded against their own answers: MATH500 (``solution`` vs ``answer``), GSM8K (the
  worked answer vs the number after ``####``), Minerva (``solution`` vs its last box), AIME24 (``solution`` vs
  ``answer``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExternalCase:
    """One graded pair. ``response``/``gold`` are what reward_fns sees; ``peer_gold``/``peer_pred`` and
    ``peer_options`` what a peer's own test passed to it (for a suite case), else the same strings."""

    id: str
    source: str
    response: str
    gold: str
    label: bool
    note: str = ""
    peer_gold: str = ""
    peer_pred: str = ""
    peer_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


# -- the suite ------------------------------------------------------------------------------------------------------
# LaTeX commands that start with "n" (spelt here without it): "\n" before one is a command, not an escaped newline.
_N_COMMANDS = r"(?:eq|e|u|ot|otin|abla|eg|i|mid|leq|geq|less|gtr|ewline|atural|exists|parallel)"
_LITERAL_NEWLINE = re.compile(r"(?<!\\)\\n(?!" + _N_COMMANDS + r"(?![a-zA-Z]))")
_DOUBLED_BEFORE_COMMAND = re.compile(r"(?<!\\)\\\\(?=[a-zA-Z])")
_DOUBLED_QUOTE = re.compile(r'\\"')


def unescape(text: str) -> str:
    """Undo the over-escaping of test strings written as Python literals of literals."""
    text = _LITERAL_NEWLINE.sub("\n", text)
    text = _DOUBLED_BEFORE_COMMAND.sub(r"\\", text)
    return _DOUBLED_QUOTE.sub('"', text)


_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_ONE_FORMULA = re.compile(r"^\s*(?:\$\$(.+)\$\$|\$(.+)\$|\\\((.+)\\\)|\\\[(.+)\\\])\s*$", re.DOTALL)
_FINAL_ANSWER = re.compile(r"final answer is\s*\$([^$]+)\$", re.IGNORECASE)
# Words outside math that make a plain string prose rather than a formula (function names do not).
_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])(?!(?:sin|cos|tan|log|ln|exp|sqrt|pi|inf|infty)(?![a-zA-Z]))[a-zA-Z]{3,}")


def _one_formula(text: str) -> str | None:
    """The formula when ``text`` is nothing but one formula, delimited or plain; None for prose."""
    match = _ONE_FORMULA.match(text)
    if match:
        inner = next(group for group in match.groups() if group is not None)
        return None if "$" in inner.replace("\\$", "") else inner.strip()
    if "$" in text.replace("\\$", "") or "\\(" in text or "\\[" in text or _PROSE_WORD.search(text):
        return None
    return text.strip()


def suite_gold(gold: str) -> str:
    if _BOX.search(gold):
        return gold
    finals = _FINAL_ANSWER.findall(gold)
    if finals:
        return finals[-1].strip()
    formula = _one_formula(gold)
    return formula if formula is not None else gold


def suite_response(pred: str) -> str:
    if _BOX.search(pred):
        return pred
    formula = _one_formula(pred)
    return f"The answer is \\boxed{{{formula}}}" if formula else pred


DEFAULT_REL_TOL = 1e-4


def suite_options(peer_options: dict[str, Any]) -> dict[str, Any]:
    """The reward_fns options that say what a test's math-verify options say, where reward_fns has the knob: a
    float precision looser than our default becomes ``rel_tol`` (never a tighter one), and math-verify's
    ``allow_set_relation_comp`` (default false: an inequality does not answer an interval gold)
    ``inequality_for_interval``."""
    options: dict[str, Any] = {"inequality_for_interval": bool(peer_options.get("allow_set_relation_comp", False))}
    precision = peer_options.get("precision", peer_options.get("float_rounding"))
    if isinstance(precision, int) and 10.0**-precision > DEFAULT_REL_TOL:
        options["rel_tol"] = 10.0**-precision
    return options


def load_suite(path: Path) -> list[ExternalCase]:
    """The suite's cases, mapped; a malformed line is an error naming the line."""
    cases = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            gold, pred, expected = unescape(row["gold"]), unescape(row["pred"]), row["expected"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: expected a JSON object with gold, pred, expected ({error})") from None
        if not isinstance(expected, bool):
            raise ValueError(f"{path}:{number}: expected={expected!r} must be true or false")
        cases.append(
            ExternalCase(
                id=str(row.get("id", f"line {number}")),
                source="math",
                response=suite_response(pred),
                gold=suite_gold(gold),
                label=expected,
                note=str(row.get("note", "")),
                peer_gold=gold,
                peer_pred=pred,
                peer_options=dict(row.get("mv") or {}),
                options=suite_options(dict(row.get("mv") or {})),
            )
        )
    return cases


# -- reference solutions --------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def last_box(text: str) -> str | None:
    from reward_fns.braces import closing_brace

    starts = list(_BOX.finditer(text))
    for match in reversed(starts):
        brace = text.find("{", match.end())
        if brace < 0 or text[match.end() : brace].strip():
            continue
        end = closing_brace(text, brace)
        if end is not None:
            return text[brace + 1 : end - 1]
    return None


def load_references(directory: Path) -> dict[str, list[ExternalCase]]:
    """Reference solutions with their answers, per benchmark (files that are absent are skipped and reported)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"--references {directory}: expected a directory of benchmark JSONL files")
    benchmarks: dict[str, list[ExternalCase]] = {}

    def case(name: str, index: int, source: str, response: str, gold: str) -> ExternalCase:
        return ExternalCase(f"{name}:{index}", source, response, gold, True, peer_gold=gold, peer_pred=response)

    if (directory / "math500.jsonl").exists():
        rows = _read_jsonl(directory / "math500.jsonl")
        benchmarks["math500"] = [case("math500", i, "math500", r["solution"], r["answer"]) for i, r in enumerate(rows)]
    if (directory / "gsm8k.jsonl").exists():
        rows = _read_jsonl(directory / "gsm8k.jsonl")
        benchmarks["gsm8k"] = [
            case("gsm8k", i, "gsm8k", r["answer"], r["answer"].rsplit("####", 1)[1].strip()) for i, r in enumerate(rows)
        ]
    if (directory / "minerva_math.jsonl").exists():
        rows = _read_jsonl(directory / "minerva_math.jsonl")
        benchmarks["minerva"] = [
            case("minerva", i, "minerva", r["solution"], last_box(r["solution"]) or "")
            for i, r in enumerate(rows)
            if last_box(r["solution"])
        ]
    if (directory / "aime24.jsonl").exists():
        rows = _read_jsonl(directory / "aime24.jsonl")
        benchmarks["aime24"] = [
            case("aime24", i, "aime24", r["solution"], str(r["answer"])) for i, r in enumerate(rows)
        ]
    return benchmarks


__all__ = [
    "ExternalCase",
    "last_box",
    "load_references",
    "load_suite",
    "suite_gold",
    "suite_options",
    "suite_response",
    "unescape",
]
