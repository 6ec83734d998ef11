"""The Qwen2.5-VL recipe: VL data by default, the image column, the shared launcher's dry run and checks."""

from __future__ import annotations

import pytest

from mhpo_verl.launch import main
from mhpo_verl.recipes import DEFAULT_TRAIN_SETS, build_recipe

pytestmark = pytest.mark.slow


def test_the_vl_model_trains_on_geometry3k_and_validates_on_the_vl_sets():
    recipe = build_recipe("qwen2.5-vl-7b-instruct", "fsdp", data_dir="/d")
    overrides = recipe.overrides()
    assert 'data.train_files=["/d/geometry3k/train.parquet"]' in overrides
    assert (
        'data.val_files=["/d/geometry3k/test.parquet","/d/mathvista/testmini.parquet",'
        '"/d/mathverse/testmini.parquet","/d/mathvision/test.parquet"]'
    ) in overrides
    assert "data.image_key=images" in overrides and "data.max_prompt_length=2048" in overrides
    assert "reward.custom_reward_function.path=pkg://reward_fns" in overrides  # the multiple-choice aware entry
    assert build_recipe("qwen2.5-7b-instruct", "fsdp").train_sets == DEFAULT_TRAIN_SETS
    assert "data.image_key=images" not in build_recipe("qwen2.5-7b-instruct", "fsdp").overrides()
    own = build_recipe("qwen2.5-vl-7b-instruct", "megatron", train_sets=("/x/own.parquet",))
    assert 'data.train_files=["/x/own.parquet"]' in own.overrides()


@pytest.mark.parametrize("engine", ["fsdp", "megatron"])
def test_dry_run_resolves_the_vl_command_and_passes_the_checks(engine, converted_vl, capsys):
    status = main(["--model", "qwen2.5-vl-7b-instruct", "--engine", engine, "--data-dir", str(converted_vl),
                   "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"# recipe: qwen2.5-vl-7b-instruct | {engine} | mhpo" in out
    assert "    data.image_key=images \\" in out
    assert "  image_key: images" in out  # in the resolved verl config
    assert "ok      data.train_files: 1 file(s) present" in out
    assert "ok      data.val_files: 4 file(s) present" in out
    assert "# dry run: ok, 0 warning(s); nothing was started" in out


def test_an_unknown_vl_set_is_refused_by_name(capsys):
    assert main(["--model", "qwen2.5-vl-7b-instruct", "--val-data", "mathvista,mathvisoin", "--dry-run"]) == 2
    assert "'mathvisoin' is neither a dataset" in capsys.readouterr().err
