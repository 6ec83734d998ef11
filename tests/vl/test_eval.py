"""`python -m mhpo_verl eval` on VL benchmark files: the tiny Qwen2.5-VL through its processor on the HF backend,
samples and summary that agree, resume, the VL table of `compare`, and the vLLM request layout."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

import reward_fns
from mhpo_verl.eval import runner
from mhpo_verl.eval.__main__ import main
from mhpo_verl.eval.backends import BackendOptions, GenerationRequest
from mhpo_verl.eval.errors import EvalInputError
from mhpo_verl.eval.problems import load_problems
from mhpo_verl.eval.sampling import SamplingSettings
from mhpo_verl.eval.vision import load_processor, render_vision_prompt
from mhpo_verl.eval.vllm_backend import engine_kwargs, prompt_of

pytestmark = pytest.mark.slow

K = 2


@pytest.fixture
def with_processor(monkeypatch, vl_processor):
    """``AutoProcessor`` cannot load a Qwen-VL processor without torchvision (see tests/vl/tiny_vl.py): hand the
    runner the one built in this process instead."""
    loaded = []

    def load(path, trust_remote_code=False):
        loaded.append(path)
        return vl_processor

    monkeypatch.setattr(runner, "load_processor", load)
    return loaded


def _vl_files(converted: Path) -> list[Path]:
    return [converted / "mathvista" / "testmini.parquet", converted / "mathvision" / "test.parquet"]


def _args(model: Path, data: list[Path], out: Path) -> list[str]:
    return [
        "--model", str(model), "--data", *map(str, data), "--out", str(out), "--k", str(K), "--backend", "hf",
        "--device", "cpu", "--max-new-tokens", "6", "--temperature", "1.0", "--batch-size", "3",
        "--grader-workers", "0", "--no-progress",
    ]  # fmt: skip


def test_hf_eval_of_vl_files_writes_samples_and_a_summary_that_agree(
    tiny_vl_model_dir, converted_vl, with_processor, tmp_path, capsys
):
    out = tmp_path / "run"
    files = _vl_files(converted_vl)
    assert main(["run", *_args(tiny_vl_model_dir, files, out)]) == 0
    assert with_processor == [str(tiny_vl_model_dir)]  # loaded once, from the checkpoint
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(samples) == (2 + 2) * K
    assert {s["benchmark"] for s in samples} == {"mathvista", "mathvision"} == set(summary["benchmarks"])

    # Every sample graded as reward_fns grades it from the row (choice rows by their options in extra_info).
    rows = {(problem.benchmark, str(problem.problem_id)): problem for problem in load_problems(map(str, files))}
    for sample in samples:
        problem = rows[(sample["benchmark"], str(sample["problem_id"]))]
        again = reward_fns.compute_score(
            problem.data_source, sample["response"], problem.ground_truth, problem.extra_info
        )
        assert (again["acc"], again["reason"], again["pred"]) == (sample["acc"], sample["reason"], sample["pred"])
        assert 1 <= sample["n_tokens"] <= 6

    # The summary is the samples, counted.
    by_problem = defaultdict(list)
    for sample in samples:
        by_problem[(sample["benchmark"], sample["problem_id"])].append(sample)
    for name, result in summary["benchmarks"].items():
        groups = [group for (benchmark, _), group in by_problem.items() if benchmark == name]
        assert result["n_problems"] == len(groups) == 2 and result["n_samples"] == 2 * K
        assert result[f"avg@{K}"] == pytest.approx(sum(sum(s["acc"] for s in g) / K for g in groups) / len(groups))
        flat = [s for g in groups for s in g]
        assert result["mean_response_tokens"] == pytest.approx(sum(s["n_tokens"] for s in flat) / len(flat))
        assert result["truncated_frac"] == pytest.approx(sum(s["truncated"] for s in flat) / len(flat))
        reasons = defaultdict(int)
        for s in flat:
            reasons[s["reason"]] += 1
        assert result["reasons"] == dict(sorted(reasons.items()))
    assert summary["complete"] is True
    assert "MathVista" in (out / "summary.md").read_text()

    # Resume: nothing left to generate; the summary is rebuilt from the file, unchanged.
    before = (out / "samples.jsonl").read_bytes()
    assert main(["run", *_args(tiny_vl_model_dir, files, out)]) == 0
    assert (out / "samples.jsonl").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["benchmarks"] == summary["benchmarks"]

    capsys.readouterr()
    assert main(["compare", str(out), "--labels", "tiny-vl"]) == 0
    table = capsys.readouterr().out
    assert "### avg@k (%) — vision-language" in table
    assert "| Run | MathVista | MathVision | Avg |" in table


def test_a_vl_sample_does_not_depend_on_its_batch(tiny_vl_model_dir, converted_vl, vl_processor):
    """Left padding with images: per-token modality ids padded with the prompt, patches concatenated in order."""
    from mhpo_verl.eval.hf_backend import HFBackend
    from mhpo_verl.eval.tokenization import load_tokenizer, render_prompt_ids

    problems = load_problems([str(p) for p in _vl_files(converted_vl)])
    prompts = [render_vision_prompt(vl_processor, p.messages, p.images) for p in problems[:2]]
    text_ids = render_prompt_ids(load_tokenizer(str(tiny_vl_model_dir)), [{"role": "user", "content": "Find x."}])
    options = BackendOptions(
        model=str(tiny_vl_model_dir), tokenizer=str(tiny_vl_model_dir), stop_token_ids=(2,), device="cpu",
        sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=8),
    )  # fmt: skip
    backend = HFBackend(options)
    alone = [backend.generate([GenerationRequest(p.prompt_ids, 7, p.multi_modal)])[0] for p in prompts]
    batched = backend.generate(
        [GenerationRequest(tuple(text_ids), 3)] + [GenerationRequest(p.prompt_ids, 7, p.multi_modal) for p in prompts]
    )
    assert [c.text for c in batched[1:]] == [c.text for c in alone]
    assert len({len(p.prompt_ids) for p in prompts}) == 2  # the two prompts differ in length: padding was exercised


def test_vllm_requests_carry_the_images_as_multi_modal_data(converted_vl, vl_processor):
    problem = load_problems([str(converted_vl / "mathvista" / "testmini.parquet")])[0]
    rendered = render_vision_prompt(vl_processor, problem.messages, problem.images)
    prompt = prompt_of(GenerationRequest(rendered.prompt_ids, 1, rendered.multi_modal))
    assert prompt["prompt_token_ids"] == list(rendered.prompt_ids)
    assert [image.size for image in prompt["multi_modal_data"]["image"]] == [(64, 48)]
    assert "multi_modal_data" not in prompt_of(GenerationRequest((1, 2), 1))
    options = BackendOptions(
        model="m", tokenizer="m", sampling=SamplingSettings(), stop_token_ids=(1,), max_images_per_prompt=1
    )
    assert engine_kwargs(options)["limit_mm_per_prompt"] == {"image": 1}


def test_vl_rows_are_checked_before_any_model_loads(converted_vl, tmp_path):
    frame = pd.read_parquet(converted_vl / "mathvista" / "testmini.parquet")
    problems = load_problems([str(converted_vl / "mathvista" / "testmini.parquet")])
    changed = frame.copy()
    changed.at[0, "images"] = [{"bytes": problems[1].images[0], "path": "other.png"}]
    changed.to_parquet(tmp_path / "changed.parquet")
    again = load_problems([str(tmp_path / "changed.parquet")])
    assert again[0].fingerprint != problems[0].fingerprint  # another image: resuming the old run is refused
    assert again[1].fingerprint == problems[1].fingerprint
    broken = frame.copy()
    broken.at[0, "images"] = []
    broken.to_parquet(tmp_path / "broken.parquet")
    with pytest.raises(EvalInputError, match=r"the prompt has 1 <image> placeholder\(s\) for 0 image\(s\)"):
        load_problems([str(tmp_path / "broken.parquet")])


def test_a_text_checkpoint_has_no_processor_for_images(vl_processor, tmp_path):
    vl_processor.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(EvalInputError, match="text-only checkpoint"):
        load_processor(str(tmp_path))
