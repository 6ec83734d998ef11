"""Records out of a local file (parquet, jsonl, json) or a Hugging Face Hub dataset, one at a time.

Every record comes with its position in the input, so a report can name it. A record that cannot even be read
(a broken JSON line, a JSON value that is not an object) is yielded as an :class:`UnreadableRecord` at its position
instead of stopping the whole file: the converter counts and reports it like any other malformed row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_FORMATS = (".parquet", ".jsonl", ".json")
_PARQUET_BATCH_ROWS = 4096


class SourceError(RuntimeError):
    """The input as a whole cannot be read: missing file, unsupported format, unreachable hub."""


@dataclass(frozen=True)
class UnreadableRecord:
    """A position in the input whose content is not a record (e.g. invalid JSON); ``reason`` says why."""

    reason: str


Record = dict[str, Any]


@dataclass
class Source:
    """An opened input: ``label`` for reports, ``total`` rows when known up front (for the progress bar)."""

    label: str
    total: int | None
    records: Iterator[tuple[int, Record | UnreadableRecord]]


def open_local(path: str | Path) -> Source:
    """Open a local parquet / jsonl / json file; a json file holds a list of objects (or one key mapping to one)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise SourceError(f"input {str(path)!r} is a directory; pass one file ({', '.join(LOCAL_FORMATS)})")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _open_parquet(path)
    if suffix == ".jsonl":
        return _open_jsonl(path)
    if suffix == ".json":
        return _open_json(path)
    shown = suffix or "(no suffix)"
    raise SourceError(f"input {str(path)!r} has unsupported format {shown!r}; expected one of {LOCAL_FORMATS}")


def _open_parquet(path: Path) -> Source:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise SourceError(f"cannot read parquet file {str(path)!r}: {error}") from error

    def records() -> Iterator[tuple[int, Record]]:
        index = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                yield index, row
                index += 1

    return Source(label=path.name, total=parquet.metadata.num_rows, records=records())


def _open_jsonl(path: Path) -> Source:
    with path.open("rb") as handle:
        total = sum(1 for line in handle if line.strip())

    def records() -> Iterator[tuple[int, Record | UnreadableRecord]]:
        index = 0
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield index, _json_record(line, f"line {line_number}")
                index += 1

    return Source(label=path.name, total=total, records=records())


def _json_record(text: str, where: str) -> Record | UnreadableRecord:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return UnreadableRecord(f"{where} is not valid JSON ({error.msg} at column {error.colno})")
    if not isinstance(value, dict):
        return UnreadableRecord(f"{where} is a JSON {type(value).__name__}, expected an object")
    return value


def _open_json(path: Path) -> Source:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SourceError(f"{str(path)!r} is not valid JSON: {error}") from error
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise SourceError(
                f"{str(path)!r} is a JSON object with {len(lists)} list values; expected a list of records, or an "
                "object holding exactly one such list"
            )
        document = lists[0]
    if not isinstance(document, list):
        raise SourceError(f"{str(path)!r} holds a JSON {type(document).__name__}; expected a list of records")

    def records() -> Iterator[tuple[int, Record | UnreadableRecord]]:
        for index, value in enumerate(document):
            if isinstance(value, dict):
                yield index, value
            else:
                yield index, UnreadableRecord(f"item {index} is a JSON {type(value).__name__}, expected an object")

    return Source(label=path.name, total=len(document), records=records())


HubLoader = Callable[[str, str | None, str], Any]


def load_hub_split(hub_id: str, config: str | None, split: str) -> Any:
    """``datasets.load_dataset(hub_id, config, split=split)``; imported here so local conversions never need it."""
    import datasets

    return datasets.load_dataset(hub_id, config, split=split)


def open_hub(hub_id: str, config: str | None, split: str, loader: HubLoader | None = None) -> Source:
    """Open one split of a Hub dataset; any download failure becomes a :class:`SourceError` that says what to do.

    ``loader`` defaults to :func:`load_hub_split`, looked up at call time.
    """
    label = f"{hub_id}{f'[{config}]' if config else ''}:{split}"
    try:
        dataset = (loader or load_hub_split)(hub_id, config, split)
    except Exception as error:  # datasets/huggingface_hub raise many types (ConnectionError, HfHubHTTPError, ...)
        raise SourceError(
            f"could not load {label} from the Hugging Face Hub ({type(error).__name__}: {error}). If this machine "
            "cannot reach the Hub, download the split elsewhere and pass the file with --input PATH "
            f"({', '.join(LOCAL_FORMATS)}); if the dataset moved, name it with --hub-id/--hub-config/--hub-split."
        ) from error
    return Source(label=label, total=len(dataset), records=enumerate(iter(dataset)))
