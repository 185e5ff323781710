"""The default backend: the checkpoint loaded by transformers and run eagerly (or torch.compiled) in PyTorch."""

from __future__ import annotations

from typing import Any

from bench.backends.base import Backend
from bench.backends.transformers.checkpoints import (
    ATTN,
    DTYPES,
    LoadedModel,
)
from bench.optimize import COMPILE_MODES, apply_model_settings, unsupported_reason
from bench.preprocess import PREPROCESSORS

CACHES = ("dynamic", "static")
QUANT = ("none", "int8-dynamic")


class TransformersBackend(Backend):
    name = "transformers"
    axes = {"dtype": DTYPES, "attn": ATTN, "cache": CACHES, "quant": QUANT, "compile": COMPILE_MODES,
            "compile_vision": COMPILE_MODES, "channels_last": (False, True), "preprocess": tuple(PREPROCESSORS)}

    def unsupported_reason(self, cell: Any) -> str | None:
        return super().unsupported_reason(cell) or unsupported_reason(cell)

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        apply_model_settings(loaded, cell)
