"""--executor ray on a local Ray instance: same run directory as local execution, same resume guarantees."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from sweep_helpers import write_sweep

from bench import cli
from bench.core.errors import UsageError
from bench.results import store
from bench.run import sweep
from bench.run.executors import ray as ray_executor


def test_without_ray_the_executor_names_the_extra(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    config = sweep.load_sweep(str(write_sweep(tmp_path / "s.toml", tiny_checkpoint)))
    with pytest.raises(UsageError, match=r"pip install 'florence2-bench\[ray\]'"):
        ray_executor.run_with_ray(config, sweep.expand(config), tmp_path / "run")
    assert not (tmp_path / "run" / store.RESULTS).exists()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the optional ray extra is not installed")
    ray.init(
        num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False
    )
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_an_indexed_cuda_device_is_refused(local_ray, tiny_checkpoint, tmp_path):
    config = sweep.load_sweep(str(write_sweep(tmp_path / "s.toml", tiny_checkpoint, devices=["cuda:1"])))
    with pytest.raises(UsageError, match=r"'cuda:1'.*accepted: cuda"):
        ray_executor.run_with_ray(config, sweep.expand(config), tmp_path / "run")


@pytest.mark.ray
def test_ray_sweep_matches_local_cells_contains_a_dead_task_and_resumes(
    local_ray, tiny_checkpoint, tmp_path, monkeypatch
):
    # two CPU model groups (sdpa, eager) and one CUDA group that a GPU-less cluster cannot place
    sweep_file = write_sweep(
        tmp_path / "s.toml",
        tiny_checkpoint,
        tasks=["<CAPTION>", "<OD>"],
        attn=["sdpa", "eager"],
        devices=["cpu", "cuda"],
    )
    cells = sweep.expand(sweep.load_sweep(str(sweep_file)))
    cpu = {c.cell_id: c for c in cells if c.device == "cpu"}
    eager = {i for i, c in cpu.items() if c.attn == "eager"}
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet", "--executor", "ray"]

    def dies_on_eager(config, group, num_threads):
        if group[0].attn == "eager":
            raise RuntimeError("simulated worker failure")
        import importlib  # on the worker, the real function (this one is shipped by value)

        return importlib.import_module("bench.run.executors.ray").run_group(config, group, num_threads)

    monkeypatch.setattr(ray_executor, "run_group", dies_on_eager)
    assert cli.main(args) == 1
    first = store.records(out)
    assert {r.cell_id for r in first} == {c.cell_id for c in cells}  # the same cells local execution runs
    status = {r.cell_id: r for r in first}
    for cell_id in cpu:
        record = status[cell_id]
        if cell_id in eager:
            assert record.status == "error"
            assert "Ray task failed" in record.error and "simulated worker failure" in record.error
        else:
            assert record.status == "ok" and record.latency_ms.n == 2
            assert record.extra.ray.num_threads == 1
            assert all((out / e.image_file).is_file() for e in record.examples)
    for cell in cells:
        if cell.device == "cuda":
            assert status[cell.cell_id].status == "skipped"
            assert "no GPU" in status[cell.cell_id].error

    monkeypatch.undo()
    assert cli.main([*args, "--resume"]) == 0
    everything = store.records(out)
    counts = Counter(r.cell_id for r in everything if r.status == "ok")
    assert set(counts) == set(cpu) and set(counts.values()) == {1}  # done cells were skipped, not re-run
    assert [r.to_dict() for r in everything[: len(first)]] == [r.to_dict() for r in first]
    latest = store.latest_by_cell(everything)
    assert {latest[i].status for i in cpu} == {"ok"}


def test_a_finished_task_is_read_through_the_record_door(tmp_path):
    """What a Ray task sends back (``GroupResult``: records as JSON) reaches the run directory as typed records,
    its progress lines labelled with its host and its example files inside the run."""
    from bench.results import Record

    sent = {"cell_id": "c1", "status": "ok", "latency_ms": {"p50": 10.0}, "extra": {"ray": {"host": "node-7"}}}
    result = ray_executor.GroupResult([sent], {"examples/a.png": b"png"}, ["cell 1/1 ok"], "node-7")
    got: list[Record] = []
    ray_executor._collect(tmp_path, result, got.append)
    assert got == [Record.from_dict(sent)] and got[0].latency_ms.p50 == 10.0
    assert (tmp_path / "examples" / "a.png").read_bytes() == b"png"
    assert "cell 1/1 ok [ray task on node-7]" in (tmp_path / store.PROGRESS).read_text()
