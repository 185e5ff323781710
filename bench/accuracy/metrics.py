"""The standard accuracy metric of every Florence-2 task, computed with the established libraries.

``score(task, samples, answers)`` takes the parsed answers (the value of
``processor.post_process_generation(...)[task]``) and returns ``{metric: float}``. Scales follow papers:
CIDEr, BLEU-4, ROUGE-L, METEOR and SPICE ×100 (COCO caption CIDEr 133.0), COCO AP in percent (34.7),
accuracies, recalls, IoUs, CER and WER in percent. docs/accuracy.md states every definition.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy.data import CROWD, Region, Sample
from bench.accuracy.matching import (
    IOU_THRESHOLD,
    box_iou,
    caption_tokens,
    greedy_matches,
    mask_inter_union,
    match_category,
    normalize_label,
    ocr_normalize,
    polygon_mask,
    region_polygon,
)
from bench.accuracy.tasks import TASKS, get_task
from bench.core.errors import UsageError
from bench.core.numbers import is_finite

JAVA_ENV = "FLORENCE2_BENCH_JAVA_METRICS"

# --------------------------------------------------------------------------------------------
# answer validation (parsed answers may come from a model or from a predictions file)


def _bad(sample: Sample, task: str, expected: str, got: Any) -> UsageError:
    return UsageError(
        f"answer for image_id {sample.image_id} ({task}): expected {expected}, got {str(got)[:80]!r}"
    )


def is_box(value: Any, n: int = 4) -> bool:
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
    if not all(is_box(b, size) for b in boxes):
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
        predicted = polygon_mask(_polygons(sample, task, answer), sample.height, sample.width)
        target = polygon_mask([region_polygon(ref)], sample.height, sample.width)
        inter, union = mask_inter_union(predicted, target)
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


