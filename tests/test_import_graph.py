"""Data flows one way: the graph of imports between bench modules has no cycle.

Every ``import`` and ``from ... import`` in every bench module counts, including those inside functions
(a lazy import hides a cycle from the interpreter, not from the design). ``from bench.pkg import name``
counts as importing ``bench.pkg.name`` when that is a module, else ``bench.pkg``. The implicit import of a
package's ``__init__`` when one of its submodules is imported is not an edge (a package that registers its
submodules would otherwise always be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in BENCH.rglob("*.py"):
        parts = path.relative_to(BENCH.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_bench_import_graph_is_acyclic():
    graph = import_graph()
    assert {"bench.run.sweep", "bench.run.runner", "bench.run.executors.ray", "bench.run.executors", "bench.scenarios.server"} <= set(graph)
    assert "bench.run.runner" in graph["bench.run.executors.ray"] and "bench.run.executors" in graph["bench.run.sweep"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_lazy_cycle():
    # the shape this project once had: sweep imported distributed inside a function, and distributed sweep
    graph = {"bench.run.sweep": {"bench.run.executors.ray", "bench.results.store"}, "bench.run.executors.ray": {"bench.run.sweep"},
             "bench.results.store": set()}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"bench.run.sweep", "bench.run.executors.ray"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_a_cell_sits_below_the_scenarios():
    # the sweep, the executors and the runner hold cells; importing a cell must not import the scenarios
    # (and through them the pipeline): only the settings it carries, which live apart from them
    graph = import_graph()
    below = reachable(graph, "bench.results.cell")
    assert "bench.results.server_settings" in below
    assert not {m for m in below if m == "bench.scenarios" or m.startswith("bench.scenarios.")}, sorted(below)
    assert "bench.scenarios" in reachable(graph, "bench.run.runner")  # the check can see a scenarios import


def test_commands_sit_above_the_flow_and_tools_beside_it():
    # only the command line imports a command; no module outside bench/tools imports a tool
    graph = import_graph()
    assert "bench.tools.targets" in graph["bench.tools.gpucheck"]  # the check can see an import of a tool
    assert "bench.commands.run" in graph["bench.commands"] and "bench.commands" in graph["bench.cli"]
    for name, targets in graph.items():
        if not name.startswith("bench.tools."):
            assert not {t for t in targets if t.startswith("bench.tools.")}, name
        if name != "bench.cli" and name != "bench.commands" and not name.startswith("bench.commands."):
            assert not {t for t in targets if t == "bench.commands" or t.startswith("bench.commands.")}, name


def two_way_pairs(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, package) pairs that import each other: the module imports a module of the package (itself
    or below it) and one of those imports the module back. Acyclic modules can still tangle two layers
    this way (the transformers backend's speed settings once sat in the root and imported it back)."""
    packages = {name for name in graph if (BENCH.parent / name.replace(".", "/") / "__init__.py").exists()}
    pairs = set()
    for package in packages - {"bench"}:
        inside = {m for m in graph if m == package or m.startswith(package + ".")}
        for module in set(graph) - inside:
            if module != "bench" and graph[module] & inside and any(module in graph[m] for m in inside):
                pairs.add((module, package))
    return pairs


def test_no_module_and_package_import_each_other():
    assert two_way_pairs(import_graph()) == set()


def test_the_pair_finder_finds_a_module_and_a_package_importing_each_other():
    graph = import_graph()
    graph["bench.backends.transformers.backend"] = graph["bench.backends.transformers.backend"] | {"bench.run.optimize"}
    graph["bench.run.optimize"] = graph["bench.run.optimize"] | {"bench.backends.transformers.checkpoints"}
    assert ("bench.run.optimize", "bench.backends.transformers") in two_way_pairs(graph)
