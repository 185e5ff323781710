"""The backends that start from a transformers model (``CheckpointBackend``), and the default one: the
checkpoint loaded by transformers and run eagerly (or torch.compiled) in PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.backends.base import Backend, CheckpointRef, GenerationSettings, LoadedModel, LoadOptions
from bench.backends.transformers import checkpoints
from bench.backends.transformers.checkpoints import ATTN, DTYPES
from bench.backends.transformers.preprocess import PREPROCESSORS
from bench.backends.transformers.settings import (
    COMPILE_MODES,
    apply_model_settings,
    unsupported_reason,
    vision_flops,
)

if TYPE_CHECKING:
    from bench.accuracy.tasks import Task
    from bench.backends.transformers.pipeline import TransformersPipeline
    from bench.core.measure import Clock
    from bench.core.variants import Variant

CACHES = ("dynamic", "static")
QUANT = ("none", "int8-dynamic")


class CheckpointBackend(Backend):
    """A runtime that starts from the checkpoint as transformers loads it, then ``prepare``s it (in
    place), and runs transformers' generate() through ``TransformersPipeline`` (with its own parts in
    the model's place, if any)."""

    def resolve(self, variant: Variant, options: LoadOptions) -> CheckpointRef:
        return checkpoints.resolve(variant, options)

    def load_dtype(self, cell: Any) -> str:
        """The dtype the PyTorch model is loaded in (a runtime that computes in its own precision: fp32)."""
        return cell.dtype

    def load(self, variant: Variant, ref: CheckpointRef, cell: Any, options: LoadOptions) -> LoadedModel:
        loaded = checkpoints.load(variant, ref, device=cell.device, dtype=self.load_dtype(cell), attn=cell.attn,
                                  options=options)
        self.prepare(loaded, cell)
        return loaded

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        """Turn a freshly loaded PyTorch model into what runs ``cell`` (in place; notes in ``loaded.notes``)."""
        raise NotImplementedError

    def pipeline(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock, preprocess: str = "host", prefetch: bool = False) -> TransformersPipeline:
        from bench.backends.transformers.pipeline import TransformersPipeline

        return TransformersPipeline(loaded, task, generation, device=device, dtype=dtype, clock=clock,
                                    preprocess=preprocess, prefetch=prefetch)

    def vision_flops(self, loaded: LoadedModel) -> float | None:
        return vision_flops(loaded.model)

    def processor_name(self, loaded: LoadedModel) -> str | None:
        return type(loaded.processor.image_processor).__name__


class TransformersBackend(CheckpointBackend):
    name = "transformers"
    axes = {"dtype": DTYPES, "attn": ATTN, "cache": CACHES, "quant": QUANT, "compile": COMPILE_MODES,
            "compile_vision": COMPILE_MODES, "channels_last": (False, True), "preprocess": tuple(PREPROCESSORS)}
    # quantize_dynamic's int8 kernels are CPU kernels (fbgemm/onednn)
    device_axes = {"cuda": {"quant": ("none",)}, "mps": {"quant": ("none",)}}

    def unsupported_reason(self, cell: Any) -> str | None:
        return super().unsupported_reason(cell) or unsupported_reason(cell)

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        apply_model_settings(loaded, cell)
