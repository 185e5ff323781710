"""The root is arranged by layers: each package of ``bench/`` imports only the layers below it.

Lowest first: ``core`` (errors, numbers, the file door, bounds, host, statistics, trackers) knows nothing of
Florence-2; ``accuracy`` (tasks, metrics, datasets); ``backends`` (runtimes that load and run the model);
``results`` (the cell, the typed record, the store); ``scenarios`` (what is measured); ``run`` (sweep,
runner, executors); ``pages`` (rendering); ``regression`` (compare, history); ``report`` (the run's page and
its answer); then the entry points ``commands``, ``cli`` and ``tools``. A module at bench's root other than
the entry points fails the test: it belongs to a layer.
"""

from __future__ import annotations

from test_import_graph import _modules, import_graph

LAYERS = ("core", "accuracy", "backends", "results", "scenarios", "run", "pages", "regression", "report",
          "commands", "cli", "__main__", "tools")
ROOT_MODULES = {"bench", "bench.cli", "bench.__main__"}


def layer_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "bench"


def test_every_module_belongs_to_a_layer() -> None:
    stray = sorted(m for m in _modules() if m not in ROOT_MODULES and layer_of(m) not in LAYERS)
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The edges of ``graph`` that import from a higher layer."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    rank["bench"] = -1  # bench/__init__: the version, imported by anyone
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if rank[layer_of(target)] > rank[layer_of(source)])


def test_each_layer_imports_only_layers_below_it() -> None:
    found = upward(import_graph())
    assert not found, "imports from a higher layer:\n" + "\n".join(found)


def test_the_rule_names_an_upward_import_and_passes_a_downward_one() -> None:
    graph = {"bench.core.paths": {"bench.report.answer"}, "bench.report.answer": {"bench.core.paths", "bench"},
             "bench.results.store": {"bench.results.schema"}}
    assert upward(graph) == ["bench.core.paths -> bench.report.answer"]
