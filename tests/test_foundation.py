"""The foundation: variant registry, checkpoint resolution, processor layout, all 15 task pipelines."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import Florence2Config, Florence2ForConditionalGeneration

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.tasks import TASKS, get_task, region_tokens
from bench.backends.base import GenerationSettings, LoadOptions, generation_settings
from bench.backends.transformers import checkpoints
from bench.backends.transformers.checkpoints import convert_original_config, resolve
from bench.backends.transformers.pipeline import TransformersPipeline
from bench.core.errors import UsageError
from bench.core.measure import CpuClock
from bench.core.variants import VARIANTS, get_variant


def _meta_params(config) -> int:
    with torch.device("meta"):
        model = Florence2ForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "published"), [("base", 231.4e6), ("large", 770.2e6), ("large-4k", 776.5e6)])
def test_registry_builds_the_published_parameter_counts(name, published):
    counted = _meta_params(get_variant(name).config())
    assert abs(counted - published) / published < 0.001
    assert counted == get_variant(name).params


def test_every_variant_has_hub_ids_and_sourced_reported_numbers():
    for v in VARIANTS.values():
        assert v.hub_id.startswith("microsoft/") and v.native_id.startswith("florence-community/")
        assert v.reported and v.reported_source
    assert VARIANTS["base"].reported["coco_det_map"] == 34.7
    assert VARIANTS["large-ft"].reported["coco_caption_cider"] == 143.3


def _original_large_config() -> dict:
    """The shape of microsoft/Florence-2-large's remote-code config.json."""
    return {
        "model_type": "florence2", "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config"},
        "projection_dim": 1024, "vocab_size": 51289,
        "vision_config": {"model_type": "davit", "dim_embed": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64],
                          "num_groups": [8, 16, 32, 64], "depths": [1, 1, 9, 1], "window_size": 12,
                          "patch_size": [7, 3, 3, 3], "patch_stride": [4, 2, 2, 2], "patch_padding": [3, 1, 1, 1],
                          "patch_prenorm": [False, True, True, True], "projection_dim": 1024},
        "text_config": {"model_type": "florence2_language", "vocab_size": 51289, "d_model": 1024,
                        "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
                        "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
                        "max_position_embeddings": 1024},
    }


def test_original_large_config_is_converted_not_silently_base_sized(tmp_path):
    original = _original_large_config()
    (tmp_path / "config.json").write_text(json.dumps(original))
    assert checkpoints.is_original_layout(original)
    converted = convert_original_config(original)
    assert converted["vision_config"]["embed_dim"] == [256, 512, 1024, 2048]
    config = checkpoints.native_config(tmp_path)
    assert list(config.vision_config.embed_dim) == [256, 512, 1024, 2048]
    assert abs(_meta_params(config) - 770.2e6) / 770.2e6 < 0.001
    # what the naive path would do: the native class ignores dim_embed and builds a base-sized tower
    naive = Florence2Config(vision_config={k: v for k, v in original["vision_config"].items() if k != "model_type"})
    assert list(naive.vision_config.embed_dim) == [128, 256, 512, 1024]


def test_original_checkpoint_weights_are_refused_without_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_original_large_config()))
    (tmp_path / "model.safetensors").write_bytes(b"")
    ref = resolve(get_variant("large"), LoadOptions(model_path=str(tmp_path)))
    with pytest.raises(UsageError, match="trust-remote-code"):
        checkpoints.load(get_variant("large"), ref)


def test_pickle_weights_need_an_explicit_opt_in(tmp_path, tiny_checkpoint):
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    ref = resolve(get_variant("base"), LoadOptions(model_path=str(tmp_path)))
    with pytest.raises(UsageError, match="allow-pickle"):
        checkpoints.load(get_variant("base"), ref)


def test_weights_modes_resolve_offline(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tiny_checkpoint.parent / "empty-hf-home"))
    base = get_variant("base")
    assert resolve(base, LoadOptions(weights="random")).weights == "random"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert resolve(base, LoadOptions(weights="auto")).weights == "random"
    with pytest.raises(UsageError, match="no pretrained weights"):
        resolve(base, LoadOptions(weights="pretrained"))
    ref = resolve(base, LoadOptions(model_path=str(tiny_checkpoint)))
    assert (ref.weights, ref.directory) == ("random", tiny_checkpoint)  # it is marked random
    assert "florence2_bench.json" in ref.note
    unmarked = tiny_checkpoint.parent / "unmarked"
    shutil.copytree(tiny_checkpoint, unmarked, ignore=shutil.ignore_patterns("florence2_bench.json"))
    assert resolve(base, LoadOptions(model_path=str(unmarked))).weights == "pretrained"
    (unmarked / "florence2_bench.json").write_text('{"weights": "pretrained"}')
    with pytest.raises(UsageError, match="does not say weights"):
        resolve(base, LoadOptions(model_path=str(unmarked)))
    random_arch = resolve(base, LoadOptions(weights="random", model_path=str(tiny_checkpoint)))
    assert random_arch.weights == "random" and random_arch.config_directory == tiny_checkpoint


def test_offline_processor_has_the_exact_special_token_layout(tiny_loaded):
    processor = tiny_loaded.processor
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<od>", "</od>", "<ocr>", "</ocr>",
                                     "<loc_0>", "<loc_999>", "<cap>", "<and>", "<image>"])
    assert ids == [0, 1, 2, 3, 50264, 50265, 50266, 50267, 50268, 50269, 51268, 51269, 51288, 51289]
    ip = processor.image_processor
    assert (ip.size["height"], ip.size["width"]) == (768, 768) and not ip.do_center_crop
    assert list(ip.image_mean) == [0.485, 0.456, 0.406] and list(ip.image_std) == [0.229, 0.224, 0.225]
    sample = synthetic_smoke(1)[0]
    inputs = processor(images=[sample.load_image()], text=["<CAPTION>"], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 768, 768)
    ids = inputs["input_ids"][0].tolist()
    assert ids[:577] == [51289] * 577 and ids[577] == 0 and ids[-1] == 2
    assert tok.decode(ids[578:-1]) == "What does the image describe?"
    assert set(checkpoints.POST_PROCESSOR_CONFIG) == set(processor.tasks_answer_post_processing_type.values()) | {
        "description_with_polygons"}


def test_tiny_checkpoint_loads_through_the_real_path(tiny_checkpoint, tiny_loaded):
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in tiny_checkpoint.iterdir()}
    assert tiny_loaded.ref.weights == "random"  # the checkpoint is marked random (its weights are loaded)
    assert 1e6 < tiny_loaded.params < 5e6
    assert tiny_loaded.weights_bytes == tiny_loaded.params * 4 + sum(
        b.numel() * b.element_size() for b in tiny_loaded.model.buffers())


def test_region_tokens_quantise_on_the_0_999_grid():
    assert region_tokens((0, 0, 320, 240), 320, 240) == "<loc_0><loc_0><loc_999><loc_999>"
    assert region_tokens((32, 24, 160, 120), 320, 240) == "<loc_100><loc_100><loc_500><loc_500>"


def test_random_mode_forces_each_tasks_typical_length():
    caption = get_task("<CAPTION>")
    forced = generation_settings(caption, "random", num_beams=3)
    assert forced.forced and forced.max_new_tokens == caption.random_tokens == 20
    assert forced.kwargs()["min_new_tokens"] == 20
    natural = generation_settings(caption, "pretrained", num_beams=3)
    assert not natural.forced and natural.max_new_tokens == 1024 and "min_new_tokens" not in natural.kwargs()


OUTPUT_CHECKS = {
    "text": lambda a: isinstance(a, str),
    "boxes": lambda a: set(a) >= {"bboxes", "labels"} and all(len(b) == 4 for b in a["bboxes"]),
    "quad_boxes": lambda a: set(a) == {"quad_boxes", "labels"} and all(len(q) == 8 for q in a["quad_boxes"]),
    "polygons": lambda a: set(a) == {"polygons", "labels"} and all(isinstance(p, list) for p in a["polygons"]),
    "boxes_or_polygons": lambda a: set(a) == {"bboxes", "bboxes_labels", "polygons", "polygons_labels"},
}


@pytest.mark.parametrize("token", list(TASKS))
def test_every_task_runs_end_to_end_on_the_tiny_checkpoint(tiny_loaded, token):
    task = TASKS[token]
    samples = synthetic_smoke(2)
    pipeline = TransformersPipeline(tiny_loaded, task, GenerationSettings(num_beams=1, max_new_tokens=6, forced=True),
                        device="cpu", dtype="fp32", clock=CpuClock())
    result = pipeline.run_batch(samples)
    assert len(result.answers) == len(result.texts) == 2
    assert result.new_tokens == [6, 6]
    for answer in result.answers:
        assert OUTPUT_CHECKS[task.output](answer), answer
    assert all(v >= 0 for v in result.stages_ms.values())
    if task.input_kind != "none":
        assert task.query(samples[0]) and task.text_for(samples[0]) != token


def test_post_processing_parses_real_florence2_outputs(tiny_loaded):
    """The parsers see the same text a pretrained model emits: location tokens are decoded to pixels."""
    processor = tiny_loaded.processor
    text = "</s><s>circle<loc_100><loc_100><loc_500><loc_500></s>"
    answer = processor.post_process_generation(text, task="<OD>", image_size=(2000, 1000))["<OD>"]
    assert answer["labels"] == ["circle"]
    # bin centres, (bin + 0.5) * size / 1000, truncated to int by the native post-processor
    assert answer["bboxes"][0] == [201, 100, 1001, 500]
