"""The per-GPU memory estimate: parameter counts against the published model sizes, and the layout arithmetic."""

import pytest

from mhpo_verl.memory import GB, activation_values_per_token_layer, estimate, parameter_counts
from mhpo_verl.preflight import compose
from mhpo_verl.recipes import MODELS, build_recipe

# Total parameters as the models' Hugging Face cards state them (billions), and Qwen3-30B-A3B's activated ones.
PUBLISHED_BILLIONS = {
    "qwen2.5-7b-instruct": 7.61,
    "qwen3-4b-base": 4.0,
    "qwen2.5-32b-instruct": 32.5,
    "qwen3-30b-a3b-base": 30.5,
    "qwen2.5-vl-7b-instruct": 8.29,
}


@pytest.mark.parametrize("model", PUBLISHED_BILLIONS)
def test_parameter_count_matches_the_published_size(model):
    arch = MODELS[model].architecture
    total = parameter_counts(arch).total(arch.num_layers) / 1e9
    assert total == pytest.approx(PUBLISHED_BILLIONS[model], rel=0.015)


def test_moe_activated_parameters_match_the_published_3b():
    arch = MODELS["qwen3-30b-a3b-base"].architecture
    counts = parameter_counts(arch)
    routed = counts.experts_per_layer * arch.experts_per_token / arch.num_experts
    activated = arch.num_layers * (counts.dense_per_layer + routed) + counts.embeddings
    assert activated / 1e9 == pytest.approx(3.3, rel=0.03)


def _estimate(model, engine, overrides=(), uses_reference=False, **options):
    recipe = build_recipe(model, engine, **options)
    config = compose(recipe.config_name, [*recipe.overrides(), *overrides])
    return estimate(config, recipe.model.architecture, 80.0, uses_reference)


def test_megatron_7b_resident_state_is_the_issues_28_gb():
    result = _estimate("qwen2.5-7b-instruct", "megatron")
    # 7.62e9 / TP 2 parameters: bf16 2 + fp32 gradients 4 bytes each, Adam 12 bytes over DP 8
    local = parameter_counts(MODELS["qwen2.5-7b-instruct"].architecture).total(28) / 2
    assert result.params == pytest.approx(2 * local / GB) and result.grads == pytest.approx(4 * local / GB)
    assert result.optimizer == pytest.approx(12 * local / 8 / GB)
    assert 27 < result.resident < 30
    assert result.rollout == pytest.approx(result.resident + 0.4 * 80 + result.overhead)


def test_context_parallel_does_not_shrink_activations_at_a_fixed_budget():
    # verl packs budget x CP tokens per micro-batch and splits them over CP: per-GPU tokens stay the budget.
    cp = "actor_rollout_ref.actor.megatron.context_parallel_size"
    one = _estimate("qwen3-4b-base", "megatron", [f"{cp}=1"])
    two = _estimate("qwen3-4b-base", "megatron", [f"{cp}=2"])
    assert two.activations == one.activations and two.logits == one.logits
    assert two.optimizer == pytest.approx(2 * one.optimizer)  # half the data-parallel ranks to shard over


def test_recompute_keeps_only_layer_inputs():
    arch = MODELS["qwen2.5-7b-instruct"].architecture
    full = _estimate("qwen2.5-7b-instruct", "megatron")
    none = _estimate(
        "qwen2.5-7b-instruct",
        "megatron",
        ["actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity=null"],
    )
    tokens, tp = 24576, 2
    assert none.activations == pytest.approx(tokens * 2 * activation_values_per_token_layer(arch) * 28 / tp / GB)
    assert full.activations < none.activations / 8


def test_offload_and_reference_and_separate_rollout_pool():
    offloaded = _estimate("qwen2.5-32b-instruct", "fsdp")
    assert offloaded.params == offloaded.grads == offloaded.optimizer == 0
    with_ref = _estimate("qwen2.5-7b-instruct", "fsdp", uses_reference=True)
    assert with_ref.reference == pytest.approx(
        2 * parameter_counts(MODELS["qwen2.5-7b-instruct"].architecture).total(28) / 8 / GB
    )
    recipe = build_recipe("qwen2.5-7b-instruct", "fsdp", mode="one-step-off")
    config = compose(recipe.config_name, recipe.overrides(), recipe.config_dir)
    separate = estimate(config, recipe.model.architecture, 80.0, False)
    assert separate.vllm == 0 and separate.rollout == 0  # trainer GPUs hold no vLLM
    assert separate.rollout_gpu_vllm == pytest.approx(0.6 * 80 + separate.overhead)
