"""Known-answer tests for every metric: perfect = maximum, a hand-computed case, empty = zero, malformed = clear error."""

import math
from pathlib import Path

import pytest

from bench.accuracy import metrics
from bench.accuracy.data import CROWD, DATASETS, Region, Sample, synthetic_smoke
from bench.accuracy.tasks import TASKS, tasks_of
from bench.core.errors import UsageError

approx = pytest.approx


def _sample(image_id=1, w=400, h=400, **refs) -> Sample:
    return Sample(image_id=image_id, width=w, height=h, **refs)


def _boxes(*pairs):
    return {"bboxes": [list(b) for b, _ in pairs], "labels": [label for _, label in pairs]}


# ---------------------------------------------------------------- captions


def test_caption_tokenization_is_ptb_like():
    assert (
        metrics.caption_tokens("A man's DOG, running (fast)... doesn't stop!")
        == "a man 's dog running fast does n't stop"
    )
    assert metrics.caption_tokens("well-known 3.5 <loc_12>km</s>") == "well-known 3.5 km"


def test_captions_perfect_hand_computed_and_empty():
    samples = [_sample(1, captions=["A b c d."]), _sample(2, captions=["e f g h"])]
    perfect = metrics.score("<CAPTION>", samples, ["a b c d", "E F G H"], java=False)
    assert perfect == approx({"cider": 1000.0, "bleu4": 100.0, "rouge_l": 100.0})
    # CIDEr-D by hand: every n-gram has idf log(2) (df 1 in 2 images; unseen n-grams get df 1 too);
    # image 1: unigram cosine 2/4, bigram cosine 1/3, no 3-/4-grams shared; same length -> no penalty
    got = metrics.score("<CAPTION>", samples, ["a b x y", "e f g h"], java=False)
    assert got["cider"] == approx(((0.5 + 1 / 3) / 4 * 10 + 10) / 2 * 100)
    empty = metrics.score("<CAPTION>", samples, ["", ""], java=False)
    assert empty == approx({"cider": 0.0, "bleu4": 0.0, "rouge_l": 0.0}, abs=1e-6)


def test_bleu4_and_rouge_l_hand_computed():
    samples = [_sample(1, captions=["a b c d e"]), _sample(2, captions=["f g h i j"])]
    got = metrics.score("<DETAILED_CAPTION>", samples, ["a b c d e", "f g h i x"], java=False)
    # corpus BLEU: clipped n-gram precisions summed over both images, brevity penalty 1
    assert got["bleu4"] == approx(100 * (9 / 10 * 7 / 8 * 5 / 6 * 3 / 4) ** 0.25, rel=1e-6)
    # ROUGE-L (beta 1.2): image 2 has LCS 4 of 5 both ways -> F = 0.8; mean of 1.0 and 0.8
    assert got["rouge_l"] == approx(90.0)


def test_single_image_cider_warns():
    with pytest.warns(UserWarning, match="one image"):
        metrics.score("<CAPTION>", [_sample(captions=["a b"])], ["a b"], java=False)


def test_region_to_description_uses_the_region_description():
    samples = [
        _sample(1, regions=[Region((0, 0, 1, 1), description="a red circle")]),
        _sample(2, regions=[Region((0, 0, 1, 1), description="the blue square")]),
    ]
    assert metrics.score("<REGION_TO_DESCRIPTION>", samples, ["a red circle", "the blue square"], java=False)[
        "rouge_l"
    ] == approx(100.0)


@pytest.mark.skipif(
    not metrics.shutil.which("java") or metrics.os.environ.get(metrics.JAVA_ENV) != "1",
    reason="METEOR needs Java and FLORENCE2_BENCH_JAVA_METRICS=1 (takes ~20 s)",
)
def test_meteor_with_java():
    samples = [_sample(1, captions=["a man rides a horse"]), _sample(2, captions=["a dog runs"])]
    assert metrics.score("<CAPTION>", samples, ["a man rides a horse", "a dog runs"])["meteor"] > 90


# ---------------------------------------------------------------- detection


def test_od_perfect_hand_computed_synonyms_and_empty():
    gt = [Region((0, 0, 100, 100), "cat"), Region((200, 200, 300, 300), "cat")]
    samples = [_sample(objects=gt)]
    perfect = [_boxes(((200, 200, 300, 300), "cat"), ((0, 0, 100, 100), "a cat"))]
    assert metrics.score("<OD>", samples, perfect) == approx({"map": 100.0, "ap50": 100.0, "ap75": 100.0})
    # the second box (a synonym, plural) has IoU 0.625: a true positive at IoU 0.50, 0.55, 0.60 only.
    # Where it is a false positive, precision is 1 up to recall 0.5: 51 of COCO's 101 recall points.
    half = [_boxes(((200, 200, 300, 300), "cat"), ((0, 0, 100, 62.5), "kittens"))]
    got = metrics.score("<OD>", samples, half)
    assert got["ap50"] == approx(100.0)
    assert got["ap75"] == approx(100 * 51 / 101)
    assert got["map"] == approx((3 * 100 + 7 * 100 * 51 / 101) / 10)
    # explicit scores replace the output-order scores: the false positive now ranks first
    scored = [dict(half[0], scores=[0.1, 0.9])]
    assert metrics.score("<OD>", samples, scored)["ap75"] == approx(100 * 0.5 * 51 / 101)
    assert metrics.score("<OD>", samples, [_boxes(((0, 0, 100, 100), "spaceship"))])["map"] == 0.0
    assert metrics.score("<OD>", samples, [metrics.empty_answer("<OD>")]) == {
        "map": 0.0,
        "ap50": 0.0,
        "ap75": 0.0,
    }


def test_od_detections_on_crowd_regions_are_ignored():
    samples = [
        _sample(objects=[Region((0, 0, 100, 100), "person"), Region((200, 0, 400, 200), "person", CROWD)])
    ]
    answer = [_boxes(((200, 0, 400, 200), "man"), ((0, 0, 100, 100), "person"))]
    assert metrics.score("<OD>", samples, answer)["map"] == approx(100.0)


def test_od_malformed_answer_names_the_image():
    with pytest.raises(UsageError, match="image_id 7 .*4 numbers"):
        metrics.score(
            "<OD>",
            [_sample(7, objects=[Region((0, 0, 1, 1), "cat")])],
            [{"bboxes": [[1, 2, 3]], "labels": ["cat"]}],
        )
    with pytest.raises(UsageError, match="one answer per sample"):
        metrics.score("<OD>", [_sample()], [])


def test_label_matching():
    cats = {metrics.normalize_label(n): n for n in ("person", "dining table", "wine glass", "bus")}
    assert metrics.match_category("Two People", cats) is None  # a count is not a label
    assert metrics.match_category("people", cats) == "person"
    assert metrics.match_category("the Tables", cats) == "dining table"
    assert metrics.match_category("wine glasses", cats) == "wine glass"
    assert metrics.match_category("buses", cats) == "bus"


def test_region_proposal_and_dense_caption_recall():
    samples = [
        _sample(
            objects=[
                Region((0, 0, 10, 10), "a"),
                Region((20, 20, 30, 30), "b"),
                Region((50, 50, 60, 60), "c"),
            ]
        )
    ]
    answer = [
        _boxes(((0, 0, 10, 10), ""), ((0, 0, 10, 9), ""), ((20, 20, 30, 31), ""), ((100, 100, 110, 110), ""))
    ]
    for task in ("<REGION_PROPOSAL>", "<DENSE_REGION_CAPTION>"):
        assert metrics.score(task, samples, answer) == approx({"recall_at_0.5": 200 / 3})
        assert metrics.score(task, samples, [metrics.empty_answer(task)]) == {"recall_at_0.5": 0.0}


def test_open_vocabulary_detection():
    objects = [
        Region((0, 0, 10, 10), "cat"),
        Region((20, 20, 30, 30), "dog"),
        Region((50, 50, 60, 60), "cat"),
    ]
    answer = {
        "bboxes": [[0, 0, 10, 10], [20, 20, 30, 30]],
        "bboxes_labels": ["cat", "cat"],
        "polygons": [],
        "polygons_labels": [],
    }
    got = metrics.score("<OPEN_VOCABULARY_DETECTION>", [_sample(objects=objects)], [answer])
    assert got == approx({"recall_at_0.5": 50.0, "precision_at_0.5": 50.0})


# ---------------------------------------------------------------- grounding and segmentation


def test_grounding_acc_and_miou_hand_computed():
    phrases = [Region((0, 0, 100, 100), "red car"), Region((200, 200, 300, 300), "blue car")]
    samples = [_sample(grounding_caption="a red car and a blue car", phrases=phrases)]
    answer = [_boxes(((200, 200, 250, 250), "blue car"), ((0, 0, 100, 62.5), "red car"))]
    assert metrics.score("<CAPTION_TO_PHRASE_GROUNDING>", samples, answer) == approx(
        {"acc_at_0.5": 50.0, "miou": 43.75}
    )
    perfect = [_boxes(((0, 0, 100, 100), "red car"), ((200, 200, 300, 300), "blue car"))]
    assert metrics.score("<CAPTION_TO_PHRASE_GROUNDING>", samples, perfect) == approx(
        {"acc_at_0.5": 100.0, "miou": 100.0}
    )
    empty = [metrics.empty_answer("<CAPTION_TO_PHRASE_GROUNDING>")]
    assert metrics.score("<CAPTION_TO_PHRASE_GROUNDING>", samples, empty) == {"acc_at_0.5": 0.0, "miou": 0.0}


def test_referring_expression_single_phrase_takes_the_first_box():
    samples = [_sample(phrases=[Region((0, 0, 10, 10), "woman on right")])]
    answer = [_boxes(((0, 0, 10, 10), "woman"), ((50, 50, 60, 60), "other"))]
    assert metrics.score("<CAPTION_TO_PHRASE_GROUNDING>", samples, answer)["acc_at_0.5"] == 100.0


SQUARE10 = (0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0)


def test_mask_iou_hand_computed():
    samples = [
        _sample(1, 40, 40, expressions=[Region((0, 0, 10, 10), text="x", polygon=SQUARE10)]),
        _sample(
            2, 40, 40, expressions=[Region((0, 0, 20, 20), text="y", polygon=(0, 0, 20, 0, 20, 20, 0, 20))]
        ),
    ]
    half = {"polygons": [[[0, 0, 10, 0, 10, 5, 0, 5]]], "labels": [""]}
    full = {"polygons": [[[0, 0, 20, 0, 20, 20, 0, 20]]], "labels": [""]}
    got = metrics.score("<REFERRING_EXPRESSION_SEGMENTATION>", samples, [half, full])
    # pycocotools rasterises the 10x10 square to 100 pixels and the half to 50
    assert got == approx({"miou": (50 + 100) / 2, "mask_iou": 100 * (50 + 400) / (100 + 400)})
    two_halves = {
        "polygons": [[[0, 0, 10, 0, 10, 5, 0, 5]], [[0, 5, 10, 5, 10, 10, 0, 10]]],
        "labels": ["", ""],
    }
    assert metrics.score("<REFERRING_EXPRESSION_SEGMENTATION>", samples[:1], [two_halves])["miou"] == approx(
        100.0
    )
    empty = [metrics.empty_answer("<REGION_TO_SEGMENTATION>")] * 2
    regions = [_sample(i, 40, 40, regions=[Region((0, 0, 10, 10), polygon=SQUARE10)]) for i in (1, 2)]
    assert metrics.score("<REGION_TO_SEGMENTATION>", regions, empty) == {"miou": 0.0, "mask_iou": 0.0}
    with pytest.raises(UsageError, match="image_id 1"):
        metrics.score("<REGION_TO_SEGMENTATION>", regions, [{"polygons": [["a"]]}, empty[0]])


# ---------------------------------------------------------------- OCR and categories


def test_ocr_cer_wer_exact_match_hand_computed():
    samples = [_sample(1, ocr_text="Hello World"), _sample(2, ocr_text="STOP")]
    got = metrics.score("<OCR>", samples, ["hello  word</s>", "stop"])
    # corpus rates after normalisation (lowercase, whitespace collapsed): 1 edit in 15 chars, 1 in 3 words
    assert got == approx({"cer": 100 / 15, "wer": 100 / 3, "exact_match": 50.0})
    assert metrics.score("<OCR>", samples, ["Hello World", "STOP"]) == {
        "cer": 0.0,
        "wer": 0.0,
        "exact_match": 100.0,
    }
    assert metrics.score("<OCR>", samples, ["", ""]) == {"cer": 100.0, "wer": 100.0, "exact_match": 0.0}
    with pytest.raises(UsageError, match="image_id 2 .*a string"):
        metrics.score("<OCR>", samples, ["x", 3])


def test_region_to_ocr_and_ocr_with_region():
    lines = [Region((0, 0, 40, 10), text="EXIT"), Region((0, 20, 40, 30), text="PARK")]
    samples = [_sample(ocr_lines=lines)]
    assert metrics.score("<REGION_TO_OCR>", samples, ["exit"])["exact_match"] == 100.0
    answer = {"quad_boxes": [[0, 0, 40, 0, 40, 10, 0, 10]], "labels": ["EXIT"]}
    got = metrics.score("<OCR_WITH_REGION>", samples, [answer])
    assert got == approx({"recall_at_0.5": 50.0, "precision_at_0.5": 100.0, "cer": 100 * 4 / 8})
    assert metrics.score("<OCR_WITH_REGION>", samples, [metrics.empty_answer("<OCR_WITH_REGION>")]) == approx(
        {"recall_at_0.5": 0.0, "precision_at_0.5": 0.0, "cer": 100.0}
    )


def test_region_to_category_accuracy():
    samples = [
        _sample(i, regions=[Region((0, 0, 1, 1), category=c)]) for i, c in enumerate(("cat", "couch", "cat"))
    ]
    got = metrics.score("<REGION_TO_CATEGORY>", samples, ["cat<loc_1><loc_2><loc_3><loc_4>", "Sofa", "dog"])
    assert got == approx({"accuracy": 200 / 3})
    assert metrics.score("<REGION_TO_CATEGORY>", samples, ["", "", ""]) == {"accuracy": 0.0}


# ---------------------------------------------------------------- registries


def test_every_task_has_metrics_and_perfect_smoke_answers_score_the_maximum():
    assert tasks_of(DATASETS["synthetic-smoke"]) == tuple(TASKS)  # the smoke set holds every family
    samples = synthetic_smoke(4)
    for task in TASKS:
        got = metrics.score(task, samples, [_perfect(task, s) for s in samples], java=False)
        assert tuple(got) == metrics.task_metrics(task), task
        assert all(isinstance(v, float) and math.isfinite(v) for v in got.values())
        for name, value in got.items():
            if name in ("cer", "wer"):
                assert value == 0.0, task
            elif name in (
                "acc_at_0.5",
                "miou",
                "mask_iou",
                "accuracy",
                "exact_match",
                "map",
                "ap50",
                "ap75",
                "recall_at_0.5",
                "precision_at_0.5",
                "rouge_l",
            ):
                assert value == approx(100.0), (task, name)


def _perfect(task, s):
    def box(regions, key="labels", attr="category"):
        return {"bboxes": [list(r.bbox) for r in regions], key: [getattr(r, attr) for r in regions]}

    def quad(b):
        return [b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]

    query = s.objects[0].category
    return {
        "<OCR>": s.ocr_text,
        "<REGION_TO_OCR>": s.ocr_lines[0].text,
        "<REGION_TO_CATEGORY>": s.regions[0].category,
        "<REGION_TO_DESCRIPTION>": s.regions[0].description,
        "<CAPTION>": s.captions[0],
        "<DETAILED_CAPTION>": s.captions[0],
        "<MORE_DETAILED_CAPTION>": s.captions[0],
        "<OCR_WITH_REGION>": {
            "quad_boxes": [quad(r.bbox) for r in s.ocr_lines],
            "labels": [r.text for r in s.ocr_lines],
        },
        "<OD>": box(s.objects),
        "<DENSE_REGION_CAPTION>": box(s.objects, attr="description"),
        "<REGION_PROPOSAL>": box(s.objects),
        "<CAPTION_TO_PHRASE_GROUNDING>": box(s.phrases),
        "<OPEN_VOCABULARY_DETECTION>": dict(
            box([o for o in s.objects if o.category == query], "bboxes_labels"),
            polygons=[],
            polygons_labels=[],
        ),
        "<REFERRING_EXPRESSION_SEGMENTATION>": {
            "polygons": [[list(s.expressions[0].polygon)]],
            "labels": [""],
        },
        "<REGION_TO_SEGMENTATION>": {"polygons": [[list(s.regions[0].polygon)]], "labels": [""]},
    }[task]


ALLOWED_KEYS = {
    "coco_caption_cider",
    "nocaps_cider",
    "textcaps_cider",
    "coco_det_map",
    "flickr30k_r1",
    "refcoco_val_acc",
    "refcoco_testA_acc",
    "refcoco_testB_acc",
    "refcocoplus_val_acc",
    "refcocoplus_testA_acc",
    "refcocoplus_testB_acc",
    "refcocog_val_acc",
    "refcocog_test_acc",
    "refcoco_res_val_miou",
    "vqav2_testdev",
    "textvqa_testdev",
    "vizwiz_testdev",
}


def test_task_benchmarks_use_agreed_keys_and_real_metrics():
    for (dataset, task), bench in metrics.TASK_BENCHMARKS.items():
        assert bench.key in ALLOWED_KEYS
        assert dataset in DATASETS and task in tasks_of(DATASETS[dataset])
        assert bench.metric in metrics.task_metrics(task)
    assert metrics.reported_benchmark("coco-val2017:500", "<OD>").key == "coco_det_map"
    assert (
        metrics.reported_benchmark("refcocog-test", "<CAPTION_TO_PHRASE_GROUNDING>").key
        == "refcocog_test_acc"
    )
    assert metrics.reported_benchmark("synthetic-smoke", "<OD>") is None


def test_usable_samples_need_the_query_and_references():
    samples = [
        _sample(1, regions=[Region((0, 0, 1, 1), "cat")]),
        _sample(2),
        _sample(3, objects=[Region((0, 0, 1, 1))]),
    ]
    assert [s.image_id for s in metrics.usable_samples("<REGION_TO_CATEGORY>", samples)] == [1]
    assert [s.image_id for s in metrics.usable_samples("<OPEN_VOCABULARY_DETECTION>", samples)] == [3]
    assert len(metrics.usable_samples("<OD>", samples)) == 3
    assert len(metrics.usable_samples("<CAPTION>", synthetic_smoke(2))) == 2


def test_docs_list_the_synonym_table_and_every_metric():
    doc = (Path(__file__).parents[1] / "docs" / "accuracy.md").read_text()
    for canon, synonyms in metrics.SYNONYMS.items():
        if synonyms:
            assert f"| {canon} | {', '.join(synonyms)} |" in doc, canon
    for scoring in metrics.SCORINGS.values():
        for name in scoring.metrics:
            assert f"`{name}`" in doc, name
