"""Scenarios: how requests reach the model, and so what a cell's latency means (docs/scenarios.md).

One module per scenario behind the small interface in ``base`` (``name``, ``measures``, ``traits``,
``cell_problem(batch_size)``, ``measure(ScenarioInput) -> Measurement``). To add one, write a module
with such a class and register an instance in ``SCENARIOS``; the sweep axis ``scenarios`` then
accepts its name, and every reader of records judges its cells by its ``traits`` (``traits_of``).

A load generator decides who issues the requests (``LOAD_GENERATORS``): ``builtin``, this project's
own loops, or ``mlperf``, the official MLPerf LoadGen driving the same batcher and pipeline
(``bench.scenarios.mlperf``; docs/scenarios.md, "Load generators").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.core.errors import choice_error
from bench.results import Record, Server
from bench.scenarios import mlperf
from bench.scenarios.base import Measurement, Scenario, ScenarioInput, ServerSettings
from bench.scenarios.offline import Offline
from bench.scenarios.server import Server as ServerScenario
from bench.scenarios.single_stream import SingleStream
from bench.scenarios.traits import UNKNOWN, ScenarioTraits

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), ServerScenario())}


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


def traits_for(scenario: object, batch_size: object, server: Server | None = None) -> ScenarioTraits:
    """How a cell of this scenario and batch size is judged (a cell without a scenario predates the axis and
    ran the default one), with the percentile its ``server`` table judges; ``UNKNOWN`` for a scenario this
    version does not know (records are untrusted input, so neither argument is trusted to be what it says)."""
    if not scenario:
        scenario = default_scenario(batch_size if isinstance(batch_size, int) else 1)
    found = SCENARIOS.get(scenario) if isinstance(scenario, str) else None
    return UNKNOWN if found is None else found.traits.with_percentile(server)


def traits_of(record: Record) -> ScenarioTraits:
    """How a record's cell is judged: its scenario's traits, with the percentile its server settings judge."""
    return traits_for(record.scenario, record.batch_size, record.server)


def takes_load(names: Iterable[str]) -> bool:
    """Whether any of these scenarios runs under an offered load (open loop), so needs the [server]
    settings; names this version does not know are left to ``get_scenario`` to refuse."""
    return any(not SCENARIOS[n].traits.closed_loop for n in names if n in SCENARIOS)


__all__ = ["DEFAULT_LOAD_GENERATOR", "LOAD_GENERATORS", "SCENARIOS", "LoadGenerator", "Measurement", "Scenario",
           "ScenarioInput", "ScenarioTraits", "ServerSettings", "default_scenario", "get_load_generator",
           "get_scenario", "takes_load", "traits_for", "traits_of"]
