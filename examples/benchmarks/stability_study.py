"""Stability study: MHPO against GRPO, clip-higher, GSPO, SAPO and CISPO on the CPU training path, fresh and stale.

Every run trains SmolLM2-135M-Instruct on the demo's arithmetic tasks through :class:`mhpo_verl.demo.loop.CPURLTrainer`
(verl's own actor worker, ``ppo_loss`` and registered policy losses). Runs differ only in the method (the overrides
of :data:`mhpo_verl.recipes.ALGORITHMS`, or MHPO loss options for the ablation), the regime and the seed; model,
tasks, batch, sampling and learning rate are the same everywhere, and a seed fixes the problems and the sampling.

* ``off_policy``: 4 mini-batches (one prompt group each) x 1 PPO epoch = 4 updates per rollout batch, so ratios
  drift away from 1; the old log-probs are recomputed by the trainer before the first update (verl's default,
  "decoupled" mode).
* ``stale_8``: the same 4 updates per batch, but the sampler's weights are 8 optimizer updates old (the push to the
  sampler is delayed by 2 steps, as in asynchronous RL) and the old log-probs are the sampler's own log-probs of the
  sampled tokens (verl's ``rollout_correction.bypass_mode``), so every ratio carries 8-11 updates of staleness.
* ``on_policy`` (not in the default plan): one update per batch, every ratio is 1. The MHPO ablation arms run only
  when named with ``--arms``.

Statistics: per method and regime the mean over seeds with a 95% bootstrap interval, and the paired difference to
GRPO on the same seeds (same prompts, same initial weights, same first samples) with its interval; the per-update
wall and CPU time of each method as a ratio to GRPO's on the same seed.

The GRPO recipe's KL-to-reference term is left out here: the CPU loop has no reference model (it would cost a third
forward pass per step), and the comparison is about the policy losses. All other methods use no KL term anyway.

Each run executes in a child process (a crash or a leak cannot touch the next run) and is written to
``runs/<id>.partial/``, which is renamed to ``runs/<id>/`` when every step is done: a finished run is never redone,
an interrupted one is discarded and redone from scratch. ``--report-only`` rebuilds ``summary.json``,
``summary.csv``, ``table.md`` and ``curves.png`` from the run folders.

    python examples/benchmarks/stability_study.py                      # the whole study (resumes), then the report
    python examples/benchmarks/stability_study.py --jobs 2             # 2 runs at a time (1 thread each, always)
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
import itertools
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

import numpy as np

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
    rollout_staleness: int = 0
    """Optimizer updates the sampler's weights lag behind the trainer's (:attr:`DemoConfig.rollout_staleness`)."""
    old_log_probs_from_sampler: bool = False
    """Old log-probs from the sampler (verl's bypass mode) instead of the trainer's recomputation."""


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
    for name in ("mhpo", "grpo", "clip-higher", "gspo", "sapo", "cispo")
)
BASELINE = "grpo"
"""The method every other is compared with, seed by seed."""
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
        Regime("off_policy", ppo_mini_batch_size=1, ppo_epochs=1, description="4 mini-batches x 1 epoch"),
        Regime(
            "stale_8",
            ppo_mini_batch_size=1,
            ppo_epochs=1,
            description="4 mini-batches x 1 epoch, sampler 8 updates old, old log-probs from the sampler",
            rollout_staleness=8,
            old_log_probs_from_sampler=True,
        ),
    )
}
STUDY_REGIMES = ("off_policy", "stale_8")
"""The regimes of the default plan."""
ABLATION_REGIMES = ("off_policy",)
"""On-policy every ratio is 1: psi = 0 and zeta is a constant, so the ablation arms only differ off-policy."""


@dataclass(frozen=True)
class StudySettings:
    """What every run shares: the smallest runs in which k = 8 means something, 4 steps of 4 prompts x 2 samples
    with 4 optimizer updates a step (16 updates; a stale run's last two steps learn from rollouts 8 updates old).
    On this AVX2-only 2-core machine shared with other jobs one run costs minutes of CPU, so even this size does
    not fit 48 runs in an hour (README: the measured cost, what finished, and why these sizes)."""

    steps: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    prompts_per_step: int = 4
    samples_per_prompt: int = 2
    max_new_tokens: int = 32
    micro_batch_size: int = 2
    lr: float = 2e-5
    temperature: float = 1.0
    task_kinds: tuple[str, ...] = ("add_2d1d", "mul_1d", "sub_2d")
    format_score: float = 0.5
    dtype: str = "fp32"
    """Training and sampling precision. fp32: on a CPU without AVX-512 (this machine: AVX2 only) a bf16 matmul runs
    about 30x slower than fp32 (1.2 against 38 GFLOP/s measured, one thread)."""
    threads: int = 1
    """Intra-op threads of every run, whatever ``--jobs`` is: the thread count changes floating-point sums and from
    there every sampled token, so it is part of what a seed reproduces."""
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
            train_dtype=settings.dtype,
            rollout_dtype=settings.dtype,
            task_kinds=settings.task_kinds,
            rollout_staleness=self.regime.rollout_staleness,
            old_log_probs_from_sampler=self.regime.old_log_probs_from_sampler,
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
            "threads": settings.threads,
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
    """The runs, most informative first, so that an interrupted study holds complete paired comparisons: MHPO and
    GRPO at every seed in the stale regime, then off-policy, then the other methods seed by seed in each regime, then
    on-policy and the ablation. By default the six methods in :data:`STUDY_REGIMES`; ablation arms (off-policy only)
    and ``on_policy`` run when named."""
    wanted_arms = _pick(ARMS, arms if arms is not None else [arm.name for arm in MAIN_ARMS], "arm")
    wanted_regimes = [regime.name for regime in _pick(REGIMES, regimes if regimes is not None else STUDY_REGIMES,
                                                      "regime")]
    plan = []
    for first_pair in (True, False):
        for regime_name, ablation in (("stale_8", False), ("off_policy", False), ("on_policy", False),
                                      ("off_policy", True)):
            if regime_name not in wanted_regimes:
                continue
            for seed in settings.seeds:
                for arm in wanted_arms:
                    if arm.ablation != ablation or (ablation and regime_name not in ABLATION_REGIMES):
                        continue
                    if (arm.name in FIRST_PAIR) == first_pair:
                        plan.append(RunSpec(arm, REGIMES[regime_name], seed))
    return plan


FIRST_PAIR = ("mhpo", BASELINE)
"""The comparison the study exists for; :func:`build_plan` runs it first."""


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


def child_executor(threads: int) -> Executor:
    """The executor of one run per child with ``threads`` intra-op threads (the same for any ``--jobs``, see
    :attr:`StudySettings.threads`)."""
    return lambda spec, folder, log_path: execute_in_child(spec, folder, log_path, threads=threads)


class RunWorker:
    """A child process (this script with ``--serve``) that trains the runs it is sent, one after another.

    Importing verl and setting up its engine costs minutes of wall time on a loaded 2-core machine, more than a
    short run's training; a worker pays it once. Each run still builds its own trainer from its own config (fresh
    weights, optimizer, problems and sampling seeds; nothing random is drawn outside them), so a run's numbers do
    not depend on what the worker ran before (``tests/study/test_worker.py`` checks it). A failed run ends the
    worker; the next run gets a fresh one. The CPU time of a run is the worker's own ``getrusage`` over that run.
    """

    def __init__(self, threads: int, log_dir: Path):
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--threads", str(threads)]
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / "workers.log").open("a") as worker_log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=worker_log,
                                            text=True, preexec_fn=_end_with_parent)
        with _LIVE_CHILDREN_LOCK:
            _LIVE_CHILDREN.add(self.process)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, folder: Path, log_path: Path) -> dict[str, float]:
        started = time.perf_counter()
        try:
            self.process.stdin.write(json.dumps({"folder": str(folder), "log": str(log_path)}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        except BaseException:
            stop_children()
            raise
        if not line:
            code = self.process.wait()
            self.close()
            raise StudyError(f"the run worker ended (exit status {code}); the end of {log_path}:\n{_tail(log_path)}")
        reply = json.loads(line)
        if not reply["ok"]:
            self.close()
            raise StudyError(f"{reply['error']}; the end of {log_path}:\n{_tail(log_path)}")
        return {"wall_s": time.perf_counter() - started, "cpu_s": reply["cpu_s"]}

    def close(self) -> None:
        if self.alive:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with _LIVE_CHILDREN_LOCK:
            _LIVE_CHILDREN.discard(self.process)


def worker_executor(threads: int) -> tuple[Executor, Callable[[], None]]:
    """The study's executor: one :class:`RunWorker` per concurrent job (pool thread), started on its first run and
    replaced after a failure; and the function that closes every worker at the end."""
    local = threading.local()
    workers: list[RunWorker] = []

    def execute(spec: RunSpec, folder: Path, log_path: Path) -> dict[str, float]:
        worker = getattr(local, "worker", None)
        if worker is None or not worker.alive:
            worker = local.worker = RunWorker(threads, log_path.parent)
            workers.append(worker)
        return worker.run(folder, log_path)

    def close_all() -> None:
        for worker in workers:
            worker.close()

    return execute, close_all


def serve(threads: int) -> None:
    """The worker's side of :class:`RunWorker`: one JSON request a line on stdin (run folder, log file), one JSON
    reply a line on the original stdout; while a run trains, fd 1 and 2 go to its log file."""
    import gc
    import resource
    import traceback

    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        request = json.loads(line)
        before = resource.getrusage(resource.RUSAGE_SELF)
        with open(request["log"], "w") as log:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                train_run(Path(request["folder"]), threads=threads)
                reply: dict[str, Any] = {"ok": True}
            except Exception as error:  # reported to the parent, which records the run as failed
                traceback.print_exc()
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        gc.collect()
        after = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if not reply["ok"]:
            return


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:] if path.is_file() else ""


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

UPDATE_CPU_KEY = "cpu_s/update_actor"
"""CPU time of the step's actor update (every optimizer update of the step), the process's own: unlike wall time it
does not count the time other programs on a shared machine held the core."""

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
    "rollout/staleness_updates",
    "timing_s/step",
    "timing_s/update_actor",
    UPDATE_CPU_KEY,
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
        started = time.process_time()
        output = update_actor(request)
        trainer.update_cpu_s = time.process_time() - started
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
        if hasattr(trainer, "update_cpu_s"):
            metrics[UPDATE_CPU_KEY] = trainer.update_cpu_s
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
        "staleness_max": max(_series(steps, "rollout/staleness_updates"), default=math.nan),
        "log_ratio_over_0.5_at_max_staleness": _drift_at_max_staleness(steps),
        "update_wall_s": _per_update_seconds(steps, "timing_s/update_actor"),
        "update_cpu_s": _per_update_seconds(steps, UPDATE_CPU_KEY),
        "nonfinite_events": summarize(steps)["nonfinite_events"],
        "grad_norm": grad_norm_spikes(norms),
        "wall_s": result.timing.get("wall_s", math.nan),
        "cpu_s": result.timing.get("cpu_s", math.nan),
    }


def _per_update_seconds(steps: Sequence[dict[str, Any]], key: str) -> float:
    """Median over steps of the step's update time divided by its optimizer updates (the median: a step that shared
    the core with another program does not move it)."""
    per_update = [
        float(row[key]) / len(row[GRAD_NORMS_KEY])
        for row in steps
        if row.get(key) is not None and row.get(GRAD_NORMS_KEY)
    ]
    return statistics.median(per_update) if per_update else math.nan


def _drift_at_max_staleness(steps: Sequence[dict[str, Any]]) -> float:
    """The |log r| > 0.5 fraction over the steps sampled with the run's stalest weights (a stale run's first steps
    are fresher: the sampler starts from the initial weights)."""
    staleness = _series(steps, "rollout/staleness_updates")
    finite = [value for value in staleness if not math.isnan(value)]
    if not finite:
        return math.nan
    drift = _series(steps, "diag/log_ratio_over_0.5")
    return _finite_mean(d for d, k in zip(drift, staleness) if k == max(finite))


CELL_FIGURES = ("reward_first", "reward_final", "reward_best", "accuracy_final", "entropy_first", "entropy_final",
                "log_ratio_over_0.5", "log_ratio_over_0.5_at_max_staleness", "clipfrac")
BOOTSTRAP_FIGURES = ("reward_final", "accuracy_final", "log_ratio_over_0.5", "log_ratio_over_0.5_at_max_staleness")
"""Figures whose cell mean also gets a bootstrap interval over seeds."""


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
    for name in BOOTSTRAP_FIGURES:
        cell[f"{name}_ci"] = bootstrap_mean_interval(run[name] for run in runs)[1:]
    return cell


# ---------------------------------------------------------------------------------------------------------------
# Intervals over seeds

CONFIDENCE = 0.95
EXACT_BOOTSTRAP_LIMIT = 50_000
"""Up to this many resamples (n**n for n seeds: 256 for 4, 46656 for 6) every resample is enumerated, so the
interval is exact and the same on every machine; beyond, :data:`BOOTSTRAP_RESAMPLES` drawn with a fixed seed."""
BOOTSTRAP_RESAMPLES = 20_000


def bootstrap_mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its percentile-bootstrap interval (resampling with replacement).

    NaN values are left out; with fewer than 2 values the interval is NaN. With few values the percentile interval
    is narrower than the true one (4 values that agree give a narrow interval), which the README says.
    """
    x = np.array([float(v) for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan, math.nan
    n = len(x)
    if n**n <= EXACT_BOOTSTRAP_LIMIT:
        indices = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64)
    else:
        indices = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    means = x[indices].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(x.mean()), float(low), float(high)


VERDICT_MIN_SEEDS = 4
"""Fewest paired seeds for a verdict: the study's seed floor. A percentile bootstrap over 2 or 3 values has 4 or 27
resamples and excludes 0 whenever the values share a sign, so it would call a method better or worse from noise."""


def paired_difference(method: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """``method - baseline`` seed by seed over the seeds both have (finite), with its bootstrap interval.
    ``verdict`` is ``higher``/``lower`` only when the interval excludes 0, ``no difference`` when it holds 0, and
    ``too few seeds`` below :data:`VERDICT_MIN_SEEDS` pairs (the interval is still reported from 2 pairs)."""
    seeds = sorted(seed for seed in method.keys() & baseline.keys()
                   if math.isfinite(method[seed]) and math.isfinite(baseline[seed]))
    mean, low, high = bootstrap_mean_interval(method[seed] - baseline[seed] for seed in seeds)
    verdict = ("too few seeds" if math.isnan(low) or len(seeds) < VERDICT_MIN_SEEDS else "higher" if low > 0
               else "lower" if high < 0 else "no difference")
    return {"seeds": seeds, "mean": mean, "low": low, "high": high, "verdict": verdict}


def paired_ratio(method: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """``method / baseline`` seed by seed (both positive), its mean and bootstrap interval."""
    seeds = sorted(seed for seed in method.keys() & baseline.keys() if method[seed] > 0 and baseline[seed] > 0)
    mean, low, high = bootstrap_mean_interval(method[seed] / baseline[seed] for seed in seeds)
    return {"seeds": seeds, "mean": mean, "low": low, "high": high}


COMPARED = {
    "reward_final": lambda run: run["reward_final"],
    "accuracy_final": lambda run: run["accuracy_final"],
    "max_over_median": lambda run: run["grad_norm"]["max_over_median"],
}
"""Figures compared with the baseline seed by seed (paired differences)."""
TIMED = ("update_wall_s", "update_cpu_s")


def comparisons(runs: Sequence[dict[str, Any]], baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Per regime and method (the baseline included, as its own reference): paired differences of
    :data:`COMPARED` and the per-update time ratios against ``baseline`` on the same seeds."""
    out = []
    regimes = [name for name in REGIMES if any(run["regime"] == name for run in runs)]
    for regime in regimes:
        members = [run for run in runs if run["regime"] == regime and not _is_ablation(run["arm"])]
        base = {run["seed"]: run for run in members if run["arm"] == baseline}
        if not base:
            continue
        for arm in [name for name in ARMS if any(run["arm"] == name for run in members)]:
            mine = {run["seed"]: run for run in members if run["arm"] == arm}
            row: dict[str, Any] = {"regime": regime, "arm": arm}
            for name, figure in COMPARED.items():
                row[name] = dict(zip(("mean", "low", "high"),
                                     bootstrap_mean_interval(figure(run) for run in mine.values())))
                row[f"delta_{name}"] = paired_difference({s: figure(r) for s, r in mine.items()},
                                                         {s: figure(r) for s, r in base.items()})
            for name in TIMED:
                row[f"{name}_ratio"] = paired_ratio({s: r[name] for s, r in mine.items()},
                                                    {s: r[name] for s, r in base.items()})
            row["seeds"] = row["delta_reward_final"]["seeds"]
            out.append(row)
    return out


def initial_accuracy(results: Sequence[RunResult]) -> dict[str, Any]:
    """The task mix's accuracy under the initial weights: every step whose rollouts were sampled before any update
    reached the sampler (step 0 of every run; steps 0-2 of a stale_8 run). Such a step is the same in every run of
    its seed (same prompts, weights and sampling seed), so it is counted once per (seed, step); the interval is over
    seeds."""
    by_seed: dict[int, dict[int, float]] = {}
    for result in results:
        config = result.record.get("demo_config", {})
        updates = config.get("prompts_per_step", 1) // config.get("ppo_mini_batch_size", 1) * config.get(
            "ppo_epochs", 1)
        for row in result.steps:
            staleness = row.get("rollout/staleness_updates", 0.0 if row["step"] == 0 else None)
            if staleness is not None and staleness == row["step"] * updates and row.get("reward/accuracy") is not None:
                by_seed.setdefault(result.record["seed"], {})[row["step"]] = float(row["reward/accuracy"])
    per_seed = {seed: statistics.fmean(steps.values()) for seed, steps in sorted(by_seed.items())}
    mean, low, high = bootstrap_mean_interval(per_seed.values())
    steps = sum(len(steps) for steps in by_seed.values())
    return {"per_seed": per_seed, "steps": steps, "mean": mean, "low": low, "high": high}


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
        "comparisons": comparisons(runs),
        "initial_accuracy": initial_accuracy(results),
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
    "| tokens with \\|log r\\| > 0.5 | max \\|log r\\| | NaN/Inf |"
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
        f"{_number(cell['log_ratio_abs_max'])} | {cell['nonfinite_events']:.0f} |"
    )


COMPARISON_HEADER = (
    f"| regime | method | seeds | final reward (95% CI) | Δ final reward vs {BASELINE} (95% CI) | "
    f"final accuracy (95% CI) | Δ final accuracy vs {BASELINE} (95% CI) | Δ grad-norm max/median vs {BASELINE} "
    f"(95% CI) | update wall time / {BASELINE} (95% CI) | update CPU time / {BASELINE} (95% CI) |"
)
VERDICTS = {"higher": "better", "lower": "worse", "no difference": "no different", "too few seeds": "too few seeds"}
"""For reward and accuracy, higher is better."""


def _interval(entry: dict[str, Any], digits: int = 3, signed: bool = False) -> str:
    if math.isnan(entry["mean"]):
        return "–"
    sign = "+" if signed else ""
    mean = f"{entry['mean']:{sign}.{digits}f}"
    if math.isnan(entry["low"]):
        return mean
    return f"{mean} [{entry['low']:{sign}.{digits}f}, {entry['high']:{sign}.{digits}f}]"


def _percent(mean: float, interval: tuple[float, float]) -> str:
    if math.isnan(mean):
        return "–"
    low, high = interval
    return f"{100 * mean:.2f}%" if math.isnan(low) else f"{100 * mean:.2f}% [{100 * low:.2f}, {100 * high:.2f}]"


def drift_row(cell: dict[str, Any]) -> str:
    stalest = "log_ratio_over_0.5_at_max_staleness"
    return (
        f"| {cell['regime']} | {cell['arm']} | {len(cell['seeds'])} | "
        f"{_percent(cell['log_ratio_over_0.5'][0], cell['log_ratio_over_0.5_ci'])} | "
        f"{_percent(cell[stalest][0], cell[f'{stalest}_ci'])} | {_number(cell['log_ratio_abs_max'])} |"
    )


def comparison_row(row: dict[str, Any]) -> str:
    def delta(name: str, digits: int = 3, verdict: bool = True) -> str:
        entry = row[f"delta_{name}"]
        if row["arm"] == BASELINE:
            return "(baseline)"
        text = _interval(entry, digits, signed=True)
        return f"{text} **{VERDICTS[entry['verdict']]}**" if verdict and text != "–" else text

    def ratio(name: str) -> str:
        return "1 (baseline)" if row["arm"] == BASELINE else _interval(row[f"{name}_ratio"], 2)

    return (
        f"| {row['regime']} | {row['arm']} | {len(row['seeds'])} | {_interval(row['reward_final'])} | "
        f"{delta('reward_final')} | {_interval(row['accuracy_final'])} | {delta('accuracy_final')} | "
        f"{delta('max_over_median', 2, verdict=False)} | {ratio('update_wall_s')} | {ratio('update_cpu_s')} |"
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
    lines = ["**Methods** (± is the sample standard deviation over seeds)", "", TABLE_HEADER, separator,
             *map(table_row, main)]
    start = stats.get("initial_accuracy")
    if start and start["steps"]:
        lines += ["", f"**Starting accuracy** of the task mix (initial weights; {start['steps']} distinct steps over "
                      f"{len(start['per_seed'])} seeds, 95% interval over seeds): {_interval(start)}"]
    drift = [cell for cell in main if not math.isnan(cell["log_ratio_over_0.5"][0])]
    if drift:
        lines += ["", "**Drift** (tokens with \\|log r\\| > 0.5 over every update of the run, and over the steps "
                      "sampled with the stalest weights; mean [95% interval] over seeds)", "",
                  "| regime | method | seeds | all steps | stalest steps | max \\|log r\\| |",
                  "|---|---|---|---|---|---|", *map(drift_row, drift)]
    if stats.get("comparisons"):
        lines += ["", f"**Against {BASELINE}, seed by seed** (paired over the same seeds; 95% percentile-bootstrap "
                      "intervals over seeds; better / worse only where the interval excludes 0)", "",
                  COMPARISON_HEADER, "|" + "---|" * COMPARISON_HEADER.count(" | ") + "---|",
                  *map(comparison_row, stats["comparisons"])]
    if any(cell["arm"] != "mhpo" for cell in ablation):
        lines += ["", "**MHPO ablation** (off-policy; `mhpo` = paper defaults)", "", TABLE_HEADER, separator,
                  *map(table_row, ablation)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "regime", "arm", "seeds", *[f"{name}_{part}" for name in CELL_FIGURES for part in ("mean", "sd")],
    "grad_norm_median_mean", "grad_norm_median_sd", "grad_norm_max_over_median_mean", "grad_norm_max_over_median_sd",
    "grad_norm_max_over_median_worst", "grad_norm_spikes", "grad_norm_updates", "grad_norm_zero_updates",
    "grad_norm_nonfinite_updates", "grad_norm_clipped", "log_ratio_abs_max", "nonfinite_events", "wall_s",
    *[f"{name}_ci_{end}" for name in BOOTSTRAP_FIGURES for end in ("low", "high")],
)


def write_csv(stats: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for cell in stats["cells"]:
            row: dict[str, Any] = {}
            for key, value in cell.items():
                if key.endswith("_ci"):
                    row[f"{key}_low"], row[f"{key}_high"] = (_csv_number(v) for v in value)
                elif isinstance(value, tuple):
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
        ("stale 8", "stale_8", False),
        ("off-policy, MHPO ablation", "off_policy", True),
    ]
    # the ablation row only when an ablation arm ran (else it would repeat MHPO's off-policy curves)
    rows = [row for row in rows if any(_in_row(result, row) and (not row[2] or _is_ablation(result.record["arm"]))
                                       for result in results)]
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
    add("--serve", action="store_true", help=argparse.SUPPRESS)
    add("--threads", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_one is not None:
        train_run(args.run_one, threads=args.threads)
        return 0
    if args.serve:
        serve(args.threads or 1)
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
            execute, close_workers = worker_executor(settings.threads)
            try:
                failed = run_study(plan, store, settings, execute, jobs=args.jobs)
            finally:
                close_workers()
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
