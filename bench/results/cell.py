"""A cell: one point of a sweep's matrix, and its identity.

``cell_id`` hashes exactly the settings that say what is measured, so the same settings give the
same id on every machine: the model settings, the scenario, and for server cells the target load,
queue delay and latency bound (not the run length or seed, which, like the repetition policy, say
how long it is measured). Schema 2 added the scenario, so no cell id of a version-1 run directory
matches a version-2 one. Axes added since (``LATER_AXES``) count only when set away from their
default, so run directories written before them keep their ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.core.host import THREADS_DEFAULT
from bench.results import CellAxes
from bench.results.server_settings import ServerSettings

LATER_AXES: dict[str, Any] = {"compile_vision": False, "preprocess": "host", "prefetch": False,
                              "threads": THREADS_DEFAULT,
                              "load_generator": "builtin",
                              "backend": "transformers"}


@dataclass(frozen=True)
class Cell(CellAxes):
    """One point of the matrix: the axes its record states at top level (``CellAxes``), and these."""

    cache: str
    channels_last: bool
    quant: str
    weights: str
    model_path: str | None
    max_new_tokens: int | None
    scenario: str = "single-stream"
    server: ServerSettings | None = None  # server cells only
    compile_vision: bool | str = False
    preprocess: str = "host"
    prefetch: bool = False
    threads: int | str = THREADS_DEFAULT  # torch intra-op threads for the cell, or "auto" (torch's own)
    load_generator: str = "builtin"  # who issues the requests (bench.scenarios.LOAD_GENERATORS)
    backend: str = "transformers"  # the runtime (bench.backends.BACKENDS)

    @property
    def cell_id(self) -> str:
        settings = {k: v for k, v in dataclasses.asdict(self).items()
                    if not (k in LATER_AXES and v == LATER_AXES[k] and type(v) is type(LATER_AXES[k]))}
        settings["server"] = self.server.identity() if self.server is not None else None
        canonical = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def group(self) -> tuple:
        return (self.backend, self.variant, self.model_path, self.dtype, self.device, self.attn, self.quant,
                self.channels_last, self.compile, self.compile_vision)

    @property
    def label(self) -> str:
        extra = [k for k, on in (("compile", self.compile is True), ("decoder-graphs", self.compile == "graphs"),
                                 ("vision-compiled", self.compile_vision is True),
                                 ("vision-graphs", self.compile_vision == "graphs"),
                                 ("channels-last", self.channels_last),
                                 (self.quant, self.quant != "none"), ("static-cache", self.cache == "static"),
                                 ("device-preprocess", self.preprocess == "device"), ("prefetch", self.prefetch),
                                 (f"threads{self.threads}", self.threads != THREADS_DEFAULT),
                                 ("loadgen-mlperf", self.load_generator == "mlperf"),
                                 (self.backend, self.backend != "transformers"))
                 if on]
        load = []
        if self.server is not None:
            load = [f"qps={self.server.qps}" if self.server.qps == "auto" else f"qps={self.server.qps:g}"]
        return " ".join([self.variant, self.task, self.dtype, f"bs{self.batch_size}", self.device, self.attn,
                         f"beams{self.num_beams}", self.scenario, *load, *extra])
