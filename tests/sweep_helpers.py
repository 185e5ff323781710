"""Helpers shared by the sweep tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_sweep(path: Path, tiny: Path, **matrix) -> Path:
    """A fast sweep file on the tiny checkpoint: 2 images, 4 tokens, 2 measured iterations per cell."""
    axes = {"variants": ["base"], "tasks": ["<CAPTION>"], "batch_sizes": [1], "num_beams": [1], **matrix}
    lines = [
        'name = "test"',
        *(f"{k} = {json.dumps(v)}" for k, v in axes.items()),
        f"model_path = {json.dumps(str(tiny))}",
        'weights = "pretrained"',
        'dataset = "synthetic-smoke"',
        "limit = 2",
        "max_new_tokens = 4",
        "energy_idle_s = 0.0",
        "examples = 1",
        "[repetition]",
        "warmup = 0",
        "min_iterations = 2",
        "max_iterations = 2",
        "min_duration_s = 0.0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
