"""One benchmark per task family on the tiny checkpoint; CI can gate with --benchmark-compare-fail."""

from __future__ import annotations

import pytest

FAMILIES = {
    "caption": "<CAPTION>",
    "detection": "<OD>",
    "ocr": "<OCR_WITH_REGION>",
    "grounding": "<CAPTION_TO_PHRASE_GROUNDING>",
    "segmentation": "<REFERRING_EXPRESSION_SEGMENTATION>",
    "region": "<REGION_TO_DESCRIPTION>",
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(benchmark, make_pipeline, smoke_samples, family):
    pipeline = make_pipeline(FAMILIES[family])
    result = benchmark.pedantic(pipeline.run_batch, args=(smoke_samples[:1],), rounds=10, warmup_rounds=2)
    assert result.new_tokens == [8]
    benchmark.extra_info["task"] = FAMILIES[family]
    benchmark.extra_info["stages_ms"] = result.stages_ms
