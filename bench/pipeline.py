"""One cell's measured work: processor -> generate -> post_process_generation, timed per stage.

The stages are marked on the device's clock (CUDA events on GPUs, perf_counter on CPU) and read
after a single synchronisation per batch:

- ``preprocess``: image decode + processor (tokenise, resize, normalise) + copy to the device;
- ``vision``: the vision tower and projector, timed by forward hooks *inside* generate (part of ttft);
- ``ttft``: generate() start to the first token's logits (vision + text encoder + first decoder step);
- ``decode``: first token to the end of generate(); ``per_token`` = decode / (new tokens - 1);
- ``postprocess``: token ids to text and ``post_process_generation`` to a structured answer.

So end to end = preprocess + ttft + decode + postprocess (vision is inside ttft). Times of a batch
are divided by its size: every per-image figure of a batch > 1 is amortised, and says so.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.checkpoints import LoadedModel, torch_dtype
from bench.data import Sample
from bench.measure import Clock
from bench.tasks import Task

# Test-only hook: adds this many milliseconds to every preprocessing step, so the regression gate can
# be shown to catch a known slowdown. Never set it in a real run (the record says when it is set).
INJECT_DELAY_ENV = "FLORENCE2_BENCH_TEST_PREPROCESS_DELAY_MS"
STAGES = ("preprocess", "vision", "ttft", "per_token", "decode", "postprocess")


@dataclass(frozen=True)
class GenerationSettings:
    """How generate() is called; random weights force an exact token count per task."""

    num_beams: int = 3
    max_new_tokens: int = 1024
    forced: bool = False  # True in random mode: exactly max_new_tokens new tokens (EOS suppressed)
    cache: str = "dynamic"  # "dynamic" | "static"

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_beams": self.num_beams, "do_sample": False, "max_new_tokens": self.max_new_tokens}
        if self.forced:
            kw["min_new_tokens"] = self.max_new_tokens
        if self.cache == "static":
            kw["cache_implementation"] = "static"
        return kw


def generation_settings(task: Task, weights: str, num_beams: int, max_new_tokens: int | None = None,
                        cache: str = "dynamic") -> GenerationSettings:
    """Random weights: the task's typical output length, forced. Pretrained: the model card's 1024 cap."""
    if weights == "random":
        return GenerationSettings(num_beams, max_new_tokens or task.random_tokens, forced=True, cache=cache)
    return GenerationSettings(num_beams, max_new_tokens or 1024, forced=False, cache=cache)


@dataclass
class BatchResult:
    """Per-image stage times (ms, amortised over the batch) and the outputs of one batch."""

    stages_ms: dict[str, float]
    end_to_end_ms: float
    batch_ms: float
    new_tokens: list[int]
    texts: list[str]
    answers: list[Any]
    samples: list[Sample] = field(default_factory=list)


class _FirstTokenMarker:
    """A logits processor that marks the clock when the first token's logits exist."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.mark: object | None = None

    def __call__(self, input_ids, scores):
        if self.mark is None:
            self.mark = self.clock.mark()
        return scores


@contextmanager
def _vision_hooks(model, clock: Clock, marks: list):
    """Mark the start of the vision tower and the end of the projector during generate()."""
    inner = model.model
    handles = [
        inner.vision_tower.register_forward_pre_hook(lambda *_: marks.append(("start", clock.mark()))),
        inner.multi_modal_projector.register_forward_hook(lambda *_: marks.append(("end", clock.mark()))),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class Pipeline:
    """Runs batches of one task through a loaded model and times each stage on ``clock``."""

    def __init__(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock) -> None:
        self.loaded = loaded
        self.task = task
        self.generation = generation
        self.device = device
        self.dtype = torch_dtype(dtype)
        self.clock = clock
        self.delay_s = float(os.environ.get(INJECT_DELAY_ENV, "0") or 0) / 1000.0

    def preprocess(self, samples: list[Sample]):
        images = [s.load_image() for s in samples]
        texts = [self.task.text_for(s) for s in samples]
        inputs = self.loaded.processor(images=images, text=texts, return_tensors="pt", padding="longest")
        if self.delay_s:
            time.sleep(self.delay_s)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def generate(self, inputs, first: _FirstTokenMarker | None = None):
        import torch
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList([first]) if first is not None else None
        with torch.inference_mode():
            return self.loaded.model.generate(**inputs, logits_processor=processors, **self.generation.kwargs())

    def postprocess(self, sequences, samples: list[Sample]) -> tuple[list[str], list[Any]]:
        processor = self.loaded.processor
        texts = processor.batch_decode(sequences, skip_special_tokens=False)
        answers = [
            processor.post_process_generation(text, task=self.task.token, image_size=(s.width, s.height))[
                self.task.token]
            for text, s in zip(texts, samples, strict=True)
        ]
        return texts, answers

    def new_token_counts(self, sequences) -> list[int]:
        """New tokens per image: everything after the decoder start, up to and including EOS."""
        eos = self.loaded.model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        pad = self.loaded.model.generation_config.pad_token_id
        counts = []
        for row in sequences.tolist():
            body = row[1:]
            n = len(body)
            if eos in body:
                n = body.index(eos) + 1
            elif pad is not None and pad in body:
                n = body.index(pad)
            counts.append(n)
        return counts

    def run_batch(self, samples: list[Sample]) -> BatchResult:
        clock = self.clock
        marks: list[tuple[str, object]] = []
        first = _FirstTokenMarker(clock)
        t0 = clock.mark()
        inputs = self.preprocess(samples)
        t1 = clock.mark()
        with _vision_hooks(self.loaded.model, clock, marks):
            sequences = self.generate(inputs, first)
        t2 = clock.mark()
        texts, answers = self.postprocess(sequences, samples)
        t3 = clock.mark()
        clock.sync()  # the one synchronisation of this measurement (a no-op on CPU)
        ms = clock.elapsed_ms
        n = len(samples)
        counts = self.new_token_counts(sequences)
        steps = max(1, sequences.shape[1] - 1)
        starts = [m for kind, m in marks if kind == "start"]
        ends = [m for kind, m in marks if kind == "end"]
        vision = sum(ms(a, b) for a, b in zip(starts, ends, strict=False))
        first_mark = first.mark if first.mark is not None else t2
        ttft = ms(t1, first_mark)
        decode = ms(first_mark, t2)
        batch_ms = ms(t0, t3)
        stages = {
            "preprocess": ms(t0, t1) / n,
            "vision": vision / n,
            "ttft": ttft / n,
            "decode": decode / n,
            "per_token": decode / max(1, steps - 1),  # per decoding step of the whole batch
            "postprocess": ms(t2, t3) / n,
        }
        return BatchResult(stages, batch_ms / n, batch_ms, counts, texts, answers, list(samples))
