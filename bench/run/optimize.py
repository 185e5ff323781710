"""The figures that say how fast a setting is and what it costs, for every backend.

``roofline`` (achieved vision GFLOP/s against a matrix product measured on the same machine; the FLOPs
are the backend's, ``Backend.vision_flops``) and ``agreement`` (exact-match rate of generated texts
between two settings, e.g. bf16 vs fp32, so the effect of precision on quality is visible without
labels). The transformers backend's speed settings themselves: ``bench.backends.transformers.settings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bench.results import Record, Roofline

# Which settings keep fp32 greedy tokens identical to the naive path (eager, batch 1, dynamic cache):
# they change the order of floating-point operations at most. tests/test_optimize.py checks the True ones.
TOKEN_PRESERVING: dict[str, bool] = {
    "attn": True,  # sdpa vs eager: same maths, other kernels
    "batch_size": True,  # right padding + attention mask: padded positions are masked out
    "cache": True,  # static vs dynamic KV cache: same values, preallocated
    "channels_last": True,  # memory layout of the vision tower's convolutions
    "compile": True,  # same graph, fused kernels (also with CUDA graphs: the same kernels, replayed)
    "compile_vision": True,
    "prefetch": True,  # the same batches, prepared earlier on another thread
    "preprocess": False,  # device pixels are within 2 grey levels of the processor's: see bench.backends.transformers.preprocess
    "dtype": False,  # fp16/bf16 round every activation: see agreement()
    "quant": False,  # int8 weights and activations: see agreement()
    "num_beams": False,  # a different search, not a faster one
    "backend": False,  # another runtime's kernels and fusions (bench.backends): see agreement()
}


# ---------------------------------------------------------------------------------------- roofline


def roofline(
    vision_ms_per_image: float | None, flops_per_image: float, matmul_gflops: float | None
) -> dict[str, float | None]:
    """How close the vision encoder runs to this machine's matrix-product speed (fraction of it).

    Above 1 the reference under-read the machine (``bad_reference``): the fraction is then None, never
    a result, and the raw rates stay.
    """
    achieved = None
    if vision_ms_per_image and vision_ms_per_image > 0:
        achieved = flops_per_image / 1e9 / (vision_ms_per_image / 1000.0)
    fraction = achieved / matmul_gflops if achieved is not None and matmul_gflops else None
    bad_reference = fraction is not None and fraction > 1
    return {
        "vision_gflops_per_s": achieved,
        "matmul_gflops_per_s": matmul_gflops,
        "fraction": None if bad_reference else fraction,
        "bad_reference": bad_reference,
        "vision_gflop_per_image": flops_per_image / 1e9,
        "vision_ms_per_image": vision_ms_per_image,
    }


# Size of the reference matrix product: 2048² keeps a CPU busy for a while; a GPU needs 8192² (1.1
# TFLOP a product) before launch overhead stops mattering and the rate is its attainable peak.
MATMUL_N = {"cpu": 2048, "cuda": 8192, "mps": 4096}


BAD_REFERENCE = "roofline-bad-reference"  # the flag code of a fraction above 1


def reference_dtype(dtype: str, quant: str = "none") -> str:
    """The dtype of a cell's matrix-product reference: int8 has none and is compared with fp32."""
    return "fp32" if quant != "none" else dtype


def matmul_reference(device: str, dtype: str) -> float:
    """Matrix-product GFLOP/s in ``dtype`` on ``device``, measured now: a cell measures it just before and
    just after itself, since a shared machine's rate drifts (one probe read 31 to 96 GFLOP/s)."""
    from bench.core.measure import device_kind, matmul_gflops

    return matmul_gflops(device, dtype, n=MATMUL_N[device_kind(device)], seconds=0.25)


def roofline_for(
    flops_per_image: float | None, vision_ms_per_image: float | None, device: str, dtype: str, quant: str,
    reference: tuple[float, float],
) -> tuple[Roofline | None, list[dict[str, str]]]:
    """The record's roofline and its flags: vision FLOPs of this architecture against the faster of the
    matrix products measured just before and just after the cell (``reference``: before, after); None
    where the backend counts no vision FLOPs.

    A fraction above 1 means the reference under-read what this machine can do (busy or throttled while
    it was probed; int8 has only the fp32 product): ``roofline`` nulls it, and it is flagged here.
    """
    from bench.core.measure import device_kind

    if flops_per_image is None:
        return None, []
    before, after = reference
    figure = Roofline(**roofline(vision_ms_per_image, flops_per_image, max(before, after)),
                      matmul_gflops_before=before, matmul_gflops_after=after,
                      matmul_reference="the faster of the products measured just before and just after the cell",
                      matmul_dtype=reference_dtype(dtype, quant), matmul_n=MATMUL_N[device_kind(device)],
                      flop_convention="multiply-add = 2 FLOPs")
    if not figure.bad_reference:
        return figure, []
    why = ("int8 has no reference of its own, only the fp32 product" if quant != "none"
           else "the product under-read this machine (busy or throttled while it was measured)")
    ratio = figure.vision_gflops_per_s / figure.matmul_gflops_per_s
    return figure, [{"code": BAD_REFERENCE, "message": (
        f"vision ran at {figure.vision_gflops_per_s:.1f} GFLOP/s, {ratio:.2f}x the {figure.matmul_dtype} "
        f"matrix-product reference ({before:.1f} before, {after:.1f} after the cell): {why}; no roofline "
        "fraction is reported")}]


# --------------------------------------------------------------------------------------- agreement


def agreement(texts_a: Mapping[int, str], texts_b: Mapping[int, str]) -> float:
    """Fraction of the images both settings answered whose generated texts are exactly equal."""
    shared = texts_a.keys() & texts_b.keys()
    if not shared:
        raise ValueError("no image ids in common: agreement is undefined")
    return sum(texts_a[i] == texts_b[i] for i in shared) / len(shared)


# Records that must match for two texts to be comparable; batch size, attention, cache, layout and prefetch
# are left out because they preserve tokens (TOKEN_PRESERVING).
_SAME_WORK = ("variant", "checkpoint", "weights", "task", "dataset", "num_beams", "max_new_tokens")
# The reference: transformers, fp32, not quantised, the processor's pixels, eager (compiled kernels fuse and
# reorder floating-point operations, so compiled records are checked against it, not used as it).
_EAGER_FP32 = ("transformers", "fp32", "none", "host", False, False)


def _token_setting(r: Record) -> tuple:
    settings = r.settings
    return (r.backend or "transformers", r.dtype, settings.quant or "none", settings.preprocess or "host",
            r.compile or False, settings.compile_vision or False)


def _texts(r: Record) -> dict[int, str]:
    """The record's generated texts by image id (``extra.texts``); records are untrusted: what is not id -> text
    is skipped."""
    found = r.extra.texts
    items = found.items() if isinstance(found, dict) else ()
    return {int(k): v for k, v in items if isinstance(k, str) and k.isdigit() and isinstance(v, str)}


def agreement_with_fp32(records: Iterable[Record]) -> dict[str, float]:
    """For each ok record that may change tokens (fp16/bf16, int8, device pixels, compiled, another backend),
    exact-match agreement with an eager fp32 transformers record of the same work.

    Texts are read from ``extra.texts`` (image id -> generated text). Returns cell_id -> agreement; records
    with no eager fp32 counterpart are left out.
    """

    def key(r: Record) -> tuple:
        return tuple(getattr(r, f) for f in _SAME_WORK)

    ok = [(r, texts) for r in records if r.status == "ok" and (texts := _texts(r))]
    references: dict[tuple, dict[int, str]] = {}
    for r, texts in ok:
        if _token_setting(r) == _EAGER_FP32:
            references.setdefault(key(r), texts)
    out = {}
    for r, texts in ok:
        reference = references.get(key(r))
        if _token_setting(r) != _EAGER_FP32 and reference and reference.keys() & texts.keys():
            out[r.cell_id] = agreement(reference, texts)
    return out
