"""The OpenVINO backend's settings: where converted models are kept, and what it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "pip install 'florence2-bench[openvino]' (openvino>=2025, nncf>=2.14)"
# the cell's dtype -> OpenVINO's INFERENCE_PRECISION_HINT (the IR itself stays f32; bf16 is how the CPU runs it)
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
# quant: "int8-weights" is nncf.compress_weights of the converted parts (int8 weights, activations in the
# inference precision); "int8-static" is nncf.quantize of the vision tower (int8 weights and activations,
# calibrated; the other parts as with "none"); "int8-dynamic" is the transformers backend's dynamic int8
# for a PyTorch decoder
QUANT = ("none", "int8-weights", "int8-static", "int8-dynamic")
STATIC_INT8_PARTS = ("vision_tower",)  # where int8 activations pay: the compute-bound part (docs/performance.md)
NEEDS_NNCF = ("int8-weights", "int8-static")


def part_precision(part: str, quant: str) -> str:
    """How a converted part's IR is stored under ``quant``: f32, int8 (weights) or int8-static."""
    if quant == "int8-weights":
        return "int8"
    return "int8-static" if quant == "int8-static" and part in STATIC_INT8_PARTS else "f32"


def default_cache_dir() -> Path:
    """Converted models live with the user's other caches (XDG), apart from run directories."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "florence2-bench" / "openvino"


@dataclass(frozen=True)
class OpenVINOSettings:
    cache_dir: Path = field(default_factory=default_cache_dir, metadata={
        "help": "folder of converted IR (one sub-folder per checkpoint, part, input shape and weight precision); "
                "nothing is written outside it"})
    calibration_images: int = field(default=8, metadata={
        "help": "synthetic-smoke images whose pixels calibrate quant int8-static (nncf.quantize); part of "
                "the converted IR's cache key"})
    threads: int | None = field(default=None, metadata={
        "help": "OpenVINO inference threads; None: as many as torch uses, so both runtimes get the same cores"})
