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


def test_skipped_cells_are_named_and_implausible_ones_counted(capsys):
    from bench.results import Record

    common = {"variant": "base", "task": "<CAPTION>", "dataset": "synthetic-smoke", "n_images": 2, "dtype": "fp16",
              "batch_size": 8, "attn": "sdpa", "compile": False, "num_beams": 3, "checkpoint": "random:base",
              "weights": "random", "max_new_tokens": 20}
    skipped = Record.from_dict({**common, "cell_id": "a", "status": "skipped", "device": "cuda",
                                "error": "not run: 3 s of the GPU check's 60 s budget left"})
    on_cpu = Record.from_dict({**common, "cell_id": "b", "status": "ok", "device": "cpu"})
    assert gpucheck.implausible([skipped, on_cpu]) == 1
    out = capsys.readouterr().out
    assert "skipped base fp16 bs8: not run: 3 s of the GPU check's 60 s budget left" in out
    assert "IMPLAUSIBLE base fp16 bs8: device 'cpu' is not CUDA" in out
