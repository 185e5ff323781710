"""The transformers backend's model-level speed settings, and what its architecture costs.

Settings are applied after loading: one function per sweep axis, in a registry. Each entry changes
the loaded model in place and notes what it did in ``LoadedModel.notes`` so the record says exactly
what ran. ``unsupported_reason`` says why a combination cannot run (the sweep records it as skipped).
``vision_flops`` counts the vision tower + projector once per architecture (the roofline's numerator,
``bench.run.optimize.roofline``).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from bench.backends.base import LoadedModel
from bench.backends.transformers.checkpoints import count_params, meta_model, weights_bytes


def _channels_last(loaded: LoadedModel, cell: Any) -> str | None:
    """The vision tower's convolutions prefer NHWC on CPU (oneDNN) and on tensor cores."""
    if not cell.channels_last:
        return None
    import torch

    loaded.model.model.vision_tower.to(memory_format=torch.channels_last)
    return "vision tower in channels_last memory format"


def _quantize(loaded: LoadedModel, cell: Any) -> str | None:
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations quantised on the fly).

    In place: a copy would hold two models in memory. generate() keeps working (checked in tests).
    """
    if cell.quant == "none":
        return None
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not installed); it is still the eager API here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(loaded.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    loaded.weights_bytes = weights_bytes(loaded.model) + _packed_linear_bytes(loaded.model)
    loaded.params = max(loaded.params, count_params(loaded.model))
    return "dynamic int8 quantisation of nn.Linear (torch.ao.quantization.quantize_dynamic, in place)"


def _packed_linear_bytes(model) -> int:
    """Quantised linears keep int8 weights in packed params that .parameters() does not list."""
    total = 0
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += weight.numel() * weight.element_size()
            total += bias.numel() * bias.element_size() if bias is not None else 0
    return total


# Values of the ``compile`` (decoder steps) and ``compile_vision`` (vision tower + projector) axes.
# True: torch.compile with fixed shapes (kernel fusion). "graphs": the same with mode="reduce-overhead",
# i.e. the compiled kernels recorded once into CUDA graphs and replayed (one launch per graph instead of
# one per kernel: what a launch-bound batch-1 decoder step needs). CUDA only; the decoder's needs the
# static cache.
COMPILE_MODES = (False, True, "graphs")


def parse_compile(axis: str, value: object) -> bool | str:
    """``true``/``false``/``graphs`` (any case; booleans as such) to a COMPILE_MODES value."""
    from bench.core.errors import UsageError

    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    if lowered == "graphs":
        return "graphs"
    raise UsageError(f"bad {axis} value {value!r}; accepted: false, true, graphs")


def torch_compile(fn: Callable, graphs: bool) -> Callable:
    """torch.compile with fixed shapes; with ``graphs``, CUDA graphs (tests replace this seam)."""
    import torch

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if not graphs:
        return torch.compile(fn, dynamic=False)
    compiled = torch.compile(fn, dynamic=False, mode="reduce-overhead")

    @functools.wraps(fn)
    def step(*args, **kwargs):
        # each call is a new step of an inference loop: outputs of the previous replay are dead...
        torch.compiler.cudagraph_mark_step_begin()
        # ...but generate() keeps some of them across steps (the vision features the projector and the
        # encoder read, a decoder step's outputs): measured on an H200, without copies the next replay
        # overwrote them ("accessing tensor output of CUDAGraphs that has been overwritten")
        return owned_outputs(compiled(*args, **kwargs))

    return step


def owned_outputs(value: Any) -> Any:
    """The tensors of a compiled call's outputs (a tensor, tuple, list, dict or ModelOutput) copied out of
    the CUDA-graph pool, so a later replay cannot overwrite them; everything else (a KV cache object) as is."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):  # ModelOutput included: item assignment keeps its attributes in step
        for key in list(value.keys()):
            value[key] = owned_outputs(value[key])
        return value
    if isinstance(value, list):
        return [owned_outputs(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(owned_outputs(v) for v in value)
    return value


def _compile(loaded: LoadedModel, cell: Any) -> str | None:
    """torch.compile of the model's forward: inside generate() that is every decoder step.

    The vision tower and the text encoder run once per batch outside ``forward`` (generate prepares
    the encoder outputs first), so they stay eager here (``compile_vision`` compiles the vision tower).
    Shapes are fixed only with the static KV cache; with CUDA graphs that cache is also kept at fixed
    addresses (``reuse_static_cache``).
    """
    mode = cell.compile
    if not mode:
        return None
    graphs = mode == "graphs"
    loaded.model.forward = torch_compile(loaded.model.forward, graphs)
    if graphs:
        reuse_static_cache(loaded.model)
        return ("torch.compile(model.forward, dynamic=False, mode='reduce-overhead'): decoder steps in CUDA "
                "graphs, static cache at fixed addresses; vision + encoder outside")
    return "torch.compile(model.forward, dynamic=False): decoder steps compiled, vision + encoder eager"


def _compile_vision(loaded: LoadedModel, cell: Any) -> str | None:
    """torch.compile of the vision tower and the projector, each on its own so the timing hooks around
    them stay outside the compiled code (images are always 768x768: fixed shapes per batch size)."""
    mode = getattr(cell, "compile_vision", False)
    if not mode:
        return None
    graphs = mode == "graphs"
    inner = loaded.model.model
    for module in (inner.vision_tower, inner.multi_modal_projector):
        module.forward = torch_compile(module.forward, graphs)
    return f"torch.compile of the vision tower and projector (dynamic=False{', CUDA graphs' if graphs else ''})"


def reuse_static_cache(model) -> None:
    """One static KV cache per shape for every generate() call, initialised eagerly, reordered in place.

    CUDA graphs replay fixed memory addresses. transformers builds a new static cache on every
    generate() call, initialises it lazily inside the first (compiled) decoder step, and beam search
    reorders it by building new tensors (index_select); each of these would make the graphs re-record.
    Here the cache of a shape is kept and ``reset()`` (zeroed in place), its tensors are allocated
    before any compiled call, and beam reordering copies in place. The cross-attention cache is not
    reordered: every beam of an image holds the same encoder keys and values.
    """
    original = getattr(model, "_prepare_static_cache", None)
    if original is None:
        raise RuntimeError("this transformers version has no _prepare_static_cache: CUDA graphs unsupported here")
    signature = inspect.signature(original)
    text = model.config.get_text_config(decoder=True)
    heads = text.decoder_attention_heads
    head_dim = text.d_model // heads
    kept: dict[tuple, Any] = {}

    def prepare(*args, **kwargs):
        batch_size = signature.bind(*args, **kwargs).arguments["batch_size"]
        cache = original(*args, **kwargs)
        parts = [getattr(cache, "self_attention_cache", cache), getattr(cache, "cross_attention_cache", None)]
        key = (batch_size, *(tuple(layer.max_cache_len for layer in p.layers) for p in parts if p is not None))
        if key in kept:
            kept[key].reset()
            return kept[key]
        for part in parts:
            if part is not None:
                part.early_initialization(batch_size=batch_size, num_heads=heads, head_dim=head_dim,
                                          dtype=model.dtype, device=model.device)
        if hasattr(cache, "is_updated"):
            cache.is_updated = dict.fromkeys(cache.is_updated, False)
        cache.reorder_cache = functools.partial(_reorder_in_place, parts[0].layers)
        kept[key] = cache
        return cache

    model._prepare_static_cache = prepare


def _reorder_in_place(layers, beam_idx) -> None:
    for layer in layers:
        index = beam_idx.to(layer.keys.device)
        layer.keys.copy_(layer.keys.index_select(0, index))
        layer.values.copy_(layer.values.index_select(0, index))


MODEL_SETTINGS: dict[str, Callable[[LoadedModel, Any], str | None]] = {
    "channels_last": _channels_last,
    "quant": _quantize,
    "compile": _compile,
    "compile_vision": _compile_vision,
}


def apply_model_settings(loaded: LoadedModel, cell: Any) -> list[str]:
    """Apply every setting the cell asks for; returns what was done (kept in the record).

    transformers compiles generate()'s decoding on its own when a GPU uses the static cache with
    greedy search; that is switched off so that only the ``compile`` axis compiles anything.
    """
    loaded.model.generation_config.disable_compile = True
    notes = [note for fn in MODEL_SETTINGS.values() if (note := fn(loaded, cell))]
    loaded.notes = notes
    return notes


def unsupported_reason(cell: Any) -> str | None:
    """Why a combination of model-level settings cannot run (a ``skipped`` record), or None."""
    if cell.quant != "none" and cell.dtype != "fp32":
        return f"int8 dynamic quantisation starts from fp32 weights (dtype {cell.dtype} requested)"
    for axis in ("compile", "compile_vision"):
        if getattr(cell, axis, False) == "graphs" and not str(cell.device).startswith("cuda"):
            return f"{axis}=graphs records CUDA graphs: CUDA only (device {cell.device})"
    if cell.compile == "graphs" and getattr(cell, "cache", "static") != "static":
        return "compile=graphs needs fixed shapes: the static KV cache (cache static)"
    return None


# ------------------------------------------------------------------------------------- vision FLOPs


def _arch_key(config) -> str:
    """What the vision FLOPs depend on: the vision config and the projector's dimensions."""
    vision = config.vision_config.to_dict()
    return json.dumps(
        {"vision": vision, "text_d_model": config.text_config.d_model}, sort_keys=True, default=str
    )


@functools.lru_cache(maxsize=16)
def _vision_flops_per_image(arch_key: str, config_json: str, image_size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    inner = meta_model(config_json)
    with torch.device("meta"):
        pixels = torch.empty(1, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        inner.get_image_features(pixels)
    return float(counter.get_total_flops())


def vision_flops(model, batch_size: int = 1, image_size: int = 768) -> float:
    """FLOPs of one vision tower + projector forward on ``batch_size`` images of ``image_size``².

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on a meta-device copy of the architecture
    (no weights, no compute), cached per architecture. A multiply-add counts as 2 FLOPs; matrix
    products, convolutions and attention are counted, element-wise ops (norms, GELU) are not.
    """
    config = model.config
    per_image = _vision_flops_per_image(_arch_key(config), config.to_json_string(use_diff=False), image_size)
    return per_image * batch_size
