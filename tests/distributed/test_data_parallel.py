"""Data parallelism is real: verl's actor worker on 2 gloo processes makes the same update as on 1.

Both runs go through torchrun and :mod:`tests.distributed.dp_update_rank` (verl's ``ActorRolloutRefWorker``, FSDP2,
the ``mhpo`` loss, the batch cut per rank as verl's dispatch cuts it). Two updates are compared: the mhpo default
``seq-mean-token-mean`` with fixed micro-batches, then ``token-mean`` with dynamic micro-batches over 2 epochs, where
the two ranks hold different numbers of tokens, so a loss normalised per rank instead of over the global batch would
move the weights differently. With SGD the change of the weights is the gradient itself (times the learning rate).

Tolerance (fp32): per tensor, ``|dW_2 - dW_1| <= 1e-4 |dW_1|`` in norm and ``max |W_2 - W_1| <= 1e-5 max |dW_1|``.
Measured: ~4e-9 absolute against changes of ~1e-3 (update 1) and ~7e-3 (update 2); the only differences are the
order of floating-point sums (gradient all-reduce, micro-batch accumulation).
"""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from tests.demo.helpers import ISOLATED_VARIABLES

RANK_SCRIPT = Path(__file__).with_name("dp_update_rank.py")


def _run_side_by_side(world_sizes: tuple[int, ...], model_dir: Path, out_dir: Path, timeout: float = 900) -> None:
    """torchrun ``dp_update_rank.py`` with each world size, all at once; each must exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    runs = {}
    for world_size in world_sizes:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
            str(RANK_SCRIPT), str(model_dir), str(out_dir),
        ]  # fmt: skip
        log = (out_dir / f"dp{world_size}.log").open("w")
        runs[world_size] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    for world_size, (process, log) in runs.items():
        with log:
            returncode = process.wait(timeout=timeout)
        output = (out_dir / f"dp{world_size}.log").read_text()
        assert returncode == 0, f"dp={world_size} failed:\n{output[-5000:]}"


def _changes(snapshots: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{name: after[name] - before[name] for name in before} for before, after in pairwise(snapshots)]


@pytest.mark.slow
def test_two_ranks_update_the_weights_like_one(char_model_dir, tmp_path):
    _run_side_by_side((1, 2), char_model_dir, tmp_path)
    single, double = (torch.load(tmp_path / f"dp{n}.pt") for n in (1, 2))

    # The split the comparison rests on: every rank had data, and the token counts differ between the ranks.
    for report in double["reports"]:
        tokens = report["tokens_per_rank"]
        assert len(tokens) == 2 and min(tokens) > 0 and tokens[0] != tokens[1], tokens
    assert [r["tokens_per_rank"] for r in single["reports"]] == [[sum(r["tokens_per_rank"])] for r in double["reports"]]

    assert single["weights"][0].keys() == double["weights"][0].keys()
    for name, initial in single["weights"][0].items():
        assert torch.equal(initial, double["weights"][0][name]), f"{name}: the two runs did not start equal"

    for update, (one, two) in enumerate(zip(_changes(single["weights"]), _changes(double["weights"])), start=1):
        largest = max(change.abs().max().item() for change in one.values())
        assert largest > 1e-4, f"update {update} hardly moved the weights ({largest:.2e}): nothing to compare"
        for name, change in one.items():
            assert change.norm() > 0, f"update {update} left {name} unchanged"
            gap = (two[name] - change).norm() / change.norm()
            assert gap <= 1e-4, f"update {update}, {name}: DP=2 differs from DP=1 by {gap:.2e} (relative)"
        after_one, after_two = single["weights"][update], double["weights"][update]
        worst = max((after_two[name] - after_one[name]).abs().max().item() for name in after_one)
        assert worst <= 1e-5 * largest, f"after update {update}: weights differ by {worst:.2e} (changes {largest:.2e})"

    # verl's gradient norm is global over the data-parallel group: the same number on both layouts.
    for one, two in zip(single["reports"], double["reports"]):
        assert one["grad_norm"] == pytest.approx(two["grad_norm"], rel=1e-5)
