"""Hydra configs layered on verl's ppo_trainer, the MHPO config dataclass, and validation in the driver."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import verl  # noqa: F401
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from verl.trainer.config import AlgoConfig
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.workers.config import FSDPActorConfig, McoreActorConfig, RolloutConfig

import mhpo_verl
from mhpo_verl.config import MHPOPolicyLossConfig
from mhpo_verl.params import MHPOParams

# verl needs these to convert/validate the actor outside a full run (they have no default in ppo_trainer).
RUNNABLE = [
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "trainer.n_gpus_per_node=2",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.n=4",
]


def compose_config(name="mhpo_trainer", overrides=()):
    with initialize_config_dir(config_dir=str(mhpo_verl.configs_dir()), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def test_paper_defaults_agree_everywhere():
    params = MHPOParams()
    assert (params.c, params.k_pos, params.lambda_pos, params.k_neg, params.lambda_neg) == (1.5, 1.5, 1.0, 2.0, 0.8)
    assert (params.hazard_input, params.ratio_level, params.log_ratio_clamp) == ("softplus", "token", 20.0)
    assert MHPOPolicyLossConfig().mhpo_params() == params
    yaml_policy_loss = compose_config().actor_rollout_ref.actor.policy_loss
    assert MHPOParams.from_mapping(yaml_policy_loss) == params
    assert {f.name for f in dataclasses.fields(MHPOParams)} <= set(yaml_policy_loss)  # every option is visible


def test_fsdp_config_composes_and_converts_to_verl_dataclasses():
    config = compose_config(overrides=RUNNABLE)
    actor = config.actor_rollout_ref.actor
    assert config.model_engine == "dp" and actor.strategy == "fsdp"
    assert actor.policy_loss.loss_mode == "mhpo" and config.algorithm.adv_estimator == "mhpo"
    assert actor.loss_agg_mode == "seq-mean-token-mean" and actor.use_kl_loss is False
    actor_config = omega_conf_to_dataclass(actor)
    assert isinstance(actor_config, FSDPActorConfig)
    assert isinstance(actor_config.policy_loss, MHPOPolicyLossConfig)
    assert isinstance(omega_conf_to_dataclass(config.algorithm), AlgoConfig)
    assert isinstance(omega_conf_to_dataclass(config.actor_rollout_ref.rollout), RolloutConfig)
    validate_config(config, use_reference_policy=False, use_critic=False)


def test_overrides_reach_the_loss_config():
    config = compose_config(
        overrides=[
            *RUNNABLE,
            "actor_rollout_ref.actor.policy_loss.c=2.5",
            "actor_rollout_ref.actor.policy_loss.k_neg=3",
            "actor_rollout_ref.actor.policy_loss.ratio_level=sequence",
            "actor_rollout_ref.actor.policy_loss.hazard_input=relu",
            "actor_rollout_ref.actor.policy_loss.implementation=fused",
        ]
    )
    params = omega_conf_to_dataclass(config.actor_rollout_ref.actor).policy_loss.mhpo_params()
    assert (params.c, params.k_neg, params.ratio_level, params.hazard_input) == (2.5, 3, "sequence", "relu")
    assert params.implementation == "fused"


def test_megatron_variant_equals_fsdp_config_with_model_engine_megatron():
    via_file = compose_config("mhpo_megatron_trainer", RUNNABLE)
    via_override = compose_config("mhpo_trainer", [*RUNNABLE, "model_engine=megatron"])
    assert OmegaConf.to_container(via_file) == OmegaConf.to_container(via_override)
    actor = via_file.actor_rollout_ref.actor
    assert actor.strategy == "megatron" and actor.policy_loss.loss_mode == "mhpo"
    actor_config = omega_conf_to_dataclass(actor)
    assert isinstance(actor_config, McoreActorConfig)
    assert isinstance(actor_config.policy_loss, MHPOPolicyLossConfig)
    validate_config(via_file, use_reference_policy=False, use_critic=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ("c=0", "c must be a positive finite number, got 0"),
        ("c=-1.5", "c must be a positive finite number, got -1.5"),
        ("c=nan", "c must be a positive finite number, got nan"),
        ("c=abc", "c must be a positive number, got 'abc'"),
        ("k_pos=0", "k_pos must be a positive finite number, got 0"),
        ("lambda_pos=-1", "lambda_pos must be a positive finite number"),
        ("k_neg=inf", "k_neg must be a positive finite number, got inf"),
        ("lambda_neg=0.0", "lambda_neg must be a positive finite number, got 0.0"),
        ("log_ratio_clamp=0", "log_ratio_clamp must be a positive finite number"),
        ("hazard_input=sigmoid", "hazard_input must be one of ['softplus', 'relu'], got 'sigmoid'"),
        ("ratio_level=group", "ratio_level must be one of ['token', 'sequence'], got 'group'"),
        ("implementation=triton", "implementation must be one of ['eager', 'fused'], got 'triton'"),
    ],
)
def test_invalid_values_fail_when_the_driver_validates_the_config(override, message):
    config = compose_config(overrides=[*RUNNABLE, f"actor_rollout_ref.actor.policy_loss.{override}"])
    with pytest.raises(InstantiationException) as error:
        validate_config(config, use_reference_policy=False, use_critic=False)
    assert message in str(error.value)
    assert "actor_rollout_ref.actor.policy_loss" in str(error.value)


def test_params_validation_names_the_value():
    with pytest.raises(ValueError, match=r"lambda_neg must be a positive finite number, got -0\.8"):
        MHPOParams(lambda_neg=-0.8)
    with pytest.raises(ValueError, match=r"c must be a positive number, got True \(bool\)"):
        MHPOParams(c=True)
    assert MHPOParams.from_mapping({"c": 2}).c == 2
    assert MHPOParams.from_mapping(None) == MHPOParams()
    assert math.isclose(MHPOParams.from_mapping(OmegaConf.create({"k_pos": 1.25})).k_pos, 1.25)


@pytest.mark.slow
def test_verl_main_ppo_rejects_a_bad_value_before_starting_ray(tmp_path):
    """The real entry point: the error is raised in the driver, before ray.init and before any worker exists."""
    command = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "--config-path=pkg://mhpo_verl.configs", "--config-name=mhpo_trainer",
        *RUNNABLE, "actor_rollout_ref.actor.policy_loss.k_pos=-2",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "MHPO option k_pos must be a positive finite number, got -2" in output
    assert "ray init kwargs" not in output  # main_ppo prints this right before ray.init


# ---------------------------------------------------------------------------------------------------------------
# Run checks verl leaves to the first step or never makes; the plugin runs them inside verl's validate_config (the
# function main_ppo calls in the driver before Ray starts).


def _validate(overrides, config_name="mhpo_trainer"):
    validate_config(compose_config(config_name, [*RUNNABLE, *overrides]), use_reference_policy=False, use_critic=False)


def test_validate_config_is_the_wrapped_one_main_ppo_calls():
    import verl.trainer.main_ppo as main_ppo
    import verl.utils.config as verl_config

    from mhpo_verl.plugin import WRAPPED_TAG

    assert main_ppo.validate_config is verl_config.validate_config is validate_config
    assert hasattr(validate_config, WRAPPED_TAG)


@pytest.mark.parametrize("one_override", [False, True])
def test_mhpo_estimator_with_one_response_per_prompt_fails_in_the_driver(one_override):
    overrides = [*RUNNABLE, "actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.rollout.n=1"]
    if one_override:  # verl's own ppo_trainer with only the estimator switched: no MHPO config file involved
        config = _compose_verl([*overrides, "algorithm.adv_estimator=mhpo"])
    else:
        config = compose_config(overrides=overrides)
    with pytest.raises(ValueError, match=r"actor_rollout_ref.rollout.n=1 gives each prompt one response"):
        validate_config(config, use_reference_policy=False, use_critic=False)
    config.actor_rollout_ref.rollout.n = 2
    validate_config(config, use_reference_policy=False, use_critic=False)


def _compose_verl(overrides):
    from hydra import initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def test_other_estimators_and_losses_are_not_checked():
    """grpo with vanilla PPO and one response per prompt is verl's business, not the plugin's."""
    config = _compose_verl(
        [*RUNNABLE, "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=1",
         "actor_rollout_ref.actor.ppo_mini_batch_size=8"]
    )  # fmt: skip
    config.algorithm.rollout_correction.bypass_mode = True
    config.algorithm.rollout_correction.rollout_rs = "token_k1"
    validate_config(config, use_reference_policy=False, use_critic=False)


@pytest.mark.parametrize(
    "settings",
    [
        ["algorithm.rollout_correction.rollout_is=token"],
        ["algorithm.rollout_correction.rollout_rs=seq_mean_k1", "algorithm.rollout_correction.rollout_rs_threshold=2"],
        ["algorithm.rollout_correction.rollout_is=sequence", "algorithm.rollout_correction.rollout_rs=token_k1"],
    ],
)
def test_bypass_mode_with_rollout_is_or_rs_is_refused(settings):
    with pytest.raises(ValueError) as error:
        _validate(["algorithm.rollout_correction.bypass_mode=true", *settings])
    message = str(error.value)
    assert "bypass_mode=true skips verl's rollout correction" in message
    for setting in settings:
        if "threshold" not in setting:
            assert setting in message
    _validate(["algorithm.rollout_correction.bypass_mode=false", *settings])  # decoupled mode applies them
    _validate(["algorithm.rollout_correction.bypass_mode=true"])  # bypass alone is fine


def test_seq_mean_token_sum_norm_without_a_scale_factor_warns_naming_the_fix(caplog):
    with caplog.at_level("WARNING", logger="mhpo_verl.config"):
        _validate(["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"])
    warnings = [record.getMessage() for record in caplog.records if record.name == "mhpo_verl.config"]
    assert len(warnings) == 1
    assert "set actor_rollout_ref.actor.loss_scale_factor to a constant" in warnings[0].lower()
    assert "actor_rollout_ref.rollout.response_length=" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="mhpo_verl.config"):
        _validate(["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm",
                   "actor_rollout_ref.actor.loss_scale_factor=1024"])  # fmt: skip
    assert not [record for record in caplog.records if record.name == "mhpo_verl.config"]


@pytest.mark.slow
def test_one_response_per_prompt_fails_before_ray_starts_in_main_ppo(tmp_path):
    """The real entry point: verl's main_ppo stops in the driver with the message, before ray.init."""
    command = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "--config-path=pkg://mhpo_verl.configs", "--config-name=mhpo_trainer",
        *RUNNABLE, "actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.rollout.n=1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "gives each prompt one response: every advantage would be 0" in output
    assert "ray init kwargs" not in output
