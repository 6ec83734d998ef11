"""Tables and plots from ``summary.json``: one run's summary, several runs side by side.

Columns follow the paper's table (MATH500, HMMT25, AMC23, AIME25, AIME24, Avg); accuracies are shown as
percentages with one decimal, as there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mhpo_verl.eval.benchmarks import VISION_BENCHMARKS, display_name, table_order
from mhpo_verl.eval.errors import EvalInputError

METRIC_LABELS = {
    "mean_response_tokens": "mean response length (tokens)",
    "truncated_frac": "truncated (%)",
    "mean_score": "mean score",
    "n_problems": "problems",
}


def is_percentage(metric: str) -> bool:
    return metric.startswith(("avg@", "pass@")) or metric == "truncated_frac"


def format_value(metric: str, value: Any) -> str:
    if value is None:
        return "–"
    if is_percentage(metric):
        return f"{100 * value:.1f}"
    if metric == "mean_response_tokens":
        return f"{value:.0f}"
    if metric == "mean_score":
        return f"{value:.3f}"
    return str(value)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"{metric} (%)" if is_percentage(metric) else metric)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def summary_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: one row per metric, one column per benchmark, then the average."""
    k = summary["k"]
    run = summary.get("run", {})
    sampling = run.get("sampling", {})
    names = list(summary["benchmarks"])
    metrics = [f"avg@{k}", *(f"pass@{j}" for j in summary["pass_ks"] if j > 1)]
    metrics += ["mean_response_tokens", "truncated_frac", "n_problems"]
    rows = []
    for metric in metrics:
        cells = [format_value(metric, summary["benchmarks"][name].get(metric)) for name in names]
        rows.append([metric_label(metric), *cells, format_value(metric, summary["average"].get(metric))])
    lines = ["# Math benchmark evaluation", ""]
    if run:
        lines += [
            f"Model `{run.get('model')}` · k = {k} samples per problem · temperature {sampling.get('temperature')} · "
            f"top-p {sampling.get('top_p')} · max {sampling.get('max_new_tokens')} new tokens · "
            f"{run.get('backend')} backend · seed {sampling.get('seed')}",
            "",
        ]
    lines += _table(["Metric", *map(display_name, names), "Avg"], rows)
    lines += [
        "",
        f"avg@{k}: mean accuracy over the k samples of each problem (= unbiased pass@1); pass@j: unbiased estimator "
        "1 − C(n−c, j)/C(n, j). Avg: unweighted mean over benchmarks (its problems cell is the total).",
    ]
    if not summary["complete"]:
        done = summary["average"]["n_problems"]
        expected = sum(b["n_problems_expected"] for b in summary["benchmarks"].values())
        lines += ["", f"**Incomplete:** {done} of {expected} problems have all k samples; rerun the command to finish."]
    return "\n".join(lines) + "\n"


def load_summary(path: str | Path) -> dict[str, Any]:
    """A run folder's ``summary.json`` (or the file itself)."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise EvalInputError(f"no summary.json at {str(file)!r}; run the evaluation into that folder first")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvalInputError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(summary, dict) or not {"k", "benchmarks", "average"} <= set(summary):
        raise EvalInputError(f"{file} is not an evaluation summary (expected keys 'k', 'benchmarks', 'average')")
    return summary


def _metric_of(summary: dict[str, Any], metric: str) -> str:
    """``avg@k``/``pass@k`` name each run's own k; a concrete ``pass@8`` is taken as is."""
    return {"avg@k": f"avg@{summary['k']}", "pass@k": f"pass@{summary['k']}"}.get(metric, metric)


def _check_metrics(runs: Sequence[tuple[str, dict[str, Any]]], metrics: Sequence[str]) -> None:
    for metric in metrics:
        if not any(_metric_of(summary, metric) in summary["average"] for _, summary in runs):
            available = sorted({name for _, summary in runs for name in summary["average"]})
            raise EvalInputError(f"no run has metric {metric!r}; expected avg@k, pass@k or one of {available}")


def comparison_markdown(runs: Sequence[tuple[str, dict[str, Any]]], metrics: Sequence[str]) -> str:
    """The paper's tables for several runs: a row per run, a column per benchmark, one table per metric.

    Runs with vision-language benchmarks get the paper's VL table as well: the text and the VL benchmarks each in a
    table of their own, each Avg the unweighted mean over that table's benchmarks the run has.
    """
    _check_metrics(runs, metrics)
    names = table_order({name for _, summary in runs for name in summary["benchmarks"]})
    vision = [name for name in names if name in VISION_BENCHMARKS]
    groups = (
        [("", names)]
        if not vision
        else [
            (" — math", [name for name in names if name not in VISION_BENCHMARKS]),
            (" — vision-language", vision),
        ]
    )
    lines: list[str] = []
    for metric in metrics:
        for title, group in groups:
            if not group:
                continue
            rows = [_comparison_row(label, summary, metric, group, grouped=bool(vision)) for label, summary in runs]
            header = ["Run", *map(display_name, group), "Avg"]
            lines += [f"### {metric_label(metric)}{title}", "", *_table(header, rows), ""]
    benchmark_sets = {tuple(sorted(summary["benchmarks"])) for _, summary in runs}
    if len(benchmark_sets) > 1:
        lines += ["Note: the runs cover different benchmarks; each Avg is over that run's own benchmarks.", ""]
    incomplete = [label for label, summary in runs if not summary.get("complete", True)]
    if incomplete:
        lines += [f"Note: incomplete runs (not every problem has k samples): {', '.join(incomplete)}.", ""]
    return "\n".join(lines)


def _comparison_row(label: str, summary: dict[str, Any], metric: str, names: list[str], grouped: bool) -> list[str]:
    concrete = _metric_of(summary, metric)
    values = [summary["benchmarks"].get(name, {}).get(concrete) for name in names]
    if grouped:  # the summary's average spans every benchmark of the run; a group's Avg spans the group
        present = [value for value in values if value is not None]
        average = sum(present) / len(present) if present else None
    else:
        average = summary["average"].get(concrete)
    cells = [format_value(concrete, value) for value in values]
    return [f"{label} (k={summary['k']})", *cells, format_value(concrete, average)]


def plot_comparison(runs: Sequence[tuple[str, dict[str, Any]]], metric: str, path: str | Path) -> Path:
    """Grouped bars: one group per benchmark (and Avg), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_metrics(runs, [metric])
    names = table_order({name for _, summary in runs for name in summary["benchmarks"]})
    groups = [*map(display_name, names), "Avg"]
    width = 0.8 / len(runs)
    scale = 100 if is_percentage(_metric_of(runs[0][1], metric)) else 1
    figure, axes = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 0.4 * len(runs)), 4.2))
    for index, (label, summary) in enumerate(runs):
        concrete = _metric_of(summary, metric)
        values = [summary["benchmarks"].get(name, {}).get(concrete) for name in names]
        values.append(summary["average"].get(concrete))
        positions = [g + (index - (len(runs) - 1) / 2) * width for g in range(len(groups))]
        heights = [scale * v if v is not None else 0.0 for v in values]
        bars = axes.bar(positions, heights, width, label=label)
        for bar, value in zip(bars, values):
            if value is not None:
                text = f"{scale * value:.1f}"
                axes.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel(metric_label(metric))
    axes.set_title(f"{metric} per benchmark")
    axes.legend(frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path
