import json

import pyarrow.parquet as pq
import pytest

from mhpo_verl.data import readers
from mhpo_verl.data.__main__ import main
from tests.data.fixtures import SAMPLES, write_converted_data_dir, write_jsonl


def _convert(*arguments):
    return main(["convert", *arguments, "--no-progress"])


def test_convert_writes_parquet_and_a_report_that_accounts_for_every_row(tmp_path, capsys):
    records = [*SAMPLES["gsm8k"], {"question": "", "answer": "#### 1"}]
    source = write_jsonl(tmp_path / "train.jsonl", records)
    status = _convert("gsm8k", "--input", str(source), "--split", "train", "--out-dir", str(tmp_path / "out"))
    assert status == 0
    table = pq.read_table(tmp_path / "out" / "gsm8k" / "train.parquet")
    assert table.num_rows == 2
    report = json.loads((tmp_path / "out" / "gsm8k" / "train.report.json").read_text())
    assert report["rows_read"] == 3 and report["rows_written"] == 2
    assert report["malformed"] == [{"source_index": 2, "reason": report["malformed"][0]["reason"]}]
    captured = capsys.readouterr()
    assert "read 3 rows" in captured.out and "malformed row 2:" in captured.err


def test_strict_mode_writes_nothing_when_a_row_is_malformed(tmp_path, capsys):
    source = write_jsonl(tmp_path / "t.jsonl", [{"problem": "ok", "answer": "1"}, {"problem": "no answer"}])
    status = _convert("aime24", "--input", str(source), "--out-dir", str(tmp_path / "out"), "--strict")
    assert status == 1
    assert not (tmp_path / "out").exists()
    assert "--strict and 1 malformed rows" in capsys.readouterr().err


def test_input_file_needs_a_split_when_the_dataset_has_several(tmp_path, capsys):
    source = write_jsonl(tmp_path / "t.jsonl", SAMPLES["gsm8k"])
    assert _convert("gsm8k", "--input", str(source), "--out-dir", str(tmp_path)) == 2
    assert "has splits ['train', 'test']; add --split" in capsys.readouterr().err


def test_unknown_split_of_the_hub_dataset_is_refused(tmp_path, capsys):
    assert _convert("math500", "--split", "train", "--out-dir", str(tmp_path)) == 2
    assert "math500 has splits ['test'], not 'train'" in capsys.readouterr().err


def test_offline_hub_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def offline(hub_id, config, split):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(readers, "load_hub_split", offline)
    assert _convert("aime25", "--out-dir", str(tmp_path)) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: could not load math-ai/aime25:test from the Hugging Face Hub")
    assert "--input PATH" in message


def test_all_converts_benchmarks_before_training_sets_and_decontaminates(tmp_path, monkeypatch):
    overlap = SAMPLES["math500"][0]["problem"]
    hub = {
        "HuggingFaceH4/MATH-500": SAMPLES["math500"],
        "DigitalLearningGmbH/MATH-lighteval": [*SAMPLES["math"], {"problem": overlap, "solution": "\\boxed{2}"}],
    }
    loaded = []

    def fake_hub(hub_id, config, split):
        loaded.append((hub_id, split))
        return hub[hub_id]

    monkeypatch.setattr(readers, "load_hub_split", fake_hub)
    out = tmp_path / "out"
    status = main(["all", "--only", "math", "math500", "--out-dir", str(out), "--decontaminate", "--no-progress"])
    assert status == 0
    assert loaded[0] == ("HuggingFaceH4/MATH-500", "test")
    report = json.loads((out / "math" / "train.report.json").read_text())
    assert report["overlap"] == [2] and report["rows_written"] == 2
    assert pq.read_table(out / "math500" / "test.parquet").num_rows == 1


def test_decontaminate_without_benchmarks_is_an_error(tmp_path, capsys):
    source = write_jsonl(tmp_path / "t.jsonl", SAMPLES["gsm8k"])
    arguments = ["gsm8k", "--input", str(source), "--split", "train", "--out-dir", str(tmp_path / "empty")]
    assert _convert(*arguments, "--decontaminate") == 2
    assert "found no converted benchmark" in capsys.readouterr().err


def test_check_accepts_converted_files_and_flags_broken_ones(tmp_path, capsys):
    out = write_converted_data_dir(tmp_path)
    good = out / "aime24" / "test.parquet"
    assert main(["check", str(good)]) == 0
    assert "ok, 2 rows (aime24=2)" in capsys.readouterr().out
    rows = pq.read_table(good).to_pylist()
    rows[1]["reward_model"]["ground_truth"] = ""
    broken = tmp_path / "broken.parquet"
    pq.write_table(pq.read_table(good).from_pylist(rows, schema=pq.read_table(good).schema), broken)
    assert main(["check", str(broken)]) == 1
    assert "row 1: reward_model.ground_truth" in capsys.readouterr().err


def test_list_names_every_dataset(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("gsm8k", "math", "dapo_math_17k", "math500", "aime24", "aime25", "amc23", "hmmt25"):
        assert f"\n{name} " in f"\n{out}"


def test_front_door_dispatches_to_the_data_command(capsys):
    from mhpo_verl.__main__ import main as front_door

    assert front_door(["data", "list"]) == 0
    assert "openai/gsm8k" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["convert"], ["convert", "nope"], []])
def test_bad_arguments_exit_2(bad):
    with pytest.raises(SystemExit) as error:
        main(bad)
    assert error.value.code == 2
