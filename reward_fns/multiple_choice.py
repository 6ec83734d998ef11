"""Multiple-choice grading, and the verl entry points that send each row to it or to the math grader.

A row is multiple choice when its ``extra_info`` carries the options (``options``: ``[{letter, text}]`` or a
``{letter: text}`` mapping, or ``choices``: the texts in order, lettered A, B, ...), as the VL converters write them
for MathVista, MathVerse and MathVision; its ground truth is the correct option's letter (an option text is read as
that option). Every other row, Geometry3K's and the text datasets' included, goes to the math grader unchanged.

The response's final answer is found as for math (the ``\\boxed{}`` first, then "the answer is" statements and the
lenient fallbacks; ``strict`` keeps the box only), then read as a choice:

- a letter: ``B``, ``(B)``, ``\\text{B}``, ``Option B``, ``B.``; or a letter with its option, ``(B) 12`` / ``B: 12``
  (the text must then be that option's: a letter and another option's text is a hedge, wrong);
- otherwise the text of an option: ``\\boxed{12}`` is option B when B reads 12, compared by the math equivalence
  (``1/2`` is the option ``\\frac{1}{2}``); an answer equal to several options, or to none, is wrong.

A letter that is no option (``\\boxed{F}`` of four options) is a wrong answer, never an error; a response with no
answer at all is ``no_answer`` as for math. Rewards and result keys are the math grader's (``reward_of``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reward_fns.extract import extract_answer
from reward_fns.options import GradingOptions
from reward_fns.scoring import Grade, grade, reward_of
from reward_fns.scoring import compute_score_batch as math_score_batch
from reward_fns.sources import profile_for

logger = logging.getLogger("reward_fns")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FALLBACK_METHODS = frozenset({"bold", "inline_math", "conclusion", "last_number"})

_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textrm|mbox)\s*\{(.*)\}$", re.DOTALL)
_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+)?(?:option|choice|answer)\s*(?:is\s*)?[:：]?\s*", re.IGNORECASE)
_LETTER_ONLY = re.compile(r"^\(?\s*([A-Za-z])\s*\)?$")
_LETTER_WITH_TEXT = re.compile(r"^\(\s*([A-Z])\s*\)\s*[:.]?\s*(.+)$|^([A-Z])\s*[:.)]\s*(.+)$", re.DOTALL)
_CHOICE_STATEMENT = re.compile(
    r"(?i)\b(?:correct|right|best)\s+(?:option|choice|answer)\s+is\s*[:：]?\s*\(?\s*([A-Z])\s*\)?(?![A-Za-z])"
    r"|\b(?:option|choice)\s*\(?\s*([A-Z])\s*\)?\s+is\s+(?:correct|right)"
)
"""What a model writes about a choice when it gives no box: "the correct option is (C)", "option C is correct"."""


def options_of(extra_info: Any) -> dict[str, str] | None:
    """The ``letter -> text`` options of a row, or ``None`` for a row that is not multiple choice.

    Accepts the converters' ``options`` (``[{letter, text}]``), a ``{letter: text}`` mapping, or ``choices`` (texts
    in order), as plain Python or as the numpy arrays parquet readers hand back. A row whose ``question_type`` says
    multiple choice but that lists no options gets an empty mapping: it is graded by letter alone.
    """
    if not isinstance(extra_info, Mapping):
        return None
    options = _listed(extra_info.get("options"))
    mapping: dict[str, str] = {}
    if isinstance(options, Mapping):
        mapping = {str(letter).strip().upper(): str(text) for letter, text in options.items()}
    elif options:
        for item in options:
            if isinstance(item, Mapping) and item.get("letter") is not None:
                mapping[str(item["letter"]).strip().upper()] = str(item.get("text", ""))
    if not mapping:
        choices = _listed(extra_info.get("choices"))
        if choices and not isinstance(choices, Mapping):
            mapping = {letter: str(text) for letter, text in zip(_LETTERS, choices)}
    if mapping:
        return mapping
    kind = extra_info.get("question_type")
    if isinstance(kind, str) and "choice" in kind.lower():
        return {}
    return None


def _listed(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    return value if isinstance(value, (list, tuple, Mapping)) else None


def gold_letter(ground_truth: Any, options: Mapping[str, str]) -> str:
    """The correct letter: the ground truth itself (``B``, ``(B)``), or the letter of the option it spells out."""
    if hasattr(ground_truth, "tolist") and not isinstance(ground_truth, (str, bytes)):
        ground_truth = ground_truth.tolist()
    if isinstance(ground_truth, (list, tuple)) and len(ground_truth) == 1:
        ground_truth = ground_truth[0]
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        raise TypeError(f"ground_truth={ground_truth!r} of a multiple-choice row: expected the option letter")
    text = str(ground_truth).strip()
    letter = _LETTER_ONLY.match(text)
    if letter and (not options or letter.group(1).upper() in options):
        return letter.group(1).upper()
    spelled = [key for key, option in options.items() if option.strip() == text]
    if len(spelled) == 1:
        return spelled[0]
    raise ValueError(
        f"ground_truth={text!r} of a multiple-choice row is neither an option letter nor one option's text "
        f"(options {sorted(options)})"
    )


def read_choice(answer: str) -> tuple[str | None, str]:
    """``(letter, text)`` of an extracted answer: ``("B", "")`` for ``(B)``, ``("B", "12")`` for ``B: 12``,
    ``(None, answer)`` when it names no letter (the text is then matched against the options)."""
    text = _unwrap(answer)
    bare = _PREFIX.sub("", text, count=1).strip() if _PREFIX.match(text) else text
    only = _LETTER_ONLY.match(bare)
    if only:
        return only.group(1), ""
    with_text = _LETTER_WITH_TEXT.match(bare)
    if with_text:
        letter = with_text.group(1) or with_text.group(3)
        return letter, _unwrap(with_text.group(2) or with_text.group(4))
    return None, text


def _unwrap(answer: str) -> str:
    text = answer.strip().strip("$").strip()
    while True:
        wrapped = _WRAPPERS.match(text)
        if wrapped is None:
            break
        text = wrapped.group(1).strip()
    return text.rstrip(".").strip()


def grade_choice(
    solution_str: str,
    ground_truth: Any,
    options: Mapping[str, str],
    data_source: str = "",
    grading: GradingOptions | None = None,
) -> Grade:
    """Grade one multiple-choice response (see the module docstring for the rules)."""
    grading = grading or GradingOptions()
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str has type {type(solution_str).__name__}: expected str")
    gold = gold_letter(ground_truth, options)
    profile = profile_for(data_source)
    extraction = extract_answer(
        solution_str, profile.tiers(grading.strict), grading.max_tail_chars, grading.max_answer_chars
    )
    answer, method = extraction.answer, extraction.method
    if not grading.strict and (answer is None or method in _FALLBACK_METHODS):
        stated = _last_choice_statement(solution_str[-grading.max_tail_chars :])
        if stated is not None:
            answer, method = stated, "choice_statement"
    if answer is None:
        return Grade(False, "", method)
    formatted = method in profile.strict_formats
    letter, text = read_choice(answer)
    if letter is not None and not letter.isupper():
        # A lower-case letter is an option's text when one reads so (a variable named b), else that letter.
        if any(option.strip() == letter for option in options.values()):
            letter, text = None, letter
        else:
            letter = letter.upper()
    if letter is not None:
        return _graded_letter(letter, text, gold, options, data_source, grading, formatted)
    return _graded_text(text, gold, options, data_source, grading, formatted)


def _graded_letter(
    letter: str, text: str, gold: str, options: Mapping[str, str], source: str, grading: GradingOptions, formatted: bool
) -> Grade:
    if options and letter not in options:
        return Grade(False, letter, "wrong", "not_an_option", formatted)
    if text and options and not _same_value(text, options[letter], source, grading):
        return Grade(False, f"{letter}: {text}"[:100], "wrong", "letter_text_mismatch", formatted)
    correct = letter == gold
    return Grade(correct, letter, "correct" if correct else "wrong", "letter", formatted)


def _graded_text(
    text: str, gold: str, options: Mapping[str, str], source: str, grading: GradingOptions, formatted: bool
) -> Grade:
    matches = [letter for letter, option in options.items() if _same_value(text, option, source, grading)]
    if len(matches) != 1:
        method = "no_option_matches" if not matches else "several_options_match"
        return Grade(False, text[:100], "wrong", method, formatted)
    correct = matches[0] == gold
    return Grade(correct, matches[0], "correct" if correct else "wrong", "option_text", formatted)


def _same_value(answer: str, option: str, source: str, grading: GradingOptions) -> bool:
    """The math grader's verdict on ``answer`` against one option's text (bounded like any math comparison)."""
    if answer.strip() == option.strip():
        return True
    if not option.strip():
        return False
    return grade(f"\\boxed{{{answer}}}", option, source, grading.with_strict(True)).acc


def _last_choice_statement(text: str) -> str | None:
    matches = list(_CHOICE_STATEMENT.finditer(text))
    if not matches:
        return None
    return matches[-1].group(1) or matches[-1].group(2)


# -- verl entry points -------------------------------------------------------------------------------------------
def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """verl's ``custom_reward_function``: multiple-choice rows graded here, every other row by the math grader.

    Returns the math grader's keys (``score``, ``acc``, ``pred``, ``reason``, and ``overlong_penalty`` when on).
    """
    grading = GradingOptions.from_kwargs(kwargs)
    options = options_of(extra_info)
    if options is None:
        result = grade(solution_str, ground_truth, data_source, grading)
    else:
        result = _safe_grade_choice(solution_str, ground_truth, options, data_source, grading)
    return reward_of(result, grading, solution_str, extra_info)


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    num_workers: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """``reward_fns.scoring.compute_score_batch`` for mixed batches: the math rows go to its worker pool, the
    multiple-choice rows are graded here (a letter needs no worker; an option text is compared under the same
    bounded math check)."""
    count = len(solution_strs)
    if extra_infos is not None and len(extra_infos) != count:
        raise ValueError(f"batch lengths differ: {len(extra_infos)} extra_infos for {count} solution_strs")
    extras = list(extra_infos) if extra_infos is not None else [None] * count
    choice_rows = {index: options for index, extra in enumerate(extras) if (options := options_of(extra)) is not None}
    if not choice_rows:
        return math_score_batch(data_sources, solution_strs, ground_truths, extra_infos, num_workers, **kwargs)
    if len(data_sources) != count or len(ground_truths) != count:
        raise ValueError(
            f"batch lengths differ: {len(data_sources)} data_sources, {count} solution_strs, "
            f"{len(ground_truths)} ground_truths"
        )
    grading = GradingOptions.from_kwargs(kwargs)
    math_rows = [index for index in range(count) if index not in choice_rows]
    results: list[dict[str, Any] | None] = [None] * count
    if math_rows:
        graded = math_score_batch(
            [data_sources[i] for i in math_rows],
            [solution_strs[i] for i in math_rows],
            [ground_truths[i] for i in math_rows],
            [extras[i] for i in math_rows],
            num_workers,
            **kwargs,
        )
        for index, result in zip(math_rows, graded):
            results[index] = result
    for index, options in choice_rows.items():
        solution = solution_strs[index]
        choice = _safe_grade_choice(solution, ground_truths[index], options, str(data_sources[index]), grading)
        results[index] = reward_of(choice, grading, solution, extras[index])
    return results  # type: ignore[return-value]


def _safe_grade_choice(
    solution_str: str, ground_truth: Any, options: Mapping[str, str], data_source: str, grading: GradingOptions
) -> Grade:
    """A bad ground truth is the data's fault and raises; anything a model writes costs at most one reward."""
    gold_letter(ground_truth, options)
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str has type {type(solution_str).__name__}: expected str")
    try:
        return grade_choice(solution_str, ground_truth, options, data_source, grading)
    except Exception:  # a grader bug must cost one reward, not the training run; it is logged, not hidden
        logger.warning("reward_fns: grader error on data_source=%r", data_source, exc_info=True)
        return Grade(False, "", "grader_error")
