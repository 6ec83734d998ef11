"""verl's Megatron engine on CPU (mhpo_verl.cpu_backend.megatron): the MHPO loss through MegatronEngineWithLMHead at
world size 1, 2-way data parallel and 2-way tensor parallel on gloo, against a plain transformers forward, against
world size 1, and against verl's FSDP engine on the same batch and weights.

Each scenario runs :mod:`tests.megatron.scenario` in fresh processes (torchrun for two ranks): the backend changes
process-wide state, and Megatron and FSDP never share a process. Tolerances are bf16's: the Megatron engine keeps
bf16 parameters (verl's McoreEngineConfig allows no fp32), the FSDP engine computes in bf16.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mhpo_verl.cpu_backend import megatron as megatron_cpu
from tests.demo.helpers import ISOLATED_VARIABLES, run_python

SCENARIO = Path(__file__).with_name("scenario.py")
LOG_PROB_TOLERANCE = 0.05
"""Max |log p| difference between two bf16 computations of the same weights: about 3 bf16 steps (2**-8 relative) at
|log p| ~ 4. A wrong mask, position or weight mapping moves log-probs by far more (see the negative control)."""

LEARNING_RATE = 1e-3
"""The scenarios' learning rate (Adam, weight decay 0)."""
METRIC_TOLERANCE = 5e-3
"""Absolute tolerance on the loss and mean metrics between the engines (measured differences up to 1.4e-3)."""

_ENVIRONMENT_VARIABLES = {*ISOLATED_VARIABLES, megatron_cpu.ENABLE_VARIABLE}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Scenarios:
    """Runs each scenario once per session (they take tens of seconds) and hands out its results."""

    def __init__(self, model: Path, root: Path):
        self.model, self.root, self.done = model, root, {}

    def __call__(self, name: str, nproc: int = 1, **settings) -> dict:
        if name not in self.done:
            out = self.root / name
            settings = {"model": str(self.model), "out": str(out), "lr": LEARNING_RATE, **settings}
            if nproc == 1:
                launcher = [sys.executable]
            else:
                launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
                            f"--master-port={_free_port()}"]  # fmt: skip
            env = {k: v for k, v in os.environ.items() if k not in _ENVIRONMENT_VARIABLES}
            env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
            result = subprocess.run(
                [*launcher, str(SCENARIO), json.dumps(settings)], capture_output=True, text=True, env=env, timeout=900
            )
            assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stderr[-6000:]}"
            report = json.loads((out / "result.json").read_text())
            report.update(torch.load(out / "weights.pt"))
            self.done[name] = report
        return self.done[name]


@pytest.fixture(scope="module")
def scenarios(tiny_llama_dir, tmp_path_factory) -> Scenarios:
    return Scenarios(tiny_llama_dir, tmp_path_factory.mktemp("megatron_scenarios"))


def _max_log_prob_gap(first: list[list[float]], second: list[list[float]]) -> float:
    assert [len(row) for row in first] == [len(row) for row in second]
    return max(abs(a - b) for x, y in zip(first, second) for a, b in zip(x, y))


def _response_tokens(report: dict) -> int:
    return sum(len(row) for row in report["hf_log_probs"])


# --- without a process group ---------------------------------------------------------------------------------------


def test_version_check_names_what_it_found_and_what_it_needs(monkeypatch):
    megatron_cpu.check_versions()  # the installed ones are the supported ones
    monkeypatch.setattr(megatron_cpu.importlib.metadata, "version", lambda name: "0.17.0")
    with pytest.raises(RuntimeError, match=r"megatron-core 0\.17\.0 \(expected 0\.16\.1\).*mbridge 0\.17\.0"):
        megatron_cpu.check_versions()


def test_causal_mask_forbids_the_future():
    assert (~megatron_cpu.causal_mask(3)[0, 0]).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_padded_mask_is_causal_over_valid_keys():
    forbidden = megatron_cpu.padded_causal_mask(torch.tensor([[True, True, False]]))
    assert forbidden.shape == (1, 1, 3, 3)
    # the padding query (row 3) sees the valid keys and itself, so no row is empty; its output is never read
    assert (~forbidden[0, 0]).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_backend_refuses_an_accelerator_keeps_fsdp_out_and_reaches_child_processes():
    report = run_python(
        """
        import json, torch
        from mhpo_verl.cpu_backend import megatron as megatron_cpu
        messages = []
        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: True
        try:
            megatron_cpu.enable()
        except RuntimeError as error:
            messages.append(str(error))
        torch.cuda.is_available = real
        megatron_cpu.enable()
        from verl.workers.engine import EngineRegistry
        try:
            EngineRegistry.get_engine_cls("language_model", "fsdp2")(None, None, None, None)
        except RuntimeError as error:
            messages.append(str(error))
        import os
        print(json.dumps({"messages": messages, "flag": os.environ["MHPO_VERL_CPU_MEGATRON"],
                          "modules": os.environ["VERL_USE_EXTERNAL_MODULES"]}))
        """
    )
    accelerator, fsdp = report["messages"]
    assert "refusing" in accelerator and "'cuda'" in accelerator
    assert "FSDPEngineWithLMHead cannot run in a process with the CPU Megatron backend" in fsdp
    assert report["flag"] == "1"
    assert report["modules"].split(",") == ["mhpo_verl.cpu_backend.platform", "mhpo_verl.cpu_backend.megatron"]

    child = run_python(
        """
        import json
        import verl
        from verl.utils.device import get_device_name
        from verl.workers.engine import EngineRegistry
        from mhpo_verl.cpu_backend import megatron as megatron_cpu
        engine = EngineRegistry.get_engine_cls("language_model", "megatron").__name__
        print(json.dumps({"device": get_device_name(), "engine": engine, "enabled": megatron_cpu.is_enabled()}))
        """,
        env={
            "VERL_PLATFORM": "cpu",
            "MHPO_VERL_CPU_MEGATRON": "1",
            "VERL_USE_EXTERNAL_MODULES": "mhpo_verl.cpu_backend.platform,mhpo_verl.cpu_backend.megatron",
        },
    )
    assert child == {"device": "cpu", "engine": "MegatronEngineWithLMHead", "enabled": True}


# --- through verl's worker and engine ------------------------------------------------------------------------------


@pytest.mark.slow
def test_world_size_1_log_probs_equal_a_transformers_forward_and_the_loss_runs_per_micro_batch(scenarios):
    report = scenarios("megatron_ws1", engine="megatron", checkpoint=True)
    assert report["engine"] == "MegatronEngineWithLMHead"
    assert _max_log_prob_gap(report["old_log_probs"], report["hf_log_probs"]) < LOG_PROB_TOLERANCE
    # Negative control: packed sequences attending across each other would be 4x the tolerance off or more.
    assert _max_log_prob_gap(report["hf_log_probs_unmasked_packing"], report["hf_log_probs"]) > 4 * LOG_PROB_TOLERANCE
    (calls,) = report["loss_calls_per_rank"]
    assert [call["sequences"] for call in calls] == [1, 1, 1, 1]  # micro-batches of 1 sequence
    assert sum(call["tokens"] for call in calls) == _response_tokens(report)
    metrics = report["metrics"]
    assert metrics["actor/pg_loss"] != 0.0 and metrics["actor/mhpo/log_ratio_abs_mean"] > 0.05
    assert metrics["actor/grad_norm"] > 0


@pytest.mark.slow
def test_checkpoint_round_trip_through_verls_megatron_checkpoint_manager(scenarios):
    report = scenarios("megatron_ws1", engine="megatron", checkpoint=True)
    saved, checkpoint = report["weights"], report["checkpoint"]
    moved = max((checkpoint["moved"][name] - saved[name]).abs().max().item() for name in saved)
    assert moved > 1e-4  # the update after saving changed the weights...
    for name, tensor in saved.items():  # ...and loading the checkpoint brought back exactly the saved ones
        assert torch.equal(checkpoint["restored"][name], tensor), name


def _assert_same_update(parallel: dict, single: dict, initial: dict) -> None:
    """Weights after one update equal world size 1's up to bf16 rounding. Adam's first step moves each weight by
    about ``lr`` in the direction of its gradient's sign, so where a gradient is near 0 and bf16 rounding flips its
    sign two runs differ by up to 2 lr: every weight within 2 lr plus a bf16 step, and the update itself (weights
    minus initial weights) the same to 2% of its mean size."""
    assert parallel["weights"].keys() == single["weights"].keys()
    assert set(single["weights"]) <= set(initial)  # HF names (the tied lm_head is not exported separately)
    for name, reference in single["weights"].items():
        weights = parallel["weights"][name]
        # bf16 keeps 8 significant bits: values in [2**e, 2**(e+1)) are 2**(e-7) apart, and each run's result is
        # rounded to that grid once more than its Adam step.
        step = 2.0 ** (math.floor(math.log2(reference.abs().max().item())) - 7)
        assert (weights - reference).abs().max().item() <= 2 * LEARNING_RATE + step, name
        update, reference_update = weights - initial[name], reference - initial[name]
        # The update moved this tensor, where bf16 can represent a step of lr: near a norm weight's 1.0 the bf16
        # spacing (2**-8) is 4x lr, so Adam's first step rounds back to the initial value in every run.
        if initial[name].abs().median().item() * 2**-8 < LEARNING_RATE:
            assert reference_update.abs().mean() > 0.1 * LEARNING_RATE, name
        assert (update - reference_update).abs().mean() <= 0.02 * reference_update.abs().mean(), name


@pytest.fixture(scope="module")
def initial_weights(tiny_llama_dir) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    return {name: tensor.float() for name, tensor in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "tp", "remove_padding"),
    # DP 2 takes verl's padded layout (use_remove_padding=False), TP 2 and world size 1 the packed one: the weights
    # after the update agree across layouts too.
    [("megatron_dp2_padded", 1, False), ("megatron_tp2", 2, True)],
)
def test_two_ranks_equal_a_transformers_forward_and_world_size_1(scenarios, initial_weights, name, tp, remove_padding):
    report = scenarios(name, nproc=2, engine="megatron", tp=tp, remove_padding=remove_padding)
    assert report["dp_size"] == 2 // tp
    assert _max_log_prob_gap(report["old_log_probs"], report["hf_log_probs"]) < LOG_PROB_TOLERANCE
    # The registered mhpo loss ran once per micro-batch on every rank: data parallel splits the 4 sequences,
    # tensor parallel gives both ranks all 4.
    calls = report["loss_calls_per_rank"]
    assert [len(rank_calls) for rank_calls in calls] == ([2, 2] if tp == 1 else [4, 4])
    tokens = [sum(call["tokens"] for call in rank_calls) for rank_calls in calls]
    assert sum(tokens) == _response_tokens(report) * tp
    _assert_same_update(report, scenarios("megatron_ws1", engine="megatron", checkpoint=True), initial_weights)


def _amplified_tokens(call: dict) -> torch.Tensor:
    """Per token of one loss call: M(r) > 1, from the log-probs the loss saw (as diagnostics.mhpo_metrics counts)."""
    from mhpo_verl.objective import gradient_multiplier
    from mhpo_verl.params import MHPOParams

    params = MHPOParams()
    log_ratio = torch.tensor(call["log_prob"]) - torch.tensor(call["old_log_prob"])
    log_ratio = log_ratio.clamp(-params.log_ratio_clamp, params.log_ratio_clamp)
    return gradient_multiplier(log_ratio, params.c) > 1.0


@pytest.mark.slow
def test_fsdp_and_megatron_engines_give_the_same_mhpo_loss_and_metrics(scenarios):
    megatron = scenarios("megatron_ws1", engine="megatron", checkpoint=True)
    fsdp = scenarios("fsdp_ws1", engine="fsdp")
    assert (megatron["engine"], fsdp["engine"]) == ("MegatronEngineWithLMHead", "FSDPEngineWithLMHead")
    assert _max_log_prob_gap(megatron["old_log_probs"], fsdp["old_log_probs"]) < LOG_PROB_TOLERANCE
    assert [len(c) for c in megatron["loss_calls_per_rank"]] == [len(c) for c in fsdp["loss_calls_per_rank"]]
    # The same micro-batches reach the registered loss, with identical old log-probs and advantages, and log-probs
    # that differ only by bf16 rounding.
    (ours,), (theirs,) = megatron["loss_calls_per_rank"], fsdp["loss_calls_per_rank"]
    assert len(ours) == len(theirs) == 4
    for mine, other in zip(ours, theirs):
        assert (mine["old_log_prob"], mine["advantages"]) == (other["old_log_prob"], other["advantages"])
        assert max(abs(a - b) for a, b in zip(mine["log_prob"], other["log_prob"])) < LOG_PROB_TOLERANCE
    compared = [key for key in fsdp["metrics"] if key.startswith(("actor/mhpo/", "actor/pg_")) or key == "actor/loss"]
    assert {"actor/pg_loss", "actor/mhpo/psi_mean", "actor/mhpo/zeta_mean", "actor/mhpo/survival_pos"} <= set(compared)
    # M(1) = 1 exactly, so whether a token counts as amplified (M > 1) flips with the sign of a log-ratio near 0,
    # and two engines' bf16 log-probs put some tokens on either side: that fraction is checked against each engine's
    # own log-ratios instead, and every token that flips between the engines must sit within the log-prob tolerance
    # of that edge.
    amplified = "actor/mhpo/grad_amplified_frac"
    flags = {}
    for engine_name, report in (("megatron", megatron), ("fsdp", fsdp)):
        (calls,) = report["loss_calls_per_rank"]
        flags[engine_name] = [_amplified_tokens(call) for call in calls]
        recomputed = sum(f.float().mean().item() for f in flags[engine_name]) / len(calls)
        assert report["metrics"][amplified] == pytest.approx(recomputed, abs=1e-6), engine_name
    for call, flag_mine, flag_other in zip(ours, flags["megatron"], flags["fsdp"]):
        log_ratio = torch.tensor(call["log_prob"]) - torch.tensor(call["old_log_prob"])
        assert all(abs(value) < LOG_PROB_TOLERANCE for value in log_ratio[flag_mine != flag_other].tolist())
    compared.remove(amplified)
    for key in compared:
        mine, other = megatron["metrics"][key], fsdp["metrics"][key]
        # Means move with the log-probs' bf16 differences; a fraction of tokens moves by one token's share (up to
        # 1/4 of a micro-batch's 1/5) when a token sits at a threshold.
        tolerance = 0.06 if key.endswith("frac") or key.endswith("frac_lower") else METRIC_TOLERANCE
        assert mine == pytest.approx(other, abs=tolerance), (key, mine, other)
    assert megatron["metrics"]["actor/grad_norm"] == pytest.approx(fsdp["metrics"]["actor/grad_norm"], rel=2e-2)


@pytest.mark.slow
def test_pipeline_parallel_2_with_untied_embeddings(scenarios, tmp_path_factory):
    """PP 2 runs on gloo (megatron's p2p schedule) for a model with its own lm_head. With tied embeddings it cannot
    start: mbridge 0.15.1 loads the last stage's output layer from ``lm_head.weight``, which tied checkpoints do
    not contain (``ValueError: Weights {'lm_head.weight'} not found``)."""
    from tests.megatron.conftest import make_tiny_llama

    untied = make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_untied"), tie_word_embeddings=False)
    report = Scenarios(untied, tmp_path_factory.mktemp("pp2"))("megatron_pp2", nproc=2, engine="megatron", pp=2)
    assert _max_log_prob_gap(report["old_log_probs"], report["hf_log_probs"]) < LOG_PROB_TOLERANCE
    first_stage, last_stage = report["loss_calls_per_rank"]
    assert (len(first_stage), len(last_stage)) == (0, 4)  # the loss runs where the logits are: the last stage
    assert sum(call["tokens"] for call in last_stage) == _response_tokens(report)
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"} <= set(
        report["weights"]
    )  # both stages' weights exported under HF names
    assert report["metrics"]["actor/grad_norm"] > 0 and report["metrics"]["actor/pg_loss"] != 0
