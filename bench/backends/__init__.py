"""Backends: the runtime that runs the model. One small interface and the types backends and scenarios share
(``base``: ``Backend``, ``LoadedModel``, ``BatchResult``, ``Pipeline``, ``STAGES``, ...), a registry
(``registry.BACKENDS``), one package per backend (``<name>/backend.py``, its settings in ``<name>/config.py``
where it has any).

- ``transformers``: PyTorch through transformers, the default (``bench.backends.transformers``; it also
  holds what the runtimes that start from a transformers model share: ``CheckpointBackend``, loading
  checkpoints, the timed pipeline, preprocessing and the speed settings);
- ``openvino``: the vision tower, projector, text encoder and decoder (with its KV cache) as OpenVINO IR,
  the lm_head in PyTorch (``bench.backends.openvino``; optional extra ``openvino``).

To add one: a package with a ``Backend`` subclass (``name``, ``axes``, ``stages``, ``resolve``/``load``/
``pipeline``; or a ``CheckpointBackend`` with ``prepare``) and an entry in ``registry.BACKENDS``; ``--backends
NAME`` then accepts it (tests/fake_backend is one with its own engine). Nothing outside this package imports
a transformers model class (tests/test_backends.py).
"""
