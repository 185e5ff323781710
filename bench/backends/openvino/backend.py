"""OpenVINO backend: Florence-2's vision tower and projector converted with ``openvino.convert_model``.

The checkpoint is loaded by transformers in fp32 (``bench.backends.transformers``); the vision tower
and the projector are then replaced by modules that run their OpenVINO IR, so generate(), the
tasks, beams, forced token counts, post-processing, the processor's preprocessing and the timing
hooks are the transformers backend's, unchanged. The text encoder and the decoder stay in PyTorch:
the vision tower is most of a CPU request (docs/performance.md), and converting the decoder with
its KV cache is not done yet.

Converted IR is cached on disk (``OpenVINOSettings.cache_dir``) keyed by checkpoint, part, input
shape and weight precision; converting or reading it counts as the cell's load, never as latency.
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
from bench.backends.transformers.checkpoints import (
    ATTN,
    CheckpointRef,
    LoadedModel,
    LoadOptions,
    load,
    weights_bytes,
)
from bench.variants import Variant

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

    def load(self, variant: Variant, ref: CheckpointRef, cell: Any, options: LoadOptions) -> LoadedModel:
        loaded = load(variant, ref, device="cpu", dtype="fp32", attn=cell.attn, options=options)
        loaded.model.generation_config.disable_compile = True
        ov = self.importer("openvino")
        import torch

        from bench.backends.openvino.modules import OVPart, TowerOutput

        inner = loaded.model.model
        size = loaded.processor.image_processor.size
        pixels = torch.zeros(1, 3, size["height"], size["width"])
        threads = self.settings.threads or torch.get_num_threads()
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[cell.dtype], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads}
        core = ov.Core()
        parts, ir_bytes = [], 0
        tower = TowerOutput(inner.vision_tower)
        features = tower(pixels)
        for name, module, example in (("vision_tower", tower, pixels),
                                      ("multi_modal_projector", inner.multi_modal_projector, features)):
            started = time.perf_counter()
            path, converted = self.ir(ov, loaded, name, module, example, cell.quant)
            compiled = core.compile_model(str(path), "CPU", config)
            seconds = time.perf_counter() - started
            parts.append({"part": name, "ir": str(path), "converted": converted, "load_s": round(seconds, 3)})
            ir_bytes += path.with_suffix(".bin").stat().st_size
            setattr(inner, name, OVPart(compiled, wrap_tower=name == "vision_tower"))
        loaded.weights_bytes = weights_bytes(loaded.model) + ir_bytes
        loaded.notes = [f"vision tower and projector in OpenVINO {ov.__version__} (IR cached in "
                        f"{self.settings.cache_dir}), INFERENCE_PRECISION_HINT {PRECISIONS[cell.dtype]}, "
                        f"{threads} threads; text encoder and decoder in PyTorch fp32"]
        if cell.quant == "int8-weights":
            loaded.notes.append("vision tower and projector weights compressed to int8 (nncf.compress_weights)")
        loaded.backend_info = {"openvino": ov.__version__, "inference_precision": PRECISIONS[cell.dtype],
                               "threads": threads, "converted_parts": parts, "pytorch_parts": ["text encoder",
                                                                                               "decoder"]}
        return loaded

    def ir(self, ov: ModuleType, loaded: LoadedModel, part: str, module: Any, example: Any,
           quant: str) -> tuple[Path, bool]:
        """The cached IR of one part (converted now when absent); returns its path and whether it was converted."""
        root = Path(self.settings.cache_dir).expanduser().resolve()
        key = ir_key(loaded, part, tuple(example.shape[1:]), quant, ov.__version__)
        folder = (root / f"{part}-{key}").resolve()
        if folder.parent != root:  # the key is hex; a path outside the cache is never written
            raise ValueError(f"IR folder {folder} is outside the cache {root}")
        path = folder / IR_FILE
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path, False
        import torch

        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(module, example_input=example,
                                     input=[ov.PartialShape([-1, *example.shape[1:]])])
        if quant == "int8-weights":
            model = self.importer("nncf").compress_weights(model)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=root))  # written whole, then renamed into place
        try:
            ov.save_model(model, str(staging / IR_FILE), compress_to_fp16=False)
            (staging / "key.json").write_text(json.dumps(ir_key_fields(loaded, part, tuple(example.shape[1:]), quant,
                                                                       ov.__version__), indent=1, default=str))
            try:
                staging.rename(folder)
            except OSError:  # another process put it there first: theirs is the same conversion
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return path, True

    def pipeline(self, loaded, task, generation, *, device, dtype, clock, preprocess="host", prefetch=False):
        """The transformers pipeline: pixels in fp32 (the IR's input), whatever precision OpenVINO computes in."""
        return super().pipeline(loaded, task, generation, device=device, dtype="fp32", clock=clock,
                                preprocess=preprocess, prefetch=prefetch)

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        return dict(loaded.backend_info)


def ir_key_fields(loaded: LoadedModel, part: str, shape: tuple, quant: str, version: str) -> dict[str, Any]:
    """What a converted part depends on: the checkpoint (its config, and its weight files' sizes and times),
    the part, the input shape past the batch, the weight precision and the converter's version."""
    ref = loaded.ref
    files = []
    if ref.directory is not None:
        files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(Path(ref.directory).glob("*")) if p.suffix in (".safetensors", ".bin", ".json")]
    return {"checkpoint": ref.checkpoint, "weights": ref.weights, "files": files, "part": part,
            "config": loaded.model.config.to_json_string(use_diff=False), "shape": list(shape),
            "weight_precision": "int8" if quant == "int8-weights" else "f32", "openvino": version}


def ir_key(loaded: LoadedModel, part: str, shape: tuple, quant: str, version: str) -> str:
    fields = ir_key_fields(loaded, part, shape, quant, version)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
