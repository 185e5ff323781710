"""Predictions files (JSONL) and the `score` subcommand's function."""

import json
import shutil
from pathlib import Path

import pytest

from bench.accuracy import fetch, metrics
from bench.accuracy.data import Region, Sample, synthetic_smoke
from bench.core.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "accuracy"


def _write(tmp_path, rows, name="pred.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _samples():
    return [
        Sample(1, 100, 100, image_path="/x/0054d1b4f5dc2d6a.jpg"),
        Sample(2, 100, 100),
        Sample(3, 100, 100),
    ]


def test_box_rows_are_grouped_per_image_in_file_order(tmp_path):
    path = _write(
        tmp_path,
        [
            {"image_id": 2, "label": "cat", "bbox_xyxy": [1, 2, 3, 4]},
            {"image_id": "1", "label": "dog", "bbox_xyxy": [5, 6, 7, 8], "score": 0.5},
            {"image_id": 2, "label": "cup", "bbox_xyxy": [0, 0, 9, 9]},
            "",
            {"image_id": 99, "label": "x", "bbox_xyxy": [0, 0, 1, 1]},
        ],
    )
    with pytest.warns(UserWarning, match="ignored 1 row"):
        answers = metrics.load_predictions(path, "<OD>", _samples())
    assert answers[0] == {"bboxes": [[5, 6, 7, 8]], "labels": ["dog"], "scores": [0.5]}
    assert answers[1] == {"bboxes": [[1, 2, 3, 4], [0, 0, 9, 9]], "labels": ["cat", "cup"]}
    assert answers[2] == {"bboxes": [], "labels": []}


def test_text_polygon_quad_and_open_vocabulary_rows(tmp_path):
    texts = metrics.load_predictions(
        _write(tmp_path, [{"image_id": "0054d1b4f5dc2d6a", "text": "a cat"}]), "<CAPTION>", _samples()
    )
    assert texts == ["a cat", "", ""]  # an image may be named by its file stem (TextCaps hex ids)
    polys = metrics.load_predictions(
        _write(tmp_path, [{"image_id": 3, "polygons": [[0, 0, 4, 0, 4, 4]], "label": "x"}]),
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        _samples(),
    )
    assert polys[2] == {"polygons": [[[0, 0, 4, 0, 4, 4]]], "labels": ["x"]}
    quads = metrics.load_predictions(
        _write(tmp_path, [{"image_id": 1, "quad_box": [0, 0, 4, 0, 4, 4, 0, 4], "text": "EXIT"}]),
        "<OCR_WITH_REGION>",
        _samples(),
    )
    assert quads[0] == {"quad_boxes": [[0, 0, 4, 0, 4, 4, 0, 4]], "labels": ["EXIT"]}
    ovd = metrics.load_predictions(
        _write(tmp_path, [{"image_id": 1, "label": "cat", "bbox_xyxy": [0, 0, 4, 4]}]),
        "<OPEN_VOCABULARY_DETECTION>",
        _samples(),
    )
    assert ovd[0] == {
        "bboxes": [[0, 0, 4, 4]],
        "bboxes_labels": ["cat"],
        "polygons": [],
        "polygons_labels": [],
    }


@pytest.mark.parametrize(
    ("task", "rows", "message"),
    [
        (
            "<OD>",
            [{"image_id": 1, "label": "a", "bbox_xyxy": [0, 0, 1, 1]}, "{not json"],
            r"pred.jsonl:2: not a JSON object",
        ),
        (
            "<OD>",
            [{"image_id": 1, "label": "a", "bbox": [0, 0, 1, 1]}],
            r"pred.jsonl:1: \"bbox_xyxy\" must be 4 numbers",
        ),
        ("<OD>", [{"label": "a", "bbox_xyxy": [0, 0, 1, 1]}], r"pred.jsonl:1: missing or bad \"image_id\""),
        (
            "<OD>",
            [{"image_id": 1, "label": "a", "bbox_xyxy": [0, 0, 1, 1], "score": "high"}],
            r":1: \"score\" must be a number",
        ),
        (
            "<CAPTION>",
            [{"image_id": 1, "text": "a"}, {"image_id": 1, "text": "b"}],
            r"pred.jsonl:2: a second prediction",
        ),
        (
            "<CAPTION>",
            [{"image_id": 1, "caption": "a"}],
            r"pred.jsonl:1: \"text\" must be a string.*expected",
        ),
        (
            "<REGION_TO_SEGMENTATION>",
            [{"image_id": 1, "polygons": [[0, 0, 1]]}],
            r":1: \"polygons\" must be a list",
        ),
        (
            "<OCR_WITH_REGION>",
            [{"image_id": 1, "quad_box": [0, 0, 1, 1], "text": "a"}],
            r":1: \"quad_box\" must be 8",
        ),
    ],
)
def test_malformed_rows_name_the_line(tmp_path, task, rows, message):
    with pytest.raises(UsageError, match=message):
        metrics.load_predictions(_write(tmp_path, rows), task, _samples())


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(UsageError, match="predictions file not found"):
        metrics.load_predictions(tmp_path / "nope.jsonl", "<OD>", _samples())
    with pytest.raises(UsageError, match="unknown task '<VQA>'"):
        metrics.load_predictions(tmp_path / "nope.jsonl", "<VQA>", _samples())


def test_score_file_on_smoke_prints_and_writes_json(tmp_path):
    samples = synthetic_smoke(16)
    rows = [
        {"image_id": s.image_id, "label": o.category, "bbox_xyxy": list(o.bbox)}
        for s in samples
        for o in s.objects
    ]
    path = _write(tmp_path, rows)
    out = tmp_path / "scores.json"
    got = metrics.score_file("<OD>", "synthetic-smoke", path, json_out=out)
    assert got == pytest.approx({"map": 100.0, "ap50": 100.0, "ap75": 100.0})
    doc = json.loads(out.read_text())
    assert (
        doc["metrics"] == got and doc["n_images"] == 16 and doc["task"] == "<OD>" and doc["benchmark"] is None
    )
    assert metrics.format_metrics(got).splitlines() == ["map 100.0000", "ap50 100.0000", "ap75 100.0000"]
    # a subset scores only its images; rows for the others are ignored
    with pytest.warns(UserWarning, match="ignored"):
        assert metrics.score_file("<OD>", "synthetic-smoke:4", path)["map"] == pytest.approx(100.0)


def test_score_file_against_a_users_coco_json(tmp_path):
    ann = FIXTURES / "coco-val2017" / "annotations" / "instances_val2017.json"
    doc = json.loads(ann.read_text())
    rows = [
        {
            "image_id": a["image_id"],
            "label": "people" if a["category_id"] == 1 else {23: "bear", 65: "bed"}[a["category_id"]],
            "bbox_xyxy": [
                a["bbox"][0],
                a["bbox"][1],
                a["bbox"][0] + a["bbox"][2],
                a["bbox"][1] + a["bbox"][3],
            ],
        }
        for a in doc["annotations"]
        if not a["iscrowd"]
    ]
    got = metrics.score_file("<OD>", f"coco-json:{ann}", _write(tmp_path, rows))
    assert got == pytest.approx({"map": 100.0, "ap50": 100.0, "ap75": 100.0})
    with pytest.raises(UsageError, match="has no references for <OCR>"):
        metrics.score_file("<OCR>", f"coco-json:{ann}", _write(tmp_path, []))


def test_score_file_refcoco_grounding(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path / "cache"))
    shutil.copytree(FIXTURES / "refcoco", tmp_path / "cache" / "refcoco")
    (tmp_path / "cache" / "coco-train2014").mkdir()
    for name in ("refcoco", "coco-train2014"):
        (tmp_path / "cache" / name / fetch.READY).write_text("{}")
    # sentence 2 ("woman on right") right, sentence 3 ("right person") wrong
    rows = [
        {"image_id": 2, "label": "woman", "bbox_xyxy": [50, 5, 75, 30]},
        {"image_id": 3, "label": "person", "bbox_xyxy": [10, 10, 40, 50]},
    ]
    got = metrics.score_file("<CAPTION_TO_PHRASE_GROUNDING>", "refcoco-val", _write(tmp_path, rows))
    assert got == pytest.approx({"acc_at_0.5": 50.0, "miou": 50.0})
    assert metrics.reported_benchmark("refcoco-val", "<CAPTION_TO_PHRASE_GROUNDING>").key == "refcoco_val_acc"


def test_region_helpers_are_exact():
    assert metrics.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert metrics.greedy_matches([(0, 0, 10, 10)], [(0, 0, 10, 10), (0, 0, 10, 10)]) == 1
    assert metrics._region_polygon(Region((1, 2, 3, 4))) == [1, 2, 3, 2, 3, 4, 1, 4]
