"""The run folder survives kills: torn lines are cut, corrupt ones refused, nothing stored twice."""

from __future__ import annotations

import json
import os

import pytest

from mhpo_verl.eval.errors import RunFolderError
from mhpo_verl.eval.store import SampleStore, check_manifest, record_manifest, write_json_atomic


def record(problem_id: int, sample_idx: int, acc: bool = True) -> dict:
    return {
        "benchmark": "aime24", "problem_id": problem_id, "sample_idx": sample_idx, "response": "r" * 5,
        "pred": "1", "score": float(acc), "acc": acc, "reason": "correct" if acc else "wrong",
        "n_tokens": 5, "truncated": False, "fingerprint": "abc",
    }


def test_appended_samples_are_there_after_reopening(tmp_path):
    with SampleStore(tmp_path) as store:
        store.append([record(0, 0), record(0, 1, acc=False)])
    with SampleStore(tmp_path) as store:
        assert store.has("aime24", "0", 0) and store.has("aime24", "0", 1) and not store.has("aime24", "0", 2)
        assert store.outcomes[("aime24", "0", 1)].acc is False
        assert store.fingerprints[("aime24", "0")] == "abc"


def test_torn_last_line_is_cut_and_its_sample_is_missing(tmp_path):
    with SampleStore(tmp_path) as store:
        store.append([record(0, 0), record(0, 1)])
    path = tmp_path / "samples.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(record(0, 2)).encode()[:25])  # a kill in the middle of a write
    with SampleStore(tmp_path) as store:
        assert sorted(store.outcomes) == [("aime24", "0", 0), ("aime24", "0", 1)]
        store.append([record(0, 2)])
    lines = path.read_text().splitlines()
    assert path.read_bytes().startswith(whole)
    assert [json.loads(line)["sample_idx"] for line in lines] == [0, 1, 2]


def test_corrupt_line_in_the_middle_is_an_error_not_a_skip(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(record(0, 0)) + "\n{oops\n" + json.dumps(record(0, 1)) + "\n")
    with pytest.raises(RunFolderError, match=r"samples.jsonl:2 is not valid JSON"):
        SampleStore(tmp_path)


def test_line_missing_fields_is_an_error(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps({"benchmark": "aime24"}) + "\n")
    with pytest.raises(RunFolderError, match="lacks field"):
        SampleStore(tmp_path)


def test_a_sample_is_never_stored_twice(tmp_path):
    with SampleStore(tmp_path) as store:
        store.append([record(0, 0)])
        with pytest.raises(RunFolderError, match="already stored"):
            store.append([record(0, 0)])
    path = tmp_path / "samples.jsonl"
    path.write_text(path.read_text() * 2)
    with pytest.raises(RunFolderError, match="twice"):
        SampleStore(tmp_path)


def test_one_writer_per_folder(tmp_path):
    with SampleStore(tmp_path):
        with pytest.raises(RunFolderError, match="another evaluation is writing"):
            SampleStore(tmp_path)
    SampleStore(tmp_path).close()  # free again once the first one closed


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"v": 1})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp file left behind


def test_manifest_mismatch_names_the_setting(tmp_path):
    first = {"model": "m", "sampling": {"temperature": 0.6}, "note": "x"}
    check_manifest(tmp_path, first, ["model", "sampling"])  # no manifest yet: nothing to compare
    record_manifest(tmp_path, first)
    check_manifest(tmp_path, {**first, "note": "y"}, ["model", "sampling"])  # not an identity key
    expected = r"sampling: \{'temperature': 0.6\} in the folder vs \{'temperature': 1.0\} now"
    with pytest.raises(RunFolderError, match=expected):
        check_manifest(tmp_path, {**first, "sampling": {"temperature": 1.0}}, ["model", "sampling"])
