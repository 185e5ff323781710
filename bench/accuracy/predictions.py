"""Predictions files (JSONL) made elsewhere, read and scored against a dataset: the ``score``
subcommand. Its own module because it is a door for untrusted input (every row checked, one line per
bad row), not a scorer."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from bench.accuracy.data import Sample, get_dataset, load_samples
from bench.accuracy.metrics import is_box, reported_benchmark, score, task_scoring
from bench.accuracy.tasks import tasks_of
from bench.core.errors import UsageError
from bench.core.inputs import parse_json
from bench.core.numbers import finite_number
from bench.core.paths import write_output


def empty_answer(task: str) -> Any:
    return {
        "text": "",
        "boxes": {"bboxes": [], "labels": []},
        "ovd": {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []},
        "polygons": {"polygons": [], "labels": []},
        "quads": {"quad_boxes": [], "labels": []},
    }[task_scoring(task).kind]


_ROW_FORMAT = {
    "text": '{"image_id": ID, "text": "..."}',
    "boxes": '{"image_id": ID, "label": "...", "bbox_xyxy": [x1, y1, x2, y2], "score": S (optional)}',
    "ovd": '{"image_id": ID, "label": "...", "bbox_xyxy": [x1, y1, x2, y2]}',
    "polygons": '{"image_id": ID, "polygons": [[x, y, x, y, ...], ...], "label": "..." (optional)}',
    "quads": '{"image_id": ID, "quad_box": [x1, y1, x2, y2, x3, y3, x4, y4], "text": "..."}',
}


def _add_row(kind: str, row: dict, answer: Any) -> str | None:
    """Fold one row into its image's answer; returns what is wrong with the row, or None."""
    if kind == "text":
        return None if isinstance(row.get("text"), str) else '"text" must be a string'
    if kind in ("boxes", "ovd"):
        label = row.get("label", "")
        if not is_box(row.get("bbox_xyxy")) or not isinstance(label, str):
            return '"bbox_xyxy" must be 4 numbers and "label" a string'
        x1, y1, x2, y2 = row["bbox_xyxy"]
        if x2 < x1 or y2 < y1:  # a swapped box would silently score as a miss
            return f'"bbox_xyxy" {row["bbox_xyxy"]} has x2 < x1 or y2 < y1; it must be [x1, y1, x2, y2], corners in that order'
        if "score" in row and finite_number(row["score"]) is None:
            return '"score" must be a number'
        labels_key = "labels" if kind == "boxes" else "bboxes_labels"
        answer["bboxes"].append([float(v) for v in row["bbox_xyxy"]])
        answer[labels_key].append(label)
        if kind == "boxes" and "score" in row:
            answer.setdefault("scores", []).append(float(row["score"]))
        return None
    if kind == "polygons":
        polys = row.get("polygons")
        if not isinstance(polys, list) or not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(finite_number(v) is not None for v in p) for p in polys
        ):
            return '"polygons" must be a list of flat [x, y, ...] lists with at least 3 points'
        answer["polygons"].append([[float(v) for v in p] for p in polys])
        answer["labels"].append(str(row.get("label", "")))
        return None
    if not is_box(row.get("quad_box"), 8) or not isinstance(row.get("text"), str):
        return '"quad_box" must be 8 numbers and "text" a string'
    answer["quad_boxes"].append([float(v) for v in row["quad_box"]])
    answer["labels"].append(row["text"])
    return None


def _id_index(samples: list[Sample]) -> dict[str, int]:
    """Prediction image ids -> sample index: the decimal id, or the image file's stem (e.g. TextCaps hex ids)."""
    index: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.image_path:
            index.setdefault(Path(s.image_path).stem, i)
        index[str(s.image_id)] = i
    return index


MAX_PREDICTIONS_BYTES = 256 * 2**20
"""The largest predictions file ``score`` reads (a whole dataset's rows are a few MB)."""
MAX_ANSWER_CHARS = 10_000
"""The longest text (caption, label, OCR line) one row may hold: Florence-2 generates at most 1024 tokens,
a few thousand characters; edit-distance metrics cost the square of a text's length."""


def _read_lines(path: Path) -> list[str]:
    """The lines of a predictions file; UsageError for one too large, missing, unreadable or not UTF-8."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_PREDICTIONS_BYTES:
            raise UsageError(f"predictions file {path} has {size} bytes; accepted: at most {MAX_PREDICTIONS_BYTES} "
                             "bytes (MAX_PREDICTIONS_BYTES)")
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise UsageError(f"predictions file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"predictions file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read predictions file {path}: {exc.strerror}; accepted: a JSONL file") from None


def load_predictions(path: Path, task: str, samples: list[Sample]) -> list[Any]:
    """Answers aligned with samples from a JSONL predictions file (format per task in docs/accuracy.md).

    Rows of one image are grouped in file order (the order gives <OD> boxes their scores when rows have
    none); images without rows get an empty answer; rows for images outside ``samples`` are ignored.
    """
    kind = task_scoring(task).kind
    index = _id_index(samples)
    answers: list[Any] = [None] * len(samples)
    ignored = rows = 0
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = parse_json(line)
        except ValueError as exc:  # not JSON, or nested deeper than inputs.MAX_NESTING
            raise UsageError(
                f"{where}: not a JSON object ({getattr(exc, 'msg', exc)}); expected {_ROW_FORMAT[kind]}"
            ) from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("image_id"), (int, str))
            or isinstance(row.get("image_id"), bool)
        ):
            raise UsageError(f'{where}: missing or bad "image_id"; expected {_ROW_FORMAT[kind]}')
        i = index.get(str(row["image_id"]))
        if i is None:
            ignored += 1
            continue
        if kind == "text" and answers[i] is not None:
            raise UsageError(
                f"{where}: a second prediction for image_id {row['image_id']}; expected one row per image"
            )
        if answers[i] is None:
            answers[i] = empty_answer(task)
        problem = _add_row(kind, row, answers[i])
        if problem:
            raise UsageError(f"{where}: {problem}; expected {_ROW_FORMAT[kind]}")
        if kind == "text":
            answers[i] = row["text"]
        texts = [row[k] for k in ("text", "label") if isinstance(row.get(k), str)]
        if any(len(t) > MAX_ANSWER_CHARS for t in texts):
            raise UsageError(f"{where}: a text of {max(map(len, texts))} characters; accepted: at most "
                             f"{MAX_ANSWER_CHARS} (MAX_ANSWER_CHARS: scoring time grows with the square of a text)")
        rows += 1
    if not rows:
        raise UsageError(f"predictions file {path} has no prediction row for the dataset's images ({ignored} for "
                         f"other images); accepted: {_ROW_FORMAT[kind]}, one per line")
    if ignored:
        warnings.warn(f"{path}: ignored {ignored} row(s) for images not in the dataset", stacklevel=2)
    answers = [a if a is not None else empty_answer(task) for a in answers]
    for a in answers:
        if isinstance(a, dict) and "scores" in a and len(a["scores"]) != len(a["bboxes"]):
            raise UsageError(f'{path}: give a "score" on every row of an image or on none')
    return answers


def format_metrics(metrics: dict[str, float]) -> str:
    """What ``score`` prints: one ``NAME value`` line per metric."""
    return "\n".join(f"{name} {value:.4f}" for name, value in metrics.items())


def score_file(
    task: str,
    dataset: str,
    predictions: str | os.PathLike,
    json_out: str | os.PathLike | None = None,
    *,
    java: bool | None = None,
) -> dict[str, float]:
    """Score a predictions file made elsewhere against a dataset; optionally write the result as JSON."""
    task_scoring(task)
    spec = get_dataset(dataset)
    if task not in tasks_of(spec):
        raise UsageError(
            f"dataset {dataset!r} has no references for {task}; accepted: {', '.join(tasks_of(spec))}"
        )
    samples = load_samples(dataset)
    answers = load_predictions(Path(predictions), task, samples)
    metrics = score(task, samples, answers, java=java)
    if json_out is not None:
        bench = reported_benchmark(dataset, task)
        doc = {
            "task": task,
            "dataset": dataset,
            "predictions": str(predictions),
            "n_images": len(samples),
            "metrics": metrics,
            "benchmark": bench.key if bench else None,
        }
        write_output(json_out, json.dumps(doc, indent=2) + "\n")
    return metrics
