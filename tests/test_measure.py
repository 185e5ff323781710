"""The measurement layer: clocks, repetition policy, statistics and trackers (fakes stand in for GPUs)."""

from __future__ import annotations

import ast
import math
import random
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.core import measure, trackers
from bench.core.errors import UsageError
from bench.core.measure import (
    CpuClock,
    CudaClock,
    RepetitionPolicy,
    clock_for,
    matmul_gflops,
    summarize,
    time_call,
)
from bench.core.trackers import (
    CudaMemoryTracker,
    EnergyReading,
    NoEnergyTracker,
    NvmlTracker,
    RaplTracker,
    RSSTracker,
    energy_field,
    energy_tracker,
    memory_field,
    memory_trackers,
)
from bench.results import Record, plausibility

MIB = 2**20


# --- clocks ---------------------------------------------------------------------------------------


def test_cpu_clock_times_a_known_sleep_within_2_percent():
    # a sleep never ends early but may end late on a busy shared machine (scheduling delay is
    # one-sided), so the best of three attempts is compared with the known 200 ms
    readings = []
    for _ in range(3):
        outer = time.monotonic()
        _, ms = time_call(lambda: time.sleep(0.2), CpuClock())
        outer_ms = (time.monotonic() - outer) * 1000.0
        assert 199.9 <= ms <= outer_ms + 1.0  # agrees with an independent timer around the call
        readings.append(ms)
        if ms <= 204.0:
            break
    assert min(readings) == pytest.approx(200.0, rel=0.02)


class FakeStream:
    """A device timeline that advances only when fake kernels run."""

    def __init__(self):
        self.now_ms = 0.0
        self.syncs = 0


class FakeEvent:
    def __init__(self, stream_holder, enable_timing=False):
        assert enable_timing, "timing events must be created with enable_timing=True"
        self._holder, self.t = stream_holder, None

    def record(self, stream):
        self.t, self._stream = stream.now_ms, stream

    def elapsed_time(self, end):
        if self._stream.syncs == 0:
            raise RuntimeError("event not completed: elapsed_time before synchronisation")
        return end.t - self.t


@pytest.fixture
def fake_cuda(monkeypatch):
    stream = FakeStream()
    monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: FakeEvent(stream, enable_timing))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)

    def synchronize(device=None):
        stream.syncs += 1

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    return stream


def test_cuda_clock_uses_device_events_and_one_sync(fake_cuda):
    clock = clock_for("cuda:0")
    assert isinstance(clock, CudaClock)

    def kernel():
        fake_cuda.now_ms += 37.5  # queued device work; the host returns at once
        return "out"

    out, ms = time_call(kernel, clock)
    assert (out, ms, fake_cuda.syncs) == ("out", 37.5, 1)


def test_cuda_clock_elapsed_needs_the_sync(fake_cuda):
    clock = CudaClock("cuda")
    start, end = clock.mark(), clock.mark()
    with pytest.raises(RuntimeError, match="before synchronisation"):
        clock.elapsed_ms(start, end)
    clock.sync()
    assert clock.elapsed_ms(start, end) == 0.0


def test_mps_clock_synchronises_at_each_mark(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: syncs.append(1))
    _, ms = time_call(lambda: time.sleep(0.01), clock_for("mps"))
    assert len(syncs) == 2 and ms >= 10.0


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0:1"])
def test_clock_for_rejects_unknown_devices(device):
    with pytest.raises(UsageError, match="accepted"):
        clock_for(device)


# --- repetition policy ------------------------------------------------------------------------------


def test_policy_defaults_per_device():
    cpu, gpu = RepetitionPolicy.for_device("cpu"), RepetitionPolicy.for_device("cuda:1")
    assert (cpu.warmup, cpu.min_iterations, cpu.min_duration_s, cpu.max_iterations) == (1, 3, 0.0, 50)
    assert (gpu.warmup, gpu.min_iterations, gpu.min_duration_s, gpu.max_iterations) == (3, 10, 2.0, 500)


@pytest.mark.parametrize(
    ("n_done", "elapsed_s", "expected"),
    [
        (0, 0.0, True),
        (9, 60.0, True),  # long enough, too few
        (10, 1.9, True),  # enough, too short
        (10, 2.0, False),  # both met
        (499, 0.5, True),
        (500, 0.5, False),  # never past max, even when too short
    ],
)
def test_policy_needs_both_count_and_duration(n_done, elapsed_s, expected):
    assert RepetitionPolicy.for_device("cuda").should_continue(n_done, elapsed_s) is expected


def test_policy_cpu_stops_after_min_iterations_without_duration():
    policy = RepetitionPolicy.for_device("cpu")
    assert [policy.should_continue(n, 0.0) for n in range(5)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    "kwargs",
    [dict(min_iterations=0), dict(max_iterations=2, min_iterations=3), dict(warmup=-1), dict(cv_threshold=0)],
)
def test_policy_rejects_bad_settings(kwargs):
    settings = dict(warmup=1, min_iterations=3, min_duration_s=0.0, max_iterations=50, cv_threshold=0.1)
    with pytest.raises(UsageError, match="accepted"):
        RepetitionPolicy(**{**settings, **kwargs})


# --- statistics ---------------------------------------------------------------------------------------


def test_summarize_known_answers():
    samples = list(range(1, 11))
    random.Random(0).shuffle(samples)
    stats = summarize(samples)
    assert stats.n == 10
    assert stats.mean == pytest.approx(5.5)
    assert stats.std == pytest.approx(math.sqrt(82.5 / 9))  # ddof=1
    # linear interpolation at rank q*(n-1): p90 -> 8.1 -> 9.1
    assert (stats.p50, stats.p90, stats.p95, stats.p99) == pytest.approx((5.5, 9.1, 9.55, 9.91))
    # n=10: P(B<=1) = 11/1024, 2*that = 2.1% <= 5%; P(B<=2) = 56/1024 too large -> [x_(2), x_(9)]
    assert (stats.ci95_low, stats.ci95_high) == (2.0, 9.0)
    assert stats.ci_method.startswith("binomial")
    assert stats.cv == pytest.approx(math.sqrt(82.5 / 9) / 5.5)
    assert stats.unstable is True
    assert summarize(samples, cv_threshold=0.6).unstable is False
    assert set(stats.to_dict()) >= {"mean", "std", "p50", "p90", "p95", "p99", "n", "ci95_low", "ci95_high"}


def test_median_ci_for_n_100_matches_the_published_table():
    # tables of the sign-test interval give ranks 40 and 61 for n=100 at 95%
    stats = summarize([float(v) for v in range(1, 101)])
    assert (stats.ci95_low, stats.ci95_high) == (40.0, 61.0)


def test_median_ci_falls_back_to_min_max_for_tiny_n():
    five = summarize([3.0, 1.0, 2.0, 5.0, 4.0])  # [min, max] covers only 93.75% at n=5
    assert (five.ci95_low, five.ci95_high) == (1.0, 5.0)
    assert "min-max" in five.ci_method
    six = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 1 - 2/64 = 96.9%: a real 95% interval
    assert (six.ci95_low, six.ci95_high, six.ci_method.startswith("binomial")) == (1.0, 6.0, True)


def test_summarize_single_and_empty():
    one = summarize([12.5])
    assert (one.std, one.cv, one.unstable, one.ci95_low, one.ci95_high) == (0.0, 0.0, False, 12.5, 12.5)
    with pytest.raises(ValueError):
        summarize([])


# --- memory -------------------------------------------------------------------------------------------


def _touch(n_bytes: int) -> np.ndarray:
    buf = np.empty(n_bytes, dtype=np.uint8)
    buf[::4096] = 1  # write to every page so it becomes resident
    return buf


@pytest.mark.parametrize("method", ["vmhwm-reset", "sampled"])
def test_rss_peak_of_a_500_mib_buffer_within_10_percent(method):
    if method == "vmhwm-reset" and not RSSTracker()._try_reset_hwm():
        pytest.skip("VmHWM cannot be reset here")
    with RSSTracker(method=method) as tracker:
        buf = _touch(500 * MIB)
        time.sleep(0.02)  # lets the sampler see it; the VmHWM method needs no such help
        del buf
    result = tracker.result()
    assert result["method"] == method
    assert result["peak_rss_bytes"] - result["rss_before_bytes"] == pytest.approx(500 * MIB, rel=0.10)


def test_rss_peak_is_reset_per_span():
    tracker = RSSTracker()
    with tracker:
        del_me = _touch(300 * MIB)
        del del_me
    first = tracker.result()
    with tracker:
        pass
    second = tracker.result()
    assert first["peak_rss_bytes"] - first["rss_before_bytes"] > 250 * MIB
    assert second["peak_rss_bytes"] - second["rss_before_bytes"] < 50 * MIB


def test_rss_falls_back_to_sampling_without_clear_refs(tmp_path):
    tracker = RSSTracker(proc=str(tmp_path))  # no status file: the kernel mark cannot be used
    with tracker:
        pass
    assert tracker.result()["method"] == "sampled"
    assert tracker.result()["peak_rss_bytes"] >= tracker.result()["rss_before_bytes"] > 0


def test_cuda_memory_tracker_is_null_off_cuda_and_resets_on_cuda(monkeypatch):
    with CudaMemoryTracker("cpu") as off:
        pass
    assert off.result() == {"cuda_peak_allocated_bytes": None, "cuda_peak_reserved_bytes": None}

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * MIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d: 4 * MIB)
    tracker = CudaMemoryTracker("cuda:1")
    tracker.start()
    assert calls == [("reset", "cuda:1")]
    tracker.stop()
    assert tracker.result() == {"cuda_peak_allocated_bytes": 3 * MIB, "cuda_peak_reserved_bytes": 4 * MIB}


def test_memory_field_merges_tracker_results():
    field = memory_field(
        [
            {"peak_rss_bytes": 5, "rss_before_bytes": 1, "method": "sampled"},
            {"cuda_peak_allocated_bytes": None},
        ],
        weights_bytes=7,
    )
    assert field == {
        "peak_rss_bytes": 5,
        "cuda_peak_allocated_bytes": None,
        "cuda_peak_reserved_bytes": None,
        "nvml_peak_used_bytes": None,
        "weights_bytes": 7,
    }


# --- NVML (fake module) -------------------------------------------------------------------------------


class FakeNvml(types.ModuleType):
    """A GPU drawing 50 W idle and 300 W busy, with an energy counter integrating real time."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, energy_counter=True, init_error=None):
        super().__init__("pynvml")
        self.energy_counter, self.init_error = energy_counter, init_error
        self.busy, self.used, self.shutdowns, self.busy_s = False, 1_000_000_000, 0, 0.0
        self._energy_mj, self._t = 5_000_000.0, time.perf_counter()

    def _watts(self):
        return 300.0 if self.busy else 50.0

    def _advance(self):
        now = time.perf_counter()
        self._energy_mj += self._watts() * (now - self._t) * 1000.0
        self._t = now

    def set_busy(self, busy):
        self._advance()
        if busy:
            self._busy_since = self._t
        else:
            self.busy_s += self._t - self._busy_since
        self.busy = busy

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self._watts() * 1000)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used, total=80_000_000_000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_counter:
            raise self.NVMLError_NotSupported("Not Supported")
        self._advance()
        return int(self._energy_mj)


def _busy_span(fake, tracker):
    outer = time.perf_counter()
    tracker.start()
    fake.set_busy(True)
    fake.used = 7_000_000_000
    time.sleep(0.1)
    fake.used = 2_000_000_000
    time.sleep(0.1)
    fake.set_busy(False)
    tracker.stop()
    outer = time.perf_counter() - outer
    result = tracker.result()
    # the busy span is timed, the idle phase (at least idle_s long, before the span) is not
    assert fake.busy_s <= result.duration_s <= outer - tracker.idle_s
    return result


@pytest.mark.parametrize(
    ("counter", "source", "rel"),
    [(True, "nvml-total-energy-counter", 0.02), (False, "nvml-power-integral", 0.05)],
)
def test_nvml_tracker_energy_peak_and_idle(monkeypatch, counter, source, rel):
    fake = FakeNvml(energy_counter=counter)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    result = _busy_span(fake, NvmlTracker(device_index=0, interval_s=0.002, idle_s=0.05))
    assert result.reason is None
    assert result.energy_source == source
    # true energy of the span: 50 W throughout plus 250 W more while busy
    assert result.energy_j == pytest.approx(50.0 * result.duration_s + 250.0 * fake.busy_s, rel=rel)
    assert result.idle_power_w == 50.0
    assert result.idle_energy_j == pytest.approx(50.0 * result.duration_s)
    assert result.nvml_peak_used_bytes == 7_000_000_000
    assert memory_field([result.memory()], None)["nvml_peak_used_bytes"] == 7_000_000_000
    assert fake.shutdowns == 1

    field = energy_field(result, n_images=4)
    assert field["joules_per_image"] == pytest.approx(result.energy_j / 4)
    assert field["joules_per_image_above_idle"] == pytest.approx(250.0 * fake.busy_s / 4, rel=rel)
    assert (field["idle_power_w"], field["source"]) == (50.0, source)


@pytest.mark.parametrize(
    ("module", "reason"),
    [(None, "pynvml not installed"), (FakeNvml(init_error="Driver Not Loaded"), "Driver Not Loaded")],
)
def test_nvml_tracker_without_driver_is_a_clean_null(monkeypatch, module, reason):
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with NvmlTracker(idle_s=0.0) as tracker:
        pass
    result = tracker.result()
    assert reason in result.reason
    assert result == EnergyReading(reason=result.reason)  # every figure None
    field = energy_field(result, n_images=4)
    assert field["joules_per_image"] is None
    assert reason in field["source"]


# --- RAPL (fake sysfs) ----------------------------------------------------------------------------------

MAX_UJ = 262_143_328_850


def _zone(root, name, energy_uj):
    zone = root / name
    zone.mkdir(exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")


def test_rapl_sums_packages_and_handles_wraparound(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 1_000_000)
    _zone(tmp_path, "intel-rapl:1", MAX_UJ - 1_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 0)  # a subzone (core) of package 0: must not be added again
    tracker = RaplTracker(root=tmp_path, idle_s=0.02)
    tracker.start()
    _zone(tmp_path, "intel-rapl:0", 3_000_000)  # +2 J
    _zone(tmp_path, "intel-rapl:1", 500_000)  # wrapped: +1.5 J
    _zone(tmp_path, "intel-rapl:0:0", 100_000_000)
    tracker.stop()
    result = tracker.result()
    assert result.energy_j == pytest.approx(3.5)
    assert (result.energy_source, result.reason) == ("rapl-package", None)
    assert (result.idle_power_w, result.idle_energy_j) == (0.0, 0.0)  # counters did not move while idle
    assert energy_field(result, n_images=7)["joules_per_image"] == pytest.approx(0.5)


def test_rapl_unreadable_gives_reason(tmp_path):
    with RaplTracker(root=tmp_path / "powercap", idle_s=0) as absent:
        pass
    assert absent.result().energy_j is None
    assert absent.result().reason == f"RAPL not readable: {tmp_path / 'powercap'} absent"
    (tmp_path / "intel-rapl:0").mkdir()  # a zone whose counter cannot be read
    with RaplTracker(root=tmp_path, idle_s=0) as broken:
        pass
    assert broken.result().reason.startswith("RAPL not readable")
    assert energy_field(broken.result(), 3)["source"].startswith("RAPL not readable")


def test_factories_pick_trackers_per_device():
    assert isinstance(energy_tracker("cpu"), RaplTracker)
    cuda = energy_tracker("cuda:1")
    assert isinstance(cuda, NvmlTracker) and cuda.device_index == 1
    mps = energy_tracker("mps")
    assert isinstance(mps, NoEnergyTracker) and "mps" in mps.result().reason
    assert [type(t) for t in memory_trackers("cuda")] == [RSSTracker, CudaMemoryTracker]


# --- roofline and plausibility ----------------------------------------------------------------------------


def test_matmul_gflops_on_cpu_is_a_positive_rate():
    gflops = matmul_gflops("cpu", "fp32", n=128, seconds=0.05)
    assert math.isfinite(gflops) and gflops > 0
    with pytest.raises(UsageError, match="accepted"):
        matmul_gflops("cpu", "fp8", n=8)


def _good_cuda_record():
    return {
        "cell_id": "c",
        "status": "ok",
        "device": "cuda:0",
        "latency_ms": {"mean": 100.0, "p50": 99.0, "p90": 110.0, "p95": 112.0, "p99": 120.0, "n": 3},
        "samples_ms": [95.0, 99.0, 106.0],
        "stages_ms": {"preprocess": 2.0, "vision": 10.0, "ttft": 15.0, "per_token": 3.0, "decode": 80.0},
        "throughput": {"images_per_s": 10.0, "tokens_per_s": 300.0},
        "memory": {
            "peak_rss_bytes": 3 * 10**9,
            "cuda_peak_allocated_bytes": 2 * 10**9,
            "cuda_peak_reserved_bytes": 25 * 10**8,
            "nvml_peak_used_bytes": 3 * 10**9,
            "weights_bytes": 10**9,
        },
        "energy": {"joules_per_image": 30.0, "source": "nvml-total-energy-counter"},  # 300 W
    }


def _problems(record: dict) -> list[str]:
    return plausibility.problems(Record.from_dict(record))


def test_a_plausible_cuda_record_has_no_problems():
    assert _problems(_good_cuda_record()) == []


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("latency_ms", "p50", None, "latency_ms.p50"),
        ("latency_ms", "mean", 0.0, "latency_ms.mean"),
        ("stages_ms", "vision", -1.0, "stages_ms.vision"),
        ("stages_ms", "ttft", -0.5, "stages_ms.ttft"),
        ("throughput", "images_per_s", 0, "images_per_s"),
        ("memory", "cuda_peak_allocated_bytes", 5 * 10**8, "not above the weights"),
        ("memory", "nvml_peak_used_bytes", 10**9, "below torch's reserved"),
        ("memory", "nvml_peak_used_bytes", None, "nvml_peak_used_bytes"),
        ("energy", "joules_per_image", None, "joules_per_image"),
        ("energy", "joules_per_image", -3.0, "joules_per_image"),
        ("energy", "joules_per_image", 300.0, "3000.0 W"),
        ("energy", "joules_per_image", 0.05, "0.5 W"),
    ],
)
def test_implausible_cuda_records_are_named(section, key, value, expected):
    record = _good_cuda_record()
    record[section][key] = value
    problems = _problems(record)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_stage_the_backend_does_not_time_is_not_a_problem():
    record = _good_cuda_record()
    del record["stages_ms"]["ttft"]  # a backend that times fewer stages (bench.backends.base)
    record["stages_ms"]["postprocess"] = None
    assert _problems(record) == []


def test_plausibility_flags_samples_device_and_status():
    record = _good_cuda_record()
    record["samples_ms"] = [95.0, 0.0]
    record["device"] = "cpu"
    assert len(_problems(record)) == 2
    assert _problems({**record, "status": "oom", "error": "OutOfMemoryError"}) == [
        "status is 'oom': OutOfMemoryError"
    ]


@pytest.mark.parametrize("module", [measure, trackers])
def test_measure_imports_no_model_code(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    third_party = {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names)
    assert third_party <= {"numpy", "torch", "psutil", "pynvml", "bench"}
    # its errors, the file door (the peak-memory reset writes /proc through it), which imports only the errors,
    # and (the trackers) the measurement layer's device names
    allowed = {"bench.core.errors", "bench.core.paths", "bench.core.measure"}
    assert {name for name in imported if name.startswith("bench.")} <= allowed
    door = ast.parse(Path(measure.__file__).with_name("paths.py").read_text())
    assert {n.module for n in ast.walk(door) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
        "bench")} == {"bench.core.errors"}
