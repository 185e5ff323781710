"""The task registry: every Florence-2 task prompt as one declarative entry.

Add a task by adding one ``Task`` to ``TASKS``: its token, how its input is taken from a sample,
how its output is shaped, how many tokens random weights are forced to generate for it, how its answers
are scored (``scoring``: an entry of ``bench.accuracy.metrics.SCORINGS``) and which datasets hold its references
(``datasets``: families of ``bench.accuracy.data.FAMILIES``). Scoring and the datasets' task lists read them from
here (``tasks_of``); nothing else lists tasks.

Random weights produce text of arbitrary length, so in random mode every task generates exactly
``random_tokens`` new tokens (EOS suppressed). The numbers are typical lengths of real outputs in
Florence-2's tokenizer: a COCO caption is ~10-12 words (~15-20 BPE tokens, 20 with BOS/EOS, as the
project's cost table uses); a detailed caption ~35 words; a paragraph ~80 words; an <OD> object is
a category name (1-2 tokens) plus 4 location tokens and COCO images average ~7 objects (~45); a
polygon mask is ~30 vertices = 60 location tokens plus its label; region queries answer a category
(~3 tokens), a short phrase (~12) or a word or two of text (~8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.accuracy.data import FAMILIES, Box, DatasetSpec, Sample
from bench.core.errors import choice_error


def region_tokens(bbox: Box, width: int, height: int) -> str:
    """A box on Florence-2's 0-999 location grid, as its four <loc_*> tokens."""
    x1, y1, x2, y2 = bbox

    def q(v: float, size: int) -> int:
        return max(0, min(999, int(v / size * 1000)))

    return f"<loc_{q(x1, width)}><loc_{q(y1, height)}><loc_{q(x2, width)}><loc_{q(y2, height)}>"


def _no_input(_: Sample) -> str:
    return ""


def _grounding_caption(s: Sample) -> str:
    return s.grounding_caption or (s.captions[0] if s.captions else "")


def _expression(s: Sample) -> str:
    return s.expressions[0].text if s.expressions else ""


def _phrase(s: Sample) -> str:
    return s.objects[0].category if s.objects else ""


def _region(s: Sample) -> str:
    return region_tokens(s.regions[0].bbox, s.width, s.height) if s.regions else ""


def _text_region(s: Sample) -> str:
    return region_tokens(s.ocr_lines[0].bbox, s.width, s.height) if s.ocr_lines else ""


@dataclass(frozen=True)
class Task:
    token: str
    prompt: str
    parse: str  # Florence2Processor post-processing type
    output: str  # "text" | "boxes" | "quad_boxes" | "polygons" | "boxes_or_polygons"
    random_tokens: int
    query: Callable[[Sample], str] = _no_input
    input_kind: str = "none"  # "none" | "text" | "region"
    family: str = "caption"  # for grouping in benchmarks and reports
    scoring: str = ""  # how its answers are scored: a key of bench.accuracy.metrics.SCORINGS (required)
    # the dataset families whose references score it (bench.accuracy.data.FAMILIES; synthetic-smoke holds them all)
    datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """A task without a scoring or a dataset family would silently get no accuracy: refused here."""
        if not self.scoring:
            raise ValueError(f"task {self.token} names no scoring; accepted: a key of bench.accuracy.metrics.SCORINGS")
        unknown = [f for f in self.datasets if f not in FAMILIES]
        if unknown or not self.datasets:
            raise ValueError(f"task {self.token}: dataset families {list(self.datasets)}; accepted: one or more of "
                             f"{', '.join(FAMILIES)} (bench.accuracy.data.FAMILIES)")

    def text_for(self, sample: Sample) -> str:
        """The string handed to the processor: the task token, plus its input if it takes one."""
        return self.token + self.query(sample) if self.input_kind != "none" else self.token


TASKS: dict[str, Task] = {
    t.token: t
    for t in (
        Task("<OCR>", "What is the text in the image?", "pure_text", "text", 30, family="ocr", scoring="ocr",
             datasets=("ocr",)),
        Task("<OCR_WITH_REGION>", "What is the text in the image, with regions?", "ocr", "quad_boxes", 100,
             family="ocr", scoring="ocr_regions", datasets=("ocr",)),
        Task("<CAPTION>", "What does the image describe?", "pure_text", "text", 20, scoring="captions",
             datasets=("captions",)),
        Task("<DETAILED_CAPTION>", "Describe in detail what is shown in the image.", "pure_text", "text", 50,
             scoring="captions", datasets=("captions",)),
        Task("<MORE_DETAILED_CAPTION>", "Describe with a paragraph what is shown in the image.", "pure_text", "text",
             110, scoring="captions", datasets=("captions",)),
        Task("<OD>", "Locate the objects with category name in the image.", "description_with_bboxes", "boxes", 45,
             family="detection", scoring="detection", datasets=("instances",)),
        Task("<DENSE_REGION_CAPTION>", "Locate the objects in the image, with their descriptions.",
             "description_with_bboxes", "boxes", 60, family="detection", scoring="box_recall", datasets=("instances",)),
        Task("<REGION_PROPOSAL>", "Locate the region proposals in the image.", "bboxes", "boxes", 40,
             family="detection", scoring="box_recall", datasets=("instances",)),
        Task("<CAPTION_TO_PHRASE_GROUNDING>", "Locate the phrases in the caption: {input}", "phrase_grounding",
             "boxes", 20, _grounding_caption, "text", family="grounding", scoring="grounding", datasets=("referring",)),
        Task("<REFERRING_EXPRESSION_SEGMENTATION>", "Locate {input} in the image with mask", "polygons", "polygons",
             62, _expression, "text", family="segmentation", scoring="referring_segmentation", datasets=("referring",)),
        Task("<REGION_TO_SEGMENTATION>", "What is the polygon mask of region {input}", "polygons", "polygons", 62,
             _region, "region", family="segmentation", scoring="region_segmentation", datasets=("instances",)),
        Task("<OPEN_VOCABULARY_DETECTION>", "Locate {input} in the image.", "description_with_bboxes_or_polygons",
             "boxes_or_polygons", 10, _phrase, "text", family="grounding", scoring="open_vocabulary",
             datasets=("instances", "referring")),
        Task("<REGION_TO_CATEGORY>", "What is the region {input}?", "pure_text", "text", 4, _region, "region",
             family="region", scoring="region_category", datasets=("instances",)),
        Task("<REGION_TO_DESCRIPTION>", "What does the region {input} describe?", "pure_text", "text", 12, _region,
             "region", family="region", scoring="region_description", datasets=("region_descriptions",)),
        Task("<REGION_TO_OCR>", "What text is in the region {input}?", "pure_text", "text", 8, _text_region,
             "region", family="region", scoring="region_ocr", datasets=("ocr",)),
    )
}

ALIASES = {t.token.strip("<>").lower(): t.token for t in TASKS.values()}


def tasks_of(spec: DatasetSpec) -> tuple[str, ...]:
    """The tasks a dataset holds references for: those of a family it has, in ``TASKS`` order."""
    return tuple(t.token for t in TASKS.values() if set(t.datasets) & set(spec.families))


def get_task(name: str) -> Task:
    """A task by token (``<OD>``) or by its bare lower-case name (``od``), handy in shells."""
    token = name if name in TASKS else ALIASES.get(name.strip("<>").lower(), name)
    if token not in TASKS:
        raise choice_error("task", name, TASKS)
    return TASKS[token]
