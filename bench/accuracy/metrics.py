"""The standard accuracy metric of every Florence-2 task, computed with the established libraries.

``score(task, samples, answers)`` takes the parsed answers (the value of
``processor.post_process_generation(...)[task]``) and returns ``{metric: float}``. Scales follow papers:
CIDEr, BLEU-4, ROUGE-L, METEOR and SPICE ×100 (COCO caption CIDEr 133.0), COCO AP in percent (34.7),
accuracies, recalls, IoUs, CER and WER in percent. docs/accuracy.md states every definition.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy.data import CROWD, Region, Sample, get_dataset, load_samples
from bench.accuracy.tasks import TASKS, get_task, tasks_of
from bench.core.errors import UsageError
from bench.core.inputs import parse_json
from bench.core.numbers import finite_number, is_finite
from bench.core.paths import write_output

JAVA_ENV = "FLORENCE2_BENCH_JAVA_METRICS"
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


def _mask(polygons: list[list[float]], height: int, width: int):
    """A pycocotools RLE of the union of polygons (each a flat [x, y, ...] list with >= 3 points)."""
    from pycocotools import mask as mask_utils

    valid = [[float(v) for v in p] for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
    if not valid:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(valid, height, width))


def _mask_inter_union(a, b) -> tuple[float, float]:
    from pycocotools import mask as mask_utils

    inter = float(mask_utils.area(mask_utils.merge([a, b], intersect=True)))
    union = float(mask_utils.area(mask_utils.merge([a, b], intersect=False)))
    return inter, union


def _region_polygon(region: Region) -> list[float]:
    """A reference region's polygon; its box as a rectangle when it has none."""
    if len(region.polygon) >= 6:
        return list(region.polygon)
    x1, y1, x2, y2 = region.bbox
    return [x1, y1, x2, y1, x2, y2, x1, y2]


# --------------------------------------------------------------------------------------------
# answer validation (parsed answers may come from a model or from a predictions file)


def _bad(sample: Sample, task: str, expected: str, got: Any) -> UsageError:
    return UsageError(
        f"answer for image_id {sample.image_id} ({task}): expected {expected}, got {str(got)[:80]!r}"
    )


def _is_box(value: Any, n: int = 4) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == n
        and all(is_finite(v) for v in value)
    )


def _text(sample: Sample, task: str, answer: Any) -> str:
    if not isinstance(answer, str):
        raise _bad(sample, task, "a string", answer)
    return answer


def _boxes(
    sample: Sample, task: str, answer: Any, box_key: str = "bboxes", label_key: str = "labels", size: int = 4
) -> tuple[list, list[str], list[float] | None]:
    expected = f'{{"{box_key}": [[{size} numbers], ...], "{label_key}": [...]}}'
    if not isinstance(answer, dict) or not isinstance(answer.get(box_key, []), list):
        raise _bad(sample, task, expected, answer)
    boxes = answer.get(box_key, [])
    if not all(_is_box(b, size) for b in boxes):
        raise _bad(sample, task, expected, answer)
    labels = list(answer.get(label_key) or [""] * len(boxes))
    scores = answer.get("scores")
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise _bad(sample, task, f"as many {label_key} (and scores) as {box_key}", answer)
    return [list(map(float, b)) for b in boxes], [str(label) for label in labels], scores


def _polygons(sample: Sample, task: str, answer: Any) -> list[list[float]]:
    """All polygons of all instances, flattened into one list (the union is the predicted mask)."""
    expected = '{"polygons": [[[x, y, ...], ...], ...], "labels": [...]}'
    if not isinstance(answer, dict) or not isinstance(answer.get("polygons", []), list):
        raise _bad(sample, task, expected, answer)
    flat = []
    for instance in answer.get("polygons", []):
        parts = [instance] if instance and not isinstance(instance[0], (list, tuple)) else instance
        for poly in parts:
            if not isinstance(poly, (list, tuple)) or not all(isinstance(v, (int, float)) for v in poly):
                raise _bad(sample, task, expected, answer)
            flat.append(list(poly))
    return flat


# --------------------------------------------------------------------------------------------
# scorers: each takes (task, samples, answers, options) and returns {metric: value}


@dataclass(frozen=True)
class Options:
    java: bool


def _java_enabled(java: bool | None) -> bool:
    """METEOR/SPICE are opt-in: they need Java and take tens of seconds even for a few images."""
    if java is None:
        java = os.environ.get(JAVA_ENV, "0") == "1"
    return java and shutil.which("java") is not None


def caption_scores(
    references: list[list[str]], hypotheses: list[str], java: bool = False
) -> dict[str, float]:
    """CIDEr-D, BLEU-4, ROUGE-L (and METEOR/SPICE with Java) over a set of images, ×100.

    CIDEr-D's IDF comes from the references of the evaluated set itself, so scores of different
    subsets are not comparable and a single image scores 0 by construction.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references) if refs}
    res = {i: [caption_tokens(hypotheses[i])] for i in gts}
    if not gts:
        raise UsageError(
            "no reference captions in these samples; accepted: a dataset with captions for this task"
        )
    if len(gts) == 1:
        warnings.warn(
            "CIDEr-D over one image is 0 by construction (its IDF needs several images)", stacklevel=3
        )
    out = {
        "cider": float(Cider().compute_score(gts, res)[0]) * 100,
        "bleu4": float(Bleu(4).compute_score(gts, res, verbose=0)[0][3]) * 100,
        "rouge_l": float(Rouge().compute_score(gts, res)[0]) * 100,
    }
    if java:
        out.update(_java_caption_scores(gts, res))
    return out


def _java_caption_scores(gts: dict, res: dict) -> dict[str, float]:
    """METEOR always with Java; SPICE only when its Stanford CoreNLP jars are already installed (no download)."""
    out = {}
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        out["meteor"] = float(Meteor().compute_score(gts, res)[0]) * 100
    except (OSError, ValueError, RuntimeError) as exc:
        warnings.warn(f"METEOR skipped: {exc}", stacklevel=3)
    import pycocoevalcap.spice.spice as spice_module

    lib = Path(spice_module.__file__).parent / "lib"
    if any(lib.glob("stanford-corenlp-*.jar")):
        try:
            out["spice"] = float(spice_module.Spice().compute_score(gts, res)[0]) * 100
        except (OSError, ValueError, RuntimeError) as exc:
            warnings.warn(f"SPICE skipped: {exc}", stacklevel=3)
    return out


def _score_captions(task, samples, answers, opts):
    hyps = [_text(s, task, a) for s, a in zip(samples, answers, strict=True)]
    return caption_scores([s.captions for s in samples], hyps, opts.java)


def _score_region_description(task, samples, answers, opts):
    hyps = [_text(s, task, a) for s, a in zip(samples, answers, strict=True)]
    refs = [[s.regions[0].description] if s.regions and s.regions[0].description else [] for s in samples]
    return caption_scores(refs, hyps, opts.java)


def ocr_scores(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus CER and WER (jiwer: total edits / total reference characters or words) and exact match, %."""
    import jiwer

    pairs = [(ocr_normalize(r), ocr_normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise UsageError("no reference text in these samples; accepted: a dataset with OCR references")
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {
        "cer": float(jiwer.cer(refs, hyps)) * 100,
        "wer": float(jiwer.wer(refs, hyps)) * 100,
        "exact_match": 100.0 * sum(r == h for r, h in pairs) / len(pairs),
    }


def _score_ocr(task, samples, answers, opts):
    return ocr_scores(
        [s.ocr_text for s in samples], [_text(s, task, a) for s, a in zip(samples, answers, strict=True)]
    )


def _score_region_ocr(task, samples, answers, opts):
    refs = [s.ocr_lines[0].text if s.ocr_lines else "" for s in samples]
    return ocr_scores(refs, [_text(s, task, a) for s, a in zip(samples, answers, strict=True)])


def _score_ocr_regions(task, samples, answers, opts):
    """Lines matched one-to-one at box IoU >= 0.5 (quads as their enclosing boxes); CER over every reference
    line against its matched prediction's text ("" when unmatched)."""
    n_ref = n_pred = n_match = 0
    refs_text, hyps_text = [], []
    for sample, answer in zip(samples, answers, strict=True):
        quads, labels, _ = _boxes(sample, task, answer, "quad_boxes", "labels", size=8)
        boxes = [[min(q[0::2]), min(q[1::2]), max(q[0::2]), max(q[1::2])] for q in quads]
        refs = [line.bbox for line in sample.ocr_lines]
        n_ref, n_pred = n_ref + len(refs), n_pred + len(boxes)
        pairs = sorted(
            ((box_iou(r, p), i, j) for i, r in enumerate(refs) for j, p in enumerate(boxes)), reverse=True
        )
        matched: dict[int, int] = {}
        for iou, i, j in pairs:
            if iou >= IOU_THRESHOLD and i not in matched and j not in matched.values():
                matched[i] = j
        n_match += len(matched)
        for i, line in enumerate(sample.ocr_lines):
            refs_text.append(line.text)
            hyps_text.append(labels[matched[i]] if i in matched else "")
    if not n_ref:
        raise UsageError(f"no OCR lines in these samples; accepted: a dataset with {task} references")
    return {
        "recall_at_0.5": 100.0 * n_match / n_ref,
        "precision_at_0.5": 100.0 * n_match / n_pred if n_pred else 0.0,
        "cer": ocr_scores(refs_text, hyps_text)["cer"],
    }


def od_score(rank: int) -> float:
    """The score given to the rank-th box (0-based, in output order) of an answer that has no scores."""
    return 1.0 / (1 + rank)


def _score_detection(task, samples, answers, opts):
    """COCO box AP with pycocotools: labels mapped to the dataset's categories, unknown labels dropped."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({o.category for s in samples for o in s.objects if o.category})
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    by_norm = {normalize_label(n): n for n in names}
    gt_anns, dets = [], []
    for sample, answer in zip(samples, answers, strict=True):
        for obj in sample.objects:
            x1, y1, x2, y2 = obj.bbox
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": sample.image_id,
                    "category_id": cat_id[obj.category],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(obj.description == CROWD),
                }
            )
        boxes, labels, scores = _boxes(sample, task, answer)
        for k, (box, label) in enumerate(zip(boxes, labels, strict=True)):
            category = match_category(label, by_norm)
            if category is not None:
                dets.append(
                    {
                        "image_id": sample.image_id,
                        "category_id": cat_id[category],
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "score": float(scores[k]) if scores is not None else od_score(k),
                    }
                )
    if not gt_anns:
        raise UsageError(f"no objects in these samples; accepted: a dataset with {task} references")
    if not dets:
        return {"map": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": s.image_id, "width": s.width, "height": s.height} for s in samples],
            "categories": [{"id": i, "name": n} for n, i in cat_id.items()],
            "annotations": gt_anns,
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {
        "map": max(0.0, float(stats[0])) * 100,
        "ap50": max(0.0, float(stats[1])) * 100,
        "ap75": max(0.0, float(stats[2])) * 100,
    }


def _score_box_recall(task, samples, answers, opts):
    """Class-agnostic recall of the reference objects at IoU >= 0.5 (one-to-one matching)."""
    n_ref = n_match = 0
    for sample, answer in zip(samples, answers, strict=True):
        boxes, _, _ = _boxes(sample, task, answer)
        refs = [o.bbox for o in sample.objects if o.description != CROWD]
        n_ref += len(refs)
        n_match += greedy_matches(refs, boxes)
    if not n_ref:
        raise UsageError(f"no objects in these samples; accepted: a dataset with {task} references")
    return {"recall_at_0.5": 100.0 * n_match / n_ref}


def _score_open_vocabulary(task, samples, answers, opts):
    """The query is objects[0].category; every object of that category is a reference."""
    n_ref = n_pred = n_match = 0
    for sample, answer in zip(samples, answers, strict=True):
        if not sample.objects:
            continue
        boxes, _, _ = _boxes(sample, task, answer, "bboxes", "bboxes_labels")
        query = sample.objects[0].category
        refs = [o.bbox for o in sample.objects if o.category == query and o.description != CROWD]
        n_ref, n_pred = n_ref + len(refs), n_pred + len(boxes)
        n_match += greedy_matches(refs, boxes)
    if not n_ref:
        raise UsageError(f"no objects in these samples; accepted: a dataset with {task} references")
    return {
        "recall_at_0.5": 100.0 * n_match / n_ref,
        "precision_at_0.5": 100.0 * n_match / n_pred if n_pred else 0.0,
    }


def _phrase_box(phrase: str, boxes: list, labels: list[str], used: set[int], single: bool):
    """The predicted box for a reference phrase: the first unused box labelled with it (exactly, else by
    containment either way); for a single-phrase query, the first box whatever its label."""
    norm = normalize_label(phrase)
    for same in (lambda a: a == norm, lambda a: bool(a) and (a in norm or norm in a)):
        for k, label in enumerate(labels):
            if k not in used and same(normalize_label(label)):
                used.add(k)
                return boxes[k]
    return boxes[0] if single and boxes else None


def _score_grounding(task, samples, answers, opts):
    """Acc@0.5 and mean IoU over every reference phrase (the protocol of RefCOCO and Flickr30k R@1)."""
    ious = []
    for sample, answer in zip(samples, answers, strict=True):
        boxes, labels, _ = _boxes(sample, task, answer)
        used: set[int] = set()
        for ref in sample.phrases:
            box = _phrase_box(ref.category, boxes, labels, used, single=len(sample.phrases) == 1)
            ious.append(box_iou(ref.bbox, box) if box is not None else 0.0)
    if not ious:
        raise UsageError(f"no grounded phrases in these samples; accepted: a dataset with {task} references")
    return {
        "acc_at_0.5": 100.0 * sum(i >= IOU_THRESHOLD for i in ious) / len(ious),
        "miou": 100.0 * float(np.mean(ious)),
    }


def _segmentation(task, samples, answers, reference: Callable[[Sample], Region | None]):
    """Mask IoU of the union of predicted polygons against the reference polygon, rasterised by pycocotools."""
    ious, inter_sum, union_sum = [], 0.0, 0.0
    for sample, answer in zip(samples, answers, strict=True):
        ref = reference(sample)
        if ref is None:
            continue
        predicted = _mask(_polygons(sample, task, answer), sample.height, sample.width)
        target = _mask([_region_polygon(ref)], sample.height, sample.width)
        inter, union = _mask_inter_union(predicted, target)
        ious.append(inter / union if union else 0.0)
        inter_sum, union_sum = inter_sum + inter, union_sum + union
    if not ious:
        raise UsageError(f"no reference regions in these samples; accepted: a dataset with {task} references")
    return {
        "miou": 100.0 * float(np.mean(ious)),
        "mask_iou": 100.0 * inter_sum / union_sum if union_sum else 0.0,
    }


def _score_res(task, samples, answers, opts):
    return _segmentation(task, samples, answers, lambda s: s.expressions[0] if s.expressions else None)


def _score_region_segmentation(task, samples, answers, opts):
    return _segmentation(task, samples, answers, lambda s: s.regions[0] if s.regions else None)


def _score_region_category(task, samples, answers, opts):
    """Accuracy: the answer, normalised and mapped through SYNONYMS, names the region's category."""
    hits = total = 0
    for sample, answer in zip(samples, answers, strict=True):
        text = _text(sample, task, answer)
        if not sample.regions or not sample.regions[0].category:
            continue
        truth = sample.regions[0].category
        total += 1
        hits += match_category(text, {normalize_label(truth): truth}) is not None
    if not total:
        raise UsageError(f"no region categories in these samples; accepted: a dataset with {task} references")
    return {"accuracy": 100.0 * hits / total}


# --------------------------------------------------------------------------------------------
# the metric registry: every accuracy metric's direction, scale and unit, stated once


@dataclass(frozen=True)
class Metric:
    """One accuracy metric as ``score`` returns it; compare, report and history read this, never guess."""

    name: str
    label: str  # how reports and tables name it
    higher_is_better: bool
    scale: str  # the range the value lives on, as printed in papers
    unit: str  # "%" for rates and IoUs; "" for the caption scores (×100, not percentages)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("cider", "CIDEr-D", True, "×100 (COCO caption: 133.0)", ""),
        Metric("bleu4", "BLEU-4", True, "×100", ""),
        Metric("rouge_l", "ROUGE-L", True, "×100", ""),
        Metric("meteor", "METEOR", True, "×100", ""),
        Metric("spice", "SPICE", True, "×100", ""),
        Metric("cer", "CER", False, "0-100+ (edits per 100 reference characters)", "%"),
        Metric("wer", "WER", False, "0-100+ (edits per 100 reference words)", "%"),
        Metric("exact_match", "exact match", True, "0-100", "%"),
        Metric("map", "COCO mAP@[.5:.95]", True, "0-100", "%"),
        Metric("ap50", "AP@0.5", True, "0-100", "%"),
        Metric("ap75", "AP@0.75", True, "0-100", "%"),
        Metric("recall_at_0.5", "recall@IoU0.5", True, "0-100", "%"),
        Metric("precision_at_0.5", "precision@IoU0.5", True, "0-100", "%"),
        Metric("acc_at_0.5", "Acc@IoU0.5", True, "0-100", "%"),
        Metric("miou", "mIoU", True, "0-100", "%"),
        Metric("mask_iou", "cumulative mask IoU", True, "0-100", "%"),
        Metric("accuracy", "accuracy", True, "0-100", "%"),
    )
}


def metric_info(name: str) -> Metric | None:
    """The registry entry of a metric name, or None for a name this version does not define."""
    return METRICS.get(name)


# --------------------------------------------------------------------------------------------
# the task registry: task token -> metrics (headline first), scorer and predictions-file row format


@dataclass(frozen=True)
class TaskScoring:
    metrics: tuple[str, ...]  # the first is the task's headline metric
    scorer: Callable[[str, list[Sample], list[Any], Options], dict[str, float]]
    kind: str  # the predictions-file row format: text, boxes, ovd, polygons, quads
    usable: Callable[[Sample], bool]  # the sample has this task's query and references

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"metrics {unknown} are not in the metric registry (METRICS)")

    @property
    def headline(self) -> str:
        return self.metrics[0]


_CAPTION = ("cider", "bleu4", "rouge_l")
_OCR = ("cer", "wer", "exact_match")
_RECALL_PRECISION = ("recall_at_0.5", "precision_at_0.5")


def _has_captions(s: Sample) -> bool:
    return bool(s.captions)


def _always(s: Sample) -> bool:
    return True


# How a task's answers are scored, by the name a task gives as its ``scoring`` (bench.accuracy.tasks.TASKS): several
# tasks may share one (the three caption tasks, the two box-recall ones).
SCORINGS: dict[str, TaskScoring] = {
    "captions": TaskScoring(_CAPTION, _score_captions, "text", _has_captions),
    "region_description": TaskScoring(
        _CAPTION, _score_region_description, "text", lambda s: bool(s.regions and s.regions[0].description)
    ),
    "ocr": TaskScoring(_OCR, _score_ocr, "text", lambda s: bool(s.ocr_text)),
    "region_ocr": TaskScoring(
        _OCR, _score_region_ocr, "text", lambda s: bool(s.ocr_lines and s.ocr_lines[0].text)
    ),
    "ocr_regions": TaskScoring(
        (*_RECALL_PRECISION, "cer"), _score_ocr_regions, "quads", lambda s: bool(s.ocr_lines)
    ),
    "detection": TaskScoring(("map", "ap50", "ap75"), _score_detection, "boxes", _always),
    "box_recall": TaskScoring(("recall_at_0.5",), _score_box_recall, "boxes", _always),
    "grounding": TaskScoring(
        ("acc_at_0.5", "miou"), _score_grounding, "boxes", lambda s: bool(s.grounding_caption and s.phrases)
    ),
    "open_vocabulary": TaskScoring(
        _RECALL_PRECISION, _score_open_vocabulary, "ovd", lambda s: bool(s.objects)
    ),
    "referring_segmentation": TaskScoring(
        ("miou", "mask_iou"), _score_res, "polygons", lambda s: bool(s.expressions)
    ),
    "region_segmentation": TaskScoring(
        ("miou", "mask_iou"), _score_region_segmentation, "polygons", lambda s: bool(s.regions)
    ),
    "region_category": TaskScoring(
        ("accuracy",), _score_region_category, "text", lambda s: bool(s.regions and s.regions[0].category)
    ),
}
def task_metrics(task: str) -> tuple[str, ...]:
    """The metric names a task produces, its headline first (caption tasks add "meteor" and "spice" where
    Java allows)."""
    return task_scoring(task).metrics


def headline_metric(task: str) -> str | None:
    """The metric a task is judged by (its first), or None for a task the registry does not have."""
    return task_scoring(task).headline if task in TASKS else None


def usable_samples(task: str, samples: list[Sample]) -> list[Sample]:
    """The samples that carry this task's query and references (e.g. COCO images without objects have
    no <REGION_TO_CATEGORY> query); run and score only these."""
    usable = task_scoring(task).usable
    return [s for s in samples if usable(s)]


def task_scoring(task: str) -> TaskScoring:
    """How a task of ``bench.accuracy.tasks.TASKS`` is scored (UsageError for an unknown task; ValueError for a task
    whose ``scoring`` names none of ``SCORINGS``: a registry entry to fix)."""
    scoring = get_task(task).scoring
    if scoring not in SCORINGS:
        raise ValueError(f"task {task} is scored by {scoring!r}, which bench.accuracy.metrics.SCORINGS does not have; "
                         f"accepted: {', '.join(SCORINGS)}")
    return SCORINGS[scoring]


def score(
    task: str, samples: list[Sample], answers: list[Any], *, java: bool | None = None
) -> dict[str, float]:
    """The task's metrics over samples and their parsed answers (see the module docstring for scales).

    Caption tasks add METEOR (and SPICE, when its CoreNLP jars are installed) when ``java`` is True, or is
    None and FLORENCE2_BENCH_JAVA_METRICS=1, and a ``java`` executable is on the PATH.
    """
    scoring = task_scoring(task)
    if len(answers) != len(samples):
        raise UsageError(
            f"{len(answers)} answers for {len(samples)} samples ({task}); accepted: one answer per sample"
        )
    return scoring.scorer(task, samples, answers, Options(java=_java_enabled(java)))


# --------------------------------------------------------------------------------------------
# reported benchmarks: which published number a (dataset, task) measurement stands beside


@dataclass(frozen=True)
class Benchmark:
    key: str  # the reported-number key in bench/core/variants.py
    metric: str  # the metric of score() that measures it


TASK_BENCHMARKS: dict[tuple[str, str], Benchmark] = {
    ("coco-karpathy-test", "<CAPTION>"): Benchmark("coco_caption_cider", "cider"),
    ("textcaps-val", "<CAPTION>"): Benchmark("textcaps_cider", "cider"),
    ("coco-val2017", "<OD>"): Benchmark("coco_det_map", "map"),
    ("refcoco-val", "<REFERRING_EXPRESSION_SEGMENTATION>"): Benchmark("refcoco_res_val_miou", "miou"),
    **{
        (f"{name}-{split}", "<CAPTION_TO_PHRASE_GROUNDING>"): Benchmark(f"{name}_{split}_acc", "acc_at_0.5")
        for name, splits in (
            ("refcoco", ("val", "testA", "testB")),
            ("refcocoplus", ("val", "testA", "testB")),
            ("refcocog", ("val", "test")),
        )
        for split in splits
    },
}


def reported_benchmark(dataset: str, task: str) -> Benchmark | None:
    """The benchmark a measurement corresponds to; ``NAME:N`` maps like NAME (the record's n_images tells
    a subset from the full set)."""
    return TASK_BENCHMARKS.get((dataset.split(":", 1)[0], task))


# --------------------------------------------------------------------------------------------
# predictions files (JSONL) and the `score` subcommand


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
        if not _is_box(row.get("bbox_xyxy")) or not isinstance(label, str):
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
    if not _is_box(row.get("quad_box"), 8) or not isinstance(row.get("text"), str):
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


def load_predictions(path: Path, task: str, samples: list[Sample]) -> list[Any]:
    """Answers aligned with samples from a JSONL predictions file (format per task in docs/accuracy.md).

    Rows of one image are grouped in file order (the order gives <OD> boxes their scores when rows have
    none); images without rows get an empty answer; rows for images outside ``samples`` are ignored.
    """
    kind = task_scoring(task).kind
    index = _id_index(samples)
    answers: list[Any] = [None] * len(samples)
    ignored = rows = 0
    try:
        size = Path(path).stat().st_size
        if size > MAX_PREDICTIONS_BYTES:
            raise UsageError(f"predictions file {path} has {size} bytes; accepted: at most {MAX_PREDICTIONS_BYTES} "
                             "bytes (MAX_PREDICTIONS_BYTES)")
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise UsageError(f"predictions file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"predictions file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read predictions file {path}: {exc.strerror}; accepted: a JSONL file") from None
    for n, line in enumerate(lines, 1):
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
