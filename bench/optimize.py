"""Model-level speed settings, and the figures that say how fast a setting is and what it costs.

Settings are applied after loading: one function per sweep axis, in a registry. Each entry changes
the loaded model in place and notes what it did in ``LoadedModel.notes`` so the record says exactly
what ran. ``unsupported_reason`` says why a combination cannot run (the sweep records it as skipped).

The figures: ``vision_flops`` (FLOPs of one vision tower + projector forward, counted once per
architecture), ``roofline`` (achieved vision GFLOP/s against a matrix product measured on the same
machine) and ``agreement`` (exact-match rate of generated texts between two settings, e.g. bf16 vs
fp32, so the effect of precision on quality is visible without labels).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from bench.checkpoints import LoadedModel, count_params, weights_bytes

# Which settings keep fp32 greedy tokens identical to the naive path (eager, batch 1, dynamic cache):
# they change the order of floating-point operations at most. tests/test_optimize.py checks the True ones.
TOKEN_PRESERVING: dict[str, bool] = {
    "attn": True,  # sdpa vs eager: same maths, other kernels
    "batch_size": True,  # right padding + attention mask: padded positions are masked out
    "cache": True,  # static vs dynamic KV cache: same values, preallocated
    "channels_last": True,  # memory layout of the vision tower's convolutions
    "compile": True,  # same graph, fused kernels
    "dtype": False,  # fp16/bf16 round every activation: see agreement()
    "quant": False,  # int8 weights and activations: see agreement()
    "num_beams": False,  # a different search, not a faster one
}


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


def _compile(loaded: LoadedModel, cell: Any) -> str | None:
    """torch.compile of the model's forward: inside generate() that is every decoder step.

    The vision tower and the text encoder run once per batch outside ``forward`` (generate prepares
    the encoder outputs first), so they stay eager. Shapes are fixed only with the static KV cache.
    """
    if not cell.compile:
        return None
    import torch

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    loaded.model.forward = torch.compile(loaded.model.forward, dynamic=False)
    return "torch.compile(model.forward, dynamic=False): decoder steps compiled, vision + encoder eager"


MODEL_SETTINGS: dict[str, Callable[[LoadedModel, Any], str | None]] = {
    "channels_last": _channels_last,
    "quant": _quantize,
    "compile": _compile,
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
    if cell.quant != "none" and not str(cell.device).startswith("cpu"):
        return "int8 dynamic quantisation runs on CPU only"
    return None


# ---------------------------------------------------------------------------------------- roofline


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
    from transformers import Florence2Config
    from transformers.models.florence2.modeling_florence2 import Florence2Model

    config = Florence2Config.from_dict(json.loads(config_json))
    with torch.device("meta"):
        inner = Florence2Model(config)
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


def roofline(
    vision_ms_per_image: float | None, flops_per_image: float, matmul_gflops: float | None
) -> dict[str, float | None]:
    """How close the vision encoder runs to this machine's matrix-product speed (fraction of it)."""
    achieved = None
    if vision_ms_per_image and vision_ms_per_image > 0:
        achieved = flops_per_image / 1e9 / (vision_ms_per_image / 1000.0)
    fraction = achieved / matmul_gflops if achieved is not None and matmul_gflops else None
    return {
        "vision_gflops_per_s": achieved,
        "matmul_gflops_per_s": matmul_gflops,
        "fraction": fraction,
        "vision_gflop_per_image": flops_per_image / 1e9,
        "vision_ms_per_image": vision_ms_per_image,
    }


@functools.lru_cache(maxsize=8)
def matmul_reference(device: str, dtype: str) -> float:
    """Matrix-product GFLOP/s in ``dtype`` on ``device``, measured once per process (the same run)."""
    from bench.measure import matmul_gflops

    return matmul_gflops(device, dtype, seconds=0.5)


def roofline_for(
    model, vision_ms_per_image: float | None, device: str, dtype: str, quant: str = "none"
) -> dict[str, Any]:
    """The record's roofline: vision FLOPs of this architecture against this run's matrix product.

    int8 is compared with the fp32 product (no int8 reference is measured): its fraction may exceed 1.
    """
    reference_dtype = "fp32" if quant != "none" else dtype
    figure = roofline(vision_ms_per_image, vision_flops(model), matmul_reference(device, reference_dtype))
    return {**figure, "matmul_dtype": reference_dtype, "flop_convention": "multiply-add = 2 FLOPs"}


# --------------------------------------------------------------------------------------- agreement


def agreement(texts_a: Mapping[int, str], texts_b: Mapping[int, str]) -> float:
    """Fraction of the images both settings answered whose generated texts are exactly equal."""
    shared = texts_a.keys() & texts_b.keys()
    if not shared:
        raise ValueError("no image ids in common: agreement is undefined")
    return sum(texts_a[i] == texts_b[i] for i in shared) / len(shared)


# Records that must match for two texts to be comparable; batch size, attention, cache, layout and compile
# are left out because they preserve tokens (TOKEN_PRESERVING).
_SAME_WORK = ("variant", "checkpoint", "weights", "task", "dataset", "num_beams", "max_new_tokens")


def agreement_with_fp32(records: list[Mapping[str, Any]]) -> dict[str, float]:
    """For each ok fp16/bf16/int8 record, exact-match agreement with an fp32 record of the same work.

    Texts are read from ``record["extra"]["texts"]`` (image id -> generated text). Returns
    cell_id -> agreement; records with no fp32 counterpart are left out.
    """

    def texts(r: Mapping[str, Any]) -> dict[int, str]:  # records are untrusted: skip what is not id -> text
        found = (r.get("extra") or {}).get("texts")
        items = found.items() if isinstance(found, dict) else ()
        return {int(k): v for k, v in items if isinstance(k, str) and k.isdigit() and isinstance(v, str)}

    def key(r: Mapping[str, Any]) -> tuple:
        return tuple(r.get(f) for f in _SAME_WORK)

    def quant(r: Mapping[str, Any]) -> str:
        return (r.get("settings") or {}).get("quant", "none")

    ok = [r for r in records if r.get("status") == "ok" and texts(r)]
    references: dict[tuple, dict[int, str]] = {}
    for r in ok:
        if r.get("dtype") == "fp32" and quant(r) == "none":
            references.setdefault(key(r), texts(r))
    out = {}
    for r in ok:
        reference = references.get(key(r))
        if (
            (r.get("dtype") != "fp32" or quant(r) != "none")
            and reference
            and reference.keys() & texts(r).keys()
        ):
            out[r["cell_id"]] = agreement(reference, texts(r))
    return out
