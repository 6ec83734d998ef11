"""The run folder: append-only ``samples.jsonl``, the settings manifest, and atomic JSON/text writes.

Crash safety rests on three rules: a sample line is written only once it is graded (so every line is final);
lines are appended in whole batches and fsynced; and a torn last line (a kill in the middle of a write) is cut
off when the file is reopened, so that sample is simply generated again. Any other unreadable line is an error,
never skipped: dropping it silently would change the results.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mhpo_verl.eval.errors import RunFolderError
from mhpo_verl.eval.metrics import SampleOutcome

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
LOCK_FILE = ".lock"

SAMPLE_FIELDS = ("benchmark", "problem_id", "sample_idx", "response", "pred", "score", "acc", "reason")


def write_text_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def outcome_of(record: Mapping[str, Any]) -> SampleOutcome:
    return SampleOutcome(
        benchmark=record["benchmark"],
        problem_id=str(record["problem_id"]),
        sample_idx=int(record["sample_idx"]),
        acc=bool(record["acc"]),
        score=float(record["score"]),
        n_tokens=int(record.get("n_tokens", 0)),
        truncated=bool(record.get("truncated", False)),
        reason=str(record["reason"]),
    )


class SampleStore:
    """``samples.jsonl`` of one run folder, held open for appending while the run lives.

    Keeps in memory only what the summary needs (:class:`SampleOutcome`) and each problem's fingerprint, so a
    large run does not hold every response text.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / SAMPLES_FILE
        self._lock_handle = open(self.folder / LOCK_FILE, "w")  # held (and flock'ed) until close()
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise RunFolderError(
                f"another evaluation is writing to {str(self.folder)!r}; wait for it to finish or use another --out"
            ) from None
        self.outcomes: dict[tuple[str, str, int], SampleOutcome] = {}
        self.fingerprints: dict[tuple[str, str], str] = {}
        for record in self._read_and_repair():
            self._remember(record)
        self._handle = open(self.path, "a", encoding="utf-8")

    def _read_and_repair(self) -> Iterator[dict[str, Any]]:
        """Records of the file, streamed (a large run's responses never sit in memory at once)."""
        if not self.path.exists():
            return
        torn_at = None
        with open(self.path, "rb") as handle:
            offset = 0
            for line_number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):  # only the last line can lack its newline
                    torn_at = offset
                    break
                offset += len(line)
                if line.strip():
                    yield self._parse(line, line_number)
        if torn_at is not None:
            logger.warning(
                "%s: dropping a torn last line (%d bytes, a write interrupted by a kill); its sample will be "
                "generated again",
                self.path,
                self.path.stat().st_size - torn_at,
            )
            with open(self.path, "r+b") as handle:
                handle.truncate(torn_at)
                handle.flush()
                os.fsync(handle.fileno())

    def _parse(self, line: bytes, line_number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunFolderError(
                f"{self.path}:{line_number} is not valid JSON ({error}); the file was edited or corrupted. "
                f"Fix or delete that line (its sample will be generated again) and rerun"
            ) from None
        missing = [name for name in SAMPLE_FIELDS if name not in record]
        if missing:
            raise RunFolderError(f"{self.path}:{line_number} lacks field(s) {missing}; expected {SAMPLE_FIELDS}")
        return record

    def _remember(self, record: Mapping[str, Any]) -> None:
        outcome = outcome_of(record)
        key = (outcome.benchmark, outcome.problem_id, outcome.sample_idx)
        if key in self.outcomes:
            raise RunFolderError(
                f"{self.path} holds sample {outcome.sample_idx} of problem {outcome.problem_id!r} "
                f"({outcome.benchmark}) twice; the file was concatenated or edited by hand"
            )
        self.outcomes[key] = outcome
        fingerprint = record.get("fingerprint")
        if fingerprint is not None:
            self.fingerprints.setdefault((outcome.benchmark, outcome.problem_id), fingerprint)

    def has(self, benchmark: str, problem_id: str, sample_idx: int) -> bool:
        return (benchmark, problem_id, sample_idx) in self.outcomes

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """One write and one fsync per batch: after a kill, every line before the torn one is whole."""
        if not records:
            return
        for record in records:
            key = (record["benchmark"], str(record["problem_id"]), int(record["sample_idx"]))
            if key in self.outcomes:
                raise RunFolderError(f"sample {key} is already stored in {self.path}; refusing to write it twice")
        self._handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for record in records:
            self._remember(record)

    def close(self) -> None:
        self._handle.close()
        self._lock_handle.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def record_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Save the settings of the folder's first samples (called once the model has loaded, so a typo in --model
    does not pin a folder to a path that never worked)."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        write_json_atomic(path, dict(manifest))


def check_manifest(folder: Path, manifest: Mapping[str, Any], identity_keys: Sequence[str]) -> None:
    """Refuse to resume a folder whose samples were made with other settings (mixing two experiments).

    Only ``identity_keys`` must match (what changes the samples: model, sampling, prompt format, grader);
    k, batch size and the data files may change between invocations (more samples or more benchmarks).
    """
    path = folder / MANIFEST_FILE
    if not path.exists():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); delete the folder or use another --out") from None
    differences = [
        f"{key}: {stored.get(key)!r} in the folder vs {manifest.get(key)!r} now"
        for key in identity_keys
        if stored.get(key) != manifest.get(key)
    ]
    if differences:
        raise RunFolderError(
            f"{folder} holds samples made with other settings ({'; '.join(differences)}). Resuming would mix two "
            f"experiments: use a new --out folder, or rerun with the original settings"
        )
