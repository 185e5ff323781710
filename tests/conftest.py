"""Shared fixtures: one tiny Florence-2 checkpoint per test session, written by the project itself."""

from __future__ import annotations

import os

# One torch thread: the 2-core CI machine is shared, and two threads per process oversubscribe it
# (measured: the same sweep 5x slower). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A complete tiny native checkpoint directory (config, safetensors, processor files)."""
    from bench.backends.transformers.checkpoints import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "florence2-tiny")


@pytest.fixture(scope="session")
def pretrained_tiny_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint without its random-weights marker: what a user's own checkpoint looks like (a run
    records it as pretrained and scores its answers)."""
    import shutil

    from bench.backends.transformers.checkpoints import MARKER

    copy = tmp_path_factory.mktemp("tiny-unmarked") / "florence2-tiny"
    shutil.copytree(tiny_checkpoint, copy, ignore=shutil.ignore_patterns(MARKER))
    return copy


@pytest.fixture(scope="session")
def tiny_loaded(tiny_checkpoint):
    """The tiny checkpoint loaded through the same code path as real checkpoints."""
    from bench.backends.base import LoadOptions
    from bench.backends.transformers.checkpoints import load, resolve
    from bench.core.variants import get_variant

    variant = get_variant("base")
    ref = resolve(variant, LoadOptions(model_path=str(tiny_checkpoint)))
    return load(variant, ref)
