"""``python -m mhpo_verl data``: convert math datasets into verl's RL parquet, list them, check parquet files.

Examples::

    python -m mhpo_verl data list
    python -m mhpo_verl data convert gsm8k                          # both splits from the Hub
    python -m mhpo_verl data convert aime24 --input aime_2024.jsonl  # a local file
    python -m mhpo_verl data all --out-dir ~/data/mhpo --decontaminate
    python -m mhpo_verl data check ~/data/mhpo/math500/test.parquet
    python -m mhpo_verl data convert mathvista --split testmini --input testmini.parquet   # VL: images embedded
    python -m mhpo_verl data convert mathvision --split test --input test.jsonl --image-root MathVision/

Exit status: 0 on success, 1 when ``--strict`` found malformed rows or ``check`` found problems, 2 when the input
cannot be read or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhpo_verl.data.catalog import DEFAULT_DATA_DIR, DatasetSpec, dataset_path
from mhpo_verl.data.convert import (
    ConversionReport,
    convert_records,
    print_problems,
    questions_in_parquet,
    write_parquet,
    write_report,
)
from mhpo_verl.data.readers import Source, SourceError, open_hub, open_local
from mhpo_verl.data.schema import ARROW_SCHEMA, DEFAULT_PROMPT_TEMPLATE, SchemaError, check_table
from mhpo_verl.data.vision import (
    ALL_DATASETS,
    VISION_ARROW_SCHEMA,
    VisionDatasetSpec,
    convert_vision_records,
    get_any_spec,
    keys_in_parquet,
)

EXIT_OK, EXIT_FOUND_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (SourceError, SchemaError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mhpo_verl data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="datasets that can be converted, with their Hub ids and splits")
    listing.set_defaults(run=_run_list)

    convert = commands.add_parser("convert", help="convert one dataset (all its splits, or --split)")
    convert.add_argument("dataset", choices=sorted(ALL_DATASETS), help="dataset name, also the rows' data_source")
    convert.add_argument("--split", help="split to convert (default: every split the dataset has)")
    convert.add_argument("--input", type=Path, help="local parquet/jsonl/json file instead of the Hub (one split)")
    convert.add_argument("--output", type=Path, help="output parquet (default: <out-dir>/<dataset>/<split>.parquet)")
    convert.add_argument("--hub-id", help="Hub dataset id (default: the catalogue's)")
    convert.add_argument("--hub-config", help="Hub dataset config name (default: the catalogue's)")
    convert.add_argument("--hub-split", help="Hub split name for --split (default: the catalogue's mapping)")
    convert.add_argument(
        "--image-root",
        type=Path,
        help="VL datasets: folder that relative image paths are read from (default: the --input file's folder)",
    )
    _add_common_options(convert)
    convert.set_defaults(run=_run_convert)

    everything = commands.add_parser("all", help="convert every dataset's splits from the Hub")
    everything.add_argument("--only", nargs="+", choices=sorted(ALL_DATASETS), help="restrict to these datasets")
    _add_common_options(everything)
    everything.set_defaults(run=_run_all)

    check = commands.add_parser("check", help="check that parquet files fit verl's RL schema")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(run=_run_check)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default=DEFAULT_DATA_DIR, help=f"output folder (default: {DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--template",
        default=DEFAULT_PROMPT_TEMPLATE,
        help="user-message template with one {question} placeholder (default asks for a \\boxed{} answer)",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        type=Path,
        default=[],
        help="verl parquet files whose problems are removed from the output (e.g. evaluation sets)",
    )
    parser.add_argument(
        "--decontaminate",
        action="store_true",
        help="remove from training sets every problem of the benchmark files already in --out-dir",
    )
    parser.add_argument("--strict", action="store_true", help="fail (exit 1, write nothing) on any malformed row")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _run_list(args: argparse.Namespace) -> int:
    width = max(map(len, ALL_DATASETS))
    for spec in ALL_DATASETS.values():
        config = f" [{spec.hub_config}]" if spec.hub_config else ""
        print(f"{spec.name:<{width}}  {spec.role:<9}  splits {','.join(spec.splits):<10}  {spec.hub_id}{config}")
        print(f"{'':<{width}}  {spec.description}")
    return EXIT_OK


def _run_convert(args: argparse.Namespace) -> int:
    spec = get_any_spec(args.dataset)
    splits = _chosen_splits(spec, args)
    if args.output and len(splits) != 1:
        raise SourceError(f"--output names one file but {spec.name} has splits {splits}; add --split")
    status = EXIT_OK
    for split in splits:
        source = _open(spec, split, args)
        status = max(status, _convert_split(spec, split, source, args, output=args.output))
    return status


def _chosen_splits(spec: DatasetSpec, args: argparse.Namespace) -> list[str]:
    if args.split is not None:
        if args.split not in spec.splits and args.input is None and args.hub_split is None:
            raise SourceError(
                f"{spec.name} has splits {list(spec.splits)}, not {args.split!r}; a local --input or a --hub-split "
                "may use any split name"
            )
        return [args.split]
    if args.input is not None and len(spec.splits) > 1:
        raise SourceError(f"--input is one file but {spec.name} has splits {list(spec.splits)}; add --split")
    return list(spec.splits)


def _open(spec: DatasetSpec, split: str, args: argparse.Namespace) -> Source:
    if args.input is not None:
        return open_local(args.input)
    hub_split = args.hub_split or spec.hub_splits.get(split, split)
    return open_hub(args.hub_id or spec.hub_id, args.hub_config or spec.hub_config, hub_split)


def _convert_split(
    spec: DatasetSpec, split: str, source: Source, args: argparse.Namespace, output: Path | None = None
) -> int:
    if isinstance(spec, VisionDatasetSpec):
        rows, report = _convert_vision_split(spec, split, source, args)
    else:
        exclude = set(questions_in_parquet(args.exclude))
        if args.decontaminate and spec.role == "train":
            exclude |= questions_in_parquet(_benchmark_files(args.out_dir))
        rows, report = convert_records(
            spec, source, split=split, template=args.template, exclude_questions=exclude, progress=args.progress
        )
    output = output or dataset_path(args.out_dir, spec.name, split).expanduser()
    report_path = output.with_suffix(".report.json")
    if args.strict and report.malformed:
        print(report.summary(), file=sys.stderr)
        print_problems(report)
        print(f"error: --strict and {len(report.malformed)} malformed rows; nothing written", file=sys.stderr)
        return EXIT_FOUND_PROBLEMS
    schema = VISION_ARROW_SCHEMA if isinstance(spec, VisionDatasetSpec) else ARROW_SCHEMA
    report.output = str(write_parquet(rows, output, schema))
    write_report(report, report_path)
    _print_outcome(report, report_path)
    return EXIT_OK


def _convert_vision_split(spec: VisionDatasetSpec, split: str, source: Source, args: argparse.Namespace):
    exclude = keys_in_parquet(args.exclude)
    if args.decontaminate and spec.role == "train":
        exclude |= keys_in_parquet(_benchmark_files(args.out_dir, vision=True))
    image_root = getattr(args, "image_root", None)
    if image_root is None and getattr(args, "input", None) is not None:
        image_root = args.input.expanduser().parent
    return convert_vision_records(
        spec,
        source,
        split=split,
        template=args.template,
        image_root=image_root,
        exclude_keys=exclude,
        progress=args.progress,
    )


def _benchmark_files(out_dir: str, vision: bool = False) -> list[Path]:
    benchmarks = [
        spec
        for spec in ALL_DATASETS.values()
        if spec.role == "benchmark" and isinstance(spec, VisionDatasetSpec) == vision
    ]
    files = [dataset_path(out_dir, spec.name, split).expanduser() for spec in benchmarks for split in spec.splits]
    present = [path for path in files if path.exists()]
    if not present:
        raise SourceError(
            f"--decontaminate found no converted benchmark in {out_dir}; convert the benchmarks first "
            "(`data all` converts them before the training sets)"
        )
    return present


def _print_outcome(report: ConversionReport, report_path: Path) -> None:
    print(report.summary())
    print_problems(report)
    print(f"  report: {report_path}")


def _run_all(args: argparse.Namespace) -> int:
    # Benchmarks first, so that --decontaminate can read them when the training sets are converted.
    names = sorted(args.only or ALL_DATASETS, key=lambda name: (ALL_DATASETS[name].role != "benchmark", name))
    status = EXIT_OK
    for name in names:
        spec = ALL_DATASETS[name]
        for split in spec.splits:
            source = open_hub(spec.hub_id, spec.hub_config, spec.hub_splits[split])
            status = max(status, _convert_split(spec, split, source, args))
    return status


def _run_check(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    status = EXIT_OK
    for path in args.files:
        try:
            table = pq.read_table(path.expanduser())
        except Exception as error:  # pyarrow raises several types for missing or damaged files
            print(f"{path}: cannot read ({error})", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        problems = check_table(table)
        if problems:
            status = max(status, EXIT_FOUND_PROBLEMS)
            print(f"{path}: {len(problems)} problems", file=sys.stderr)
            for problem in problems[:10]:
                print(f"  {problem}", file=sys.stderr)
            continue
        sources = table.column("data_source").value_counts().to_pylist()
        counts = ", ".join(f"{item['values']}={item['counts']}" for item in sources)
        print(f"{path}: ok, {table.num_rows} rows ({counts})")
    return status


if __name__ == "__main__":
    sys.exit(main())
