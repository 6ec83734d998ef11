"""The labelled grading set (``labelled_cases.yaml``): (response, ground truth, equivalent?) cases written for this
project, read by the parametrised tests and by ``examples/benchmarks/grader_benchmark.py``.

A response may contain ``⟦repeat:N:text⟧``, expanded to ``text`` repeated N times, so that megabyte-sized
adversarial responses live in the file as one short line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CASES_PATH = Path(__file__).with_name("labelled_cases.yaml")
_REPEAT = re.compile(r"⟦repeat:(\d+):(.*?)⟧", re.DOTALL)
_FIELDS = {"id", "source", "response", "gold", "label", "tags", "note", "options"}


@dataclass(frozen=True)
class LabelledCase:
    id: str
    source: str
    response: str
    gold: str | list[str]
    label: bool
    tags: tuple[str, ...] = ()
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def expand(text: str) -> str:
    return _REPEAT.sub(lambda match: match.group(2) * int(match.group(1)), text)


def load_cases(path: Path | str = CASES_PATH) -> list[LabelledCase]:
    """All cases of the file, validated (unique ids, known fields, boolean labels)."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a YAML list of cases, got {type(raw).__name__}")
    cases: list[LabelledCase] = []
    seen: set[str] = set()
    for position, entry in enumerate(raw):
        where = f"{path}: case #{position} ({entry.get('id') if isinstance(entry, dict) else entry!r})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; expected some of {sorted(_FIELDS)}")
        for required in ("id", "response", "gold", "label"):
            if required not in entry:
                raise ValueError(f"{where}: missing field {required!r}")
        if not isinstance(entry["label"], bool):
            raise ValueError(f"{where}: label={entry['label']!r} must be true or false")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        gold = entry["gold"]
        gold = [str(item) for item in gold] if isinstance(gold, list) else str(gold)
        cases.append(
            LabelledCase(
                id=str(entry["id"]),
                source=str(entry.get("source", "math")),
                response=expand(str(entry["response"])),
                gold=gold,
                label=entry["label"],
                tags=tuple(entry.get("tags", ())),
                note=str(entry.get("note", "")),
                options=dict(entry.get("options") or {}),
            )
        )
    return cases
