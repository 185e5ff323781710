"""Model-level speed settings applied after loading: one function per sweep axis, in a registry.

Each entry checks that it applies, changes the loaded model in place, and notes what it did in
``LoadedModel.notes`` so the record can say exactly what ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.checkpoints import LoadedModel, count_params, weights_bytes


def _channels_last(loaded: LoadedModel, cell: Any) -> str | None:
    """The vision tower's convolutions prefer NHWC on CPU (oneDNN) and on tensor cores."""
    if not cell.channels_last:
        return None
    import torch

    loaded.model.model.vision_tower.to(memory_format=torch.channels_last)
    return "vision tower in channels_last memory format"


def _quantize(loaded: LoadedModel, cell: Any) -> str | None:
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations quantised on the fly)."""
    if cell.quant == "none":
        return None
    import torch
    from torch.ao.quantization import quantize_dynamic

    loaded.model = quantize_dynamic(loaded.model, {torch.nn.Linear}, dtype=torch.qint8)
    loaded.weights_bytes = weights_bytes(loaded.model) + _packed_linear_bytes(loaded.model)
    loaded.params = max(loaded.params, count_params(loaded.model))
    return "dynamic int8 quantisation of nn.Linear (torch.ao.quantization.quantize_dynamic)"


def _packed_linear_bytes(model) -> int:
    """Quantised linears keep int8 weights in packed params that .parameters() does not list."""
    total = 0
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += weight.numel() * weight.element_size() + (bias.numel() * bias.element_size() if bias is not None
                                                               else 0)
    return total


def _compile(loaded: LoadedModel, cell: Any) -> str | None:
    """torch.compile of the model's forward; used with the static KV cache so shapes stay fixed."""
    if not cell.compile:
        return None
    import torch

    loaded.model.forward = torch.compile(loaded.model.forward, dynamic=False)
    return "torch.compile(model.forward, dynamic=False)"


MODEL_SETTINGS: dict[str, Callable[[LoadedModel, Any], str | None]] = {
    "channels_last": _channels_last,
    "quant": _quantize,
    "compile": _compile,
}


def apply_model_settings(loaded: LoadedModel, cell: Any) -> list[str]:
    """Apply every setting the cell asks for; returns what was done (kept in the record)."""
    notes = [note for fn in MODEL_SETTINGS.values() if (note := fn(loaded, cell))]
    loaded.notes = notes
    return notes
