"""Stability study: MHPO against GRPO, DAPO, GSPO, SAPO and CISPO on the CPU training path, plus an MHPO ablation.

Every run trains SmolLM2-135M-Instruct on the demo's arithmetic tasks through :class:`mhpo_verl.demo.loop.CPURLTrainer`
(verl's own actor worker, ``ppo_loss`` and registered policy losses). Runs differ only in the method (the overrides
of :data:`mhpo_verl.recipes.ALGORITHMS`, or MHPO loss options for the ablation), the regime and the seed; model,
tasks, batch, sampling and learning rate are the same everywhere, and a seed fixes the problems and the sampling.

* ``on_policy``: one optimizer update per rollout batch, so every importance ratio is 1 (the control).
* ``off_policy``: 2 mini-batches x 2 PPO epochs = 4 updates per rollout batch, so ratios drift away from 1.

The GRPO recipe's KL-to-reference term is left out here: the CPU loop has no reference model (it would cost a third
forward pass per step), and the comparison is about the policy losses. All other methods use no KL term anyway.

Each run executes in a child process (a crash or a leak cannot touch the next run) and is written to
``runs/<id>.partial/``, which is renamed to ``runs/<id>/`` when every step is done: a finished run is never redone,
an interrupted one is discarded and redone from scratch. ``--report-only`` rebuilds ``summary.json``,
``summary.csv``, ``table.md`` and ``curves.png`` from the run folders.

    python examples/benchmarks/stability_study.py                      # the whole study (resumes), then the report
    python examples/benchmarks/stability_study.py --jobs 2             # 2 runs at a time, 1 thread each
    python examples/benchmarks/stability_study.py --list               # the plan and what is finished
    python examples/benchmarks/stability_study.py --report-only        # tables and curves from the committed runs
    python examples/benchmarks/stability_study.py --arms mhpo grpo --regimes off_policy --steps 2 --out /tmp/s
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: busy-waiting OpenMP threads stall badly on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import csv
import dataclasses
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhpo_verl.demo.loop import DemoConfig
from mhpo_verl.demo.report import RunWriter, moving_average, read_metrics, summarize
from mhpo_verl.recipes import ALGORITHMS

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "stability"
SPIKE_FACTOR = 5.0
"""An optimizer update whose gradient norm exceeds this multiple of the run's median counts as a spike."""
GRAD_CLIP = 1.0
"""verl's ``actor.optim.clip_grad`` default, kept by every run: updates above it were scaled down to it."""

_ACTOR = "actor_rollout_ref.actor"
_POLICY_LOSS = f"{_ACTOR}.policy_loss"


class StudyError(RuntimeError):
    """The study folder and the requested study disagree, or a run could not be completed."""


# ---------------------------------------------------------------------------------------------------------------
# What is compared


@dataclass(frozen=True)
class Regime:
    name: str
    ppo_mini_batch_size: int
    """Prompts per PPO mini-batch (verl's ``actor.ppo_mini_batch_size``)."""
    ppo_epochs: int
    description: str


@dataclass(frozen=True)
class Arm:
    """One method: an entry of :data:`mhpo_verl.recipes.ALGORITHMS`, optionally with MHPO loss options changed."""

    name: str
    algorithm: str
    loss_options: tuple[tuple[str, str], ...] = ()
    description: str = ""
    ablation: bool = False


MAIN_ARMS: tuple[Arm, ...] = tuple(
    Arm(name, name, description=ALGORITHMS[name].description)
    for name in ("mhpo", "grpo", "dapo", "gspo", "sapo", "cispo")
)
ABLATION_ARMS: tuple[Arm, ...] = (
    # relu of a bounded psi over a scale of 1e6: zeta < 2e-9, so exp(-zeta) == 1 and only the LFM remains.
    Arm(
        "mhpo-lfm_only",
        "mhpo",
        (("hazard_input", "relu"), ("lambda_pos", "1e6"), ("lambda_neg", "1e6")),
        "LFM only: no hazard penalty (zeta = 0)",
        ablation=True,
    ),
    Arm(
        "mhpo-dhp_symmetric",
        "mhpo",
        (("k_neg", "1.5"), ("lambda_neg", "1.0")),
        "DHP symmetric: k_neg = k_pos = 1.5, lambda_neg = lambda_pos = 1.0",
        ablation=True,
    ),
    Arm("mhpo-c0.5", "mhpo", (("c", "0.5"),), "LFM bound c = 0.5", ablation=True),
    Arm("mhpo-c3.0", "mhpo", (("c", "3.0"),), "LFM bound c = 3.0", ablation=True),
    Arm("mhpo-relu", "mhpo", (("hazard_input", "relu"),), "hazard input relu (no hazard at r = 1)", ablation=True),
)
ARMS: dict[str, Arm] = {arm.name: arm for arm in (*MAIN_ARMS, *ABLATION_ARMS)}

REGIMES: dict[str, Regime] = {
    regime.name: regime
    for regime in (
        Regime("on_policy", ppo_mini_batch_size=4, ppo_epochs=1, description="1 update per rollout batch (r = 1)"),
        Regime("off_policy", ppo_mini_batch_size=2, ppo_epochs=2, description="2 mini-batches x 2 epochs"),
    )
}
ABLATION_REGIMES = ("off_policy",)
"""On-policy every ratio is 1: psi = 0 and zeta is a constant, so the ablation arms only differ off-policy."""


@dataclass(frozen=True)
class StudySettings:
    """What every run shares. Sized for a 2-core machine: the 34 runs took 157 min one at a time, about 95-100 min
    with ``--jobs 2`` (README); fewer steps or samples leave too little learning signal to compare methods."""

    steps: int = 12
    seeds: tuple[int, ...] = (0, 1)
    prompts_per_step: int = 4
    samples_per_prompt: int = 4
    max_new_tokens: int = 32
    micro_batch_size: int = 8
    lr: float = 1e-5
    temperature: float = 1.0
    task_kinds: tuple[str, ...] = ("add_1d", "add_2d1d", "mul_1d")
    format_score: float = 0.5
    model_path: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class RunSpec:
    arm: Arm
    regime: Regime
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.regime.name}__{self.arm.name}__seed{self.seed}"

    def demo_config(self, settings: StudySettings) -> DemoConfig:
        loss_mode, estimator, agg_mode, overrides = algorithm_settings(self.arm.algorithm)
        overrides += [f"{_POLICY_LOSS}.{key}={value}" for key, value in self.arm.loss_options]
        return DemoConfig(
            steps=settings.steps,
            loss_mode=loss_mode,
            adv_estimator=estimator,
            loss_agg_mode=agg_mode,
            prompts_per_step=settings.prompts_per_step,
            samples_per_prompt=settings.samples_per_prompt,
            ppo_mini_batch_size=self.regime.ppo_mini_batch_size,
            ppo_epochs=self.regime.ppo_epochs,
            micro_batch_size=settings.micro_batch_size,
            lr=settings.lr,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            task_kinds=settings.task_kinds,
            seed=self.seed,
            model_path=settings.model_path,
            cache_dir=settings.cache_dir,
            reward_options={"format_score": settings.format_score},
            overrides=tuple(overrides),
        )

    def record(self, settings: StudySettings) -> dict[str, Any]:
        """What ``config.json`` of the run holds; a finished run counts only if this is unchanged."""
        return {
            "run_id": self.run_id,
            "arm": self.arm.name,
            "algorithm": self.arm.algorithm,
            "regime": self.regime.name,
            "seed": self.seed,
            "ablation": self.arm.ablation,
            "demo_config": _plain(dataclasses.asdict(self.demo_config(settings))),
        }


def algorithm_settings(name: str) -> tuple[str, str | None, str | None, list[str]]:
    """Split a recipe algorithm into DemoConfig's loss mode, estimator and aggregation plus the other overrides.

    The KL-to-reference term is switched off (see the module docstring); the loop sets ``loss_mode`` and
    ``adv_estimator`` itself, so those are taken out of the overrides rather than given twice.
    """
    fields = {
        f"{_POLICY_LOSS}.loss_mode": "loss_mode",
        "algorithm.adv_estimator": "adv_estimator",
        f"{_ACTOR}.loss_agg_mode": "loss_agg_mode",
    }
    dropped = {f"{_ACTOR}.use_kl_loss", f"{_ACTOR}.kl_loss_coef", f"{_ACTOR}.kl_loss_type"}
    found: dict[str, str] = {}
    overrides = []
    for override in ALGORITHMS[name].overrides:
        key, _, value = override.partition("=")
        if key in fields:
            found[fields[key]] = value
        elif key not in dropped:
            overrides.append(override)
    if "loss_mode" not in found:
        raise StudyError(f"algorithm {name!r} sets no {_POLICY_LOSS}.loss_mode")
    return found["loss_mode"], found.get("adv_estimator"), found.get("loss_agg_mode"), [
        *overrides,
        f"{_ACTOR}.use_kl_loss=False",
    ]


def build_plan(
    settings: StudySettings, arms: Iterable[str] | None = None, regimes: Iterable[str] | None = None
) -> list[RunSpec]:
    """The runs, most informative first: per seed the off-policy comparison, the on-policy one, then the ablation
    (so an interrupted study still has every method at its first seed)."""
    wanted_arms = _pick(ARMS, arms, "arm")
    wanted_regimes = [regime.name for regime in _pick(REGIMES, regimes, "regime")]
    plan = []
    for seed in settings.seeds:
        for regime_name, ablation in (("off_policy", False), ("on_policy", False), ("off_policy", True)):
            if regime_name not in wanted_regimes:
                continue
            for arm in wanted_arms:
                if arm.ablation != ablation or (ablation and regime_name not in ABLATION_REGIMES):
                    continue
                plan.append(RunSpec(arm, REGIMES[regime_name], seed))
    return plan


def _pick(choices: dict[str, Any], names: Iterable[str] | None, what: str) -> list[Any]:
    if names is None:
        return list(choices.values())
    names = list(names)
    unknown = [name for name in names if name not in choices]
    if unknown:
        raise StudyError(f"unknown {what} {unknown}; expected some of {list(choices)}")
    return [choices[name] for name in choices if name in names]


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so that a record compares equal to its JSON round trip."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------------------------------
# The study folder: resumable runs


@dataclass
class RunResult:
    record: dict[str, Any]
    steps: list[dict[str, Any]]
    timing: dict[str, float]

    @property
    def run_id(self) -> str:
        return self.record["run_id"]


class RunStore:
    """``runs/<id>/`` holds a finished run (``config.json``, ``metrics.jsonl``, ``samples.jsonl``, ``timing.json``);
    ``runs/<id>.partial/`` one in progress or interrupted. ``logs/`` (not committed) keeps each run's output."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.logs = self.root / "logs"

    def final_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def partial_dir(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.partial"

    def is_finished(self, spec: RunSpec, settings: StudySettings) -> bool:
        """True if the run is done with exactly this configuration; a finished run made with another one is an
        error (redoing it silently would mix two studies in one table)."""
        folder = self.final_dir(spec.run_id)
        if not folder.is_dir():
            return False
        stored = json.loads((folder / "config.json").read_text())
        wanted = spec.record(settings)
        if stored != wanted:
            changed = sorted(_differences(stored, wanted))
            raise StudyError(
                f"{folder} was made with other settings ({', '.join(changed)} differ); delete that folder to redo the "
                f"run, or choose another --out"
            )
        return True

    def start(self, spec: RunSpec, settings: StudySettings) -> Path:
        """A clean ``.partial`` folder for the run holding its ``config.json`` (leftovers of an interruption go)."""
        folder = self.partial_dir(spec.run_id)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(spec.record(settings), indent=2) + "\n")
        return folder

    def finish(self, spec: RunSpec, timing: dict[str, float]) -> Path:
        """Check the partial run is complete, record its timing and move it into place (one atomic rename)."""
        folder = self.partial_dir(spec.run_id)
        record = json.loads((folder / "config.json").read_text())
        steps = read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else []
        expected = record["demo_config"]["steps"]
        if [row.get("step") for row in steps] != list(range(expected)):
            raise StudyError(f"run {spec.run_id} ended with {len(steps)} of {expected} steps recorded")
        (folder / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        target = self.final_dir(spec.run_id)
        folder.rename(target)
        return target

    def load(self, run_id: str) -> RunResult:
        folder = self.final_dir(run_id)
        return RunResult(
            record=json.loads((folder / "config.json").read_text()),
            steps=read_metrics(folder / "metrics.jsonl"),
            timing=json.loads((folder / "timing.json").read_text()),
        )

    def load_finished(self) -> list[RunResult]:
        """Every finished run in the folder, in name order."""
        if not self.runs.is_dir():
            return []
        names = sorted(p.name for p in self.runs.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
        return [self.load(name) for name in names]


def _differences(stored: Any, wanted: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in stored.keys() | wanted.keys():
            yield from _differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")
    elif stored != wanted:
        yield prefix.rstrip(".")


Executor = Callable[[RunSpec, Path, Path], dict[str, float]]
"""``(spec, partial run folder, log file) -> timing``: trains the run into the folder; raises if it fails."""


def run_study(
    plan: Sequence[RunSpec],
    store: RunStore,
    settings: StudySettings,
    execute: Executor,
    log: Callable[[str], None] = print,
    jobs: int = 1,
) -> list[str]:
    """Run every unfinished run of ``plan``, ``jobs`` at a time; returns the ids of the runs that failed (the others
    went on). An exception other than a failed run (Ctrl-C, SIGTERM) ends the runs under way and propagates."""
    if jobs < 1:
        raise StudyError(f"jobs must be at least 1, got {jobs}")
    pending = [spec for spec in plan if not store.is_finished(spec, settings)]
    log(f"[study] {len(plan) - len(pending)} of {len(plan)} runs already finished, {len(pending)} to go")
    store.logs.mkdir(parents=True, exist_ok=True)

    def run_one(number: int, spec: RunSpec) -> dict[str, float]:
        folder = store.start(spec, settings)
        log(f"[study] {number}/{len(pending)} {spec.run_id} ...")
        timing = execute(spec, folder, store.logs / f"{spec.run_id}.log")
        store.finish(spec, timing)
        return timing

    failed = []
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="study-run")
    try:
        futures: dict[Future, RunSpec] = {}
        # Submitted as slots free up, so that an interruption leaves nothing queued behind the runs under way.
        for number, spec in enumerate(pending, 1):
            while len(futures) >= jobs:
                failed += _collect(_wait_for_one(futures), futures, store, log)
            futures[pool.submit(run_one, number, spec)] = spec
        while futures:
            failed += _collect(_wait_for_one(futures), futures, store, log)
    except BaseException:
        stop_children()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return failed


def _wait_for_one(futures: dict[Future, RunSpec]) -> set[Future]:
    done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return done


def _collect(
    done: set[Future], futures: dict[Future, RunSpec], store: RunStore, log: Callable[[str], None]
) -> list[str]:
    """Report the finished futures (re-raising anything but a failed run); returns the ids of the failed runs."""
    failed = []
    for future in done:
        spec = futures.pop(future)
        try:
            timing = future.result()
        except StudyError as error:
            failed.append(spec.run_id)
            log(f"[study] {spec.run_id} FAILED: {error}")
            continue
        stats = run_statistics(store.load(spec.run_id))
        log(
            f"[study] {spec.run_id} done in {timing['wall_s']:.0f} s: reward {stats['reward_first']:.3f} -> "
            f"{stats['reward_final']:.3f}, grad-norm max/median {stats['grad_norm']['max_over_median']:.1f}, "
            f"entropy {stats['entropy_first']:.3f} -> {stats['entropy_final']:.3f}"
        )
    return failed


_LIVE_CHILDREN: set[subprocess.Popen] = set()
_LIVE_CHILDREN_LOCK = threading.Lock()


def stop_children() -> None:
    """Terminate every run child under way (the study was interrupted): none is left running behind it."""
    with _LIVE_CHILDREN_LOCK:
        children = list(_LIVE_CHILDREN)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def execute_in_child(spec: RunSpec, folder: Path, log_path: Path, threads: int | None = None) -> dict[str, float]:
    """Train one run in a child process (this script with ``--run-one``), its output going to ``log_path``.

    ``threads``: the child's intra-op threads (default: every core). The CPU time is the child's own (``wait4``),
    so it stays right when several runs share the machine.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", str(folder)]
    if threads is not None:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    with log_path.open("w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_end_with_parent)
        with _LIVE_CHILDREN_LOCK:
            _LIVE_CHILDREN.add(child)
        try:
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = code = os.waitstatus_to_exitcode(status)
        except BaseException:
            stop_children()
            raise
        finally:
            with _LIVE_CHILDREN_LOCK:
                _LIVE_CHILDREN.discard(child)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise StudyError(f"exit status {code}; the end of {log_path}:\n{tail}")
    return {"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime}


def child_executor(jobs: int) -> Executor:
    """The executor for ``jobs`` runs at a time: one run uses every core; several split the cores between them."""
    if jobs == 1:
        return execute_in_child
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    return lambda spec, folder, log_path: execute_in_child(spec, folder, log_path, threads=threads)


def _end_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the thread that started it ends (Linux), so no run is left
    behind a dead study. The thread is a pool worker that lives until the study ends."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------------------------
# One run (in the child process)

KEPT_METRICS = (
    "reward/mean",
    "reward/accuracy",
    "reward/format",
    "response_length/mean",
    "actor/entropy",
    "actor/grad_norm",
    "actor/grad_norm_max",
    "actor/pg_loss",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
    "actor/ppo_kl",
    "actor/mhpo/survival_pos",
    "actor/mhpo/survival_neg",
    "actor/mhpo/grad_scale_mean",
    "diag/log_ratio_over_0.5",
    "diag/log_ratio_abs_max",
    "diag/nonfinite_log_prob_tokens",
    "diag/nonfinite_loss",
    "diag/nonfinite_grad_norm_steps",
    "timing_s/step",
)
"""The per-step metrics a run keeps (the loop reports more; these are what the study reads or a reader checks)."""

GRAD_NORMS_KEY = "grad_norm/updates"
"""Per-step list of every optimizer update's gradient norm (verl logs one per mini-batch; the loop keeps mean/max)."""


def step_record(metrics: dict[str, Any], update_grad_norms: Sequence[float]) -> dict[str, Any]:
    """The stored form of one step: the kept metrics (6 significant digits) and the per-update gradient norms."""
    record: dict[str, Any] = {"step": metrics["step"]}
    for key in KEPT_METRICS:
        if key in metrics:
            record[key] = _rounded(metrics[key])
    record[GRAD_NORMS_KEY] = [_rounded(value) for value in update_grad_norms]
    if metrics.get("samples"):
        record["samples"] = metrics["samples"]
    return record


def _rounded(value: Any) -> float | None:
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def make_recording_trainer(config: DemoConfig) -> Any:
    """A :class:`~mhpo_verl.demo.loop.CPURLTrainer` that also keeps each optimizer update's gradient norm."""
    from verl.utils import tensordict_utils as tu

    from mhpo_verl.demo.loop import CPURLTrainer

    trainer = CPURLTrainer(config)
    trainer.update_grad_norms = []
    update_actor = trainer.worker.update_actor

    def recording_update_actor(request: Any) -> Any:
        output = update_actor(request)
        norms = tu.get(output, "metrics").get("grad_norm", [])
        trainer.update_grad_norms = [float(n) for n in (norms if isinstance(norms, list) else [norms])]
        return output

    trainer.worker.update_actor = recording_update_actor
    return trainer


def train_run(
    folder: Path, make_trainer: Callable[[DemoConfig], Any] = make_recording_trainer, threads: int | None = None
) -> None:
    """Train the run described by ``folder/config.json``, appending each step to ``folder/metrics.jsonl``."""
    from mhpo_verl.demo.loop import configure_threads

    record = json.loads((Path(folder) / "config.json").read_text())
    config = DemoConfig(**record["demo_config"])
    threads = configure_threads(threads)
    started = time.perf_counter()
    trainer = make_trainer(config)
    print(f"[run] {record['run_id']}: ready in {time.perf_counter() - started:.0f} s, {threads} threads", flush=True)
    writer = RunWriter(folder)
    for step in range(config.steps):
        metrics = trainer.step(step)
        row = step_record(metrics, trainer.update_grad_norms)
        writer.append(row)
        print(
            f"[run] step {step}: reward {metrics['reward/mean']:.3f} grad_norm {row[GRAD_NORMS_KEY]} "
            f"entropy {metrics['actor/entropy']:.3f} |log r|>0.5 {metrics.get('diag/log_ratio_over_0.5', 0):.4f} "
            f"({metrics['timing_s/step']:.1f} s)",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def grad_norm_spikes(
    norms: Iterable[float | None], factor: float = SPIKE_FACTOR, clip: float = GRAD_CLIP
) -> dict[str, float]:
    """Spike statistics of one run's per-update gradient norms.

    Non-finite norms (``None`` in the stored files) are counted apart, as NaN/Inf events. Exact zeros are updates
    whose mini-batch had no learning signal (every advantage 0: all answers in each group equally good); they are
    counted apart too, as they say nothing about stability and would drag the median down. A spike is an update
    above ``factor`` times the median of the rest; ``clipped`` counts the updates above ``clip``.
    """
    values = list(norms)
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    signal_norms = [v for v in finite if v != 0.0]
    stats: dict[str, float] = {
        "updates": float(len(values)),
        "zero_updates": float(len(finite) - len(signal_norms)),
        "nonfinite_updates": float(len(values) - len(finite)),
        "clipped": float(sum(v > clip for v in signal_norms)),
    }
    if not signal_norms:
        return {**stats, "median": math.nan, "max": math.nan, "max_over_median": math.nan, "spikes": 0.0}
    median = statistics.median(signal_norms)
    return {
        **stats,
        "median": median,
        "max": max(signal_norms),
        "max_over_median": max(signal_norms) / median,
        "spikes": float(sum(v > factor * median for v in signal_norms)),
    }


def mean_and_spread(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (NaN spread for a single seed; NaN values are ignored)."""
    numbers = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not numbers:
        return math.nan, math.nan
    return statistics.fmean(numbers), (statistics.stdev(numbers) if len(numbers) > 1 else math.nan)


def _series(steps: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if row.get(key) is None else float(row[key]) for row in steps]


def _finite_mean(values: Iterable[float]) -> float:
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.fmean(numbers) if numbers else math.nan


def run_statistics(result: RunResult, window: int | None = None) -> dict[str, Any]:
    """One run's figures: reward (first, final, best), accuracy, gradient-norm spikes, entropy, drift, NaN/Inf."""
    steps = result.steps
    if not steps:
        raise ValueError(f"run {result.run_id} has no steps")
    window = window or max(1, len(steps) // 4)
    reward = _series(steps, "reward/mean")
    accuracy = _series(steps, "reward/accuracy")
    entropy = _series(steps, "actor/entropy")
    norms = [norm for row in steps for norm in row.get(GRAD_NORMS_KEY, [])]
    return {
        "run_id": result.run_id,
        "arm": result.record["arm"],
        "regime": result.record["regime"],
        "seed": result.record["seed"],
        "steps": len(steps),
        "window": window,
        "reward_first": _finite_mean(reward[:window]),
        "reward_final": _finite_mean(reward[-window:]),
        "reward_best": max(moving_average(reward, window)),
        "accuracy_final": _finite_mean(accuracy[-window:]),
        "entropy_first": entropy[0],
        "entropy_final": _finite_mean(entropy[-window:]),
        "log_ratio_over_0.5": _finite_mean(_series(steps, "diag/log_ratio_over_0.5")),
        "log_ratio_abs_max": max(_series(steps, "diag/log_ratio_abs_max"), default=math.nan),
        "clipfrac": _finite_mean(_series(steps, "actor/pg_clipfrac")),
        "nonfinite_events": summarize(steps)["nonfinite_events"],
        "grad_norm": grad_norm_spikes(norms),
        "wall_s": result.timing.get("wall_s", math.nan),
        "cpu_s": result.timing.get("cpu_s", math.nan),
    }


CELL_FIGURES = ("reward_first", "reward_final", "reward_best", "accuracy_final", "entropy_first", "entropy_final",
                "log_ratio_over_0.5", "clipfrac")


def cell_statistics(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one method in one regime over its seeds: mean and spread, spikes summed, worst max/median."""
    cell: dict[str, Any] = {
        "arm": runs[0]["arm"],
        "regime": runs[0]["regime"],
        "seeds": sorted(run["seed"] for run in runs),
    }
    for name in CELL_FIGURES:
        cell[name] = mean_and_spread(run[name] for run in runs)
    grad = [run["grad_norm"] for run in runs]
    cell["grad_norm_median"] = mean_and_spread(g["median"] for g in grad)
    cell["grad_norm_max_over_median"] = mean_and_spread(g["max_over_median"] for g in grad)
    cell["grad_norm_max_over_median_worst"] = max((g["max_over_median"] for g in grad), default=math.nan)
    for name in ("spikes", "updates", "zero_updates", "nonfinite_updates", "clipped"):
        cell[f"grad_norm_{name}"] = sum(g[name] for g in grad)
    cell["log_ratio_abs_max"] = max(run["log_ratio_abs_max"] for run in runs)
    cell["nonfinite_events"] = sum(run["nonfinite_events"] for run in runs)
    cell["wall_s"] = sum(run["wall_s"] for run in runs)
    return cell


def study_statistics(results: Sequence[RunResult]) -> dict[str, Any]:
    """Per-run and per-cell figures of every finished run (cells in arm order, on-policy first)."""
    runs = [run_statistics(result) for result in results]
    order = {name: index for index, name in enumerate(ARMS)}
    keys = sorted({(run["regime"], run["arm"]) for run in runs},
                  key=lambda key: (list(REGIMES).index(key[0]) if key[0] in REGIMES else 99, order.get(key[1], 99)))
    cells = [cell_statistics([run for run in runs if (run["regime"], run["arm"]) == key]) for key in keys]
    return {
        "runs": runs,
        "cells": cells,
        "wall_s": sum(result.timing.get("wall_s", 0.0) for result in results),
        "cpu_s": sum(result.timing.get("cpu_s", 0.0) for result in results),
    }


# ---------------------------------------------------------------------------------------------------------------
# Report: table, CSV, JSON, curves


def _pm(pair: tuple[float, float], digits: int = 3) -> str:
    mean, spread = pair
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(spread) else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def _number(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


TABLE_HEADER = (
    "| regime | method | seeds | final reward | best reward | final accuracy | grad-norm median | max / median "
    "(worst seed) | updates > 5x median | updates clipped at 1.0 | entropy first → final "
    "| tokens with \\|log r\\| > 0.5 | NaN/Inf |"
)


def table_row(cell: dict[str, Any]) -> str:
    first, final = cell["entropy_first"][0], cell["entropy_final"][0]
    with_signal = cell["grad_norm_updates"] - cell["grad_norm_zero_updates"] - cell["grad_norm_nonfinite_updates"]
    spikes = f"{cell['grad_norm_spikes']:.0f} of {with_signal:.0f}"
    clipped = f"{cell['grad_norm_clipped']:.0f} of {with_signal:.0f}"
    return (
        f"| {cell['regime']} | {cell['arm']} | {len(cell['seeds'])} | {_pm(cell['reward_final'])} | "
        f"{_pm(cell['reward_best'])} | {_pm(cell['accuracy_final'])} | {_pm(cell['grad_norm_median'])} | "
        f"{_pm(cell['grad_norm_max_over_median'], 1)} ({_number(cell['grad_norm_max_over_median_worst'])}) | "
        f"{spikes} | {clipped} | {first:.3f} → {final:.3f} | {100 * cell['log_ratio_over_0.5'][0]:.2f}% | "
        f"{cell['nonfinite_events']:.0f} |"
    )


def markdown_tables(stats: dict[str, Any]) -> str:
    """The README tables: every method in both regimes, then the MHPO ablation (off-policy)."""
    main = [cell for cell in stats["cells"] if not _is_ablation(cell["arm"])]
    ablation = [
        cell
        for cell in stats["cells"]
        if (cell["arm"] == "mhpo" or _is_ablation(cell["arm"])) and cell["regime"] in ABLATION_REGIMES
    ]
    separator = "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"
    lines = ["**Methods**", "", TABLE_HEADER, separator, *map(table_row, main)]
    if any(cell["arm"] != "mhpo" for cell in ablation):
        lines += ["", "**MHPO ablation** (off-policy; `mhpo` = paper defaults)", "", TABLE_HEADER, separator,
                  *map(table_row, ablation)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "regime", "arm", "seeds", *[f"{name}_{part}" for name in CELL_FIGURES for part in ("mean", "sd")],
    "grad_norm_median_mean", "grad_norm_median_sd", "grad_norm_max_over_median_mean", "grad_norm_max_over_median_sd",
    "grad_norm_max_over_median_worst", "grad_norm_spikes", "grad_norm_updates", "grad_norm_zero_updates",
    "grad_norm_nonfinite_updates", "grad_norm_clipped", "log_ratio_abs_max", "nonfinite_events", "wall_s",
)


def write_csv(stats: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for cell in stats["cells"]:
            row: dict[str, Any] = {}
            for key, value in cell.items():
                if isinstance(value, tuple):
                    row[f"{key}_mean"], row[f"{key}_sd"] = (_csv_number(v) for v in value)
                elif key == "seeds":
                    row[key] = " ".join(map(str, value))
                else:
                    row[key] = _csv_number(value) if isinstance(value, float) else value
            writer.writerow(row)


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


PANELS = (
    ("reward (moving average)", "reward/mean"),
    ("gradient norm per update (log)", GRAD_NORMS_KEY),
    ("gradient norm / run median (log)", "normalised"),
    ("entropy", "actor/entropy"),
    ("tokens with |log r| > 0.5", "diag/log_ratio_over_0.5"),
)
"""Columns of ``curves.png``: (title, what is drawn). Reward, entropy and drift are means over seeds; gradient norms
are drawn per seed and per optimizer update (a spike in one seed must stay visible), updates without any learning
signal (norm 0) left out."""


def plot_study(results: Sequence[RunResult], path: Path) -> Path:
    """One PNG with every curve: a row per regime (and one for the ablation), a column per :data:`PANELS` entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        ("on-policy", "on_policy", False),
        ("off-policy", "off_policy", False),
        ("off-policy, MHPO ablation", "off_policy", True),
    ]
    rows = [row for row in rows if any(_in_row(result, row) for result in results)]
    height = max(1, len(rows))
    figure, axes = plt.subplots(height, len(PANELS), figsize=(4.6 * len(PANELS), 3.6 * height), squeeze=False)
    palette = [*plt.get_cmap("tab10").colors, (0.0, 0.0, 0.0)]
    colors = {name: palette[index % len(palette)] for index, name in enumerate(ARMS)}
    for axes_row, row in zip(axes, rows):
        members = [result for result in results if _in_row(result, row)]
        arms = [name for name in ARMS if any(r.record["arm"] == name for r in members)]
        for axis, (title, key) in zip(axes_row, PANELS):
            for arm in arms:
                runs = [r for r in members if r.record["arm"] == arm]
                if key in (GRAD_NORMS_KEY, "normalised"):
                    for number, run in enumerate(runs):
                        steps, norms = _update_norms(run, relative=key == "normalised")
                        axis.plot(steps, norms, color=colors[arm], alpha=0.75, linewidth=0.8, marker=".",
                                  markersize=3, label=arm if number == 0 else None)
                    continue
                series = [_series(run.steps, key) for run in runs]
                length = min(map(len, series))
                mean = [_finite_mean(s[i] for s in series) for i in range(length)]
                if key == "reward/mean":
                    mean = moving_average(mean, max(1, length // 4))
                axis.plot(mean, color=colors[arm], linewidth=1.5, label=arm)
            if key in (GRAD_NORMS_KEY, "normalised") and _has_positive(axis):
                axis.set_yscale("log")
            if key == "normalised":
                axis.axhline(SPIKE_FACTOR, color="red", linewidth=0.8, linestyle="--")
            axis.set_title(f"{row[0]}: {title}", fontsize=10)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
        axes_row[0].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _update_norms(result: RunResult, relative: bool) -> tuple[list[float], list[float]]:
    """(x, norm) of every optimizer update with a finite, non-zero norm; x = step + k / updates in the step.
    ``relative`` divides by the run's median, the scale the spike count uses."""
    median = grad_norm_spikes(n for row in result.steps for n in row.get(GRAD_NORMS_KEY, []))["median"]
    xs, ys = [], []
    for row in result.steps:
        norms = row.get(GRAD_NORMS_KEY, [])
        for index, norm in enumerate(norms):
            if norm is not None and math.isfinite(norm) and norm > 0:
                xs.append(row["step"] + index / len(norms))
                ys.append(norm / median if relative else norm)
    return xs, ys


def _has_positive(axis: Any) -> bool:
    return any(value > 0 for line in axis.lines for value in line.get_ydata())


def _in_row(result: RunResult, row: tuple[str, str, bool]) -> bool:
    _, regime, ablation_row = row
    arm = result.record["arm"]
    in_group = (_is_ablation(arm) or arm == "mhpo") if ablation_row else not _is_ablation(arm)
    return result.record["regime"] == regime and in_group


def _is_ablation(arm: str) -> bool:
    return arm in ARMS and ARMS[arm].ablation


def write_report(store: RunStore, settings: StudySettings | None, missing: Sequence[str] = ()) -> dict[str, Any]:
    """``summary.json``, ``summary.csv``, ``table.md`` and ``curves.png`` from the finished runs in ``store``."""
    results = store.load_finished()
    if not results:
        raise StudyError(f"no finished runs in {store.runs}")
    stats = study_statistics(results)
    table = markdown_tables(stats)
    summary = {
        "settings": _plain(dataclasses.asdict(settings)) if settings else None,
        "spike_factor": SPIKE_FACTOR,
        "missing_runs": list(missing),
        **stats,
    }
    (store.root / "summary.json").write_text(json.dumps(_json_ready(summary), indent=1) + "\n")
    write_csv(stats, store.root / "summary.csv")
    (store.root / "table.md").write_text(table)
    plot_study(results, store.root / "curves.png")
    return {**summary, "table": table}


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    defaults = StudySettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, default=DEFAULT_OUT, help="study folder (default: the committed results)")
    add("--arms", nargs="+", default=None, help=f"methods to run (default: all of {list(ARMS)})")
    add("--regimes", nargs="+", default=None, help=f"regimes (default: {list(REGIMES)})")
    add("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    add("--steps", type=int, default=defaults.steps)
    add("--lr", type=float, default=defaults.lr)
    add("--model", default=None, help="local HF model folder (default: the bundled SmolLM2-135M-Instruct)")
    add("--cache-dir", default=None, help="where the converted model is cached")
    add("--list", action="store_true", help="print the plan and which runs are finished, then stop")
    add("--report-only", action="store_true", help="rebuild the summary, table and curves from the finished runs")
    add("--jobs", type=int, default=1, help="runs at a time, each with cores/jobs threads (default: 1)")
    add("--run-one", type=Path, default=None, help=argparse.SUPPRESS)
    add("--threads", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_one is not None:
        train_run(args.run_one, threads=args.threads)
        return 0
    settings = dataclasses.replace(
        StudySettings(),
        steps=args.steps,
        seeds=tuple(args.seeds),
        lr=args.lr,
        model_path=args.model,
        cache_dir=args.cache_dir,
    )
    store = RunStore(args.out)
    try:
        plan = build_plan(settings, args.arms, args.regimes)
        if args.list:
            for spec in plan:
                print(f"{'done   ' if store.is_finished(spec, settings) else 'pending'} {spec.run_id}")
            return 0
        failed: list[str] = []
        if not args.report_only:
            # A SIGTERM (kill, nohup'd study stopped) unwinds like Ctrl-C, so the running child is ended too.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            failed = run_study(plan, store, settings, child_executor(args.jobs), jobs=args.jobs)
        missing = [spec.run_id for spec in plan if not store.final_dir(spec.run_id).is_dir()]
        report = write_report(store, settings, missing)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report["table"])
    print(f"[study] {len(report['runs'])} runs, {report['wall_s'] / 60:.1f} min wall, "
          f"{report['cpu_s'] / 60:.1f} min CPU; wrote {store.root / 'summary.json'}, summary.csv, table.md, curves.png")
    if missing:
        print(f"[study] {len(missing)} planned runs are not finished: {', '.join(missing)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
