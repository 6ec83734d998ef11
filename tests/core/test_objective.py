"""The pure-PyTorch MHPO objective against an independent float64 NumPy reference of the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mhpo_verl.fused import mhpo_loss_matrix_fused
from mhpo_verl.objective import (
    decoupled_hazard_penalty,
    gradient_multiplier,
    log_fidelity_modulator,
    mhpo_loss_matrix,
)
from mhpo_verl.params import MHPOParams

IMPLEMENTATIONS = {"eager": mhpo_loss_matrix, "fused": mhpo_loss_matrix_fused}

PARAM_SETS = [
    MHPOParams(),
    MHPOParams(c=0.5, k_pos=1.0, lambda_pos=2.0, k_neg=3.0, lambda_neg=0.5),
    MHPOParams(c=3.0, hazard_input="relu"),
    MHPOParams(k_pos=0.7, k_neg=1.3, hazard_input="relu", log_ratio_clamp=2.0),
]


def reference(log_prob, old_log_prob, advantages, mask, params: MHPOParams, weights=None):
    """Per-token loss and d loss / d log_prob, written from the formulas with NumPy in float64."""
    u_raw = np.where(mask, log_prob - old_log_prob, 0.0)
    if params.ratio_level == "sequence":
        lengths = np.maximum(mask.sum(axis=-1, keepdims=True), 1)
        u_raw = np.where(mask, u_raw.sum(axis=-1, keepdims=True) / lengths, 0.0)
    u = np.clip(u_raw, -params.log_ratio_clamp, params.log_ratio_clamp)
    psi = params.c * np.tanh(u / params.c)
    if params.hazard_input == "softplus":
        s_pos, s_neg = np.logaddexp(0.0, psi), np.logaddexp(0.0, -psi)
    else:
        s_pos, s_neg = np.maximum(psi, 0.0), np.maximum(-psi, 0.0)
    zeta = (s_pos / params.lambda_pos) ** params.k_pos + (s_neg / params.lambda_neg) ** params.k_neg
    a = np.where(mask, advantages, 0.0) * (1.0 if weights is None else np.where(mask, weights, 0.0))
    loss = -np.exp(psi - zeta) * a
    multiplier = np.exp(psi) / np.cosh(u / params.c) ** 2
    inside = np.abs(u_raw) <= params.log_ratio_clamp
    grad = np.where(mask & inside, -a * np.exp(-zeta) * multiplier, 0.0)
    return loss, grad, psi, zeta


def random_batch(seed: int, batch: int = 5, length: int = 37, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    old = -rng.exponential(2.0, (batch, length))
    new = old + spread * rng.standard_normal((batch, length))
    advantages = np.repeat(rng.standard_normal((batch, 1)), length, axis=1)
    lengths = rng.integers(1, length + 1, batch)
    mask = np.arange(length)[None, :] < lengths[:, None]
    weights = rng.uniform(0.2, 2.0, (batch, length))
    return new, old, advantages, mask, weights


def run(implementation, new, old, advantages, mask, params, weights=None, dtype=torch.float64):
    log_prob = torch.tensor(new, dtype=dtype, requires_grad=True)
    terms = IMPLEMENTATIONS[implementation](
        log_prob,
        torch.tensor(old, dtype=dtype),
        torch.tensor(advantages, dtype=dtype),
        torch.tensor(mask),
        params,
        token_weights=None if weights is None else torch.tensor(weights, dtype=dtype),
    )
    terms.loss.sum().backward()
    return terms, log_prob.grad


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("param_index", range(len(PARAM_SETS)))
@pytest.mark.parametrize("with_weights", [False, True])
def test_values_and_gradients_match_float64_reference(implementation, ratio_level, param_index, with_weights):
    params = MHPOParams(**{**PARAM_SETS[param_index].as_dict(), "ratio_level": ratio_level})
    new, old, advantages, mask, weights = random_batch(seed=param_index)
    weights = weights if with_weights else None
    terms, grad = run(implementation, new, old, advantages, mask, params, weights)
    ref_loss, ref_grad, ref_psi, ref_zeta = reference(new, old, advantages, mask, params, weights)
    np.testing.assert_allclose(terms.loss.detach().numpy(), ref_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(terms.psi.numpy()[mask], ref_psi[mask], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(terms.zeta.numpy()[mask], ref_zeta[mask], rtol=1e-10, atol=1e-12)


def test_clamp_cuts_the_gradient_beyond_the_bound_like_verl():
    params = MHPOParams(log_ratio_clamp=2.0)
    new = np.array([[3.0, 1.0, -2.5]])
    old = np.zeros_like(new)
    terms, grad = run("eager", new, old, np.ones_like(new), np.ones_like(new, dtype=bool), params)
    assert terms.log_ratio.tolist() == [[2.0, 1.0, -2.0]]
    assert grad[0, 0] == 0 and grad[0, 2] == 0 and grad[0, 1] != 0


def test_gradient_multiplier_is_one_on_policy_and_bounded_for_extreme_ratios():
    c = 1.5
    assert gradient_multiplier(torch.zeros(1, dtype=torch.float64), c).item() == pytest.approx(1.0, abs=1e-15)
    log_r = torch.linspace(math.log(1e-30), math.log(1e30), 200_001, dtype=torch.float64)
    multiplier = gradient_multiplier(log_r, c)
    assert torch.isfinite(multiplier).all()
    assert (multiplier >= 0).all()
    assert multiplier.max().item() <= math.exp(c)  # the paper's bound
    # ... and the exact maximum (the README's 1.59): dM/du = 0 where tanh(u / c) = (sqrt(1 + c^2) - 1) / c.
    t = (math.sqrt(1.0 + c * c) - 1.0) / c
    exact_max = math.exp(c * t) * (1.0 - t * t)
    assert exact_max * (1 - 1e-6) <= multiplier.max().item() <= exact_max * (1 + 1e-12)
    assert exact_max == pytest.approx(1.59, abs=0.01)
    assert multiplier[0].item() < 1e-10 and multiplier[-1].item() < 1e-10  # vanishes at both ends


@pytest.mark.parametrize("c", [0.5, 1.5, 3.0])
def test_lfm_is_bounded_and_tracks_log_ratio_near_one(c):
    u = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    psi = log_fidelity_modulator(u, c)
    assert (psi.abs() <= c).all()  # closed in floating point: tanh rounds to exactly 1 for large |u / c|
    moderate = u.abs() <= 5 * c
    assert (psi[moderate].abs() < c).all()
    small = torch.tensor([1e-4, -1e-4], dtype=torch.float64)
    torch.testing.assert_close(log_fidelity_modulator(small, c), small, rtol=1e-7, atol=0)


def test_hazard_penalty_is_asymmetric_with_paper_defaults_and_zero_on_policy_for_relu():
    params = MHPOParams()
    psi = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    zeta = decoupled_hazard_penalty(psi, params)
    assert zeta[1].item() == pytest.approx(
        (math.log(2) / 1.0) ** 1.5 + (math.log(2) / 0.8) ** 2.0, rel=1e-12
    )  # 1.328: the constant on-policy rescale exp(-1.328) = 0.265 of the paper's softplus form
    assert zeta[0] > zeta[2]  # negative shifts are penalised harder (k_neg > k_pos, lambda_neg < lambda_pos)
    relu = decoupled_hazard_penalty(psi, MHPOParams(hazard_input="relu"))
    assert relu[1].item() == 0.0
    assert relu[0] > relu[2] > 0


def test_hazard_is_a_semi_gradient_it_never_flips_the_gradient_sign():
    new, old, _, mask, _ = random_batch(seed=7, spread=4.0)
    positive = np.ones_like(new)
    for implementation in IMPLEMENTATIONS:
        _, grad_pos = run(implementation, new, old, positive, mask, MHPOParams())
        _, grad_neg = run(implementation, new, old, -positive, mask, MHPOParams())
        assert (grad_pos[torch.tensor(mask)] <= 0).all()  # descent raises log pi where A > 0
        assert (grad_neg[torch.tensor(mask)] >= 0).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_large_c_and_lambda_reduce_to_unclipped_importance_weighted_policy_gradient(implementation):
    new, old, advantages, mask, _ = random_batch(seed=3, spread=0.5)
    ratio = np.exp(np.where(mask, new - old, 0.0))
    a = np.where(mask, advantages, 0.0)
    for params in (
        MHPOParams(c=1e4, lambda_pos=1e6, lambda_neg=1e6),
        MHPOParams(c=1e4, hazard_input="relu", lambda_pos=1e12, lambda_neg=1e12),
    ):
        terms, grad = run(implementation, new, old, advantages, mask, params)
        np.testing.assert_allclose(terms.loss.detach().numpy(), -ratio * a, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(grad.numpy(), -ratio * a, rtol=1e-4, atol=1e-8)  # d(r)/d log pi = r


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("pad_value", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_padding_never_reaches_values_or_gradients(implementation, ratio_level, pad_value):
    new, old, advantages, mask, weights = random_batch(seed=11)
    for array in (new, old, advantages, weights):
        array[~mask] = pad_value
    params = MHPOParams(ratio_level=ratio_level)
    terms, grad = run(implementation, new, old, advantages, mask, params, weights, dtype=torch.float32)
    assert torch.isfinite(terms.loss).all() and torch.isfinite(grad).all()
    assert (terms.loss[~torch.tensor(mask)] == 0).all() and (grad[~torch.tensor(mask)] == 0).all()
    clean = [np.where(mask, x, 0.0) for x in (new, old, advantages, weights)]
    reference_terms, reference_grad = run(implementation, *clean[:3], mask, params, clean[3], dtype=torch.float32)
    torch.testing.assert_close(terms.loss, reference_terms.loss)
    torch.testing.assert_close(grad, reference_grad)


# Extreme log-probabilities and bfloat16 inputs are checked against this reference at stated tolerances in
# tests/core/test_mutation_gaps.py (test_extreme_log_probs_match_the_float64_reference, test_bfloat16_...).


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_all_zero_mask_gives_zero_loss_and_gradient(implementation):
    new, old, advantages, mask, _ = random_batch(seed=5)
    mask[:] = False
    new[:] = float("nan")
    terms, grad = run(implementation, new, old, advantages, mask, MHPOParams(ratio_level="sequence"))
    assert (terms.loss == 0).all() and (grad == 0).all()


def test_sequence_level_shares_the_length_normalised_ratio_with_straight_through_gradient():
    new, old, advantages, mask, _ = random_batch(seed=9)
    params = MHPOParams(ratio_level="sequence")
    terms, grad = run("eager", new, old, advantages, mask, params)
    for row in range(new.shape[0]):
        valid = mask[row]
        u_seq = float(np.mean(new[row, valid] - old[row, valid]))
        assert np.allclose(terms.log_ratio[row, valid].numpy(), u_seq)
        # every valid token receives the same gradient: -A exp(-zeta(s)) M(s) with unit d u / d log pi_t
        assert np.allclose(grad[row, valid].numpy(), grad[row, valid][0].item())
    # with equal per-token log-ratios the two levels coincide
    shift = np.where(mask, 0.3, 0.0)
    token, token_grad = run("eager", old + shift, old, advantages, mask, MHPOParams())
    seq, seq_grad = run("eager", old + shift, old, advantages, mask, params)
    torch.testing.assert_close(token.loss, seq.loss)
    torch.testing.assert_close(token_grad, seq_grad)


def test_fused_rejects_inputs_it_would_silently_not_differentiate():
    new, old, advantages, mask, _ = random_batch(seed=1)
    log_prob = torch.tensor(new, requires_grad=True)
    with pytest.raises(ValueError, match="advantages requires grad"):
        mhpo_loss_matrix_fused(
            log_prob, torch.tensor(old), torch.tensor(advantages, requires_grad=True), torch.tensor(mask), MHPOParams()
        )


def test_float32_fused_matches_eager_to_rounding():
    new, old, advantages, mask, weights = random_batch(seed=2, batch=16, length=300, spread=2.0)
    for ratio_level in ("token", "sequence"):
        params = MHPOParams(ratio_level=ratio_level)
        eager, eager_grad = run("eager", new, old, advantages, mask, params, weights, dtype=torch.float32)
        fused, fused_grad = run("fused", new, old, advantages, mask, params, weights, dtype=torch.float32)
        torch.testing.assert_close(fused.loss, eager.loss, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(fused_grad, eager_grad, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(fused.zeta, eager.zeta, rtol=2e-6, atol=1e-7)
