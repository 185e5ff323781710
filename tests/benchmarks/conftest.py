"""pytest-benchmark suites: run with `nox -s benchmarks` (JSON saved under .benchmarks/)."""

from __future__ import annotations

import pytest

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.tasks import TASKS
from bench.backends.base import GenerationSettings
from bench.backends.transformers.pipeline import TransformersPipeline
from bench.core.measure import CpuClock


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add this project's environment fingerprint (GPU names, torch and transformers versions, which
    pytest-benchmark does not record) so that `florence2-bench history add` can class the run."""
    from bench.regression.history.entries import PYTEST_BENCHMARK_ENV
    from bench.run.environment import fingerprint

    machine_info[PYTEST_BENCHMARK_ENV] = fingerprint()


@pytest.fixture(scope="session")
def make_pipeline(tiny_loaded):
    def make(token: str, new_tokens: int = 8) -> TransformersPipeline:
        return TransformersPipeline(tiny_loaded, TASKS[token], GenerationSettings(num_beams=1, max_new_tokens=new_tokens,
                                                                      forced=True),
                        device="cpu", dtype="fp32", clock=CpuClock())

    return make


@pytest.fixture(scope="session")
def smoke_samples():
    return synthetic_smoke(4)
