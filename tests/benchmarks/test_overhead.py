"""The harness's own overhead: its end-to-end median against a bare loop doing the same work.

Both run the same processor, generate and decode on the same inputs, interleaved in one process so
machine noise hits both alike. The ratio is printed; the target is under 3%.
"""

from __future__ import annotations

import statistics
import time

import torch

ROUNDS = 30


def _bare(pipeline, samples) -> float:
    start = time.perf_counter()
    processor = pipeline.loaded.processor
    inputs = processor(images=[s.load_image() for s in samples], text=[pipeline.task.text_for(s) for s in samples],
                       return_tensors="pt", padding="longest")
    with torch.inference_mode():
        out = pipeline.loaded.model.generate(**inputs, **pipeline.generation.kwargs())
    texts = processor.batch_decode(out, skip_special_tokens=False)
    for text, s in zip(texts, samples, strict=True):
        processor.post_process_generation(text, task=pipeline.task.token, image_size=(s.width, s.height))
    return (time.perf_counter() - start) * 1000


def test_harness_overhead_is_under_3_percent(make_pipeline, smoke_samples):
    pipeline = make_pipeline("<CAPTION>", new_tokens=16)
    samples = smoke_samples[:1]
    for _ in range(3):
        pipeline.run_batch(samples)
        _bare(pipeline, samples)
    harness, bare = [], []
    for _ in range(ROUNDS):
        harness.append(pipeline.run_batch(samples).end_to_end_ms)
        bare.append(_bare(pipeline, samples))
    ratio = statistics.median(harness) / statistics.median(bare)
    print(f"\nharness median {statistics.median(harness):.2f} ms, bare loop median {statistics.median(bare):.2f} ms, "
          f"overhead {100 * (ratio - 1):+.2f}%")
    assert ratio < 1.03
