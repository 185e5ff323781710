"""Scenarios: how requests reach the model, and so what a cell's latency means (docs/scenarios.md).

One module per scenario behind the small interface in ``base`` (``name``, ``measures``, ``traits``,
``cell_problem(batch_size)``, ``measure(ScenarioInput) -> Measurement``). To add one, write a module
with such a class and register an instance in ``SCENARIOS``; the sweep axis ``scenarios`` then
accepts its name, and every reader of records judges its cells by its ``traits`` (``traits_of``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.errors import choice_error
from bench.scenarios.base import Measurement, Scenario, ScenarioInput, ServerSettings
from bench.scenarios.offline import Offline
from bench.scenarios.server import Server
from bench.scenarios.single_stream import SingleStream
from bench.scenarios.traits import UNKNOWN, ScenarioTraits

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), Server())}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise choice_error("scenario", name, SCENARIOS)
    return SCENARIOS[name]


def default_scenario(batch_size: int) -> str:
    """The scenario of a sweep that names none: today's behaviour, single-stream at batch 1, else offline."""
    return "single-stream" if batch_size == 1 else "offline"


def traits_of(record: dict[str, Any]) -> ScenarioTraits:
    """How a record's cell is judged: its scenario's traits (a record without a scenario predates the axis
    and ran the default one), with the percentile its server settings judge; ``UNKNOWN`` for a scenario
    this version does not know (records are untrusted input)."""
    name, batch = record.get("scenario"), record.get("batch_size")
    if not name:
        name = default_scenario(batch if isinstance(batch, int) else 1)
    scenario = SCENARIOS.get(name) if isinstance(name, str) else None
    return UNKNOWN if scenario is None else scenario.traits.with_percentile(record.get("server"))


def takes_load(names: Iterable[str]) -> bool:
    """Whether any of these scenarios runs under an offered load (open loop), so needs the [server]
    settings; names this version does not know are left to ``get_scenario`` to refuse."""
    return any(not SCENARIOS[n].traits.closed_loop for n in names if n in SCENARIOS)


__all__ = ["SCENARIOS", "Measurement", "Scenario", "ScenarioInput", "ScenarioTraits", "ServerSettings",
           "default_scenario", "get_scenario", "takes_load", "traits_of"]
