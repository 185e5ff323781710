"""Backends: the runtime that runs the model. One small interface (``base.Backend``), a registry, one
package per backend (``<name>/backend.py``, its settings in ``<name>/config.py`` where it has any).

- ``transformers``: PyTorch eager through transformers, the default (``bench.backends.transformers``);
- ``openvino``: the vision tower and projector converted to OpenVINO IR, the text parts in PyTorch
  (``bench.backends.openvino``; optional extra ``openvino``).

To add one: a package with a ``Backend`` subclass (``name``, ``axes``, ``load``; ``pipeline`` when
generate() is not transformers') and an entry in ``BACKENDS``; ``--backends NAME`` then accepts it.
Nothing outside this package imports a transformers model class (tests/test_backends.py).
"""

from __future__ import annotations

import difflib

from bench.backends.base import Backend
from bench.backends.openvino.backend import OpenVINOBackend
from bench.backends.transformers.backend import TransformersBackend
from bench.errors import UsageError

DEFAULT_BACKEND = "transformers"
BACKENDS: dict[str, Backend] = {b.name: b for b in (TransformersBackend(), OpenVINOBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown backend {name!r}; {hint}available: {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "get_backend"]
