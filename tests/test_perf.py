"""bench.perf on the tiny checkpoint: the snippet and harness settings run, the table and speedup line print."""

from __future__ import annotations

import json
import re

import pytest

from bench import perf
from bench.checkpoints import LoadOptions, load, resolve
from bench.data import synthetic_smoke
from bench.perf import Candidate, measure_settings
from bench.variants import get_variant


@pytest.fixture(scope="module")
def report(tiny_checkpoint):
    variant = get_variant("base")
    ref = resolve(variant, LoadOptions(model_path=str(tiny_checkpoint)))
    loads = []

    def load_model(dtype: str, attn: str):
        loads.append((dtype, attn))
        return load(variant, ref, dtype=dtype, attn=attn)

    candidates = [Candidate(), Candidate(batch_size=2)]
    lines: list[str] = []
    result = measure_settings(
        load_model,
        candidates,
        device="cpu",
        samples=synthetic_smoke(2),
        rounds=2,
        max_new_tokens=4,
        log=lines.append,
    )
    result.loads = loads
    return result


def test_every_setting_is_measured_and_shares_one_model(report):
    assert report.loads == [("fp32", "sdpa")]  # both candidates and the snippet use the same loaded model
    assert report.baseline.kind == "model-card snippet" and report.baseline.images_per_s > 0
    assert [len(s.batch_s) for s in report.settings] == [2, 2]
    assert all(s.error is None and s.images_per_s > 0 for s in report.settings)
    assert all(s.vision_ms_per_image > 0 for s in report.settings)


def test_fp32_settings_reproduce_the_snippets_texts(report):
    assert set(report.baseline.texts) == {s.image_id for s in synthetic_smoke(2)}
    for setting in report.settings:
        assert report.agreement_of(setting) == 1.0


def test_table_speedup_and_json(report):
    table = report.table()
    assert "model-card snippet" not in table.splitlines()[0]
    for setting in [report.baseline, *report.settings]:
        assert setting.name in table
    line = report.speedup_line()
    match = re.fullmatch(
        r"speedup: (\d+\.\d\d)x \(best: (.+) via the harness Pipeline, .* vs model-card snippet: "
        r"base fp32 batch 1 num_beams=3 sdpa .*\)",
        line,
    )
    assert match, line
    assert match.group(2) == report.best.name
    assert float(match.group(1)) == pytest.approx(
        report.best.images_per_s / report.baseline.images_per_s, abs=0.01
    )
    assert report.target_line().startswith("target: >= 1.5x on cpu: ")
    data = json.loads(json.dumps(report.to_dict(), default=str))
    assert data["speedup"] == pytest.approx(report.speedup)
    assert data["vision_gflop_per_image"] > 0 and data["matmul_gflops"]["fp32"] > 0
    roof = data["settings"][0]["roofline"]
    assert roof["fraction"] == pytest.approx(roof["vision_gflops_per_s"] / roof["matmul_gflops_per_s"])
    assert data["settings"][0]["expected_same_tokens"] is True


def test_candidates_keep_the_work_identical():
    """Every candidate runs <CAPTION> with num_beams=3 and 20 tokens; only how it runs differs."""
    for candidates in (perf.cpu_candidates(), perf.cuda_candidates()):
        assert Candidate() in candidates
        assert len({c.name for c in candidates}) == len(candidates)
    assert perf.NUM_BEAMS == 3 and perf.NEW_TOKENS == 20 and perf.TASK == "<CAPTION>"
    assert max(c.batch_size for c in perf.cuda_candidates()) >= 32
    assert (
        not Candidate(dtype="bf16").token_preserving
        and Candidate(batch_size=8, cache="static").token_preserving
    )


def test_bad_arguments_exit_2(capsys):
    assert perf.main(["--device", "tpu"]) == 2
    assert "accepted" in capsys.readouterr().err
    assert perf.main(["--images", "0"]) == 2
