"""bench.results: the typed record reads every stored line back to exactly today's JSON, and untrusted
values become None figures, never an exception."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile import hostile_records
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.core.errors import UsageError
from bench.results import (
    Extra,
    Record,
    Stats,
    Table,
    Throughput,
    columns,
    dig,
    figure,
    samples,
    schema,
    store,
    value,
)
from bench.results.tables import converter

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "reports" / "baselines" / "smoke-cpu"
STORED = sorted(ROOT.glob("reports/baselines/*/results.jsonl")) + [
    ROOT / "tests" / "fixtures" / "schema1-smoke-cpu" / "results.jsonl"]


def _lines() -> list[tuple[str, str]]:
    return [(path.parent.name, line) for path in STORED for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("run", "line"), _lines())
def test_every_stored_line_round_trips_to_what_the_reader_gave(run, line):
    today = schema.upgrade(store.parse_line(line))  # the reader before bench.results: parse, check, upgrade
    record = Record.from_dict(json.loads(line))
    assert record is not None and record.to_dict() == today
    if json.loads(line).get("schema") == 2:  # written by run: the same bytes again (cell ids, baselines unchanged)
        assert record.to_json() == line


def test_the_store_reads_typed_records_that_give_back_the_same_json():
    typed = store.records(BASELINE)
    assert all(isinstance(r, Record) for r in typed) and len(typed) == 4
    assert [r.to_dict() for r in typed] == [json.loads(line) for line in (BASELINE / store.RESULTS).read_text().splitlines()]
    assert store.latest_by_cell(typed) == {r.cell_id: r for r in typed}


def _walk(node: Any) -> Any:
    """Every (hint, value) pair of a typed record's declared fields, tables and items included."""
    if isinstance(node, Table):
        hints = typing.get_type_hints(type(node))
        for f in dataclasses.fields(node):
            if f.name not in ("_keys", "_other"):
                yield hints[f.name], getattr(node, f.name)
                yield from _walk(getattr(node, f.name))
    elif isinstance(node, tuple):
        for item in node:
            yield from _walk(item)


def _conforms(hint: Any, found: Any) -> bool:
    """A declared figure is a finite number or None; a label text or None; a flag a bool or None."""
    if found is None or hint is Any or isinstance(found, (Table, tuple, array)):  # walked, or checked below
        return True
    if hint in (float | None, int | None):
        return not isinstance(found, bool) and isinstance(found, (int, float)) and math.isfinite(found)
    if hint == str | None:
        return isinstance(found, str)
    if hint == bool | None:
        return isinstance(found, bool)
    return converter(hint)(found) == found  # a mapping of figures: each finite or None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_records_give_none_figures_never_an_exception(seed):
    for raw in hostile_records(seed, BASELINE):
        record = Record.from_dict(json.loads(json.dumps(raw)))  # as the store reads them: NaN and inf included
        assert record is not None  # they pass the store's checks (tests/test_faults.py)
        bad = [(hint, found) for hint, found in _walk(record) if not _conforms(hint, found)]
        assert not bad
        assert all(figure(record, path) is None or math.isfinite(figure(record, path))
                   for path in ("latency_ms.p50", "throughput.images_per_s", "memory.peak_rss_bytes",
                                "energy.joules_per_image", "extra.roofline.fraction", "per_token_ms.p90"))
        assert not np.isinf(samples(record)).any()
        json.loads(record.to_json())  # writes back as JSON


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_mutation_of_a_record_is_a_record_with_none_figures_or_not_a_record(data):
    raw = json.loads(data.draw(st.sampled_from((BASELINE / store.RESULTS).read_text().splitlines())))
    for _ in range(data.draw(st.integers(1, 4))):  # a value anywhere (one level or two deep) replaced
        node = raw
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
            node, key = node[key], data.draw(st.sampled_from(sorted(node[key])))
        node[key] = data.draw(_JSON)
    try:
        record = Record.from_dict(copy.deepcopy(raw))
    except UsageError:  # the one refusal: a schema version this version cannot read, named in one line
        assert raw.get("schema") not in (1, 2, None)
        return
    assert (record is None) == (store.parse_line(json.dumps(raw)) is None)
    if record is not None:
        assert all(_conforms(hint, found) for hint, found in _walk(record))
        json.loads(record.to_json())


def test_a_table_a_writer_builds_writes_every_field_null_where_undefined():
    assert Throughput(images_per_s=2.0, tokens_per_s=10.0, wall_s=1.0).to_dict() == {
        "images_per_s": 2.0, "tokens_per_s": 10.0, "wall_s": 1.0, "decode_tokens_per_s": None}
    read = Throughput.from_dict({"images_per_s": 2.0, "mystery": [1]})  # as read: the keys read, unknown kept
    assert read.to_dict() == {"images_per_s": 2.0, "mystery": [1]} and read.tokens_per_s is None
    assert Extra.from_dict({}).to_dict() == {} and Stats.from_dict([1]) is None


def test_not_a_record_is_none_and_a_later_schema_one_refusal():
    assert Record.from_dict([]) is None and Record.from_dict({"cell_id": 1, "status": "ok"}) is None
    assert Record.from_dict({"cell_id": "a", "status": "ok", "latency_ms": {"p50": [1.0]}}) is None
    with pytest.raises(UsageError, match="schema 3"):
        Record.from_dict({"cell_id": "a", "status": "ok", "schema": 3})


def test_accessors_read_paths_and_columns():
    typed = store.records(BASELINE)
    ok = typed[0]
    assert value(ok, "latency_ms.p50") == json.loads((BASELINE / store.RESULTS).read_text().splitlines()[0])[
        "latency_ms"]["p50"]
    assert value(ok, "server.early_stopping.met") is None and figure(ok, "settings.cache") is None
    table = columns([*typed, Record.from_dict({"cell_id": "x", "status": "error"})],
                    ["latency_ms.p50", "throughput.images_per_s"])
    assert table["latency_ms.p50"].dtype == np.float64 and len(table["latency_ms.p50"]) == 5
    assert math.isnan(table["throughput.images_per_s"][-1])
    assert list(samples(ok)) == list(ok.samples_ms) and not samples(ok).flags.writeable
    assert dig({"gpu": {"names": ["a"]}}, "gpu", "names") == ["a"] and dig({"gpu": 5}, "gpu", "names") is None


def test_records_are_slotted_and_frozen():
    record = store.records(BASELINE)[0]
    assert not hasattr(record, "__dict__") and not hasattr(record.latency_ms, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "error"  # type: ignore[misc]


def test_the_fast_field_checks_agree_with_conforms():
    from bench.core.inputs import conforms
    from bench.results.record import _json_checks, json_hints

    values = [None, True, False, 0, 3, -1.5, float("nan"), "x", "", [], [1], {}, {"a": 1}]
    for name, (exact, check) in _json_checks().items():
        for v in values:
            expected = conforms(v, json_hints()[name], shallow=True)
            assert check(v) == expected and (type(v) in exact or check(v)) == expected, (name, v)
