"""The evaluation command end to end on the tiny model: output files, resume after a kill, errors, compare, plot."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from mhpo_verl.eval.__main__ import main
from mhpo_verl.eval.hf_backend import HFBackend
from mhpo_verl.eval.runner import EvalConfig, run_eval
from mhpo_verl.eval.sampling import SamplingSettings
from tests.eval.conftest import write_benchmark

pytestmark = pytest.mark.slow

K = 4
MAX_NEW_TOKENS = 12
PARITY_GRADER = "tests.eval.graders:length_parity"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("benchmarks")
    return [
        write_benchmark(folder / "math500.parquet", "HuggingFaceH4/MATH-500", ["4", "\\frac{1}{2}", "12"]),
        write_benchmark(folder / "aime24.parquet", "aime24", ["204", "25"]),
        write_benchmark(folder / "amc23.parquet", "amc23", ["7", "3"]),
    ]


def cli_args(model: Path, data: list[Path], out: Path, *extra: str, k: int = K, grader: str = PARITY_GRADER):
    return [
        "--model", str(model), "--data", *map(str, data), "--out", str(out), "--k", str(k), "--backend", "hf",
        "--device", "cpu", "--max-new-tokens", str(MAX_NEW_TOKENS), "--temperature", "1.0", "--top-p", "0.95",
        "--batch-size", "4", "--grader", grader, "--no-progress", *extra,
    ]  # fmt: skip


def config(model: Path, data: list[Path], out: Path, k: int = K) -> EvalConfig:
    """The same settings as :func:`cli_args`, for calling the runner directly."""
    return EvalConfig(
        model=str(model), data=[str(p) for p in data], out=out, k=k, backend="hf", device="cpu", batch_size=4,
        sampling=SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS),
        grader=PARITY_GRADER, progress=False,
    )  # fmt: skip


def read_samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir, data_files) -> Path:
    """An uninterrupted run through the command line."""
    out = tmp_path_factory.mktemp("reference")
    assert main(cli_args(tiny_model_dir, data_files, out)) == 0
    return out


def test_output_files_exist_and_agree(reference_run):
    samples = read_samples(reference_run)
    summary = read_summary(reference_run)
    assert sorted(p.name for p in reference_run.iterdir() if not p.name.startswith(".")) == [
        "run.json", "samples.jsonl", "summary.json", "summary.md",
    ]  # fmt: skip

    keys = [(s["benchmark"], s["problem_id"], s["sample_idx"]) for s in samples]
    assert len(keys) == len(set(keys)) == 7 * K
    for sample in samples:
        assert sample["acc"] == (len(sample["response"]) % 2 == 0)  # the grader saw the stored response
        assert sample["pred"] == str(len(sample["response"]))
        assert 1 <= sample["n_tokens"] <= MAX_NEW_TOKENS
        assert not sample["truncated"] or sample["n_tokens"] == MAX_NEW_TOKENS
    assert {s["data_source"] for s in samples if s["benchmark"] == "math500"} == {"HuggingFaceH4/MATH-500"}

    # Recompute every number of summary.json by hand from samples.jsonl.
    correct: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    by_benchmark = defaultdict(list)
    for sample in samples:
        correct[sample["benchmark"]][sample["problem_id"]] += sample["acc"]
        by_benchmark[sample["benchmark"]].append(sample)
    assert list(summary["benchmarks"]) == ["math500", "amc23", "aime24"]
    assert 0 < sum(s["acc"] for s in samples) < len(samples)  # a mixed pattern, not all 0 or all 1
    for name, counts in correct.items():
        got = summary["benchmarks"][name]
        cs = list(counts.values())
        assert got["n_problems"] == len(cs)
        assert got["avg@4"] == pytest.approx(sum(c / K for c in cs) / len(cs))
        assert got["pass@2"] == pytest.approx(sum(1 - math.comb(K - c, 2) / math.comb(K, 2) for c in cs) / len(cs))
        assert got["pass@4"] == pytest.approx(sum(c > 0 for c in cs) / len(cs))
        assert got["mean_response_tokens"] == pytest.approx(
            sum(s["n_tokens"] for s in by_benchmark[name]) / len(by_benchmark[name])
        )
        assert got["truncated_frac"] == pytest.approx(
            sum(s["truncated"] for s in by_benchmark[name]) / len(by_benchmark[name])
        )
    averages = [summary["benchmarks"][name]["avg@4"] for name in correct]
    assert summary["average"]["avg@4"] == pytest.approx(sum(averages) / 3)
    assert summary["complete"] is True

    # summary.md shows the same numbers as percentages, in the paper's column order.
    markdown = (reference_run / "summary.md").read_text()
    assert "| Metric | MATH500 | AMC23 | AIME24 | Avg |" in markdown
    row = [f"{100 * summary['benchmarks'][n]['avg@4']:.1f}" for n in ("math500", "amc23", "aime24")]
    assert f"| avg@4 (%) | {' | '.join(row)} | {100 * summary['average']['avg@4']:.1f} |" in markdown
    assert "| problems | 3 | 2 | 2 | 7 |" in markdown


def test_the_default_grader_is_reward_fns_in_its_process_pool(tmp_path, tiny_model_dir, data_files):
    out = tmp_path / "run"
    args = cli_args(tiny_model_dir, data_files, out, "--limit", "1", "--grader-workers", "2", k=2)
    del args[args.index("--grader") : args.index("--grader") + 2]
    assert main(args) == 0
    samples = read_samples(out)
    assert len(samples) == 3 * 2
    for sample in samples:
        assert isinstance(sample["score"], float) and isinstance(sample["pred"], str)
        assert sample["reason"] in {"correct", "wrong", "no_answer", "timeout", "parse_error"}
    assert json.loads((out / "run.json").read_text())["grader"] == "reward_fns:compute_score_batch"


def test_run_killed_midway_resumes_to_the_same_summary(tmp_path, tiny_model_dir, data_files, reference_run):
    """A real SIGKILL in the middle of the third batch's generation, then the same command again."""
    out = tmp_path / "killed"
    script = tmp_path / "kill_after_two_batches.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys
        from mhpo_verl.eval import hf_backend
        from mhpo_verl.eval.__main__ import main

        generate, calls = hf_backend.HFBackend.generate, []

        def generate_then_die(self, requests):
            calls.append(len(requests))
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return generate(self, requests)

        hf_backend.HFBackend.generate = generate_then_die
        sys.exit(main(sys.argv[1:]))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(
        [sys.executable, str(script), *cli_args(tiny_model_dir, data_files, out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    # Batch 1 was written when batch 2 went to grading; batch 2 only if its grading had finished.
    assert len(read_samples(out)) in (4, 8)
    assert not (out / "summary.json").exists()

    assert main(cli_args(tiny_model_dir, data_files, out)) == 0
    assert read_summary(out) == read_summary(reference_run)
    assert read_samples(out) == read_samples(reference_run)  # same samples, same order, none twice


class FailingBackend:
    """The real HF backend, failing on its n-th generate call (a crash, an OOM, a lost GPU)."""

    def __init__(self, inner: HFBackend, fail_on_call: int) -> None:
        self.inner, self.fail_on_call, self.calls, self.name = inner, fail_on_call, 0, "hf"

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected failure")
        return self.inner.generate(requests)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir) -> HFBackend:
    from mhpo_verl.eval.backends import BackendOptions
    from mhpo_verl.eval.tokenization import load_tokenizer, stop_token_ids

    sampling = SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS)
    stops = tuple(stop_token_ids(str(tiny_model_dir), load_tokenizer(str(tiny_model_dir))))
    return HFBackend(BackendOptions(str(tiny_model_dir), str(tiny_model_dir), sampling, stops, device="cpu"))


def test_failure_midway_and_a_torn_line_then_resume(tmp_path, tiny_model_dir, data_files, reference_run, hf_backend):
    out = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="injected failure"):
        run_eval(config(tiny_model_dir, data_files, out), backend=FailingBackend(hf_backend, fail_on_call=5))
    assert len(read_samples(out)) == 4 * 4  # the four batches generated before the failure are kept
    with open(out / "samples.jsonl", "a") as handle:  # as if killed while writing the fifth batch
        handle.write('{"benchmark": "aime24", "problem_id": 1, "sample_id')

    summary = run_eval(config(tiny_model_dir, data_files, out), backend=hf_backend)
    assert summary == read_summary(reference_run) == read_summary(out)
    assert read_samples(out) == read_samples(reference_run)


def test_raising_k_only_adds_samples(tmp_path, tiny_model_dir, data_files, reference_run, hf_backend):
    out = tmp_path / "grown"
    run_eval(config(tiny_model_dir, data_files, out, k=2), backend=hf_backend)
    first = read_samples(out)
    assert {s["sample_idx"] for s in first} == {0, 1}
    run_eval(config(tiny_model_dir, data_files, out, k=K), backend=hf_backend)
    assert read_samples(out)[: len(first)] == first
    assert read_summary(out) == read_summary(reference_run)


def test_a_finished_folder_is_summarised_without_generating(tmp_path, tiny_model_dir, data_files, reference_run,
                                                            hf_backend):
    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    (out / "summary.json").unlink()
    summary = run_eval(config(tiny_model_dir, data_files, out), backend=FailingBackend(hf_backend, fail_on_call=1))
    assert summary == read_summary(reference_run)


def test_a_grader_breaking_the_contract_stops_the_run(tmp_path, tiny_model_dir, data_files, hf_backend):
    bad = config(tiny_model_dir, data_files, tmp_path / "bad")
    bad.grader = "tests.eval.graders:missing_fields"
    with pytest.raises(RuntimeError, match=r"expected a dict with \('score', 'acc', 'pred', 'reason'\)"):
        run_eval(bad, backend=hf_backend)
    assert read_samples(tmp_path / "bad") == []


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda a: [*a, "--k", "0"], "--k must be >= 1 (samples per problem), got 0"),
        (lambda a: [*a, "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (lambda a: [*a, "--pass-k", "8"], "--pass-k values must be in [1, k=4], got [8]"),
        (lambda a: [*a, "--grader", "nowhere:nothing"], "cannot import 'nowhere'"),
        (lambda a: [*a, "--grader-workers", "-1"], "--grader-workers must be >= 0, got -1"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, tiny_model_dir, data_files, capsys, make_args, message):
    assert main(make_args(cli_args(tiny_model_dir, data_files, tmp_path / "run"))) == 2
    assert message in capsys.readouterr().err


def test_bad_data_files_exit_2(tmp_path, tiny_model_dir, capsys):
    unknown = write_benchmark(tmp_path / "olympiad.parquet", "olympiadbench", ["1"])
    assert main(cli_args(tiny_model_dir, [unknown], tmp_path / "a")) == 2
    assert "unknown benchmark data_source 'olympiadbench'" in capsys.readouterr().err

    missing = write_benchmark(tmp_path / "m.parquet", "aime24", ["1"])
    import pandas as pd

    pd.read_parquet(missing).drop(columns=["reward_model"]).to_parquet(missing)
    assert main(cli_args(tiny_model_dir, [missing], tmp_path / "b")) == 2
    assert "lacks column(s) ['reward_model']" in capsys.readouterr().err


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_model_dir, data_files, reference_run, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    args = cli_args(tiny_model_dir, data_files, out)
    args[args.index("--temperature") + 1] = "0.7"
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "holds samples made with other settings" in error and "'temperature': 0.7" in error


def test_a_missing_model_is_reported_and_does_not_pin_the_folder(tmp_path, tiny_model_dir, data_files, capsys):
    out = tmp_path / "run"
    assert main(cli_args(tmp_path / "no_such_model", data_files, out)) == 2
    assert "cannot load a tokenizer from" in capsys.readouterr().err
    assert not (out / "run.json").exists()


def test_compare_and_plot(tmp_path, tiny_model_dir, data_files, reference_run, capsys):
    other = tmp_path / "seed1"
    assert main(cli_args(tiny_model_dir, data_files, other, "--seed", "1")) == 0
    capsys.readouterr()
    runs = [str(reference_run), str(other)]
    plot = tmp_path / "cmp.png"
    from mhpo_verl.__main__ import main as front_door

    assert front_door(["eval", "compare", *runs, "--labels", "GRPO", "MHPO", "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    first, second = read_summary(reference_run), read_summary(other)
    for label, summary in (("GRPO", first), ("MHPO", second)):
        cells = [f"{100 * summary['benchmarks'][n]['avg@4']:.1f}" for n in ("math500", "amc23", "aime24")]
        assert f"| {label} (k=4) | {' | '.join(cells)} | {100 * summary['average']['avg@4']:.1f} |" in table
    assert "### avg@k (%)" in table and "### pass@k (%)" in table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    alone = tmp_path / "alone.png"
    assert main(["plot", *runs, "--out", str(alone), "--metric", "pass@k"]) == 0
    assert alone.stat().st_size > 1000
    assert main(["compare", str(tmp_path / "nothing_here")]) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert main(["compare", *runs, "--metric", "accuracy"]) == 2
    assert "no run has metric 'accuracy'" in capsys.readouterr().err
