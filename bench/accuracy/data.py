"""Datasets: one sample schema, a registry of loaders, and the embedded ``synthetic-smoke`` set.

Every loader returns ``Sample`` objects so that tasks and metrics never see a dataset's own format.
Boxes are ``(x1, y1, x2, y2)`` in pixels of the original image; polygons are flat ``[x, y, ...]``.
Add a dataset by registering a ``DatasetSpec`` in ``DATASETS`` and a manifest in ``bench/datasets_manifest/``.

Downloaded datasets are read from the cache that ``bench.accuracy.fetch`` fills; ``NAME:N`` takes the first N
samples in the order of ``subset_key`` (sha256 of the id), so a subset is the same on every machine.
``coco-json:PATH[@IMAGE_DIR][:N]`` reads any COCO-format annotation file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.accuracy import fetch
from bench.accuracy.annotation_files import (
    bomb_error,
    check_coco_bbox,
    check_coco_image,
    image_size,
    read_json,
)
from bench.accuracy.drawing import draw_word, pick, shape_mask, shape_polygon
from bench.core.errors import UsageError, choice_error
from bench.core.paths import inside, open_input

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """A located thing: a detection object, an OCR line, a grounded phrase or a region query."""

    bbox: Box
    category: str = ""
    description: str = ""
    text: str = ""
    polygon: tuple[float, ...] = ()


@dataclass
class Sample:
    """One image with its references for every task the dataset can score."""

    image_id: int
    width: int
    height: int
    image_path: str | None = None
    captions: list[str] = field(default_factory=list)
    objects: list[Region] = field(default_factory=list)
    ocr_text: str = ""
    ocr_lines: list[Region] = field(default_factory=list)
    grounding_caption: str = ""
    phrases: list[Region] = field(default_factory=list)
    expressions: list[Region] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    def load_image(self) -> Image.Image:
        """The RGB image; a missing, unreadable or corrupt file is a UsageError naming it."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels, "RGB")
        if self.image_path is None:
            raise UsageError(f"sample {self.image_id} has no image")
        try:
            with open_input(self.image_path) as fh, Image.open(fh) as img:  # a FIFO: refused, never a wait
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            raise UsageError(f"image not found: {self.image_path}") from None
        except Image.DecompressionBombError as exc:
            raise bomb_error(self.image_path, exc) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise UsageError(
                f"unreadable or corrupt image {self.image_path}: {exc}; accepted: files PIL can decode (JPEG, PNG, ...)"
            ) from None

    def references(self) -> dict:
        """The references as plain JSON data (used by the checksum and by exports)."""
        data = asdict(self)
        data.pop("pixels")
        return data


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: how to load a dataset and which kinds of reference it holds (its tasks:
    ``bench.accuracy.tasks.tasks_of``)."""

    name: str
    description: str
    load: Callable[[int | None], list[Sample]]
    families: tuple[str, ...]  # of FAMILIES


# --------------------------------------------------------------------------------------------
# synthetic-smoke: shapes and rendered words drawn with numpy, so the pixels are identical on
# every machine (no font files, no anti-aliasing, no library-version-dependent rasteriser).

SMOKE_SIZE = 16
_SMOKE_SEED = 20240617

_WORDS = ("CAT", "STOP", "OPEN", "EXIT", "BENCH", "DOG", "FAST", "MODEL", "SALE", "PARK", "ZONE", "HELLO")
_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
_BACKGROUNDS = {"white": (250, 250, 250), "gray": (200, 200, 200), "black": (20, 20, 20)}
_SHAPES = ("circle", "square", "triangle")



def _smoke_sample(index: int) -> Sample:
    rng = random.Random(_SMOKE_SEED + index)
    w, h = 320 + 32 * (index % 3), 240 + 32 * (index % 2)
    bg_name = pick(rng, tuple(_BACKGROUNDS))
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = _BACKGROUNDS[bg_name]
    objects: list[Region] = []
    n_shapes = 1 + index % 3
    for k in range(n_shapes):
        kind = pick(rng, _SHAPES)
        color = pick(rng, tuple(_COLORS))
        s = 48 + int(rng.random() * 40)
        # shapes live in the upper band, one column slot each, so they never overlap
        slot_w = w // n_shapes
        x1 = k * slot_w + int(rng.random() * max(1, slot_w - s))
        y1 = 8 + int(rng.random() * max(1, h // 2 - s - 8))
        img[shape_mask(kind, x1, y1, s, h, w)] = _COLORS[color]
        poly = shape_polygon(kind, x1, y1, s)
        objects.append(
            Region(
                bbox=(float(x1), float(y1), float(x1 + s), float(y1 + s)),
                category=kind,
                description=f"{color} {kind}",
                polygon=tuple(round(float(v), 2) for p in poly for v in p),
            )
        )
    word = pick(rng, _WORDS)
    ink = (250, 250, 250) if bg_name == "black" else (10, 10, 10)
    scale = 3 + index % 2
    text_box = draw_word(img, word, 12, h - 8 * scale - 12, scale, ink)
    names = [o.description for o in objects]
    listing = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    article = "an" if listing[0] in "aeiou" else "a"
    caption = f"{article} {listing} above the word {word.lower()} on a {bg_name} background"
    first = objects[0]
    text_region = Region(bbox=text_box, category="text", description=f"the word {word.lower()}", text=word)
    return Sample(
        image_id=index + 1,
        width=w,
        height=h,
        captions=[
            caption,
            f"{len(objects)} shape{'s' if len(objects) > 1 else ''} and the word {word.lower()}",
        ],
        objects=objects,
        ocr_text=word,
        ocr_lines=[text_region],
        grounding_caption=caption,
        phrases=[Region(bbox=o.bbox, category=f"{o.description}") for o in objects],
        expressions=[
            Region(
                bbox=first.bbox,
                category=first.category,
                text=f"the {first.description}",
                polygon=first.polygon,
            )
        ],
        regions=[first, text_region],
        pixels=img,
    )


def synthetic_smoke(limit: int | None = None) -> list[Sample]:
    """The embedded smoke set: deterministic, generated in memory in well under a second."""
    n = SMOKE_SIZE if limit is None else min(limit, SMOKE_SIZE)
    return [_smoke_sample(i) for i in range(n)]


def fingerprint(samples: list[Sample]) -> str:
    """sha256 over every image's raw RGB bytes and every reference, in order."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(np.ascontiguousarray(sample.load_image()).tobytes())
        digest.update(json.dumps(sample.references(), sort_keys=True).encode())
    return digest.hexdigest()


# The kinds of reference a dataset may hold; each task names the families that score it
# (``bench.accuracy.tasks.Task.datasets``) and ``bench.accuracy.tasks.tasks_of`` gives a dataset's tasks from its families.
FAMILIES = ("captions", "instances", "referring", "ocr", "region_descriptions")

# An object whose description is CROWD is a COCO iscrowd=1 region: detection scoring ignores
# detections on it (as the official COCOeval does) instead of counting them as false positives.
CROWD = "(crowd)"


# --------------------------------------------------------------------------------------------
# the subset rule shared by every downloaded dataset (each manifest states it)


def subset_key(sample_id: int) -> str:
    """Order of the NAME:N subsets: sha256 of the decimal id, so the first N are the same everywhere."""
    return hashlib.sha256(str(sample_id).encode()).hexdigest()


def take_subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    ordered = sorted(samples, key=lambda s: subset_key(s.image_id))
    return ordered if limit is None else ordered[:limit]



# --------------------------------------------------------------------------------------------
# COCO JSON (captions and/or instances): coco-val2017 and any user file (coco-json:PATH)


def _largest_polygon(segmentation) -> tuple[float, ...]:
    """The largest part of a COCO polygon segmentation (Region holds one polygon); () for RLE."""
    if not isinstance(segmentation, list) or not segmentation:
        return ()

    def area(p):
        xs, ys = p[0::2], p[1::2]
        return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2

    return tuple(float(v) for v in max(segmentation, key=area))


def _coco_region(ann: dict, categories: dict[int, str]) -> Region:
    x, y, w, h = (float(v) for v in ann["bbox"])
    return Region(
        bbox=(x, y, x + w, y + h),
        category=categories.get(ann.get("category_id"), ""),
        description=CROWD if ann.get("iscrowd") else "",
        polygon=_largest_polygon(ann.get("segmentation")),
    )


OUTSIDE_IMAGES_FLAG = "--allow-outside-images"


def _image_path(image_dir: Path, file_name: object, source: Path, allow_outside: bool = False) -> str:
    """An annotation's image file: inside ``image_dir`` (an absolute or ``../`` name is refused) unless
    the user allowed images outside it; annotation files are untrusted input."""
    if not isinstance(file_name, str) or not file_name or "\0" in file_name:
        raise UsageError(f"{source}: image file_name {str(file_name)[:60]!r}; accepted: a non-empty file name")
    if not allow_outside:
        inside(image_dir, file_name, f"{source}: image file_name",
               f" (or pass {OUTSIDE_IMAGES_FLAG} to read images from anywhere)")
    return str(image_dir / file_name)


def coco_samples(files: list[Path], image_dir: Path | None, limit: int | None = None,
                 allow_outside_images: bool = False) -> list[Sample]:
    """Samples from COCO-format files: caption annotations fill captions, instance annotations fill objects.

    objects are ordered non-crowd first, largest box first, so objects[0] / regions[0] (the query of the
    open-vocabulary and region tasks) is the image's largest non-crowd object.
    """
    images: dict[int, dict] = {}
    captions: dict[int, list[str]] = {}
    anns: dict[int, list[dict]] = {}
    categories: dict[int, str] = {}
    for path in files:
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise UsageError(
                f"{path} is not a COCO annotation file; accepted: JSON with 'images' and 'annotations'"
            )
        try:
            for img in doc["images"]:
                check_coco_image(path, img)
                images.setdefault(int(img["id"]), img)
            categories.update({int(c["id"]): c["name"] for c in doc.get("categories", [])})
            for ann in doc.get("annotations", []):
                if "caption" in ann:
                    captions.setdefault(int(ann["image_id"]), []).append(ann["caption"].strip())
                elif "bbox" in ann:
                    check_coco_bbox(path, ann)
                    anns.setdefault(int(ann["image_id"]), []).append(ann)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{path}: malformed COCO entry ({type(exc).__name__}: {exc})") from None
    samples = []
    for image_id, img in images.items():
        objects = sorted(
            (_coco_region(a, categories) for a in anns.get(image_id, [])),
            key=lambda r: (r.description == CROWD, -(r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1])),
        )
        regions = [o for o in objects if o.description != CROWD][:1]
        samples.append(
            Sample(
                image_id=image_id,
                width=int(img["width"]),
                height=int(img["height"]),
                image_path=_image_path(image_dir, img.get("file_name"), files[0], allow_outside_images)
                if image_dir is not None else None,
                captions=captions.get(image_id, []),
                objects=objects,
                regions=regions,
            )
        )
    return take_subset(samples, limit)


def _coco_val2017(limit: int | None) -> list[Sample]:
    root = fetch.dataset_dir("coco-val2017")
    files = [root / "annotations" / "captions_val2017.json", root / "annotations" / "instances_val2017.json"]
    return coco_samples(files, root / "val2017", limit)


def _coco_json_families(path: Path) -> tuple[str, ...]:
    doc = read_json(path)
    anns = doc.get("annotations", []) if isinstance(doc, dict) else []
    return tuple(family for family, key in (("captions", "caption"), ("instances", "bbox"))
                 if any(key in a for a in anns))


def _parse_coco_json(name: str) -> tuple[Path, Path | None, int | None]:
    """``coco-json:PATH[@IMAGE_DIR][:N]`` -> (PATH, IMAGE_DIR or PATH's folder, N)."""
    rest = name[len(COCO_JSON_PREFIX) :]
    count = None
    match = re.fullmatch(r"(.*):(\d+)", rest)
    if match:
        rest, count = match.group(1), int(match.group(2))
        if count == 0:
            raise UsageError(
                f"bad subset size 0 in dataset {name!r}; accepted: coco-json:PATH[@IMAGE_DIR][:N], N >= 1"
            )
    path, _, image_dir = rest.partition("@")
    if not path:
        raise UsageError(f"no file in dataset {name!r}; accepted: coco-json:PATH[@IMAGE_DIR][:N]")
    if not Path(path).is_file():
        raise UsageError(f"COCO annotation file not found: {path} (from dataset {name!r})")
    return Path(path), Path(image_dir) if image_dir else Path(path).parent, count


# --------------------------------------------------------------------------------------------
# COCO Karpathy test split (dataset_coco.json) over coco-val2014 images


def karpathy_samples(
    split_file: Path, image_root: Path, limit: int | None = None, split: str = "test"
) -> list[Sample]:
    doc = read_json(split_file)
    try:
        samples = [
            Sample(
                image_id=int(img["cocoid"]),
                width=0,
                height=0,
                image_path=_image_path(image_root, f"{img['filepath']}/{img['filename']}", split_file),
                captions=[s["raw"].strip() for s in img["sentences"]],
            )
            for img in doc["images"]
            if img["split"] == split
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{split_file}: not a Karpathy split file ({type(exc).__name__}: {exc})") from None
    chosen = take_subset(samples, limit)
    for sample in chosen:  # sizes are not in the split file: read the headers of the chosen images only
        sample.width, sample.height = image_size(Path(sample.image_path))
    return chosen


def _coco_karpathy_test(limit: int | None) -> list[Sample]:
    split_file = fetch.dataset_dir("coco-karpathy-test") / "dataset_coco.json"
    return karpathy_samples(split_file, fetch.dataset_dir("coco-val2014"), limit)


# --------------------------------------------------------------------------------------------
# RefCOCO / RefCOCO+ / RefCOCOg: refs(...).p + instances.json over coco-train2014 images


class _PlainUnpickler(pickle.Unpickler):
    """The refs files hold only dicts, lists, strings and numbers: refuse anything that runs code."""

    def find_class(self, module, name):
        raise UsageError(f"refusing to unpickle {module}.{name}: a refs file holds only plain data")


def refer_samples(
    refs_file: Path, instances_file: Path, image_dir: Path, split: str, limit: int | None = None
) -> list[Sample]:
    """One sample per referring sentence (image_id = sent_id) of one split."""
    try:
        with refs_file.open("rb") as fh:
            refs = _PlainUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise UsageError(f"refs file not found: {refs_file}") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UsageError(f"{refs_file} is not a refs pickle: {exc}") from None
    doc = read_json(instances_file)
    try:
        return take_subset(_refer_samples(refs, doc, image_dir, split), limit)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{refs_file} / {instances_file}: not a refs file over its instances ({type(exc).__name__}: {exc})"
        ) from None


def _refer_samples(refs, doc: dict, image_dir: Path, split: str) -> list[Sample]:
    images = {int(i["id"]): i for i in doc["images"]}
    anns = {int(a["id"]): a for a in doc["annotations"]}
    categories = {int(c["id"]): c["name"] for c in doc["categories"]}
    samples = []
    for ref in refs:
        if ref["split"] != split:
            continue
        img, target = images[int(ref["image_id"])], _coco_region(anns[int(ref["ann_id"])], categories)
        for sent in ref["sentences"]:
            text = sent["sent"].strip()
            samples.append(
                Sample(
                    image_id=int(sent["sent_id"]),
                    width=int(img["width"]),
                    height=int(img["height"]),
                    image_path=_image_path(image_dir, img.get("file_name"), Path("instances.json")),
                    grounding_caption=text,
                    phrases=[Region(bbox=target.bbox, category=text)],
                    expressions=[
                        Region(bbox=target.bbox, category=target.category, text=text, polygon=target.polygon)
                    ],
                    objects=[Region(bbox=target.bbox, category=text, polygon=target.polygon)],
                )
            )
    return samples


@dataclass(frozen=True)
class _Refer:
    manifest: str
    folder: str
    refs: str
    splits: tuple[str, ...]

    def loader(self, split: str) -> Callable[[int | None], list[Sample]]:
        def load(limit: int | None) -> list[Sample]:
            root = fetch.dataset_dir(self.manifest) / self.folder
            images = fetch.dataset_dir("coco-train2014") / "train2014"
            return refer_samples(root / self.refs, root / "instances.json", images, split, limit)

        return load


_REFER = (
    _Refer("refcoco", "refcoco", "refs(unc).p", ("val", "testA", "testB")),
    _Refer("refcocoplus", "refcoco+", "refs(unc).p", ("val", "testA", "testB")),
    _Refer("refcocog", "refcocog", "refs(umd).p", ("val", "test")),
)


# --------------------------------------------------------------------------------------------
# TextCaps val


def textcaps_samples(annotation_file: Path, image_dir: Path, limit: int | None = None) -> list[Sample]:
    """One sample per image (entries are one per caption); image_id = int(hex id, 16)."""
    doc = read_json(annotation_file)
    by_image: dict[int, Sample] = {}
    try:
        for entry in doc["data"]:
            image_id = int(entry["image_id"], 16)
            sample = by_image.get(image_id)
            if sample is None:
                sample = by_image[image_id] = Sample(
                    image_id=image_id,
                    width=int(entry["image_width"]),
                    height=int(entry["image_height"]),
                    image_path=_image_path(image_dir, f"{entry['image_id']}.jpg", annotation_file),
                )
            if entry.get("caption_str"):
                sample.captions.append(entry["caption_str"].strip())
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{annotation_file}: not a TextCaps file ({type(exc).__name__}: {exc})") from None
    return take_subset(list(by_image.values()), limit)


def _textcaps_val(limit: int | None) -> list[Sample]:
    root = fetch.dataset_dir("textcaps-val")
    return textcaps_samples(root / "TextCaps_0.1_val.json", root / "train_images", limit)


# --------------------------------------------------------------------------------------------
# the registry

DATASETS: dict[str, DatasetSpec] = {
    "synthetic-smoke": DatasetSpec(
        name="synthetic-smoke",
        description=f"{SMOKE_SIZE} generated images of shapes and words, references for every task",
        load=synthetic_smoke,
        families=FAMILIES,
    ),
    "coco-val2017": DatasetSpec(
        name="coco-val2017",
        description="COCO 2017 val (5,000 images): captions and instances",
        load=_coco_val2017,
        families=("captions", "instances"),
    ),
    "coco-karpathy-test": DatasetSpec(
        name="coco-karpathy-test",
        description="COCO captions, Karpathy test split (5,000 val2014 images)",
        load=_coco_karpathy_test,
        families=("captions",),
    ),
    "textcaps-val": DatasetSpec(
        name="textcaps-val",
        description="TextCaps 0.1 val (3,166 images): captions that read the text",
        load=_textcaps_val,
        families=("captions",),
    ),
}
for _r in _REFER:
    for _split in _r.splits:
        DATASETS[f"{_r.manifest}-{_split}"] = DatasetSpec(
            name=f"{_r.manifest}-{_split}",
            description=f"{_r.folder} {_split} split: one sample per referring expression",
            load=_r.loader(_split),
            families=("referring",),
        )

COCO_JSON_PREFIX = "coco-json:"

# The manifest each registered dataset is fetched with (datasets fetch NAME).
MANIFEST_OF = {name: name.rsplit("-", 1)[0] if name.startswith("refcoco") else name for name in DATASETS}


def get_dataset(name: str, allow_outside_images: bool = False) -> DatasetSpec:
    """Resolve ``NAME``, ``NAME:N`` (the manifest's subset rule) or ``coco-json:PATH[@IMAGE_DIR][:N]``.

    ``allow_outside_images``: a coco-json file's images may lie outside its image folder (the user's flag).
    """
    if name.startswith(COCO_JSON_PREFIX):
        path, image_dir, _ = _parse_coco_json(name)
        return DatasetSpec(
            name=name,
            description=f"COCO-format annotations from {path}",
            load=lambda limit: coco_samples([path], image_dir, limit, allow_outside_images),
            families=_coco_json_families(path),
        )
    base = name.split(":", 1)[0]
    if base not in DATASETS:
        raise choice_error("dataset", name, [*sorted(DATASETS), "coco-json:PATH[@IMAGE_DIR]"])
    return DATASETS[base]


def load_samples(name: str, limit: int | None = None, allow_outside_images: bool = False) -> list[Sample]:
    """Samples of a dataset; ``NAME:N`` and ``limit`` both cap the count (the smaller wins)."""
    spec = get_dataset(name, allow_outside_images)
    if name.startswith(COCO_JSON_PREFIX):
        count = _parse_coco_json(name)[2]
        return spec.load(count if limit is None else min(limit, count or limit))
    _, _, count = name.partition(":")
    if count:
        if not count.isdigit() or int(count) == 0:
            raise UsageError(f"bad subset size {count!r} in dataset {name!r}; accepted: NAME:N with N >= 1")
        limit = int(count) if limit is None else min(limit, int(count))
    return spec.load(limit)


def save_images(samples: list[Sample], folder: Path) -> list[Path]:
    """Write in-memory samples as PNG files (for examples in reports and for users to look at)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        path = folder / f"{sample.image_id:06d}.png"
        sample.load_image().save(path)
        paths.append(path)
    return paths
