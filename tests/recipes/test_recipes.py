"""The recipes as data: every combination builds, baselines differ from MHPO only in their switch."""

import itertools
import os

import pytest

from mhpo_verl.recipes import ALGORITHMS, ENGINES, MODELS, MODES, RAY_RUNTIME_ENV, RecipeError, build_recipe

COMBINATIONS = list(itertools.product(MODELS, ENGINES, ALGORITHMS))
MEGATRON = "actor_rollout_ref.actor.megatron"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("model", "engine", "algorithm"), COMBINATIONS)
def test_each_override_sets_a_different_key(model, engine, algorithm, mode):
    keys = [_key(override) for override in build_recipe(model, engine, algorithm, mode=mode).overrides()]
    assert len(keys) == len(set(keys)), sorted(key for key in keys if keys.count(key) > 1)


@pytest.mark.parametrize(("model", "engine"), list(itertools.product(MODELS, ENGINES)))
@pytest.mark.parametrize("baseline", [name for name in ALGORITHMS if name != "mhpo"])
def test_a_baseline_is_one_switch_away_from_mhpo(model, engine, baseline):
    mhpo = dict(build_recipe(model, engine, "mhpo").override_groups())
    other = dict(build_recipe(model, engine, baseline).override_groups())
    assert mhpo.pop("algorithm (mhpo)") != other.pop(f"algorithm ({baseline})")
    mhpo_trainer, other_trainer = mhpo.pop("trainer"), other.pop("trainer")
    mhpo_ray, other_ray = mhpo.pop("ray"), other.pop("ray")
    assert mhpo == other
    changed = set(mhpo_trainer) ^ set(other_trainer)
    # the run's name, and the folders named after it
    assert {_key(override) for override in changed} == {"trainer.experiment_name", "trainer.default_local_dir"}
    assert [_key(o) for o in mhpo_ray] == [_key(o) for o in other_ray]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("mhpo", {"policy_loss.loss_mode=mhpo", "loss_agg_mode=seq-mean-token-mean", "use_kl_loss=False"}),
        ("grpo", {"policy_loss.loss_mode=vanilla", "clip_ratio_low=0.2", "clip_ratio_high=0.2", "use_kl_loss=True",
                  "kl_loss_type=low_var_kl"}),
        ("clip-higher", {"policy_loss.loss_mode=vanilla", "clip_ratio_low=0.2", "clip_ratio_high=0.28",
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


def test_another_node_count_is_refused_unless_resized():
    with pytest.raises(RecipeError, match=r"laid out for 4 node\(s\) x 8 GPUs, got 2 x 8: .*--resize"):
        build_recipe("qwen3-30b-a3b-base", "megatron", nnodes=2)
    recipe = build_recipe("qwen2.5-7b-instruct", "megatron", nnodes=4, gpus_per_node=4, resize=True)
    assert {"trainer.nnodes=4", "trainer.n_gpus_per_node=4", f"{MEGATRON}.tensor_model_parallel_size=2"} <= set(
        recipe.overrides()
    )
    with pytest.raises(RecipeError, match="nnodes must be a positive integer, got 0"):
        build_recipe("qwen2.5-7b-instruct", "megatron", nnodes=0)


def test_dapo_is_refused_with_what_it_was_and_what_full_dapo_needs():
    with pytest.raises(RecipeError, match=r"'dapo' is now called 'clip-higher'.*dynamic sampling"):
        build_recipe("qwen2.5-7b-instruct", "fsdp", "dapo")
    assert "not full DAPO" in ALGORITHMS["clip-higher"].description


@pytest.mark.parametrize("model", MODELS)
def test_every_megatron_layout_recomputes_activations(model):
    # verl's Megatron engine ignores model.enable_gradient_checkpointing; its own default recomputes nothing.
    overrides = set(build_recipe(model, "megatron").overrides())
    assert {
        f"{MEGATRON}.override_transformer_config.recompute_granularity=full",
        f"{MEGATRON}.override_transformer_config.recompute_method=uniform",
        f"{MEGATRON}.override_transformer_config.recompute_num_layers=1",
    } <= overrides


def test_moe_fsdp_uses_fsdp2_as_verls_example():
    assert "actor_rollout_ref.actor.strategy=fsdp2" in build_recipe("qwen3-30b-a3b-base", "fsdp").overrides()
    assert "actor_rollout_ref.actor.strategy=fsdp" in build_recipe("qwen2.5-7b-instruct", "fsdp").overrides()


def test_checkpoints_and_logs_go_to_absolute_folders_and_two_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = build_recipe("qwen2.5-7b-instruct", "fsdp", output_dir="runs")
    overrides = recipe.overrides()
    folder = tmp_path / "runs" / "checkpoints" / "mhpo" / recipe.name
    assert f'trainer.default_local_dir="{folder}"' in overrides
    assert {"trainer.max_actor_ckpt_to_keep=2", "trainer.logger=[console,file,tensorboard]"} <= set(overrides)
    assert "trainer.log_val_generations=8" in overrides
    env = recipe.runtime_env()["env_vars"]
    assert env["VERL_FILE_LOGGER_PATH"] == str(tmp_path / "runs" / "logs" / "mhpo" / recipe.name / "metrics.jsonl")
    assert env["TENSORBOARD_DIR"] == str(tmp_path / "runs" / "tensorboard" / "mhpo" / recipe.name)


@pytest.mark.parametrize("mode", ["one-step-off", "fully-async"])
def test_asynchronous_modes_add_a_rollout_pool_and_verls_entry_point(mode):
    recipe = build_recipe("qwen2.5-7b-instruct", "megatron", mode=mode)
    overrides = recipe.overrides()
    assert recipe.entry_module.startswith("verl.experimental.") and recipe.config_dir.endswith("/config")
    assert {"actor_rollout_ref.hybrid_engine=False", "rollout.nnodes=1", "rollout.n_gpus_per_node=8"} <= set(overrides)
    assert overrides[:2] == ["hydra.searchpath=[pkg://verl.trainer.config,pkg://mhpo_verl.configs]", "+mhpo=paper"]
    assert (recipe.n_gpus, recipe.total_nnodes) == (24, 3)
    with pytest.raises(RecipeError, match="needs --mode one-step-off or fully-async"):
        build_recipe("qwen2.5-7b-instruct", "megatron", rollout_nnodes=1)


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
    assert f'+ray_kwargs.ray_init.runtime_env.env_vars.{variable}="{value}"' in local.overrides()
    submitted = build_recipe("qwen2.5-7b-instruct", "fsdp", pass_plugin_env=False)
    assert not any("ray_kwargs" in override for override in submitted.overrides())
