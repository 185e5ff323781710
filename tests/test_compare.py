"""bench.regression.compare on synthetic run directories: noise must not fail the gate, a 25% shift must."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import UsageError
from bench.regression.bootstrap import CI_LEVEL, bootstrap_ratios, sorted_quantiles
from bench.regression.compare import compare_dirs, run_compare
from bench.regression.gates import DEFAULT_THRESHOLDS, METRICS, classify, metric_spec, parse_fail_on
from bench.regression.values import SAMPLE_ROWS, sample_values
from bench.results import store

TASKS = ("<CAPTION>", "<OD>", "<OCR>")
N_SAMPLES = 40  # per cell; docs/regression.md says why a gate needs this many
CV = 0.10
ENV = {
    "cpu": {"model": "Test CPU @ 2.0GHz"},
    "gpu": None,
    "torch": {"version": "2.13.0+cpu", "cuda": None, "cudnn": None, "num_threads": 2},
    "libraries": {"transformers": "5.23.0"},
}


def record(task: str, samples, **changes) -> store.Record:
    samples = np.asarray(samples, dtype=float)
    fields = dict(
        cell_id=f"id-{task}",
        variant="base",
        checkpoint="tiny",
        weights="random",
        task=task,
        dataset="synthetic-smoke",
        n_images=16,
        device="cpu",
        dtype="fp32",
        batch_size=1,
        attn="sdpa",
        compile=False,
        num_beams=1,
        max_new_tokens=20,
        samples_ms=samples.tolist(),
        latency_ms={"p50": float(np.median(samples)), "p90": float(np.quantile(samples, 0.9))}
        if len(samples)
        else None,
        throughput={"images_per_s": 1000 / float(np.mean(samples))} if len(samples) else None,
        memory={"peak_rss_bytes": 500 * 2**20, "cuda_peak_allocated_bytes": None},
    )
    fields.update(changes)
    return store.Record(**fields)


def write_run(run_dir: Path, records, env=ENV) -> Path:
    for r in records:
        store.append(run_dir, r)
    if env is not None:
        store.write_env(run_dir, env)
    return run_dir


def noisy(rng: np.random.Generator, scale: float = 1.0, n: int = N_SAMPLES) -> np.ndarray:
    """Per-image times with lognormal noise of CV ~10% around 200 ms times ``scale``."""
    return 200.0 * scale * rng.lognormal(0.0, CV, n)


def pair(tmp_path: Path, seed: int, scale: float, **current_changes) -> tuple[Path, Path]:
    """Two independent runs of the same cells; the current run's times are multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    base = write_run(tmp_path / "base", [record(t, noisy(rng)) for t in TASKS])
    cur = write_run(tmp_path / "cur", [record(t, noisy(rng, scale), **current_changes) for t in TASKS])
    return base, cur


def verdicts(comparison, metric: str) -> set[str]:
    return {row.verdict for row in comparison.rows if row.metric == metric}


@pytest.mark.parametrize("seed", range(5))
def test_aa_same_distribution_reports_no_regression(tmp_path, seed):
    comparison = compare_dirs(*pair(tmp_path, seed, 1.0), seed=seed)
    assert not comparison.regressed
    assert {row.verdict for row in comparison.rows} == {"unchanged"}
    assert comparison.env_warnings == []
    assert run_compare(tmp_path / "base", tmp_path / "cur") == 0


@pytest.mark.parametrize("seed", range(5))
def test_25_percent_slowdown_is_flagged(tmp_path, seed):
    comparison = compare_dirs(*pair(tmp_path, seed, 1.25), seed=seed)
    assert comparison.regressed
    assert verdicts(comparison, "latency_p50") == {"regressed"}
    assert verdicts(comparison, "throughput") == {"regressed"}
    assert verdicts(comparison, "peak_memory") == {"unchanged"}
    p50 = [row for row in comparison.rows if row.metric == "latency_p50"]
    assert all(1.10 < row.ci_low <= row.ratio <= row.ci_high for row in p50)
    assert all(abs(row.ratio - 1.25) < 0.1 for row in p50)
    assert run_compare(tmp_path / "base", tmp_path / "cur") == 1


@pytest.mark.parametrize("seed", range(3))
def test_25_percent_speedup_is_improved(tmp_path, seed):
    comparison = compare_dirs(*pair(tmp_path, seed, 0.75), seed=seed)
    assert not comparison.regressed
    assert verdicts(comparison, "latency_p50") == {"improved"}
    assert verdicts(comparison, "throughput") == {"improved"}


def test_drift_within_threshold_does_not_fail(tmp_path):
    """A shared machine drifts a few percent between runs: inside the margin it can never fail."""
    comparison = compare_dirs(*pair(tmp_path, 7, 1.05))
    assert not comparison.regressed


def test_stalls_do_not_fail_the_median(tmp_path):
    rng = np.random.default_rng(3)

    def stalled():
        x = noisy(rng)
        x[rng.choice(len(x), 3, replace=False)] *= 3.0  # another user's job, 3 slow images of 40
        return x

    base = write_run(tmp_path / "base", [record(t, noisy(rng)) for t in TASKS])
    cur = write_run(tmp_path / "cur", [record(t, stalled()) for t in TASKS])
    comparison = compare_dirs(base, cur)
    assert verdicts(comparison, "latency_p50") <= {"unchanged", "inconclusive"}


def test_an_unstable_runs_tail_does_not_gate_but_its_median_does(tmp_path):
    """Foreign load that slows a burst of samples moves p90; in a run marked unstable it is not a verdict."""
    rng = np.random.default_rng(5)

    def burst(scale: float = 1.0):
        x = noisy(rng, scale)
        x[-8:] *= 2.0  # eight slow images in a row: the tail, not the median
        return x

    base = write_run(tmp_path / "base", [record(t, noisy(rng)) for t in TASKS])
    cur = write_run(tmp_path / "cur", [record(t, burst(), unstable=True) for t in TASKS])
    comparison = compare_dirs(base, cur)
    assert not comparison.regressed
    assert verdicts(comparison, "latency_p90") == {"inconclusive"}  # no verdict, never "unchanged"
    assert any("p90 not gated" in row.note for row in comparison.rows if row.metric == "latency_p90")
    stable = write_run(tmp_path / "stable", [record(t, burst()) for t in TASKS])
    assert "regressed" in verdicts(compare_dirs(base, stable), "latency_p90")  # the same tail, stable: gated
    slow = write_run(tmp_path / "slow", [record(t, burst(1.25), unstable=True) for t in TASKS])
    assert verdicts(compare_dirs(base, slow), "latency_p50") == {"regressed"}


def bootstrap_ratio(baseline, current, quantiles, n_boot, seed=0):
    """One cell's bootstrap: point ratio, low and high per quantile."""
    point, low, high = bootstrap_ratios([(baseline, current)], quantiles, n_boot, seed)
    return point[0], low[0], high[0]


def test_bootstrap_known_answers():
    rng = np.random.default_rng(0)
    flat = np.full(10, 100.0)
    point, low, high = bootstrap_ratio(flat, flat * 1.25, (0.5, 0.9), 200)
    assert np.allclose([point, low, high], 1.25)
    # the interval of a noisy ratio contains the point estimate and is narrower with more samples
    narrow = bootstrap_ratio(noisy(rng, n=400), noisy(rng, n=400), (0.5,), 500)
    wide = bootstrap_ratio(noisy(rng, n=10), noisy(rng, n=10), (0.5,), 500)
    for point, low, high in (narrow, wide):
        assert low[0] <= point[0] <= high[0]
    assert narrow[2][0] - narrow[1][0] < wide[2][0] - wide[1][0]


def _bootstrap_cell_by_cell(baseline, current, quantiles, seed, n_boot, level=CI_LEVEL):
    """The textbook bootstrap of one cell (the oracle the vectorised one must equal): each resample drawn
    whole, as positions in the sorted sample from the generator of the cell's sample counts (the baseline's
    resamples, then the current run's, in chunks of 2,000,000 values), and numpy's quantiles of each."""
    rng = np.random.default_rng([seed, len(baseline), len(current)])

    def resamples(x):
        x, chunk = np.sort(x), max(1, 2_000_000 // len(x))
        return np.concatenate([x[rng.integers(0, len(x), (min(chunk, n_boot - start), len(x)))]
                               for start in range(0, n_boot, chunk)])

    point = np.quantile(current, quantiles) / np.quantile(baseline, quantiles)
    b, c = resamples(baseline), resamples(current)
    ratios = np.quantile(c, quantiles, axis=1) / np.quantile(b, quantiles, axis=1)
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return point, low, high


def test_the_vectorised_bootstrap_equals_the_cell_by_cell_one_draw_for_draw():
    rng = np.random.default_rng(3)
    sizes = [(3, 3), (3, 3), (5, 3), (3, 3), (2, 40), (5, 3), (1200, 900)]  # groups interleaved; one chunked draw
    cells = [(noisy(rng, n=nb), noisy(rng, n=nc) * 1.1) for nb, nc in sizes]
    point, low, high = bootstrap_ratios(cells, (0.5, 0.9), 2000, seed=9)
    for i, (b, c) in enumerate(cells):
        expected = _bootstrap_cell_by_cell(b, c, (0.5, 0.9), 9, 2000)
        np.testing.assert_array_equal(point[i], expected[0])
        np.testing.assert_array_equal(low[i], expected[1])
        np.testing.assert_array_equal(high[i], expected[2])
    assert (low < point).all() and (point < high).all()


def test_sorted_quantiles_equal_numpys_bit_for_bit():
    rng = np.random.default_rng(4)
    q = np.array([0.0, 0.05, 0.1, 0.5, 0.9, 0.95, 1.0])
    for n in (1, 2, 3, 4, 5, 20, 101):
        rows = np.round(noisy(rng, n=n * 30).reshape(30, n), 1)  # rounded: ties
        np.testing.assert_array_equal(sorted_quantiles(np.sort(rows, axis=1), q), np.quantile(rows, q, axis=1))


def test_sample_values_equal_each_records_own():
    rng = np.random.default_rng(5)
    samples = [noisy(rng, n=n) for n in (4, 20, 4, 1, 7, 20)]
    batches = (1, 8, 2, 4, 1, 1)
    values = sample_values(samples, batches)
    for x, batch, got in zip(samples, batches, values, strict=True):
        assert got == {metric: float(rows(x, batch)) for metric, rows in SAMPLE_ROWS.items()}


def test_seeded_and_independent_of_other_cells(tmp_path):
    rng = np.random.default_rng(1)
    base_records = [record(t, noisy(rng)) for t in TASKS]
    cur_records = [record(t, noisy(rng)) for t in TASKS]
    base, cur = write_run(tmp_path / "base", base_records), write_run(tmp_path / "cur", cur_records)
    first = compare_dirs(base, cur, seed=5)
    assert first.rows == compare_dirs(base, cur, seed=5).rows
    assert first.rows != compare_dirs(base, cur, seed=6).rows
    # a cell's interval does not depend on which other cells the runs hold
    one = compare_dirs(
        write_run(tmp_path / "b1", base_records[1:2]), write_run(tmp_path / "c1", cur_records[1:2]), seed=5
    )
    assert one.rows == [row for row in first.rows if row.cell_id == base_records[1].cell_id]


def test_memory_single_value_against_threshold(tmp_path):
    rng = np.random.default_rng(0)
    samples = noisy(rng)
    base = write_run(tmp_path / "base", [record("<OD>", samples)])
    more = {"peak_rss_bytes": 650 * 2**20, "cuda_peak_allocated_bytes": None}
    cur = write_run(tmp_path / "cur", [record("<OD>", samples, memory=more)])
    row = next(r for r in compare_dirs(base, cur).rows if r.metric == "peak_memory")
    assert (row.method, row.verdict, row.ci_low) == ("single-value", "regressed", None)
    assert row.ratio == pytest.approx(1.3)
    assert "peak_rss_bytes" in row.note
    assert not compare_dirs(base, cur, {"peak_memory": 0.5}).regressed


def test_accuracy_delta_in_points(tmp_path):
    samples = noisy(np.random.default_rng(0))
    base = write_run(
        tmp_path / "base",
        [record("<CAPTION>", samples, weights="pretrained", accuracy={"cider": 80.0, "bleu4": 30.0})],
    )
    cur = write_run(
        tmp_path / "cur",
        [record("<CAPTION>", samples, weights="pretrained", accuracy={"cider": 78.0, "bleu4": 29.5})],
    )
    rows = {r.metric: r for r in compare_dirs(base, cur).rows}
    assert rows["accuracy.cider"].kind == "delta"
    assert rows["accuracy.cider"].ratio == pytest.approx(-2.0)
    assert rows["accuracy.cider"].verdict == "regressed"
    assert rows["accuracy.bleu4"].verdict == "unchanged"  # -0.5 is inside the default -1.0
    strict = {r.metric: r.verdict for r in compare_dirs(base, cur, {"accuracy.bleu4": -0.25}).rows}
    assert strict["accuracy.bleu4"] == "regressed"
    relaxed = compare_dirs(base, cur, parse_fail_on("accuracy=-5"))
    assert not relaxed.regressed


def test_accuracy_not_measured_is_skipped_and_said(tmp_path):
    """Random weights score noise (0.00 against 0.00 is no comparison), and a metric scored on one side only
    has nothing to compare: neither becomes a row, and the notes say why."""
    samples = noisy(np.random.default_rng(0))
    noise = {"cider": 0.0, "bleu4": 0.0}
    base = write_run(tmp_path / "base", [
        record("<CAPTION>", samples, accuracy=noise),
        record("<OD>", samples, cell_id="od", weights="pretrained", accuracy={"map": 30.0, "map50": 50.0}),
    ])
    cur = write_run(tmp_path / "cur", [
        record("<CAPTION>", samples, accuracy=noise),
        record("<OD>", samples, cell_id="od", weights="pretrained", accuracy={"map": 29.0, "map50": None}),
    ])
    comparison = compare_dirs(base, cur)
    metrics = {(r.cell_id, r.metric) for r in comparison.rows}
    assert not any(m.startswith("accuracy.") for c, m in metrics if c == "id-<CAPTION>")
    assert ("od", "accuracy.map") in metrics and ("od", "accuracy.map50") not in metrics
    skipped = dict(comparison.notes())["accuracy not compared (not measured on both sides)"]
    assert any("<CAPTION>" in s and "weights random (baseline) / random (current)" in s for s in skipped)
    assert any("map50: not scored on both sides" in s for s in skipped)
    assert "accuracy not compared" in comparison.to_table()


def test_failed_cells(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(
        tmp_path / "base",
        [record("<CAPTION>", noisy(rng)), record("<OD>", [], status="error", error="RuntimeError: boom")],
    )
    cur = write_run(
        tmp_path / "cur",
        [record("<CAPTION>", [], status="oom", error="OutOfMemoryError: 2 GiB"), record("<OD>", noisy(rng))],
    )
    comparison = compare_dirs(base, cur)
    assert {r.verdict for r in comparison.rows} == {"not-comparable"}
    assert comparison.regressed  # <CAPTION> was ok and now runs out of memory
    assert comparison.newly_failed == ["base <CAPTION> fp32 bs1 cpu single-stream: oom: OutOfMemoryError: 2 GiB"]
    caption = next(r for r in comparison.rows if r.label.startswith("base <CAPTION>"))
    assert caption.baseline is not None and caption.current is None
    assert "counts as a regression" in caption.note
    assert "newly failed" in comparison.summary()


def test_skipped_or_fixed_cells_do_not_fail(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record("<OD>", [], status="error"), record("<OCR>", noisy(rng))])
    cur = write_run(tmp_path / "cur", [record("<OD>", noisy(rng)), record("<OCR>", [], status="skipped")])
    comparison = compare_dirs(base, cur)
    assert not comparison.regressed
    assert {r.verdict for r in comparison.rows} == {"not-comparable"}


def test_unmatched_cells_are_listed(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record("<CAPTION>", noisy(rng)), record("<OD>", noisy(rng))])
    cur = write_run(tmp_path / "cur", [record("<CAPTION>", noisy(rng)), record("<OCR>", noisy(rng))])
    comparison = compare_dirs(base, cur)
    assert comparison.unmatched_baseline == ["base <OD> fp32 bs1 cpu single-stream"]
    assert comparison.unmatched_current == ["base <OCR> fp32 bs1 cpu single-stream"]
    assert {r.label for r in comparison.rows} == {"base <CAPTION> fp32 bs1 cpu single-stream"}
    assert not comparison.regressed
    table = comparison.to_table()
    assert "cells only in the baseline:\n  base <OD> fp32 bs1 cpu single-stream" in table


def test_labels_of_cells_that_share_a_name_are_made_unique(tmp_path):
    rng = np.random.default_rng(0)
    records = [record("<OD>", noisy(rng)), record("<OD>", noisy(rng), cell_id="other", num_beams=3)]
    base = write_run(tmp_path / "base", records)
    labels = {r.label for r in compare_dirs(base, base).rows}
    assert labels == {"base <OD> fp32 bs1 cpu single-stream [id-<OD>]", "base <OD> fp32 bs1 cpu single-stream [other]"}


def test_environment_differences_are_warned(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record("<OD>", noisy(rng))])
    other = {**ENV, "torch": {**ENV["torch"], "version": "2.14.0+cpu"}, "cpu": {"model": "Other CPU"}}
    cur = write_run(tmp_path / "cur", [record("<OD>", noisy(rng))], env=other)
    warnings = compare_dirs(base, cur).env_warnings
    assert any("CPU model" in w and "Other CPU" in w for w in warnings)
    assert any("torch" in w and "2.14.0+cpu" in w for w in warnings)
    bare = write_run(tmp_path / "bare", [record("<OD>", noisy(rng))], env=None)
    assert any("no environment fingerprint" in w for w in compare_dirs(base, bare).env_warnings)


def test_records_without_samples_fall_back_to_single_values(tmp_path):
    base = write_run(tmp_path / "base", [record("<OD>", [], latency_ms={"p50": 100.0, "p90": 120.0})])
    cur = write_run(tmp_path / "cur", [record("<OD>", [], latency_ms={"p50": 130.0, "p90": 125.0})])
    rows = {r.metric: r for r in compare_dirs(base, cur).rows}
    assert rows["latency_p50"].method == "single-value"
    assert rows["latency_p50"].verdict == "regressed"
    assert rows["latency_p90"].verdict == "unchanged"
    assert rows["throughput"].verdict == "not-comparable"  # no images_per_s, no samples


def test_too_few_samples_are_inconclusive_not_regressed(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record("<OD>", noisy(rng, n=3))])
    cur = write_run(tmp_path / "cur", [record("<OD>", noisy(rng, 1.15, n=3))])
    row = next(r for r in compare_dirs(base, cur).rows if r.metric == "latency_p50")
    assert row.method == "bootstrap-median-ratio"
    assert row.verdict == "inconclusive"
    assert "more samples needed" in row.note


def test_classify_is_inconclusive_only_where_the_interval_straddles_the_threshold():
    p50, accuracy = METRICS["latency_p50"], metric_spec("accuracy.cider")
    assert classify(p50, 1.30, 0.95, 1.80, 0.10) == "inconclusive"  # +30%, but -5% cannot be ruled out
    assert classify(p50, 1.02, 0.98, 1.15, 0.10) == "inconclusive"  # near 0, but +15% cannot be ruled out
    assert classify(p50, 1.30, 1.15, 1.50, 0.10) == "regressed"
    assert classify(p50, 0.70, 0.60, 0.85, 0.10) == "improved"
    assert classify(p50, 1.02, 0.97, 1.08, 0.10) == "unchanged"
    assert classify(p50, 1.05, None, None, 0.10) == "unchanged"  # a single value has no interval to straddle
    assert classify(p50, 1.30, 0.95, 1.80, math.inf) == "unchanged"  # latency_p50=off never fails, nor is unsure
    assert classify(accuracy, -0.5, -1.5, 0.5, -1.0) == "inconclusive"  # in points: a 1.5-point drop not ruled out
    assert classify(accuracy, -0.2, -0.6, 0.3, -1.0) == "unchanged"


def _noisy_30_percent_slower(tmp_path: Path, regressed_too: bool = False) -> tuple[Path, Path]:
    """One cell measured 5 times on a noisy machine (CV ~25%), the current run 30% slower throughout;
    with ``regressed_too`` a second cell with 40 samples and a clear 50% slowdown."""
    base_x = np.array([140.0, 200.0, 260.0, 170.0, 230.0])
    base, cur = [record("<OD>", base_x)], [record("<OD>", base_x[::-1] * 1.3)]
    if regressed_too:
        rng = np.random.default_rng(0)
        base.append(record("<OCR>", noisy(rng)))
        cur.append(record("<OCR>", noisy(rng, 1.5)))
    return write_run(tmp_path / "base", base), write_run(tmp_path / "cur", cur)


def test_a_30_percent_slower_run_on_a_noisy_machine_reads_inconclusive_never_ok(tmp_path, capsys):
    from bench import cli

    base, cur = _noisy_30_percent_slower(tmp_path)
    comparison = compare_dirs(base, cur)
    rows = {row.metric: row for row in comparison.rows}
    assert rows["latency_p50"].ratio == pytest.approx(1.3)
    assert rows["latency_p50"].verdict == "inconclusive" and rows["latency_p50"].ci_low < 1.1
    assert comparison.counts()["inconclusive"] >= 2 and comparison.counts()["unchanged"] == 1  # peak memory only
    assert comparison.state == "inconclusive" and not comparison.regressed
    assert comparison.summary().startswith("INCONCLUSIVE: 0 regressed, 0 improved, 1 unchanged, ")
    md = tmp_path / "summary.md"
    # the documented exit codes: no regression is 0; strict CI makes an inconclusive verdict exit 2, never 1
    assert cli.main(["compare", str(base), str(cur), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("INCONCLUSIVE") and " inconclusive " in out
    assert md.read_text().startswith("### Regression check: INCONCLUSIVE: 0 regressed")
    assert cli.main(["compare", str(base), str(cur), "--fail-on-inconclusive"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inconclusive" in err and "latency_p50 +30.0%" in err, err
    assert "accepted:" in err
    both = tmp_path / "both"
    base, cur = _noisy_30_percent_slower(both, regressed_too=True)
    assert compare_dirs(base, cur).state == "regressed"
    assert cli.main(["compare", str(base), str(cur), "--fail-on-inconclusive"]) == 1  # a regression wins
    assert capsys.readouterr().out.startswith("REGRESSED")


def test_parse_fail_on_good_specs():
    assert parse_fail_on("latency_p50=5%,accuracy=-0.5") == {"latency_p50": 0.05, "accuracy": -0.5}
    assert parse_fail_on(" latency = 20% , peak_memory=0.25,") == {
        "latency_p50": 0.20,
        "latency_p90": 0.20,
        "peak_memory": 0.25,
    }
    assert parse_fail_on("accuracy.cider=-2,throughput=off") == {
        "accuracy.cider": -2.0,
        "throughput": math.inf,
    }
    assert parse_fail_on("accuracy=off") == {"accuracy": -math.inf}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("latency_p99=5%", ["latency_p99=5%", "latency_p50", "accuracy.<name>"]),
        ("latency_p50", ["'latency_p50'", "METRIC=VALUE"]),
        ("latency_p50=5", ["latency_p50=5", "5%"]),
        ("latency_p50=-5%", ["latency_p50=-5%", ">= 0"]),
        ("latency_p50=fast", ["latency_p50=fast", "off"]),
        ("accuracy=0.5", ["accuracy=0.5", "<= 0"]),
        ("accuracy=-1%", ["accuracy=-1%", "points"]),
        ("throughput=nan%", ["throughput=nan%"]),
    ],
)
def test_parse_fail_on_bad_specs_name_the_item(spec, words):
    with pytest.raises(UsageError) as err:
        parse_fail_on(spec)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_threshold_key_in_api_is_a_usage_error(tmp_path):
    base, cur = pair(tmp_path, 0, 1.0)
    with pytest.raises(UsageError, match="latency_p99"):
        compare_dirs(base, cur, {"latency_p99": 0.1})


def test_defaults_cover_every_metric():
    assert set(DEFAULT_THRESHOLDS) == {"latency_p50", "latency_p90", "throughput", "peak_memory", "accuracy"}
    assert DEFAULT_THRESHOLDS["accuracy"] < 0 < DEFAULT_THRESHOLDS["latency_p50"] < 0.2


def test_table_is_fixed_width(tmp_path):
    comparison = compare_dirs(*pair(tmp_path, 0, 1.25))
    lines = comparison.to_table().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("cell ")))
    table = lines[start : start + 2 + len(comparison.rows)]
    column = table[0].index("verdict")
    for line, row in zip(table[2:], comparison.rows, strict=True):
        assert line[column:].startswith(row.verdict)
    assert comparison.to_table().startswith("REGRESSED: ")


def test_markdown_has_a_table_and_escapes_task_tokens(tmp_path):
    comparison = compare_dirs(*pair(tmp_path, 0, 1.25))
    md = comparison.to_markdown()
    lines = md.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| cell |")))
    assert lines[header + 1].startswith("|---|")
    body = lines[header + 2 : header + 2 + len(comparison.rows)]
    assert all(line.count(" | ") == lines[header].count(" | ") for line in body)
    assert "`base <CAPTION> fp32 bs1 cpu single-stream`" in md
    assert "**regressed**" in md
    assert "<OD>" not in md.replace("`base <OD> fp32 bs1 cpu single-stream`", "")


def test_run_compare_prints_writes_markdown_and_exits(tmp_path, capsys):
    base, cur = pair(tmp_path, 2, 1.25)
    md = tmp_path / "summary" / "regression.md"
    assert run_compare(base, cur, "latency_p50=5%", md) == 1
    out = capsys.readouterr().out
    assert out.startswith("REGRESSED")
    assert "latency_p50 5%" in out
    assert md.read_text().startswith("### Regression check: REGRESSED")
    # the same slowdown passes when the gate is told to tolerate it
    assert run_compare(base, cur, "latency=40%,throughput=off") == 0


def test_missing_or_empty_run_dirs_name_the_path(tmp_path):
    base, _ = pair(tmp_path, 0, 1.0)
    with pytest.raises(UsageError, match="nowhere"):
        run_compare(base, tmp_path / "nowhere", None, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty"):
        run_compare(tmp_path / "empty", base, None, None)


def test_no_matched_cell_is_not_comparable_exit_2_with_one_line(tmp_path, capsys):
    """A GPU run against the CPU baseline matched nothing and used to print a green verdict."""
    from bench import cli

    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record(t, noisy(rng)) for t in TASKS])
    gpu_env = {**ENV, "gpu": {"names": ["NVIDIA H200"], "driver_version": "580.65"}}
    cur = write_run(
        tmp_path / "cur",
        [record(t, noisy(rng), cell_id=f"gpu-{t}", device="cuda", dtype="bf16") for t in TASKS],
        env=gpu_env,
    )
    comparison = compare_dirs(base, cur)
    assert comparison.rows == [] and not comparison.regressed
    line = comparison.nothing_comparable
    assert line.startswith("nothing is comparable: none of the baseline's 3 cells")
    assert "device cpu (baseline) vs cuda (current)" in line and "dtype fp32 (baseline) vs bf16 (current)" in line
    assert "GPU differs" in line and "\n" not in line
    assert comparison.summary().startswith("NOT COMPARABLE")
    md = tmp_path / "md" / "summary.md"
    with pytest.raises(UsageError) as info:
        run_compare(base, cur, None, md)
    assert str(info.value) == line
    assert "NOT COMPARABLE" in md.read_text() and "OK:" not in md.read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(base), str(cur)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "nothing is comparable" in captured.err


def test_different_machines_are_warned_at_the_top_of_the_table_and_markdown(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", [record("<OD>", noisy(rng))])
    other = {
        **ENV,
        "cpu": {"model": "Other CPU", "usable_cores": 16},
        "libraries": {"transformers": "5.30.0"},
    }
    cur = write_run(tmp_path / "cur", [record("<OD>", noisy(rng))], env=other)
    comparison = compare_dirs(base, cur)
    table = comparison.to_table().splitlines()
    assert table[0].startswith("WARNING: the runs come from different machines or software")
    for fact in ("CPU model differs", "CPU cores usable differs", "transformers differs"):
        assert fact in table[0]
    assert table[1].startswith(("OK", "REGRESSED"))
    md = comparison.to_markdown().splitlines()
    assert md[0].startswith("> **Warning:** the runs come from different machines") and "Other CPU" in md[0]
    assert md[2].startswith("### Regression check")
    # the same machine and software: no warning
    same = write_run(tmp_path / "same", [record("<OD>", noisy(rng))])
    assert compare_dirs(base, same).warnings() == []
    assert not compare_dirs(base, same).to_table().startswith("WARNING")


def test_closed_loop_throughput_counts_every_image_of_a_batch(tmp_path):
    # schema 2: an offline sample is the batch's wall time, which each of its 4 images waited
    rng = np.random.default_rng(5)
    samples = 800.0 * rng.lognormal(0.0, 0.02, N_SAMPLES)
    run = write_run(tmp_path / "run", [record("<OD>", samples, batch_size=4, scenario="offline")])
    rows = {row.metric: row for row in compare_dirs(run, run).rows}
    assert rows["throughput"].baseline == pytest.approx(4 * 1000 / float(np.median(samples)))
    assert rows["throughput"].method == "bootstrap-median-ratio"


def test_server_throughput_is_the_recorded_rate_not_one_over_latency(tmp_path):
    # a server's request latency includes queueing: 1000 / median latency is no throughput
    rng = np.random.default_rng(6)
    base = write_run(tmp_path / "base", [record("<OD>", noisy(rng), scenario="server",
                                                throughput={"images_per_s": 3.0})])
    cur = write_run(tmp_path / "cur", [record("<OD>", noisy(rng), scenario="server",
                                              throughput={"images_per_s": 2.0})])
    rows = {row.metric: row for row in compare_dirs(base, cur).rows}
    throughput = rows["throughput"]
    assert (throughput.baseline, throughput.current, throughput.method) == (3.0, 2.0, "single-value")
    assert throughput.verdict == "regressed"
    assert rows["latency_p50"].method == "bootstrap-median-ratio"

