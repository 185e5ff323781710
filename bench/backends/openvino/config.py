"""The OpenVINO backend's settings: where converted models are kept, and what it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "pip install 'florence2-bench[openvino]' (openvino>=2025, nncf>=2.14)"
# the cell's dtype -> OpenVINO's INFERENCE_PRECISION_HINT (the IR itself stays f32; bf16 is how the CPU runs it)
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
# quant -> how OpenVINO runs the converted parts: their weights compressed to int8 (nncf.compress_weights,
# one cached IR for both int8 values), and DYNAMIC_QUANTIZATION_GROUP_SIZE: 0 keeps activations in the
# inference precision (int8-weights: less memory to read); 128 quantises them per call, in groups of 128,
# so the matrix products run in int8 (int8-dynamic: what the transformers backend's int8-dynamic does)
QUANT = {"none": None, "int8-weights": 0, "int8-dynamic": 128}


def weight_precision(quant: str) -> str:
    """How the converted IR's weights are stored under ``quant``."""
    return "f32" if QUANT[quant] is None else "int8"


def default_cache_dir() -> Path:
    """Converted models live with the user's other caches (XDG), apart from run directories."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "florence2-bench" / "openvino"


@dataclass(frozen=True)
class OpenVINOSettings:
    cache_dir: Path = field(default_factory=default_cache_dir, metadata={
        "help": "folder of converted IR (one sub-folder per checkpoint, part, input shape and weight precision); "
                "nothing is written outside it"})
    threads: int | None = field(default=None, metadata={
        "help": "OpenVINO inference threads; None: as many as torch uses, so both runtimes get the same cores"})
    streams: int | None = field(default=None, metadata={
        "help": "OpenVINO streams: a batch's images are split across them and run at once, the threads shared "
                "among them; None: one per image of the batch, at most one per thread (a batch of one: one "
                "stream with every thread)"})
