"""The fake runtime: an engine that turns pixels into a fixed number of token ids by deterministic numpy
work (no sleep, no model), and the pipeline that times its three stages on the cell's clock."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.accuracy.data import Sample
from bench.accuracy.tasks import Task
from bench.backends.base import (
    Backend,
    BatchResult,
    CheckpointRef,
    GenerationSettings,
    LoadedModel,
    LoadOptions,
    Prepared,
)
from bench.core.measure import Clock
from bench.core.variants import Variant

SIDE = 32  # the engine's input: SIDE x SIDE grey pixels


class Engine:
    """Token ids from pixels: a fixed projection, then argmax rows, as many as asked for."""

    def __init__(self, vocab: int = 64) -> None:
        self.weights = np.random.default_rng(0).standard_normal((SIDE * SIDE, vocab)).astype(np.float32)

    def generate(self, pixels: np.ndarray, new_tokens: int) -> np.ndarray:
        logits = pixels.reshape(len(pixels), -1) @ self.weights
        return np.stack([np.roll(logits, step, axis=1).argmax(axis=1) for step in range(new_tokens)], axis=1)


class FakePipeline:
    """``bench.backends.base.Pipeline`` over the engine: preprocess, decode and postprocess, timed."""

    def __init__(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, clock: Clock) -> None:
        self.engine: Engine = loaded.model
        self.task, self.generation, self.clock = task, generation, clock
        self.first_call_ms: float | None = None

    def prepare(self, samples: list[Sample]) -> Prepared:
        started = time.perf_counter()
        pixels = np.stack([np.asarray(s.load_image().convert("L").resize((SIDE, SIDE)), dtype=np.float32) / 255
                           for s in samples])
        return Prepared(list(samples), pixels, (time.perf_counter() - started) * 1000.0, started)

    def collate(self, parts: list[Prepared]) -> Prepared:
        return Prepared([s for p in parts for s in p.samples], np.concatenate([p.inputs for p in parts]),
                        sum(p.prepare_ms for p in parts), min(p.started_s for p in parts))

    def run_batch(self, samples: list[Sample]) -> BatchResult:
        return self.execute(self.prepare(samples))

    def execute(self, prepared: Prepared) -> BatchResult:
        clock, n = self.clock, len(prepared.samples)
        t0 = clock.mark()
        tokens = self.engine.generate(prepared.inputs, self.generation.max_new_tokens)
        t1 = clock.mark()
        texts = [" ".join(f"t{i}" for i in row) for row in tokens.tolist()]
        t2 = clock.mark()
        clock.sync()
        decode, post = clock.elapsed_ms(t0, t1), clock.elapsed_ms(t1, t2)
        batch_ms = prepared.prepare_ms + decode + post
        if self.first_call_ms is None:
            self.first_call_ms = batch_ms
        stages = {"preprocess": prepared.prepare_ms / n, "decode": decode / n, "postprocess": post / n}
        return BatchResult(stages, batch_ms / n, batch_ms, [tokens.shape[1]] * n, texts, list(texts),
                           prepared.samples, prepared.started_s, time.perf_counter())


class FakeBackend(Backend):
    name = "fake"
    axes = {"dtype": ("fp32",), "attn": ("sdpa",), "cache": ("dynamic",), "quant": ("none",), "compile": (False,),
            "compile_vision": (False,), "channels_last": (False,), "preprocess": ("host",)}
    stages = ("preprocess", "decode", "postprocess")

    def resolve(self, variant: Variant, options: LoadOptions) -> CheckpointRef:
        return CheckpointRef("random", f"fake:{variant.name}", None, note="the fake engine's fixed weights")

    def load(self, variant: Variant, ref: CheckpointRef, cell: Any, options: LoadOptions) -> LoadedModel:
        engine = Engine()
        return LoadedModel(engine, None, ref, engine.weights.size, engine.weights.nbytes, notes=["numpy engine"])

    def pipeline(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock, preprocess: str = "host", prefetch: bool = False) -> FakePipeline:
        return FakePipeline(loaded, task, generation, clock)

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        return {"engine": "numpy", "vocab": int(loaded.model.weights.shape[1])}
