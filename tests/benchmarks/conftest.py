"""pytest-benchmark suites: run with `nox -s benchmarks` (JSON saved under .benchmarks/)."""

from __future__ import annotations

import pytest

from bench.data import synthetic_smoke
from bench.measure import CpuClock
from bench.pipeline import GenerationSettings, Pipeline
from bench.tasks import TASKS


@pytest.fixture(scope="session")
def make_pipeline(tiny_loaded):
    def make(token: str, new_tokens: int = 8) -> Pipeline:
        return Pipeline(tiny_loaded, TASKS[token], GenerationSettings(num_beams=1, max_new_tokens=new_tokens,
                                                                      forced=True),
                        device="cpu", dtype="fp32", clock=CpuClock())

    return make


@pytest.fixture(scope="session")
def smoke_samples():
    return synthetic_smoke(4)
