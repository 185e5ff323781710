"""Model-level speed settings: the fast path keeps fp32 tokens, and the roofline/agreement figures are right."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.tasks import get_task
from bench.backends.base import GenerationSettings, LoadOptions
from bench.backends.transformers import settings as speed
from bench.backends.transformers.backend import TransformersBackend
from bench.backends.transformers.checkpoints import load, resolve, weights_bytes
from bench.backends.transformers.pipeline import TransformersPipeline
from bench.backends.transformers.settings import apply_model_settings, unsupported_reason, vision_flops
from bench.core import measure
from bench.core.variants import get_variant
from bench.results import Record
from bench.run import optimize
from bench.run.optimize import (
    BAD_REFERENCE,
    TOKEN_PRESERVING,
    agreement,
    agreement_with_fp32,
    reference_dtype,
    roofline,
    roofline_for,
)

NEW_TOKENS = 8  # the tiny model never emits EOS: every image gets exactly this many tokens


def _settings(**overrides):
    """A cell-like object with the model-level axes (defaults: nothing applied)."""
    return SimpleNamespace(
        **{
            "channels_last": False,
            "quant": "none",
            "compile": False,
            "dtype": "fp32",
            "device": "cpu",
            **overrides,
        }
    )


def _load(checkpoint, attn: str, **settings):
    variant = get_variant("base")
    loaded = load(variant, resolve(variant, LoadOptions(model_path=str(checkpoint))), attn=attn)
    apply_model_settings(loaded, _settings(**settings))
    return loaded


def _token_ids(loaded, task: str, samples, batch_size: int, cache: str, num_beams: int) -> list[list[int]]:
    generation = GenerationSettings(num_beams, NEW_TOKENS, forced=True, cache=cache)
    pipeline = TransformersPipeline(loaded, get_task(task), generation, device="cpu", dtype="fp32", clock=None)
    ids: list[list[int]] = []
    for i in range(0, len(samples), batch_size):
        inputs = pipeline.preprocess(samples[i : i + batch_size])
        if batch_size > 1 and task == "<CAPTION_TO_PHRASE_GROUNDING>":
            assert (inputs["attention_mask"] == 0).any(), "prompts of different lengths must be padded"
            assert (inputs["attention_mask"][:, 0] == 1).all(), "padding must be on the right"
        ids += pipeline.generate(inputs).tolist()
    return ids


@pytest.mark.parametrize(
    ("task", "num_beams"),
    [
        ("<CAPTION>", 1),
        ("<CAPTION_TO_PHRASE_GROUNDING>", 1),
        ("<OD>", 1),
        ("<CAPTION_TO_PHRASE_GROUNDING>", 3),
    ],
)
def test_fast_path_generates_the_naive_tokens_in_fp32(tiny_checkpoint, task, num_beams):
    """sdpa + batch 4 with right padding + static KV cache + channels_last == eager, batch 1, dynamic cache."""
    samples = synthetic_smoke(4)
    naive = _token_ids(_load(tiny_checkpoint, "eager"), task, samples, 1, "dynamic", num_beams)
    fast = _token_ids(
        _load(tiny_checkpoint, "sdpa", channels_last=True), task, samples, 4, "static", num_beams
    )
    assert [len(row) for row in naive] == [1 + NEW_TOKENS] * len(samples)
    assert fast == naive
    for axis in ("attn", "batch_size", "cache", "channels_last"):
        assert TOKEN_PRESERVING[axis]


def test_channels_last_changes_the_vision_tower_layout(tiny_checkpoint):
    loaded = _load(tiny_checkpoint, "sdpa", channels_last=True)
    conv = loaded.model.model.vision_tower.convs[0].conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert loaded.notes == ["vision tower in channels_last memory format"]


def test_int8_quantization_counts_int8_weights_and_still_generates(tiny_checkpoint):
    plain = _load(tiny_checkpoint, "sdpa")
    before = plain.weights_bytes
    assert before == weights_bytes(plain.model)
    other = {p.data_ptr() for name, p in plain.model.named_parameters() if not name.endswith(".weight")}
    other |= {
        m.weight.data_ptr()
        for m in plain.model.modules()
        if not isinstance(m, torch.nn.Linear) and isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    linears = [m for m in plain.model.modules() if isinstance(m, torch.nn.Linear)]
    tied = sum(
        m.weight.numel() for m in linears if m.weight.data_ptr() in other
    )  # lm_head shares the embedding
    untied = sum(m.weight.numel() for m in linears if m.weight.data_ptr() not in other)
    assert tied > 0 and untied > 0

    quantized = _load(tiny_checkpoint, "sdpa", quant="int8-dynamic")
    # fp32 weights (4 bytes) become int8 (1 byte); the tied lm_head gets its own int8 copy
    assert quantized.weights_bytes == before - 3 * untied + tied
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.model.modules())
    ids = _token_ids(quantized, "<CAPTION>", synthetic_smoke(1), 1, "dynamic", 1)
    assert len(ids[0]) == 1 + NEW_TOKENS


def test_unsupported_combinations_are_named():
    assert unsupported_reason(_settings()) is None
    assert unsupported_reason(_settings(quant="int8-dynamic")) is None
    assert "fp32" in unsupported_reason(_settings(quant="int8-dynamic", dtype="bf16"))
    # which quant runs on which device is the backend's axes: off the CPU, a skipped cell that says so
    off_cpu = TransformersBackend().unsupported_reason(_settings(quant="int8-dynamic", device="cuda:0"))
    assert off_cpu == "backend transformers does not run quant 'int8-dynamic' on cuda; accepted there: none"
    assert TransformersBackend().unsupported_reason(_settings(quant="int8-dynamic")) is None


# ------------------------------------------------------------------------------------------ FLOPs


def _hand_count(config, image_size: int = 768) -> float:
    """DaViT + projector FLOPs by hand (multiply-add = 2): patch convs, depthwise convs, linears, attention.

    Per block of dim C over N tokens: spatial and channel blocks each have two depthwise 3x3 convs
    (2 * 2*9*N*C), qkv + proj + a 4x MLP (24*N*C^2); window attention (w = 144 tokens a window) costs
    4*N*w*C; channel attention with g groups costs 4*N*C^2/g. The projector maps 577 tokens.
    """
    v = config.vision_config
    total, side, in_ch = 0.0, image_size, 3
    window = v.window_size**2
    for stage, (dim, depth) in enumerate(zip(v.embed_dim, v.depths, strict=True)):
        k, stride, pad = v.patch_size[stage], v.patch_stride[stage], v.patch_padding[stage]
        side = (side + 2 * pad - k) // stride + 1
        n = side * side
        assert side % v.window_size == 0  # no window padding at 768 px: attention covers exactly n tokens
        total += 2 * n * dim * in_ch * k * k
        per_block = 2 * (2 * 2 * 9 * n * dim + 24 * n * dim * dim) + 4 * n * window * dim
        per_block += 4 * n * dim * dim / v.num_groups[stage]
        total += depth * per_block
        in_ch = dim
    return total + 2 * (side * side + 1) * v.embed_dim[-1] * v.projection_dim


@pytest.mark.parametrize("which", ["tiny", "base"])
def test_vision_flops_match_a_hand_count(tiny_loaded, which):
    model = tiny_loaded.model if which == "tiny" else SimpleNamespace(config=get_variant("base").config())
    counted = vision_flops(model)
    assert counted == pytest.approx(_hand_count(model.config), rel=1e-9)
    assert vision_flops(model, batch_size=4) == pytest.approx(4 * counted)
    if which == "base":
        assert 3.5e11 < counted < 4.0e11  # FLORENCE2.md: ~370 GFLOP per 768x768 image


def test_roofline_known_answer():
    r = roofline(vision_ms_per_image=2000.0, flops_per_image=380e9, matmul_gflops=200.0)
    assert r["vision_gflops_per_s"] == pytest.approx(190.0)
    assert r["fraction"] == pytest.approx(0.95)
    assert r["matmul_gflops_per_s"] == 200.0 and r["vision_gflop_per_image"] == pytest.approx(380.0)
    missing = roofline(None, 380e9, 200.0)
    assert missing["vision_gflops_per_s"] is None and missing["fraction"] is None
    assert roofline(1000.0, 380e9, None)["fraction"] is None
    above = roofline(1000.0, 380e9, 279.4)  # 1.36x "peak": the reference under-read the machine
    assert above["fraction"] is None and above["bad_reference"] and above["vision_gflops_per_s"] == 380.0


# -------------------------------------------------------------------------------------- agreement


def test_agreement_is_exact_match_over_shared_ids():
    fp32 = {1: "a cat", 2: "a dog", 3: "a car"}
    bf16 = {1: "a cat", 2: "a dog ", 3: "a car", 4: "extra"}
    assert agreement(fp32, bf16) == pytest.approx(2 / 3)
    assert agreement(fp32, fp32) == 1.0
    assert agreement({1: "x"}, {1: "y"}) == 0.0
    with pytest.raises(ValueError):
        agreement({1: "x"}, {2: "x"})


def _record(cell_id: str, dtype: str, texts: dict[int, str], quant: str = "none", **overrides):
    base = {
        "cell_id": cell_id,
        "status": "ok",
        "variant": "base",
        "checkpoint": "c",
        "weights": "pretrained",
        "task": "<CAPTION>",
        "dataset": "coco",
        "num_beams": 3,
        "max_new_tokens": 1024,
        "dtype": dtype,
        "batch_size": 1,
        "settings": {"quant": quant},
        "extra": {"texts": {str(k): v for k, v in texts.items()}},
    }
    return Record.from_dict({**base, **overrides})


def test_agreement_with_fp32_pairs_records_doing_the_same_work():
    records = [
        _record("fp32", "fp32", {1: "a", 2: "b"}),
        _record("bf16", "bf16", {1: "a", 2: "x"}, batch_size=8),  # batch size does not change tokens: paired
        _record("int8", "fp32", {1: "a", 2: "b"}, quant="int8-dynamic"),
        _record("fp16-other-task", "fp16", {1: "a"}, task="<OD>"),  # no fp32 <OD> record: left out
        _record("failed", "fp16", {1: "a"}, status="error"),
    ]
    assert agreement_with_fp32(records) == {"bf16": 0.5, "int8": 1.0}


def test_roofline_for_takes_the_faster_reference_of_the_two_around_the_cell(tiny_loaded):
    achieved = vision_flops(tiny_loaded.model) / 1e9 / 0.01  # GFLOP/s at 10 ms per image
    bf16, flags = roofline_for(vision_flops(tiny_loaded.model), 10.0, "cpu", "bf16", "none", (achieved * 3, achieved * 4))
    assert bf16.vision_gflops_per_s == pytest.approx(achieved)
    assert bf16.matmul_gflops_before == achieved * 3 and bf16.matmul_gflops_after == achieved * 4
    assert bf16.matmul_gflops_per_s == achieved * 4 and bf16.fraction == pytest.approx(0.25)
    assert bf16.matmul_dtype == "bf16" and flags == []
    assert reference_dtype("bf16", "none") == "bf16" and reference_dtype("fp32", "int8-dynamic") == "fp32"


@pytest.mark.parametrize("quant", ["none", "int8-dynamic"])
def test_a_fraction_above_one_is_flagged_as_a_bad_reference_and_never_reported(tiny_loaded, quant):
    achieved = vision_flops(tiny_loaded.model) / 1e9 / 0.01
    figure, flags = roofline_for(vision_flops(tiny_loaded.model), 10.0, "cpu", "fp32", quant, (achieved / 2, achieved / 1.5))
    assert figure.fraction is None  # never shown as a result
    assert figure.vision_gflops_per_s == pytest.approx(achieved)  # the raw rates are kept
    assert figure.matmul_gflops_per_s == achieved / 1.5 and figure.matmul_gflops_before == achieved / 2
    assert [f["code"] for f in flags] == [BAD_REFERENCE] and "1.50x" in flags[0]["message"]
    assert ("int8" in flags[0]["message"]) == (quant != "none")


def test_the_reference_is_measured_afresh_each_time(monkeypatch):
    readings = iter([31.0, 96.0])
    monkeypatch.setattr(measure, "matmul_gflops", lambda *args, **kwargs: next(readings))
    assert (optimize.matmul_reference("cpu", "fp32"), optimize.matmul_reference("cpu", "fp32")) == (31.0, 96.0)


def test_settings_disable_transformers_own_compile(tiny_checkpoint):
    """Only the compile axis may compile: generate() would otherwise compile static-cache cells on GPUs."""
    loaded = _load(tiny_checkpoint, "sdpa")
    assert loaded.model.generation_config.disable_compile is True
    assert loaded.notes == []


# ------------------------------------------------------------------------- compile and CUDA graphs


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the eager backend: dynamo traces exactly what inductor would get, without a
    C++ compiler or a GPU; records what was compiled and whether CUDA graphs were asked for."""
    calls = []
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def compile_(fn, graphs):
        calls.append((fn.__qualname__, graphs))
        return torch.compile(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(speed, "torch_compile", compile_)
    yield calls
    torch._dynamo.reset()


def _graph_stats():
    counters = torch._dynamo.utils.counters
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def test_compiled_decoder_and_vision_generate_the_eager_tokens(tiny_checkpoint, eager_compile):
    samples = synthetic_smoke(2)
    naive = _token_ids(_load(tiny_checkpoint, "sdpa"), "<CAPTION>", samples, 2, "static", 3)
    compiled = _load(tiny_checkpoint, "sdpa", compile=True, compile_vision=True)
    assert eager_compile == [("Florence2ForConditionalGeneration.forward", False),
                             ("Florence2VisionBackbone.forward", False),
                             ("Florence2MultiModalProjector.forward", False)]
    assert len(compiled.notes) == 2 and "vision tower and projector" in compiled.notes[1]
    assert _token_ids(compiled, "<CAPTION>", samples, 2, "static", 3) == naive
    graphs, breaks = _graph_stats()
    assert breaks == 0  # a graph break would split a CUDA graph
    assert graphs == 4  # decoder: first step (fills the cross-attention cache) and the others; vision; projector


def test_graphs_keep_one_static_cache_at_fixed_addresses(tiny_checkpoint, eager_compile):
    """What CUDA graphs need, checked on CPU: one cache per shape, allocated before any compiled call,
    reordered in place by beam search, and no recompilation on the next batch; tokens unchanged."""
    samples = synthetic_smoke(4)
    naive = _token_ids(_load(tiny_checkpoint, "sdpa"), "<CAPTION>", samples, 1, "dynamic", 3)
    loaded = _load(tiny_checkpoint, "sdpa", compile="graphs")
    assert eager_compile == [("Florence2ForConditionalGeneration.forward", True)]
    assert "CUDA graphs" in loaded.notes[0]
    addresses = []
    prepare = loaded.model._prepare_static_cache

    def spy(*args, **kwargs):
        cache = prepare(*args, **kwargs)
        addresses.append([layer.keys.data_ptr() for layer in cache.self_attention_cache.layers])
        return cache

    loaded.model._prepare_static_cache = spy
    assert _token_ids(loaded, "<CAPTION>", samples, 2, "static", 3) == naive
    assert len(addresses) == 2 and addresses[0] == addresses[1]  # two batches, one cache
    graphs, breaks = _graph_stats()
    assert (graphs, breaks) == (2, 0)


def test_graph_steps_tell_cudagraphs_where_a_step_begins(monkeypatch):
    marks = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: (marks.append(kwargs), fn)[1])
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append("step"))
    step = speed.torch_compile(lambda x: x + 1, graphs=True)
    assert [step(1), step(2)] == [2, 3]
    assert marks == [{"dynamic": False, "mode": "reduce-overhead"}, "step", "step"]


def test_graph_steps_hand_out_copies_a_later_replay_cannot_overwrite(monkeypatch):
    from transformers.modeling_outputs import Seq2SeqLMOutput

    pool = torch.zeros(3)  # stands in for the CUDA-graph memory every replay writes into
    cache = object()

    def replay(x):
        pool.fill_(x)
        return Seq2SeqLMOutput(logits=pool, past_key_values=cache, encoder_hidden_states=(pool, pool))

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    step = speed.torch_compile(replay, graphs=True)
    first = step(1.0)
    second = step(2.0)
    assert first.logits.tolist() == [1.0] * 3 and first["logits"] is first.logits  # kept, attribute and item
    assert first.encoder_hidden_states[1].tolist() == [1.0] * 3 and second.logits.tolist() == [2.0] * 3
    assert first.past_key_values is cache  # not a tensor: handed over as it is
    assert speed.owned_outputs([pool, "x", 3])[1:] == ["x", 3]


def test_cuda_graphs_are_cuda_only_and_need_the_static_cache():
    assert "CUDA only" in unsupported_reason(_settings(compile="graphs", cache="static"))
    assert "CUDA only" in unsupported_reason(_settings(compile_vision="graphs"))
    assert "static KV cache" in unsupported_reason(_settings(compile="graphs", cache="dynamic", device="cuda"))
    assert unsupported_reason(_settings(compile="graphs", cache="static", device="cuda:0")) is None
    assert unsupported_reason(_settings(compile_vision=True)) is None


def test_compiled_and_device_pixel_records_are_checked_against_eager_fp32():
    records = [
        _record("compiled-first", "fp32", {1: "a", 2: "x"}, compile=True),  # listed first, still not the reference
        _record("eager", "fp32", {1: "a", 2: "b"}, batch_size=4),
        _record("graphs", "fp32", {1: "a", 2: "b"}, compile="graphs"),
        _record("device-pixels", "fp32", {1: "y", 2: "b"},
                settings={"quant": "none", "preprocess": "device", "prefetch": True}),
        _record("vision", "fp16", {1: "a", 2: "b"}, settings={"quant": "none", "compile_vision": "graphs"}),
        _record("prefetch-only", "fp32", {1: "a", 2: "b"}, settings={"quant": "none", "prefetch": True}),
    ]
    assert agreement_with_fp32(records) == {"compiled-first": 0.5, "graphs": 1.0, "device-pixels": 0.5,
                                            "vision": 1.0}
