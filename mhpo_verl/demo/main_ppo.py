"""verl's full PPO trainer (``main_ppo``: Ray, TaskRunner, TransferQueue, agent loop, reward loop) on a CPU.

``python -m mhpo_verl.demo.main_ppo [--steps N] [--out DIR] [--set KEY=VALUE ...]`` writes the demo's problems as
verl parquet files, then runs verl's own ``run_ppo`` with the CPU platform (:mod:`mhpo_verl.cpu_backend.platform`)
and the ``hf`` rollout backend (:mod:`mhpo_verl.cpu_backend.hf_rollout`) loaded in every process. The equivalent verl
command line is printed first, so the same run can be started with ``python -m verl.trainer.main_ppo`` directly.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see mhpo_verl/demo/__main__.py

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from mhpo_verl.cpu_backend import HF_ROLLOUT_MODULE, PLATFORM_MODULE
from mhpo_verl.demo.loop import DemoConfig, cpu_actor_overrides, verl_config_source
from mhpo_verl.demo.tasks import TaskGenerator

PLUGIN_MODULES = (PLATFORM_MODULE, HF_ROLLOUT_MODULE)
"""Imported by every verl process at ``import verl`` (``VERL_USE_EXTERNAL_MODULES``)."""


def write_dataset(out_dir: Path, config: DemoConfig, train_rows: int, val_rows: int) -> tuple[Path, Path]:
    """The demo's problems as verl RL parquet files (train from steps 0.., validation from a disjoint seed)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    train = TaskGenerator(config.task_kinds, seed=config.seed).problems(step=0, count=train_rows)
    val = TaskGenerator(config.task_kinds, seed=config.seed + 1).problems(step=0, count=val_rows)
    paths = out_dir / "train.parquet", out_dir / "val.parquet"
    pd.DataFrame([p.as_verl_row(i, "train", config.worked_example) for i, p in enumerate(train)]).to_parquet(paths[0])
    pd.DataFrame([p.as_verl_row(i, "test", config.worked_example) for i, p in enumerate(val)]).to_parquet(paths[1])
    return paths


LAUNCHER_KEYS = ("data.train_files", "data.val_files", "trainer.nnodes", "trainer.n_gpus_per_node")
"""What a launcher recipe decides (data and cluster layout); :func:`cluster_overrides` leaves these keys to it."""


def cpu_run_overrides(config: DemoConfig, model_path: Path, out_dir: Path) -> list[str]:
    """The CPU pieces of a ``main_ppo`` run, on a local or an existing Ray cluster: the in-process demo's actor
    settings plus what the full trainer adds (the hf rollout, the reward function, the schedule, TransferQueue
    sized for a small machine). No data files, no Ray sizing and no user overrides."""
    return [
        *cpu_actor_overrides(config, model_path),
        "data.max_prompt_length=256",
        f"data.max_response_length={config.max_new_tokens}",
        "data.dataloader_num_workers=0",
        f"data.seed={config.seed}",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.calculate_log_probs=False",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        f"actor_rollout_ref.rollout.dtype={'bfloat16' if config.rollout_dtype == 'bf16' else 'float32'}",
        "reward.custom_reward_function.path=pkg://reward_fns",
        "reward.custom_reward_function.name=compute_score",
        *[f"+reward.custom_reward_function.reward_kwargs.{k}={v}" for k, v in config.reward_options.items()],
        "reward.num_workers=1",
        "trainer.logger=[console]",
        f"trainer.total_training_steps={config.steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.project_name=mhpo_verl_cpu",
        f"trainer.experiment_name={config.loss_mode}",
        f"trainer.default_local_dir={out_dir / 'checkpoints'}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]


def main_ppo_overrides(
    config: DemoConfig, model_path: Path, out_dir: Path, train: Path, val: Path, training_slots: int = 1
) -> list[str]:
    """verl overrides for a CPU ``main_ppo`` run on a Ray cluster of its own (started by verl's ``ray.init``):
    :func:`cpu_run_overrides`, the data files, Ray's size, then the user's overrides (which win).

    ``training_slots`` is the number of training processes (``trainer.nnodes x trainer.n_gpus_per_node``), which
    the local Ray cluster must offer as logical GPUs (see :func:`training_slots`)."""
    local_ray = [
        # Ray's logical CPUs are scheduling tokens (verl's actors ask for one each); a Ray "GPU" is the CPU
        # platform's slot for one training process (see PlatformCPU.ray_resource_name).
        "+ray_kwargs.ray_init.num_cpus=16",
        f"+ray_kwargs.ray_init.num_gpus={training_slots}",
        "+ray_kwargs.ray_init.include_dashboard=False",
    ]
    data = [f"data.train_files={train}", f"data.val_files={val}"]
    return [*cpu_run_overrides(config, model_path, out_dir), *data, *local_ray, *config.overrides]


def cluster_overrides(config: DemoConfig, model_path: Path, out_dir: Path) -> list[str]:
    """Extra overrides that turn a launcher recipe (``python -m mhpo_verl train ... --submit``) into a CPU run on a
    Ray cluster that is already up, with ``VERL_PLATFORM=cpu`` on its nodes: :func:`cpu_run_overrides` without
    :data:`LAUNCHER_KEYS` (the recipe's data and layout stand), then the user's overrides.

    There is no Ray sizing: a driver that joins a running cluster may not size it, each node offers its own
    ``--num-gpus`` training slots."""
    own = [o for o in cpu_run_overrides(config, model_path, out_dir) if o.split("=", 1)[0] not in LAUNCHER_KEYS]
    return [*own, *config.overrides]


def compose_main_ppo(loss_mode: str, overrides: list[str]) -> Any:
    """verl's trainer config for ``overrides``, composed the way ``python -m verl.trainer.main_ppo`` composes it."""
    from hydra import compose, initialize_config_dir

    config_dir, config_name = verl_config_source(loss_mode)
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def training_slots(verl_config: Any) -> int:
    """Training processes the run asks for, ``trainer.nnodes x trainer.n_gpus_per_node`` (user overrides included:
    ``--set trainer.n_gpus_per_node=2`` trains with 2 data-parallel CPU workers)."""
    nnodes, per_node = verl_config.trainer.nnodes, verl_config.trainer.n_gpus_per_node
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (nnodes, per_node)):
        raise ValueError(
            f"trainer.nnodes and trainer.n_gpus_per_node must be positive integers, got {nnodes!r} and {per_node!r}"
        )
    return nnodes * per_node


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mhpo_verl.demo.main_ppo", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--loss-mode", default="mhpo")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo_main_ppo"))
    parser.add_argument("--model", default=None, help="local HF model folder (default: bundled SmolLM2-135M)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = DemoConfig(
            steps=args.steps, loss_mode=args.loss_mode, model_path=args.model, cache_dir=args.cache_dir,
            overrides=tuple(args.overrides),
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from mhpo_verl import LOSS_NAME
    from mhpo_verl.cpu_backend import platform as platform_cpu
    from mhpo_verl.demo.model import prepare_model

    platform_cpu.enable()
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join(dict.fromkeys([*modules, *PLUGIN_MODULES]))
    import mhpo_verl.cpu_backend.hf_rollout  # noqa: F401  (registers the hf backend in this process too)

    model_path = Path(config.model_path) if config.model_path else prepare_model(config.cache_dir)
    train, val = write_dataset(args.out / "data", config, train_rows=config.steps * config.prompts_per_step, val_rows=8)
    # The user's overrides may change the number of training processes; the local Ray cluster must offer as many
    # slots, so the overrides are composed once to read it.
    single_slot = main_ppo_overrides(config, model_path, args.out, train, val)
    slots = training_slots(compose_main_ppo(config.loss_mode, single_slot))
    overrides = main_ppo_overrides(config, model_path, args.out, train, val, training_slots=slots)
    project_config = "--config-path=pkg://mhpo_verl.configs --config-name=mhpo_trainer "
    source = project_config if config.loss_mode == LOSS_NAME else ""
    print(
        "[main_ppo] the same run as a verl command line:\n"
        f"VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES={','.join(PLUGIN_MODULES)} \\\n"
        f"  python -m verl.trainer.main_ppo {source}\\\n  " + " \\\n  ".join(shlex.quote(o) for o in overrides),
        flush=True,
    )

    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

    run_ppo(compose_main_ppo(config.loss_mode, overrides), task_runner_class=TaskRunnerV1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
