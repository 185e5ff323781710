"""Bounds before work and the process's edges (issue 28, items 4 and 5).

Bounds: every number from outside has one stated range (``bench.inputs.BOUNDS``), a sweep's size is
refused from its axis lengths before any cell is made, and no JSON or TOML reader follows nesting past
``inputs.MAX_NESTING``. Edges: signals, a closed or full stdout, a deleted working folder, no temp
folder, a non-UTF-8 locale or path: each is one line and an exit code that keeps its meaning.
"""

from __future__ import annotations

import argparse
import json
import os

import pytest

from bench import cli, inputs, sweep
from bench.errors import UsageError

# ------------------------------------------------------------------------------------- bounds


def _outside(bound: inputs.Bound) -> list[float]:
    """Values just outside a bound, and absurd ones."""
    step = 1 if bound.integer else bound.high * 1e-3
    below = bound.low if bound.low_open else bound.low - step
    return [below, bound.high + step, 2**80, -(2**80)] + ([] if bound.integer else [float("nan"), float("inf")])


@pytest.mark.parametrize("name", sorted(inputs.BOUNDS))
def test_every_bound_accepts_its_ends_and_refuses_outside_them(name):
    bound = inputs.BOUNDS[name]
    low = bound.low + (1 if bound.integer else bound.high * 1e-3) if bound.low_open else bound.low
    for value in (low, bound.high):
        inputs.check_bound(name, int(value) if bound.integer else value)
    for value in _outside(bound):
        with pytest.raises(UsageError, match=rf"bad {name} .*; accepted: an? (integer|number) >"):
            inputs.check_bound(name, value)
    parse = inputs.bounded(name)
    assert parse(str(int(bound.high) if bound.integer else bound.high)) == bound.high
    for text in ("abc", str(2**80 if bound.integer else "1e300")):
        with pytest.raises(argparse.ArgumentTypeError, match="accepted: "):
            parse(text)


def _one_line(capsys, argv: list[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return rc, err[0]


@pytest.mark.parametrize("argv, named", [
    (["make-checkpoint", "DIR", "--seed", str(2**80)], f"bad seed {2**80}"),
    (["make-tiny-checkpoint", "DIR", "--seed", "-1"], "bad seed -1"),
    (["run", "--limit", "0"], "bad limit 0"),
    (["run", "--max-new-tokens", "100000"], "bad max_new_tokens 100000"),
    (["run", "--latency-percentile", "1"], "bad latency_percentile 1"),
    (["run", "--latency-bound-ms", "nan"], "bad latency_bound_ms nan"),
    (["run", "--max-queue-delay-ms", "-1"], "bad max_queue_delay_ms -1"),
    (["run", "--server-qps", "1e12"], "bad qps 1e12"),
    (["report", "RUN", "--demand-qps", "inf"], "bad demand_qps inf"),
    (["history", "check", "H", "--baseline-runs", str(2**70)], "bad baseline_runs"),
])
def test_numeric_flags_are_refused_outside_their_range_before_any_work(tmp_path, capsys, argv, named):
    argv = [str(tmp_path / a) if a in ("DIR", "RUN", "H") else a for a in argv]
    rc, line = _one_line(capsys, argv)
    assert rc == 2 and named in line and "accepted:" in line
    assert not (tmp_path / "DIR").exists()


def _sweep_file(tmp_path, text: str):
    path = tmp_path / "s.toml"
    path.write_text('dataset = "synthetic-smoke"\nlimit = 1\n' + text)
    return path


@pytest.mark.parametrize("toml, named", [
    ("batch_sizes = [9223372036854775808]", "bad batch_sizes value 9223372036854775808"),
    ("max_new_tokens = 9223372036854775807", "bad max_new_tokens 9223372036854775807"),
    ("num_beams = [0]", "bad num_beams value 0"),
    ("threads = [100000]", "bad threads value 100000"),
    ("examples = 100000", "bad examples 100000"),
    ("energy_idle_s = 1e9", "bad energy_idle_s 1000000000.0"),
    ('scenarios = ["server"]\n[server]\nqps = 1e12', "bad [server] qps"),
    ('scenarios = ["server"]\n[server]\nqps = 1.0\nmax_requests = 9223372036854775807', "bad [server] max_requests"),
    ("[repetition]\nmax_iterations = 9223372036854775807", "bad [repetition] max_iterations"),
    ("[repetition]\nmin_duration_s = 1e300", "bad [repetition] min_duration_s"),
])
def test_sweep_file_values_are_refused_outside_their_range(tmp_path, capsys, toml, named):
    rc, line = _one_line(capsys, ["run", "--sweep", str(_sweep_file(tmp_path, toml)), "--out", str(tmp_path / "r")])
    assert rc == 2 and named in line and "accepted: " in line
    assert not (tmp_path / "r").exists()


def test_a_huge_batch_size_flag_is_refused_before_anything_is_built(tmp_path, capsys):
    rc, line = _one_line(capsys, ["run", "--batch-sizes", "9223372036854775808", "--out", str(tmp_path / "r")])
    assert rc == 2 and "bad batch_sizes value 9223372036854775808; accepted: an integer >= 1 and <= 4,096" in line
    assert not (tmp_path / "r").exists()


def test_a_sweep_too_large_is_refused_from_its_axis_lengths_before_expanding(tmp_path, capsys, monkeypatch):
    big = _sweep_file(tmp_path, "\n".join(
        f"{axis} = [{', '.join(str(i + 1) for i in range(1000))}]" for axis in ("batch_sizes", "threads")
    ) + "\nvariants = [" + ", ".join(f'"v{i}"' for i in range(1000)) + "]\n")
    monkeypatch.setattr(sweep, "expand", lambda config: pytest.fail("expanded"))
    rc, line = _one_line(capsys, ["run", "--sweep", str(big), "--out", str(tmp_path / "r")])
    assert rc == 2 and "up to 1,000,000,000 cells" in line and f"at most {inputs.MAX_CELLS:,} cells" in line
    config = sweep.override(sweep.SweepConfig(), batch_sizes=",".join(map(str, range(1, 1001))),
                            num_beams=",".join(map(str, range(1, 65))), threads=",".join(map(str, range(1, 1001))))
    with pytest.raises(UsageError, match="up to 64,000,000 cells"):
        sweep.validate(config)


def test_a_sweep_at_the_cell_limit_is_accepted_by_the_count():
    lengths = {"batch_sizes": 100, "threads": inputs.MAX_CELLS // 100}
    inputs.check_cell_count(lengths)
    with pytest.raises(UsageError, match="cells"):
        inputs.check_cell_count({**lengths, "num_beams": 2})


# ------------------------------------------------------------------------------------ nesting


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [inputs.MAX_NESTING + 1, 2000, 100_000])
def test_json_and_toml_nested_too_deep_are_a_value_error_never_recursion(depth):
    with pytest.raises(inputs.NestingError, match=f"nested deeper than {inputs.MAX_NESTING}"):
        inputs.parse_json(_deep_json(depth))
    with pytest.raises(inputs.NestingError):
        inputs.parse_json('{"a": ' * depth + "1" + "}" * depth)
    with pytest.raises(inputs.NestingError):
        inputs.parse_toml("a = " + _deep_json(depth))
    assert inputs.parse_json(_deep_json(inputs.MAX_NESTING)) == json.loads(_deep_json(inputs.MAX_NESTING))


def test_a_sweep_nested_2000_deep_is_one_line(tmp_path, capsys):
    rc, line = _one_line(capsys, ["run", "--sweep", str(_sweep_file(tmp_path, "a = " + _deep_json(2000)))])
    assert rc == 2 and "nested deeper than" in line


def _readers(tmp_path, deep: str):
    """Each reader of a file from outside, given a document nested 100,000 deep: the argv that reads it."""
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(deep)
    (tmp_path / "pred.jsonl").write_text(deep + "\n")
    (tmp_path / "coco.json").write_text(deep)
    (tmp_path / "prices.toml").write_text("a = " + deep)
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "run-x.json").write_text(deep)
    (tmp_path / "bench.json").write_text(deep)
    return {
        "checkpoint config": ["run", "--model-path", str(tmp_path / "ck")],
        "predictions": ["score", "--task", "caption", "--dataset", "synthetic-smoke",
                        "--predictions", str(tmp_path / "pred.jsonl")],
        "coco annotations": ["run", "--dataset", f"coco-json:{tmp_path / 'coco.json'}"],
        "history entry": ["history", "check", str(tmp_path / "history")],
        "pytest-benchmark file": ["history", "add", str(tmp_path / "bench.json"), "--history", str(tmp_path / "h")],
    }


def test_every_reader_of_outside_json_refuses_deep_nesting_in_one_line(tmp_path, capsys):
    for what, argv in _readers(tmp_path, _deep_json(100_000)).items():
        rc, line = _one_line(capsys, argv)
        assert rc == 2, (what, line)


def test_a_price_table_nested_too_deep_is_one_line(tmp_path):
    from bench.prices import load_prices

    path = tmp_path / "p.toml"
    path.write_text("a = " + _deep_json(2000))
    with pytest.raises(UsageError, match="nested deeper than"):
        load_prices(path)


def test_damaged_run_files_nested_too_deep_are_ignored_with_a_warning(tmp_path):
    from bench import store

    (tmp_path / store.ENV).write_text(_deep_json(100_000))
    with pytest.warns(UserWarning, match="nested deeper than"):
        assert store.read_env(tmp_path) == {}
    assert store.parse_line(_deep_json(100_000)) is None


# ------------------------------------------------------------------------------- sweep paths


def test_a_sweep_from_a_pipe_is_read_not_taken_for_a_sweep_name():
    read, write = os.pipe()
    os.write(write, b'name = "from-a-pipe"\nlimit = 1\n')
    os.close(write)
    try:
        assert sweep.load_sweep(f"/dev/fd/{read}").name == "from-a-pipe"
    finally:
        os.close(read)


def test_a_sweep_file_without_a_suffix_in_a_folder_is_a_file(tmp_path):
    (tmp_path / "mysweep").write_text('name = "plain"\n')
    assert sweep.load_sweep(str(tmp_path / "mysweep")).name == "plain"
    with pytest.raises(UsageError, match="unknown sweep 'mysweep'"):
        sweep.load_sweep("mysweep")


def test_the_readme_states_every_bound_as_the_code_checks_it():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in readme.splitlines()
            if line.startswith("| `") and line.count("|") == 4}
    assert {name: rows.get(name) for name in inputs.BOUNDS} == {n: b.describe() for n, b in inputs.BOUNDS.items()}
    assert f"over {inputs.MAX_CELLS:,} cells" in readme and f"deeper than {inputs.MAX_NESTING} levels" in readme
