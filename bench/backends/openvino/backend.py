"""OpenVINO backend: Florence-2's vision tower, projector, text encoder and decoder converted with
``openvino.convert_model``.

The checkpoint is loaded by transformers in fp32 (``bench.backends.transformers``); those parts are
then replaced by modules that run their OpenVINO IR, so generate(), the tasks, beams, forced token
counts, post-processing, the processor's preprocessing and the timing hooks are the transformers
backend's, unchanged. The decoder is two IRs, its first step and its cached steps, one token a call;
its self-attention cache stays in generate()'s cache object, so beam search reorders it as usual
(``modules.OVDecoder``). The lm_head stays in PyTorch, in the cell's dtype.

Converted IR is cached on disk (``OpenVINOSettings.cache_dir``) keyed by checkpoint, part, input
shapes and weight precision; converting or reading it counts as the cell's load, never as latency.
``dtype`` bf16 is OpenVINO's ``INFERENCE_PRECISION_HINT`` on the same f32 IR (native bf16 CPUs only:
``bench.runner`` skips the cell elsewhere); ``quant int8-weights`` is ``nncf.compress_weights``, and
``int8-static`` is ``nncf.quantize`` of the vision tower, calibrated on synthetic-smoke images.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.backends.base import Backend
from bench.backends.openvino.config import (
    INSTALL_HINT,
    NEEDS_NNCF,
    PRECISIONS,
    QUANT,
    STATIC_INT8_PARTS,
    OpenVINOSettings,
    part_precision,
)
from bench.backends.transformers.checkpoints import ATTN, LoadedModel, weights_bytes

IR_FILE = "model.xml"


class OpenVINOBackend(Backend):
    name = "openvino"
    axes = {"dtype": tuple(PRECISIONS), "attn": ATTN, "cache": ("dynamic",), "quant": QUANT, "compile": (False,),
            "compile_vision": (False,), "channels_last": (False,), "preprocess": ("host",)}
    install_hint = INSTALL_HINT

    def __init__(self, settings: OpenVINOSettings | None = None,
                 importer: Callable[[str], ModuleType] = importlib.import_module) -> None:
        self.settings = settings or OpenVINOSettings()
        self.importer = importer  # the seam tests use to make a package missing

    def _missing(self, *packages: str) -> str | None:
        for package in packages:
            try:
                self.importer(package)
            except ImportError as exc:
                return f"backend openvino needs {package!r}, which is not installed ({exc}); install: {INSTALL_HINT}"
        return None

    def unavailable_reason(self) -> str | None:
        return self._missing("openvino")

    def unsupported_reason(self, cell: Any) -> str | None:
        if reason := super().unsupported_reason(cell):
            return reason
        if not str(cell.device).startswith("cpu"):
            return f"backend openvino runs on the CPU here (device {cell.device}); accepted: cpu"
        return self._missing("nncf") if cell.quant in NEEDS_NNCF else None

    def load_dtype(self, cell: Any) -> str:
        return "fp32"  # parts are converted from fp32 weights; the PyTorch parts are cast to the cell's dtype after

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        """Convert (or read from the cache) and compile the vision tower, projector, text encoder and decoder
        (its first step and its cached steps), and put them in place; the lm_head stays in PyTorch, in the
        cell's dtype. Under ``int8-dynamic`` the decoder stays in PyTorch, in dynamic int8."""
        import torch

        from bench.backends.openvino.modules import DecoderStep, EncoderOutput, OVDecoder, OVPart, TowerOutput
        from bench.backends.transformers.checkpoints import torch_dtype

        loaded.model.generation_config.disable_compile = True
        ov = self.importer("openvino")
        inner = loaded.model.model
        text = inner.language_model
        size = loaded.processor.image_processor.size
        pixels = torch.zeros(1, 3, size["height"], size["width"])
        threads = self.settings.threads or torch.get_num_threads()
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[cell.dtype], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads}
        core = ov.Core()
        # the PyTorch parts' dtype: the cell's, or fp32 under dynamic int8 (which quantises fp32 linears)
        dtype = torch.float32 if cell.quant == "int8-dynamic" else torch_dtype(cell.dtype)
        convert_decoder = cell.quant != "int8-dynamic"
        tower = TowerOutput(inner.vision_tower)
        encoder = EncoderOutput(text.encoder)
        first, step = DecoderStep(text.decoder, past=False), DecoderStep(text.decoder, past=True)
        with torch.no_grad():
            features = tower(pixels)
            embeds = inner.multi_modal_projector(features)[:, :8]  # any length: the sequence axis is dynamic
            mask = torch.ones(1, embeds.shape[1], dtype=torch.int64)
            mask[0, -1] = 0  # a padded row, so that the traced encoder and decoder keep the attention mask
            encoded = encoder(embeds, mask)
            ids, position = torch.full((1, 1), text.config.decoder_start_token_id), torch.zeros(1, dtype=torch.int64)
            states = first(ids, position, mask, encoded)[1:]  # this token's keys and values, then the cross ones
            layers = len(text.decoder.layers)
            # the cached step's example: two beams (rows) of one image, so the traced step groups rows
            beams = [t.repeat(2, *([1] * (t.dim() - 1))) for t in (ids, *states[:2 * layers])]
        # (name, example inputs, how many leading axes of each are dynamic); the decoder's: rows, length, heads
        specs = [("vision_tower", (pixels,), (1,)), ("multi_modal_projector", (features,), (1,)),
                 ("encoder", (embeds, mask), (2, 2))]
        if convert_decoder:
            specs += [("decoder_first", (ids, position, mask, encoded), (1, 0, 2, 2)),
                      ("decoder_step", (beams[0], position + 1, mask, *beams[1:], *states[2 * layers:]),
                       (1, 0, 2) + (3,) * len(states))]
        modules = {"vision_tower": tower, "multi_modal_projector": inner.multi_modal_projector,
                   "encoder": encoder, "decoder_first": first, "decoder_step": step}
        parts, compiled, ir_bytes = [], {}, 0
        for name, example, dynamic in specs:
            started = time.perf_counter()
            path, converted = self.ir(ov, loaded, name, modules[name], example, dynamic,
                                      part_precision(name, cell.quant))
            compiled[name] = core.compile_model(str(path), "CPU", config)
            parts.append({"part": name, "ir": str(path), "precision": part_precision(name, cell.quant),
                          "converted": converted, "load_s": round(time.perf_counter() - started, 3)})
            ir_bytes += path.with_suffix(".bin").stat().st_size
        inner.vision_tower = OVPart(compiled["vision_tower"], "vision_tower", dtype)
        inner.multi_modal_projector = OVPart(compiled["multi_modal_projector"], "multi_modal_projector", dtype)
        text.encoder = OVPart(compiled["encoder"], "encoder", dtype)
        if convert_decoder:
            text.decoder = OVDecoder(compiled["decoder_first"], compiled["decoder_step"], text.decoder, dtype)
            loaded.model.to(dtype)  # the lm_head (and the embeddings the encoder reads) in the cell's dtype
            decoder = "OpenVINO (its KV cache in PyTorch tensors); lm_head: PyTorch " + cell.dtype
            loaded.weights_bytes = weights_bytes(loaded.model)
        else:  # the decoder's linears in dynamic int8 (from fp32, as in transformers)
            from bench.optimize import MODEL_SETTINGS

            decoder = MODEL_SETTINGS["quant"](loaded, cell)  # it counts the packed int8 weights too
        loaded.weights_bytes += ir_bytes
        converted_names = "vision tower, projector, text encoder and decoder" if convert_decoder else (
            "vision tower, projector and text encoder")
        loaded.notes = [f"{converted_names} in OpenVINO {ov.__version__} (IR cached in {self.settings.cache_dir}), "
                        f"INFERENCE_PRECISION_HINT {PRECISIONS[cell.dtype]}, {threads} threads; decoder: {decoder}"]
        if cell.quant == "int8-weights":
            loaded.notes.append("converted parts' weights compressed to int8 (nncf.compress_weights)")
        if cell.quant == "int8-static":
            loaded.notes.append(f"{', '.join(STATIC_INT8_PARTS)}: int8 weights and activations (nncf.quantize, "
                                f"calibrated on {self.settings.calibration_images} synthetic-smoke images)")
        loaded.backend_info = {"openvino": ov.__version__, "inference_precision": PRECISIONS[cell.dtype],
                               "threads": threads, "converted_parts": parts,
                               "pytorch_parts": ["lm_head"] if convert_decoder else ["decoder", "lm_head"]}

    def ir(self, ov: ModuleType, loaded: LoadedModel, part: str, module: Any, example: tuple, dynamic: tuple,
           precision: str) -> tuple[Path, bool]:
        """The cached IR of one part (converted now when absent); returns its path and whether it was converted.

        ``dynamic[i]``: how many leading axes of input i are dynamic (the batch; for the encoder, the sequence too).
        ``precision``: ``config.part_precision``.
        """
        root = Path(self.settings.cache_dir).expanduser().resolve()
        shapes = [[-1] * n + list(t.shape[n:]) for t, n in zip(example, dynamic, strict=True)]
        fields = ir_key_fields(loaded, part, shapes, precision, ov.__version__)
        if precision == "int8-static":
            fields["calibration"] = f"{self.settings.calibration_images} synthetic-smoke images"
        key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
        folder = (root / f"{part}-{key}").resolve()
        if folder.parent != root:  # the key is hex; a path outside the cache is never written
            raise ValueError(f"IR folder {folder} is outside the cache {root}")
        path = folder / IR_FILE
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path, False
        import torch

        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(s) for s in shapes])
        if precision == "int8":
            model = self.importer("nncf").compress_weights(model)
        elif precision == "int8-static":
            model = self.quantize(model, loaded)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=root))  # written whole, then renamed into place
        try:
            ov.save_model(model, str(staging / IR_FILE), compress_to_fp16=False)
            (staging / "key.json").write_text(json.dumps(fields, indent=1, default=str))
            try:
                staging.rename(folder)
            except OSError:  # another process put it there first: theirs is the same conversion
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return path, True

    def quantize(self, model: Any, loaded: LoadedModel) -> Any:
        """int8 weights and activations for the vision tower, calibrated on the processor's pixels of
        synthetic-smoke images (deterministic; no dataset is needed to build it)."""
        from bench.data import synthetic_smoke

        nncf = self.importer("nncf")
        images = [s.load_image() for s in synthetic_smoke(self.settings.calibration_images)]
        pixels = loaded.processor.image_processor(images, return_tensors="np")["pixel_values"]
        dataset = nncf.Dataset([pixels[i:i + 1].astype("float32") for i in range(len(pixels))])
        return nncf.quantize(model, dataset, subset_size=len(pixels), model_type=nncf.ModelType.TRANSFORMER,
                             fast_bias_correction=True)

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        return dict(loaded.backend_info)


def ir_key_fields(loaded: LoadedModel, part: str, shapes: list, precision: str, version: str) -> dict[str, Any]:
    """What a converted part depends on: the checkpoint (its config, and its weight files' sizes and times),
    the part, the input shape past the batch, the weight precision, the converter's version, and the source
    of the modules that are traced (a change to them converts again)."""
    ref = loaded.ref
    files = []
    if ref.directory is not None:
        files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(Path(ref.directory).glob("*")) if p.suffix in (".safetensors", ".bin", ".json")]
    return {"checkpoint": ref.checkpoint, "weights": ref.weights, "files": files, "part": part,
            "config": loaded.model.config.to_json_string(use_diff=False), "shapes": shapes,
            "weight_precision": precision, "openvino": version,
            "traced": _traced_source_digest()}


@functools.lru_cache(maxsize=1)
def _traced_source_digest() -> str:
    from bench.backends.openvino import modules

    return hashlib.sha256(Path(modules.__file__).read_bytes()).hexdigest()[:16]


