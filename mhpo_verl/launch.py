"""``python -m mhpo_verl train``: build the verl ``main_ppo`` command of a recipe, check it, then run or submit it.

Examples::

    python -m mhpo_verl train --list
    python -m mhpo_verl train --model qwen2.5-7b-instruct --engine fsdp --dry-run
    python -m mhpo_verl train --model qwen3-30b-a3b-base --engine megatron --algorithm grpo trainer.total_epochs=2
    python -m mhpo_verl train --model qwen2.5-32b-instruct --engine megatron --submit http://head:8265
    python -m mhpo_verl train --model qwen2.5-7b-instruct --mode one-step-off --dry-run   # + a rollout node

Every run is checked first (:mod:`mhpo_verl.preflight`: verl's config dataclasses and ``validate_config``, parallel
layout, batch sizes, token budgets, per-GPU memory estimate, checkpoint folder, registered loss, reward function,
data files). ``--dry-run`` stops there: it prints the full command, the resolved verl config and the findings, and
exits 0 when nothing is wrong, on any machine, GPUs or not. ``--mode one-step-off`` / ``fully-async`` run verl's
asynchronous entry points, with vLLM on ``--rollout-nnodes`` extra node(s).
Arguments after the options are Hydra overrides appended to the recipe's (they win).

Exit status: 0 success, 1 preflight errors (or the training command's own failure status), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mhpo_verl.recipes import (
    ALGORITHMS,
    CONFIG_PATH,
    DEFAULT_LOGGERS,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_TRAIN_SETS,
    DEFAULT_VAL_SETS,
    ENGINES,
    MODELS,
    MODES,
    Architecture,
    Recipe,
    RecipeError,
    build_recipe,
)

if TYPE_CHECKING:  # verl and Hydra are imported only when a config is composed, to keep --list and --help fast
    from omegaconf import DictConfig

    from mhpo_verl.preflight import Finding

EXIT_OK, EXIT_PREFLIGHT_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2
LOSS_KEYS = (
    "actor_rollout_ref.actor.policy_loss.loss_mode",
    "algorithm.adv_estimator",
    "actor_rollout_ref.actor.loss_agg_mode",
    "actor_rollout_ref.actor.use_kl_loss",
)
"""Shown together after the config: the lines that say which algorithm actually runs."""


class LaunchError(RuntimeError):
    """The run cannot be started; the message says why."""


@dataclass(frozen=True)
class Launch:
    """What to execute: the recipe, the user's extra overrides, and how to start it (locally or ``ray job``)."""

    recipe: Recipe
    extra_overrides: tuple[str, ...] = ()
    python: str = sys.executable
    submit_address: str | None = None
    wait_for_job: bool = True
    gpu_memory_gb: float = 80.0

    @property
    def overrides(self) -> list[str]:
        return [*self.recipe.overrides(), *self.extra_overrides]

    def trainer_command(self) -> list[str]:
        # The asynchronous entry points read their own config folder (their @hydra.main config_path).
        config_path = [f"--config-path={CONFIG_PATH}"] if self.recipe.mode == "sync" else []
        return [
            self.python,
            "-m",
            self.recipe.entry_module,
            *config_path,
            f"--config-name={self.recipe.config_name}",
            *self.overrides,
        ]

    def command(self) -> list[str]:
        """The trainer command, wrapped in ``ray job submit`` (with the plugin's runtime env) when submitting."""
        if self.submit_address is None:
            return self.trainer_command()
        submit = ["ray", "job", "submit", f"--address={self.submit_address}"]
        submit.append(f"--runtime-env-json={json.dumps(self.recipe.runtime_env(), sort_keys=True)}")
        if not self.wait_for_job:
            submit.append("--no-wait")
        return [*submit, "--", *self.trainer_command()]


def format_command(command: Sequence[str]) -> str:
    """``command`` as copy-pasteable shell text: leading words and ``python -m module`` on one line, then one
    option or override per line."""
    quoted = [shlex.quote(part) for part in command]
    lines = [quoted[0]]
    leading = True
    for previous, part, shown in zip(command, command[1:], quoted[1:]):
        leading = leading and not part.startswith("-")
        if leading or part == "-m" or previous in ("-m", "--"):
            lines[-1] += f" {shown}"
        else:
            lines.append(shown)
    return " \\\n    ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides may come before, between or after options
    if args.list:
        print(describe_recipes())
        return EXIT_OK
    if args.model is None:
        parser.print_usage(sys.stderr)
        print("error: --model is required (see --list)", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    try:
        launch = _launch_from_args(args)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    if args.dry_run:
        return dry_run(launch)
    return run(launch, skip_preflight=args.skip_preflight, wait_for_gpus=args.wait_for_gpus)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mhpo_verl train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="list models, engines and algorithms, then exit")
    parser.add_argument("--model", choices=sorted(MODELS), help="model recipe")
    parser.add_argument("--engine", choices=ENGINES, default="fsdp", help="training engine (default: fsdp)")
    # Checked by the recipes (not argparse), so that a former name gets its own explanation.
    parser.add_argument("--algorithm", default="mhpo", help=f"one of {', '.join(ALGORITHMS)} (default: mhpo)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="sync",
        help="verl's main_ppo (sync, default) or its asynchronous one_step_off_policy / fully_async_policy trainers",
    )
    parser.add_argument(
        "--nnodes", type=int, help="training nodes (default: the recipe layout's; another count needs --resize)"
    )
    parser.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: the recipe layout's, 8)")
    parser.add_argument(
        "--resize",
        action="store_true",
        help="accept --nnodes/--gpus-per-node other than the layout's: keep TP/PP/CP/EP, re-derive data parallelism",
    )
    parser.add_argument("--rollout-nnodes", type=int, help="asynchronous modes: rollout nodes (default 1)")
    parser.add_argument(
        "--rollout-gpus-per-node", type=int, help="asynchronous modes: GPUs per rollout node (default: --gpus-per-node)"
    )
    parser.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=80.0,
        help="GPU memory the per-GPU estimate is checked against (default: 80)",
    )
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help="checkpoints, metrics and TensorBoard go under it (made absolute; on shared storage for multi-node; "
        f"default: ./{DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument(
        "--logger",
        default=",".join(DEFAULT_LOGGERS),
        help=f"trainer.logger backends, comma-separated (default: {','.join(DEFAULT_LOGGERS)}; add wandb)",
    )
    parser.add_argument("--model-path", help="local model folder or Hub id (default: the recipe's Hub id)")
    parser.add_argument("--data-dir", help="folder of `python -m mhpo_verl data` output (default: ~/data/mhpo)")
    parser.add_argument(
        "--train-data",
        help="comma-separated dataset names or parquet files (default: the model's; "
        f"{','.join(DEFAULT_TRAIN_SETS)} for the text models)",
    )
    parser.add_argument(
        "--val-data",
        help="comma-separated dataset names or parquet files (default: the model's; "
        f"{','.join(DEFAULT_VAL_SETS)} for the text models)",
    )
    parser.add_argument("--project-name", default="mhpo", help="trainer.project_name (default: mhpo)")
    parser.add_argument("--experiment-name", help="trainer.experiment_name (default: <model>-<engine>-<algorithm>)")
    parser.add_argument("--python", help="interpreter that runs verl (default: this one; python3 under --submit)")
    parser.add_argument("--submit", metavar="ADDRESS", help="submit with `ray job submit` to this Ray dashboard")
    parser.add_argument("--no-wait", action="store_true", help="with --submit: return once the job is submitted")
    parser.add_argument(
        "--wait-for-gpus",
        type=float,
        metavar="SECONDS",
        help="first wait up to SECONDS for the running Ray cluster to offer nnodes x gpus-per-node GPUs",
    )
    parser.add_argument("--dry-run", action="store_true", help="print command, config and checks; start nothing")
    parser.add_argument("--skip-preflight", action="store_true", help="launch without the checks (not advised)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.total_epochs=1")
    return parser


def _launch_from_args(args: argparse.Namespace) -> Launch:
    options = {
        "project_name": args.project_name,
        "experiment_name": args.experiment_name or "",
        "pass_plugin_env": args.submit is None,
        "output_dir": args.output_dir,
        "loggers": _names(args.logger, "--logger"),
    }
    if args.gpu_memory_gb <= 0:
        raise RecipeError(f"--gpu-memory-gb must be positive, got {args.gpu_memory_gb:g}")
    if args.data_dir:
        options["data_dir"] = args.data_dir
    if args.train_data is not None:
        options["train_sets"] = _names(args.train_data, "--train-data")
    if args.val_data is not None:
        options["val_sets"] = _names(args.val_data, "--val-data")
    recipe = build_recipe(
        args.model,
        args.engine,
        args.algorithm,
        nnodes=args.nnodes,
        gpus_per_node=args.gpus_per_node,
        model_path=args.model_path,
        mode=args.mode,
        rollout_nnodes=args.rollout_nnodes,
        rollout_gpus_per_node=args.rollout_gpus_per_node,
        resize=args.resize,
        **options,
    )
    recipe.data_files(recipe.train_sets, "train")  # raises RecipeError naming an unknown dataset now
    recipe.data_files(recipe.val_sets, "test")
    python = args.python or ("python3" if args.submit else sys.executable)
    return Launch(
        recipe=recipe,
        extra_overrides=tuple(args.overrides),
        python=python,
        submit_address=args.submit,
        wait_for_job=not args.no_wait,
        gpu_memory_gb=args.gpu_memory_gb,
    )


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise RecipeError(f"{option} needs at least one dataset name or file, got {text!r}")
    return names


def describe_recipes() -> str:
    lines = ["models (single-node FSDP layout | multi-node Megatron layout):"]
    for model in MODELS.values():
        fsdp, mega = model.fsdp, model.megatron
        megatron = f"{mega.nnodes}x{mega.gpus_per_node} TP{mega.tp} PP{mega.pp}"
        megatron += f"{f' VPP{mega.vpp}' if mega.vpp else ''} CP{mega.cp}{f' EP{mega.ep}' if mega.ep > 1 else ''}"
        lines.append(
            f"  {model.name:<22} {model.hf_path:<28} response {model.max_response_length:>5}  "
            f"fsdp {fsdp.nnodes}x{fsdp.gpus_per_node} rollout TP{fsdp.rollout_tp} | megatron {megatron} "
            f"rollout TP{mega.rollout_tp}"
        )
    lines.append(f"engines: {', '.join(ENGINES)}")
    lines.append(f"modes: {', '.join(MODES)} (asynchronous modes add --rollout-nnodes rollout node(s), default 1)")
    lines.append("algorithms:")
    lines += [f"  {algorithm.name:<11} {algorithm.description}" for algorithm in ALGORITHMS.values()]
    return "\n".join(lines)


def check(launch: Launch) -> tuple[DictConfig, list[Finding]]:
    """Compose the run's config and run every preflight check; returns ``(config, findings)``."""
    from mhpo_verl.preflight import compose, preflight, prepare_for_entry

    recipe = launch.recipe
    config = prepare_for_entry(compose(recipe.config_name, launch.overrides, recipe.config_dir), recipe.mode)
    findings = preflight(config, _architecture(launch, config), mode=recipe.mode, gpu_memory_gb=launch.gpu_memory_gb)
    return config, findings


def _architecture(launch: Launch, config: DictConfig) -> Architecture | None:
    from mhpo_verl.preflight import architecture_from_model_dir

    path = str(config.actor_rollout_ref.model.path)
    from_disk = architecture_from_model_dir(path)
    if from_disk is not None:
        return from_disk
    return launch.recipe.model.architecture if path == launch.recipe.model_path else None


def dry_run(launch: Launch, out=None) -> int:
    """Print the command, the resolved config, the algorithm lines and the checks; 0 when no check failed."""
    from omegaconf import OmegaConf

    from mhpo_verl.preflight import errors

    out = out or sys.stdout
    recipe = launch.recipe
    rollout_pool = ""
    if recipe.rollout_nnodes:
        rollout_pool = f" + rollout {recipe.rollout_nnodes} x {recipe.rollout_gpus_per_node}"
    print(
        f"# recipe: {recipe.model.name} | {recipe.engine} | {recipe.algorithm.name} | "
        f"{recipe.nnodes} node(s) x {recipe.gpus_per_node} GPUs{rollout_pool} | {recipe.mode}",
        file=out,
    )
    layout = recipe.layout
    if (recipe.nnodes, recipe.gpus_per_node) != (layout.nnodes, layout.gpus_per_node):
        print(
            f"# resized: the layout is for {layout.nnodes} x {layout.gpus_per_node} GPUs; model-parallel sizes kept, "
            "data parallelism re-derived (see parallel layout and memory below)",
            file=out,
        )
    print("# command:", file=out)
    print(format_command(launch.command()), file=out)
    config, findings = check(launch)
    print("# resolved verl config:", file=out)
    print(OmegaConf.to_yaml(config, resolve=True), file=out)
    print("# algorithm:", file=out)
    for key in LOSS_KEYS:
        print(f"{key}: {OmegaConf.select(config, key)}", file=out)
    print("# preflight:", file=out)
    for finding in findings:
        print(finding, file=out)
    failed = errors(findings)
    warnings = sum(finding.level == "warning" for finding in findings)
    verdict = f"{len(failed)} error(s)" if failed else "ok"
    print(f"# dry run: {verdict}, {warnings} warning(s); nothing was started", file=out)
    return EXIT_PREFLIGHT_FAILED if failed else EXIT_OK


def run(launch: Launch, *, skip_preflight: bool = False, wait_for_gpus: float | None = None) -> int:
    """Check, optionally wait for the cluster, then execute the command and return its exit status."""
    from mhpo_verl.preflight import errors

    if not skip_preflight:
        _, findings = check(launch)
        for finding in findings:
            if finding.level != "ok":
                print(finding, file=sys.stderr)
        if errors(findings):
            print("error: preflight failed; nothing started (see --dry-run for the full picture)", file=sys.stderr)
            return EXIT_PREFLIGHT_FAILED
    if wait_for_gpus is not None:
        try:
            wait_for_cluster(launch.recipe.total_nnodes, launch.recipe.n_gpus, timeout=wait_for_gpus)
        except LaunchError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_PREFLIGHT_FAILED
    command = launch.command()
    print(format_command(command), flush=True)
    return subprocess.call(command)


ClusterProbe = Callable[[], tuple[int, float]]


def ray_cluster_probe() -> tuple[int, float]:
    """Alive nodes and total GPUs of the Ray cluster this process connects to (``RAY_ADDRESS`` or ``auto``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", include_dashboard=False, log_to_driver=False)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return nodes, float(ray.cluster_resources().get("GPU", 0.0))


def wait_for_cluster(
    nnodes: int,
    gpus: int,
    *,
    timeout: float,
    probe: ClusterProbe = ray_cluster_probe,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, float]:
    """Poll ``probe`` until the cluster has ``nnodes`` nodes and ``gpus`` GPUs; :class:`LaunchError` on timeout.

    A cluster that cannot be reached yet (the head node still starting) counts as empty until the deadline.
    """
    deadline = clock() + timeout
    while True:
        try:
            nodes, found = probe()
            unreachable = ""
        except Exception as error:  # ray.init raises ConnectionError and others while the head is not up
            nodes, found, unreachable = 0, 0.0, f" (not reachable: {type(error).__name__}: {error})"
        if nodes >= nnodes and found >= gpus:
            _disconnect_ray()
            return nodes, found
        if clock() >= deadline:
            _disconnect_ray()
            raise LaunchError(
                f"the Ray cluster has {nodes} node(s) and {found:g} GPU(s) after {timeout:g} s{unreachable}; the "
                f"recipe needs {nnodes} node(s) and {gpus} GPU(s) (check that every worker ran `ray start --address`)"
            )
        status = f"{nodes}/{nnodes} nodes, {found:g}/{gpus} GPUs{unreachable}"
        print(f"waiting for the Ray cluster: {status}", file=sys.stderr)
        sleep(poll_seconds)


def _disconnect_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
