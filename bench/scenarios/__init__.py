"""Scenarios: how requests reach the model, and so what a cell's latency means (docs/scenarios.md).

One module per scenario behind the small interface in ``base`` (``name``, ``measures``,
``cell_problem(batch_size)``, ``measure(ScenarioInput) -> Measurement``). To add one, write a module
with such a class and register an instance in ``SCENARIOS``; the sweep axis ``scenarios`` then
accepts its name.

A load generator decides who issues the requests (``LOAD_GENERATORS``): ``builtin``, this project's
own loops, or ``mlperf``, the official MLPerf LoadGen driving the same batcher and pipeline
(``bench.scenarios.mlperf``; docs/scenarios.md, "Load generators").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import choice_error
from bench.scenarios import mlperf
from bench.scenarios.base import Measurement, Scenario, ScenarioInput, ServerSettings
from bench.scenarios.offline import Offline
from bench.scenarios.server import Server
from bench.scenarios.single_stream import SingleStream

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), Server())}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise choice_error("scenario", name, SCENARIOS)
    return SCENARIOS[name]


@dataclass(frozen=True)
class LoadGenerator:
    """Who issues a cell's requests: ``measure(scenario, run)``, and why it cannot run here (None: it can)."""

    name: str
    measure: Callable[[str, ScenarioInput], Measurement]
    unavailable: Callable[[], str | None]


LOAD_GENERATORS: dict[str, LoadGenerator] = {g.name: g for g in (
    LoadGenerator("builtin", lambda scenario, run: get_scenario(scenario).measure(run), lambda: None),
    LoadGenerator("mlperf", mlperf.measure, mlperf.unavailable_reason),
)}
DEFAULT_LOAD_GENERATOR = "builtin"


def get_load_generator(name: str) -> LoadGenerator:
    if name not in LOAD_GENERATORS:
        raise choice_error("load generator", name, LOAD_GENERATORS)
    return LOAD_GENERATORS[name]


def default_scenario(batch_size: int) -> str:
    """The scenario of a sweep that names none: today's behaviour, single-stream at batch 1, else offline."""
    return "single-stream" if batch_size == 1 else "offline"


__all__ = ["DEFAULT_LOAD_GENERATOR", "LOAD_GENERATORS", "SCENARIOS", "LoadGenerator", "Measurement", "Scenario",
           "ScenarioInput", "ServerSettings", "default_scenario", "get_load_generator", "get_scenario"]
