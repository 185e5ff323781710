"""Where a model comes from and how it is loaded: local directory, HF cache, hub, or random weights.

One loading path serves real and tiny checkpoints alike (``load``), so the tests exercise the code
that users run. Random mode builds the exact published architecture and an offline processor with
Florence-2's special-token layout; its token ids are not BART's, which is fine for timing only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from bench.backends.base import CheckpointRef, LoadedModel, LoadOptions
from bench.core.errors import UsageError, choice_error
from bench.core.inputs import parse_json
from bench.core.paths import staged_dir, write_atomic
from bench.core.variants import Variant

log = logging.getLogger(__name__)

WEIGHTS_MODES = ("auto", "pretrained", "random")
DTYPES = ("fp32", "fp16", "bf16")
ATTN = ("eager", "sdpa")
IMAGE_TOKENS = 577
BART_BASE_VOCAB = 50265  # ids 0..50264 (<mask> last), then Florence-2's added tokens
# A checkpoint this harness wrote with random weights says so in this file ({"weights": "random", ...}), so a
# run that loads it with --model-path records random weights (no accuracy, forced token counts), never pretrained.
MARKER = "florence2_bench.json"

TASK_TOKENS_BEFORE_LOC = ("<od>", "</od>", "<ocr>", "</ocr>")
TASK_TOKENS_AFTER_LOC = (
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>",
    "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
    "</proposal>", "<poly>", "</poly>", "<and>",
)
ADDED_TOKENS = TASK_TOKENS_BEFORE_LOC + tuple(f"<loc_{i}>" for i in range(1000)) + TASK_TOKENS_AFTER_LOC
# post_processor_config of the published native processors: one entry per parse type
POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "ocr": {"PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "AREA_THRESHOLD": 0.0},
    "phrase_grounding": {"FILTER_BY_AREA": False,
                         "banned_grounding_tokens": ["it", "is", "are", "what", "the image", "image", "this"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def torch_dtype(name: str):
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise choice_error("dtype", name, DTYPES)
    return table[name]


# ---------------------------------------------------------------------------------------- checks


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of a directory that must be a Florence-2 checkpoint (UsageError otherwise)."""
    path = directory / "config.json"
    if not directory.is_dir():
        raise UsageError(f"model path not found: {directory}; accepted: a local Florence-2 checkpoint directory")
    if not path.is_file():
        raise UsageError(f"{directory} is not a Florence-2 checkpoint: no config.json")
    try:
        config = parse_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, not UTF-8, or nested deeper than inputs.MAX_NESTING
        raise UsageError(f"{path} is not valid JSON: {exc}; accepted: a UTF-8 JSON config object") from None
    if not isinstance(config, dict):
        raise UsageError(
            f"{path} holds a JSON {type(config).__name__}; accepted: a Florence-2 config object ({{\"model_type\": \"florence2\", ...}})"
        )
    model_type = config.get("model_type")
    if model_type != "florence2":
        raise UsageError(
            f"{directory} is not a Florence-2 checkpoint: config.json model_type {model_type!r}; accepted: 'florence2'"
        )
    for key in ("vision_config", "text_config"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise UsageError(f"{path}: {key} is {json.dumps(config[key])[:40]}; accepted: a JSON object (or absent)")
    return config


MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def check_files(directory: Path) -> None:
    """The checkpoint's JSON files (processor, tokenizer, generation configs) and safetensors headers, read
    before any cell runs: a damaged one is one line naming it (exit 2), not an error record in every cell."""
    for path in sorted(directory.glob("*.json")):
        try:
            value = parse_json(path.read_bytes().decode("utf-8"))
        except (ValueError, OSError) as exc:  # not JSON, not UTF-8, nested too deep; unreadable
            raise UsageError(f"{path} is not valid JSON ({_reason(exc)}); accepted: the checkpoint's UTF-8 JSON "
                             "file (re-download or re-make the checkpoint)") from None
        if path.name.endswith("config.json") and not isinstance(value, dict):
            raise UsageError(f"{path} holds a JSON {type(value).__name__}; accepted: a JSON object")
    for path in sorted(directory.glob("*.safetensors")):
        if why := _safetensors_problem(path):
            raise UsageError(f"{path} is not a complete safetensors file ({why}); accepted: the checkpoint's "
                             "weights as written (re-download or re-make the checkpoint)")


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:120]


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header (its size, JSON, tensor offsets), or None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or not 0 < n <= min(size - 8, MAX_SAFETENSORS_HEADER):
                return f"a header of {n} bytes in a file of {size}"
            header = parse_json(fh.read(n).decode("utf-8"))
    except (ValueError, OSError) as exc:
        return _reason(exc)
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)
            and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2]
    if len(ends) != len([k for k in header if k != "__metadata__"]) or not all(isinstance(x, int) for x in ends):
        return "a tensor entry without data_offsets"
    if ends and max(ends) > size - 8 - n:
        return f"its tensors end at byte {max(ends) + 8 + n} of {size}: truncated"
    return None


def is_original_layout(config: dict[str, Any]) -> bool:
    """Original (remote-code) configs name the vision tower 'davit' and use dim_embed."""
    vision = config.get("vision_config") or {}
    return vision.get("model_type") == "davit" or "dim_embed" in vision or "auto_map" in config


def convert_original_config(config: dict[str, Any]) -> dict[str, Any]:
    """Rename an original remote-code config's fields to the native ``Florence2Config`` names.

    Loading the original names through the native classes silently ignores ``dim_embed`` and builds a
    base-sized tower, so every field that matters is mapped explicitly and missing ones are an error.
    """
    vision = dict(config.get("vision_config") or {})
    text = dict(config.get("text_config") or {})
    if "dim_embed" not in vision:
        raise UsageError("original Florence-2 config has no vision_config.dim_embed; cannot convert it")
    native_vision = {
        "model_type": "florence_vision",
        "embed_dim": vision["dim_embed"],
        "num_heads": vision["num_heads"],
        "num_groups": vision.get("num_groups", vision["num_heads"]),
        "depths": vision.get("depths", [1, 1, 9, 1]),
        "window_size": vision.get("window_size", 12),
        "patch_size": vision.get("patch_size", [7, 3, 3, 3]),
        "patch_stride": vision.get("patch_stride", [4, 2, 2, 2]),
        "patch_padding": vision.get("patch_padding", [3, 1, 1, 1]),
        "patch_prenorm": vision.get("patch_prenorm", [False, True, True, True]),
        "projection_dim": config.get("projection_dim", vision.get("projection_dim", 1024)),
        "drop_path_rate": vision.get("drop_path_rate", 0.1),
    }
    native_text = {k: v for k, v in text.items() if not k.startswith("_") and k not in ("architectures", "auto_map")}
    native_text["model_type"] = "bart"
    return {
        "model_type": "florence2",
        "architectures": ["Florence2ForConditionalGeneration"],
        "vision_config": native_vision,
        "text_config": native_text,
        "image_token_id": config.get("image_token_id", text.get("vocab_size", 51289)),
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
    }


def native_config(directory: Path):
    """The native Florence2Config of a checkpoint directory, converting an original one."""
    from transformers import Florence2Config

    raw = read_config(directory)
    if is_original_layout(raw):
        raw = convert_original_config(raw)
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "auto_map", "transformers_version")}
    return Florence2Config(**{k: v for k, v in raw.items() if k != "model_type"})


# ------------------------------------------------------------------------------------ resolution


def _cached_snapshot(repo_id: str, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only))
    except Exception as exc:  # offline, not cached, gated: all mean "not found here"
        log.debug("no snapshot of %s (local_only=%s): %s", repo_id, local_only, exc)
        return None


def resolve(variant: Variant, options: LoadOptions) -> CheckpointRef:
    """Decide where weights come from; never silently: ``auto`` falling back to random warns."""
    if options.weights not in WEIGHTS_MODES:
        raise choice_error("weights mode", options.weights, WEIGHTS_MODES)
    if options.model_path:
        directory = Path(options.model_path).expanduser()
        read_config(directory)
        if options.weights == "random":
            return CheckpointRef("random", f"random:{directory}", None, config_directory=directory)
        if made_by := random_marker(directory):
            return CheckpointRef("random", str(directory), directory,
                                 note=f"random weights: {MARKER} says so (made by {made_by})")
        return CheckpointRef("pretrained", str(directory), directory)
    if options.weights == "random":
        return CheckpointRef("random", f"random:{variant.name}", None)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    for local_only in (True, False):
        if not local_only and offline:
            break
        directory = _cached_snapshot(variant.native_id, local_only)
        if directory is not None and (directory / "config.json").exists():
            where = "HF cache" if local_only else "hub"
            return CheckpointRef("pretrained", variant.native_id, directory, note=f"from the {where}")
    if options.weights == "pretrained":
        raise UsageError(
            f"no pretrained weights for variant {variant.name!r}: {variant.native_id} is neither in the HF cache nor "
            "reachable; accepted: --model-path DIR, a cached/online hub id, or --weights random"
        )
    warnings.warn(
        f"no pretrained weights found for {variant.name} ({variant.native_id}); using RANDOM weights "
        "(speed and memory are faithful, accuracy is not measured)",
        stacklevel=2,
    )
    return CheckpointRef("random", f"random:{variant.name}", None, note="auto: no pretrained weights found")


# --------------------------------------------------------------------------------------- loading


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_bytes(model) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    seen, total = set(), 0
    for t in tensors:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def meta_model(config_json: str):
    """The architecture of a native config on the meta device (no weights, no compute): what FLOPs are
    counted on (``bench.backends.transformers.settings.vision_flops``)."""
    import torch
    from transformers import Florence2Config
    from transformers.models.florence2.modeling_florence2 import Florence2Model

    config = Florence2Config.from_dict(json.loads(config_json))
    with torch.device("meta"):
        return Florence2Model(config)


def _check_weight_files(directory: Path, allow_pickle: bool) -> None:
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.glob("*.bin"))
    if pickles and not allow_pickle:
        raise UsageError(
            f"{directory} has only pickle weights ({', '.join(pickles)}); accepted: safetensors, or pass "
            "--allow-pickle to load pickle files (they can run arbitrary code)"
        )
    if not pickles:
        raise UsageError(f"{directory} has no weight files; accepted: model.safetensors (or *.bin with --allow-pickle)")


def load(variant: Variant, ref: CheckpointRef, *, device: str = "cpu", dtype: str = "fp32", attn: str = "sdpa",
         options: LoadOptions | None = None) -> LoadedModel:
    """Build or load the model and its processor, in ``dtype`` on ``device``, eval mode."""
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    options = options or LoadOptions()
    if attn not in ATTN:
        raise choice_error("attention implementation", attn, ATTN)
    dt = torch_dtype(dtype)
    if ref.directory is None:
        config = native_config(ref.config_directory) if ref.config_directory else variant.config()
        torch.manual_seed(0)
        with torch.device(device):  # built where it runs, in its dtype: no host init and copy (seconds on a GPU)
            model = Florence2ForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=dt)
        processor = build_processor()
    else:
        directory = ref.directory
        raw = read_config(directory)
        _check_weight_files(directory, options.allow_pickle)
        if is_original_layout(raw):
            if not options.trust_remote_code:
                raise UsageError(
                    f"{directory} is an original remote-code Florence-2 checkpoint; its weights are not in the "
                    "native layout. Accepted: a native checkpoint (florence-community/Florence-2-*), or pass "
                    "--trust-remote-code to run the checkpoint's own code"
                )
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True, dtype=dt,
                                                         attn_implementation=attn,
                                                         use_safetensors=not options.allow_pickle)
            processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        else:
            model, info = Florence2ForConditionalGeneration.from_pretrained(
                directory, dtype=dt, attn_implementation=attn, use_safetensors=not options.allow_pickle,
                output_loading_info=True,
            )
            missing = [k for k in info.get("missing_keys", []) if "lm_head" not in k]
            if missing:
                raise UsageError(
                    f"{directory}: weights do not match the Florence-2 architecture in its config.json "
                    f"({len(missing)} missing tensors, e.g. {missing[0]}); accepted: a native Florence-2 checkpoint"
                )
            processor = AutoProcessor.from_pretrained(directory)
    model = model.to(device).eval()
    return LoadedModel(model, processor, ref, count_params(model), weights_bytes(model))


# ------------------------------------------------------------------------ offline processor


def _corpus() -> list[str]:
    from bench.accuracy.data import synthetic_smoke
    from bench.accuracy.tasks import TASKS

    prompts = [t.prompt for t in TASKS.values()]
    captions = [c for s in synthetic_smoke() for c in s.captions]
    words = ["a", "an", "the", "of", "in", "on", "with", "and", "is", "are", "there", "this", "image", "picture", "photo", "person", "people", "man", "woman", "car", "dog", "cat", "table", "chair", "street", "building", "sky", "tree", "water", "red", "blue", "green", "white", "black", "yellow", "small", "large", "two", "three", "standing", "sitting", "holding", "next", "to", "front", "background", "text", "sign", "word", "shape", "circle", "square", "triangle", "describe", "what", "locate", "objects", "category", "name", "region", "polygon", "mask", "phrases", "caption"]
    return prompts + captions + [" ".join(words)] * 4


@functools.lru_cache(maxsize=1)
def build_processor(extra_vocab: int = 0):
    """A Florence2Processor built offline with the exact special-token layout (built once per process:
    training the BPE takes ~2 s, and the processor is only read afterwards).

    A byte-level BPE is trained on local text, padded with unused tokens so that ``<mask>`` sits at
    50264 as in BART, then the 1024 Florence-2 tokens are added in order (50265..51288) and
    ``<image>`` at 51289. The CLIP image processor is configured as the published one (768x768,
    no crop, ImageNet mean/std, bicubic, 577 image tokens).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, Florence2Processor
    from transformers.models.bart import BartTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=2000 + extra_vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(_corpus(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    for i in range(len(vocab), BART_BASE_VOCAB - 1):
        vocab[f"<unused_{i}>"] = i
    vocab["<mask>"] = BART_BASE_VOCAB - 1
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    tokenizer.add_special_tokens({"additional_special_tokens": [*ADDED_TOKENS, "<image>"]})
    tokenizer._set_model_specific_special_tokens(special_tokens={"image_token": "<image>"})
    assert tokenizer.convert_tokens_to_ids("<od>") == BART_BASE_VOCAB
    assert tokenizer.image_token_id == BART_BASE_VOCAB + len(ADDED_TOKENS) == 51289
    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": 768, "width": 768}, resample=3, do_center_crop=False,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225], do_convert_rgb=True, image_seq_length=IMAGE_TOKENS,
    )
    image_processor.image_seq_length = IMAGE_TOKENS
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                              post_processor_config=POST_PROCESSOR_CONFIG)


# ------------------------------------------------------------------------------ tiny checkpoint


def tiny_config():
    """A few-million-parameter Florence-2 with every architectural feature of the real ones."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    vision = Florence2VisionConfig(embed_dim=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], num_groups=[1, 2, 3, 4],
                                   depths=[1, 1, 2, 1], projection_dim=32, drop_path_rate=0.0)
    text = BartConfig(vocab_size=51328, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)
    return Florence2Config(vision_config=vision, text_config=text, image_token_id=51289)


def _save_checkpoint(model, processor, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)


def make_tiny_checkpoint(directory: Path, seed: int = 0, save=_save_checkpoint, force: bool = False) -> Path:
    """Write a complete tiny native checkpoint (config, safetensors, processor files), marked random."""
    return write_random_checkpoint(tiny_config(), directory, seed, "make-tiny-checkpoint", save, force)


def make_checkpoint(variant: Variant, directory: Path, seed: int = 0, save=_save_checkpoint,
                    force: bool = False) -> Path:
    """A checkpoint of a variant's exact architecture and size with random weights, marked random, so that
    other tools (optimum-benchmark, OpenVINO's) can run exactly the model this harness measures."""
    return write_random_checkpoint(variant.config(), directory, seed, f"make-checkpoint --variant {variant.name}",
                                   save, force)


def write_random_checkpoint(config, directory: Path, seed: int, made_by: str, save=_save_checkpoint,
                            force: bool = False) -> Path:
    """The marker first, then the weights, into a fresh folder beside ``directory`` renamed to it once all are
    written: a kill or a full disk (``save`` is the seam where tests inject one) leaves no half checkpoint and
    never weights without their marker. An existing non-empty ``directory`` is refused unless ``force``, which
    replaces it whole; a link there is refused."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    directory = Path(directory)
    with staged_dir(directory, "checkpoint", force) as staging:
        write_atomic(staging / MARKER, json.dumps({"weights": "random", "seed": seed, "made_by": f"florence2-bench "
                                                   f"{made_by}"}, indent=1) + "\n", what="checkpoint")
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config).eval()
        save(model, build_processor(), staging)
    return directory


def random_marker(directory: Path) -> str | None:
    """Who made a checkpoint marked as random (``MARKER``), or None for a checkpoint that does not say so."""
    path = Path(directory) / MARKER
    if not path.is_file():
        return None
    try:
        marker = parse_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, not UTF-8, or nested deeper than inputs.MAX_NESTING
        raise UsageError(f"{path} is not valid JSON: {exc}; accepted: {{\"weights\": \"random\", ...}}") from None
    if not isinstance(marker, dict) or marker.get("weights") != "random":
        raise UsageError(f"{path} does not say weights \"random\"; accepted: {{\"weights\": \"random\", ...}}, or "
                         "no such file for pretrained weights")
    return str(marker.get("made_by") or "unknown")
