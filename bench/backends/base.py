"""The small interface every backend (runtime) implements, and what they share.

A backend is what turns a checkpoint into something that runs generate(): PyTorch/transformers
(the default), or another runtime for some of the model's parts. The harness around it (scenarios,
trackers, records) is the same for all of them, so their figures are comparable cell by cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.backends.transformers.checkpoints import CheckpointRef, LoadedModel, LoadOptions
    from bench.backends.transformers.pipeline import GenerationSettings, Pipeline
    from bench.measure import Clock
    from bench.tasks import Task
    from bench.variants import Variant


class Backend:
    """One runtime. Subclasses set ``name``, ``axes`` and ``install_hint`` and implement ``prepare``.

    ``axes`` maps a cell field (``dtype``, ``quant``, ...) to the values this backend runs; a sweep
    accepts a value when one of its backends does, and makes a cell only where the cell's backend does.
    """

    name: str = ""
    axes: Mapping[str, tuple] = {}
    install_hint: str | None = None  # how to install what it needs, for the skipped record

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run at all here (its package is missing), or None."""
        return None

    def accepts(self, axis: str, value: object) -> bool:
        """Whether ``value`` of a cell axis is one this backend runs (booleans are not 1 or 0)."""
        accepted = self.axes.get(axis)
        return accepted is None or any(value == a and type(value) is type(a) for a in accepted)

    def unsupported_reason(self, cell: Any) -> str | None:
        """Why this backend cannot run ``cell`` on this machine (a ``skipped`` record), or None."""
        if reason := self.unavailable_reason():
            return reason
        for axis in self.axes:
            value = getattr(cell, axis, None)
            if value is not None and not self.accepts(axis, value):
                accepted = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in self.axes[axis])
                return f"backend {self.name} does not run {axis} {value!r}; accepted: {accepted}"
        return None

    def load_key(self, cell: Any) -> tuple:
        """What a loaded model depends on beyond ``Cell.group`` (cells whose keys differ load apart): a
        runtime that fixes its threads or streams when it compiles names them here."""
        return ()

    def load_dtype(self, cell: Any) -> str:
        """The dtype the PyTorch model is loaded in (a runtime that computes in its own precision: fp32)."""
        return cell.dtype

    def load(self, variant: Variant, ref: CheckpointRef, cell: Any, options: LoadOptions) -> LoadedModel:
        """The model ready to run ``cell``'s settings: the checkpoint through transformers (every backend
        starts from it), then ``prepare``. Whatever is converted or compiled counts as loading."""
        from bench.backends.transformers.checkpoints import load

        loaded = load(variant, ref, device=cell.device, dtype=self.load_dtype(cell), attn=cell.attn, options=options)
        self.prepare(loaded, cell)
        return loaded

    def prepare(self, loaded: LoadedModel, cell: Any) -> None:
        """Turn a freshly loaded PyTorch model into what runs ``cell`` (in place; notes in ``loaded.notes``)."""
        raise NotImplementedError

    def pipeline(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock, preprocess: str = "host", prefetch: bool = False) -> Pipeline:
        """What a scenario drives: ``run_batch``/``prepare``/``execute`` over ``loaded``."""
        from bench.backends.transformers.pipeline import Pipeline

        return Pipeline(loaded, task, generation, device=device, dtype=dtype, clock=clock, preprocess=preprocess,
                        prefetch=prefetch)

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        """What this backend adds to a record's ``extra["backend_info"]`` (versions, conversions)."""
        return {}
