import json

import pytest

from mhpo_verl.data import readers
from mhpo_verl.data.readers import SourceError, UnreadableRecord, open_hub, open_local
from tests.data.fixtures import write_jsonl, write_parquet


def _records(source):
    return list(source.records)


def test_parquet_rows_come_with_their_positions(tmp_path):
    path = write_parquet(tmp_path / "in.parquet", [{"problem": f"p{i}", "answer": str(i)} for i in range(5)])
    source = open_local(path)
    assert source.total == 5 and source.label == "in.parquet"
    assert _records(source) == [(i, {"problem": f"p{i}", "answer": str(i)}) for i in range(5)]


def test_jsonl_broken_lines_become_unreadable_records_at_their_position(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"a": 2}\n', encoding="utf-8")
    source = open_local(path)
    records = _records(source)
    assert source.total == 4  # the blank line is not a record
    assert [index for index, _ in records] == [0, 1, 2, 3]
    assert records[0][1] == {"a": 1} and records[3][1] == {"a": 2}
    assert isinstance(records[1][1], UnreadableRecord) and "line 3 is not valid JSON" in records[1][1].reason
    assert isinstance(records[2][1], UnreadableRecord) and "JSON list, expected an object" in records[2][1].reason


def test_json_list_and_object_holding_one_list(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"a": 1}, 5]), encoding="utf-8")
    records = _records(open_local(tmp_path / "list.json"))
    assert records[0] == (0, {"a": 1})
    assert isinstance(records[1][1], UnreadableRecord)
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": [{"a": 1}]}), encoding="utf-8")
    assert _records(open_local(tmp_path / "wrapped.json")) == [(0, {"a": 1})]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.csv", "a,b\n", "unsupported format '.csv'"),
        ("two.json", json.dumps({"train": [], "test": []}), "2 list values"),
        ("scalar.json", "3", "holds a JSON int"),
        ("bad.json", "{", "not valid JSON"),
    ],
)
def test_unusable_files_are_refused_with_the_reason(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        open_local(tmp_path / name)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_local(tmp_path / "nope.parquet")
    with pytest.raises(SourceError, match="is a directory"):
        open_local(tmp_path)


def test_unreachable_hub_says_how_to_use_a_local_file():
    def offline(hub_id, config, split):
        raise ConnectionError(f"Couldn't reach '{hub_id}' on the Hub")

    with pytest.raises(SourceError) as error:
        open_hub("openai/gsm8k", "main", "train", loader=offline)
    message = str(error.value)
    assert "openai/gsm8k[main]:train" in message and "ConnectionError" in message
    assert "--input PATH" in message and "--hub-id" in message


def test_hub_loader_is_looked_up_at_call_time(monkeypatch):
    calls = []

    def fake(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"question": "q", "answer": "#### 1"}]

    monkeypatch.setattr(readers, "load_hub_split", fake)
    source = open_hub("openai/gsm8k", "main", "test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert source.total == 1 and _records(source) == [(0, {"question": "q", "answer": "#### 1"})]


def test_jsonl_fixture_writer_round_trips(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"k": "v"}])
    assert _records(open_local(path)) == [(0, {"k": "v"})]
