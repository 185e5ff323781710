"""How a batch of images and prompts becomes model inputs: pixels on the host or on the device.

Two ways, a sweep axis (``preprocess``), registered in ``PREPROCESSORS``:

- ``host``: the checkpoint's own processor on the CPU (the CLIP image processor resizes, rescales and
  normalises; the tokenizer builds the prompt), then a copy of the float pixel values to the device.
  This is what the model card does.
- ``device``: the host only decodes each image to a uint8 tensor (a quarter of the bytes of float
  pixels) and copies it; resize, rescale and normalise run on the cell's device with plain torch ops
  (no torchvision, so the same code runs on ``cpu``). The resize reproduces what the CLIP processor
  does with PIL: an antialiased bicubic filter applied as two separable passes, horizontal then
  vertical, each rounded to uint8 (torch's ``bicubic`` with ``antialias=True`` uses PIL's kernel).
  Against the reference processor, on images from 33x47 to 2000x300 (down- and up-scaling, smooth and
  noise content): at most 2 grey levels apart, i.e. ``MAX_ABS_DIFF`` after normalisation, with a mean
  absolute difference below ``MEAN_ABS_DIFF`` on every image (tests/test_preprocess.py measures both on
  the CPU: worst image 0.0009; on an H200, ``python -m bench.backends.transformers.preprocess --device cuda``: max 2 grey
  levels, worst image 0.0016, mean over 14 images 0.00013: CUDA's kernels round slightly differently). Single-pass
  float resizing, for comparison, was up to 28 grey levels off. Tokens come from the processor itself:
  each distinct prompt is tokenised once (with a 1x1 placeholder image) and cached.

Copies to a CUDA device come from pinned host memory and are non-blocking; the caller orders them
(``Pipeline.prepare`` synchronises its stream before handing the batch over).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core.errors import choice_error

# Device pixels vs the reference CLIP processor (measured, see the module docstring): 2 grey levels
# divided by the smallest ImageNet std (0.224) and 255, and the mean over every pixel and channel.
MAX_ABS_DIFF = 2 / 255 / 0.224
MEAN_ABS_DIFF = 2e-3  # per image; measured worst: 0.0009 on the CPU, 0.0016 on an H200
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the CLIP processor's resample


class UnsupportedPreprocess(ValueError):
    """The checkpoint's image processor does something the device path does not reproduce."""


@dataclass(frozen=True)
class PixelSpec:
    """What the image processor does to every image: resize to (height, width), rescale, normalise."""

    height: int
    width: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, image_processor: Any) -> PixelSpec:
        """Read the spec from a CLIP-style image processor; UnsupportedPreprocess names what differs."""
        ip = image_processor
        size = dict(getattr(ip, "size", None) or {})
        problems = []
        if not getattr(ip, "do_resize", False) or not {"height", "width"} <= size.keys():
            problems.append(f"resize to a fixed height x width (size={size})")
        if getattr(ip, "do_center_crop", False):
            problems.append("no centre crop")
        resample = getattr(ip, "resample", None)
        if not (resample == BICUBIC or "BICUBIC" in str(resample).upper()):
            problems.append(f"bicubic resampling (resample={resample!r})")
        if not getattr(ip, "do_rescale", False) or not getattr(ip, "do_normalize", False):
            problems.append("rescale and normalise")
        if problems:
            raise UnsupportedPreprocess(
                f"{type(ip).__name__} differs from what device preprocessing reproduces: needs {', '.join(problems)}"
            )
        mean, std = tuple(ip.image_mean), tuple(ip.image_std)
        return cls(int(size["height"]), int(size["width"]), float(ip.rescale_factor), mean, std)


def device_unsupported_reason(processor: Any) -> str | None:
    """Why this processor's pixels cannot be reproduced on the device (a ``skipped`` cell), or None."""
    try:
        PixelSpec.of(processor.image_processor)
    except UnsupportedPreprocess as exc:
        return str(exc)
    return None


def rgb_array(image: Any) -> np.ndarray:
    """HWC uint8 RGB, as the processor's ``do_convert_rgb`` makes it (transparency onto white)."""
    from PIL import Image

    if image.mode != "RGB":
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def to_device(tensor: Any, device: str) -> Any:
    """Copy to ``device``: from pinned memory and non-blocking when the device is a GPU."""
    import torch

    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _pil_bicubic(x: Any, height: int, width: int) -> Any:
    """PIL's antialiased bicubic resize of (N, C, H, W) values in 0..255: horizontal pass, round to
    uint8, vertical pass, round to uint8 (a pass is skipped where the size already matches, as in PIL)."""
    import torch.nn.functional as F

    if x.shape[-1] != width:
        x = F.interpolate(x, size=(x.shape[-2], width), mode="bicubic", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255)
    if x.shape[-2] != height:
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255)
    return x


def device_pixels(arrays: list[Any], spec: PixelSpec, dtype: Any, mean: Any, std: Any) -> Any:
    """(N, 3, H, W) pixel values from HWC uint8 tensors already on the device; images of one size are
    resized together. ``mean`` and ``std``: ``spec``'s, as (1, 3, 1, 1) float32 tensors on that device."""
    import torch

    device = arrays[0].device
    out = torch.empty((len(arrays), 3, spec.height, spec.width), dtype=torch.float32, device=device)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(tuple(a.shape), []).append(i)
    for indices in by_shape.values():
        x = torch.stack([arrays[i] for i in indices]).permute(0, 3, 1, 2).float()
        out[indices] = _pil_bicubic(x, spec.height, spec.width)
    return ((out * spec.rescale - mean) / std).to(dtype)


def pad_rows(rows: list[Any], pad_id: int, left: bool) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` of 1-D token rows padded to the longest with ``pad_id``, on the
    left or on the right, as the processor pads: ids in the rows' dtype, the mask int64 (1 on each row's
    tokens, 0 on its padding), both on the rows' device."""
    import torch

    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=rows[0].dtype, device=rows[0].device)
    mask = torch.zeros((len(rows), longest), dtype=torch.long, device=ids.device)
    for i, row in enumerate(rows):
        span = slice(longest - len(row), longest) if left else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


class TokenCache:
    """The processor's own input ids for each distinct prompt, computed once, padded per batch."""

    def __init__(self, processor: Any) -> None:
        from PIL import Image

        self.processor = processor
        self._placeholder = Image.new("RGB", (1, 1))
        self._ids: dict[str, list[int]] = {}
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def ids(self, text: str) -> list[int]:
        if text not in self._ids:
            encoded = self.processor(images=[self._placeholder], text=[text], return_tensors="np")
            self._ids[text] = [int(t) for t in encoded["input_ids"][0]]
        return self._ids[text]

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` (CPU int64), padded to the longest, as the processor pads."""
        import torch

        return pad_rows([torch.tensor(self.ids(t), dtype=torch.long) for t in texts], self.pad_id, self.left)


class HostPreprocessor:
    """The checkpoint's processor on the CPU, then one copy of every tensor to the device."""

    name = "host"

    def __init__(self, processor: Any, device: str, dtype: Any) -> None:
        self.processor, self.device, self.dtype = processor, device, dtype

    def __call__(self, images: list[Any], texts: list[str]) -> dict[str, Any]:
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding="longest")
        out = {k: to_device(v, self.device) for k, v in inputs.items()}
        out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out


class DevicePreprocessor:
    """uint8 images copied to the device, resized and normalised there; tokens from the cache."""

    name = "device"

    def __init__(self, processor: Any, device: str, dtype: Any) -> None:
        import torch

        self.spec = PixelSpec.of(processor.image_processor)
        self.tokens = TokenCache(processor)
        self.device, self.dtype = device, dtype
        # on the device once (a blocking copy: ready for any stream), not at every batch
        self.mean = torch.tensor(self.spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.spec.std, device=device).view(1, 3, 1, 1)

    def __call__(self, images: list[Any], texts: list[str]) -> dict[str, Any]:
        import torch

        out = {k: to_device(v, self.device) for k, v in self.tokens(texts).items()}
        arrays = [to_device(torch.from_numpy(rgb_array(im)), self.device) for im in images]
        out["pixel_values"] = device_pixels(arrays, self.spec, self.dtype, self.mean, self.std)
        return out


PREPROCESSORS: dict[str, Callable[[Any, str, Any], Any]] = {
    "host": HostPreprocessor,
    "device": DevicePreprocessor,
}


def make_preprocessor(name: str, processor: Any, device: str, dtype: Any):
    """The preprocessor registered as ``name`` for this processor, device and pixel dtype."""
    if name not in PREPROCESSORS:
        raise choice_error("preprocess", name, tuple(PREPROCESSORS))
    return PREPROCESSORS[name](processor, device, dtype)


# ------------------------------------------------------------------------- checking it on a device

CHECK_SIZES = ((640, 480), (320, 240), (1920, 1080), (100, 700), (2000, 300), (33, 47), (1024, 1024))


def check_images(seed: int = 0) -> list[Any]:
    """Smooth and noise images of every CHECK_SIZES size (noise is a resampling filter's worst case)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for width, height in CHECK_SIZES:
        yy, xx = np.mgrid[0:height, 0:width]
        smooth = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 64 * 4], -1)
        images.append(Image.fromarray(smooth.astype(np.uint8)))
        images.append(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    return images


def reference_image_processor(processor: Any) -> Any:
    """The PIL-backed CLIP processor with this processor's settings (with torchvision installed,
    transformers otherwise picks its torchvision backend)."""
    ip = processor.image_processor
    if type(ip).__name__.endswith("Pil"):
        return ip
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(do_resize=True, size=dict(ip.size), resample=BICUBIC, do_center_crop=False,
                                 do_rescale=True, rescale_factor=ip.rescale_factor, do_normalize=True,
                                 image_mean=list(ip.image_mean), image_std=list(ip.image_std), do_convert_rgb=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.backends.transformers.preprocess --device cuda``: device pixels against the reference, and the time
    per image of both ways on a batch of 640x480 images."""
    import argparse
    import time

    import torch

    from bench.backends.transformers.checkpoints import build_processor
    from bench.core.measure import clock_for

    p = argparse.ArgumentParser(prog="python -m bench.backends.transformers.preprocess", description=main.__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=32, help="batch timed for each way (default 32)")
    args = p.parse_args(argv)
    processor = build_processor()
    reference = reference_image_processor(processor)
    device = DevicePreprocessor(processor, args.device, torch.float32)
    worst, means = 0.0, []
    for image in check_images():
        expected = reference(images=[image], return_tensors="pt")["pixel_values"]
        diff = (device([image], ["<CAPTION>"])["pixel_values"].cpu() - expected).abs()
        worst, means = max(worst, diff.max().item()), means + [diff.mean().item()]
    ok = worst <= MAX_ABS_DIFF + 1e-5 and max(means) <= MEAN_ABS_DIFF
    print(f"device pixels on {args.device} vs {type(reference).__name__}: max |diff| {worst:.4f} (tolerance "
          f"{MAX_ABS_DIFF:.4f}), mean |diff| {float(np.mean(means)):.6f} (worst image {max(means):.6f}, tolerance "
          f"{MEAN_ABS_DIFF}) over {len(means)} images: {'within tolerance' if ok else 'OUT OF TOLERANCE'}")
    batch = [check_images(1)[1].resize((640, 480))] * args.images
    clock = clock_for(args.device)
    for name in PREPROCESSORS:
        pre = make_preprocessor(name, processor, args.device, torch.float16 if args.device != "cpu" else torch.float32)
        pre(batch[:2], ["<CAPTION>"] * 2)  # warm-up
        start = time.perf_counter()
        pre(batch, ["<CAPTION>"] * len(batch))
        clock.sync()
        ms = (time.perf_counter() - start) * 1000 / len(batch)
        print(f"preprocess={name} ({type(processor.image_processor).__name__ if name == 'host' else 'torch ops'}): "
              f"{ms:.2f} ms per image ({len(batch)} images of 640x480, to {args.device})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
