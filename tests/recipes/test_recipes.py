"""The recipes as data: every combination builds, baselines differ from MHPO only in their switch."""

import itertools
import os

import pytest

from mhpo_verl.recipes import ALGORITHMS, ENGINES, MODELS, RAY_RUNTIME_ENV, RecipeError, build_recipe

COMBINATIONS = list(itertools.product(MODELS, ENGINES, ALGORITHMS))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+")


@pytest.mark.parametrize(("model", "engine", "algorithm"), COMBINATIONS)
def test_each_override_sets_a_different_key(model, engine, algorithm):
    keys = [_key(override) for override in build_recipe(model, engine, algorithm).overrides()]
    assert len(keys) == len(set(keys)), sorted(key for key in keys if keys.count(key) > 1)


@pytest.mark.parametrize(("model", "engine"), list(itertools.product(MODELS, ENGINES)))
@pytest.mark.parametrize("baseline", [name for name in ALGORITHMS if name != "mhpo"])
def test_a_baseline_is_one_switch_away_from_mhpo(model, engine, baseline):
    mhpo = dict(build_recipe(model, engine, "mhpo").override_groups())
    other = dict(build_recipe(model, engine, baseline).override_groups())
    assert mhpo.pop("algorithm (mhpo)") != other.pop(f"algorithm ({baseline})")
    mhpo_trainer, other_trainer = mhpo.pop("trainer"), other.pop("trainer")
    assert mhpo == other
    changed = set(mhpo_trainer) ^ set(other_trainer)
    assert {_key(override) for override in changed} == {"trainer.experiment_name"}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("mhpo", {"policy_loss.loss_mode=mhpo", "loss_agg_mode=seq-mean-token-mean", "use_kl_loss=False"}),
        ("grpo", {"policy_loss.loss_mode=vanilla", "clip_ratio_low=0.2", "clip_ratio_high=0.2", "use_kl_loss=True",
                  "kl_loss_type=low_var_kl"}),
        ("dapo", {"policy_loss.loss_mode=vanilla", "clip_ratio_low=0.2", "clip_ratio_high=0.28",
                  "loss_agg_mode=token-mean", "use_kl_loss=False"}),
        ("gspo", {"policy_loss.loss_mode=gspo", "clip_ratio_low=0.0003", "clip_ratio_high=0.0004",
                  "loss_agg_mode=seq-mean-token-mean"}),
        ("sapo", {"policy_loss.loss_mode=sapo", "tau_pos=1.0", "tau_neg=1.05"}),
        ("cispo", {"policy_loss.loss_mode=cispo", "clip_ratio_high=0.2", "loss_agg_mode=token-mean"}),
    ],
)
def test_algorithm_switches_carry_their_published_settings(algorithm, expected):
    prefix = "actor_rollout_ref.actor."
    overrides = {o.removeprefix(prefix) for o in ALGORITHMS[algorithm].overrides}
    assert expected <= overrides
    estimator = "mhpo" if algorithm == "mhpo" else "grpo"
    assert f"algorithm.adv_estimator={estimator}" in overrides


def test_megatron_overrides_carry_the_layout():
    recipe = build_recipe("qwen3-30b-a3b-base", "megatron")
    layout, overrides = recipe.model.megatron, set(recipe.overrides())
    megatron = "actor_rollout_ref.actor.megatron"
    assert {
        f"{megatron}.tensor_model_parallel_size={layout.tp}",
        f"{megatron}.pipeline_model_parallel_size={layout.pp}",
        f"{megatron}.expert_model_parallel_size={layout.ep}",
        f"{megatron}.expert_tensor_parallel_size={layout.etp}",
        f"{megatron}.context_parallel_size={layout.cp}",
        f"{megatron}.sequence_parallel=True",
        f"trainer.nnodes={layout.nnodes}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={layout.rollout_tp}",
    } <= overrides
    assert recipe.config_name == "mhpo_megatron_trainer" and recipe.n_gpus == layout.nnodes * 8


def test_paper_response_lengths():
    assert MODELS["qwen2.5-7b-instruct"].max_response_length == 2048
    assert MODELS["qwen3-4b-base"].max_response_length == 4096
    recipe = build_recipe("qwen3-4b-base", "fsdp")
    assert "data.max_response_length=4096" in recipe.overrides() and recipe.config_name == "mhpo_trainer"


def test_layout_can_be_resized():
    recipe = build_recipe("qwen2.5-7b-instruct", "megatron", nnodes=4, gpus_per_node=4)
    assert {"trainer.nnodes=4", "trainer.n_gpus_per_node=4"} <= set(recipe.overrides())
    with pytest.raises(RecipeError, match="nnodes must be a positive integer, got 0"):
        build_recipe("qwen2.5-7b-instruct", "megatron", nnodes=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("qwen-9000", "fsdp"), "unknown model 'qwen-9000'; expected one of"),
        (("qwen3-4b-base", "deepspeed"), "unknown engine 'deepspeed'; expected one of \\['fsdp', 'megatron'\\]"),
        (("qwen3-4b-base", "fsdp", "ppo2"), "unknown algorithm 'ppo2'; expected one of"),
    ],
)
def test_unknown_choices_name_the_value_and_the_options(arguments, message):
    with pytest.raises(RecipeError, match=message):
        build_recipe(*arguments)


def test_data_files_map_dataset_names_to_converted_splits():
    recipe = build_recipe("qwen2.5-7b-instruct", "fsdp", data_dir="~/d", train_sets=("gsm8k", "/x/own.parquet"))
    home = os.path.expanduser("~")
    assert recipe.data_files(recipe.train_sets, "train") == [f"{home}/d/gsm8k/train.parquet", "/x/own.parquet"]
    assert recipe.data_files(("aime24", "dapo_math_17k"), "test") == [
        f"{home}/d/aime24/test.parquet",
        f"{home}/d/dapo_math_17k/train.parquet",  # a training-only set used for validation: its one split
    ]
    assert f'data.train_files=["{home}/d/gsm8k/train.parquet","/x/own.parquet"]' in recipe.overrides()
    with pytest.raises(RecipeError, match="'aime2024' is neither a dataset"):
        recipe.data_files(("aime2024",), "test")


def test_plugin_env_goes_to_ray_init_unless_the_job_carries_it():
    local = build_recipe("qwen2.5-7b-instruct", "fsdp")
    (variable, value), = RAY_RUNTIME_ENV["env_vars"].items()
    assert f"+ray_kwargs.ray_init.runtime_env.env_vars.{variable}={value}" in local.overrides()
    submitted = build_recipe("qwen2.5-7b-instruct", "fsdp", pass_plugin_env=False)
    assert not any("ray_kwargs" in override for override in submitted.overrides())
