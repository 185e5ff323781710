"""OpenVINO backend: Florence-2's vision tower, projector and text encoder converted with ``openvino.convert_model``.

The checkpoint is loaded by transformers in fp32 (``bench.backends.transformers``); those parts are
then replaced by modules that run their OpenVINO IR, so generate(), the tasks, beams, forced token
counts, post-processing, the processor's preprocessing and the timing hooks are the transformers
backend's, unchanged. The decoder (with its KV cache and beam reordering) stays in PyTorch, in the
cell's dtype: converting it is the next step where decoding dominates (docs/performance.md).

Converted IR is cached on disk (``OpenVINOSettings.cache_dir``) keyed by checkpoint, part, input
shapes and weight precision; converting or reading it counts as the cell's load, never as latency.
``dtype`` bf16 is OpenVINO's ``INFERENCE_PRECISION_HINT`` on the same f32 IR (native bf16 CPUs only:
``bench.runner`` skips the cell elsewhere); ``quant int8-weights`` is ``nncf.compress_weights``.
"""

from __future__ import annotations

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
from bench.backends.openvino.config import INSTALL_HINT, PRECISIONS, QUANT, OpenVINOSettings
from bench.backends.transformers.backend import CACHES
from bench.backends.transformers.checkpoints import ATTN, LoadedModel, weights_bytes

IR_FILE = "model.xml"


class OpenVINOBackend(Backend):
    name = "openvino"
    axes = {"dtype": tuple(PRECISIONS), "attn": ATTN, "cache": CACHES, "quant": QUANT, "compile": (False,),
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
        return self._missing("nncf") if cell.quant == "int8-weights" else None

    def load_dtype(self, cell: Any) -> str:
        return "fp32"  # parts are converted from fp32 weights; the PyTorch parts are cast to the cell's dtype after

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        """Convert (or read from the cache) and compile the vision tower, projector and text encoder, and put
        them in place; the decoder stays in PyTorch, in the cell's dtype."""
        import torch

        from bench.backends.openvino.modules import EncoderOutput, OVPart, TowerOutput
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
        # the PyTorch decoder's dtype: the cell's, or fp32 under dynamic int8 (which quantises fp32 linears)
        dtype = torch.float32 if cell.quant == "int8-dynamic" else torch_dtype(cell.dtype)
        tower = TowerOutput(inner.vision_tower)
        with torch.no_grad():
            features = tower(pixels)
            embeds = inner.multi_modal_projector(features)[:, :8]  # any length: the sequence axis is dynamic
        mask = torch.ones(1, embeds.shape[1], dtype=torch.int64)
        mask[0, -1] = 0  # a padded row, so that the traced encoder keeps its attention mask
        parts, ir_bytes = [], 0
        for name, owner, module, example, dynamic in (
                ("vision_tower", inner, tower, (pixels,), (1,)),
                ("multi_modal_projector", inner, inner.multi_modal_projector, (features,), (1,)),
                ("encoder", text, EncoderOutput(text.encoder), (embeds, mask), (2, 2))):
            started = time.perf_counter()
            path, converted = self.ir(ov, loaded, name, module, example, dynamic, cell.quant)
            compiled = core.compile_model(str(path), "CPU", config)
            parts.append({"part": name, "ir": str(path), "converted": converted,
                          "load_s": round(time.perf_counter() - started, 3)})
            ir_bytes += path.with_suffix(".bin").stat().st_size
            setattr(owner, name, OVPart(compiled, name, dtype))
        if cell.quant == "int8-dynamic":  # the decoder's linears in dynamic int8 (from fp32, as in transformers)
            from bench.optimize import MODEL_SETTINGS

            decoder = MODEL_SETTINGS["quant"](loaded, cell)  # it counts the packed int8 weights too
        else:
            loaded.model.to(dtype)  # the decoder (and the embeddings the encoder reads) in the cell's dtype
            decoder = f"PyTorch {cell.dtype}"
            loaded.weights_bytes = weights_bytes(loaded.model)
        loaded.weights_bytes += ir_bytes
        loaded.notes = [f"vision tower, projector and text encoder in OpenVINO {ov.__version__} (IR cached in "
                        f"{self.settings.cache_dir}), INFERENCE_PRECISION_HINT {PRECISIONS[cell.dtype]}, "
                        f"{threads} threads; decoder: {decoder}"]
        if cell.quant == "int8-weights":
            loaded.notes.append("converted parts' weights compressed to int8 (nncf.compress_weights)")
        loaded.backend_info = {"openvino": ov.__version__, "inference_precision": PRECISIONS[cell.dtype],
                               "threads": threads, "converted_parts": parts, "pytorch_parts": ["decoder"]}

    def ir(self, ov: ModuleType, loaded: LoadedModel, part: str, module: Any, example: tuple, dynamic: tuple,
           quant: str) -> tuple[Path, bool]:
        """The cached IR of one part (converted now when absent); returns its path and whether it was converted.

        ``dynamic[i]``: how many leading axes of input i are dynamic (the batch; for the encoder, the sequence too).
        """
        root = Path(self.settings.cache_dir).expanduser().resolve()
        shapes = [[-1] * n + list(t.shape[n:]) for t, n in zip(example, dynamic, strict=True)]
        key = ir_key(loaded, part, shapes, quant, ov.__version__)
        folder = (root / f"{part}-{key}").resolve()
        if folder.parent != root:  # the key is hex; a path outside the cache is never written
            raise ValueError(f"IR folder {folder} is outside the cache {root}")
        path = folder / IR_FILE
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path, False
        import torch

        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(s) for s in shapes])
        if quant == "int8-weights":
            model = self.importer("nncf").compress_weights(model)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=root))  # written whole, then renamed into place
        try:
            ov.save_model(model, str(staging / IR_FILE), compress_to_fp16=False)
            fields = ir_key_fields(loaded, part, shapes, quant, ov.__version__)
            (staging / "key.json").write_text(json.dumps(fields, indent=1, default=str))
            try:
                staging.rename(folder)
            except OSError:  # another process put it there first: theirs is the same conversion
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return path, True

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        return dict(loaded.backend_info)


def ir_key_fields(loaded: LoadedModel, part: str, shapes: list, quant: str, version: str) -> dict[str, Any]:
    """What a converted part depends on: the checkpoint (its config, and its weight files' sizes and times),
    the part, the input shape past the batch, the weight precision and the converter's version."""
    ref = loaded.ref
    files = []
    if ref.directory is not None:
        files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(Path(ref.directory).glob("*")) if p.suffix in (".safetensors", ".bin", ".json")]
    return {"checkpoint": ref.checkpoint, "weights": ref.weights, "files": files, "part": part,
            "config": loaded.model.config.to_json_string(use_diff=False), "shapes": shapes,
            "weight_precision": "int8" if quant == "int8-weights" else "f32", "openvino": version}


def ir_key(loaded: LoadedModel, part: str, shapes: list, quant: str, version: str) -> str:
    fields = ir_key_fields(loaded, part, shapes, quant, version)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
