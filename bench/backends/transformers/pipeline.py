"""One cell's measured work: processor -> generate -> post_process_generation, timed per stage.

The stages are marked on the device's clock (CUDA events on GPUs, perf_counter on CPU) and read
after a single synchronisation per batch:

- ``preprocess``: image decode + tokenise + resize/normalise + copy to the device, on the host with the
  checkpoint's processor or on the device (``bench.backends.transformers.preprocess``, the ``preprocess`` axis);
- ``vision``: the vision tower and projector, timed by forward hooks *inside* generate (part of ttft);
- ``ttft``: generate() start to the first token's logits (vision + text encoder + first decoder step);
- ``decode``: first token to the end of generate(); ``per_token`` = decode / (new tokens - 1); each
  decoding step's own time is kept too (``BatchResult.step_ms``: the intervals between consecutive
  next-token logits), for the per-token latency distribution;
- ``postprocess``: token ids to text and ``post_process_generation`` to a structured answer.

So end to end = preprocess + ttft + decode + postprocess (vision is inside ttft). Times of a batch
are divided by its size: every per-image figure of a batch > 1 is amortised, and says so.

A batch runs in two halves: ``prepare`` (host work and the copy; what a ``Prefetcher`` runs on a
background thread for the next batch) and ``execute`` (generate and postprocess). ``run_batch`` runs
both in line. A prefetched batch's ``preprocess`` is its own preparation time, measured on the worker
thread with the host clock (its device work synchronised); it overlaps the previous batch, so stage
times then add up to more than the wall time, and throughput must be taken from the wall time.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from contextlib import contextmanager
from typing import Any

from bench.accuracy.data import Sample
from bench.accuracy.tasks import Task
from bench.backends.base import BatchResult, GenerationSettings, LoadedModel, Prepared
from bench.backends.transformers.checkpoints import torch_dtype
from bench.backends.transformers.preprocess import make_preprocessor, pad_rows
from bench.core.measure import Clock, device_kind


class _FirstTokenMarker:
    """A logits processor that marks the clock each time a step's next-token logits exist: the first
    mark ends ttft, the intervals between marks are the decoding steps."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.marks: list[object] = []

    @property
    def mark(self) -> object | None:
        return self.marks[0] if self.marks else None

    def __call__(self, input_ids, scores):
        self.marks.append(self.clock.mark())
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


class TransformersPipeline:
    """Runs batches of one task through a loaded model and times each stage on ``clock``.

    ``preprocess`` names how pixels are made (``preprocess.PREPROCESSORS``); ``prefetch`` says
    that ``prepare`` will run on other threads (a server may prepare several requests at once), each of
    which then gets its own copy of the processor (a tokenizer is not safe to share between threads)
    and, on CUDA, its own stream.
    """

    def __init__(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock, preprocess: str = "host", prefetch: bool = False) -> None:
        self.loaded = loaded
        self.task = task
        self.generation = generation
        self.device = device
        self.dtype = torch_dtype(dtype)
        self.clock = clock
        self._preprocess_name = preprocess
        processor = copy.deepcopy(loaded.processor) if prefetch else loaded.processor
        self.preprocessor = make_preprocessor(preprocess, processor, device, self.dtype)
        self._main_stream = None
        self._local = threading.local() if prefetch else None
        self._owner: int | None = None  # the first thread that prepared uses self.preprocessor
        self._owner_lock = threading.Lock()
        self.first_call_ms: float | None = None  # the first batch this pipeline ran: cold, before any warm-up
        if prefetch and device_kind(device) == "cuda":
            import torch

            self._main_stream = torch.cuda.current_stream(torch.device(device))

    def _thread_parts(self) -> tuple[Any, Any]:
        """This thread's preprocessor and side stream (None off CUDA): the first thread uses the
        pipeline's own copy, every further one a copy of its own."""
        if self._local is None:
            return self.preprocessor, None
        parts = getattr(self._local, "parts", None)
        if parts is None:
            with self._owner_lock:
                if self._owner is None:
                    self._owner = threading.get_ident()
                    preprocessor = self.preprocessor
                else:
                    preprocessor = make_preprocessor(self._preprocess_name, copy.deepcopy(self.loaded.processor),
                                                     self.device, self.dtype)
            side = None
            if self._main_stream is not None:
                import torch

                side = torch.cuda.Stream(device=torch.device(self.device))
            parts = self._local.parts = (preprocessor, side)
        return parts

    def preprocess(self, samples: list[Sample]) -> dict[str, Any]:
        images = [s.load_image() for s in samples]
        texts = [self.task.text_for(s) for s in samples]
        return self._thread_parts()[0](images, texts)

    def prepare(self, samples: list[Sample]) -> Prepared:
        """Host work and the copy to the device, timed with the host clock (safe on a worker thread)."""
        started = time.perf_counter()
        side, main = self._thread_parts()[1], self._main_stream
        if side is None:
            inputs = self.preprocess(samples)
        else:
            import torch

            with torch.cuda.stream(side):
                inputs = self.preprocess(samples)
            side.synchronize()  # the batch is on the device when prepare returns
            for tensor in inputs.values():
                tensor.record_stream(main)  # its memory is not reused while the main stream reads it
        return Prepared(list(samples), inputs, (time.perf_counter() - started) * 1000.0, started)

    def collate(self, parts: list[Prepared]) -> Prepared:
        """One batch from requests prepared one at a time (a server prepares each as it arrives): token
        rows padded to the longest as the processor pads them, pixels stacked. Its preparation time is
        the sum of the parts' (each its own work); it started when the first part did."""
        import torch

        if len(parts) == 1:
            return parts[0]
        tokenizer = self.loaded.processor.tokenizer
        left = getattr(tokenizer, "padding_side", "right") == "left"
        # one request per part, padded to its own length: its mask is all ones, which pad_rows writes
        tokens = pad_rows([p.inputs["input_ids"][0] for p in parts], tokenizer.pad_token_id, left)
        pixels = torch.cat([p.inputs["pixel_values"] for p in parts])
        return Prepared([s for p in parts for s in p.samples], {**tokens, "pixel_values": pixels},
                        sum(p.prepare_ms for p in parts), min(p.started_s for p in parts))

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
        """Prepare and execute one batch in line; preprocess is timed on the device's clock."""
        started = time.perf_counter()
        t0 = self.clock.mark()
        inputs = self.preprocess(samples)
        return self._execute(list(samples), inputs, started, t0=t0)

    def execute(self, prepared: Prepared) -> BatchResult:
        """Generate and postprocess a batch prepared earlier (e.g. by a Prefetcher)."""
        return self._execute(prepared.samples, prepared.inputs, prepared.started_s, prepare_ms=prepared.prepare_ms)

    def _execute(self, samples: list[Sample], inputs: dict[str, Any], started: float, *, t0: object = None,
                 prepare_ms: float | None = None) -> BatchResult:
        clock = self.clock
        marks: list[tuple[str, object]] = []
        first = _FirstTokenMarker(clock)
        t1 = clock.mark()
        with _vision_hooks(self.loaded.model, clock, marks):
            sequences = self.generate(inputs, first)
        t2 = clock.mark()
        texts, answers = self.postprocess(sequences, samples)
        t3 = clock.mark()
        clock.sync()  # the one synchronisation of this measurement (a no-op on CPU)
        finished = time.perf_counter()
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
        preprocess = ms(t0, t1) if prepare_ms is None else prepare_ms
        batch_ms = preprocess + ms(t1, t3)  # the batch's own work; overlap shows in wall time only
        stages = {
            "preprocess": preprocess / n,
            "vision": vision / n,
            "ttft": ttft / n,
            "decode": decode / n,
            "per_token": decode / max(1, steps - 1),  # per decoding step of the whole batch
            "postprocess": ms(t2, t3) / n,
        }
        if self.first_call_ms is None:
            self.first_call_ms = batch_ms
        step_ms = [ms(a, b) for a, b in itertools.pairwise(first.marks)]
        return BatchResult(stages, batch_ms / n, batch_ms, counts, texts, answers, samples, started, finished,
                           overlapped=prepare_ms is not None, step_ms=step_ms)
