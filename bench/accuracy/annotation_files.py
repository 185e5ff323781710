"""Reading a dataset's files from outside: image sizes from headers (decompression bombs refused),
annotation JSON, and the checks of a COCO image and box entry. Its own module because these are the door
for untrusted annotation files, one clear error per bad value, apart from the loaders that build samples."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from bench.core.errors import UsageError
from bench.core.inputs import parse_json
from bench.core.numbers import is_finite
from bench.core.paths import open_input


def image_size(path: Path) -> tuple[int, int]:
    """Width and height from the image header only (no decoding)."""
    try:
        with open_input(path) as fh, Image.open(fh) as img:
            return img.size
    except FileNotFoundError:
        raise UsageError(f"image not found: {path}") from None
    except Image.DecompressionBombError as exc:
        raise bomb_error(path, exc) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"unreadable image {path}: {exc}") from None


def bomb_error(path: object, exc: Exception) -> UsageError:
    """A header declaring more pixels than PIL will decode (a decompression bomb, or a huge scan)."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return UsageError(f"refusing image {path}: {str(exc).rstrip('.')}; accepted: images of at most {limit:,} pixels")


def read_json(path: Path) -> dict:
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"annotation file not found: {path}") from None
    except ValueError as exc:  # not JSON, not UTF-8, or nested deeper than inputs.MAX_NESTING
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read annotation file {path}: {exc.strerror}") from None


def check_coco_image(path: Path, img: object) -> None:
    """An image entry must say its size: boxes are scored against it and the report draws with it."""
    if not isinstance(img, dict):
        raise UsageError(f"{path}: an 'images' entry is {str(img)[:60]!r}; accepted: objects with id, width, height")
    w, h = img.get("width"), img.get("height")
    if not (is_finite(w) and is_finite(h) and w >= 1 and h >= 1):
        raise UsageError(
            f"{path}: image id {img.get('id')!r} has width {w!r} and height {h!r}; "
            "accepted: COCO images with numeric width and height >= 1"
        )


def check_coco_bbox(path: Path, ann: dict) -> None:
    """COCO boxes are [x, y, width, height]: four finite numbers, width and height >= 0."""
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(is_finite, box)) and box[2] >= 0 and box[3] >= 0):
        raise UsageError(
            f"{path}: annotation id {ann.get('id')!r} has bbox {str(box)[:60]}; "
            "accepted: [x, y, width, height], four numbers with width and height >= 0"
        )
