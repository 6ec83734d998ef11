"""``python -m mhpo_verl.demo`` (also ``python -m mhpo_verl demo``): train SmolLM2-135M with MHPO on the CPU.

Writes ``OUT/metrics.jsonl``, ``OUT/samples.jsonl``, ``OUT/config.json`` and ``OUT/curves.png``, shows a progress
bar, and prints a summary of how reward, accuracy and format moved.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: busy-waiting OpenMP threads stall badly when the machine's cores are shared (a CI
# runner, a laptop with other work); measured on 2 shared cores, sampling ran 10x slower without this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

from mhpo_verl.demo.loop import ENGINES, DemoConfig
from mhpo_verl.demo.rewards import DEFAULT_REWARD_OPTIONS

_DEFAULTS = DemoConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mhpo_verl.demo",
        description="MHPO RL on CPU: SmolLM2-135M-Instruct learns arithmetic with \\boxed{} answers, trained "
        "through verl's own actor worker (FSDP2 or Megatron engine, ppo_loss, registered mhpo loss and estimator).",
    )
    add = parser.add_argument
    add("--steps", type=int, default=_DEFAULTS.steps, help="training steps (default: %(default)s)")
    add("--loss-mode", default=_DEFAULTS.loss_mode, help="any verl policy loss: mhpo, vanilla, gspo, ...")
    add("--adv-estimator", default=None, help="verl advantage estimator (default: mhpo)")
    add("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: %(default)s)")
    add("--prompts-per-step", type=int, default=_DEFAULTS.prompts_per_step)
    add("--samples-per-prompt", type=int, default=_DEFAULTS.samples_per_prompt, help="group size (rollout.n)")
    add("--ppo-mini-batch-size", type=int, default=_DEFAULTS.ppo_mini_batch_size, help="prompts per mini-batch")
    add("--ppo-epochs", type=int, default=_DEFAULTS.ppo_epochs)
    add("--micro-batch-size", type=int, default=_DEFAULTS.micro_batch_size, help="sequences per forward pass")
    add("--lr", type=float, default=_DEFAULTS.lr)
    add("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens)
    add("--temperature", type=float, default=_DEFAULTS.temperature)
    add(
        "--engine",
        choices=ENGINES,
        default=_DEFAULTS.engine,
        help="verl training engine: fsdp (FSDP2) or megatron (megatron-core via mbridge, bf16; default: %(default)s)",
    )
    add("--train-dtype", choices=("bf16", "fp32"), default=_DEFAULTS.train_dtype)
    add(
        "--format-score",
        type=float,
        default=DEFAULT_REWARD_OPTIONS["format_score"],
        help="reward for a wrong answer given in \\boxed{} (a correct answer scores 1; default: %(default)s)",
    )
    add("--tasks", nargs="+", default=list(_DEFAULTS.task_kinds), help="problem kinds (see mhpo_verl.demo.tasks)")
    add("--seed", type=int, default=_DEFAULTS.seed)
    add("--model", default=None, help="local HF model folder (default: bundled SmolLM2-135M-Instruct)")
    add("--cache-dir", default=None, help="where the converted model is cached (default: ~/.cache/mhpo_verl)")
    add("--threads", type=int, default=None, help="torch threads (default: all cores)")
    add(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra verl Hydra override, e.g. --set actor_rollout_ref.actor.policy_loss.k_neg=3.0 (repeatable)",
    )
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        steps=args.steps,
        loss_mode=args.loss_mode,
        adv_estimator=args.adv_estimator,
        prompts_per_step=args.prompts_per_step,
        samples_per_prompt=args.samples_per_prompt,
        ppo_mini_batch_size=args.ppo_mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        micro_batch_size=args.micro_batch_size,
        lr=args.lr,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        train_dtype=args.train_dtype,
        engine=args.engine,
        task_kinds=tuple(args.tasks),
        seed=args.seed,
        model_path=args.model,
        cache_dir=args.cache_dir,
        reward_options={**DEFAULT_REWARD_OPTIONS, "format_score": args.format_score},
        overrides=tuple(args.overrides),
    )


def _quiet_libraries() -> None:
    """Keep the terminal for the progress bar: library chatter below warnings goes away, verl's prints go to a log."""
    import logging
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # FSDP2 on CPU triggers a torch.fx notice on every update; it is about tracing APIs the demo does not use.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    # verl warns at import that optional engines (megatron, veomni, ...) are absent; the demo does not need them.
    warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from mhpo_verl.demo.loop import CPURLTrainer, configure_threads
    from mhpo_verl.demo.report import RunWriter, format_summary, plot_curves, summarize

    _quiet_libraries()
    threads = configure_threads(args.threads)
    writer = RunWriter(args.out)
    writer.write_config(dataclasses.asdict(config))
    verl_log = writer.out_dir / "verl.log"
    started = time.perf_counter()
    print(
        f"[demo] {config.loss_mode} on SmolLM2-135M ({config.engine} engine), {config.steps} steps of "
        f"{config.prompts_per_step} prompts x "
        f"{config.samples_per_prompt} samples, {threads} threads; verl's own messages go to {verl_log}",
        flush=True,
    )
    with verl_log.open("w") as log, contextlib.redirect_stdout(log):
        trainer = CPURLTrainer(config)
    print(f"[demo] model and verl actor ready in {time.perf_counter() - started:.0f} s", flush=True)

    records = []
    progress = tqdm(range(config.steps), desc=config.loss_mode, unit="step", disable=args.quiet, dynamic_ncols=True)
    for step in progress:
        with verl_log.open("a") as log, contextlib.redirect_stdout(log):
            metrics = trainer.step(step)
        writer.append(metrics)
        records.append({k: v for k, v in metrics.items() if k != "samples"})
        progress.set_postfix(
            reward=f"{metrics['reward/mean']:.2f}",
            acc=f"{metrics['reward/accuracy']:.2f}",
            boxed=f"{metrics['reward/format']:.2f}",
            gnorm=f"{metrics.get('actor/grad_norm', float('nan')):.2f}",
        )
    progress.close()

    title = f"{config.loss_mode} on SmolLM2-135M ({config.engine}, CPU)"
    curves = plot_curves(records, writer.out_dir / "curves.png", title=title)
    print(format_summary(summarize(records)))
    print(f"[demo] wrote {writer.metrics_path} and {curves} ({time.perf_counter() - started:.0f} s in total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
