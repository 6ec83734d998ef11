"""``python -m mhpo_verl doctor``: prove on this machine (and cluster) that verl will find MHPO.

verl loads plugins at ``import verl`` and swallows their errors at DEBUG level; a broken install then surfaces only
as ``Unsupported loss mode: mhpo`` deep inside a worker, minutes into a run. The doctor checks, loudly:

1. the ``verl.plugins`` entry point is installed and loads without error (the traceback is shown if not);
2. a fresh interpreter that only does ``import verl`` (what verl's driver and TaskRunner do) has the ``mhpo`` loss
   and estimator registered;
3. the same inside Ray workers: on a temporary local cluster, or with ``--ray-address auto`` on one worker per node
   of your running cluster;
4. the Hydra config composes with your overrides, converts to verl's dataclasses, passes verl's own
   ``validate_config``, and the loss and estimator run on a tiny batch;
5. what the chosen engine and rollout import (:data:`ENGINE_DEPENDENCIES`, :data:`ROLLOUT_DEPENDENCIES`: e.g.
   Megatron-core, Megatron-Bridge and Transformer Engine for ``--engine megatron``, vLLM for ``--rollout vllm``)
   imports, with its version, here and on every Ray node.

    python -m mhpo_verl doctor
    python -m mhpo_verl doctor --ray-address auto --engine megatron -- actor_rollout_ref.actor.policy_loss.c=2.0
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from mhpo_verl import ESTIMATOR_NAME, LOSS_NAME, __version__

ENGINE_DEPENDENCIES: dict[str, tuple[tuple[str, str], ...]] = {
    # (module imported, distribution whose version is reported)
    "fsdp": (("torch", "torch"),),
    # verl's Megatron engine: megatron-core, and Megatron-Bridge for use_mbridge=True, vanilla_mbridge=False (the
    # default; verl/models/mcore/bridge.py imports megatron.bridge); Transformer Engine for Megatron's layers.
    "megatron": (
        ("torch", "torch"),
        ("megatron.core", "megatron-core"),
        ("megatron.bridge", "megatron-bridge"),
        ("transformer_engine", "transformer-engine"),
    ),
}
ROLLOUT_DEPENDENCIES: dict[str, tuple[tuple[str, str], ...]] = {
    "vllm": (("vllm", "vllm"),),
    "sglang": (("sglang", "sglang"),),
    "hf": (),  # this project's CPU rollout backend: transformers only, which verl itself needs
}

ENTRY_POINT_GROUP = "verl.plugins"
ENTRY_POINT_NAME = "mhpo"
PLUGIN_MODULE = "mhpo_verl.plugin"
# What a real run needs that ppo_trainer leaves unset; the user's own overrides come after these and win.
RUNNABLE_DEFAULTS = [
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.n=4",  # group-relative advantages need several responses per prompt
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "trainer.n_gpus_per_node=8",
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, hint: str = "") -> None:
        self.checks.append(Check(name, ok, detail, hint if not ok else ""))

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def probe_registration() -> dict[str, Any]:
    """What verl's registries hold after a plain ``import verl`` in *this* process, and why if ``mhpo`` is missing.

    Runs in fresh interpreters and Ray workers; must be called before anything else imports ``mhpo_verl.plugin``.
    """
    result: dict[str, Any] = {
        "host": socket.gethostname(),
        "python": sys.executable,
        "env": {key: os.environ.get(key) for key in ("VERL_USE_EXTERNAL_PLUGINS", "VERL_USE_EXTERNAL_MODULES")},
    }
    try:
        import verl
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY
    except Exception:
        result["error"] = "import verl failed:\n" + traceback.format_exc()
        return result
    result["verl_version"] = getattr(verl, "__version__", "?")
    result["loss_registered"] = _is_ours(POLICY_LOSS_REGISTRY.get(LOSS_NAME), f"policy loss:{LOSS_NAME}")
    result["estimator_registered"] = _is_ours(
        ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME), f"advantage estimator:{ESTIMATOR_NAME}"
    )
    result["foreign_loss"] = _describe_foreign(POLICY_LOSS_REGISTRY.get(LOSS_NAME), result["loss_registered"])
    result["entry_points"] = [f"{ep.name} = {ep.value}" for ep in _entry_points()]
    if not (result["loss_registered"] and result["estimator_registered"]):
        result["load_error"] = _load_entry_point_error()
    return result


def probe_dependencies(engine: str, rollout: str) -> list[dict[str, Any]]:
    """Import every module ``engine`` and ``rollout`` need, in this process; each with its version or error."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    results = []
    for module, distribution in (*ENGINE_DEPENDENCIES[engine], *ROLLOUT_DEPENDENCIES[rollout]):
        entry: dict[str, Any] = {"module": module, "distribution": distribution}
        try:
            imported = import_module(module)
        except Exception as error:  # ImportError, or a CUDA/driver error raised while the module initialises
            entry.update(ok=False, error=f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}")
        else:
            try:
                found = version(distribution)
            except PackageNotFoundError:
                found = str(getattr(imported, "__version__", "?"))
            entry.update(ok=True, version=found)
        results.append(entry)
    return results


def probe_node(engine: str, rollout: str) -> dict[str, Any]:
    """:func:`probe_registration` and :func:`probe_dependencies` of one node (run as a Ray task)."""
    return {**probe_registration(), "dependencies": probe_dependencies(engine, rollout)}


def _dependency_summary(dependencies: list[dict[str, Any]]) -> tuple[bool, str]:
    parts = [
        f"{d['module']} {d['version']}" if d["ok"] else f"{d['module']} MISSING ({d['error']})" for d in dependencies
    ]
    return all(d["ok"] for d in dependencies), ", ".join(parts) or "nothing beyond verl"


def check_dependencies(report: Report, engine: str, rollout: str, where: str = "this process") -> None:
    ok, detail = _dependency_summary(probe_dependencies(engine, rollout))
    report.add(
        f"{engine} engine + {rollout} rollout dependencies ({where})",
        ok,
        detail,
        "on the GPU nodes: pip install 'mhpo-verl[megatron]' / '[vllm]' (verl's own extras); a CPU-only machine "
        "cannot import the CUDA stacks",
    )


def _is_ours(fn: Any, tag: str) -> bool:
    return fn is not None and getattr(fn, "_mhpo_verl_registered_as", None) == tag


def _describe_foreign(fn: Any, ours: bool) -> str | None:
    return None if fn is None or ours else f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _entry_points() -> list:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point_error() -> str | None:
    """Load our entry point the way verl does, but keep the error verl would swallow."""
    ours = [ep for ep in _entry_points() if ep.name == ENTRY_POINT_NAME]
    if not ours:
        return f"no '{ENTRY_POINT_NAME}' entry point in group '{ENTRY_POINT_GROUP}' (is mhpo-verl pip-installed here?)"
    try:
        ours[0].load()
    except Exception:
        return traceback.format_exc()
    return None


def check_entry_point(report: Report) -> None:
    points = [ep for ep in _entry_points() if ep.name == ENTRY_POINT_NAME]
    if not points or points[0].value != PLUGIN_MODULE:
        report.add(
            "entry point",
            False,
            f"group '{ENTRY_POINT_GROUP}' has {[f'{ep.name} = {ep.value}' for ep in _entry_points()]}",
            "pip install -e . (or the wheel) in this environment; the entry point lives in the package metadata",
        )
        return
    error = _load_entry_point_error()
    report.add("entry point", error is None, f"{ENTRY_POINT_GROUP}: {points[0].name} = {points[0].value}"
               + (f"\nloading it raised:\n{error}" if error else ""), "fix the error above: verl hides it")
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    allowed = policy == "auto" or ENTRY_POINT_NAME in {name.strip() for name in policy.split(",")}
    modules = os.environ.get("VERL_USE_EXTERNAL_MODULES", "")
    report.add(
        "plugin policy",
        allowed or PLUGIN_MODULE in modules.split(","),
        f"VERL_USE_EXTERNAL_PLUGINS={policy!r}, VERL_USE_EXTERNAL_MODULES={modules!r}",
        f"unset VERL_USE_EXTERNAL_PLUGINS, add '{ENTRY_POINT_NAME}' to it, or set "
        f"VERL_USE_EXTERNAL_MODULES={PLUGIN_MODULE}",
    )


def _probe_summary(probe: dict[str, Any]) -> tuple[bool, str]:
    where = f"{probe.get('host')} ({probe.get('python')})"
    if "error" in probe:
        return False, f"{where}: {probe['error']}"
    ok = bool(probe.get("loss_registered") and probe.get("estimator_registered"))
    detail = (
        f"{where}: verl {probe.get('verl_version')}, loss '{LOSS_NAME}' "
        f"{'registered' if probe.get('loss_registered') else 'MISSING'}, estimator '{ESTIMATOR_NAME}' "
        f"{'registered' if probe.get('estimator_registered') else 'MISSING'}"
    )
    if probe.get("foreign_loss"):
        detail += f"; '{LOSS_NAME}' is taken by {probe['foreign_loss']}"
    if probe.get("load_error"):
        detail += f"\nthe plugin failed to load there:\n{probe['load_error']}"
    return ok, detail


def check_fresh_interpreter(report: Report) -> None:
    code = "import json, mhpo_verl.doctor as d; print('MHPO-PROBE ' + json.dumps(d.probe_registration()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MHPO-PROBE ")]
    if result.returncode != 0 or not lines:
        report.add("driver process", False, f"probe exited {result.returncode}:\n{result.stderr[-3000:]}")
        return
    ok, detail = _probe_summary(json.loads(lines[-1][len("MHPO-PROBE "):]))
    report.add("driver process (fresh `import verl`)", ok, detail, "see the load error above")


def check_ray_workers(
    report: Report, address: str | None, engine: str | None = None, rollout: str | None = None
) -> None:
    """Registration on one worker per alive node; with ``engine`` and ``rollout``, their imports there too."""
    try:
        import ray
    except Exception:
        report.add("ray workers", False, "ray is not importable:\n" + traceback.format_exc())
        return
    connected_here = not ray.is_initialized()  # a caller that already initialised Ray keeps its session
    try:
        if connected_here and address is None:
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
        elif connected_here:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        probe = ray.remote(num_cpus=0)(probe_node)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        futures = []
        for node in nodes:
            strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            futures.append(probe.options(scheduling_strategy=strategy).remote(engine or "fsdp", rollout or "hf"))
        for node, result in zip(nodes, ray.get(futures, timeout=600)):
            ok, detail = _probe_summary(result)
            where = node.get("NodeManagerAddress")
            report.add(f"ray worker on {where}", ok, detail,
                       "install mhpo-verl in this node's environment, or pass "
                       f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES={PLUGIN_MODULE}")
            if engine is None or rollout is None:
                continue
            deps_ok, deps = _dependency_summary(result["dependencies"])
            report.add(f"{engine} engine + {rollout} rollout dependencies (ray worker on {where})", deps_ok, deps,
                       "install the GPU extras in this node's environment: pip install 'mhpo-verl[megatron,vllm]'")
    except Exception:
        report.add("ray workers", False, traceback.format_exc(), "is the Ray cluster reachable at this address?")
    finally:
        if connected_here and ray.is_initialized():
            ray.shutdown()


def check_config(report: Report, config_name: str, overrides: list[str]) -> None:
    try:
        import numpy as np
        import torch
        from hydra import compose, initialize_config_dir
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
        from verl.utils.config import omega_conf_to_dataclass, validate_config

        from mhpo_verl import configs_dir

        with initialize_config_dir(config_dir=str(configs_dir()), version_base=None):
            config = compose(config_name=config_name, overrides=[*RUNNABLE_DEFAULTS, *overrides])
        validate_config(config, use_reference_policy=False, use_critic=False)
        actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
        loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
        estimator = config.algorithm.adv_estimator
        generator = torch.Generator().manual_seed(0)
        mask = torch.ones(4, 6, dtype=torch.bool)
        old = -torch.rand(4, 6, generator=generator)
        advantages, _ = get_adv_estimator_fn(estimator)(
            token_level_rewards=torch.rand(4, 6, generator=generator), response_mask=mask,
            index=np.array(["a", "a", "b", "b"], dtype=object), config=config.algorithm,
        )
        log_prob = (old + 0.1 * torch.randn(4, 6, generator=generator)).requires_grad_()
        loss, metrics = get_policy_loss_fn(loss_mode)(
            old_log_prob=old, log_prob=log_prob, advantages=advantages, response_mask=mask,
            loss_agg_mode=actor.loss_agg_mode, config=actor, rollout_is_weights=None,
        )
        loss.backward()
        finite = bool(torch.isfinite(loss) and torch.isfinite(log_prob.grad).all())
        params = actor.policy_loss.mhpo_params() if hasattr(actor.policy_loss, "mhpo_params") else None
        report.add(
            "config",
            finite,
            f"{config_name} + {overrides or 'no overrides'}: engine {config.model_engine}, "
            f"{type(actor).__name__}.policy_loss = {type(actor.policy_loss).__name__} "
            f"(loss_mode={loss_mode}, {params}), adv_estimator={estimator}, loss_agg_mode={actor.loss_agg_mode}; "
            f"tiny batch: loss {loss.item():.4g}, {len(metrics)} metrics",
        )
    except Exception:
        report.add("config", False, traceback.format_exc(),
                   "MHPO options need policy_loss._target_=mhpo_verl.config.MHPOPolicyLossConfig "
                   "(the mhpo_trainer config sets it); plain `+policy_loss.c=...` is rejected by verl")


def run_checks(args: argparse.Namespace) -> Report:
    report = Report()
    check_entry_point(report)
    check_fresh_interpreter(report)
    megatron = "model_engine=megatron" in args.overrides or "megatron" in args.config_name
    engine = args.engine or ("megatron" if megatron else "fsdp")
    check_dependencies(report, engine, args.rollout)
    if not args.no_ray:
        check_ray_workers(report, args.ray_address, engine, args.rollout)
    check_config(report, args.config_name, args.overrides)
    return report


def print_report(report: Report) -> None:
    print(f"mhpo-verl {__version__} doctor ({sys.executable})")
    for check in report.checks:
        mark = "PASS" if check.ok else "FAIL"
        first, *rest = check.detail.splitlines() or [""]
        print(f"[{mark}] {check.name}: {first}")
        for line in rest:
            print(f"       {line}")
        if check.hint:
            print(f"       hint: {check.hint}")
    verdict = "all checks passed" if report.ok else f"{sum(not c.ok for c in report.checks)} check(s) FAILED"
    print(f"\n{verdict}: loss_mode={LOSS_NAME} and adv_estimator={ESTIMATOR_NAME} "
          f"{'are' if report.ok else 'may NOT be'} usable in every verl process")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhpo_verl doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ray-address", default=None,
                        help="check the workers of a running cluster (e.g. 'auto'); default: a temporary local one")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray worker check")
    parser.add_argument("--config-name", default="mhpo_trainer", help="config in mhpo_verl.configs to compose")
    parser.add_argument("--engine", choices=sorted(ENGINE_DEPENDENCIES),
                        help="training engine whose imports to check (default: megatron with model_engine=megatron "
                        "among the overrides or a megatron config, else fsdp)")
    parser.add_argument("--rollout", choices=sorted(ROLLOUT_DEPENDENCIES), default="vllm",
                        help="rollout backend whose imports to check (default: vllm, the recipes')")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as you would pass them to verl")
    args = parser.parse_args(argv)
    report = run_checks(args)
    if args.json:
        print(json.dumps({"ok": report.ok, "checks": [asdict(check) for check in report.checks]}, indent=2))
    else:
        print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
