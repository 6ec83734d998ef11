"""Two Ray nodes on this machine, one CPU training slot each; verl's main_ppo with ``trainer.nnodes=2`` submitted
the way ``examples/cluster/ray_cluster.sh submit`` submits it (``python -m mhpo_verl train ... --submit``).

The nodes run with ``VERL_PLATFORM=cpu`` in their environment, which is all a CPU cluster needs: the job's runtime
env names only the MHPO plugin, and the plugin loads the CPU backend when that variable asks for it. The recipe
(Qwen2.5-7B on FSDP, resized to 2 x 1) keeps its layout-independent settings (dynamic batch sizes, token budgets,
the mhpo loss and estimator); :func:`mhpo_verl.demo.main_ppo.cluster_overrides` swaps in the tiny model, the hf
rollout and a 2-step schedule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mhpo_verl.demo.loop import DemoConfig
from mhpo_verl.demo.main_ppo import cluster_overrides, write_dataset
from tests.distributed.local_cluster import LocalRayCluster
from tests.distributed.runs import SMALL_RUN, assert_trained, run_env, step_metrics

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "examples" / "cluster" / "ray_cluster.sh"
STEPS = 2


def _training_nodes(cluster: LocalRayCluster) -> set[str]:
    """Ids of the nodes that hosted verl's training workers (``WorkerDict`` actors, finished ones included)."""
    ray = str(Path(sys.executable).parent / "ray")
    # Unfiltered: Ray's state API holds the class under its qualified name (verl builds WorkerDict inside a factory
    # function), which an exact class_name filter does not match; Ray prints a sentence, not JSON, for no actors.
    listing = subprocess.run(
        [ray, "list", "actors", f"--address={cluster.dashboard_url}", "--detail", "--format=json", "--limit=1000"],
        capture_output=True, text=True, env=cluster.env, timeout=300,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-3000:]
    if not listing.stdout.lstrip().startswith("["):
        return set()
    actors = json.loads(listing.stdout)
    return {actor["node_id"] for actor in actors if str(actor.get("class_name", "")).endswith("WorkerDict")}


@pytest.mark.slow
@pytest.mark.ray
def test_main_ppo_on_two_ray_nodes_through_the_cluster_launcher(char_model_dir, tmp_path):
    config = DemoConfig(
        steps=STEPS,
        prompts_per_step=2,
        samples_per_prompt=4,
        ppo_mini_batch_size=2,
        micro_batch_size=2,
        max_new_tokens=12,
        model_path=str(char_model_dir),
        overrides=SMALL_RUN,
    )
    train, val = write_dataset(tmp_path / "data", config, train_rows=STEPS * config.prompts_per_step, val_rows=4)
    launcher_options = [
        "--python", sys.executable, "--model-path", str(char_model_dir), "--train-data", str(train),
        "--val-data", str(val), "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    overrides = cluster_overrides(config, char_model_dir, tmp_path / "out")

    cluster = LocalRayCluster(
        nodes=2, gpus_per_node=1, env=run_env(VERL_PLATFORM="cpu"), ray=str(Path(sys.executable).parent / "ray")
    )
    try:
        cluster.start()
        recipe = {"MODEL": "qwen2.5-7b-instruct", "ENGINE": "fsdp", "NNODES": "2", "GPUS_PER_NODE": "1", "RESIZE": "1"}
        submit_env = {**cluster.env, **recipe, "PYTHON": sys.executable, "RAY_DASHBOARD": cluster.dashboard_url}
        result = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "submit", *launcher_options, *overrides],
            capture_output=True, text=True, env=submit_env, cwd=tmp_path, timeout=1800,
        )  # fmt: skip
        output = result.stdout + result.stderr
        nodes = _training_nodes(cluster) if result.returncode == 0 else set()
    finally:
        left_behind = cluster.stop()
    assert result.returncode == 0, output[-6000:]
    assert "succeeded" in output, output[-3000:]  # ray job submit reports the job's final status
    assert_trained(step_metrics(output), expected_steps=STEPS)
    assert len(nodes) == 2, f"verl's training workers ran on {len(nodes)} node(s), expected one on each of 2"
    assert not left_behind and not cluster.processes(), f"cluster processes left: {left_behind}"
