"""The environment fingerprint: complete, JSON-serialisable, fast, never raising; and its differences."""

from __future__ import annotations

import json
import sys
import time

import pytest

from bench import environment
from bench.environment import differences, fingerprint

SECTIONS = {"timestamp_utc", "errors", "cpu", "os", "python", "libraries", "torch", "gpu", "git", "env_vars"}


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
