"""How bench.tools.perf runs one batch of a setting: the model card's snippet verbatim (``SnippetRunner``) or a
candidate through the harness's Pipeline (``PipelineRunner``), and what a setting measured (``SettingResult``)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from bench.accuracy.data import Sample
from bench.accuracy.tasks import get_task
from bench.backends.base import GenerationSettings, LoadedModel
from bench.backends.registry import get_backend
from bench.core.measure import clock_for
from bench.scenarios.base import run_batches
from bench.tools.perf_settings import NUM_BEAMS, TASK, Candidate

PREFETCH_STREAM = 3  # batches per measurement of a prefetching setting (the first one's preparation is not hidden)


@dataclass
class SettingResult:
    """What one setting measured: per-batch wall times and the texts it produced per image id."""

    name: str
    batch_size: int
    dtype: str
    kind: str  # "model-card snippet" | "harness Pipeline"
    batch_s: list[float] = field(default_factory=list)
    vision_ms: list[float] = field(default_factory=list)  # per image, per batch
    warmup_s: float = 0.0
    load_s: float | None = None  # building the model (shared models: counted once, by the first setting)
    texts: dict[int, str] = field(default_factory=dict)
    candidate: Candidate | None = None  # None: the snippet
    key: str | None = None
    error: str | None = None
    skipped: str | None = None  # "budget" | "oom" | "unsupported": why the setting was not measured

    @property
    def images_per_s(self) -> float | None:
        """Batch size / median batch time: one burst of someone else's load does not move it."""
        return self.batch_size / statistics.median(self.batch_s) if self.batch_s else None

    @property
    def images_per_s_mean(self) -> float | None:
        total = sum(self.batch_s)
        return len(self.batch_s) * self.batch_size / total if total > 0 else None

    @property
    def vision_ms_per_image(self) -> float | None:
        return statistics.median(self.vision_ms) if self.vision_ms else None

    @property
    def spread(self) -> dict[str, float] | None:
        """How far the rounds' batch times spread: min, median, max and (max - min) / median."""
        if not self.batch_s:
            return None
        low, mid, high = min(self.batch_s), statistics.median(self.batch_s), max(self.batch_s)
        return {"batches": len(self.batch_s), "min_s": low, "median_s": mid, "max_s": high,
                "range_rel": (high - low) / mid if mid > 0 else None}


class SnippetRunner:
    """The model card's snippet, verbatim apart from the forced token count of random weights."""

    def __init__(self, loaded: LoadedModel, device: str, max_new_tokens: int) -> None:
        self.loaded, self.device, self.max_new_tokens = loaded, device, max_new_tokens
        self.clock = clock_for(device)
        self.batch_size = 1

    def run(self, batches) -> tuple[float, list[float], dict[int, str]]:
        (sample,) = next(batches)
        clock, inner = self.clock, self.loaded.model.model
        marks: list[
            object
        ] = []  # vision tower start and projector end: timing only, the snippet is unchanged
        hooks = [
            inner.vision_tower.register_forward_pre_hook(lambda *_: marks.append(clock.mark())),
            inner.multi_modal_projector.register_forward_hook(lambda *_: marks.append(clock.mark())),
        ]
        try:
            start = clock.mark()
            text = self.snippet(sample)
            end = clock.mark()
            clock.sync()
        finally:
            for hook in hooks:
                hook.remove()
        vision = [clock.elapsed_ms(marks[0], marks[1])] if len(marks) == 2 else []
        return clock.elapsed_ms(start, end) / 1000.0, vision, {sample.image_id: text}

    def snippet(self, sample: Sample) -> str:
        """The model card's code for one image (its answer is computed and, as there, not used here)."""
        import torch

        processor, model = self.loaded.processor, self.loaded.model
        image = sample.load_image()
        inputs = processor(text=TASK, images=image, return_tensors="pt").to(self.device, torch.float32)
        with torch.inference_mode():
            generated_ids = model.generate(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                num_beams=NUM_BEAMS,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        generated_text = processor.batch_decode(generated_ids, skip_special_tokens=False)[0]
        processor.post_process_generation(generated_text, task=TASK, image_size=(image.width, image.height))
        return generated_text


class PipelineRunner:
    """A candidate through the harness's Pipeline: what a sweep cell with these settings runs.

    A prefetching candidate is measured over a stream of ``PREFETCH_STREAM`` batches (a fresh
    Prefetcher each time, so the first batch's preparation is not hidden): wall time / batches.
    """

    def __init__(self, loaded: LoadedModel, candidate: Candidate, device: str, max_new_tokens: int) -> None:
        generation = GenerationSettings(NUM_BEAMS, max_new_tokens, forced=True, cache=candidate.cache)
        self.pipeline = get_backend(candidate.backend).pipeline(
            loaded, get_task(TASK), generation, device=device, dtype=candidate.dtype, clock=clock_for(device),
            preprocess=candidate.preprocess, prefetch=candidate.prefetch,
        )
        self.batch_size = candidate.batch_size
        self.prefetch = candidate.prefetch

    def run(self, batches) -> tuple[float, list[float], dict[int, str]]:
        """Seconds per batch, vision ms per image of each batch, and the texts by image id."""
        n = PREFETCH_STREAM if self.prefetch else 1
        stream = (next(batches) for _ in range(n))  # exactly n: a prefetcher takes no batch beyond them
        # with prefetch, wall time: execute() synchronised the device
        results, total_s = run_batches(self.pipeline, stream, n, prefetch=self.prefetch, now=time.perf_counter)
        seconds = total_s / len(results)
        texts = {s.image_id: t for r in results for s, t in zip(r.samples, r.texts, strict=True)}
        return seconds, [r.stages_ms["vision"] for r in results], texts

