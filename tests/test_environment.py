"""The environment fingerprint: complete, JSON-serialisable, fast, never raising; and its differences.
The host's own state (bench.core.host): load, frequency governor, torch threads."""

from __future__ import annotations

import json
import sys
import time

import pytest

from bench.core import host
from bench.core.errors import UsageError
from bench.run import environment
from bench.run.environment import differences, fingerprint

SECTIONS = {"timestamp_utc", "errors", "cpu", "os", "python", "libraries", "torch", "gpu", "git", "env_vars",
            "cpu_governor"}


def test_fingerprint_has_every_section_and_is_json():
    env = fingerprint()
    assert SECTIONS | {"hostname"} <= set(env)
    json.dumps(env)  # no default= needed: plain JSON types only
    assert env["cpu"]["logical_cores"] >= 1 and env["cpu"]["ram_bytes"] > 0
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE"} <= set(env["env_vars"])
    assert {"version", "cuda", "cudnn", "num_threads", "num_interop_threads"} <= set(env["torch"])
    for section, value in env.items():
        if value is None:  # each missing section says why
            assert env["errors"][section]


def test_fingerprint_is_fast():
    fingerprint()  # first call pays the imports
    start = time.perf_counter()
    fingerprint()
    assert time.perf_counter() - start < 1.0


def test_a_failing_probe_becomes_null_with_a_reason(monkeypatch):
    def broken():
        raise OSError("no /proc here")

    monkeypatch.setitem(environment.PROBES, "cpu", broken)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    env = fingerprint()
    assert env["cpu"] is None and env["errors"]["cpu"] == "OSError: no /proc here"
    assert env["gpu"] is None and "pynvml" in env["errors"]["gpu"]
    assert env["os"] is not None


def test_git_outside_a_repository_is_null(monkeypatch, tmp_path):
    monkeypatch.setattr(environment, "REPO_ROOT", tmp_path)
    env = fingerprint()
    assert env["git"] is None and env["errors"]["git"]


def _env(**overrides):
    env = {
        "cpu": {"model": "AMD EPYC 9654"},
        "gpu": {"names": ["NVIDIA H100 80GB HBM3"], "driver_version": "550.54"},
        "torch": {"version": "2.5.1", "cuda": "12.4", "cudnn": 90100, "num_threads": 16},
        "libraries": {"transformers": "5.23.0"},
    }
    for path, value in overrides.items():
        section, key = path.split("__")
        env[section][key] = value
    return env


def test_identical_environments_have_no_differences():
    assert differences(_env(), _env()) == []


@pytest.mark.parametrize(
    ("path", "value", "label"),
    [
        ("cpu__model", "Intel Xeon 8480", "CPU model"),
        ("gpu__names", ["NVIDIA A100"], "GPU"),
        ("gpu__driver_version", "560.1", "NVIDIA driver"),
        ("torch__version", "2.6.0", "torch"),
        ("libraries__transformers", "5.24.0", "transformers"),
        ("torch__cuda", "12.8", "CUDA"),
    ],
)
def test_differences_name_what_changed(path, value, label):
    warnings = differences(_env(), _env(**{path: value}))
    assert len(warnings) == 1 and warnings[0].startswith(label) and repr(value) in warnings[0]


def test_differences_with_a_missing_fingerprint():
    assert "baseline" in differences({}, _env())[0]
    assert differences(_env(), {"gpu": None, "cpu": {"model": "AMD EPYC 9654"}})  # no GPU now: a warning


# --- host state: load, governor, torch threads (bench.core.host) ----------------------------------------


def _sysfs(root, governors):
    for cpu, name in governors.items():
        folder = root / cpu / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(name + "\n")
    return root


def test_the_governor_is_one_name_when_cores_agree_and_each_core_when_not(tmp_path):
    same = _sysfs(tmp_path / "a", {"cpu0": "performance", "cpu1": "performance"})
    assert host.governor(same) == {"governor": "performance", "reason": None}
    mixed = _sysfs(tmp_path / "b", {"cpu0": "performance", "cpu10": "powersave", "cpu2": "powersave"})
    assert host.governor(mixed)["governor"] == "cpu0=performance, cpu2=powersave, cpu10=powersave"


def test_an_unreadable_governor_is_null_with_the_reason(tmp_path):
    found = host.governor(tmp_path)
    assert found["governor"] is None and "scaling_governor" in found["reason"]
    assert "governor" in fingerprint()["cpu_governor"]


def test_host_load_reads_the_injected_source_and_judges_busy_on_the_one_minute_figure():
    idle = host.host_load(lambda: (0.4, 2.0, 3.0), cores=2)
    assert idle == {"cores": 2, "start": [0.4, 2.0, 3.0], "end": None}
    assert not host.busy(idle) and host.busy_warning(idle) is None  # 5- and 15-minute loads do not count
    loaded = host.host_load(lambda: (1.5, 0.1, 0.1), cores=2)
    assert host.busy(loaded)
    assert host.busy_warning(loaded) == ("the machine is busy: load 1.50 on 2 cores; figures may be slow and "
                                         "unstable")
    assert host.busy({**idle, "end": [7.0, 1.0, 1.0]}, "end") and not host.busy({**idle, "end": None}, "end")


def test_a_system_without_a_load_average_records_none():
    def unavailable():
        raise OSError("no load average")

    assert host.host_load(unavailable, cores=4)["start"] is None
    assert not host.busy(host.host_load(unavailable, cores=4))


@pytest.mark.parametrize("load", [None, "busy", {"start": "x"}, {"start": [True]}, {"start": [], "cores": 2},
                                  {"start": [9.0], "cores": "2"}])
def test_a_damaged_host_load_is_not_read_as_busy_or_shown(load):
    assert not host.busy(load)
    assert host.describe_load(load) is None or "busy" not in host.describe_load(load)


def test_describe_load_names_start_end_and_a_busy_machine():
    text = host.describe_load({"cores": 4, "start": [0.5, 0, 0], "end": [3.5, 0, 0]})
    assert text == "1-min load 0.50 at start, 3.50 at end, on 4 cores (busy at end)"


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("3", 3), (2, 2)])
def test_threads_values(value, parsed):
    assert host.parse_threads(value) == parsed


@pytest.mark.parametrize("value", ["0", "-1", "two", 0, True, 1.5, "all"])
def test_bad_threads_values_are_refused_naming_the_value(value):
    with pytest.raises(UsageError, match=r"bad threads value .*accepted: auto or an integer >= 1"):
        host.parse_threads(value)


def test_torch_threads_are_set_for_the_cell_and_restored_after():
    import torch

    before = torch.get_num_threads()
    with host.torch_threads(before + 1) as used:
        assert used == torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with host.torch_threads("auto") as used:
        assert used == before
    with pytest.raises(RuntimeError), host.torch_threads(before + 2):
        raise RuntimeError("a failing cell")
    assert torch.get_num_threads() == before
    assert host.oversubscribed([1, "auto", 3, 8], cores=2) == [3, 8]
