"""The scenarios axis in sweeps and on the command line, and one real-time run on the tiny checkpoint."""

from __future__ import annotations

import json

import pytest
from sweep_helpers import write_sweep

from bench import cli, store, sweep
from bench.errors import UsageError

SERVER_FIELDS = {"target_qps", "achieved_qps", "n_requests", "duration_s", "max_batch_size", "max_queue_delay_ms",
                 "batch_size_mean", "latency_bound_ms", "valid", "invalid_reason", "curve"}


def _cells(**changes):
    return sweep.expand(sweep.SweepConfig(limit=2, **changes))


def test_without_a_scenarios_axis_batch_1_is_single_stream_and_larger_batches_offline():
    cells = _cells(batch_sizes=[1, 4])
    assert [(c.batch_size, c.scenario) for c in cells] == [(1, "single-stream"), (4, "offline")]


def test_single_stream_cells_are_made_for_batch_1_only():
    cells = _cells(batch_sizes=[1, 4], scenarios=["single-stream", "offline"])
    assert [(c.batch_size, c.scenario) for c in cells] == [(1, "single-stream"), (1, "offline"), (4, "offline")]
    assert len({c.cell_id for c in cells}) == 3  # the scenario is part of the identity


def test_a_server_cells_identity_has_its_target_load_but_not_its_run_length():
    def server_id(**server):
        (cell,) = _cells(scenarios=["server"], server=server)
        return cell.cell_id

    assert server_id(qps=2) == server_id(qps=2, min_duration_s=30, seed=4)
    assert server_id(qps=2) != server_id(qps=3) != server_id(qps="auto", latency_bound_ms=500)


def test_the_smoke_sweep_keeps_its_cells_and_procurement_searches_capacity():
    smoke = sweep.expand(sweep.load_sweep("smoke"))
    assert len(smoke) == 4 and {(c.batch_size, c.scenario) for c in smoke} == {(1, "single-stream")}
    procurement = sweep.expand(sweep.load_sweep("procurement"))
    server = [c for c in procurement if c.scenario == "server"]
    assert server and {c.batch_size for c in server} == {1, 8, 32}
    assert {(c.server.qps, c.server.latency_bound_ms) for c in server} == {("auto", 1000.0)}
    assert {c.batch_size for c in procurement if c.scenario == "single-stream"} == {1}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenarios", "single-stream", "--batch-sizes", "4,8"], "single-stream"),
        (["--scenarios", "batch"], "'batch'"),
        (["--scenarios", "server"], "--server-qps"),
        (["--scenarios", "server", "--server-qps", "auto"], "--latency-bound-ms"),
        (["--scenarios", "server", "--server-qps", "lots"], "'lots'"),
        (["--server-qps", "5"], "--scenarios"),
        (["--latency-bound-ms", "100"], "--scenarios"),
    ],
)
def test_bad_scenario_settings_exit_2_with_one_line(args, needle, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--limit", "2", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "accepted" in err[0], err
    assert not (out / store.RESULTS).exists()


def test_unknown_server_settings_in_a_sweep_file_are_refused(tiny_checkpoint, tmp_path):
    path = write_sweep(tmp_path / "s.toml", tiny_checkpoint, scenarios=["server"])
    path.write_text(path.read_text().replace("[repetition]", "[server]\nqps = 2\nburst = 3\n\n[repetition]"))
    with pytest.raises(UsageError, match="'burst'"):
        sweep.validate(sweep.load_sweep(str(path)))


def test_offline_and_server_cells_on_the_real_pipeline(tiny_checkpoint, tmp_path, capsys):
    # three requests at 0.5 QPS, arriving 1.3 s or more apart (seed 39): each is served alone
    path = write_sweep(tmp_path / "s.toml", tiny_checkpoint, batch_sizes=[2], scenarios=["offline", "server"])
    path.write_text(path.read_text().replace(
        "[repetition]", "[server]\nqps = 0.5\nmin_duration_s = 4.0\nmin_requests = 3\nseed = 39\n\n[repetition]"))
    out = tmp_path / "run"
    assert cli.main(["run", "--sweep", str(path), "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    records = {r["scenario"]: r for r in store.read_records(out)}
    offline, server = records["offline"], records["server"]
    for r in (offline, server):
        assert r["schema"] == 2 and r["status"] == "ok"
        assert r["timing"]["stages_basis"].startswith("per image, amortised")
        assert set(r["time_per_image_ms"]) == set(r["latency_ms"])
    # offline: a request waits its whole batch of 2
    assert offline["latency_ms"]["p50"] == pytest.approx(2 * offline["time_per_image_ms"]["p50"])
    assert offline["samples_ms"] and offline["server"] is None and offline["capacity_qps"] is None
    # server: the contract's fields; one request per batch; latency = queue delay + service, at least
    s = server["server"]
    assert set(s) == SERVER_FIELDS and s["curve"] == [] and server["capacity_qps"] is None
    assert s["valid"], s["invalid_reason"]
    assert s["n_requests"] == 3 == len(server["samples_ms"]) and s["batch_size_mean"] == 1.0
    assert s["target_qps"] == 0.5 and s["achieved_qps"] == pytest.approx(0.5)
    assert s["max_batch_size"] == 2 and s["max_queue_delay_ms"] == 5.0 and s["duration_s"] >= 4.0
    assert server["latency_ms"]["p50"] >= server["time_per_image_ms"]["p50"]  # each waited its own service
    assert server["throughput"]["images_per_s"] == pytest.approx(s["achieved_qps"])
    assert "valid @ 0.500 QPS" in table and "server" in table
    assert json.loads((out / store.RESULTS).read_text().splitlines()[-1])["server"]["valid"] is True
