"""The command line end to end on the tiny checkpoint, and its one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.accuracy.tasks import get_task
from bench.cli import build_parser, main
from bench.commands import COMMANDS
from bench.results import store

FAST = ["--max-new-tokens", "4", "--limit", "2", "--num-beams", "1", "--quiet"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_run_writes_the_contract_run_directory(pretrained_tiny_checkpoint, tmp_path, capsys):
    tiny_checkpoint = pretrained_tiny_checkpoint  # unmarked: taken as pretrained weights, so answers are scored
    out = tmp_path / "run"
    code, stdout, _ = _run(capsys, "run", "--model-path", str(tiny_checkpoint), "--tasks", "caption,od", "--out", str(out), *FAST)
    assert code == 0
    records = store.records(out)
    assert [r.task for r in records] == ["<CAPTION>", "<OD>"]
    for r in records:
        assert r.status == "ok" and r.weights == "pretrained" and r.checkpoint == str(tiny_checkpoint)
        assert r.variant == "custom"
        assert r.params > 1e6 and r.memory.peak_rss_bytes > 1e7
        latency = r.latency_ms
        assert None not in (latency.mean, latency.std, latency.p50, latency.p90, latency.p95, latency.p99, latency.n)
        assert set(r.stages_ms.to_dict()) == {"preprocess", "vision", "ttft", "per_token", "decode", "postprocess"}
        assert r.throughput.images_per_s > 0 and r.throughput.tokens_per_s > 0
        assert len(r.samples_ms) == latency.n >= 2
        assert r.max_new_tokens == 4 and r.gen_tokens_mean <= 4
        assert r.accuracy is not None  # pretrained weights are scored (tiny ones score ~0)
        assert r.energy.source  # a counter name, or why there is none
    assert len({r.cell_id for r in records}) == 2
    env = json.loads((out / "env.json").read_text())
    assert env["cpu"] and env["libraries"]["torch"]
    html = (out / "report.html").read_text()
    assert "<OD>" not in html and "&lt;OD&gt;" in html
    assert "<CAPTION>" in stdout and "run directory" in stdout


def test_random_weights_force_the_tasks_token_count_and_skip_accuracy(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = _run(capsys, "run", "--weights", "random", "--model-path", str(tiny_checkpoint), "--tasks",
                      "region_to_category", "--out", str(out), "--limit", "2", "--num-beams", "1", "--quiet")
    assert code == 0
    (record,) = store.records(out)
    assert record.weights == "random" and record.accuracy is None
    assert record.max_new_tokens == get_task("<REGION_TO_CATEGORY>").random_tokens
    assert record.gen_tokens_mean == record.max_new_tokens
    assert "forced" in record.timing.generation


def test_stage_medians_add_up_to_the_end_to_end_median(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = _run(capsys, "run", "--model-path", str(tiny_checkpoint), "--tasks", "caption", "--out", str(out),
                      "--max-new-tokens", "8", "--limit", "4", "--num-beams", "1", "--quiet")
    assert code == 0
    (r,) = store.records(out)
    # the tiny checkpoint is marked random: recorded so, with forced token counts and no accuracy
    assert r.weights == "random" and r.checkpoint == str(tiny_checkpoint) and r.accuracy is None
    assert r.gen_tokens_mean == 8 and "florence2_bench.json" in r.extra.resolution_note
    s = r.stages_ms
    total = s.preprocess + s.ttft + s.decode + s.postprocess
    assert abs(total - r.latency_ms.p50) / r.latency_ms.p50 < 0.10
    assert 0 < s.vision < s.ttft


def test_the_parser_has_each_registered_command_in_the_registry_order():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == ["run", "report", "compare", "history", "score", "export", "variants", "datasets",
                                 "env", "make-tiny-checkpoint", "make-checkpoint"]
    assert [parser.get_default("func") for parser in sub.choices.values()] == [c.run for c in COMMANDS]


def test_variants_lists_parameter_counts(capsys):
    code, out, _ = _run(capsys, "variants")
    assert code == 0
    assert "231.4M" in out and "770.2M" in out and "microsoft/Florence-2-large-ft" in out


def test_make_tiny_checkpoint_writes_a_loadable_directory(tmp_path, capsys):
    code, out, _ = _run(capsys, "make-tiny-checkpoint", str(tmp_path / "tiny"))
    assert code == 0 and (tmp_path / "tiny" / "model.safetensors").exists()
    marker = json.loads((tmp_path / "tiny" / "florence2_bench.json").read_text())
    assert marker["weights"] == "random" and "make-tiny-checkpoint" in marker["made_by"]


def test_make_checkpoint_writes_a_variant_of_real_size_marked_random(tmp_path, capsys):
    code, out, _ = _run(capsys, "make-checkpoint", "--variant", "base", str(tmp_path / "base"))
    assert code == 0 and "RANDOM" in out
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["vision_config"]["embed_dim"] == [128, 256, 512, 1024] and config["text_config"]["d_model"] == 768
    assert (tmp_path / "base" / "model.safetensors").stat().st_size > 4 * 200e6  # ~231M fp32 parameters
    marker = json.loads((tmp_path / "base" / "florence2_bench.json").read_text())
    assert marker == {"weights": "random", "seed": 0, "made_by": "florence2-bench make-checkpoint --variant base"}
    assert _run(capsys, "make-checkpoint", "--variant", "huge", str(tmp_path / "x"))[0] == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--model-path", "/nonexistent/florence"], "model path not found: /nonexistent/florence"),
        (["run", "--weights", "sometimes"], "unknown weights mode 'sometimes'; accepted: auto, pretrained, random"),
        (["run", "--limit", "0"], "bad limit 0"),
        (["run", "--compile", "maybe"], "bad compile value 'maybe'; accepted: false, true, graphs"),
        (["run", "--backends", "openvin"], "unknown backend 'openvin'; did you mean 'openvino'? available: "),
        (["run", "--sweep", "nightly"], "unknown sweep 'nightly'; accepted: cpu-full, gpu-full, procurement, smoke"),
        (["score", "--task", "<BOGUS>", "--dataset", "synthetic-smoke", "--predictions", "x.jsonl"],
         "unknown task '<BOGUS>'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    code, _, err = _run(capsys, *argv, *(["--out", str(tmp_path / "o")] if argv[0] == "run" else []))
    assert code == 2
    line = _one_line_error(err)
    assert needle in line


def test_a_directory_that_is_not_florence2_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, _, err = _run(capsys, "run", "--model-path", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "is not a Florence-2 checkpoint: config.json model_type 'bert'; accepted: 'florence2'" in (
        _one_line_error(err))
    (tmp_path / "config.json").unlink()
    code, _, err = _run(capsys, "run", "--model-path", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "no config.json" in _one_line_error(err)


def test_a_corrupt_image_is_named(tiny_checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    annotations = tmp_path / "captions.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "broken.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "a broken picture"}],
    }))
    code, _, err = _run(capsys, "run", "--model-path", str(tiny_checkpoint), "--tasks", "caption", "--dataset",
                        f"coco-json:{annotations}@{images}", "--out", str(tmp_path / "o"), *FAST)
    assert code == 2
    assert "broken.jpg" in _one_line_error(err)


def test_bf16_cells_show_agreement_with_fp32_and_a_roofline(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = _run(capsys, "run", "--model-path", str(tiny_checkpoint), "--tasks", "caption", "--dtypes",
                      "fp32,bf16", "--out", str(out), *FAST)
    assert code == 0
    records = {r.dtype: r for r in store.records(out)}
    if records["bf16"].status == "skipped":
        pytest.skip(records["bf16"].error)
    for r in records.values():
        roofline = r.extra.roofline
        assert roofline.vision_gflops_per_s > 0 and roofline.matmul_gflops_per_s > 0
    from bench.report.report import load_prices, load_runs

    (run,) = load_runs([out], load_prices())
    rates = {row.rec.dtype: row.agreement for row in run.rows}
    assert rates["fp32"] is None and 0.0 <= rates["bf16"] <= 1.0
