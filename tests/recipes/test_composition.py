"""Every recipe x algorithm composes with verl's real Hydra config and passes verl's dataclasses and validation."""

import itertools

import pytest
from omegaconf import OmegaConf

from mhpo_verl.config import MHPOPolicyLossConfig
from mhpo_verl.params import MHPOParams
from mhpo_verl.preflight import compose, preflight, prepare_for_entry
from mhpo_verl.recipes import ALGORITHMS, ENGINES, MODELS, build_recipe

EXPECTED = {  # loss_mode, adv_estimator, loss_agg_mode, use_kl_loss
    "mhpo": ("mhpo", "mhpo", "seq-mean-token-mean", False),
    "grpo": ("vanilla", "grpo", "seq-mean-token-mean", True),
    "clip-higher": ("vanilla", "grpo", "token-mean", False),
    "gspo": ("gspo", "grpo", "seq-mean-token-mean", False),
    "sapo": ("sapo", "grpo", "seq-mean-token-mean", False),
    "cispo": ("cispo", "grpo", "token-mean", False),
}


@pytest.mark.slow
@pytest.mark.parametrize(("model", "engine", "algorithm"), list(itertools.product(MODELS, ENGINES, ALGORITHMS)))
def test_recipe_composes_converts_and_validates(model, engine, algorithm, data_dir):
    from verl.utils.config import omega_conf_to_dataclass

    recipe = build_recipe(model, engine, algorithm, data_dir=str(data_dir))
    config = compose(recipe.config_name, recipe.overrides())
    findings = preflight(config, recipe.model.architecture)
    assert [str(f) for f in findings if f.level != "ok"] == []
    checks = {finding.check for finding in findings}
    assert {"dataclasses", "verl validate_config", "parallel layout", "batch sizes", "token budget"} <= checks
    assert {"memory", "checkpoints"} <= checks  # every shipped layout within 80 GB by the estimate

    actor = config.actor_rollout_ref.actor
    loss_mode, estimator, aggregation, kl = EXPECTED[algorithm]
    assert (actor.policy_loss.loss_mode, config.algorithm.adv_estimator) == (loss_mode, estimator)
    assert (actor.loss_agg_mode, actor.use_kl_loss) == (aggregation, kl)
    assert actor.strategy == ("megatron" if engine == "megatron" else recipe.model.fsdp.strategy)

    actor_config = omega_conf_to_dataclass(actor)
    assert type(actor_config).__name__ == ("McoreActorConfig" if engine == "megatron" else "FSDPActorConfig")
    assert isinstance(actor_config.policy_loss, MHPOPolicyLossConfig)
    assert actor_config.policy_loss.mhpo_params() == MHPOParams()  # the paper's defaults, untouched by recipes
    assert type(omega_conf_to_dataclass(config.actor_rollout_ref.rollout)).__name__ == "RolloutConfig"
    assert type(omega_conf_to_dataclass(config.algorithm)).__name__ == "AlgoConfig"

    layout = recipe.model.megatron if engine == "megatron" else recipe.model.fsdp
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node) == (layout.nnodes, layout.gpus_per_node)
    assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == layout.rollout_tp
    if engine == "megatron":
        megatron = actor_config.megatron
        assert (megatron.tensor_model_parallel_size, megatron.pipeline_model_parallel_size) == (layout.tp, layout.pp)
        assert (megatron.context_parallel_size, megatron.expert_model_parallel_size) == (layout.cp, layout.ep)
        assert megatron.sequence_parallel == (layout.sequence_parallel and layout.tp > 1)


def test_sapo_temperatures_reach_the_actor_dataclass(data_dir):
    from verl.utils.config import omega_conf_to_dataclass

    recipe = build_recipe("qwen3-4b-base", "fsdp", "sapo", data_dir=str(data_dir))
    actor = omega_conf_to_dataclass(compose(recipe.config_name, recipe.overrides()).actor_rollout_ref.actor)
    assert (actor.tau_pos, actor.tau_neg) == (1.0, 1.05)


def test_extra_overrides_win_over_the_recipe(data_dir):
    recipe = build_recipe("qwen2.5-7b-instruct", "fsdp", data_dir=str(data_dir))
    config = compose(recipe.config_name, [*recipe.overrides(), "actor_rollout_ref.actor.policy_loss.c=2.0"])
    assert config.actor_rollout_ref.actor.policy_loss.c == 2.0
    assert OmegaConf.select(config, "trainer.total_epochs") == recipe.schedule.total_epochs


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one-step-off", "fully-async"])
@pytest.mark.parametrize(("model", "engine"), list(itertools.product(MODELS, ENGINES)))
def test_asynchronous_recipe_composes_from_verls_entry_config_and_passes(model, engine, mode, data_dir):
    recipe = build_recipe(model, engine, "mhpo", mode=mode, data_dir=str(data_dir))
    config = prepare_for_entry(compose(recipe.config_name, recipe.overrides(), recipe.config_dir), mode)
    findings = preflight(config, recipe.model.architecture, mode=mode)
    assert [str(f) for f in findings if f.level != "ok"] == []
    assert {mode, "memory", "parallel layout"} <= {finding.check for finding in findings}
    # verl's entry config survives under ours: its async settings, then MHPO's loss, estimator and aggregation
    assert config.algorithm.rollout_correction.bypass_mode is True
    assert config.actor_rollout_ref.rollout.calculate_log_probs is True
    assert config.actor_rollout_ref.rollout.nnodes == config.rollout.nnodes == 1  # what the entry's main copies
    actor = config.actor_rollout_ref.actor
    assert (actor.policy_loss.loss_mode, config.algorithm.adv_estimator, actor.loss_agg_mode) == EXPECTED["mhpo"][:3]
    assert actor.strategy == ("megatron" if engine == "megatron" else recipe.model.fsdp.strategy)
    if mode == "fully-async":
        assert (config.data.train_batch_size, config.async_training.require_batches) == (0, 4)
        assert actor.use_rollout_log_probs is True
    else:
        assert config.actor_rollout_ref.rollout.free_cache_engine is False
