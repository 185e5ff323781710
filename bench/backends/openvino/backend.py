"""OpenVINO backend: Florence-2's vision tower, projector, text encoder and decoder converted with
``openvino.convert_model``.

The checkpoint is loaded by transformers in fp32 (``bench.backends.transformers``); those parts are
then replaced by modules that run their OpenVINO IR, so generate(), the tasks, beams, forced token
counts, post-processing, the processor's preprocessing and the timing hooks are the transformers
backend's, unchanged. The decoder is two IRs, its first step and its cached steps, one token a call;
its self-attention cache stays in generate()'s cache object, so beam search reorders it as usual
(``runtime.OVDecoder``). The lm_head is converted too; what stays in PyTorch is the prompt's token embeddings
and generate()'s own work (beam search, logits processing), in the cell's dtype.

Converted IR is cached on disk (``OpenVINOSettings.cache_dir``) keyed by checkpoint, part, input
shapes and weight precision; converting or reading it counts as the cell's load, never as latency.
``dtype`` bf16 is OpenVINO's ``INFERENCE_PRECISION_HINT`` on the same f32 IR (native bf16 CPUs only:
``bench.run.runner`` skips the cell elsewhere). ``quant int8-weights`` and ``int8-dynamic`` run the IR with its
weights compressed by ``nncf.compress_weights``; int8-dynamic also quantises activations per call
(``config.QUANT``), as the transformers backend's int8-dynamic does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.backends.base import LoadedModel
from bench.backends.openvino.config import (
    INSTALL_HINT,
    PRECISIONS,
    QUANT,
    OpenVINOSettings,
    weight_precision,
)
from bench.backends.transformers.backend import CheckpointBackend
from bench.backends.transformers.checkpoints import ATTN, weights_bytes
from bench.core.errors import UsageError
from bench.core.inputs import parse_json
from bench.core.paths import (
    make_dir,
    open_read,
    private_dir,
    read_bytes,
    read_text,
    remove_file,
    remove_tree,
    rename,
    staging_dir,
    write_atomic,
)

IR_FILE = "model.xml"
KEY_FILE = "key.json"
PER_TOKEN = ("decoder_step", "lm_head")  # run once per generated token, on a batch's beam rows


@dataclass
class CompiledParts:
    """The converted parts of a model, compiled: by part name, the compiled model and its streams; a row per
    part for ``backend_info``; the IR's weight bytes; why a part ran uncached."""

    compiled: dict[str, Any] = dataclasses.field(default_factory=dict)
    streams: dict[str, int] = dataclasses.field(default_factory=dict)
    parts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ir_bytes: int = 0
    uncached: list[str] = dataclasses.field(default_factory=list)


def part_specs(loaded: LoadedModel) -> list[tuple]:
    """The parts OpenVINO runs, traced once on example inputs: (name, module, example inputs, how many leading
    axes of each are dynamic)."""
    import torch

    from bench.backends.openvino.traced import DecoderStep, EncoderOutput, TowerOutput

    inner = loaded.model.model
    text = inner.language_model
    size = loaded.processor.image_processor.size
    pixels = torch.zeros(1, 3, size["height"], size["width"])
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
    return [("vision_tower", tower, (pixels,), (1,)),
            ("multi_modal_projector", inner.multi_modal_projector, (features,), (1,)),
            ("encoder", encoder, (embeds, mask), (2, 2)),  # rows, tokens
            ("decoder_first", first, (ids, position, mask, encoded), (1, 0, 2, 2)),
            ("decoder_step", step, (beams[0], position + 1, mask, *beams[1:], *states[2 * layers:]),
             (1, 0, 2) + (3,) * len(states)),  # rows (images for the mask and cross keys), tokens, heads
            ("lm_head", loaded.model.lm_head, (torch.zeros(1, 1, loaded.model.lm_head.in_features),), (2,))]


def install_parts(loaded: LoadedModel, compiled: dict[str, Any], streams: dict[str, int], dtype: Any) -> None:
    """Put the compiled parts in the model's place; they hand back ``dtype``."""
    from bench.backends.openvino.runtime import OVDecoder, OVPart

    inner = loaded.model.model
    text = inner.language_model
    inner.vision_tower = OVPart(compiled["vision_tower"], "vision_tower", dtype, streams["vision_tower"])
    inner.multi_modal_projector = OVPart(compiled["multi_modal_projector"], "multi_modal_projector", dtype,
                                         streams["multi_modal_projector"])
    text.encoder = OVPart(compiled["encoder"], "encoder", dtype, streams["encoder"])
    text.decoder = OVDecoder(compiled["decoder_first"], compiled["decoder_step"], text.decoder, dtype,
                             streams["decoder_first"])
    loaded.model.lm_head = OVPart(compiled["lm_head"], "lm_head", dtype, streams["lm_head"])


class OpenVINOBackend(CheckpointBackend):
    name = "openvino"
    axes = {"dtype": tuple(PRECISIONS), "attn": ATTN, "cache": ("dynamic",), "quant": tuple(QUANT), "compile": (False,),
            "compile_vision": (False,), "channels_last": (False,), "preprocess": ("host",)}
    install_hint = INSTALL_HINT
    settings_type = OpenVINOSettings

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
        return None if QUANT[cell.quant] is None else self._missing("nncf")

    def threads(self, cell: Any) -> int:
        """The cell's inference threads: the setting, else the cell's ``threads``, else as many as torch uses."""
        import torch

        asked = getattr(cell, "threads", "auto")
        return self.settings.threads or (asked if isinstance(asked, int) else torch.get_num_threads())

    def streams(self, cell: Any) -> int:
        """The setting, else one stream per image of the cell's batch, at most one per thread."""
        return self.settings.streams or max(1, min(self.threads(cell), cell.batch_size))

    def load_key(self, cell: Any) -> tuple:
        return self.threads(cell), self.streams(cell)  # both are fixed when the parts are compiled

    def load_dtype(self, cell: Any) -> str:
        return "fp32"  # parts are converted from fp32 weights; the PyTorch parts are cast to the cell's dtype after

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        """Convert (or read from the cache) and compile the vision tower, projector, text encoder, decoder
        (its first step and its cached steps) and lm_head, and put them in place; the prompt's token
        embeddings stay in PyTorch, in the cell's dtype."""
        from bench.backends.transformers.checkpoints import torch_dtype

        loaded.model.generation_config.disable_compile = True
        ov = self.importer("openvino")
        threads, group = self.threads(cell), QUANT[cell.quant]
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[cell.dtype], "INFERENCE_NUM_THREADS": threads}
        if group is not None:  # with int8 weights OpenVINO would pick its own group size: the cell states it
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = group
        built = self._compile_parts(ov, loaded, cell, part_specs(loaded), config)
        dtype = torch_dtype(cell.dtype)  # the token embeddings', and what the converted parts hand back
        install_parts(loaded, built.compiled, built.streams, dtype)
        loaded.model.to(dtype)  # the prompt's token embeddings (what the encoder reads) in the cell's dtype
        loaded.weights_bytes = weights_bytes(loaded.model) + built.ir_bytes
        self._describe(loaded, ov, cell, built)

    def _compile_parts(self, ov: ModuleType, loaded: LoadedModel, cell: Any, specs: list[tuple],
                       config: dict[str, Any]) -> CompiledParts:
        """Each part's IR (cached or converted now), compiled for the CPU with the cell's settings and streams."""
        core, streams, digests = ov.Core(), self.streams(cell), checkpoint_digests(loaded)
        built = CompiledParts()
        for name, module, example, dynamic in specs:
            started = time.perf_counter()
            # the parts that run once per token read all their weights for a few rows: split across streams,
            # each stream would read them again, so they keep one stream with every thread
            built.streams[name] = split = 1 if name in PER_TOKEN else streams
            entry = self.ir(ov, loaded, name, module, example, dynamic, weight_precision(cell.quant), digests)
            if entry.note:
                built.uncached.append(entry.note)
            built.compiled[name] = core.compile_model(entry.model, "CPU", {**config, **(
                {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": split} if split > 1 else
                {"PERFORMANCE_HINT": "LATENCY"})})
            built.parts.append({"part": name, "ir": str(entry.path) if entry.path else None,
                                "converted": entry.converted, "streams": split,
                                "load_s": round(time.perf_counter() - started, 3)})
            built.ir_bytes += entry.bin_bytes
        return built

    def _describe(self, loaded: LoadedModel, ov: ModuleType, cell: Any, built: CompiledParts) -> None:
        """The loaded model's notes and the record's ``backend_info``: what runs where, at which precision."""
        threads, streams, group = self.threads(cell), self.streams(cell), QUANT[cell.quant]
        uncached = built.uncached
        loaded.notes = [f"vision tower, projector, text encoder, decoder and lm_head in OpenVINO {ov.__version__} (IR cached "
                        f"in {self.settings.cache_dir}), INFERENCE_PRECISION_HINT {PRECISIONS[cell.dtype]}, "
                        f"{threads} threads in {streams} stream(s), a batch's images split across them (the "
                        f"per-token parts, {' and '.join(PER_TOKEN)}: one stream with every thread); token "
                        f"embeddings: PyTorch {cell.dtype}", *uncached]
        if group is not None:
            activations = (f"activations quantised per call in groups of {group}" if group else
                           f"activations in {PRECISIONS[cell.dtype]}")
            loaded.notes.append(f"weights compressed to int8 (nncf.compress_weights); {activations} "
                                f"(DYNAMIC_QUANTIZATION_GROUP_SIZE {group})")
        loaded.backend_info = {"openvino": ov.__version__, "inference_precision": PRECISIONS[cell.dtype],
                               "weight_precision": weight_precision(cell.quant),
                               "dynamic_quantization_group_size": group, "threads": threads, "streams": streams,
                               "converted_parts": built.parts, "pytorch_parts": ["embed_tokens"],
                               "ir_cache": "; ".join(uncached) if uncached else "used"}

    def ir(self, ov: ModuleType, loaded: LoadedModel, part: str, module: Any, example: tuple, dynamic: tuple,
           precision: str, files: list[tuple[str, str]]) -> IREntry:
        """The IR of one part: from the cache when its entry is there and verified, else converted now and
        cached (a damaged or foreign entry, a link, a FIFO, files that do not match their digests, is
        converted again once, with a warning; a cache that cannot be written: the part runs uncached, said).

        ``dynamic[i]``: how many leading axes of input i are dynamic (the batch; for the encoder, the sequence too).
        ``precision``: how its weights are stored (``config.weight_precision``); ``files``: ``checkpoint_digests``.
        """
        root = Path(self.settings.cache_dir).expanduser().resolve()
        shapes = [[-1] * n + list(t.shape[n:]) for t, n in zip(example, dynamic, strict=True)]
        fields = ir_key_fields(loaded, part, shapes, precision, ov.__version__, files)
        key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
        folder = root / f"{part}-{key}"  # the key is hex: a name in the cache, never a path out of it
        if os.path.lexists(folder):
            try:
                return read_ir(ov, folder)
            except (UsageError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
                warnings.warn(f"IR cache entry {folder} is damaged or foreign ({exc}); converting it again",
                              stacklevel=2)
                with contextlib.suppress(OSError, UsageError):
                    discard(folder, root)
        import torch

        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(s) for s in shapes])
        if precision == "int8":
            model = self.importer("nncf").compress_weights(model)
        try:
            return write_ir(ov, model, fields, root, folder)
        except (OSError, UsageError) as exc:  # a read-only or full cache: this part runs without it
            note = (f"IR cache {root} cannot be written ({exc}); {part} ran without caching (converted in this "
                    "process)")
            warnings.warn(note, stacklevel=2)
            with private_dir("florence2-bench-ir-") as private:  # its size, as a cached IR's would be measured
                ov.save_model(model, str(private / IR_FILE), compress_to_fp16=False)
                size = (private / IR_FILE).with_suffix(".bin").stat().st_size
            return IREntry(model, None, True, size, note)

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        settings = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
        return {**loaded.backend_info, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}}


@dataclass
class IREntry:
    """One converted part: the model, where it is cached (None: not cached), whether it was converted now,
    its weights' bytes, and why it was not cached (None when it was)."""

    model: Any
    path: Path | None
    converted: bool
    bin_bytes: int
    note: str | None = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_ir(ov: ModuleType, folder: Path) -> IREntry:
    """A cached entry read through the door (no link, no FIFO) and checked against the digests its key.json
    holds; the model is made from those very bytes, so what was checked is what runs."""
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of the cache")
    key = parse_json(read_text(folder / KEY_FILE, "IR file"))  # nested too deep: a ValueError, discarded
    xml = read_bytes(folder / IR_FILE, "IR file")
    weights = read_bytes((folder / IR_FILE).with_suffix(".bin"), "IR file")
    if not isinstance(key, dict) or key.get("xml_sha256") != _digest(xml) or key.get("bin_sha256") != _digest(weights):
        raise ValueError("its files do not match the digests in its key.json")
    import numpy as np

    model = ov.Core().read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
    return IREntry(model, folder / IR_FILE, False, len(weights))


def write_ir(ov: ModuleType, model: Any, fields: dict[str, Any], root: Path, folder: Path) -> IREntry:
    """Save ``model`` into a fresh folder in the cache, with key.json (its key's fields and its files' digests)
    written last, then rename it into place; another process's entry already there is kept (the same key)."""
    make_dir(root, "IR folder")
    with staging_dir(root, "IR folder") as staging:
        ov.save_model(model, str(staging / IR_FILE), compress_to_fp16=False)
        weights = read_bytes((staging / IR_FILE).with_suffix(".bin"), "IR file")
        digests = {"xml_sha256": _digest(read_bytes(staging / IR_FILE, "IR file")), "bin_sha256": _digest(weights)}
        write_atomic(staging / KEY_FILE, json.dumps({**fields, **digests}, indent=1, default=str), what="IR file")
        with contextlib.suppress(OSError):  # another process put it there first: theirs is the same conversion
            rename(staging, folder, "IR folder")
    return IREntry(model, folder / IR_FILE, True, len(weights))


def discard(folder: Path, root: Path) -> None:
    """Remove a damaged or foreign cache entry: a link's name (never its target), a file, or a folder."""
    if folder.is_symlink() or not folder.is_dir():
        remove_file(folder, "IR folder")
    else:
        remove_tree(folder, root, "IR folder")


def checkpoint_digests(loaded: LoadedModel) -> list[tuple[str, str]]:
    """Each weights and config file of the checkpoint with its sha256, read through the door: a file replaced
    with the same size and time still converts again (computed once per load, for all its parts)."""
    if loaded.ref.directory is None:
        return []
    out = []
    for path in sorted(Path(loaded.ref.directory).glob("*")):
        if path.suffix in (".safetensors", ".bin", ".json"):
            digest = hashlib.sha256()
            with open_read(path, "input") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(chunk)
            out.append((path.name, digest.hexdigest()))
    return out


def ir_key_fields(loaded: LoadedModel, part: str, shapes: list, precision: str, version: str,
                  files: list[tuple[str, str]]) -> dict[str, Any]:
    """What a converted part depends on: the checkpoint (its config, and its weight files' contents: sha256),
    the part, the input shape past the batch, the weight precision, the converter's version, and the source
    of the modules that are traced (a change to them converts again)."""
    ref = loaded.ref
    return {"checkpoint": ref.checkpoint, "weights": ref.weights, "files": files, "part": part,
            "config": loaded.model.config.to_json_string(use_diff=False), "shapes": shapes,
            "weight_precision": precision, "openvino": version,
            "traced": _traced_source_digest()}


@functools.lru_cache(maxsize=1)
def _traced_source_digest() -> str:
    from bench.backends.openvino import traced

    return hashlib.sha256(Path(traced.__file__).read_bytes()).hexdigest()[:16]


