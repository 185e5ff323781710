"""bench.tools.perf's settings: the fixed work (task, beams, tokens), a ``Candidate`` (one harness setting), the
grammar of ``--candidates`` keys (``parse_candidate``) and each device's default candidates."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.run.optimize import TOKEN_PRESERVING

TASK = "<CAPTION>"
NEW_TOKENS = 20
NUM_BEAMS = 3
VARIANT = "base"


@dataclass(frozen=True)
class Candidate:
    """One harness setting: the sweep axes that matter for speed (names and values as in ``sweep.Cell``)."""

    dtype: str = "fp32"
    attn: str = "sdpa"
    batch_size: int = 1
    cache: str = "dynamic"
    compile: bool | str = False
    channels_last: bool = False
    quant: str = "none"
    compile_vision: bool | str = False
    preprocess: str = "host"
    prefetch: bool = False
    backend: str = "transformers"

    @property
    def model_key(self) -> tuple:
        """Candidates with the same key share one loaded model (where their backend's ``load_key`` agrees too)."""
        return (self.backend, self.dtype, self.attn, self.quant, self.channels_last, self.compile,
                self.compile_vision)

    @property
    def compiled(self) -> bool:
        return bool(self.compile or self.compile_vision)

    @property
    def warmup_batches(self) -> int:
        """CUDA graphs record on their second call and replay from the third; compilation is the first."""
        if "graphs" in (self.compile, self.compile_vision):
            return 3
        return 2 if self.compiled else 1

    @property
    def name(self) -> str:
        extras = [
            label
            for label, on in (
                (self.quant, self.quant != "none"),
                ("channels_last", self.channels_last),
                ("static cache", self.cache == "static"),
                ("compile", self.compile is True),
                ("decoder CUDA graphs", self.compile == "graphs"),
                ("vision compiled", self.compile_vision is True),
                ("vision CUDA graphs", self.compile_vision == "graphs"),
                ("device preprocess", self.preprocess == "device"),
                ("prefetch", self.prefetch),
                (self.backend, self.backend != "transformers"),
            )
            if on
        ]
        return " ".join(
            [VARIANT, self.dtype, self.attn, f"batch {self.batch_size}", f"num_beams={NUM_BEAMS}", *extras]
        )

    @property
    def key(self) -> str:
        """A short id for ``--candidates``: DTYPE-bN plus its flags, e.g. ``fp16-b64-dev-prefetch``."""
        on = [flag for flag, (axis, value) in FLAGS.items() if getattr(self, axis) == value
              and type(getattr(self, axis)) is type(value)]
        return "-".join([self.dtype, f"b{self.batch_size}", *on])

    @property
    def token_preserving(self) -> bool:
        """Expected to give the snippet's fp32 tokens: no precision-changing axis (``optimize.TOKEN_PRESERVING``)
        moved from its default."""
        return all(TOKEN_PRESERVING[f.name] or getattr(self, f.name) == f.default for f in fields(self))


# the flags of a candidate key: flag -> (axis, value)
FLAGS: dict[str, tuple[str, Any]] = {
    "eager": ("attn", "eager"),
    "static": ("cache", "static"),
    "compile": ("compile", True),
    "graphs": ("compile", "graphs"),
    "vision": ("compile_vision", True),
    "vgraphs": ("compile_vision", "graphs"),
    "cl": ("channels_last", True),
    "int8": ("quant", "int8-dynamic"),
    "int8w": ("quant", "int8-weights"),
    "ov": ("backend", "openvino"),
    "dev": ("preprocess", "device"),
    "prefetch": ("prefetch", True),
}
KEY_SYNTAX = f"DTYPE-bN[-FLAG...], DTYPE fp32/fp16/bf16, FLAG one of {', '.join(FLAGS)} (e.g. fp16-b64-dev-prefetch)"


def parse_candidate(key: str) -> Candidate:
    """The candidate a key names (the inverse of ``Candidate.key``); UsageError names a bad part."""
    parts = key.strip().split("-")
    if len(parts) < 2 or parts[0] not in ("fp32", "fp16", "bf16") or not re.fullmatch(r"b[1-9]\d*", parts[1]):
        raise UsageError(f"bad candidate {key!r}; accepted: {KEY_SYNTAX}")
    values: dict[str, Any] = {"dtype": parts[0], "batch_size": int(parts[1][1:])}
    for flag in parts[2:]:
        if flag not in FLAGS:
            raise UsageError(f"bad candidate {key!r}: unknown flag {flag!r}; accepted: {KEY_SYNTAX}")
        axis, value = FLAGS[flag]
        values[axis] = value
    return Candidate(**values)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next(
        (set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set()
    )


def cpu_candidates() -> list[Candidate]:
    """Two cores: the vision tower is compute-bound, so precision and the runtime are what pay; bf16 only
    where native. OpenVINO settings first (their conversion is loading, outside the budget).

    Measured here (2-core EPYC, avx512_bf16, docs/performance.md): OpenVINO with its decoder converted
    is the fastest runtime at every precision; its batches gain a little up to 4 (one stream per core,
    a batch's images split across them), while transformers' int8 is fastest at batch 1; int8 weights
    with activations quantised per call (``int8``: int8-dynamic, on either backend) are each runtime's
    fastest.
    """
    bf16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    ov = Candidate(backend="openvino")
    out = [Candidate(), ov]
    if bf16:
        out += [replace(ov, dtype="bf16", batch_size=2)] + [
            replace(ov, dtype="bf16", batch_size=n, quant="int8-dynamic") for n in (2, 4)]
    else:
        out += [replace(ov, quant="int8-dynamic")]
    out += [Candidate(quant="int8-dynamic")]
    if bf16:
        out += [Candidate(dtype="bf16"), Candidate(dtype="bf16", batch_size=2)]
    return out


def cuda_candidates() -> list[Candidate]:
    """One GPU, cheapest first (warm-ups are lazy and budgeted, so the eager settings are always measured):
    half precision up to batch 128 with pixels made on the GPU and the next batch prepared while one runs;
    the host-pixel batch 64 shows what that buys. fp32 batch 1, the snippet's setting through the harness,
    comes second: it is the A/A control that lets the run judge itself (``bench.run.selfcheck``), so the budget
    must never skip it. Then the settings that compile: CUDA graphs for batch 1 (launch-bound) and batches
    64/128."""
    fast = {"preprocess": "device", "prefetch": True}
    graphs = {"cache": "static", "compile": "graphs"}
    return [
        Candidate(dtype="fp16"),
        Candidate(),
        Candidate(dtype="fp16", batch_size=32, **fast),
        Candidate(dtype="fp16", batch_size=64, **fast),
        Candidate(dtype="fp16", batch_size=128, **fast),
        Candidate(dtype="bf16", batch_size=64, **fast),
        Candidate(dtype="fp16", batch_size=64),
        Candidate(dtype="fp16", batch_size=1, compile_vision="graphs", preprocess="device", **graphs),
        Candidate(dtype="fp16", batch_size=64, compile_vision=True, **graphs, **fast),
        Candidate(dtype="fp16", batch_size=128, compile_vision=True, **graphs, **fast),
    ]


CANDIDATES: dict[str, Callable[[], list[Candidate]]] = {"cpu": cpu_candidates, "cuda": cuda_candidates}
