"""Backends: the runtime that runs the model. One small interface (``base.Backend``), a registry
(``registry.BACKENDS``), one package per backend (``<name>/backend.py``, its settings in ``<name>/config.py``
where it has any).

- ``transformers``: PyTorch through transformers, the default (``bench.backends.transformers``; it also
  holds what every backend starts from: loading checkpoints, and the timed pipeline);
- ``openvino``: the vision tower, projector, text encoder and decoder (with its KV cache) as OpenVINO IR,
  the lm_head in PyTorch (``bench.backends.openvino``; optional extra ``openvino``).

To add one: a package with a ``Backend`` subclass (``name``, ``axes``, ``prepare``; ``pipeline`` when
generate() is not transformers') and an entry in ``registry.BACKENDS``; ``--backends NAME`` then accepts
it. Nothing outside this package imports a transformers model class (tests/test_backends.py).
"""
