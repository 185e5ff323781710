"""bench.backends: the registry, the backend axis of a sweep, the import rule, and OpenVINO on the tiny checkpoint."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from sweep_helpers import write_sweep

from bench.accuracy.tasks import TASKS
from bench.backends.base import CheckpointRef, LoadedModel
from bench.backends.openvino.backend import OpenVINOBackend
from bench.backends.openvino.config import INSTALL_HINT, OpenVINOSettings, default_cache_dir
from bench.backends.registry import BACKENDS, get_backend
from bench.core.errors import UsageError
from bench.results import store
from bench.results.cell import Cell
from bench.run.optimize import agreement_with_fp32
from bench.run.sweep import SweepConfig, expand, override, run_sweep, validate

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _cell(**changes) -> Cell:
    base = Cell("base", "<CAPTION>", "synthetic-smoke", 2, "cpu", "fp32", 1, "sdpa", False, 3, "dynamic", False,
                "none", "auto", None, None)
    return dataclasses.replace(base, **changes)


def _missing_openvino(name: str):
    raise ImportError(f"No module named {name!r}")


# ----------------------------------------------------------------------------------------- registry


def test_an_unknown_backend_is_one_line_with_a_suggestion():
    with pytest.raises(UsageError, match=r"unknown backend 'openvin'; did you mean 'openvino'\? available: "
                                         r"transformers, openvino"):
        get_backend("openvin")
    with pytest.raises(UsageError) as caught:
        get_backend("onnx")
    assert "did you mean" not in str(caught.value) and "available: transformers, openvino" in str(caught.value)


def test_the_default_backend_keeps_old_cell_ids_and_another_makes_new_ones():
    cell = _cell()
    settings = {k: v for k, v in dataclasses.asdict(cell).items()
                if k not in ("compile_vision", "preprocess", "prefetch", "threads", "load_generator", "backend")}
    old = hashlib.sha256(json.dumps({**settings, "server": None}, sort_keys=True).encode()).hexdigest()[:16]
    assert cell.cell_id == old  # what a run directory written before the backend axis holds
    ov = _cell(backend="openvino")
    assert ov.cell_id != old and ov.group != cell.group and "openvino" in ov.label


def test_validate_reads_each_axis_from_the_backends(tmp_path):
    with pytest.raises(UsageError, match=r"unknown quantisation 'int8-weights'; accepted: none, int8-dynamic; "
                                         r"backend openvino runs it \(--backends\)"):
        validate(SweepConfig(quant=["int8-weights"], limit=1))
    validate(SweepConfig(quant=["int8-weights"], backends=["transformers", "openvino"], limit=1))
    with pytest.raises(UsageError, match="did you mean 'transformers'"):
        validate(override(SweepConfig(limit=1), backends="transformer"))
    with pytest.raises(UsageError, match="backends list is empty"):
        validate(SweepConfig(backends=[], limit=1))


def test_a_cell_is_made_only_where_its_backend_runs_the_value():
    config = SweepConfig(backends=["transformers", "openvino"], compile=[False, True], cache=["dynamic", "static"],
                         limit=1)
    cells = expand(config)
    assert sorted((c.backend, c.cache, c.compile) for c in cells) == [
        ("openvino", "dynamic", False), *[("transformers", cache, compile) for cache in ("dynamic", "static")
                                          for compile in (False, True)]]
    assert get_backend("openvino").unsupported_reason(_cell(backend="openvino", compile=True)).startswith(
        "backend openvino does not run compile True; accepted: false")


def test_a_quant_off_the_cpu_is_a_skipped_cell_and_a_sweep_with_no_device_for_it_is_refused():
    # which quant runs on which device is the backend's (device_axes), never a rule of the sweep
    cells = expand(SweepConfig(devices=["cpu", "cuda"], quant=["none", "int8-dynamic"], limit=1))
    assert sorted((c.device, c.quant) for c in cells) == [("cpu", "int8-dynamic"), ("cpu", "none"),
                                                          ("cuda", "int8-dynamic"), ("cuda", "none")]
    transformers = get_backend("transformers")
    assert transformers.unsupported_reason(_cell(device="cuda", quant="int8-dynamic")) == (
        "backend transformers does not run quant 'int8-dynamic' on cuda; accepted there: none")
    assert transformers.unsupported_reason(_cell(quant="int8-dynamic")) is None
    with pytest.raises(UsageError, match=r"^quantisation 'int8-dynamic' runs on no device of the sweep \(cuda:0\); "
                                         r"accepted devices: cpu$"):
        validate(SweepConfig(devices=["cuda:0"], quant=["int8-dynamic"], limit=1))


def test_backend_settings_come_from_the_sweep_file_and_the_run_flags(tmp_path, capsys):
    from bench import cli
    from bench.run.sweep import load_sweep

    path = tmp_path / "s.toml"
    path.write_text('backends = ["transformers", "openvino"]\n[backend.openvino]\nstreams = 2\ncache_dir = "~/ir"\n')
    config = load_sweep(str(path))
    assert config.backend == {"openvino": {"streams": 2, "cache_dir": "~/ir"}}
    configured = config.backend_for("openvino")
    assert configured.settings == OpenVINOSettings(cache_dir=Path("~/ir").expanduser(), streams=2)
    assert get_backend("openvino").settings == OpenVINOSettings()  # the registry's own is left alone
    assert configured.load_key(_cell(backend="openvino", threads=2, batch_size=4)) == (2, 2)
    assert config.backend_for("transformers") is get_backend("transformers")
    # each bad value is one line naming it and what is accepted, exit 2, before anything runs
    for table, line in (
            ("[backend.openvino]\nstreams = 0", "bad [backend.openvino] streams 0; accepted: an integer from 1 to 1024"),
            ("[backend.openvino]\nstreams = true",
             "bad [backend.openvino] streams True; accepted: an integer from 1 to 1024"),
            ("[backend.openvino]\ncache_dir = 3", "bad [backend.openvino] cache_dir 3; accepted: a folder path"),
            ("[backend.openvino]\nstream = 2",
             "unknown [backend.openvino] setting(s) ['stream']; accepted: cache_dir, threads, streams"),
            ("[backend.transformers]\nstreams = 2", "backend transformers has no settings ([backend.transformers] "
                                                    "streams); accepted: no table")):
        path.write_text(f"limit = 1\n{table}\n")
        with pytest.raises(UsageError) as caught:
            validate(load_sweep(str(path)))
        assert str(caught.value) == line
    path.write_text("limit = 1\n")
    assert cli.main(["run", "--sweep", str(path), "--backends", "openvino", "--openvino-streams", "x"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "bad [backend.openvino] streams 'x'; accepted: an integer from 1 to 1024")
    assert cli.main(["run", "--sweep", str(path), "--openvino-streams", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--openvino-streams applies to backend openvino, which this run has not; accepted: add openvino to --backends")


def test_the_openvino_record_says_which_settings_it_ran_with():
    backend = OpenVINOBackend().configure({"threads": "2", "streams": 1})
    loaded = LoadedModel(None, None, CheckpointRef("random", "random:base", None), 0, 0,
                         backend_info={"threads": 2, "streams": 1})
    assert backend.record_extra(loaded) == {"threads": 2, "streams": 1, "settings": {
        "cache_dir": str(default_cache_dir()), "threads": 2, "streams": 1}}


# ------------------------------------------------------------------------------------- import rule


def _model_class_imports(path: Path) -> list[str]:
    """Names imported from transformers that are model classes (``*Model``, ``*For*``, ``AutoModel*``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "transformers":
            found += [a.name for a in node.names
                      if a.name.endswith("Model") or "For" in a.name or a.name.startswith("AutoModel")]
    return found


def test_nothing_outside_bench_backends_imports_a_transformers_model_class():
    offenders = {str(p.relative_to(BENCH.parent)): names for p in BENCH.rglob("*.py")
                 if "backends" not in p.relative_to(BENCH).parts and (names := _model_class_imports(p))}
    assert offenders == {}
    # the scan sees them where they belong
    assert "Florence2ForConditionalGeneration" in _model_class_imports(BENCH / "backends/transformers/checkpoints.py")


# -------------------------------------------------------------------------------- not installed


def test_a_missing_openvino_is_a_skipped_cell_with_the_install_hint(tiny_checkpoint, tmp_path, monkeypatch):
    missing = OpenVINOBackend(OpenVINOSettings(cache_dir=tmp_path / "ir"), importer=_missing_openvino)
    assert INSTALL_HINT in missing.unsupported_reason(_cell(backend="openvino"))
    monkeypatch.setitem(BACKENDS, "openvino", missing)
    config = SweepConfig(variants=["custom"], model_path=str(tiny_checkpoint), backends=["transformers", "openvino"],
                         limit=1, max_new_tokens=2, num_beams=[1], energy_idle_s=0.0, examples=0,
                         repetition={"warmup": 0, "min_iterations": 1, "max_iterations": 1, "min_duration_s": 0.0})
    summary = run_sweep(config, tmp_path / "run", quiet=True)
    by_backend = {r.backend: r for r in summary.records}
    assert by_backend["transformers"].status == "ok"
    skipped = by_backend["openvino"]
    assert skipped.status == "skipped" and "pip install 'florence2-bench[openvino]'" in skipped.error
    assert not (tmp_path / "ir").exists()


def test_int8_weights_and_dynamic_int8_need_nncf():
    def no_nncf(name: str):
        if name == "nncf":
            raise ImportError("No module named 'nncf'")
        return __import__(name)

    backend = OpenVINOBackend(importer=no_nncf)
    assert backend.unsupported_reason(_cell(backend="openvino")) is None
    for quant in ("int8-weights", "int8-dynamic"):
        assert "needs 'nncf'" in backend.unsupported_reason(_cell(backend="openvino", quant=quant))
    assert "CPU here" in backend.unsupported_reason(_cell(backend="openvino", device="cuda:0"))


# ------------------------------------------------------------------------------ OpenVINO, tiny model


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-ir")


def test_both_backends_run_every_task_and_fp32_texts_agree(tiny_checkpoint, ov_cache, tmp_path):
    pytest.importorskip("openvino")
    sweep = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=list(TASKS), backends=["transformers", "openvino"])
    # the backend's settings from the sweep file, as a user sets them
    sweep.write_text(sweep.read_text() + f"[backend.openvino]\ncache_dir = {json.dumps(str(ov_cache))}\nstreams = 1\n")
    from bench.run.sweep import load_sweep

    config = dataclasses.replace(load_sweep(str(sweep)), limit=1,
                                 repetition={"warmup": 0, "min_iterations": 1, "max_iterations": 1,
                                             "min_duration_s": 0.0})
    run_sweep(config, tmp_path / "run", quiet=True)
    records = store.records(tmp_path / "run")
    assert {(r.backend, r.task) for r in records} == {(b, t) for b in ("transformers", "openvino") for t in TASKS}
    assert all(r.status == "ok" for r in records), [r.error for r in records if r.status != "ok"]
    ov = [r for r in records if r.backend == "openvino"]
    info = ov[0].extra.backend_info
    assert [p["part"] for p in info["converted_parts"]] == ["vision_tower", "multi_modal_projector", "encoder",
                                                             "decoder_first", "decoder_step", "lm_head"]
    assert info["pytorch_parts"] == ["embed_tokens"] and info["inference_precision"] == "f32"
    assert info["settings"] == {"cache_dir": str(ov_cache), "threads": None, "streams": 1} and info["streams"] == 1
    assert all(Path(p["ir"]).resolve().is_relative_to(ov_cache.resolve()) for p in info["converted_parts"])
    assert all(r.stages_ms.vision > 0 for r in ov)  # the hooks still time the converted parts
    agreement = agreement_with_fp32(records)
    assert set(agreement) == {r.cell_id for r in ov}  # recorded like any precision change
    assert sum(agreement.values()) / len(agreement) >= 0.9


def test_converted_parts_are_cached_by_checkpoint_and_weight_precision(tiny_checkpoint, ov_cache):
    pytest.importorskip("openvino")
    from bench.backends.base import LoadOptions
    from bench.backends.transformers.checkpoints import resolve
    from bench.core.variants import get_variant

    backend = OpenVINOBackend(OpenVINOSettings(cache_dir=ov_cache))
    variant, options = get_variant("base"), LoadOptions(model_path=str(tiny_checkpoint))
    ref = resolve(variant, options)
    first = backend.load(variant, ref, _cell(), options)
    again = backend.load(variant, ref, _cell(), options)
    assert [p["converted"] for p in again.backend_info["converted_parts"]] == [False] * 6
    assert [p["ir"] for p in again.backend_info["converted_parts"]] == [
        p["ir"] for p in first.backend_info["converted_parts"]]
    compressed = backend.load(variant, ref, _cell(quant="int8-weights"), options)
    assert all(p["converted"] for p in compressed.backend_info["converted_parts"])
    assert compressed.weights_bytes < again.weights_bytes
    assert {p.name for p in ov_cache.iterdir() if not p.name.startswith(".")} >= {
        Path(p["ir"]).parent.name for p in compressed.backend_info["converted_parts"]}
    bf16 = backend.load(variant, ref, _cell(dtype="bf16"), options)  # the same IR, another precision hint
    assert bf16.backend_info["inference_precision"] == "bf16"
    assert not any(p["converted"] for p in bf16.backend_info["converted_parts"])
    dynamic = backend.load(variant, ref, _cell(quant="int8-dynamic"), options)  # int8-weights' IR, its own config
    assert not any(p["converted"] for p in dynamic.backend_info["converted_parts"])
    assert [p["ir"] for p in dynamic.backend_info["converted_parts"]] == [
        p["ir"] for p in compressed.backend_info["converted_parts"]]
    assert (dynamic.backend_info["dynamic_quantization_group_size"],
            compressed.backend_info["dynamic_quantization_group_size"], again.backend_info[
                "dynamic_quantization_group_size"]) == (128, 0, None)
    assert "activations quantised per call in groups of 128" in " ".join(dynamic.notes)
    assert dynamic.backend_info["pytorch_parts"] == ["embed_tokens"]


def test_the_first_decoder_step_runs_once_per_run_of_equal_rows():
    import numpy as np

    from bench.backends.openvino.runtime import repeat_factor

    a, b = np.zeros((1, 2, 3)), np.ones((1, 2, 3))
    rows = lambda *parts: np.concatenate(parts)  # noqa: E731
    assert repeat_factor([rows(a, a, a, b, b, b)]) == 3  # two images, three beams each
    assert repeat_factor([rows(a, a, a, a, a, a, b, b, b)]) == 3  # the same image twice: still runs of 3
    assert repeat_factor([rows(a, a, a, a)]) == 4
    assert repeat_factor([rows(a, b)]) == 1 and repeat_factor([rows(a, a, b, a)]) == 1
    ids = np.array([[2], [2], [2], [2]])
    assert repeat_factor([ids, rows(a, a, b, b)]) == 2 and repeat_factor([np.array([[2], [2], [5], [2]]),
                                                                          rows(a, a, a, a)]) == 1


def test_a_batch_is_split_into_one_slice_of_whole_images_per_stream():
    from bench.backends.openvino.runtime import row_slices

    assert row_slices(2, 2) == [slice(0, 1), slice(1, 2)]
    assert row_slices(3, 2) == [slice(0, 1), slice(1, 3)]
    assert row_slices(1, 4) == [slice(0, 1)]  # one image: one stream
    assert row_slices(5, 1) == [slice(0, 5)]


def test_openvino_loads_apart_where_its_threads_or_streams_differ():
    """OpenVINO fixes its threads and streams when it compiles, so cells that differ in them load apart
    (transformers' cells of one setting still share a load across batch sizes and threads)."""
    from bench.run.runner import groups

    backend = OpenVINOBackend(OpenVINOSettings())
    assert backend.load_key(_cell(threads=2, batch_size=4)) == (2, 2)
    assert backend.load_key(_cell(threads=2, batch_size=1)) == (2, 1)  # a batch of one: every thread on it
    assert backend.load_key(_cell(threads=1, batch_size=4)) == (1, 1)
    assert OpenVINOBackend(OpenVINOSettings(threads=4, streams=3)).load_key(_cell(threads=2)) == (4, 3)
    ov = [_cell(backend="openvino", threads=2, batch_size=n) for n in (1, 2, 4)] + [
        _cell(backend="openvino", threads=1, batch_size=4)]
    torch_cells = [_cell(threads=t, batch_size=n) for t, n in ((2, 1), (2, 4), (1, 4))]
    assert [[c.batch_size for c in g] for g in groups(ov)] == [[1], [2, 4], [4]]
    assert len(groups(torch_cells)) == 1


@pytest.mark.parametrize(("streams", "count"), [(1, 2), (2, 3)])
def test_the_openvino_decoder_gives_transformers_scores_step_by_step(tiny_checkpoint, tiny_loaded, ov_cache,
                                                                     streams, count):
    """Beam search over prompts of different lengths (a padded encoder mask): the same tokens, and the same
    scores at every step, as the PyTorch decoder, whether the images run on one stream or are split across
    two (unevenly: three images); a call it was not built for is one clear error."""
    pytest.importorskip("openvino")
    import torch

    from bench.accuracy.data import synthetic_smoke
    from bench.backends.base import LoadOptions
    from bench.backends.openvino.runtime import OVDecoder
    from bench.backends.transformers.checkpoints import resolve
    from bench.core.variants import get_variant

    variant, options = get_variant("base"), LoadOptions(model_path=str(tiny_checkpoint))
    backend = OpenVINOBackend(OpenVINOSettings(cache_dir=ov_cache, streams=streams))
    ov = backend.load(variant, resolve(variant, options), _cell(batch_size=count), options)
    assert isinstance(ov.model.model.language_model.decoder, OVDecoder)
    assert ov.backend_info["streams"] == streams
    split = {p["part"]: p["streams"] for p in ov.backend_info["converted_parts"]}
    assert split == {"vision_tower": streams, "multi_modal_projector": streams, "encoder": streams,
                     "decoder_first": streams, "decoder_step": 1, "lm_head": 1}  # per token: every thread
    assert len(ov.model.model.language_model.decoder.first_requests) == streams
    prompts = ["<CAPTION_TO_PHRASE_GROUNDING>a cat", "<CAPTION_TO_PHRASE_GROUNDING>a red car on a long road",
               "<CAPTION_TO_PHRASE_GROUNDING>two dogs"][:count]
    images = [s.load_image() for s in synthetic_smoke(count)]
    inputs = tiny_loaded.processor(text=prompts, images=images, return_tensors="pt", padding=True)
    assert not bool(inputs["attention_mask"].all())
    outputs = []
    for loaded in (tiny_loaded, ov):
        with torch.no_grad():
            outputs.append(loaded.model.generate(**inputs, num_beams=3, max_new_tokens=6, min_new_tokens=6,
                                                 output_scores=True, return_dict_in_generate=True))
    torch_out, ov_out = outputs
    assert torch.equal(torch_out.sequences, ov_out.sequences)
    assert len(ov_out.scores) == 6
    for expected, got in zip(torch_out.scores, ov_out.scores, strict=True):
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(got))
        assert torch.allclose(expected[finite], got[finite], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one token id a step"):
        ov.model.model.language_model.decoder(input_ids=torch.ones(1, 2, dtype=torch.int64))


def test_bf16_without_native_support_is_skipped_on_either_backend(monkeypatch):
    from bench.run import runner

    monkeypatch.setattr(runner, "_cpu_flags", lambda: {"avx2"})
    for backend in ("transformers", "openvino"):
        reason = runner.unsupported_reason(_cell(backend=backend, dtype="bf16"), get_backend(backend))
        assert reason is not None and "no native bf16" in reason
    monkeypatch.setattr(runner, "_cpu_flags", lambda: {"avx512_bf16"})
    pytest.importorskip("openvino")
    assert runner.unsupported_reason(_cell(backend="openvino", dtype="bf16"), get_backend("openvino")) is None
