"""--executor ray against a real cluster: a head and a second node started as separate `ray start`
processes on 127.0.0.1, the second node killed while it runs a task. Every cell must end exactly once
(re-run by Ray on the head, or an ``error`` record) and ``--resume`` must complete the run.

Built for a loaded 2-core CI machine: one CPU per node, small object stores, generous timeouts, and a
finaliser that kills exactly the processes this test started (found by a marker in their environment;
``ray stop`` would also stop other Ray instances of the same user on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import write_sweep

from bench.results import store
from bench.run import sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
MARKER = "FLORENCE2_BENCH_RAY_TEST"
OBJECT_STORE = str(80 * 2**20)  # Ray's minimum is 75 MiB


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes_with(marker: str, extra: str | None = None) -> list[int]:
    """Pids of this user's processes whose environment holds ``MARKER=marker`` (and ``extra``, if given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in env and (extra is None or extra.encode() in env):
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster():
    """(address, environment for drivers, the worker node's TMPDIR); torn down by pid, whatever happens."""
    pytest.importorskip("ray", reason="the optional ray extra is not installed")
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None or not Path("/proc/self/environ").exists():
        pytest.skip("needs the `ray` command and /proc")
    marker = uuid.uuid4().hex
    # a short root: Ray's unix sockets live under --temp-dir and their paths must stay under 108 bytes
    base = Path(tempfile.mkdtemp(prefix="f2b-ray-"))
    worker_tmp = base / "worker"
    worker_tmp.mkdir()
    env = {**os.environ, MARKER: marker, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "",
           # the head notices a dead node within seconds instead of ~30 s
           "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_timeout_ms": "2000", "RAY_health_check_failure_threshold": "3"}
    port, client, dash, *agents = _free_ports(11)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory",
              OBJECT_STORE, "--disable-usage-stats", "--include-log-monitor", "false"]
    head = [ray_bin, "start", "--head", "--port", str(port), "--ray-client-server-port", str(client),
            "--include-dashboard", "false", "--dashboard-port", str(dash), "--temp-dir", str(base / "r"),
            "--dashboard-agent-listen-port", str(agents[0]), "--dashboard-agent-grpc-port", str(agents[1]),
            "--metrics-export-port", str(agents[2]), "--runtime-env-agent-port", str(agents[3]), *common]
    node = [ray_bin, "start", "--address", f"127.0.0.1:{port}",
            "--dashboard-agent-listen-port", str(agents[4]), "--dashboard-agent-grpc-port", str(agents[5]),
            "--metrics-export-port", str(agents[6]), "--runtime-env-agent-port", str(agents[7]), *common]
    try:
        for argv, extra in ((head, {}), (node, {"TMPDIR": str(worker_tmp)})):
            done = subprocess.run(argv, env={**env, **extra}, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stderr[-2000:]
        yield f"127.0.0.1:{port}", env, marker, worker_tmp
    finally:
        for _ in range(3):  # processes may still be spawning children while we kill
            _kill(_processes_with(marker))
            time.sleep(0.5)
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_killed_mid_task_leaves_every_cell_once_and_resume_completes(cluster, tiny_checkpoint, tmp_path):
    address, env, marker, worker_tmp = cluster
    # two model groups (sdpa, eager): one Ray task each, one per node (each node has one CPU)
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>", "<OCR>"],
                             attn=["sdpa", "eager"])
    expected = {c.cell_id for c in sweep.expand(sweep.load_sweep(str(sweep_file)))}
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "bench", "run", "--sweep", str(sweep_file), "--out", str(out), "--quiet",
            "--executor", "ray", "--ray-address", address]
    started = time.monotonic()
    driver = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the worker node's task runs its cells in a scratch folder under that node's TMPDIR; once a cell of
        # it has finished there (its example image exists), the task is mid-way: kill the whole node
        deadline = time.monotonic() + 300
        while not list(worker_tmp.glob("florence2-bench-*/examples/*/*.png")) and time.monotonic() < deadline:
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.02)
        assert list(worker_tmp.glob("florence2-bench-*/examples")), "no task ever ran on the second node"
        node = _processes_with(marker, f"TMPDIR={worker_tmp}")
        assert node, "the second node's processes were not found"
        _kill(node)
        killed_at = time.monotonic() - started
        output, _ = driver.communicate(timeout=400)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode in (0, 1), output[-3000:]
    first = store.records(out)
    counts = Counter(r.cell_id for r in first)
    assert set(counts) == expected and set(counts.values()) == {1}, output[-3000:]  # each cell exactly once
    assert {r.status for r in first} <= {"ok", "error"}
    assert (driver.returncode == 1) == any(r.status == "error" for r in first)

    resumed = subprocess.run([*argv, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    everything = store.records(out)
    assert [r.to_dict() for r in everything[: len(first)]] == [r.to_dict() for r in first]
    latest = store.latest_by_cell(everything)
    assert set(latest) == expected and {r.status for r in latest.values()} == {"ok"}
    ok = Counter(r.cell_id for r in everything if r.status == "ok")
    assert set(ok.values()) == {1}  # finished cells were not run again
    hosts = {json.dumps(r.extra.to_dict().get("ray")) for r in everything if r.status == "ok"}
    assert hosts, "records carry where they ran"
    print(f"node killed {killed_at:.1f} s into the run; first run {sorted(Counter(r.status for r in first).items())}")
