"""Scenarios: how requests reach the model, and so what a cell's latency means (docs/scenarios.md).

One module per scenario behind the small interface in ``base`` (``name``, ``measures``,
``cell_problem(batch_size)``, ``measure(ScenarioInput) -> Measurement``). To add one, write a module
with such a class and register an instance in ``SCENARIOS``; the sweep axis ``scenarios`` then
accepts its name.
"""

from __future__ import annotations

from bench.errors import choice_error
from bench.scenarios.base import Measurement, Scenario, ScenarioInput, ServerSettings
from bench.scenarios.offline import Offline
from bench.scenarios.server import Server
from bench.scenarios.single_stream import SingleStream

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), Server())}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise choice_error("scenario", name, SCENARIOS)
    return SCENARIOS[name]


def default_scenario(batch_size: int) -> str:
    """The scenario of a sweep that names none: today's behaviour, single-stream at batch 1, else offline."""
    return "single-stream" if batch_size == 1 else "offline"


__all__ = ["SCENARIOS", "Measurement", "Scenario", "ScenarioInput", "ServerSettings", "default_scenario",
           "get_scenario"]
