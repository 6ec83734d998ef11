"""Mutation run: apply a fixed list of meaningful one-line mutations to the core and to the grader's decision points,
run the tests that cover each mutated module, and report how many mutants the tests kill.

    .venv/bin/python scripts/mutation_run.py                      # everything (tens of minutes on 2 cores)
    .venv/bin/python scripts/mutation_run.py --only objective fused  # some modules (keys of TARGETS)
    .venv/bin/python scripts/mutation_run.py --fast               # the mutants marked fast (minutes)
    .venv/bin/python scripts/mutation_run.py --check              # only check every snippet still applies

Each mutation names its file and an exact source snippet that must occur there exactly once: a mutation whose
snippet has gone stale fails loudly instead of silently not applying. Mutants run in a temporary copy of the tree
(the committed HEAD by default, ``--worktree`` for the working files), never in the checkout itself; the copy is
put first on ``sys.path`` and the run checks that the tests import the mutated copy. A mutant is killed when its
tests fail (or error, or run past the time limit); one that passes is a survivor, and a survivor must carry the
reason it is acceptable (``survives=``), or the run exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass(frozen=True)
class Target:
    """A mutated file and its tests, in stages: a later stage runs only if the earlier ones passed (cheap first)."""

    path: str
    stages: tuple[tuple[str, ...], ...]
    core: bool = False  # one of the modules the >= 95% target applies to


@dataclass(frozen=True)
class Mutation:
    target: str
    name: str
    old: str
    new: str
    fast: bool = False
    survives: str = ""  # why a surviving mutant is acceptable (an equivalent mutant, or a behaviour nobody relies on)


CORE_GAPS = "tests/core/test_mutation_gaps.py"
GRADER_TESTS = (
    (
        "tests/reward_fns/test_extract.py",
        "tests/reward_fns/test_labelled_cases.py",
        "tests/reward_fns/test_equivalence.py",
        "tests/reward_fns/test_answer_forms.py",
    ),
)
TARGETS: dict[str, Target] = {
    "objective": Target(
        "mhpo_verl/objective.py", (("tests/core/test_objective.py",), (CORE_GAPS, "tests/core/test_plugin.py")), True
    ),
    "fused": Target(
        "mhpo_verl/fused.py", (("tests/core/test_objective.py",), (CORE_GAPS, "tests/core/test_plugin.py")), True
    ),
    "advantage": Target("mhpo_verl/advantage.py", (("tests/core/test_advantage.py", CORE_GAPS),), True),
    "plugin": Target(
        "mhpo_verl/plugin.py",
        (("tests/core/test_plugin.py", CORE_GAPS), ("tests/core/test_advantage.py", "tests/core/test_registration.py")),
        True,
    ),
    "diagnostics": Target("mhpo_verl/diagnostics.py", (("tests/core/test_plugin.py", CORE_GAPS),), True),
    "eval_metrics": Target("mhpo_verl/eval/metrics.py", (("tests/eval/test_metrics.py",),)),
    "params": Target(
        "mhpo_verl/params.py",
        (("tests/core/test_objective.py", "tests/core/test_config.py", "tests/core/test_plugin.py", CORE_GAPS),),
    ),
    "extract": Target("reward_fns/extract.py", GRADER_TESTS),
    "compare_sets": Target("reward_fns/compare_sets.py", GRADER_TESTS),
    "compare_relations": Target("reward_fns/compare_relations.py", GRADER_TESTS),
    "compare_numbers": Target("reward_fns/compare_numbers.py", GRADER_TESTS),
    "scoring": Target("reward_fns/scoring.py", (("tests/reward_fns/test_scoring.py", *GRADER_TESTS[0]),)),
}

M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # -- objective.py: the eager formulas ----------------------------------------------------------------------------
    M(
        "objective",
        "LFM without its bound c",
        "return c * torch.tanh(log_ratio / c)",
        "return torch.tanh(log_ratio / c)",
    ),
    M(
        "objective",
        "LFM tanh of u instead of u / c",
        "return c * torch.tanh(log_ratio / c)",
        "return c * torch.tanh(log_ratio)",
    ),
    M("objective", "Weibull scale multiplies", "return (x / lam).pow(k)", "return (x * lam).pow(k)"),
    M("objective", "Weibull shape ignored", "return (x / lam).pow(k)", "return x / lam"),
    M(
        "objective",
        "softplus hazard input becomes relu",
        "        return F.softplus(x)\n",
        "        return torch.relu(x)\n",
    ),
    M(
        "objective",
        "relu hazard input becomes softplus",
        "        return torch.relu(x)\n",
        "        return F.softplus(x)\n",
    ),
    M("objective", "DHP stop-gradient dropped", "    psi = psi.detach()\n    positive_shift", "    positive_shift"),
    M(
        "objective",
        "negative shift sign flipped",
        "negative_shift = positive_shift - psi",
        "negative_shift = positive_shift + psi",
    ),
    M(
        "objective",
        "positive hazard uses the negative shape/scale",
        "weibull_cumulative_hazard(positive_shift, params.k_pos, params.lambda_pos)",
        "weibull_cumulative_hazard(positive_shift, params.k_neg, params.lambda_neg)",
    ),
    M(
        "objective",
        "negative hazard uses the positive shape/scale",
        "negative_shift, params.k_neg, params.lambda_neg",
        "negative_shift, params.k_pos, params.lambda_pos",
    ),
    M(
        "objective",
        "loss sign flipped",
        "loss = -advantages * torch.exp(psi - zeta)",
        "loss = advantages * torch.exp(psi - zeta)",
    ),
    M("objective", "hazard added instead of subtracted", "torch.exp(psi - zeta)", "torch.exp(psi + zeta)"),
    M(
        "objective",
        "gradient multiplier loses exp(c t)",
        "return torch.exp(c * t) * (1.0 - t * t)",
        "return torch.exp(t) * (1.0 - t * t)",
    ),
    M(
        "objective",
        "padding mask dropped from the log-ratio",
        "token_log_ratio = torch.where(mask, log_prob - old_log_prob, 0.0)",
        "token_log_ratio = log_prob - old_log_prob",
    ),
    M(
        "objective",
        "sequence ratio divided by the padded length",
        "sum(dim=-1, keepdim=True) / lengths",
        "sum(dim=-1, keepdim=True) / mask.shape[-1]",
    ),
    M(
        "objective",
        "sequence ratio loses its straight-through gradient",
        "sequence_log_ratio + (log_prob - log_prob.detach())",
        "sequence_log_ratio + 0.0 * log_prob",
    ),
    M(
        "objective",
        "sequence ratio keeps each token's own gradient weight",
        "sequence_log_ratio + (log_prob - log_prob.detach())",
        "sequence_log_ratio + (log_prob - log_prob.detach()) / lengths",
    ),
    M(
        "objective",
        "log-ratio clamp dropped",
        "return token_log_ratio.clamp(-params.log_ratio_clamp, params.log_ratio_clamp)",
        "return token_log_ratio",
    ),
    M("objective", "advantage padding mask dropped", "    advantages = torch.where(mask, advantages, 0.0)\n", ""),
    M(
        "objective",
        "token-weight padding mask dropped",
        "advantages * torch.where(mask, token_weights.detach(), 0.0)",
        "advantages * token_weights.detach()",
    ),
    M("objective", "token weights ignored", "if token_weights is not None:  # w_t", "if False:  # w_t"),
    M("objective", "psi returned with its graph", "psi=psi.detach(), zeta=zeta", "psi=psi, zeta=zeta"),
    M("objective", "log-ratio returned with its graph", "log_ratio=log_ratio.detach()", "log_ratio=log_ratio"),
    # -- fused.py: the hand-written forward and backward -------------------------------------------------------------
    M("fused", "Weibull scale multiplies", "    x.div_(lam)\n", "    x.mul_(lam)\n"),
    M("fused", "k = 2 shortcut skips the square", "        return x.square_()\n", "        return x\n"),
    M("fused", "general shape ignored", "return x.log_().mul_(k).exp_()", "return x"),
    M(
        "fused",
        "relu hazard input ignored",
        'F.softplus(psi) if params.hazard_input == "softplus" else torch.relu(psi)',
        "F.softplus(psi)",
    ),
    M(
        "fused",
        "negative shift sign flipped",
        "negative_shift = positive_shift - psi",
        "negative_shift = positive_shift + psi",
    ),
    M(
        "fused",
        "negative hazard subtracted",
        "zeta.add_(_weibull_hazard_(negative_shift",
        "zeta.sub_(_weibull_hazard_(negative_shift",
    ),
    M(
        "fused",
        "padding mask dropped from the log-ratio",
        "torch.sub(log_prob, old_log_prob).masked_fill_(padding, 0.0)",
        "torch.sub(log_prob, old_log_prob)",
    ),
    M("fused", "sequence ratio divided by the padded length", ".div_(lengths)", ".div_(mask.shape[-1])"),
    M(
        "fused",
        "sequence ratio leaks into padding",
        "sequence_log_ratio.expand_as(raw_log_ratio).masked_fill(padding, 0.0)",
        "sequence_log_ratio.expand_as(raw_log_ratio).clone()",
    ),
    M(
        "fused",
        "log-ratio clamp dropped",
        "log_ratio = raw_log_ratio.clamp(-clamp, clamp)",
        "log_ratio = raw_log_ratio.clone()",
    ),
    M("fused", "clamp no longer cuts the gradient", ".mul_(loss).mul_(inside_clamp)", ".mul_(loss)"),
    M(
        "fused",
        "sech^2 dropped from the gradient",
        "tanh.square_().neg_().add_(1.0).mul_(loss)",
        "tanh.zero_().add_(1.0).mul_(loss)",
    ),
    M("fused", "loss sign flipped", ".mul_(weighted_advantages).neg_()", ".mul_(weighted_advantages)"),
    M("fused", "advantage padding mask dropped", "advantages.masked_fill(padding, 0.0)", "advantages.clone()"),
    M(
        "fused",
        "token-weight padding mask dropped",
        "weighted_advantages.mul_(token_weights.masked_fill(padding, 0.0))",
        "weighted_advantages.mul_(token_weights)",
    ),
    M(
        "fused",
        "token weights ignored",
        "        if token_weights is not None:\n            weighted",
        "        if False:\n            weighted",
    ),
    M(
        "fused",
        "backward ignores the upstream gradient",
        "return grad_loss * grad_log_prob, None",
        "return grad_log_prob, None",
    ),
    M("fused", "outputs marked differentiable", "        ctx.mark_non_differentiable(log_ratio, psi, zeta)\n", ""),
    M(
        "fused",
        "requires-grad inputs accepted silently",
        "if tensor is not None and tensor.requires_grad:",
        "if False:",
    ),
    # -- advantage.py: the group-relative estimator ------------------------------------------------------------------
    M("advantage", "std without Bessel's correction", "/ (counts - 1).clamp(min=1)", "/ counts"),
    M("advantage", "epsilon dropped", "(variances.sqrt()[codes] + epsilon)", "variances.sqrt()[codes]"),
    M("advantage", "not centred", "centred = values - means[codes]", "centred = values"),
    M(
        "advantage",
        "all-rewards-equal shortcut removed",
        "torch.where(varies, advantages, 0.0)",
        "torch.where(counts[codes] > 1, advantages, 0.0)",  # singletons still 0: only the equal-rewards test is gone
        fast=True,
    ),
    M("advantage", "std normalisation always on", "    if normalize_by_std:\n", "    if True:\n"),
    M(
        "advantage",
        "non-finite rewards accepted",
        "bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()",
        "bad = []",
    ),
    M("advantage", "every id one group", "codes.setdefault(group_id, len(codes))", "codes.setdefault(group_id, 0)"),
    M("advantage", "float64 leaks out", "return advantages.to(scores.dtype)", "return advantages"),
    M("advantage", "negative epsilon accepted", "and epsilon >= 0)", "and epsilon >= -1)"),
    M("advantage", "group-id count unchecked", "    if len(group_ids) != scores.shape[0]:\n", "    if False:\n"),
    # -- plugin.py: the verl adapter ---------------------------------------------------------------------------------
    M("plugin", "rollout importance weights dropped", "token_weights=rollout_is_weights", "token_weights=None"),
    M(
        "plugin",
        "global batch info ignored",
        "loss_agg_mode=loss_agg_mode, **global_batch_info)",
        "loss_agg_mode=loss_agg_mode)",
    ),
    M("plugin", "fused implementation never used", 'if implementation == "fused":', "if False:"),
    M(
        "plugin",
        "policy_loss options ignored",
        'policy_loss = config.get("policy_loss", None) if config is not None else None',
        "policy_loss = None",
    ),
    M(
        "plugin",
        "default aggregation changed",
        'DEFAULT_LOSS_AGG_MODE = "seq-mean-token-mean"',
        'DEFAULT_LOSS_AGG_MODE = "token-mean"',
    ),
    M(
        "plugin",
        "advantages not masked",
        "advantages = advantages.unsqueeze(-1) * response_mask.bool().to(advantages.dtype)\n    return advantages,",
        "advantages = advantages.unsqueeze(-1).expand(response_mask.shape).clone()\n    return advantages,",
    ),
    M("plugin", "epsilon not read from the config", 'epsilon = config_get("epsilon", 1e-6)', "epsilon = 1e-6"),
    M(
        "plugin",
        "std normalisation not read from the config",
        'norm_adv_by_std_in_grpo = config_get("norm_adv_by_std_in_grpo", True)',
        "norm_adv_by_std_in_grpo = True",
    ),
    M("plugin", "missing index accepted", "    if index is None:\n        raise", "    if False:\n        raise"),
    M(
        "plugin",
        "a foreign registration overwritten",
        "if current is not None and getattr(current, REGISTRATION_TAG",
        "if False and getattr(current, REGISTRATION_TAG",
    ),
    # -- diagnostics.py: what the user watches ------------------------------------------------------------------------
    M(
        "diagnostics",
        "survival_neg's on-policy fallback is 1.0",
        "side_mean((survival_shifted - survival_sign) / 2, (n_shifted - n_sign) / 2),",
        "side_mean((survival_shifted - survival_sign) / 2, (n_shifted - n_sign) / 2)"
        " if (n_shifted - n_sign) > 0.5 else survival.new_ones(()),",
        fast=True,
    ),
    M(
        "diagnostics",
        "survival_pos's on-policy fallback is 1.0",
        "side_mean((survival_shifted + survival_sign) / 2, (n_shifted + n_sign) / 2),",
        "side_mean((survival_shifted + survival_sign) / 2, (n_shifted + n_sign) / 2)"
        " if (n_shifted + n_sign) > 0.5 else survival.new_ones(()),",
    ),
    M(
        "diagnostics",
        "relu's on-policy survival ignores hazard_input",
        'shift = math.log(2.0) if params.hazard_input == "softplus" else 0.0',
        "shift = math.log(2.0)",
        fast=True,
    ),
    # -- eval/metrics.py ---------------------------------------------------------------------------------------------
    M(
        "eval_metrics",
        "mean_score over problems instead of samples",
        'summary["mean_score"] = sum(s.score for s in samples) / len(samples)',
        'summary["mean_score"] = sum(s.score for s in samples) / len(complete)',
        fast=True,
    ),
    # -- the grader's decision points -----------------------------------------------------------------------------
    M(
        "extract",
        "the first closing reasoning tag wins",
        "response = response[closes[-1].end() :]",
        "response = response[closes[0].end() :]",
    ),
    M(
        "extract",
        "unfinished reasoning still answers",
        '        return Extraction(None, "unfinished_think")\n',
        "        pass\n",
    ),
    M(
        "extract",
        "a cut-off final box falls back to an earlier one",
        "            if next_start is None:\n                return _TRUNCATED\n",
        "            if False:\n                return _TRUNCATED\n",
    ),
    M("extract", "the first box wins", "    for match in reversed(starts):\n", "    for match in starts:\n"),
    M(
        "extract",
        "the first statement wins",
        "_, _, name, answer = max((_statement_start(",
        "_, _, name, answer = min((_statement_start(",
    ),
    M(
        "extract",
        "answer length cap off by one",
        "if len(answer) > max_answer_chars:",
        "if len(answer) > max_answer_chars + 1:",
    ),
    M(
        "extract",
        "the head searched instead of the tail",
        "tail = response[-max_tail_chars:]",
        "tail = response[:max_tail_chars]",
    ),
    M(
        "compare_sets",
        "extra answers accepted",
        "        if len(pred_items) != len(gold_items):\n            return False\n",
        "        if False:\n            return False\n",
    ),
    M(
        "compare_sets",
        "interval's lower bracket ignored",
        "            a.low_closed == b.low_closed\n            and ",
        "            ",
    ),
    M("compare_sets", "interval's upper bracket ignored", "            and a.high_closed == b.high_closed\n", ""),
    M(
        "compare_relations",
        "inequality direction ignored",
        'return ratio > 0 if gold_op not in ("=", "!=") else True',
        "return True",
    ),
    M(
        "compare_relations",
        "flipped inequalities rejected",
        "        if _FLIP.get(pred_op) != gold_op:\n",
        "        if True:\n",
    ),
    M(
        "compare_numbers",
        "a less precise decimal accepted",
        "if pred.decimals is not None and pred.decimals < gold.decimals:",
        "if False:",
    ),
    M(
        "compare_numbers",
        "rounding tolerance ten times looser",
        "Fraction(5, 10 ** (gold.decimals + 1))",
        "Fraction(5, 10**gold.decimals)",
    ),
    M(
        "scoring",
        "the most informative failure not reported",
        "return min(verdicts, key=lambda v: priority.get(v.reason, 3))",
        "return verdicts[-1]",
    ),
    M(
        "scoring",
        "no answer scored as a wrong answer",
        "    elif result.reason in NO_ANSWER_REASONS:\n",
        "    elif False:\n",
    ),
    M(
        "scoring",
        "format bonus without the format",
        "(options.format_score if result.formatted else 0.0)",
        "options.format_score",
    ),
    M(
        "plugin",
        "mhpo sessions left to verl's generic path",
        "    if adv_estimator != ESTIMATOR_NAME:\n",
        "    if True:\n",
    ),
    M(
        "plugin",
        "session advantages not masked",
        '    advantages = advantages * response_mask.bool().to(advantages.dtype)\n    data.batch["advantages"]',
        '    data.batch["advantages"]',
    ),
    M("plugin", "session returns not written", '    data.batch["returns"] = advantages\n', ""),
    M("plugin", "driver checks skipped", "        check_mhpo_run(config)\n", ""),
    M(
        "plugin",
        "modules that bound a wrapped function by name keep the original",
        "if isinstance(namespace, dict) and namespace.get(name) in (original, current):",
        "if False:",
    ),
    M(
        "plugin",
        "wrappers stack on a reload",
        "original = getattr(current, WRAPPED_TAG, current)",
        "original = current",
    ),
    # -- advantage.py, continued ---------------------------------------------------------------------------------------
    M(
        "advantage",
        "reward read from the last position only",
        "    return token_level_rewards.sum(dim=-1)\n",
        "    return token_level_rewards[:, -1]\n",
    ),
    M(
        "advantage",
        "non-finite reward rows accepted",
        "bad = (~torch.isfinite(token_level_rewards).all(dim=-1)).nonzero().flatten().tolist()",
        "bad = []",
    ),
    M(
        "advantage",
        "a session's first output is its final one",
        "if session not in final or final[session][0] < output_index:",
        "if session not in final:",
    ),
    M(
        "advantage",
        "duplicate output indices accepted",
        "if session in final and final[session][0] == output_index:",
        "if False:",
    ),
    # -- diagnostics.py, continued -------------------------------------------------------------------------------------
    M("diagnostics", "ppo_kl sign flipped", "            -u.sum() / n_tokens,\n", "            u.sum() / n_tokens,\n"),
    M(
        "diagnostics",
        "upper saturation at 1 instead of c",
        "torch.count_nonzero(u > params.c) / n_tokens",
        "torch.count_nonzero(u > 1.0) / n_tokens",
    ),
    M(
        "diagnostics",
        "lower saturation sign flipped",
        "torch.count_nonzero(u < -params.c) / n_tokens",
        "torch.count_nonzero(u < params.c) / n_tokens",
    ),
    M(
        "diagnostics",
        "psi mean of |psi|",
        "            psi.sum() / n_tokens,\n",
        "            psi.abs().sum() / n_tokens,\n",
    ),
    M(
        "diagnostics",
        "zeta mean counts padding",
        "torch.where(mask, terms.zeta, 0.0).sum() / n_tokens",
        "terms.zeta.sum() / n_tokens",
    ),
    M(
        "diagnostics",
        "token count includes padding",
        "n_tokens = torch.count_nonzero(mask).clamp(min=1)",
        "n_tokens = mask.numel()",
    ),
    M(
        "diagnostics",
        "multiplier counts padding",
        ".add_(1.0)).masked_fill_(padding, 0.0)\n",
        ".add_(1.0))\n",
    ),
    M(
        "diagnostics",
        "on-policy tokens counted as amplified",
        "torch.count_nonzero(multiplier > 1.0) / n_tokens",
        "torch.count_nonzero(multiplier >= 1.0) / n_tokens",
    ),
    M(
        "diagnostics",
        "survival_pos over every shifted token",
        "side_mean((survival_shifted + survival_sign) / 2, (n_shifted + n_sign) / 2),",
        "side_mean(survival_shifted, n_shifted),",
    ),
    M("diagnostics", "|u| mean of u", "            abs_u.sum() / n_tokens,\n", "            u.sum() / n_tokens,\n"),
    M(
        "diagnostics",
        "tokens at the clamp not counted",
        "abs_u >= params.log_ratio_clamp",
        "abs_u > params.log_ratio_clamp",
    ),
    M(
        "diagnostics",
        "a positive advantage counted as zero",
        "torch.where(mask, advantages != 0, False)",
        "torch.where(mask, advantages > 0, False)",
    ),
    M(
        "diagnostics",
        "empty responses counted as zero-advantage",
        "zero_advantage = trained & ~torch.where(",
        "zero_advantage = ~torch.where(",
    ),
    M(
        "diagnostics",
        "zero-advantage fraction over all rows",
        "/ torch.count_nonzero(trained).clamp(min=1)",
        "/ mask.shape[0]",
    ),
    # -- eval/metrics.py, continued ------------------------------------------------------------------------------------
    M(
        "eval_metrics",
        "pass@k shortcut off by one",
        "    if n - c < k:  # every k-subset",
        "    if n - c <= k:  # every k-subset",
    ),
    M(
        "eval_metrics",
        "incomplete problems counted",
        "for pid, samples in problems.items() if len(samples) == k}",
        "for pid, samples in problems.items()}",
    ),
    M(
        "eval_metrics",
        "samples beyond k counted",
        "if outcome.sample_idx < k and outcome.problem_id",
        "if outcome.sample_idx <= k and outcome.problem_id",
    ),
    # -- params.py: the paper's defaults -----------------------------------------------------------------------------
    M("params", "default c changed", "    c: float = 1.5\n", "    c: float = 2.0\n"),
    M("params", "default k_pos changed", "    k_pos: float = 1.5\n", "    k_pos: float = 2.0\n"),
    M("params", "default lambda_pos changed", "    lambda_pos: float = 1.0\n", "    lambda_pos: float = 0.8\n"),
    M("params", "default k_neg changed", "    k_neg: float = 2.0\n", "    k_neg: float = 1.5\n"),
    M("params", "default lambda_neg changed", "    lambda_neg: float = 0.8\n", "    lambda_neg: float = 1.0\n"),
    M(
        "params",
        "default hazard input changed",
        '    hazard_input: str = "softplus"\n',
        '    hazard_input: str = "relu"\n',
    ),
    M("params", "default clamp changed", "    log_ratio_clamp: float = 20.0\n", "    log_ratio_clamp: float = 10.0\n"),
    M(
        "params",
        "non-positive values accepted",
        "if not (math.isfinite(value) and value > 0):",
        "if not math.isfinite(value):",
    ),
    M("params", "booleans accepted as numbers", "if isinstance(value, bool) or not isinstance", "if not isinstance"),
)
del M


# -- running ---------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    mutation: Mutation
    killed: bool
    how: str  # "failed", "error", "timeout" or "survived"
    seconds: float
    detail: str = ""


@dataclass
class Sandbox:
    """A copy of the tree in a temporary folder, with the original text of each file it mutates."""

    root: Path
    originals: dict[str, str] = field(default_factory=dict)

    def apply(self, mutation: Mutation) -> None:
        path = TARGETS[mutation.target].path
        text = self.originals.setdefault(path, (self.root / path).read_text(encoding="utf-8"))
        (self.root / path).write_text(mutated(text, mutation), encoding="utf-8")

    def restore(self) -> None:
        for path, text in self.originals.items():
            (self.root / path).write_text(text, encoding="utf-8")


class StaleMutation(Exception):
    pass


def mutated(text: str, mutation: Mutation) -> str:
    count = text.count(mutation.old)
    if count != 1:
        raise StaleMutation(
            f"{TARGETS[mutation.target].path}: mutation {mutation.name!r} expects its snippet exactly once, "
            f"found it {count} times: {mutation.old!r}"
        )
    return text.replace(mutation.old, mutation.new)


def copy_tree(destination: Path, worktree: bool, ref: str) -> None:
    """Tracked files of the working tree, or of ``ref``, into ``destination`` (no .git, no caches)."""
    if worktree:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for name in filter(None, listed.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
        return
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)


def sandbox_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc of a mutated module can outlive its mutant
    return env


# The tests of one mutant run in a process forked from a server that has already imported the heavy, unmutated
# dependencies (torch, verl, pytest): it saves each mutant the several seconds of importing them. The forked child
# forgets every module of this project (and the test packages) before pytest starts, so each mutant's tests import
# the mutated files afresh; it re-imports the plugin first, whose registration replaces the server's copy in verl's
# registries.
PROJECT_PACKAGES = ("mhpo_verl", "reward_fns", "tests")
HEAVY_IMPORTS = (
    "numpy",
    "torch",
    "sympy",
    "verl",
    "omegaconf",
    "tensordict",
    "verl.trainer.ppo.core_algos",
    "verl.trainer.ppo.ray_trainer",
    "verl.workers.config",
    "verl.workers.utils.losses",
)


def serve() -> None:
    """The fork server: one JSON request per stdin line ({"args": pytest args, "log": path, "timeout": s}), one JSON
    reply per stdout line ({"rc": exit code, or null after a timeout})."""
    import importlib

    import pytest

    for heavy in HEAVY_IMPORTS:  # what the tests import that is not this project's: loaded once, here
        try:
            importlib.import_module(heavy)
        except ImportError:
            pass

    replies = sys.stdout
    running: list[int] = []

    def stop(signum: int, frame: object) -> None:  # the mutation run was interrupted: end the tests under way
        for pid in running:
            os.killpg(pid, signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: a fresh view of the project, its own process group, output to the log
            try:
                os.setpgid(0, 0)
                with open(request["log"], "w") as log:
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                for name in list(sys.modules):
                    if name.split(".")[0] in PROJECT_PACKAGES:
                        del sys.modules[name]
                import mhpo_verl.plugin  # noqa: F401  (re-registers the possibly mutated loss and estimator)

                code = pytest.main(request["args"])
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 3
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
        running.append(pid)
        deadline = time.monotonic() + request["timeout"]
        rc = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        else:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        running.remove(pid)
        replies.write(json.dumps({"rc": rc}) + "\n")
        replies.flush()


class TestServer:
    """A running fork server inside the sandbox."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), "--serve"],
            cwd=root,
            env=sandbox_env(root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def pytest(self, args: list[str], log: Path, timeout_s: float) -> int | None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"args": args, "log": str(log), "timeout": timeout_s}) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise SystemExit(f"the test server in {self.root} died; see {log}")
        return json.loads(reply)["rc"]

    def close(self) -> None:
        """End the server; tests still under way (an interrupted run) are killed with it."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait()


def check_imports_come_from(root: Path) -> None:
    modules = sorted({Path(t.path).with_suffix("").as_posix().replace("/", ".") for t in TARGETS.values()})
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(importlib.import_module(name).__file__)\n"
    result = subprocess.run(
        [PYTHON, "-c", code, *modules], cwd=root, env=sandbox_env(root), capture_output=True, text=True, check=True
    )
    for line in result.stdout.split():
        if not Path(line).resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"the sandbox imports {line}, not its own copy under {root}: mutants would not be tested")


def run_tests(server: TestServer, target: Target, timeout_s: float) -> tuple[str, str]:
    """("passed" | "failed" | "error" | "timeout", last output line) for the target's test stages."""
    log = server.root / "mutant-tests.log"
    for stage in target.stages:
        missing = [path for path in stage if not (server.root / path.split("::")[0]).is_file()]
        if missing:
            raise SystemExit(f"test files of {target.path} are missing: {missing}")
        rc = server.pytest(["-x", "-q", "-p", "no:cacheprovider", "--no-header", *stage], log, timeout_s)
        if rc is None:
            return "timeout", f"ran past {timeout_s:.0f} s"
        lines = log.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else ""
        if rc == 1:
            return "failed", last
        if rc != 0:
            return "error", last
    return "passed", ""


def check_baseline(server: TestServer, key: str, timeout_s: float, log) -> None:
    started = time.monotonic()
    status, detail = run_tests(server, TARGETS[key], timeout_s)
    if status != "passed":
        output = (server.root / "mutant-tests.log").read_text(errors="replace")[-4000:]
        raise SystemExit(f"{output}\nthe unmutated tests of {TARGETS[key].path} do not pass ({status}): {detail}")
    log(f"baseline {TARGETS[key].path}: tests pass in {time.monotonic() - started:.0f} s")


def run(mutations: list[Mutation], worktree: bool, ref: str, timeout_s: float, log) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="mhpo-mutants-") as folder:
        sandbox = Sandbox(Path(folder))
        copy_tree(sandbox.root, worktree, ref)
        for mutation in mutations:  # every snippet is checked before anything runs
            mutated((sandbox.root / TARGETS[mutation.target].path).read_text(encoding="utf-8"), mutation)
        check_imports_come_from(sandbox.root)
        server = TestServer(sandbox.root)
        try:
            outcomes = []
            checked: set[str] = set()
            for number, mutation in enumerate(mutations, 1):
                if mutation.target not in checked:  # the unmutated tests first: a kill must mean something
                    checked.add(mutation.target)
                    check_baseline(server, mutation.target, timeout_s, log)
                sandbox.apply(mutation)
                started = time.monotonic()
                try:
                    status, detail = run_tests(server, TARGETS[mutation.target], timeout_s)
                finally:
                    sandbox.restore()
                killed = status != "passed"
                seconds = time.monotonic() - started
                outcomes.append(Outcome(mutation, killed, status if killed else "survived", seconds, detail))
                where = f"{mutation.target}: {mutation.name}"
                log(f"[{number}/{len(mutations)}] {outcomes[-1].how:8s} {seconds:5.0f} s  {where}")
        finally:
            server.close()
        return outcomes


def report(outcomes: list[Outcome]) -> tuple[str, bool]:
    """The per-module table and the survivors; ok is False when a survivor has no stated reason."""
    lines = ["| module | killed / total | score |", "|---|---:|---:|"]
    for key, target in TARGETS.items():
        mine = [o for o in outcomes if o.mutation.target == key]
        if mine:
            killed = sum(o.killed for o in mine)
            lines.append(f"| `{target.path}` | {killed} / {len(mine)} | {100 * killed / len(mine):.0f}% |")
    survivors = [o for o in outcomes if not o.killed]
    ok = all(o.mutation.survives for o in survivors)
    if survivors:
        lines += ["", "Survivors:"]
        for o in survivors:
            reason = o.mutation.survives or "UNEXPLAINED: add a test that kills it, or state why it is acceptable"
            lines.append(f"- `{TARGETS[o.mutation.target].path}` {o.mutation.name}: {reason}")
    stale = [o for o in outcomes if o.killed and o.mutation.survives]
    for o in stale:
        lines.append(f"- note: {o.mutation.name} is now killed; its survival reason can go")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), help="mutate only these modules")
    parser.add_argument("--fast", action="store_true", help="only the mutants marked fast")
    parser.add_argument("--check", action="store_true", help="only check that every snippet applies, run nothing")
    parser.add_argument("--worktree", action="store_true", help="mutate the working files instead of --ref")
    parser.add_argument("--ref", default="HEAD", help="git ref whose files are mutated (default HEAD)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run (default 600)")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the fork server (internal)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    mutations = [m for m in MUTATIONS if (not args.only or m.target in args.only) and (m.fast or not args.fast)]
    try:
        return _main(args, mutations)
    except StaleMutation as error:
        print(f"stale mutation list: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, mutations: list[Mutation]) -> int:
    if args.check:
        with tempfile.TemporaryDirectory(prefix="mhpo-mutants-") as folder:
            copy_tree(Path(folder), args.worktree, args.ref)
            for mutation in mutations:
                mutated((Path(folder) / TARGETS[mutation.target].path).read_text(encoding="utf-8"), mutation)
        print(f"all {len(mutations)} mutations apply")
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # cleans up the sandbox and its server
    outcomes = run(mutations, args.worktree, args.ref, args.timeout, log=lambda line: print(line, flush=True))
    table, ok = report(outcomes)
    print("\n" + table)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "module": TARGETS[o.mutation.target].path,
                        "mutation": o.mutation.name,
                        "outcome": o.how,
                        "seconds": round(o.seconds, 1),
                        "detail": o.detail,
                    }
                    for o in outcomes
                ],
                indent=1,
            )
            + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
