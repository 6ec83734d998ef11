"""Each preflight check catches the mistake it exists for, and names the bad value."""

import json

import pytest

from mhpo_verl.preflight import architecture_from_model_dir, compose, errors, preflight
from mhpo_verl.recipes import build_recipe

DENSE_7B = ("qwen2.5-7b-instruct", "megatron")
MOE_30B = ("qwen3-30b-a3b-base", "megatron")
FSDP_7B = ("qwen2.5-7b-instruct", "fsdp")
MEGATRON = "actor_rollout_ref.actor.megatron"


def _findings(recipe_key, overrides, data_dir, algorithm="mhpo", **options):
    recipe = build_recipe(*recipe_key, algorithm, data_dir=str(data_dir), **options)
    config = compose(recipe.config_name, [*recipe.overrides(), *overrides])
    return preflight(config, recipe.model.architecture)


@pytest.mark.parametrize(
    ("recipe_key", "overrides", "check", "message"),
    [
        (DENSE_7B, [f"{MEGATRON}.tensor_model_parallel_size=3"], "actor megatron",
         "world size 16 is not divisible by TP*PP*CP = 3*1*1 = 3"),
        (DENSE_7B, [f"{MEGATRON}.tensor_model_parallel_size=8"], "actor megatron",
         "TP 8 must divide the 28 attention heads and 4 KV heads"),
        (DENSE_7B, [f"{MEGATRON}.expert_model_parallel_size=2"], "actor megatron",
         "expert parallel size 2 on a dense model"),
        (DENSE_7B, [f"{MEGATRON}.virtual_pipeline_model_parallel_size=2"], "actor megatron",
         "virtual pipeline size 2 needs pipeline parallel size > 1"),
        (MOE_30B, [f"{MEGATRON}.expert_model_parallel_size=3"], "actor megatron", "EP 3 must divide the 128 experts"),
        (MOE_30B, [f"{MEGATRON}.expert_model_parallel_size=32"], "actor megatron",
         "world size 32 is not divisible by ETP*EP*PP = 1*32*2 = 64"),
        (MOE_30B, [f"{MEGATRON}.virtual_pipeline_model_parallel_size=5"], "actor megatron",
         "48 layers do not split into PP*VPP = 10 equal stages"),
        (FSDP_7B, ["actor_rollout_ref.rollout.tensor_model_parallel_size=3"], "rollout",
         "world size 8 is not divisible by one replica's 3"),
        (FSDP_7B, ["actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=3"], "actor fsdp",
         "world size 8 is not divisible by Ulysses SP 3"),
        (FSDP_7B, ["actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=8"], "actor fsdp",
         "Ulysses SP 8 must divide the 28 attention heads"),
        (FSDP_7B, ["data.train_batch_size=500"], "batch sizes",
         "data.train_batch_size 500 is not a multiple of actor.ppo_mini_batch_size 128"),
        (DENSE_7B, ["actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=1"],
         "batch sizes", "a mini-batch of 4 prompts x 1 responses = 4 does not split over 8 data-parallel ranks"),
        (FSDP_7B, ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000"], "token budget",
         "actor.ppo_max_token_len_per_gpu = 1000 is below one prompt + response = 3072 tokens"),
        (FSDP_7B, ["actor_rollout_ref.actor.policy_loss.loss_mode=mhpoo"], "policy loss",
         "loss_mode='mhpoo' is not registered"),
        (FSDP_7B, ["algorithm.adv_estimator=grop"], "advantage estimator", "adv_estimator='grop' is not registered"),
        (FSDP_7B, ["reward.custom_reward_function.path=pkg://no_such_reward_module"], "reward function",
         "pkg://no_such_reward_module:compute_score does not load"),
        (FSDP_7B, ["actor_rollout_ref.actor.use_dynamic_bsz=False"], "dataclasses",
         "Please set at least one of 'actor.ppo_micro_batch_size'"),
        (FSDP_7B, ["actor_rollout_ref.actor.policy_loss.k_neg=-1"], "dataclasses", "k_neg"),
    ],
)
def test_bad_setting_is_an_error_naming_it(recipe_key, overrides, check, message, data_dir):
    failed = errors(_findings(recipe_key, overrides, data_dir))
    assert any(f.check == check and message in f.message for f in failed), [str(f) for f in failed]


def test_verl_validate_config_runs_its_own_checks(data_dir):
    # Fixed micro-batches (no dynamic batch size) switch on verl's world-size check for Megatron.
    overrides = [
        "actor_rollout_ref.actor.use_dynamic_bsz=False",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=False",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        f"{MEGATRON}.tensor_model_parallel_size=3",
    ]
    failed = errors(_findings(DENSE_7B, overrides, data_dir))
    verl = [f for f in failed if f.check == "verl validate_config"]
    assert verl and "n_gpus (16) must be divisible by model_parallel_size (3)" in verl[0].message


def test_fixed_micro_batches_must_divide_each_rank_share(data_dir):
    overrides = [
        "actor_rollout_ref.actor.use_dynamic_bsz=False",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    ]
    failed = errors(_findings(FSDP_7B, overrides, data_dir))
    assert any("128 responses per rank per mini-batch is not a multiple of ppo_micro_batch_size_per_gpu 3"
               in f.message for f in failed), [str(f) for f in failed]


def test_reference_layout_is_checked_when_kl_needs_the_reference(data_dir):
    overrides = ["actor_rollout_ref.ref.megatron.tensor_model_parallel_size=3"]
    grpo = errors(_findings(DENSE_7B, overrides, data_dir, algorithm="grpo"))
    assert any(f.check == "ref megatron" and "TP*PP*CP = 3*1*1" in f.message for f in grpo)
    mhpo = errors(_findings(DENSE_7B, overrides, data_dir, algorithm="mhpo"))  # no KL: no reference model
    assert not any(f.check == "ref megatron" for f in mhpo)


def test_missing_data_files_are_a_warning_with_the_fix(tmp_path):
    findings = _findings(FSDP_7B, [], tmp_path / "empty")
    (train,) = [f for f in findings if f.check == "data.train_files"]
    assert train.level == "warning" and "dapo_math_17k/train.parquet" in train.message
    assert "python -m mhpo_verl data convert" in train.message
    assert errors(findings) == []


def test_sequence_parallel_without_tensor_parallel_is_a_warning(data_dir):
    findings = _findings(DENSE_7B, [f"{MEGATRON}.tensor_model_parallel_size=1"], data_dir)
    assert any(f.level == "warning" and "sequence_parallel has no effect with TP 1" in f.message for f in findings)
    assert errors(findings) == []


def test_architecture_is_read_from_a_local_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"num_hidden_layers": 30, "num_attention_heads": 12, "num_key_value_heads": 4, "num_experts": 64})
    )
    arch = architecture_from_model_dir(str(folder))
    assert (arch.num_layers, arch.num_attention_heads, arch.num_kv_heads, arch.num_experts) == (30, 12, 4, 64)
    assert architecture_from_model_dir(str(tmp_path / "absent")) is None
    (folder / "config.json").write_text(json.dumps({"model_type": "bert-like", "hidden_size": 8}))
    assert architecture_from_model_dir(str(folder)) is None


def test_local_model_folder_shape_is_checked_instead_of_the_recipe_model(tmp_path, data_dir, capsys):
    from mhpo_verl.launch import main

    folder = tmp_path / "local-7b"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"num_hidden_layers": 30, "num_attention_heads": 28, "num_key_value_heads": 4})
    )
    arguments = ["--model", "qwen2.5-7b-instruct", "--engine", "megatron", "--model-path", str(folder)]
    pipeline = ["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=4"]
    assert main([*arguments, "--data-dir", str(data_dir), "--dry-run", *pipeline]) == 1
    assert "30 layers do not split into PP*VPP = 4 equal stages" in capsys.readouterr().out


def test_unknown_model_skips_shape_checks_with_a_warning(data_dir):
    recipe = build_recipe(*DENSE_7B, data_dir=str(data_dir))
    config = compose(recipe.config_name, recipe.overrides())
    findings = preflight(config, None)
    assert any(f.check == "model shape" and f.level == "warning" for f in findings)


def test_relative_checkpoint_folder_is_refused_on_multi_node(data_dir):
    relative = ["trainer.default_local_dir=checkpoints/run"]
    failed = errors(_findings(DENSE_7B, relative, data_dir))
    assert any(f.check == "checkpoints" and "'checkpoints/run' is relative" in f.message for f in failed)
    assert not any(f.check == "checkpoints" for f in errors(_findings(FSDP_7B, relative, data_dir)))  # one node


def test_every_checkpoint_kept_is_a_warning(data_dir):
    findings = _findings(FSDP_7B, ["trainer.max_actor_ckpt_to_keep=null"], data_dir)
    assert any(f.check == "checkpoints" and f.level == "warning" and "every checkpoint kept" in f.message
               for f in findings)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # verl's default: no recompute at all (the Megatron engine ignores enable_gradient_checkpointing)
        ([f"{MEGATRON}.override_transformer_config.recompute_granularity=null"], "without recompute"),
        # the former vLLM share beside a resident actor: 28.5 GB of weights, gradients and optimizer + 0.6 x 80 GB
        (["actor_rollout_ref.rollout.gpu_memory_utilization=0.6"], "vLLM at 0.6"),
    ],
)
def test_memory_estimate_warns_about_the_old_7b_megatron_settings(overrides, reason, data_dir):
    (memory,) = [f for f in _findings(DENSE_7B, overrides, data_dir) if f.check == "memory"]
    assert memory.level == "warning" and "is above the 80 GB GPU" in memory.message, reason


def test_fully_async_needs_the_streaming_batch_settings(data_dir):
    from mhpo_verl.preflight import prepare_for_entry

    recipe = build_recipe(*FSDP_7B, mode="fully-async", data_dir=str(data_dir))
    overrides = [*recipe.overrides(), "data.train_batch_size=512", "actor_rollout_ref.hybrid_engine=True"]
    config = prepare_for_entry(compose(recipe.config_name, overrides, recipe.config_dir), "fully-async")
    failed = errors(preflight(config, recipe.model.architecture, mode="fully-async"))
    messages = [f.message for f in failed if f.check == "fully-async"]
    assert any("data.train_batch_size = 512 but verl's fully-async trainer needs 0" in m for m in messages)
    assert any("actor_rollout_ref.hybrid_engine = True" in m for m in messages)


def test_one_step_off_rollout_tp_must_divide_the_rollout_pool(data_dir):
    from mhpo_verl.preflight import prepare_for_entry

    recipe = build_recipe(*FSDP_7B, mode="one-step-off", rollout_gpus_per_node=3, data_dir=str(data_dir))
    config = prepare_for_entry(compose(recipe.config_name, recipe.overrides(), recipe.config_dir), "one-step-off")
    failed = errors(preflight(config, recipe.model.architecture, mode="one-step-off"))
    assert any(f.check == "rollout" and "world size 3 is not divisible by one replica's 2" in f.message for f in failed)
