"""The GPU check's guards, which must work on machines where it cannot run."""

from __future__ import annotations

import importlib.util

from bench.tools import gpucheck


def test_a_missing_package_is_named_with_its_install_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "pynvml" else real(name))
    assert gpucheck.main(["/tmp/unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gpu_check: missing package(s): nvidia-ml-py; install with: pip install nvidia-ml-py"


def test_no_cuda_is_a_clear_usage_error(capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - only on GPU machines
        return
    assert gpucheck.main(["/tmp/unused"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
