"""``python -m mhpo_verl.eval`` (also ``python -m mhpo_verl eval`` and ``mhpo-eval``).

    python -m mhpo_verl.eval --model CKPT --data math500.parquet aime24.parquet --k 32 --out results/mhpo
    python -m mhpo_verl.eval compare results/grpo results/mhpo [--plot cmp.png]
    python -m mhpo_verl.eval plot results/grpo results/mhpo --out cmp.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mhpo_verl.eval.backends import BACKENDS
from mhpo_verl.eval.errors import EvalInputError, RunFolderError
from mhpo_verl.eval.grading import DEFAULT_GRADER
from mhpo_verl.eval.sampling import SamplingSettings
from mhpo_verl.eval.tokenization import PROMPT_FORMATS

PROG = "python -m mhpo_verl.eval"
SUBCOMMANDS = ("run", "compare", "plot")


def _engine_arg(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string such as fp8
    return key.replace("-", "_"), value


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="avg@k / pass@k of a checkpoint on math benchmarks (MATH500, AIME24/25, AMC23, HMMT25). "
        "Rerun the same command to resume an interrupted run. Subcommands: compare, plot (see '<subcommand> -h').",
    )
    model = parser.add_argument_group("model and data")
    model.add_argument("--model", required=True, help="HF checkpoint folder (a verl checkpoint merged to HF)")
    model.add_argument("--data", required=True, nargs="+", metavar="FILE",
                       help="benchmark parquet/JSONL files in verl's schema (or folders of them); the benchmark "
                            "is each row's data_source")
    model.add_argument("--out", required=True, help="run folder: samples.jsonl, summary.json, summary.md")
    model.add_argument("--tokenizer", help="tokenizer path (default: --model)")
    model.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="chat",
                       help="chat: the tokenizer's chat template, as in verl's rollout; raw: message text as is")
    model.add_argument("--system-prompt", help="system message added before each prompt that has none")
    model.add_argument("--limit", type=int, help="only the first N problems of each benchmark (smoke tests)")
    model.add_argument("--allow-unknown-benchmarks", action="store_true",
                       help="evaluate data_source names that are not known benchmarks under their own name")
    model.add_argument("--trust-remote-code", action="store_true")

    sampling = parser.add_argument_group("sampling (defaults: R1/DeepScaleR-style avg@k protocol)")
    defaults = SamplingSettings()
    sampling.add_argument("--k", type=int, default=32, help="samples per problem (default 32: the paper's Avg@32)")
    sampling.add_argument("--temperature", type=float, default=defaults.temperature,
                          help="default %(default)s; 0 = greedy")
    sampling.add_argument("--top-p", type=float, default=defaults.top_p, help="default %(default)s")
    sampling.add_argument("--top-k", type=int, default=defaults.top_k, help="default %(default)s = off")
    sampling.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                          help="response budget; longer ones are cut and counted as truncated (default %(default)s)")
    sampling.add_argument("--seed", type=int, default=defaults.seed,
                          help="run seed; each sample's seed derives from it (default %(default)s)")
    sampling.add_argument("--pass-k", type=int, nargs="+", metavar="J",
                          help="pass@J values to report (default: 1, 2, 4, ... and k)")

    engine = parser.add_argument_group("generation backend")
    engine.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="vllm (GPU), hf (CPU or GPU); auto = vllm when installed and a GPU is visible")
    engine.add_argument("--batch-size", type=int,
                        help="samples per generate call and per append to samples.jsonl (default: vllm 2048, hf 16)")
    engine.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    engine.add_argument("--device", default="auto", help="hf backend: cpu, cuda, cuda:1, ... (default: GPU if any)")
    engine.add_argument("--tensor-parallel-size", "--tp", type=int, default=1, help="vllm: GPUs per model replica")
    engine.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm (default %(default)s)")
    engine.add_argument("--max-model-len", type=int, help="vllm: context length (prompt + response)")
    engine.add_argument("--engine-arg", type=_engine_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="extra vllm.LLM keyword argument, value parsed as JSON (repeatable)")

    grading = parser.add_argument_group("grading")
    grading.add_argument("--grader", default=DEFAULT_GRADER,
                         help="module:function with reward_fns.compute_score_batch's signature")
    grading.add_argument("--grader-workers", type=int,
                         help="the grader's process pool size (reward_fns default: min(8, CPUs); 0 = no pool)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} compare",
                                     description="print the paper-style table for several run folders")
    parser.add_argument("runs", nargs="+", metavar="DIR", help="run folders (or their summary.json)")
    parser.add_argument("--labels", nargs="+", help="row names (default: folder names)")
    parser.add_argument("--metric", action="append", dest="metrics",
                        help="avg@k, pass@k, pass@8, mean_response_tokens, truncated_frac, ... (repeatable; "
                             "default: avg@k and pass@k)")
    parser.add_argument("--plot", metavar="PNG", help="also save a bar chart of the first metric")
    return parser


def _plot_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} plot", description="bar chart of a metric per benchmark and run")
    parser.add_argument("runs", nargs="+", metavar="DIR", help="run folders (or their summary.json)")
    parser.add_argument("--out", required=True, metavar="PNG")
    parser.add_argument("--labels", nargs="+", help="legend names (default: folder names)")
    parser.add_argument("--metric", default="avg@k")
    return parser


def _labelled_runs(paths: Sequence[str], labels: Sequence[str] | None) -> list[tuple[str, dict]]:
    from mhpo_verl.eval.report import load_summary

    if labels is not None and len(labels) != len(paths):
        raise EvalInputError(f"--labels gives {len(labels)} names for {len(paths)} runs")
    names = labels or [Path(p).name if Path(p).is_dir() else Path(p).parent.name for p in paths]
    return [(name, load_summary(path)) for name, path in zip(names, paths)]


def _run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    from mhpo_verl.eval.runner import EvalConfig, run_eval

    config = EvalConfig(
        model=args.model,
        data=args.data,
        out=args.out,
        k=args.k,
        backend=args.backend,
        sampling=SamplingSettings(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        ),
        batch_size=args.batch_size,
        tokenizer=args.tokenizer,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        engine_args=dict(args.engine_arg),
        grader=args.grader,
        grader_workers=args.grader_workers,
        pass_ks=args.pass_k,
        limit=args.limit,
        allow_unknown_benchmarks=args.allow_unknown_benchmarks,
        progress=not args.no_progress,
    )
    summary = run_eval(config)
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"), end="")
    return 0 if summary["complete"] else 1


def _compare(argv: Sequence[str]) -> int:
    args = _compare_parser().parse_args(argv)
    from mhpo_verl.eval.report import comparison_markdown, plot_comparison

    runs = _labelled_runs(args.runs, args.labels)
    metrics = args.metrics or ["avg@k", "pass@k"]
    print(comparison_markdown(runs, metrics), end="")
    if args.plot:
        print(f"plot: {plot_comparison(runs, metrics[0], args.plot)}")
    return 0


def _plot(argv: Sequence[str]) -> int:
    args = _plot_parser().parse_args(argv)
    from mhpo_verl.eval.report import plot_comparison

    print(f"plot: {plot_comparison(_labelled_runs(args.runs, args.labels), args.metric, args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[mhpo-eval] %(message)s", stream=sys.stderr)
    command, rest = ("run", argv)
    if argv and argv[0] in SUBCOMMANDS:
        command, rest = argv[0], argv[1:]
    handler = {"run": _run, "compare": _compare, "plot": _plot}[command]
    try:
        return handler(rest)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    except (EvalInputError, RunFolderError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished samples are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
