"""What a run leaves behind: ``metrics.jsonl`` (one line per step), ``samples.jsonl``, ``curves.png`` and a summary."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward/mean", "reward/accuracy", "reward/format")),
    ("gradient norm", ("actor/grad_norm",)),
    ("entropy", ("actor/entropy",)),
    ("MHPO survival exp(-zeta)", ("actor/mhpo/survival_pos", "actor/mhpo/survival_neg")),
    ("off-policy tokens", ("diag/log_ratio_over_0.5", "actor/pg_clipfrac")),
    ("response length (tokens)", ("response_length/mean",)),
)
"""Panels of ``curves.png``: (title, metric keys); keys a run did not log are skipped."""


def _json_number(value: Any) -> Any:
    # JSON has no NaN/Inf; a non-finite value becomes null and the diag/nonfinite_* counters record the event.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunWriter:
    """Appends each step to ``metrics.jsonl`` (numbers) and ``samples.jsonl`` (example responses) in ``out_dir``."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.samples_path = self.out_dir / "samples.jsonl"
        for path in (self.metrics_path, self.samples_path):
            path.write_text("")

    def write_config(self, config: dict[str, Any]) -> None:
        (self.out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")

    def append(self, metrics: dict[str, Any]) -> None:
        numbers = {key: _json_number(value) for key, value in metrics.items() if key != "samples"}
        with self.metrics_path.open("a") as sink:
            sink.write(json.dumps(numbers, allow_nan=False) + "\n")
        if metrics.get("samples"):
            with self.samples_path.open("a") as sink:
                sink.write(json.dumps({"step": metrics["step"], "samples": metrics["samples"]}) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as source:
        return [json.loads(line) for line in source if line.strip()]


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return [statistics.fmean(values[max(0, end - window) : end]) for end in range(1, len(values) + 1)]


def plot_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Draw the training curves (raw values faint, a moving average solid) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [k for k in keys if any(r.get(k) is not None for r in records)]) for name, keys in CURVES]
    panels = [(name, keys) for name, keys in panels if keys]
    columns = 3
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    window = max(1, len(records) // 8)
    for axis, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            steps, values = _series(records, key)
            (line,) = axis.plot(steps, moving_average(values, window), label=key.split("/", 1)[-1])
            axis.plot(steps, values, color=line.get_color(), alpha=0.25)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else float("nan")


def summarize(records: Sequence[dict[str, Any]], window: int | None = None) -> dict[str, Any]:
    """First-window vs last-window means of the reward metrics, plus totals."""
    if not records:
        raise ValueError("no steps were recorded")
    window = window or max(1, len(records) // 4)
    first, last = records[:window], records[-window:]
    summary: dict[str, Any] = {"steps": len(records), "window": window}
    for key in ("reward/mean", "reward/accuracy", "reward/format", "response_length/mean"):
        summary[key] = {"first": _mean(first, key), "last": _mean(last, key)}
    summary["seconds"] = sum(float(r.get("timing_s/step", 0.0)) for r in records)
    summary["nonfinite_events"] = sum(
        float(r.get(key) or 0.0) for r in records for key in r if key.startswith("diag/nonfinite")
    )
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    window = summary["window"]
    lines = [f"{summary['steps']} steps in {summary['seconds']:.0f} s (training loop only)"]
    lines.append(f"{'':22s}{'first ' + str(window):>10s}{'last ' + str(window):>10s}")
    for key in ("reward/mean", "reward/accuracy", "reward/format", "response_length/mean"):
        lines.append(f"{key:22s}{summary[key]['first']:10.3f}{summary[key]['last']:10.3f}")
    lines.append(f"non-finite events: {summary['nonfinite_events']:.0f}")
    return "\n".join(lines)
