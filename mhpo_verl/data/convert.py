"""Turn the records of one dataset split into verl rows, accounting for every input row.

Each input row ends up in exactly one place: written, malformed (with its index and the reason), a duplicate of an
earlier row (with the index of the row kept), or an overlap with an evaluation set the caller asked to exclude. The
:class:`ConversionReport` holds all four lists, so ``rows_read == rows_written + malformed + duplicates + overlap``
always holds and a reader of the report can find any row that was not written.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
from tqdm import tqdm

from mhpo_verl.data.catalog import DatasetSpec, Problem, question_text, read_problem
from mhpo_verl.data.readers import Source, UnreadableRecord
from mhpo_verl.data.schema import ARROW_SCHEMA, DEFAULT_PROMPT_TEMPLATE, check_template, make_row

SHOWN_PROBLEMS = 10
"""Malformed rows and conflicts printed to the terminal; the report file lists all of them."""


@dataclass(frozen=True)
class Malformed:
    source_index: int
    reason: str


@dataclass(frozen=True)
class Duplicate:
    source_index: int
    kept_index: int
    answer: str
    kept_answer: str

    @property
    def conflicting(self) -> bool:
        """Same problem text, different reference answer: one of the two answers is wrong."""
        return self.answer != self.kept_answer


@dataclass
class ConversionReport:
    dataset: str
    split: str
    source: str
    rows_read: int = 0
    rows_written: int = 0
    malformed: list[Malformed] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    overlap: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def conflicting_duplicates(self) -> list[Duplicate]:
        return [duplicate for duplicate in self.duplicates if duplicate.conflicting]

    def accounted(self) -> bool:
        """True when every row read is written or listed as malformed, duplicate or overlap."""
        removed = len(self.malformed) + len(self.duplicates) + len(self.overlap)
        return self.rows_read == self.rows_written + removed

    def summary(self) -> str:
        line = (
            f"{self.dataset}/{self.split}: read {self.rows_read} rows from {self.source}, wrote {self.rows_written}"
            f" (malformed {len(self.malformed)}, duplicates {len(self.duplicates)}"
            f" [{len(self.conflicting_duplicates)} with a different answer], overlap with excluded sets"
            f" {len(self.overlap)})"
        )
        return line + (f" -> {self.output}" if self.output else "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["conflicting_duplicates"] = len(self.conflicting_duplicates)
        return data


def convert_records(
    spec: DatasetSpec,
    source: Source,
    *,
    split: str,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    exclude_questions: Iterable[str] = (),
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Rows for verl and the report that accounts for every record of ``source``.

    Duplicates are found on the problem text with whitespace runs collapsed; the first occurrence is kept.
    ``exclude_questions`` (compared the same way) removes training problems that also appear in an evaluation set.
    """
    check_template(template)
    excluded = {_dedup_key(question) for question in exclude_questions}
    report = ConversionReport(dataset=spec.name, split=split, source=source.label)
    kept: dict[str, tuple[int, str]] = {}
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=source.total, desc=f"{spec.name}/{split}", unit=" rows", disable=not progress, mininterval=1.0)
    with bar:
        for source_index, record in source.records:
            bar.update()
            report.rows_read += 1
            problem = _problem(spec, record)
            if isinstance(problem, str):
                report.malformed.append(Malformed(source_index, problem))
                continue
            key = _dedup_key(problem.question)
            if key in excluded:
                report.overlap.append(source_index)
                continue
            if key in kept:
                kept_index, kept_answer = kept[key]
                report.duplicates.append(Duplicate(source_index, kept_index, problem.answer, kept_answer))
                continue
            kept[key] = (source_index, problem.answer)
            rows.append(
                make_row(
                    data_source=spec.name,
                    question=problem.question,
                    ground_truth=problem.answer,
                    split=split,
                    index=len(rows),
                    source_index=source_index,
                    template=template,
                    extra={**problem.extra, "origin": source.label},
                )
            )
    report.rows_written = len(rows)
    expected = spec.expected_rows.get(split)
    if expected is not None and report.rows_written != expected:
        report.warnings.append(
            f"{spec.name}/{split} has {report.rows_written} rows after cleaning, a complete split has {expected}: "
            "check that the input is the full, right file"
        )
    return rows, report


def _problem(spec: DatasetSpec, record: Mapping[str, Any] | UnreadableRecord) -> Problem | str:
    if isinstance(record, UnreadableRecord):
        return record.reason
    return read_problem(spec, record)


def _dedup_key(question: str) -> str:
    return " ".join(question.split())


def questions_in_parquet(paths: Iterable[str | Path]) -> set[str]:
    """Problem texts of verl parquet files (``extra_info.question`` when present, else the user message)."""
    import pyarrow.parquet as pq

    questions: set[str] = set()
    for path in paths:
        for row in pq.read_table(Path(path).expanduser()).to_pylist():
            extra_info = row.get("extra_info")
            stored = extra_info.get("question") if isinstance(extra_info, Mapping) else None
            question = stored if isinstance(stored, str) and stored.strip() else question_text(row)
            if question:
                questions.add(question)
    return questions


def write_parquet(rows: list[dict[str, Any]], path: str | Path, schema: pa.Schema = ARROW_SCHEMA) -> Path:
    """Write ``rows`` atomically (a temporary file renamed into place), so a crash never leaves half a file.

    ``schema``: the text schema, or :data:`mhpo_verl.data.vision.VISION_ARROW_SCHEMA` for rows with images."""
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_report(report: ConversionReport, path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def print_problems(report: ConversionReport, stream: TextIO | None = None) -> None:
    """Name the malformed rows and conflicting duplicates on ``stream`` (default: stderr), the first few of each."""
    stream = stream or sys.stderr
    for malformed in report.malformed[:SHOWN_PROBLEMS]:
        print(f"  malformed row {malformed.source_index}: {malformed.reason}", file=stream)
    _print_more(len(report.malformed), "malformed rows", stream)
    conflicts = report.conflicting_duplicates
    for duplicate in conflicts[:SHOWN_PROBLEMS]:
        print(
            f"  row {duplicate.source_index} repeats row {duplicate.kept_index} with answer {duplicate.answer!r} "
            f"instead of {duplicate.kept_answer!r}; kept the first",
            file=stream,
        )
    _print_more(len(conflicts), "conflicting duplicates", stream)
    for warning in report.warnings:
        print(f"  warning: {warning}", file=stream)


def _print_more(count: int, what: str, stream: TextIO) -> None:
    if count > SHOWN_PROBLEMS:
        print(f"  ... {count - SHOWN_PROBLEMS} more {what}, all listed in the report file", file=stream)
