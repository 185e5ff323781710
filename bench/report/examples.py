"""The page's example outputs: a few cells' images with their predicted boxes and polygons drawn, as PNG
data URIs. Records are untrusted input: shapes, sizes and image paths are checked before anything is drawn
or read."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from bench.report.report_rows import Run
from bench.report.report_rows import number as _num
from bench.results import Example

MAX_EXAMPLE_CELLS = 6
MAX_EXAMPLES_PER_CELL = 3
THUMB_WIDTH = 480
# Records are untrusted: a declared image side beyond this is ignored, a canvas is never taller than
# MAX_THUMB_HEIGHT, and at most MAX_SHAPES shapes are drawn per example.
MAX_DECLARED_SIDE = 1_000_000
MAX_THUMB_HEIGHT = 4 * THUMB_WIDTH
MAX_SHAPES = 200


def _shapes(answer: Any) -> list[tuple[str, list[float], str]]:
    """(kind, coordinates, label) for every box, quad or polygon in a parsed answer."""
    if not isinstance(answer, dict):
        return []
    out: list[tuple[str, list[float], str]] = []

    def listed(key: str) -> list[Any]:  # answers in records are untrusted: a non-list is no shapes
        value = answer.get(key)
        return value if isinstance(value, list) else []

    def labels(key: str, n: int) -> list[str]:
        values = listed(key)
        return [str(values[i]) if i < len(values) else "" for i in range(n)]

    def flat_polys(node: Any) -> list[list[float]]:
        if isinstance(node, list) and node and all(_num(v) is not None for v in node):
            return [[float(v) for v in node]]
        if isinstance(node, list):
            return [p for item in node for p in flat_polys(item)]
        return []

    for key, label_key in (("bboxes", "bboxes_labels"), ("bboxes", "labels")):
        boxes = listed(key)
        if boxes and (label_key in answer or label_key == "labels"):
            for box, label in zip(boxes, labels(label_key, len(boxes)), strict=True):
                if isinstance(box, list) and len(box) == 4 and all(_num(v) is not None for v in box):
                    out.append(("box", [float(v) for v in box], label))
            break
    for key, label_key in (("quad_boxes", "labels"), ("polygons", "polygons_labels"), ("polygons", "labels")):
        items = listed(key)
        if not items:
            continue
        for item, label in zip(items, labels(label_key, len(items)), strict=True):
            out += [("poly", p, label) for p in flat_polys(item) if len(p) >= 6]
        if key == "polygons":
            break
    return out


def _inside(run_dir: Path, relative: Any) -> Path | None:
    """The example image, only if it lies inside the run directory (records are untrusted input)."""
    if not isinstance(relative, str) or not relative:
        return None
    path = (run_dir / relative).resolve()
    return path if path.is_file() and path.is_relative_to(run_dir.resolve()) else None


def _draw_example(run_dir: Path, example: Example) -> tuple[str | None, str]:
    """A PNG data URI of the example image with the predicted shapes drawn, and a note."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = _num(example.width), _num(example.height)
    if not (width and height and 1 <= width <= MAX_DECLARED_SIDE and 1 <= height <= MAX_DECLARED_SIDE):
        width = height = None  # an absurd declared size is not trusted (nor allocated)
    path = _inside(run_dir, example.image_file)
    note = ""
    try:
        if path is not None:
            with Image.open(path) as img:
                img = img.convert("RGB")
        elif width and height:
            fit = min(1.0, THUMB_WIDTH / width)  # the canvas is made at thumbnail size, never at the declared one
            size = (max(1, round(width * fit)), min(MAX_THUMB_HEIGHT, max(1, round(height * fit))))
            img = Image.new("RGB", size, (235, 235, 235))
            note = "image file not saved: shapes drawn on a blank canvas of the image's size"
        else:
            return None, "image file not saved"
    except (OSError, Image.DecompressionBombError) as exc:
        return None, f"image unreadable: {exc}"
    sx = img.width / width if width else 1.0
    sy = img.height / height if height else 1.0
    scale = min(1.0, THUMB_WIDTH / img.width)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    sx, sy = sx * scale, sy * scale
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    colors = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")
    bound = 4.0 * max(img.width, img.height)  # shapes far outside the image are clipped, not overflowed

    def clip(v: float) -> float:
        return max(-bound, min(bound, v))

    for n, (kind, coords, label) in enumerate(_shapes(example.answer)[:MAX_SHAPES]):
        color = colors[n % len(colors)]
        xy = [(clip(coords[i] * sx), clip(coords[i + 1] * sy)) for i in range(0, len(coords) - 1, 2)]
        if kind == "box":
            (x1, y1), (x2, y2) = xy
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=2)
        else:
            draw.polygon(xy, outline=color, width=2)
        if label:
            try:
                draw.text((xy[0][0] + 2, xy[0][1] + 1), label[:40], fill=color, font=font)
            except UnicodeEncodeError:
                draw.text(
                    (xy[0][0] + 2, xy[0][1] + 1), label[:40].encode("ascii", "replace").decode(), fill=color
                )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), note


def examples(runs: list[Run]) -> list[dict[str, Any]]:
    """A few cells' example outputs, one cell per (task, variant), pretrained weights first."""
    cells = [(run, r) for run in runs for r in run.rows if r.ok and r.rec.examples]
    cells.sort(key=lambda c: c[1].rec.weights != "pretrained")
    picked, seen = [], set()
    for run, r in cells:
        key = (r.rec.task, r.rec.variant)
        if key in seen or len(picked) >= MAX_EXAMPLE_CELLS:
            continue
        seen.add(key)
        items = []
        for ex in r.rec.examples[:MAX_EXAMPLES_PER_CELL]:
            uri, note = _draw_example(run.path, ex)
            answer = ex.answer
            items.append(
                {
                    "image_id": ex.image_id,
                    "uri": uri,
                    "note": note,
                    "text": str(ex.text if ex.text is not None else ""),
                    "answer": answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False),
                }
            )
        picked.append({"row": r, "examples": items})
    return picked
