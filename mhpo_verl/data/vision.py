"""Vision-language math datasets in verl's multimodal RL parquet: Geometry3K for training, MathVista (testmini),
MathVerse (testmini) and MathVision (test) for evaluation.

A row is the text schema's row (:mod:`mhpo_verl.data.schema`) plus what verl's Geometry3K pipeline reads:

    images        list[{bytes: binary, path: str}]  embedded, decodable images, in prompt order
    prompt        the user message holds one ``<image>`` placeholder per image (verl's ``RLHFDataset`` swaps each
                  for the image when it builds the processor's messages)
    extra_info    the text fields, and ``question_type`` (``multiple_choice`` / ``free_form``), ``choices`` (the
                  option texts in order), ``options`` (letter -> option text, as ``[{letter, text}]``),
                  ``answer_letter`` and ``answer_text`` (the correct option's letter and text), ``variant``
                  (MathVerse's problem version)

A multiple-choice row's ground truth is the correct option's letter; ``reward_fns`` grades a response by letter or
by option text from ``extra_info.options``. Every VL file has the same Arrow schema (:data:`VISION_ARROW_SCHEMA`), so
the VL sets concatenate in one ``data.val_files`` list; they do not concatenate with text-only files, whose rows
have no ``images`` column.

Accounting is the text converters' (:class:`~mhpo_verl.data.convert.ConversionReport`): each input row is written,
or listed as malformed (missing image, undecodable image, no answer, an answer that is no option, placeholders that
do not match the images), duplicate (same question and same images) or overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from mhpo_verl.data.answers import answer_from_field, answer_text
from mhpo_verl.data.catalog import DATASETS, DatasetSpec, _first_text, question_text
from mhpo_verl.data.convert import ConversionReport, Duplicate, Malformed
from mhpo_verl.data.images import EmbeddedImage, ImageProblem, embedded_image
from mhpo_verl.data.readers import Source, UnreadableRecord
from mhpo_verl.data.schema import ARROW_SCHEMA, DEFAULT_PROMPT_TEMPLATE, EXTRA_INFO_FIELDS, check_template, make_row

IMAGE_PLACEHOLDER = "<image>"
MULTIPLE_CHOICE, FREE_FORM = "multiple_choice", "free_form"

CHOICE_PROMPT_TEMPLATE = (
    "{question}\n\nPlease reason step by step, and put the letter of the correct option within \\boxed{}."
)
"""Multiple-choice questions (their options listed after the question) ask for the option's letter in a box."""

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

VISION_EXTRA_INFO_FIELDS: dict[str, pa.DataType] = {
    "question_type": pa.string(),
    "choices": pa.list_(pa.string()),
    "options": pa.list_(pa.struct([pa.field("letter", pa.string()), pa.field("text", pa.string())])),
    "answer_letter": pa.string(),
    "answer_text": pa.string(),
    "variant": pa.string(),
}

IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
"""Hugging Face's ``Image`` feature as parquet stores it; ``datasets`` hands it to verl as ``{bytes, path}`` dicts."""

VISION_ARROW_SCHEMA = pa.schema(
    [
        *(ARROW_SCHEMA.field(name) for name in ("data_source", "prompt", "ability", "reward_model")),
        pa.field("images", pa.list_(IMAGE_STRUCT), nullable=False),
        pa.field(
            "extra_info",
            pa.struct(
                [pa.field(name, kind) for name, kind in {**EXTRA_INFO_FIELDS, **VISION_EXTRA_INFO_FIELDS}.items()]
            ),
        ),
    ]
)


@dataclass(frozen=True)
class VisionDatasetSpec(DatasetSpec):
    """A VL dataset: where its images, options and question type live (on top of the text spec's fields).

    ``choices_fields``: a list of option texts; when a dataset writes its options into the question instead
    (MathVerse: ``Choices:\\nA:...``), ``options_in_question`` parses them from there. ``question_type_field`` values
    containing ``choice`` mark multiple choice; without the field, a row with options is multiple choice.
    ``answer_is_letter``: the answer column holds the option's letter (MathVerse, MathVision), not its text
    (MathVista).
    """

    image_fields: tuple[str, ...] = ("images", "decoded_image", "image")
    choices_fields: tuple[str, ...] = ("choices", "options")
    question_type_field: str = "question_type"
    answer_is_letter: bool = False
    options_in_question: bool = False
    variant_fields: tuple[str, ...] = ()


VISION_DATASETS: dict[str, VisionDatasetSpec] = {
    spec.name: spec
    for spec in (
        VisionDatasetSpec(
            name="geometry3k",
            description="Geometry3K diagrams with free-form answers, as verl's Qwen2.5-VL example trains on "
            "(train 2,101 / test 601)",
            role="train",
            hub_id="hiyouga/geometry3k",
            hub_config=None,
            hub_splits={"train": "train", "test": "test"},
            question_fields=("problem", "question"),
            expected_rows={"train": 2101, "test": 601},
        ),
        VisionDatasetSpec(
            name="mathvista",
            description="MathVista testmini, 1,000 visual math problems (multiple choice and free form)",
            role="benchmark",
            hub_id="AI4Math/MathVista",
            hub_config=None,
            hub_splits={"testmini": "testmini"},
            question_fields=("question",),
            id_fields=("pid", "id"),
            image_fields=("decoded_image", "image"),
            expected_rows={"testmini": 1000},
        ),
        VisionDatasetSpec(
            name="mathverse",
            description="MathVerse testmini, 3,940 rows: 788 problems in five versions, from text-dominant to "
            "vision-only",
            role="benchmark",
            hub_id="AI4Math/MathVerse",
            hub_config="testmini",
            hub_splits={"testmini": "testmini"},
            question_fields=("question",),
            id_fields=("sample_index", "id"),
            image_fields=("image",),
            answer_is_letter=True,
            options_in_question=True,
            variant_fields=("problem_version",),
            expected_rows={"testmini": 3940},
        ),
        VisionDatasetSpec(
            name="mathvision",
            description="MATH-Vision test, 3,040 competition problems with diagrams (multiple choice and free form)",
            role="benchmark",
            hub_id="MathLLMs/MathVision",
            hub_config=None,
            hub_splits={"test": "test"},
            question_fields=("question",),
            image_fields=("decoded_image", "image"),
            answer_is_letter=True,
            expected_rows={"test": 3040},
        ),
    )
}


ALL_DATASETS: dict[str, DatasetSpec] = {**DATASETS, **VISION_DATASETS}
"""Text and VL datasets by name: what ``python -m mhpo_verl data`` converts and the recipes name."""


def get_any_spec(name: str) -> DatasetSpec:
    """The text or VL spec called ``name``; a :class:`KeyError` naming the known datasets otherwise."""
    try:
        return ALL_DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(ALL_DATASETS)}") from None


@dataclass(frozen=True)
class VisionProblem:
    question: str
    """With one ``<image>`` placeholder per image, and the options listed when they are not already in it."""
    answer: str
    images: tuple[EmbeddedImage, ...]
    question_type: str
    options: tuple[tuple[str, str], ...] = ()
    answer_letter: str = ""
    answer_text: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        """Same question and same image bytes: Geometry3K asks "Find x." of hundreds of different diagrams."""
        return " ".join(self.question.split()) + "|" + ",".join(image.digest for image in self.images)


def read_vision_problem(
    spec: VisionDatasetSpec, record: Mapping[str, Any], image_root: Path | None
) -> VisionProblem | str:
    """The problem in ``record``, or the reason it cannot be converted."""
    question = question_text(record, spec.question_fields)
    if question is None:
        return f"no problem text: none of [{', '.join(spec.question_fields)}] holds a non-empty string"
    images = _images(spec, record, image_root)
    if isinstance(images, str):
        return images
    question = _with_placeholders(question, len(images))
    if question is None:
        return (
            f"the question's image references do not match its {len(images)} image(s): expected one "
            f"{IMAGE_PLACEHOLDER} (or <image1>, <image2>, ...) per image, or none"
        )
    raw_answer = _first_answer(spec, record)
    if raw_answer is None:
        return f"no usable answer: {spec.name} needs one of the fields {list(spec.answer_fields)}"
    options, listed_in_question = _options(spec, record, question)
    extra = _metadata(spec, record)
    if not _is_multiple_choice(spec, record, options):
        return VisionProblem(question, raw_answer, images, FREE_FORM, extra=extra)
    try:
        letter = _correct_letter(spec, raw_answer, options)
    except _NoCorrectOption as error:
        return f"no usable answer: {error}"
    shown = question if listed_in_question or not options else f"{question}\n\n{format_options(options)}"
    return VisionProblem(
        question=shown,
        answer=letter,
        images=images,
        question_type=MULTIPLE_CHOICE,
        options=options,
        answer_letter=letter,
        answer_text=dict(options).get(letter, ""),
        extra=extra,
    )


def format_options(options: Sequence[tuple[str, str]]) -> str:
    """``Choices:`` then one ``(A) text`` line per option."""
    return "Choices:\n" + "\n".join(f"({letter}) {text}" for letter, text in options)


def _images(spec: VisionDatasetSpec, record: Mapping[str, Any], image_root: Path | None):
    value = next((record[name] for name in spec.image_fields if _present(record.get(name))), None)
    if value is None:
        return f"missing image: none of the fields {list(spec.image_fields)} holds an image"
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray" else [value]
    if not values:
        return "missing image: the image list is empty"
    try:
        return tuple(embedded_image(item, image_root) for item in values)
    except ImageProblem as problem:
        return str(problem)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value) > 0
    return True


_NUMBERED_REFERENCE = re.compile(r"<image\d+>")


def _with_placeholders(question: str, n_images: int) -> str | None:
    """``question`` with exactly ``n_images`` ``<image>`` placeholders: the dataset's own (``<image>`` or
    MathVision's ``<image1>``) where it has them, else all of them in front of the question, as verl's Geometry3K
    rows have them. ``None`` when the question references another number of images."""
    question = _NUMBERED_REFERENCE.sub(IMAGE_PLACEHOLDER, question)
    found = question.count(IMAGE_PLACEHOLDER)
    if found == n_images:
        return question
    if found == 0:
        return IMAGE_PLACEHOLDER * n_images + question
    return None


def _first_answer(spec: VisionDatasetSpec, record: Mapping[str, Any]) -> str | None:
    for name in spec.answer_fields:
        answer = answer_from_field(record.get(name))
        if answer is not None:
            return answer
    reward_model = record.get("reward_model")
    if isinstance(reward_model, Mapping):
        return answer_text(reward_model.get("ground_truth"))
    return None


_CHOICES_HEADER = re.compile(r"(?:^|\n)\s*(?:Choices|Options)\s*:\s*\n", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\)?\s*[:.)]?\s+(.+?)\s*$|^\s*\(?([A-Z])\)?\s*[:.)]\s*(.+?)\s*$")


def _options(
    spec: VisionDatasetSpec, record: Mapping[str, Any], question: str
) -> tuple[tuple[tuple[str, str], ...], bool]:
    """``((letter, text), ...)`` and whether the question text already lists them."""
    for name in spec.choices_fields:
        value = record.get(name)
        if value is None or isinstance(value, str):
            continue
        texts = [answer_text(item) for item in value]
        if texts and all(texts):
            if len(texts) > len(OPTION_LETTERS):
                continue
            return tuple(zip(OPTION_LETTERS, texts)), False
    if spec.options_in_question:
        parsed = options_from_text(question)
        if parsed:
            return parsed, True
    return (), False


def options_from_text(question: str) -> tuple[tuple[str, str], ...]:
    """Options written after a ``Choices:`` line, one per line as ``A:3``, ``A. 3``, ``(A) 3`` (consecutive
    letters from A; anything else ends the list)."""
    header = _CHOICES_HEADER.search(question)
    if header is None:
        return ()
    options = []
    for line in question[header.end() :].splitlines():
        match = _OPTION_LINE.match(line)
        if match is None:
            break
        letter, text = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        if letter != OPTION_LETTERS[len(options)]:
            break
        options.append((letter, text))
    return tuple(options)


def _is_multiple_choice(spec: VisionDatasetSpec, record: Mapping[str, Any], options: tuple) -> bool:
    kind = record.get(spec.question_type_field)
    if isinstance(kind, str) and kind.strip():
        return "choice" in kind.lower()
    return bool(options)


_LETTER_ANSWER = re.compile(r"^\(?([A-Z])\)?(?:\s*[:.)]\s*.*)?$", re.DOTALL)


class _NoCorrectOption(ValueError):
    pass


def _correct_letter(spec: VisionDatasetSpec, answer: str, options: tuple[tuple[str, str], ...]) -> str:
    """The correct option's letter, from a letter answer or from the text of one option."""
    letters = [letter for letter, _ in options]
    if spec.answer_is_letter or not options:
        match = _LETTER_ANSWER.match(answer.strip())
        if match is None:
            raise _NoCorrectOption(f"{answer!r} is not an option letter")
        letter = match.group(1)
        if options and letter not in letters:
            raise _NoCorrectOption(f"{letter!r} is not one of the options {letters}")
        return letter
    matches = [letter for letter, text in options if text.strip() == answer.strip()]
    if len(matches) != 1:
        found = "matches no" if not matches else f"matches {len(matches)}"
        raise _NoCorrectOption(f"answer {answer!r} {found} option among {[text for _, text in options]}")
    return matches[0]


def _metadata(spec: VisionDatasetSpec, record: Mapping[str, Any]) -> dict[str, str]:
    extra = {
        "id": _first_text(record, spec.id_fields),
        "subject": _first_text(record, spec.subject_fields),
        "level": _first_text(record, ("level", "Level", "difficulty")),
        "reference_solution": _first_text(record, spec.solution_fields),
    }
    if spec.variant_fields:
        extra["variant"] = _first_text(record, spec.variant_fields)
    return extra


def convert_vision_records(
    spec: VisionDatasetSpec,
    source: Source,
    *,
    split: str,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    choice_template: str = CHOICE_PROMPT_TEMPLATE,
    image_root: Path | None = None,
    exclude_keys: Iterable[str] = (),
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Rows for verl and the report that accounts for every record of ``source`` (as ``convert_records``).

    ``image_root``: where relative image paths are read from (a release's folder holding ``images/``).
    ``exclude_keys``: :attr:`VisionProblem.dedup_key` values to leave out (see :func:`keys_in_parquet`).
    """
    check_template(template)
    check_template(choice_template)
    excluded = set(exclude_keys)
    report = ConversionReport(dataset=spec.name, split=split, source=source.label)
    kept: dict[str, tuple[int, str]] = {}
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=source.total, desc=f"{spec.name}/{split}", unit=" rows", disable=not progress, mininterval=1.0)
    with bar:
        for source_index, record in source.records:
            bar.update()
            report.rows_read += 1
            if isinstance(record, UnreadableRecord):
                report.malformed.append(Malformed(source_index, record.reason))
                continue
            problem = read_vision_problem(spec, record, image_root)
            if isinstance(problem, str):
                report.malformed.append(Malformed(source_index, problem))
                continue
            key = problem.dedup_key
            if key in excluded:
                report.overlap.append(source_index)
                continue
            if key in kept:
                kept_index, kept_answer = kept[key]
                report.duplicates.append(Duplicate(source_index, kept_index, problem.answer, kept_answer))
                continue
            kept[key] = (source_index, problem.answer)
            chosen = choice_template if problem.question_type == MULTIPLE_CHOICE else template
            rows.append(vision_row(spec.name, problem, split, len(rows), source_index, chosen, source.label))
    report.rows_written = len(rows)
    expected = spec.expected_rows.get(split)
    if expected is not None and report.rows_written != expected:
        report.warnings.append(
            f"{spec.name}/{split} has {report.rows_written} rows after cleaning, a complete split has {expected}: "
            "check that the input is the full, right file"
        )
    return rows, report


def vision_row(
    data_source: str,
    problem: VisionProblem,
    split: str,
    index: int,
    source_index: int,
    template: str,
    origin: str,
) -> dict[str, Any]:
    """One multimodal verl row."""
    text_extra = {key: value for key, value in problem.extra.items() if key in EXTRA_INFO_FIELDS}
    row = make_row(
        data_source=data_source,
        question=problem.question,
        ground_truth=problem.answer,
        split=split,
        index=index,
        source_index=source_index,
        template=template,
        extra={**text_extra, "origin": origin},
    )
    row["images"] = [image.as_row() for image in problem.images]
    row["extra_info"].update(
        question_type=problem.question_type,
        choices=[text for _, text in problem.options],
        options=[{"letter": letter, "text": text} for letter, text in problem.options],
        answer_letter=problem.answer_letter,
        answer_text=problem.answer_text,
        variant=problem.extra.get("variant", ""),
    )
    return row


def vision_rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VISION_ARROW_SCHEMA)


def keys_in_parquet(paths: Iterable[str | Path]) -> set[str]:
    """The :attr:`VisionProblem.dedup_key` of every row of VL parquet files (for ``--exclude``)."""
    import hashlib

    import pyarrow.parquet as pq

    keys: set[str] = set()
    for path in paths:
        table = pq.read_table(Path(path).expanduser())
        if "images" not in table.column_names:
            raise ValueError(f"{path} has no images column: --exclude for a VL dataset takes VL parquet files")
        for row in table.select(["prompt", "images", "extra_info"]).to_pylist():
            question = row["extra_info"].get("question") or question_text(row) or ""
            digests = ",".join(hashlib.sha256(image["bytes"]).hexdigest()[:16] for image in row["images"])
            keys.add(" ".join(question.split()) + "|" + digests)
    return keys
