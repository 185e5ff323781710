"""How an answer is matched to its reference before it is scored: text normalisation (the COCO
tokenizer's, OCR's), label synonyms and plurals, box IoU and greedy matching, polygon masks. Its own
module because every scorer in ``bench.accuracy.metrics`` shares these rules, and they are tested alone."""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from bench.accuracy.data import Region

IOU_THRESHOLD = 0.5

# --------------------------------------------------------------------------------------------
# text normalisation

_SPECIAL = re.compile(r"</?s>|<pad>|<loc_\d+>|<[a-z_]+>|</[a-z_]+>", re.IGNORECASE)
# The Java PTBTokenizer's punctuation tokens that pycocoevalcap drops, plus the brackets and quotes
# it would have turned into -LRB- / `` / '' tokens.
_PTB_PUNCT = {
    "''",
    "'",
    "``",
    "`",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    '"',
}
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.]\w+)*|\.\.\.|--|[^\w\s]")


def strip_special(text: str) -> str:
    """Drop Florence-2 control tokens (``<loc_12>``, ``</s>``, ...) that pure-text answers can carry."""
    return _SPECIAL.sub(" ", text)


def caption_tokens(text: str) -> str:
    """PTB-style tokenisation in Python (no Java): lowercase, contractions split, punctuation dropped."""
    text = strip_special(text).lower().replace("\n", " ")
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)
    return " ".join(t for t in _TOKEN.findall(text) if t not in _PTB_PUNCT)


def ocr_normalize(text: str) -> str:
    """OCR comparison form: control tokens dropped, Unicode NFKC, lowercase, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", strip_special(text)).lower().split())


# --------------------------------------------------------------------------------------------
# free-text labels -> categories

# canonical category -> other names Florence-2 (or people) use for it; COCO's 80 names are canonical.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "man",
        "woman",
        "men",
        "women",
        "people",
        "boy",
        "girl",
        "child",
        "kid",
        "player",
        "human",
        "lady",
        "guy",
        "baby",
        "skier",
        "surfer",
        "skateboarder",
        "snowboarder",
    ),
    "bicycle": ("bike",),
    "motorcycle": ("motorbike", "motor bike", "scooter"),
    "airplane": ("aeroplane", "plane", "jet", "aircraft", "airliner"),
    "car": ("automobile", "taxi", "sedan"),
    "bus": ("coach",),
    "truck": ("lorry", "pickup truck"),
    "boat": ("ship", "sailboat", "yacht", "canoe", "kayak"),
    "traffic light": ("traffic signal", "stoplight", "stop light"),
    "fire hydrant": ("hydrant",),
    "stop sign": (),
    "parking meter": ("meter",),
    "bench": ("park bench",),
    "bird": ("pigeon", "seagull", "duck"),
    "cat": ("kitten",),
    "dog": ("puppy",),
    "horse": ("pony",),
    "sheep": ("lamb",),
    "cow": ("cattle", "bull", "calf"),
    "elephant": (),
    "bear": ("polar bear", "brown bear"),
    "zebra": (),
    "giraffe": (),
    "backpack": ("rucksack",),
    "umbrella": ("parasol",),
    "handbag": ("purse", "bag"),
    "tie": ("necktie",),
    "suitcase": ("luggage",),
    "frisbee": ("flying disc",),
    "skis": ("ski",),
    "snowboard": (),
    "sports ball": ("ball", "soccer ball", "football", "tennis ball", "basketball", "volleyball"),
    "kite": (),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt", "baseball mitt"),
    "skateboard": (),
    "surfboard": ("surf board",),
    "tennis racket": ("racket", "racquet", "tennis racquet"),
    "bottle": ("water bottle",),
    "wine glass": ("glass", "wineglass"),
    "cup": ("mug", "coffee cup"),
    "fork": (),
    "knife": (),
    "spoon": (),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": (),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog",),
    "pizza": (),
    "donut": ("doughnut",),
    "cake": (),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("plant", "houseplant", "flower pot", "flowerpot"),
    "bed": (),
    "dining table": ("table", "desk"),
    "toilet": (),
    "tv": ("television", "tv monitor", "monitor", "screen"),
    "laptop": ("laptop computer",),
    "mouse": ("computer mouse",),
    "remote": ("remote control",),
    "keyboard": ("computer keyboard",),
    "cell phone": ("phone", "mobile phone", "cellphone", "smartphone"),
    "microwave": ("microwave oven",),
    "oven": ("stove",),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge",),
    "book": (),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("teddy", "stuffed animal", "stuffed bear"),
    "hair drier": ("hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("tooth brush",),
}
_SYNONYM_OF = {syn: canon for canon, syns in SYNONYMS.items() for syn in syns}


def normalize_label(label: str) -> str:
    """Lowercase, control tokens and punctuation dropped, leading article dropped, spaces collapsed."""
    text = re.sub(r"[^\w\s-]", " ", strip_special(label).lower())
    words = text.replace("_", " ").split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def _singulars(label: str) -> list[str]:
    """Candidate singulars of the last word (the table decides which one is a category)."""
    head, _, last = label.rpartition(" ")
    found = []
    for plural, single in (("ies", "y"), ("es", ""), ("s", "")):
        if last.endswith(plural) and not last.endswith("ss") and len(last) > len(plural) + 1:
            found.append(f"{head} {last[: -len(plural)] + single}".strip())
    return found


def match_category(label: str, categories: dict[str, str]) -> str | None:
    """The category (from ``{normalized name: name}``) a free-text label means, or None.

    Tried in order: the label, then singulars of its last word; each as a category name, then through SYNONYMS.
    """
    norm = normalize_label(label)
    for candidate in (norm, *_singulars(norm)):
        if candidate in categories:
            return categories[candidate]
        canon = _SYNONYM_OF.get(candidate)
        if canon is not None and canon in categories:
            return categories[canon]
    return None


# --------------------------------------------------------------------------------------------
# geometry


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes in continuous pixel coordinates (COCO convention, no +1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (
        max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    )
    return inter / union if union > 0 else 0.0


def greedy_matches(refs: list, preds: list) -> int:
    """One-to-one matches with IoU >= 0.5, taken greedily from the highest IoU down."""
    pairs = sorted(
        ((box_iou(r, p), i, j) for i, r in enumerate(refs) for j, p in enumerate(preds)), reverse=True
    )
    used_r, used_p, n = set(), set(), 0
    for iou, i, j in pairs:
        if iou < IOU_THRESHOLD:
            break
        if i not in used_r and j not in used_p:
            used_r.add(i)
            used_p.add(j)
            n += 1
    return n


def polygon_mask(polygons: list[list[float]], height: int, width: int):
    """A pycocotools RLE of the union of polygons (each a flat [x, y, ...] list with >= 3 points)."""
    from pycocotools import mask as mask_utils

    valid = [[float(v) for v in p] for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
    if not valid:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(valid, height, width))


def mask_inter_union(a, b) -> tuple[float, float]:
    from pycocotools import mask as mask_utils

    inter = float(mask_utils.area(mask_utils.merge([a, b], intersect=True)))
    union = float(mask_utils.area(mask_utils.merge([a, b], intersect=False)))
    return inter, union


def region_polygon(region: Region) -> list[float]:
    """A reference region's polygon; its box as a rectangle when it has none."""
    if len(region.polygon) >= 6:
        return list(region.polygon)
    x1, y1, x2, y2 = region.bbox
    return [x1, y1, x2, y1, x2, y2, x1, y2]
