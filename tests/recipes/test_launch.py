"""The launcher: command building, --dry-run output, running, ray job submission, waiting for the cluster."""

import json
import shlex
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from mhpo_verl import launch as launch_module
from mhpo_verl.launch import Launch, LaunchError, format_command, main, wait_for_cluster
from mhpo_verl.preflight import compose
from mhpo_verl.recipes import build_recipe

MODEL = ["--model", "qwen2.5-7b-instruct"]


def _section(text: str, title: str) -> str:
    after = text.split(f"# {title}:\n", 1)[1]
    return after.split("\n# ", 1)[0]


def test_list_shows_models_engines_and_algorithms(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("qwen2.5-7b-instruct", "qwen3-4b-base", "qwen3-30b-a3b-base", "EP8", "cispo", "megatron"):
        assert name in out


def test_model_is_required(capsys):
    assert main([]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_unknown_dataset_is_a_usage_error(capsys):
    assert main([*MODEL, "--train-data", "gsm8k,aime2024", "--dry-run"]) == 2
    assert "'aime2024' is neither a dataset" in capsys.readouterr().err


def test_dry_run_prints_command_config_algorithm_and_checks(data_dir, capsys):
    status = main([*MODEL, "--engine", "megatron", "--data-dir", str(data_dir), "--dry-run", "trainer.total_epochs=1"])
    out = capsys.readouterr().out
    assert status == 0
    command = shlex.split(_section(out, "command").replace("\\\n", " "))
    assert command[1:5] == ["-m", "verl.trainer.main_ppo", "--config-path=pkg://mhpo_verl.configs",
                            "--config-name=mhpo_megatron_trainer"]
    assert command[-1] == "trainer.total_epochs=1"
    config = yaml.safe_load(_section(out, "resolved verl config"))
    assert config["trainer"]["total_epochs"] == 1 and config["trainer"]["nnodes"] == 2
    assert config["actor_rollout_ref"]["actor"]["megatron"]["tensor_model_parallel_size"] == 2
    assert "actor_rollout_ref.actor.policy_loss.loss_mode: mhpo\n" in _section(out, "algorithm")
    assert "algorithm.adv_estimator: mhpo\n" in _section(out, "algorithm")
    assert "ok      verl validate_config: passed" in _section(out, "preflight")
    assert out.rstrip().endswith("# dry run: ok, 0 warning(s); nothing was started")


def test_overrides_may_come_between_options(data_dir, capsys):
    arguments = ["trainer.total_epochs=2", *MODEL, "trainer.test_freq=3", "--dry-run", "--data-dir", str(data_dir)]
    assert main(arguments) == 0
    config = yaml.safe_load(_section(capsys.readouterr().out, "resolved verl config"))
    assert (config["trainer"]["total_epochs"], config["trainer"]["test_freq"]) == (2, 3)


def test_dry_run_of_a_broken_override_exits_1(data_dir, capsys):
    overrides = ["actor_rollout_ref.actor.megatron.tensor_model_parallel_size=3"]
    assert main([*MODEL, "--engine", "megatron", "--data-dir", str(data_dir), "--dry-run", *overrides]) == 1
    out = capsys.readouterr().out
    assert "error   actor megatron: world size 16 is not divisible" in out
    assert "# dry run: " in out and "error(s)" in out


def test_algorithm_switch_changes_the_loss_lines(data_dir, capsys):
    assert main([*MODEL, "--algorithm", "clip-higher", "--data-dir", str(data_dir), "--dry-run"]) == 0
    lines = _section(capsys.readouterr().out, "algorithm")
    assert "loss_mode: vanilla" in lines and "loss_agg_mode: token-mean" in lines


def test_former_dapo_name_is_a_usage_error_that_explains(capsys):
    assert main([*MODEL, "--algorithm", "dapo", "--dry-run"]) == 2
    assert "'dapo' is now called 'clip-higher'" in capsys.readouterr().err


def test_allocation_other_than_the_layout_is_refused_unless_resized(data_dir, capsys):
    moe = ["--model", "qwen3-30b-a3b-base", "--engine", "megatron", "--data-dir", str(data_dir), "--dry-run"]
    assert main([*moe, "--nnodes", "2"]) == 2
    assert "laid out for 4 node(s) x 8 GPUs, got 2 x 8" in capsys.readouterr().err
    main([*moe, "--nnodes", "2", "--resize"])
    out = capsys.readouterr().out
    assert "# resized: the layout is for 4 x 8 GPUs" in out
    assert "EP 8 SP True, DP 4, rollout TP 4" in _section(out, "preflight")  # DP 8 -> 4, said so


def test_memory_estimate_is_printed_and_checked_against_the_gpu_size(data_dir, capsys):
    arguments = [*MODEL, "--engine", "megatron", "--data-dir", str(data_dir), "--dry-run"]
    assert main(arguments) == 0
    (line,) = [line for line in _section(capsys.readouterr().out, "preflight").splitlines() if " memory:" in line]
    assert line.startswith("ok      memory: ~") and "GB per GPU (params 7.6 + grads 15.2 + optimizer 5.7" in line
    assert line.endswith("within 80 GB")
    assert main([*arguments, "--gpu-memory-gb", "40"]) == 0  # a warning, not an error: it is an estimate
    out = capsys.readouterr().out
    assert "warning memory: ~" in out and "is above the 40 GB GPU" in out
    assert out.rstrip().endswith("# dry run: ok, 1 warning(s); nothing was started")


@pytest.mark.parametrize(
    ("mode", "entry"),
    [("one-step-off", "verl.experimental.one_step_off_policy.main_ppo"),
     ("fully-async", "verl.experimental.fully_async_policy.fully_async_main")],
)
def test_asynchronous_mode_dry_run_runs_verls_entry_point(mode, entry, data_dir, capsys):
    status = main([*MODEL, "--engine", "megatron", "--mode", mode, "--data-dir", str(data_dir), "--dry-run"])
    out = capsys.readouterr().out
    assert status == 0, _section(out, "preflight")
    command = shlex.split(_section(out, "command").replace("\\\n", " "))
    assert command[1:4] == ["-m", entry, f"--config-name={mode.replace('-', '_')}_ppo_megatron_trainer"]
    assert not any(part.startswith("--config-path") for part in command)  # the entry's own config folder
    assert f"| 2 node(s) x 8 GPUs + rollout 1 x 8 | {mode}" in out
    assert f"ok      {mode}: verl's asynchronous trainer settings hold" in out
    assert out.rstrip().endswith("# dry run: ok, 0 warning(s); nothing was started")


def test_submit_wraps_the_command_in_ray_job_submit_with_the_plugin_env():
    recipe = build_recipe("qwen2.5-7b-instruct", "megatron", pass_plugin_env=False)
    submitted = Launch(recipe, python="python3", submit_address="http://head:8265", wait_for_job=False)
    command = submitted.command()
    separator = command.index("--")
    assert command[:3] == ["ray", "job", "submit"] and "--address=http://head:8265" in command[:separator]
    assert "--no-wait" in command[:separator]
    (runtime_env,) = [part for part in command[:separator] if part.startswith("--runtime-env-json=")]
    assert json.loads(runtime_env.split("=", 1)[1]) == recipe.runtime_env()
    assert recipe.runtime_env()["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == "mhpo_verl.plugin"
    assert command[separator + 1 :] == submitted.trainer_command()
    assert not any("ray_kwargs" in part for part in command)  # Ray refuses the same variable twice


def test_submit_from_the_command_line_drops_the_ray_init_env(data_dir, capsys):
    status = main([*MODEL, "--submit", "http://head:8265", "--data-dir", str(data_dir), "--dry-run"])
    command = shlex.split(_section(capsys.readouterr().out, "command").replace("\\\n", " "))
    assert status == 0 and command[0] == "ray"
    assert "python3" in command and not any("ray_kwargs" in part for part in command)


@pytest.mark.parametrize(
    "command",
    [
        ["/venv/bin/python", "-m", "verl.trainer.main_ppo", "--config-name=x", 'data.files=["/a b/c"]', "k=it's"],
        ["ray", "job", "submit", "--address=http://h:8265", "--", "python3", "-m", "m", "a=1"],
    ],
)
def test_formatted_command_is_the_same_command_for_a_shell(command):
    text = format_command(command)
    assert shlex.split(text.replace("\\\n", " ")) == command
    assert text.splitlines()[0].endswith(("-m verl.trainer.main_ppo \\", "ray job submit \\"))


def _fake_python(tmp_path, exit_code):
    record = tmp_path / "argv.json"
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(0o755)
    return script, record


def test_run_executes_the_checked_command_and_returns_its_status(data_dir, tmp_path, capsys):
    python, record = _fake_python(tmp_path, exit_code=3)
    status = main([*MODEL, "--data-dir", str(data_dir), "--python", str(python), "trainer.total_epochs=2"])
    assert status == 3
    arguments = json.loads(record.read_text())
    assert arguments[:2] == ["-m", "verl.trainer.main_ppo"] and arguments[-1] == "trainer.total_epochs=2"


def test_run_stops_before_launching_when_preflight_fails(data_dir, tmp_path, capsys):
    python, record = _fake_python(tmp_path, exit_code=0)
    bad = "actor_rollout_ref.rollout.tensor_model_parallel_size=3"
    assert main([*MODEL, "--data-dir", str(data_dir), "--python", str(python), bad]) == 1
    assert not record.exists()
    assert "preflight failed; nothing started" in capsys.readouterr().err


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_for_cluster_returns_once_every_gpu_joined(capsys):
    answers = iter([(1, 8.0), (2, 8.0), (2, 16.0)])
    clock = _Clock()
    found = wait_for_cluster(2, 16, timeout=60, probe=lambda: next(answers), clock=clock, sleep=clock.sleep)
    assert found == (2, 16.0) and clock.now == 10.0
    assert "waiting for the Ray cluster: 1/2 nodes, 8/16 GPUs" in capsys.readouterr().err


def test_wait_for_cluster_keeps_polling_while_the_head_is_unreachable(capsys):
    clock = _Clock()
    answers = iter([ConnectionError("no head yet"), (2, 16.0)])

    def probe():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for_cluster(2, 16, timeout=60, probe=probe, clock=clock, sleep=clock.sleep) == (2, 16.0)
    assert "not reachable: ConnectionError: no head yet" in capsys.readouterr().err
    with pytest.raises(LaunchError, match="not reachable: ConnectionError: still down"):
        wait_for_cluster(1, 8, timeout=5, probe=lambda: (_ for _ in ()).throw(ConnectionError("still down")),
                         clock=clock, sleep=clock.sleep)


def test_wait_for_cluster_times_out_with_what_it_found():
    clock = _Clock()
    with pytest.raises(LaunchError, match=r"has 1 node\(s\) and 8 GPU\(s\) after 12 s; the recipe needs 2 node"):
        wait_for_cluster(2, 16, timeout=12, probe=lambda: (1, 8.0), clock=clock, sleep=clock.sleep)


def test_front_door_dispatches_to_the_launcher(capsys):
    from mhpo_verl.__main__ import main as front_door

    assert front_door(["train", "--list"]) == 0
    assert "algorithms:" in capsys.readouterr().out


@pytest.mark.slow
def test_verl_main_ppo_composes_the_same_config_from_the_command_line(data_dir, tmp_path):
    """The exact argv, given to verl's real Hydra entry point (``--cfg job`` prints the config instead of training)."""
    recipe = build_recipe("qwen3-30b-a3b-base", "megatron", "grpo", data_dir=str(data_dir))
    command = [*Launch(recipe, python=sys.executable).trainer_command(), "--cfg", "job", "--resolve"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    from_cli = yaml.safe_load(result.stdout)
    in_process = OmegaConf.to_container(compose(recipe.config_name, recipe.overrides()), resolve=True)
    assert from_cli == in_process


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "engine"), [("one-step-off", "megatron"), ("fully-async", "fsdp")])
def test_verl_async_entry_points_compose_the_same_config_from_the_command_line(mode, engine, data_dir, tmp_path):
    """The exact argv given to verl's asynchronous entry point (run from a folder that is not a verl checkout, where
    the entry configs' own file:// search path would not resolve) composes what the preflight checked."""
    recipe = build_recipe("qwen2.5-7b-instruct", engine, "mhpo", mode=mode, data_dir=str(data_dir))
    command = [*Launch(recipe, python=sys.executable).trainer_command(), "--cfg", "job", "--resolve"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    from_cli = yaml.safe_load(result.stdout)
    in_process = compose(recipe.config_name, recipe.overrides(), recipe.config_dir)
    assert from_cli == OmegaConf.to_container(in_process, resolve=True)
    assert from_cli["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "mhpo"



@pytest.mark.ray
def test_cluster_probe_reads_a_real_ray_cluster():
    import ray

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        assert launch_module.ray_cluster_probe() == (1, 0.0)
        # Enough for 1 node and 0 GPUs: returns at once and disconnects from the cluster.
        assert wait_for_cluster(1, 0, timeout=0, probe=launch_module.ray_cluster_probe) == (1, 0.0)
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
