"""The backend registry (apart from the package's ``__init__``, so that importing one backend's module,
e.g. ``bench.backends.transformers.checkpoints``, does not import every backend)."""

from __future__ import annotations

import difflib

from bench.backends.base import Backend
from bench.backends.openvino.backend import OpenVINOBackend
from bench.backends.transformers.backend import TransformersBackend
from bench.core.errors import UsageError

DEFAULT_BACKEND = "transformers"
BACKENDS: dict[str, Backend] = {b.name: b for b in (TransformersBackend(), OpenVINOBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown backend {name!r}; {hint}available: {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "get_backend"]
