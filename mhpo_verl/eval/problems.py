"""Benchmark problems read from verl-format parquet (or JSONL) files.

Each row carries ``data_source`` (which benchmark), ``prompt`` (a list of ``{role, content}`` chat messages),
``reward_model.ground_truth`` and optionally ``extra_info.index`` (the problem id; the row number otherwise).
Every problem is checked here, once, so that a bad file fails before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhpo_verl.eval.benchmarks import resolve_benchmark
from mhpo_verl.eval.errors import EvalInputError

REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
FOLDER_SUFFIXES = (".parquet", ".jsonl")
"""What a folder given as --data contributes: not .json, which the data step uses for its conversion reports."""


@dataclass(frozen=True, eq=False)  # holds dicts: identity, not value, equality
class Problem:
    benchmark: str
    data_source: str
    """As written in the file: the reward function dispatches on it."""
    problem_id: int | str
    messages: tuple[dict[str, str], ...]
    ground_truth: Any
    extra_info: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    """``file:row`` for error messages."""
    images: tuple[bytes, ...] = ()
    """Encoded images of a VL row (its ``images`` column), one per ``<image>`` placeholder in the messages."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.benchmark, str(self.problem_id))

    @property
    def fingerprint(self) -> str:
        """Hash of what the model sees and what it is graded against: detects a data file changed under a run."""
        content: dict[str, Any] = {"messages": self.messages, "ground_truth": self.ground_truth}
        if self.images:  # text rows keep the fingerprint they always had, so their runs still resume
            content["images"] = [hashlib.sha256(image).hexdigest() for image in self.images]
        payload = json.dumps(content, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def to_python(value: Any) -> Any:
    """Plain Python (JSON-ready) values from what pandas/pyarrow hand back (numpy arrays and scalars)."""
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [to_python(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        return value.item()
    return value


def expand_data_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for the parquet/JSONL files directly inside it, in name order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in FOLDER_SUFFIXES)
            if not found:
                raise EvalInputError(f"data folder {str(path)!r} holds no {'/'.join(FOLDER_SUFFIXES)} files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise EvalInputError(f"data file {str(path)!r} does not exist")
    return files


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=path.suffix == ".jsonl")
    else:
        raise EvalInputError(f"data file {str(path)!r}: expected a {'/'.join(DATA_SUFFIXES)} file")
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise EvalInputError(
            f"data file {str(path)!r} lacks column(s) {missing}; expected verl's schema with columns "
            f"{list(REQUIRED_COLUMNS)} (+ optional 'extra_info'), found {list(frame.columns)}"
        )
    return [to_python(row) for row in frame.to_dict(orient="records")]


def _messages(prompt: Any, source: str) -> tuple[dict[str, str], ...]:
    if isinstance(prompt, str):  # a bare question: treat it as the one user turn
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise EvalInputError(f"{source}: 'prompt' must be a non-empty list of {{role, content}} messages, "
                             f"got {prompt!r}")
    messages = []
    for message in prompt:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise EvalInputError(f"{source}: prompt message {message!r} lacks a string 'role'")
        if not isinstance(message.get("content"), str):
            raise EvalInputError(f"{source}: prompt message {message!r} lacks a string 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def _problem_from_row(row: dict[str, Any], row_number: int, path: Path, allow_unknown: bool) -> Problem:
    source = f"{path}:row {row_number}"
    data_source = row["data_source"]
    if not isinstance(data_source, str) or not data_source.strip():
        raise EvalInputError(f"{source}: 'data_source' must be a non-empty string, got {data_source!r}")
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") in (None, "", []):
        raise EvalInputError(
            f"{source}: 'reward_model' must be a dict with a non-empty 'ground_truth', got {reward_model!r}"
        )
    extra_info = row.get("extra_info")
    extra_info = extra_info if isinstance(extra_info, dict) else {}
    problem_id = extra_info.get("index")
    if isinstance(problem_id, float):  # pandas turns an int column with gaps into floats, gaps into NaN
        problem_id = int(problem_id) if problem_id.is_integer() else None
    if problem_id is None:
        problem_id = row_number
    messages = _messages(row["prompt"], source)
    images = _images(row.get("images"), messages, source)
    return Problem(
        benchmark=resolve_benchmark(data_source, allow_unknown),
        data_source=data_source,
        problem_id=problem_id,
        messages=messages,
        ground_truth=reward_model["ground_truth"],
        extra_info=extra_info,
        source=source,
        images=images,
    )


IMAGE_PLACEHOLDER = "<image>"


def _images(column: Any, messages: tuple[dict[str, str], ...], source: str) -> tuple[bytes, ...]:
    """A VL row's embedded images (verl's ``images`` column: ``[{bytes, path}]``), checked against the prompt's
    ``<image>`` placeholders; ``()`` for a text row."""
    placeholders = sum(message["content"].count(IMAGE_PLACEHOLDER) for message in messages)
    items = [] if column is None or (isinstance(column, float) and column != column) else column  # NaN: no column
    if not isinstance(items, list):
        raise EvalInputError(f"{source}: 'images' must be a list of {{bytes, path}} images, got {type(items).__name__}")
    images = []
    for number, item in enumerate(items):
        data = item.get("bytes") if isinstance(item, dict) else item
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise EvalInputError(
                f"{source}: image {number} has no embedded bytes (convert the data with `python -m mhpo_verl data "
                "convert`, which embeds every image)"
            )
        images.append(bytes(data))
    if placeholders != len(images):
        raise EvalInputError(
            f"{source}: the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) for {len(images)} image(s); "
            "expected one per image"
        )
    return tuple(images)


def load_problems(
    paths: Iterable[str | Path], allow_unknown_benchmarks: bool = False, limit: int | None = None
) -> list[Problem]:
    """All problems of the given files, in file then row order; ``limit`` keeps the first N per benchmark."""
    if limit is not None and limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {limit}")
    problems: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    per_benchmark: dict[str, int] = {}
    for path in expand_data_paths(list(paths)):
        rows = _read_rows(path)
        if not rows:
            raise EvalInputError(f"data file {str(path)!r} has no rows")
        for row_number, row in enumerate(rows):
            problem = _problem_from_row(row, row_number, path, allow_unknown_benchmarks)
            if problem.key in seen:
                raise EvalInputError(
                    f"problem id {problem.problem_id!r} of benchmark {problem.benchmark!r} appears twice: "
                    f"{seen[problem.key]} and {problem.source}; ids (extra_info.index) must be unique per benchmark"
                )
            seen[problem.key] = problem.source
            if limit is not None and per_benchmark.get(problem.benchmark, 0) >= limit:
                continue
            per_benchmark[problem.benchmark] = per_benchmark.get(problem.benchmark, 0) + 1
            problems.append(problem)
    return problems
