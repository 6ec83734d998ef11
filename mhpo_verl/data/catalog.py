"""The datasets this project converts, and how a problem and its answer are read out of each one's records.

A :class:`DatasetSpec` is data: where the dataset lives on the Hub, which fields hold the problem, the answer and the
metadata, and how many rows a complete split has. The readers are lenient about layout, because the same benchmark
is mirrored under many names with different column spellings: a record may carry the problem in any of the spec's
question fields, or already be a verl row (``prompt`` messages plus ``reward_model.ground_truth``), as the released
DAPO-Math-17k parquet is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhpo_verl.data.answers import answer_from_field, answer_text, gsm8k_final_answer, last_boxed
from mhpo_verl.data.schema import DEFAULT_PROMPT_TEMPLATE, QUESTION_PLACEHOLDER

DAPO_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{question}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
"""The instruction wrapped around every problem of the released DAPO-Math-17k; removed so our template applies."""

KNOWN_PROMPT_TEMPLATES = (DAPO_PROMPT_TEMPLATE, DEFAULT_PROMPT_TEMPLATE)

DEFAULT_DATA_DIR = "~/data/mhpo"
"""Where ``python -m mhpo_verl data`` writes and the training recipes read: ``<data dir>/<dataset>/<split>.parquet``."""


def dataset_path(data_dir: str | Path, name: str, split: str) -> Path:
    """The parquet file of one converted split (not expanded, so ``~`` and ``$VARS`` reach the config unchanged)."""
    return Path(data_dir) / name / f"{split}.parquet"


@dataclass(frozen=True)
class Problem:
    """What a converter keeps of one record: the bare problem, its reference answer and string metadata."""

    question: str
    answer: str
    extra: dict[str, str] = field(default_factory=dict)


AnswerReader = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class DatasetSpec:
    """One convertible dataset. ``name`` is also the ``data_source`` of its rows (the grader dispatch key).

    ``hub_splits`` maps our split names (``train``/``test``) to the Hub's; ``expected_rows`` is the size of a complete
    split, used only to warn when a file looks truncated or is the wrong file.
    """

    name: str
    description: str
    role: str  # "train" or "benchmark"
    hub_id: str
    hub_config: str | None
    hub_splits: Mapping[str, str]
    question_fields: tuple[str, ...]
    answer_fields: tuple[str, ...] = ("answer", "Answer", "final_answer", "ground_truth")
    read_answer: AnswerReader | None = None
    answer_hint: str = ""
    solution_fields: tuple[str, ...] = ("solution", "Solution")
    id_fields: tuple[str, ...] = ("id", "unique_id", "ID", "problem_idx", "idx")
    subject_fields: tuple[str, ...] = ("subject", "type", "problem_type")
    expected_rows: Mapping[str, int] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.hub_splits)


def _gsm8k_answer(record: Mapping[str, Any]) -> str | None:
    return gsm8k_final_answer(record.get("answer"))


def _math_answer(record: Mapping[str, Any]) -> str | None:
    # MATH-500 ships an `answer` column; MATH-lighteval only the worked solution, whose last box is the answer.
    return answer_from_field(record.get("answer")) or last_boxed(record.get("solution"))


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="gsm8k",
            description="GSM8K grade-school word problems (train 7,473 / test 1,319)",
            role="train",
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_splits={"train": "train", "test": "test"},
            question_fields=("question", "problem"),
            read_answer=_gsm8k_answer,
            answer_hint="an `answer` field ending in '#### <number>'",
            solution_fields=("answer",),
            expected_rows={"train": 7473, "test": 1319},
        ),
        DatasetSpec(
            name="math",
            description="MATH competition problems, Hendrycks et al. (train 7,500 / test 5,000)",
            role="train",
            hub_id="DigitalLearningGmbH/MATH-lighteval",
            hub_config=None,
            hub_splits={"train": "train", "test": "test"},
            question_fields=("problem", "question"),
            read_answer=_math_answer,
            answer_hint="an `answer` field, or a `solution` with a \\boxed{} answer",
            expected_rows={"train": 7500, "test": 5000},
        ),
        DatasetSpec(
            name="dapo_math_17k",
            description="DAPO-Math-17k integer-answer problems; the release repeats each prompt, duplicates removed",
            role="train",
            hub_id="BytedTsinghua-SIA/DAPO-Math-17k",
            hub_config=None,
            hub_splits={"train": "train"},
            question_fields=("problem", "question"),
            answer_fields=("answer", "solution", "ground_truth"),
            solution_fields=(),
        ),
        DatasetSpec(
            name="math500",
            description="MATH500, the 500-problem MATH test subset of Lightman et al.",
            role="benchmark",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            hub_splits={"test": "test"},
            question_fields=("problem", "question"),
            read_answer=_math_answer,
            answer_hint="an `answer` field, or a `solution` with a \\boxed{} answer",
            expected_rows={"test": 500},
        ),
        DatasetSpec(
            name="aime24",
            description="AIME 2024 (I and II), 30 integer-answer problems",
            role="benchmark",
            hub_id="HuggingFaceH4/aime_2024",
            hub_config=None,
            hub_splits={"test": "train"},
            question_fields=("problem", "Problem", "question"),
            expected_rows={"test": 30},
        ),
        DatasetSpec(
            name="aime25",
            description="AIME 2025 (I and II), 30 integer-answer problems",
            role="benchmark",
            hub_id="math-ai/aime25",
            hub_config=None,
            hub_splits={"test": "test"},
            question_fields=("problem", "Problem", "question"),
            expected_rows={"test": 30},
        ),
        DatasetSpec(
            name="amc23",
            description="AMC 2023, the 40-problem set used by Qwen2.5-Math's evaluation",
            role="benchmark",
            hub_id="math-ai/amc23",
            hub_config=None,
            hub_splits={"test": "test"},
            question_fields=("question", "problem"),
            expected_rows={"test": 40},
        ),
        DatasetSpec(
            name="hmmt25",
            description="HMMT February 2025, 30 problems (MathArena)",
            role="benchmark",
            hub_id="MathArena/hmmt_feb_2025",
            hub_config=None,
            hub_splits={"test": "train"},
            question_fields=("problem", "question"),
            expected_rows={"test": 30},
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The spec called ``name``; a :class:`KeyError` naming the known datasets otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def read_problem(spec: DatasetSpec, record: Mapping[str, Any]) -> Problem | str:
    """The problem in ``record``, or a short reason why the record is malformed."""
    question = question_text(record, spec.question_fields)
    if question is None:
        fields = ", ".join(spec.question_fields)
        return f"no problem text: none of [{fields}] nor a user message in `prompt` holds a non-empty string"
    answer = _answer(spec, record)
    if answer is None:
        expected = spec.answer_hint or f"one of the fields {list(spec.answer_fields)}"
        return f"no usable answer: {spec.name} needs {expected} (or reward_model.ground_truth)"
    return Problem(question=question, answer=answer, extra=_metadata(spec, record))


def strip_template(content: str, template: str) -> str | None:
    """The ``{question}`` part of ``content`` if it was made from ``template`` (surrounding whitespace ignored)."""
    prefix, suffix = (part.strip() for part in template.split(QUESTION_PLACEHOLDER))
    text = content.strip()
    if text.startswith(prefix) and text.endswith(suffix) and len(text) >= len(prefix) + len(suffix):
        return text[len(prefix) : len(text) - len(suffix)].strip() or None
    return None


def question_text(record: Mapping[str, Any], fields: tuple[str, ...] = ("problem", "question")) -> str | None:
    """The bare problem of ``record``: the first non-empty of ``fields``, else the last user message of a verl
    ``prompt`` with any known instruction template removed."""
    for name in fields:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        return prompt.strip() or None
    if isinstance(prompt, list):
        user_turns = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if user_turns and isinstance(user_turns[-1], str) and user_turns[-1].strip():
            content = user_turns[-1]
            for template in KNOWN_PROMPT_TEMPLATES:
                bare = strip_template(content, template)
                if bare:
                    return bare
            return content.strip()
    return None


def _answer(spec: DatasetSpec, record: Mapping[str, Any]) -> str | None:
    if spec.read_answer is not None:
        answer = spec.read_answer(record)
        if answer is not None:
            return answer
    else:
        for name in spec.answer_fields:
            answer = answer_from_field(record.get(name))
            if answer is not None:
                return answer
    reward_model = record.get("reward_model")
    if isinstance(reward_model, Mapping):
        return answer_text(reward_model.get("ground_truth"))
    return None


def _metadata(spec: DatasetSpec, record: Mapping[str, Any]) -> dict[str, str]:
    extra = {
        "id": _first_text(record, spec.id_fields),
        "subject": _first_text(record, spec.subject_fields),
        "level": _first_text(record, ("level", "Level", "difficulty")),
        "reference_solution": _first_text(record, spec.solution_fields),
    }
    if not extra["id"] and isinstance(record.get("extra_info"), Mapping):
        extra["id"] = answer_text(record["extra_info"].get("index")) or ""
    return extra


def _first_text(record: Mapping[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = record.get(name)
        if isinstance(value, list):  # e.g. MathArena's problem_type: ["Algebra", "Geometry"]
            value = ", ".join(str(item) for item in value if item is not None)
        text = answer_text(value)
        if text:
            return text
    return ""
