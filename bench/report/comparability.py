"""Combining runs: the environment facts that make two runs' figures differ for reasons other than the
setting (commit, library versions, devices, host load), per run with the differing ones first, and each run's
whole environment as a table."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.core import host
from bench.report.report_rows import Run, cpu_name, gpu_names
from bench.results import dig as _get
from bench.results import store


def _commit(env: dict[str, Any]) -> str | None:
    commit = _get(env, "git", "commit")
    if not isinstance(commit, str):
        return None
    return commit[:12] + (" (uncommitted changes)" if _get(env, "git", "dirty") else "")


# (label, getter) of the facts that make two runs' figures differ for reasons other than the setting
FACTS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("commit", _commit),
    ("torch", lambda e: _get(e, "torch", "version") or _get(e, "libraries", "torch")),
    ("transformers", lambda e: _get(e, "libraries", "transformers")),
    ("tokenizers", lambda e: _get(e, "libraries", "tokenizers")),
    ("Python", lambda e: _get(e, "python", "version")),
    ("CUDA (torch build)", lambda e: _get(e, "torch", "cuda")),
    ("cuDNN", lambda e: _get(e, "torch", "cudnn")),
    ("NVIDIA driver", lambda e: _get(e, "gpu", "driver_version")),
    ("GPU", lambda e: ", ".join(gpu_names(e)) or None),
    ("CPU model", cpu_name),
    ("CPU cores used (torch threads)", lambda e: _get(e, "torch", "num_threads")),
    ("CPU cores usable", lambda e: _get(e, "cpu", "usable_cores")),
    ("host", lambda e: _get(e, "hostname")),
    ("host load", lambda e: host.describe_load(e.get("host_load"))),
    ("CPU frequency governor", lambda e: _get(e, "cpu_governor", "governor")),
)
# (label, predicate) of facts whose value marks a run as suspect: highlighted in its column; such a fact
# differs between runs when the verdict does (two idle machines' loads are never equal, and never matter)
SUSPECT: dict[str, Callable[[dict[str, Any]], bool]] = {
    "host load": lambda e: host.busy(e.get("host_load")) or host.busy(e.get("host_load"), "end"),
}


@dataclass
class Fact:
    label: str
    values: list[str]
    suspect: list[bool] = field(default_factory=list)  # per run: a value that makes its figures suspect

    @property
    def differs(self) -> bool:
        """Values differ; a state that is never equal twice (the host's load) differs when its verdict does."""
        return len(set(self.suspect if self.label in SUSPECT else self.values)) > 1


def comparability(runs: list[Run]) -> list[Fact]:
    """Each environment fact per run, the differing ones first."""
    facts = []
    for label, getter in FACTS:
        values = []
        for run in runs:
            value = getter(run.env) if run.env else None
            values.append("not recorded" if value in (None, "") else str(value))
        suspect = SUSPECT.get(label, lambda e: False)
        facts.append(Fact(label, values, [bool(run.env) and suspect(run.env) for run in runs]))
    return sorted(facts, key=lambda f: not f.differs)


def env_table(env: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, found in sorted(store.flatten(env).items()):
        text = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
        out.append((key, text if len(text) <= 400 else text[:400] + " …"))
    return out
