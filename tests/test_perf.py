"""bench.tools.perf on the tiny checkpoint: the snippet and harness settings run, the table and speedup line print."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from bench.accuracy.data import synthetic_smoke
from bench.backends.base import LoadOptions
from bench.backends.transformers.checkpoints import load, resolve
from bench.core.errors import UsageError
from bench.core.variants import get_variant
from bench.tools import perf, perf_report, perf_runners, perf_settings, targets
from bench.tools.perf_measure import measure_settings
from bench.tools.perf_settings import Candidate


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
    readings = iter([(0.5, 0.4, 0.3), (1.5, 0.6, 0.4), (2.5, 0.8, 0.5), (3.5, 1.0, 0.6)])
    result = measure_settings(
        load_model,
        candidates,
        device="cpu",
        samples=synthetic_smoke(2),
        rounds=2,
        max_new_tokens=4,
        log=lines.append,
        read_load=lambda: next(readings),
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
        r"speedup: (\d+\.\d\d)x \(95% CI \d+\.\d\d-\d+\.\d\dx over 2 rounds; best: (.+) via the harness Pipeline, .* vs model-card snippet: "
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
    ratio = roof["vision_gflops_per_s"] / roof["matmul_gflops_per_s"]
    assert roof["fraction"] == (None if roof["bad_reference"] else pytest.approx(ratio))
    assert roof["bad_reference"] == (ratio > 1)  # a reference that under-read the machine is never a result
    assert data["settings"][0]["expected_same_tokens"] is True


def test_the_host_load_is_read_before_after_each_round_and_after(report):
    load = report.to_dict()["host_load"]
    assert load["start"] == [0.5, 0.4, 0.3] and load["end"] == [3.5, 1.0, 0.6]
    assert load["rounds"] == [[1.5, 0.6, 0.4], [2.5, 0.8, 0.5]] and report.rounds == 2
    assert "after each round 1.50, 2.50" in report.host_line()
    spread = report.to_dict()["settings"][0]["spread"]
    assert spread["batches"] == 2 and spread["min_s"] <= spread["median_s"] <= spread["max_s"]
    # two rounds and, a priori, a tiny model: never judged, and the exit code says so
    assert "2 round(s) completed, 3 needed" in report.target_line()
    assert report.exit_code() == perf.EXIT_NOT_JUDGED


def test_candidates_keep_the_work_identical():
    """Every candidate runs <CAPTION> with num_beams=3 and 20 tokens; only how it runs differs."""
    for candidates in (perf_settings.cpu_candidates(), perf_settings.cuda_candidates()):
        assert Candidate() in candidates
        assert len({c.name for c in candidates}) == len(candidates)
    assert perf_settings.NUM_BEAMS == 3 and perf_settings.NEW_TOKENS == 20 and perf_settings.TASK == "<CAPTION>"
    assert max(c.batch_size for c in perf_settings.cuda_candidates()) >= 32
    assert (
        not Candidate(dtype="bf16").token_preserving
        and Candidate(batch_size=8, cache="static").token_preserving
    )


def test_bad_arguments_exit_2(capsys):
    assert perf.main(["--device", "tpu"]) == 2
    assert "accepted" in capsys.readouterr().err
    assert perf.main(["--images", "0"]) == 2


def test_candidate_keys_name_every_setting_and_parse_back():
    for candidate in perf_settings.cpu_candidates() + perf_settings.cuda_candidates():
        assert perf_settings.parse_candidate(candidate.key) == candidate
    assert perf_settings.parse_candidate("fp16-b128-static-graphs-vgraphs-dev-prefetch") == Candidate(
        dtype="fp16", batch_size=128, cache="static", compile="graphs", compile_vision="graphs",
        preprocess="device", prefetch=True)
    for bad, named in (("fp8-b1", "'fp8-b1'"), ("fp16-64", "'fp16-64'"), ("fp16-b64-turbo", "'turbo'")):
        with pytest.raises(UsageError, match=named):
            perf_settings.parse_candidate(bad)


def test_cuda_candidates_reach_batch_128_and_put_the_compiled_ones_last():
    candidates = perf_settings.cuda_candidates()
    assert {64, 128} <= {c.batch_size for c in candidates}
    first_compiled = next(i for i, c in enumerate(candidates) if c.compiled)
    assert first_compiled >= 6  # six settings are measured before any compilation can eat the budget
    assert all(c.compiled for c in candidates[first_compiled:])
    assert all(c.cache == "static" for c in candidates if c.compile == "graphs")
    assert any(c.preprocess == "device" and c.prefetch for c in candidates)


def test_random_models_are_built_on_their_device_in_their_dtype(tiny_checkpoint, monkeypatch):
    """No host init and copy: the model is created under the target device (meta here: no memory at all)."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    from bench.backends.base import CheckpointRef

    seen = []
    real = Florence2ForConditionalGeneration._from_config.__func__

    def spy(cls, config, **kwargs):
        seen.append((torch.get_default_device(), kwargs.get("dtype")))
        return real(cls, config, **kwargs)

    monkeypatch.setattr(Florence2ForConditionalGeneration, "_from_config", classmethod(spy))
    ref = CheckpointRef("random", "random:tiny", None, config_directory=tiny_checkpoint)
    loaded = load(get_variant("base"), ref, device="meta", dtype="bf16")
    assert seen == [(torch.device("meta"), torch.bfloat16)]
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in loaded.model.parameters())


class VirtualClock:
    """The budget's clock: loading a model takes 100 s, every batch 4 s, nothing else any time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_loading_is_outside_the_budget_warm_ups_are_lazy_and_budgeted(tiny_checkpoint, monkeypatch):
    clock = VirtualClock()
    variant = get_variant("base")
    ref = resolve(variant, LoadOptions(model_path=str(tiny_checkpoint)))
    loads = []

    def load_model(dtype, attn):
        loads.append(clock.now)
        clock.now += 100.0
        return load(variant, ref, dtype=dtype, attn=attn)

    for runner in (perf_runners.PipelineRunner, perf_runners.SnippetRunner):
        real = runner.run

        def timed(self, batches, real=real):
            clock.now += 4.0
            return real(self, batches)

        monkeypatch.setattr(runner, "run", timed)
    candidates = [Candidate(batch_size=2, preprocess="device", prefetch=True), Candidate(channels_last=True),
                  Candidate(batch_size=2)]
    report = measure_settings(load_model, candidates, device="cpu", samples=synthetic_smoke(2), rounds=3,
                              max_new_tokens=2, budget_s=30.0, log=lambda line: None, clock=clock)
    # snippet 8 s (warm-up + one batch), then 8 s per setting while < 22.5 s are spent; loading never counts
    assert loads == [0.0, 116.0]  # the channels_last model is built only when its turn comes
    prefetching, channels_last, late = report.settings
    assert len(prefetching.batch_s) == 1 and prefetching.load_s is None  # shares the snippet's model
    assert channels_last.load_s == 100.0 and len(channels_last.batch_s) == 1
    assert late.skipped == "budget" and "24 s of the 30 s budget" in late.error
    assert report.spent_s == 24.0 and report.load_s == 200.0
    assert report.rounds == 1 and any("rounds cut from 3 to 1" in n for n in report.notes)
    assert set(prefetching.texts) == {s.image_id for s in synthetic_smoke(2)}
    assert report.speedup is not None


def test_out_of_memory_skips_a_setting_and_no_speedup_says_why(tiny_checkpoint, monkeypatch):
    import torch

    variant = get_variant("base")
    ref = resolve(variant, LoadOptions(model_path=str(tiny_checkpoint)))
    real = perf_runners.PipelineRunner.run

    def run(self, batches):
        if self.batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB. GPU 0 ...")
        return real(self, batches)

    monkeypatch.setattr(perf_runners.PipelineRunner, "run", run)
    report = measure_settings(lambda d, a: load(variant, ref, dtype=d, attn=a),
                              [Candidate(batch_size=64), Candidate(batch_size=128)], device="cpu",
                              samples=synthetic_smoke(2), rounds=1, max_new_tokens=2, log=lambda line: None)
    assert [s.skipped for s in report.settings] == ["oom", "oom"]
    assert report.settings[0].error.startswith("skipped: CUDA out of memory at batch size 64: tried to allocate "
                                               "6.00 GiB more")
    assert report.speedup is None
    assert report.speedup_line().startswith("speedup: n/a: no harness setting was measured: 2 out of device memory")
    assert report.target_line().startswith("target: >= 1.5x on cpu: not measured (no harness setting was measured")
    cuda = perf_report.PerfReport("cuda", 2, 1, 2, report.baseline, report.settings, {}, 1.0)
    assert cuda.target_line().startswith("target: >= 30.0x on cuda: not measured")
    assert cuda.exit_code() == perf.EXIT_NOT_JUDGED
    faster = perf_runners.SettingResult("x", 8, "fp16", "harness Pipeline", batch_s=[8 / (31 * report.baseline.images_per_s)])
    one_round = perf_report.PerfReport("cuda", 2, 1, 2, report.baseline, [faster], {}, 1.0)
    assert one_round.target_line().startswith("target: >= 30.0x on cuda: not judged: 1 round(s) completed, 3 needed; "
                                              "no A/A control")  # 31x, but nothing says the machine was steady


def test_candidates_flag_picks_settings_and_refuses_bad_ones(capsys):
    args = perf.parse_args(["--device", "cpu", "--candidates", "fp32-b1-int8,bf16-b2"])
    assert args.candidates == [Candidate(quant="int8-dynamic"), Candidate(dtype="bf16", batch_size=2)]
    assert perf.main(["--candidates", "fp32-b1-warp"]) == 2
    assert "unknown flag 'warp'" in capsys.readouterr().err


def test_a_compiled_setting_starts_only_if_its_estimated_warm_up_fits(tiny_checkpoint, monkeypatch):
    clock = VirtualClock()
    variant = get_variant("base")
    ref = resolve(variant, LoadOptions(model_path=str(tiny_checkpoint)))
    real = perf_runners.PipelineRunner.run

    def timed(self, batches):
        clock.now += 4.0
        return real(self, batches)

    monkeypatch.setattr(perf_runners.PipelineRunner, "run", timed)
    compiled = Candidate(cache="static", compile=True)
    report = measure_settings(lambda d, a: load(variant, ref, dtype=d, attn=a), [Candidate(batch_size=2), compiled],
                              device="cpu", samples=synthetic_smoke(2), rounds=1, max_new_tokens=2,
                              budget_s=40.0, log=lambda line: None, clock=clock, compiled_warmup_s=35.0)
    assert report.settings[0].images_per_s and report.settings[1].skipped == "budget"
    assert "compiling is estimated at 35 s" in report.settings[1].error


def test_the_ov_flag_names_an_openvino_setting_and_the_best_of_each_backend_is_compared():
    ov = perf_settings.parse_candidate("bf16-b1-ov-int8")
    assert ov == Candidate(dtype="bf16", quant="int8-dynamic", backend="openvino")
    assert perf_settings.parse_candidate(ov.key) == ov and "ov" in ov.key.split("-")
    assert not ov.token_preserving and Candidate(backend="openvino").model_key != Candidate().model_key
    weights = perf_settings.parse_candidate("bf16-b2-ov-int8w")
    assert weights == Candidate(dtype="bf16", batch_size=2, quant="int8-weights", backend="openvino")
    assert perf_settings.parse_candidate(weights.key) == weights and "int8-weights" in weights.name
    assert "int8-dynamic" not in weights.name and "int8-dynamic" in ov.name
    assert all(c.backend in ("transformers", "openvino") for c in perf_settings.cpu_candidates())
    assert any(c.backend == "openvino" for c in perf_settings.cpu_candidates())

    def result(candidate: Candidate, seconds: float) -> perf_runners.SettingResult:
        return perf_runners.SettingResult(candidate.name, 1, candidate.dtype, "harness Pipeline", batch_s=[seconds],
                                  candidate=candidate, key=candidate.key)

    snippet = perf_runners.SettingResult("snippet", 1, "fp32", "model-card snippet", batch_s=[8.0])
    settings = [result(Candidate(), 4.0), result(Candidate(dtype="bf16"), 2.0),
                result(Candidate(backend="openvino"), 2.5), result(ov, 1.0)]
    report = perf_report.PerfReport("cpu", 2, 1, 20, snippet, settings, {}, 1.0)
    assert {k: s.key for k, s in report.best_by_backend().items()} == {"transformers": "bf16-b1",
                                                                       "openvino": ov.key}
    assert report.backends_line() == (f"backends: best openvino {ov.key} 2.00x (no interval: 1 round(s) in common) "
                                      "the best transformers bf16-b1")
    assert report.to_dict()["best_by_backend"]["openvino"]["images_per_s"] == 1.0
    assert perf_report.PerfReport("cpu", 2, 1, 20, snippet, settings[:2], {}, 1.0).backends_line() is None


# ------------------------------------------------------------------------------ judging itself (fakes)

QUIET = {"cores": 2, "start": [0.2, 0.3, 0.3], "rounds": [[1.9, 0.8, 0.4]] * 5, "end": [2.0, 1.0, 0.5]}
BUSY = {**QUIET, "start": [3.1, 2.9, 2.5]}


def _setting(candidate: Candidate, batch_s: list[float]) -> perf_runners.SettingResult:
    return perf_runners.SettingResult(candidate.name, candidate.batch_size, candidate.dtype, "harness Pipeline",
                              batch_s=batch_s, candidate=candidate, key=candidate.key)


def _judged(snippet_s, control_s, best_s, host_load=QUIET, device="cpu"):
    """A report from fake per-round batch times: the snippet, the harness's fp32-b1 (the A/A control)
    and one faster setting at batch 2."""
    snippet = perf_runners.SettingResult("snippet", 1, "fp32", "model-card snippet", batch_s=snippet_s)
    settings = [_setting(Candidate(), control_s)] if control_s else []
    settings.append(_setting(Candidate(dtype="bf16", batch_size=2), best_s))
    return perf_report.PerfReport(device, 4, min(map(len, [snippet_s, best_s])), 20, snippet, settings, {}, 1.0,
                           host_load=host_load)


STEADY = [5.0, 5.1, 4.9, 5.05, 4.95]


def test_a_quiet_steady_run_is_judged_met_with_its_interval():
    report = _judged(STEADY, [4.9, 5.0, 5.0, 5.1, 4.95], [2.5, 2.55, 2.45, 2.5, 2.6])  # ~4x at batch 2
    ci = report.speedup_interval()
    assert ci.value == pytest.approx(4.0) and 3.7 < ci.low <= ci.value <= ci.high < 4.3 and ci.rounds == 5
    assert report.target_line() == "target: >= 1.5x on cpu: met"
    assert re.match(r"speedup: 4\.00x \(95% CI \d\.\d\d-\d\.\d\dx over 5 rounds; best: ", report.speedup_line())
    aa = report.aa_control()
    assert aa.value == pytest.approx(5.0 / 5.0) and "within 1 ± 0.10" in report.aa_line()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["judgement"] == {"verdict": "met", "reasons": []}
    assert data["speedup_interval"]["low"] == pytest.approx(ci.low) and data["aa_control"]["rounds"] == 5
    assert data["host_load"] == QUIET and data["settings"][1]["spread"]["batches"] == 5
    assert report.exit_code() == 0


def test_a_busy_host_is_not_judged_and_says_its_load_and_the_aa_ratio():
    report = _judged(STEADY, STEADY, [2.5] * 5, host_load=BUSY)
    line = report.target_line()
    assert line.startswith("target: >= 1.5x on cpu: not judged: the host was busy (1-min load 3.10 at start")
    assert "A/A control 1.00x (95% CI" in line and "host load: 1-min load 3.10" in line
    assert report.exit_code() == perf.EXIT_NOT_JUDGED
    assert report.to_dict()["judgement"]["verdict"] == "not judged"


def test_an_aa_control_off_by_more_than_10_percent_blocks_the_verdict():
    """Issue 29's busy machine: the harness's fp32-b1 read 0.044 img/s against the snippet's 0.085."""
    report = _judged(STEADY, [9.7, 9.6, 9.8, 9.5, 9.7], [2.5] * 5)
    assert report.aa_control().value == pytest.approx(5.0 / 9.7)
    assert "not judged: the A/A control read 0.52x, outside 1 ± 0.10" in report.target_line()
    assert "OUTSIDE" in report.aa_line() and report.exit_code() == perf.EXIT_NOT_JUDGED


def test_too_few_rounds_or_no_control_are_not_judged():
    two = _judged(STEADY[:2], STEADY[:2], [2.5, 2.5])
    assert "not judged: 2 round(s) completed, 3 needed" in two.target_line()
    alone = _judged(STEADY, None, [2.5] * 5)
    assert "no A/A control" in alone.target_line() and "A/A control: not measured" in alone.aa_line()


def test_met_needs_the_intervals_lower_end_to_clear_the_target():
    """A median of 1.67x whose rounds spread down to 1.05x: the interval's lower end decides, NOT met."""
    report = _judged([1.0] * 5, [1.0] * 5, [1.2, 1.2, 1.8, 1.2, 1.9])
    assert report.speedup == pytest.approx(2 / 1.2) and report.speedup >= 1.5
    assert report.speedup_interval().low < 1.5
    assert report.target_line().startswith("target: >= 1.5x on cpu: NOT met: the interval's lower end is 1.0")
    assert report.exit_code() == 0  # judged: a missed target is a finding, not a failure to judge


def test_perf_json_is_what_targets_reads_and_keeps_each_candidate_as_an_object():
    report = _judged(STEADY, [4.9, 5.0, 5.0, 5.1, 4.95], [2.5, 2.55, 2.45, 2.5, 2.6], device="cuda:0")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["settings"][1]["candidate"] == dataclasses.asdict(Candidate(dtype="bf16", batch_size=2))
    assert data["baseline"]["candidate"] is None and data["measured"] == report.measured == 2
    summary = targets.PerfSummary.from_dict(data)
    ci = report.speedup_interval()
    assert (summary.device, summary.speedup, summary.low, summary.high) == ("cuda:0", report.speedup, ci.low, ci.high)
    assert summary.self_check == tuple(report.self_check()) and summary.best == report.best.name


def test_the_printed_report_ends_with_the_verdict(capsys):
    report = _judged(STEADY, STEADY, [2.5] * 5)
    perf.print_report(report, 420.0, 61.0, 3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == report.table().splitlines()[0]
    assert any(line.startswith("time: ") and line.endswith("61 s in all; 2 of 3 settings measured") for line in lines)
    assert lines[-4:] == [report.host_line(), report.aa_line(), report.speedup_line(), report.target_line()]
