"""Tests written to kill mutations that survived the rest of the suite (issue 16), each against an independent value.

- the diagnostics' survival fallback when one side of r = 1 has no tokens, for both sides and both hazard inputs;
- the estimator's all-rewards-equal shortcut, on float64 rewards whose group mean is off by one ulp;
- extreme log-probabilities and bfloat16 inputs, checked against the float64 reference at stated tolerances.

The diagnostics are read through verl's registered ``mhpo`` loss (the path the actor takes) and checked against
float64 NumPy formulas written here, not against the module's own helpers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

from mhpo_verl.advantage import group_relative_advantages
from mhpo_verl.params import MHPOParams
from tests.core.test_objective import IMPLEMENTATIONS, random_batch, reference, run

HAZARDS = {
    "paper softplus": {},
    "softplus, other shape": {"k_pos": 1.0, "lambda_pos": 2.0, "k_neg": 3.0, "lambda_neg": 0.5},
    "relu": {"hazard_input": "relu"},
    "relu, other shape": {"hazard_input": "relu", "k_pos": 0.7, "k_neg": 1.3},
}


def survival_of(log_ratio: np.ndarray, options: dict) -> np.ndarray:
    """exp(-zeta(u)) in float64 from the paper's formulas (softplus, or relu, of the detached psi)."""
    params = MHPOParams(**options)
    psi = params.c * np.tanh(log_ratio / params.c)
    if params.hazard_input == "softplus":
        s_pos, s_neg = np.logaddexp(0.0, psi), np.logaddexp(0.0, -psi)
    else:
        s_pos, s_neg = np.maximum(psi, 0.0), np.maximum(-psi, 0.0)
    return np.exp(-((s_pos / params.lambda_pos) ** params.k_pos + (s_neg / params.lambda_neg) ** params.k_neg))


def metrics_for(log_ratio: np.ndarray, mask: np.ndarray, options: dict) -> dict[str, float]:
    old = torch.tensor(-2.0 + np.zeros_like(log_ratio))
    new = old + torch.tensor(log_ratio)
    new[~torch.tensor(mask)] = float("nan")  # padding must stay out of every statistic
    advantages = torch.ones_like(old)
    _, metrics = get_policy_loss_fn("mhpo")(
        old_log_prob=old,
        log_prob=new,
        advantages=advantages,
        response_mask=torch.tensor(mask),
        loss_agg_mode="token-mean",
        config={"policy_loss": options},
    )
    return metrics


def one_sided_batch(sign: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    log_ratio = sign * rng.uniform(0.05, 2.5, (4, 9))
    mask = np.arange(9)[None, :] < np.array([[9], [3], [7], [1]])
    return log_ratio, mask


@pytest.mark.parametrize("hazard", HAZARDS)
@pytest.mark.parametrize("populated", ["pos", "neg"])
def test_a_side_without_tokens_reports_the_on_policy_survival(hazard, populated):
    """The mean survival over tokens with r > 1 (r < 1) falls back to exp(-zeta) at r = 1 when there are none."""
    options = HAZARDS[hazard]
    log_ratio, mask = one_sided_batch(1.0 if populated == "pos" else -1.0)
    metrics = metrics_for(log_ratio, mask, options)
    empty = "neg" if populated == "pos" else "pos"
    on_policy = survival_of(np.zeros(1), options)[0]
    assert metrics[f"actor/mhpo/survival_{empty}"] == pytest.approx(on_policy, rel=1e-6)
    assert metrics[f"actor/mhpo/survival_{populated}"] == pytest.approx(
        survival_of(log_ratio[mask], options).mean(), rel=1e-5
    )


@pytest.mark.parametrize("hazard", HAZARDS)
def test_an_on_policy_batch_reports_the_on_policy_survival_on_both_sides(hazard):
    options = HAZARDS[hazard]
    _, mask = one_sided_batch(1.0)
    metrics = metrics_for(np.zeros(mask.shape), mask, options)
    expected = survival_of(np.zeros(1), options)[0]
    if options.get("hazard_input") == "relu":
        assert expected == 1.0  # relu(0) = 0: no hazard on-policy, nothing is rescaled
    else:
        assert expected < 0.9  # softplus(0) = log 2: the paper's form rescales on-policy tokens (0.265 by default)
    for side in ("pos", "neg"):
        assert metrics[f"actor/mhpo/survival_{side}"] == pytest.approx(expected, rel=1e-6)
    assert metrics["actor/mhpo/grad_scale_mean"] == pytest.approx(expected, rel=1e-6)  # M(1) = 1


# float64 rewards whose group mean is not the reward: sum([0.1] * 3) / 3 = 0.1 + 1.4e-17, and centring by it leaves
# one ulp that the std division (std ~ 1e-17, epsilon 1e-6) would turn into a non-zero advantage.
EQUAL_GROUPS = {"a": [0.1] * 3, "b": [0.7] * 3, "c": [0.3, 0.9]}


def test_the_premise_float64_means_of_equal_rewards_are_off_by_an_ulp():
    for rewards in (EQUAL_GROUPS["a"], EQUAL_GROUPS["b"]):
        values = torch.tensor(rewards, dtype=torch.float64)
        assert (values - values.sum() / len(rewards)).abs().max() > 0


@pytest.mark.parametrize("normalize_by_std", [True, False])
def test_float64_groups_of_equal_rewards_get_exactly_zero_advantage(normalize_by_std):
    group_ids = [group for group, rewards in EQUAL_GROUPS.items() for _ in rewards]
    scores = torch.tensor([r for rewards in EQUAL_GROUPS.values() for r in rewards], dtype=torch.float64)
    advantages = group_relative_advantages(scores, group_ids, epsilon=1e-6, normalize_by_std=normalize_by_std)
    assert advantages.dtype == torch.float64
    assert advantages[:6].tolist() == [0.0] * 6
    expected = 0.3 / (math.sqrt(0.18) + 1e-6) if normalize_by_std else 0.3  # +-0.3 / (std 0.424 + epsilon)
    assert advantages[6:].tolist() == pytest.approx([-expected, expected], rel=1e-12)


def test_the_registered_estimator_gives_zero_for_equal_float64_rewards():
    index = np.array(["a"] * 3 + ["b"] * 3, dtype=object)
    rewards = torch.zeros(6, 4, dtype=torch.float64)
    rewards[:, -1] = torch.tensor([0.1] * 3 + [0.7] * 3, dtype=torch.float64)
    mask = torch.ones(6, 4, dtype=torch.bool)
    advantages, _ = get_adv_estimator_fn("mhpo")(token_level_rewards=rewards, response_mask=mask, index=index)
    assert (advantages == 0).all()


# Tolerances: float32 keeps ~7 digits; the loss is exp(psi - zeta) * A, so an absolute error d in psi - zeta is a
# relative error d in the loss. bfloat16 has 8 significant bits (unit roundoff 2^-9 = 0.2%); zeta reaches ~4.5 at
# psi = -c, where bf16 rounding alone moves it by up to 0.009, and a few more roundings follow: 3% of the largest
# value, about 15 bf16 roundoffs, is the stated bound (measured: at most 1.1% for bf16, 3e-8 for float32). Values
# are compared against the float64 reference evaluated on the inputs as rounded to the tested dtype (what the
# computation actually received).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 3e-2}


def rounded(array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    return torch.tensor(array, dtype=dtype).double().numpy()


def assert_matches_reference(values: torch.Tensor, expected: np.ndarray, dtype: torch.dtype, what: str) -> None:
    tolerance = TOLERANCE[dtype]
    scale = max(float(np.abs(expected).max()), 1e-30)
    torch.testing.assert_close(
        values.double(), torch.tensor(expected), rtol=tolerance, atol=tolerance * scale, msg=lambda m: f"{what}: {m}"
    )


EXTREME = {
    # |log r| far beyond the clamp (20) on both sides, log-probs of -1e4 and -1e-30, one exactly on-policy token.
    "new": np.array([[-1e4, 0.0, -50.0, 1e4], [-1e-30, -700.0, 0.0, -3.0]]),
    "old": np.array([[0.0, -1e4, -1e-8, -1e4], [-700.0, -1e-30, -88.0, -3.0]]),
    "advantages": np.array([[5.0] * 4, [-5.0] * 4]),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_extreme_log_probs_match_the_float64_reference(implementation, dtype):
    new, old, advantages = (rounded(EXTREME[key], dtype) for key in ("new", "old", "advantages"))
    mask = np.ones_like(new, dtype=bool)
    terms, grad = run(implementation, new, old, advantages, mask, MHPOParams(), dtype=dtype)
    ref_loss, ref_grad, _, _ = reference(new, old, advantages, mask, MHPOParams())
    assert terms.loss.dtype == dtype and grad.dtype == dtype
    assert_matches_reference(terms.loss, ref_loss, dtype, "loss")
    assert_matches_reference(grad, ref_grad, dtype, "gradient")
    beyond_clamp = np.abs(new - old) > MHPOParams().log_ratio_clamp
    assert beyond_clamp.sum() == 7 and (grad[torch.tensor(beyond_clamp)] == 0).all()  # the clamp cuts the gradient
    assert grad[1, 3] != 0  # ... but not on-policy


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("hazard_input", ["softplus", "relu"])
def test_bfloat16_matches_the_float64_reference(implementation, ratio_level, hazard_input):
    # |u| stays well inside the clamp: a bf16 rounding of u across +-20 would legitimately switch the gradient off.
    new, old, advantages, mask, weights = random_batch(seed=21, batch=6, length=50, spread=1.5)
    params = MHPOParams(ratio_level=ratio_level, hazard_input=hazard_input)
    new, old, advantages, weights = (rounded(x, torch.bfloat16) for x in (new, old, advantages, weights))
    terms, grad = run(implementation, new, old, advantages, mask, params, weights, dtype=torch.bfloat16)
    ref_loss, ref_grad, _, _ = reference(new, old, advantages, mask, params, weights)
    assert_matches_reference(terms.loss, ref_loss, torch.bfloat16, "loss")
    assert_matches_reference(grad, ref_grad, torch.bfloat16, "gradient")
    # and the tolerance is tight enough to see a real error: a 10% change of c is far outside it
    wrong_loss, _, _, _ = reference(new, old, advantages, mask, MHPOParams(**{**params.as_dict(), "c": 1.65}))
    with pytest.raises(AssertionError):
        assert_matches_reference(terms.loss, wrong_loss, torch.bfloat16, "loss")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_returned_terms_are_detached_and_equal_across_implementations_padding_included(implementation, ratio_level):
    """Only the loss carries a graph; u, psi and zeta are statistics. Outside the mask both implementations hold the
    on-policy values (u = psi = 0), which the diagnostics rely on when they skip masking u and psi."""
    new, old, advantages, mask, weights = random_batch(seed=4)
    params = MHPOParams(ratio_level=ratio_level)
    terms, _ = run(implementation, new, old, advantages, mask, params, weights)
    eager, _ = run("eager", new, old, advantages, mask, params, weights)
    assert terms.loss.requires_grad
    for name in ("log_ratio", "psi", "zeta"):
        value = getattr(terms, name)
        assert not value.requires_grad, name
        torch.testing.assert_close(value, getattr(eager, name), rtol=1e-12, atol=1e-12, msg=name)
    padding = torch.tensor(~mask)
    assert (terms.log_ratio[padding] == 0).all() and (terms.psi[padding] == 0).all()


def autograd_nodes(tensor: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("implementation", ["eager", "fused"])
def test_the_configured_implementation_is_the_one_that_runs(implementation):
    """Both give the same numbers, so only the graph shows which ran: fused is chosen for its memory."""
    new, old, advantages, mask, _ = random_batch(seed=6)
    log_prob = torch.tensor(new, requires_grad=True)
    loss, _ = get_policy_loss_fn("mhpo")(
        old_log_prob=torch.tensor(old),
        log_prob=log_prob,
        advantages=torch.tensor(advantages),
        response_mask=torch.tensor(mask),
        loss_agg_mode="token-mean",
        config={"policy_loss": {"implementation": implementation}},
    )
    fused_nodes = {name for name in autograd_nodes(loss) if "Fused" in name}
    assert bool(fused_nodes) is (implementation == "fused"), autograd_nodes(loss)


def test_the_default_aggregation_is_the_papers_sequence_mean_of_token_means():
    new, old, advantages, mask, _ = random_batch(seed=8)
    tensors = dict(
        old_log_prob=torch.tensor(old),
        log_prob=torch.tensor(new),
        advantages=torch.tensor(advantages),
        response_mask=torch.tensor(mask),
    )
    loss_fn = get_policy_loss_fn("mhpo")
    default, _ = loss_fn(**tensors, config={"policy_loss": {}})
    ref_loss, _, _, _ = reference(new, old, advantages, mask, MHPOParams())
    per_response = ref_loss.sum(axis=-1) / mask.sum(axis=-1)
    assert default.item() == pytest.approx(per_response.mean(), rel=1e-10)
    token_mean, _ = loss_fn(**tensors, loss_agg_mode="token-mean", config={"policy_loss": {}})
    assert token_mean.item() != pytest.approx(default.item(), rel=1e-3)  # the batch tells the two modes apart


def test_zero_advantage_fraction_counts_only_responses_with_tokens():
    """A response with no token in the mask trains nothing either way; it is neither counted nor in the total."""
    old = torch.full((4, 5), -1.0, dtype=torch.float64)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1] = False  # an empty response
    advantages = torch.tensor([[0.5], [0.0], [0.0], [-1.0]], dtype=torch.float64).expand(4, 5)
    _, metrics = get_policy_loss_fn("mhpo")(
        old_log_prob=old,
        log_prob=old + 0.1,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode="token-mean",
        config={"policy_loss": {}},
    )
    assert metrics["actor/mhpo/zero_adv_frac"] == pytest.approx(1 / 3)  # row 2 of rows 0, 2, 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_group_relative_advantages_refuses_a_non_finite_score_and_names_it(bad):
    # The public function checks its own input: a NaN score would otherwise spread through its group's mean and std
    # (outcome_scores' row check protects only the verl path).
    scores = torch.tensor([0.5, bad, 1.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[1\]"):
        group_relative_advantages(scores, ["a", "a", "b", "b"])
