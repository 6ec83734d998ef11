"""Summary statistics of the stability study: spike counting, mean and spread over seeds, per-run and per-cell
figures, the Markdown table and the report files."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest


def test_a_spike_is_an_update_strictly_above_five_times_the_median(study):
    stats = study.grad_norm_spikes([1.0, 1.0, 1.0, 1.0, 5.0, 5.01, 12.0])
    assert stats["median"] == 1.0
    assert stats["spikes"] == 2  # 5.0 is exactly 5x the median: not a spike
    assert stats["max"] == 12.0
    assert stats["max_over_median"] == 12.0
    assert stats["updates"] == 7


def test_zero_and_non_finite_norms_are_counted_apart_not_in_the_median(study):
    stats = study.grad_norm_spikes([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, None, float("nan"), float("inf")])
    assert stats["median"] == 2.0
    assert stats["clipped"] == 2  # 2.0 and 3.0 exceed verl's clip_grad of 1.0; 1.0 does not
    assert stats["zero_updates"] == 3
    assert stats["nonfinite_updates"] == 3
    assert stats["updates"] == 9
    assert stats["spikes"] == 0


def test_a_run_without_any_learning_signal_has_no_median_and_no_spikes(study):
    stats = study.grad_norm_spikes([0.0, 0.0])
    assert math.isnan(stats["median"]) and math.isnan(stats["max_over_median"])
    assert stats["spikes"] == 0 and stats["zero_updates"] == 2


def test_spike_factor_is_a_parameter(study):
    norms = [1.0, 1.0, 1.0, 2.5]
    assert study.grad_norm_spikes(norms)["spikes"] == 0
    assert study.grad_norm_spikes(norms, factor=2.0)["spikes"] == 1


def test_mean_and_spread_over_seeds(study):
    mean, spread = study.mean_and_spread([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and spread == pytest.approx(1.0)
    mean, spread = study.mean_and_spread([0.4, float("nan"), 0.6])
    assert mean == pytest.approx(0.5) and spread == pytest.approx(math.sqrt(0.02))
    mean, spread = study.mean_and_spread([0.7])
    assert mean == 0.7 and math.isnan(spread)
    assert all(math.isnan(x) for x in study.mean_and_spread([]))


def test_moving_average_is_trailing_and_rejects_a_bad_window(study):
    assert study.moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        study.moving_average([1.0], 0)


def make_steps(rewards, norms_per_step, entropy=None, drift=None, nonfinite=None):
    steps = []
    for step, (reward, norms) in enumerate(zip(rewards, norms_per_step)):
        row = {
            "step": step,
            "reward/mean": reward,
            "reward/accuracy": reward / 2,
            "actor/entropy": entropy[step] if entropy else 0.5,
            "actor/grad_norm": sum(n for n in norms if n is not None) / max(1, len(norms)),
            "actor/grad_norm_max": max((n for n in norms if n is not None), default=None),
            "diag/log_ratio_over_0.5": drift[step] if drift else 0.0,
            "diag/log_ratio_abs_max": 0.1 * step,
            "diag/nonfinite_grad_norm_steps": float(sum(n is None for n in norms)),
            "diag/nonfinite_loss": float(nonfinite[step]) if nonfinite else 0.0,
            "grad_norm/updates": list(norms),
        }
        steps.append(row)
    return steps


def make_result(study, arm, regime, seed, steps, wall_s=10.0):
    record = {"run_id": f"{regime}__{arm}__seed{seed}", "arm": arm, "regime": regime, "seed": seed}
    return study.RunResult(record=record, steps=steps, timing={"wall_s": wall_s, "cpu_s": 2 * wall_s})


def test_run_statistics_windows_best_and_events(study):
    rewards = [0.1, 0.2, 0.3, 0.9, 0.5, 0.4, 0.6, 0.8]
    norms = [[1.0, 1.0], [1.0, 0.0], [1.0, 10.0], [1.0, 1.0], [None, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    entropy = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    nonfinite = [0, 0, 0, 0, 0, 1, 0, 0]
    result = make_result(study, "mhpo", "off_policy", 0, make_steps(rewards, norms, entropy, nonfinite=nonfinite))
    stats = study.run_statistics(result)
    assert stats["window"] == 2
    assert stats["reward_first"] == pytest.approx(0.15)
    assert stats["reward_final"] == pytest.approx(0.7)
    assert stats["reward_best"] == pytest.approx(0.7)  # moving averages: ..., (0.3+0.9)/2=0.6, ..., (0.6+0.8)/2=0.7
    assert stats["accuracy_final"] == pytest.approx(0.35)
    assert stats["entropy_first"] == 0.8 and stats["entropy_final"] == pytest.approx(0.15)
    assert stats["log_ratio_abs_max"] == pytest.approx(0.7)
    grad = stats["grad_norm"]
    assert (grad["updates"], grad["zero_updates"], grad["nonfinite_updates"]) == (16, 1, 1)
    assert grad["spikes"] == 1 and grad["max_over_median"] == 10.0
    # one non-finite gradient norm and one non-finite loss
    assert stats["nonfinite_events"] == 2


def test_best_reward_is_taken_from_the_moving_average_not_a_lucky_step(study):
    steps = make_steps([0.0, 1.0, 0.0, 0.0], [[1.0]] * 4)
    stats = study.run_statistics(make_result(study, "grpo", "on_policy", 0, steps), window=2)
    assert stats["reward_best"] == pytest.approx(0.5)


def two_seed_results(study):
    return [
        make_result(study, "mhpo", "on_policy", 0, make_steps([0.4] * 4, [[1.0]] * 4)),
        make_result(study, "mhpo", "on_policy", 1, make_steps([0.6] * 4, [[1.0], [1.0], [1.0], [8.0]])),
        make_result(study, "grpo", "on_policy", 0, make_steps([0.5] * 4, [[2.0]] * 4, drift=[0.01] * 4)),
        make_result(study, "grpo", "on_policy", 1, make_steps([0.5] * 4, [[2.0]] * 4, drift=[0.03] * 4)),
        make_result(study, "mhpo", "off_policy", 0, make_steps([0.5] * 4, [[1.0, 1.0]] * 4)),
        make_result(study, "mhpo-c0.5", "off_policy", 0, make_steps([0.3] * 4, [[1.0, 1.0]] * 4)),
    ]


def test_cells_aggregate_seeds_and_sum_spikes(study):
    stats = study.study_statistics(two_seed_results(study))
    cells = {(cell["regime"], cell["arm"]): cell for cell in stats["cells"]}
    assert list(cells) == [("on_policy", "mhpo"), ("on_policy", "grpo"), ("off_policy", "mhpo"),
                           ("off_policy", "mhpo-c0.5")]
    mhpo = cells["on_policy", "mhpo"]
    assert mhpo["seeds"] == [0, 1]
    assert mhpo["reward_final"][0] == pytest.approx(0.5)
    assert mhpo["reward_final"][1] == pytest.approx(math.sqrt(0.02))
    assert mhpo["grad_norm_spikes"] == 1 and mhpo["grad_norm_updates"] == 8
    assert mhpo["grad_norm_max_over_median_worst"] == 8.0
    assert mhpo["grad_norm_max_over_median"][0] == pytest.approx(4.5)
    grpo = cells["on_policy", "grpo"]
    assert grpo["log_ratio_over_0.5"][0] == pytest.approx(0.02)
    assert grpo["grad_norm_median"] == (2.0, 0.0)
    assert stats["wall_s"] == pytest.approx(60.0) and stats["cpu_s"] == pytest.approx(120.0)


def test_markdown_table_rows_show_the_cell_figures(study):
    stats = study.study_statistics(two_seed_results(study))
    table = study.markdown_tables(stats)
    lines = table.splitlines()
    mhpo_row = next(line for line in lines if line.startswith("| on_policy | mhpo |"))
    cells = [part.strip() for part in mhpo_row.strip("|").split("|")]
    header = [part.strip() for part in re.split(r"(?<!\\)\|", study.TABLE_HEADER.strip("|"))]
    assert len(cells) == len(header)
    row = dict(zip(header, cells))
    assert row["seeds"] == "2"
    assert row["final reward"] == "0.500 ± 0.141"
    assert row["max / median (worst seed)"] == "4.5 ± 4.9 (8.0)"
    assert row["updates > 5x median"] == "1 of 8"
    assert row["updates clipped at 1.0"] == "1 of 8"  # the norm of 8; the norms of exactly 1.0 are not clipped
    grpo_row = next(line for line in lines if line.startswith("| on_policy | grpo |"))
    assert "| 8 of 8 |" in grpo_row
    assert row["entropy first → final"] == "0.500 → 0.500"
    # the separator has as many columns as the header
    assert lines[3].count("|") == study.TABLE_HEADER.count("|") - study.TABLE_HEADER.count("\\|")
    # the ablation table repeats the default MHPO arm next to its variants, off-policy only
    ablation = table.split("**MHPO ablation**")[1]
    assert "| off_policy | mhpo |" in ablation and "| off_policy | mhpo-c0.5 |" in ablation
    assert "on_policy" not in ablation


def write_fake_run(store, result):
    folder = store.final_dir(result.run_id)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(result.record))
    (folder / "timing.json").write_text(json.dumps(result.timing))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(step) + "\n" for step in result.steps))


def test_report_only_rebuilds_summary_table_csv_and_png_from_run_folders(study, tmp_path, capsys):
    store = study.RunStore(tmp_path)
    for result in two_seed_results(study):
        write_fake_run(store, result)
    assert study.main(["--out", str(tmp_path), "--report-only", "--arms", "mhpo", "grpo", "--regimes",
                       "on_policy", "--seeds", "0", "1"]) == 0
    printed = capsys.readouterr().out
    table = (tmp_path / "table.md").read_text()
    assert table in printed
    assert "| on_policy | grpo | 2 |" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 6 and summary["missing_runs"] == []
    assert summary["settings"]["seeds"] == [0, 1]
    with (tmp_path / "summary.csv").open() as source:
        rows = list(csv.DictReader(source))
    assert [(row["regime"], row["arm"]) for row in rows][:2] == [("on_policy", "mhpo"), ("on_policy", "grpo")]
    assert float(rows[0]["reward_final_mean"]) == pytest.approx(0.5)
    assert rows[0]["seeds"] == "0 1"
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_report_only_names_the_planned_runs_that_are_missing(study, tmp_path, capsys):
    store = study.RunStore(tmp_path)
    write_fake_run(store, two_seed_results(study)[0])
    assert study.main(["--out", str(tmp_path), "--report-only", "--arms", "mhpo", "--regimes", "on_policy",
                       "--seeds", "0", "1"]) == 0
    assert "not finished: on_policy__mhpo__seed1" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["missing_runs"] == ["on_policy__mhpo__seed1"]


def test_report_without_any_finished_run_is_a_clear_error(study, tmp_path, capsys):
    assert study.main(["--out", str(tmp_path), "--report-only"]) == 1
    assert f"no finished runs in {tmp_path / 'runs'}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Intervals over seeds: bootstrap of the mean, paired differences and ratios against the baseline


def test_the_bootstrap_of_two_values_is_the_exact_distribution_of_the_four_resamples(study):
    # resample means of (0, 1): 0, 0.5, 0.5, 1; numpy's linear quantiles of those at 2.5% and 97.5%
    mean, low, high = study.bootstrap_mean_interval([0.0, 1.0])
    assert mean == 0.5
    assert low == pytest.approx(0.0375) and high == pytest.approx(0.9625)


def test_the_bootstrap_of_agreeing_values_is_a_point_and_nan_is_left_out(study):
    assert study.bootstrap_mean_interval([0.3, 0.3, float("nan"), 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
    mean, low, high = study.bootstrap_mean_interval([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in study.bootstrap_mean_interval([]))


def test_the_bootstrap_interval_of_four_seeds_matches_brute_force(study):
    import itertools

    values = [0.1, 0.4, 0.2, 0.9]
    means = sorted(sum(values[i] for i in pick) / 4 for pick in itertools.product(range(4), repeat=4))
    assert len(means) == 256
    mean, low, high = study.bootstrap_mean_interval(values)
    # numpy's default quantile: linear between order statistics at position q * (N - 1)
    position = 0.025 * 255
    expected_low = means[int(position)] + (position % 1) * (means[int(position) + 1] - means[int(position)])
    assert mean == pytest.approx(0.4) and low == pytest.approx(expected_low)
    assert min(values) < low < mean < high < max(values)


def test_many_seeds_use_a_seeded_monte_carlo_bootstrap_that_is_reproducible(study):
    values = [float(v) for v in range(8)]  # 8**8 resamples: too many to enumerate
    first = study.bootstrap_mean_interval(values)
    assert first == study.bootstrap_mean_interval(values)
    # the normal approximation of the mean's spread: sd / sqrt(n) = 2.29 / 2.83 = 0.81 -> +-1.6 at 95%
    assert first[0] == 3.5
    assert first[1] == pytest.approx(3.5 - 1.96 * 0.8101, abs=0.25)
    assert first[2] == pytest.approx(3.5 + 1.96 * 0.8101, abs=0.25)


def test_a_paired_difference_sees_a_constant_gain_that_seed_noise_hides_unpaired(study):
    baseline = {0: 0.2, 1: 0.8, 2: 0.4, 3: 0.6}
    method = {seed: value + 0.05 for seed, value in baseline.items()}
    method[9] = 1.0  # a seed the baseline lacks is left out
    paired = study.paired_difference(method, baseline)
    assert paired["seeds"] == [0, 1, 2, 3]
    assert (paired["mean"], paired["low"], paired["high"]) == pytest.approx((0.05, 0.05, 0.05))
    assert paired["verdict"] == "higher"
    # unpaired, the two cells' intervals overlap widely: only the pairing tells
    _, _, baseline_high = study.bootstrap_mean_interval(baseline.values())
    _, method_low, _ = study.bootstrap_mean_interval(v for s, v in method.items() if s in baseline)
    assert method_low < baseline_high
    worse = study.paired_difference({s: v - 0.1 for s, v in baseline.items()}, baseline)
    assert worse["verdict"] == "lower"


def test_a_paired_difference_whose_interval_holds_zero_is_no_difference(study):
    baseline = {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}
    method = {0: 0.6, 1: 0.4, 2: 0.55, 3: 0.45}
    paired = study.paired_difference(method, baseline)
    assert paired["mean"] == pytest.approx(0.0, abs=1e-12)
    assert paired["low"] < 0 < paired["high"]
    assert paired["verdict"] == "no difference"


def test_time_ratios_are_paired_by_seed(study):
    baseline = {0: 1.0, 1: 4.0, 2: 2.0, 3: 3.0}
    ratio = study.paired_ratio({seed: 1.5 * t for seed, t in baseline.items()}, baseline)
    assert (ratio["mean"], ratio["low"], ratio["high"]) == pytest.approx((1.5, 1.5, 1.5))


def timed_steps(reward, update_s, cpu_s, updates=2, count=4):
    steps = make_steps([reward] * count, [[1.0] * updates] * count)
    for row in steps:
        row["timing_s/update_actor"], row["cpu_s/update_actor"] = update_s, cpu_s
    return steps


def test_comparisons_pair_each_method_with_grpo_on_the_same_seeds(study):
    results = []
    for seed in range(4):
        results.append(make_result(study, "grpo", "off_policy", seed, timed_steps(0.4 + 0.1 * seed, 2.0, 1.0)))
        results.append(make_result(study, "mhpo", "off_policy", seed, timed_steps(0.45 + 0.1 * seed, 3.0, 1.2)))
    stats = study.study_statistics(results)
    rows = {row["arm"]: row for row in stats["comparisons"]}
    assert list(rows) == ["mhpo", "grpo"]
    mhpo = rows["mhpo"]
    assert mhpo["seeds"] == [0, 1, 2, 3]
    assert mhpo["delta_reward_final"]["mean"] == pytest.approx(0.05)
    assert mhpo["delta_reward_final"]["verdict"] == "higher"
    assert mhpo["update_wall_s_ratio"]["mean"] == pytest.approx(1.5)  # 3.0 / 2 updates against 2.0 / 2 updates
    assert mhpo["update_cpu_s_ratio"]["mean"] == pytest.approx(1.2)
    assert rows["grpo"]["delta_reward_final"]["mean"] == 0
    table = study.markdown_tables(stats)
    line = next(line for line in table.splitlines() if line.startswith("| off_policy | mhpo | 4 | 0.600 ["))
    assert "+0.050 [+0.050, +0.050] **better**" in line
    assert "| 1.50 [1.50, 1.50] | 1.20 [1.20, 1.20] |" in line
    baseline_line = next(line for line in table.splitlines() if line.startswith("| off_policy | grpo | 4 | 0.550 ["))
    assert "(baseline)" in baseline_line


def test_report_only_is_byte_identical_when_run_twice(study, tmp_path):
    store = study.RunStore(tmp_path)
    for seed in range(2):
        for arm, reward in (("grpo", 0.4), ("mhpo", 0.5)):
            write_fake_run(store, make_result(study, arm, "stale_8", seed, timed_steps(reward + seed / 10, 2.0, 1.0)))
    argv = ["--out", str(tmp_path), "--report-only", "--arms", "mhpo", "grpo", "--regimes", "stale_8", "--seeds",
            "0", "1"]
    names = ("summary.json", "summary.csv", "table.md", "curves.png")
    assert study.main(argv) == 0
    first = {name: (tmp_path / name).read_bytes() for name in names}
    assert study.main(argv) == 0
    assert {name: (tmp_path / name).read_bytes() for name in names} == first


def test_one_pair_gives_no_interval_and_no_verdict(study):
    paired = study.paired_difference({0: 0.6, 1: 0.9}, {0: 0.5})
    assert paired["seeds"] == [0] and paired["mean"] == pytest.approx(0.1)
    assert math.isnan(paired["low"]) and paired["verdict"] == "too few seeds"


def test_fewer_than_four_pairs_give_an_interval_but_no_verdict(study):
    # two pairs that share a sign: their 4-resample interval excludes 0, yet 2 seeds cannot call a method worse
    paired = study.paired_difference({0: 0.44, 1: 0.5}, {0: 0.5, 1: 0.502})
    assert paired["high"] < 0
    assert paired["verdict"] == "too few seeds"
    four = study.paired_difference({0: 0.44, 1: 0.5, 2: 0.4, 3: 0.45}, {0: 0.5, 1: 0.502, 2: 0.5, 3: 0.5})
    assert four["verdict"] == "lower"


def test_starting_accuracy_counts_each_seeds_initial_weight_steps_once(study):
    config = {"prompts_per_step": 4, "ppo_mini_batch_size": 1, "ppo_epochs": 1}

    def run(arm, regime, seed, accuracy, staleness):
        steps = make_steps([2 * a for a in accuracy], [[1.0]] * len(accuracy))
        for row, lag in zip(steps, staleness):
            row["rollout/staleness_updates"] = lag
        result = make_result(study, arm, regime, seed, steps)
        result.record["demo_config"] = config
        return result

    results = [
        # stale: steps 0-2 sampled from the initial weights (lag = every update so far), step 3 not
        run("mhpo", "stale_8", 0, [0.1, 0.2, 0.3, 0.9], [0, 4, 8, 8]),
        run("grpo", "stale_8", 0, [0.1, 0.2, 0.3, 0.7], [0, 4, 8, 8]),  # the same three steps: counted once
        run("grpo", "off_policy", 0, [0.1, 0.8, 0.8, 0.8], [0, 0, 0, 0]),  # only its step 0, the same again
        run("grpo", "off_policy", 1, [0.5, 0.9, 0.9, 0.9], [0, 0, 0, 0]),
    ]
    start = study.initial_accuracy(results)
    assert start["steps"] == 4
    assert start["per_seed"] == pytest.approx({0: 0.2, 1: 0.5})
    assert start["mean"] == pytest.approx(0.35)
