"""Device preprocessing reproduces the reference CLIP processor's pixels and the processor's tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.tasks import TASKS
from bench.backends.transformers.checkpoints import build_processor
from bench.backends.transformers.preprocess import (
    MAX_ABS_DIFF,
    MEAN_ABS_DIFF,
    DevicePreprocessor,
    HostPreprocessor,
    PixelSpec,
    UnsupportedPreprocess,
    device_unsupported_reason,
    make_preprocessor,
    reference_image_processor,
)

# down- and up-scaling, both aspect ratios, one exact fit, odd sizes
SIZES = [(640, 480), (320, 240), (1920, 1080), (100, 700), (2000, 300), (33, 47), (768, 768), (1024, 1024)]


def _image(width: int, height: int, kind: str, seed: int = 0) -> Image.Image:
    if kind == "noise":  # the worst case for a resampling filter
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        yy, xx = np.mgrid[0:height, 0:width]
        pixels = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 64 * 4], -1)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.fixture(scope="module")
def reference(processor):
    return reference_image_processor(processor)


def test_device_pixels_match_the_reference_processor(processor, reference):
    device = DevicePreprocessor(processor, "cpu", torch.float32)
    worst, means = 0.0, []
    for width, height in SIZES:
        for kind in ("smooth", "noise"):
            image = _image(width, height, kind)
            expected = reference(images=[image], return_tensors="pt")["pixel_values"]
            got = device([image], ["<CAPTION>"])["pixel_values"]
            assert got.shape == expected.shape == (1, 3, 768, 768)
            diff = (got - expected).abs()
            worst = max(worst, diff.max().item())
            means.append(diff.mean().item())
            assert diff.max().item() <= MAX_ABS_DIFF + 1e-5, (width, height, kind)
            assert diff.mean().item() <= MEAN_ABS_DIFF, (width, height, kind)
    assert worst > 0  # the comparison sees the filters' rounding: it is not comparing a tensor with itself
    assert np.mean(means) < MEAN_ABS_DIFF / 4


def test_a_batch_of_mixed_sizes_equals_the_images_one_by_one(processor):
    device = DevicePreprocessor(processor, "cpu", torch.float32)
    images = [_image(320, 240, "noise", 1), _image(100, 700, "smooth"), _image(320, 240, "noise", 2)]
    batch = device(images, ["<CAPTION>"] * 3)["pixel_values"]
    for i, image in enumerate(images):
        assert torch.equal(batch[i], device([image], ["<CAPTION>"])["pixel_values"][0])


def test_transparency_and_grey_images_are_converted_as_the_processor_does(processor, reference):
    rgba = np.random.default_rng(3).integers(0, 256, (120, 90, 4), dtype=np.uint8)
    grey = np.random.default_rng(4).integers(0, 256, (50, 80), dtype=np.uint8)
    device = DevicePreprocessor(processor, "cpu", torch.float32)
    for image in (Image.fromarray(rgba, "RGBA"), Image.fromarray(grey, "L")):
        expected = reference(images=[image], return_tensors="pt")["pixel_values"]
        got = device([image], ["<OD>"])["pixel_values"]
        assert (got - expected).abs().max().item() <= MAX_ABS_DIFF + 1e-5


def test_tokens_are_the_processors_for_every_task_in_a_padded_batch(processor):
    host = HostPreprocessor(processor, "cpu", torch.float32)
    device = make_preprocessor("device", processor, "cpu", torch.bfloat16)
    sample = synthetic_smoke(1)[0]
    texts = [t.text_for(sample) for t in TASKS.values()]  # with their text and region inputs
    images = [_image(64, 48, "smooth")] * len(texts)
    expected, got = host(images, texts), device(images, texts)
    assert (expected["attention_mask"] == 0).any()  # prompts of different lengths: padding is exercised
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert got["pixel_values"].dtype == torch.bfloat16 and expected["pixel_values"].dtype == torch.float32


def test_an_image_processor_it_cannot_reproduce_is_named(processor):
    assert device_unsupported_reason(processor) is None
    spec = PixelSpec.of(processor.image_processor)
    assert (spec.height, spec.width) == (768, 768) and spec.std == pytest.approx((0.229, 0.224, 0.225))

    class Cropping:
        do_resize, size, do_center_crop, resample = True, {"shortest_edge": 224}, True, 2
        do_rescale = do_normalize = True

    with pytest.raises(UnsupportedPreprocess, match="centre crop.*bicubic") as info:
        PixelSpec.of(Cropping())
    assert "size={'shortest_edge': 224}" in str(info.value)


def test_unknown_preprocess_name_is_a_usage_error(processor):
    from bench.core.errors import UsageError

    with pytest.raises(UsageError, match="unknown preprocess 'gpu'; accepted: host, device"):
        make_preprocessor("gpu", processor, "cpu", torch.float32)


def test_the_device_check_command_runs_and_reports_the_tolerance(capsys):
    from bench.backends.transformers import preprocess

    assert preprocess.main(["--device", "cpu", "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "within tolerance" in out and "preprocess=host" in out and "preprocess=device" in out
