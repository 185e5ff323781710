"""Short trace labels for charts, so that a legend or a bar's label never squeezes the plot.

A cell's full setting names every axis that varies in a report ("gpu-nvidia-h200-graphs base cuda fp16
bs128 cuda-graphs max_new=20 offline cache=static compile_vision=True prefetch=True preprocess=device");
as a legend entry it leaves a plot 70 px wide. A trace label here is at most ``MAX_LABEL`` characters:
the run's short name and only the settings that tell the plotted cells apart, the most telling first
(``PRIORITY``); the page's key table maps each label back to the full setting.

How a label is made (``short_labels``), for a set of keys each described by its (axis, text) parts:

1. parts whose text is the same for every key are dropped (they tell nothing apart);
2. while a label is longer than ``MAX_LABEL``, its least telling part is dropped, provided the
   remaining parts still tell the key apart from every other key (runs are shortened first: the
   shortest tail of a run name's words that is unique among the runs);
3. a label still too long is cut and ends with "…#n", n its row in the key table; two keys whose
   labels would coincide are told apart the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

MAX_LABEL = 40
MAX_RUN_NAME = 12
PRIORITY = (
    "task", "run", "machine", "variant", "dtype", "batch_size", "compile", "max_new_tokens", "num_beams",
    "scenario", "device", "attn", "weights", "dataset",
)
"""Axes from the most telling to the least; an axis not listed (a ``settings`` entry) comes after."""
# shorter spellings of the long settings keys, for labels only (the key table keeps the full text)
ABBREVIATIONS = {
    "compile_vision=": "cvis=", "preprocess=": "pre=", "prefetch=": "pf=", "max_new=": "new=",
    "channels_last=": "cl=", "=True": "=on", "=False": "=off", "single-stream": "single",
}

Parts = Sequence[tuple[str, str]]


def run_short_names(names: Iterable[str]) -> dict[str, str]:
    """Each run name shortened to at most ``MAX_RUN_NAME`` characters where it can be: its leading words
    (split at "-", "_", ".") are dropped while the rest stays unique among the runs ("gpu-nvidia-h200"
    beside "gpu-nvidia-h200-graphs": "nvidia-h200" and "h200-graphs")."""
    names = list(dict.fromkeys(names))
    short = {}
    for name in names:
        cut = name
        words = _words(name)
        for start in range(1, len(words)):
            if len(cut) <= MAX_RUN_NAME:
                break
            tail = name[words[start][0]:]
            if sum(1 for other in names if other != name and _ends_with_words(other, tail)) == 0:
                cut = tail
        short[name] = cut
    taken = Counter(short.values())
    return {name: cut if taken[cut] == 1 else name for name, cut in short.items()}


def _words(name: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for i, ch in enumerate(name + "-"):
        if ch in "-_.":
            if i > start:
                spans.append((start, i))
            start = i + 1
    return spans


def _ends_with_words(name: str, tail: str) -> bool:
    return name == tail or name.endswith(("-" + tail, "_" + tail, "." + tail))


def _rank(axis: str) -> int:
    return PRIORITY.index(axis) if axis in PRIORITY else len(PRIORITY)


def _abbreviate(text: str) -> str:
    for long, short in ABBREVIATIONS.items():
        text = text.replace(long, short)
    return text


def short_labels(parts: dict[Hashable, Parts], limit: int = MAX_LABEL) -> dict[Hashable, str]:
    """A label of at most ``limit`` characters per key, unique among the keys (see the module's rules)."""
    keys = list(parts)
    if not keys:
        return {}
    runs = run_short_names(text for k in keys for axis, text in parts[k] if axis == "run")
    axes = list(dict.fromkeys(axis for k in keys for axis, _ in parts[k]))
    values = {k: dict(parts[k]) for k in keys}
    telling = [a for a in axes if len({values[k].get(a) for k in keys}) > 1]
    shown: dict[Hashable, list[str]] = {k: [a for a in telling if a in values[k]] for k in keys}

    def text(k: Hashable, axis: str) -> str:
        value = values[k][axis]
        return runs.get(value, value) if axis == "run" else _abbreviate(value)

    def label(k: Hashable) -> str:
        return " ".join(text(k, a) for a in shown[k])

    projections: dict[tuple[str, ...], Counter] = {}

    def tells_apart(k: Hashable, kept: list[str]) -> bool:
        # unique when no other key projects onto the same values: each projection is counted once, over
        # all keys, and reused by every key that asks about the same axes (linear, not key by key)
        axes_kept = tuple(kept)
        if axes_kept not in projections:
            projections[axes_kept] = Counter(tuple(values[o].get(a) for a in axes_kept) for o in keys)
        return projections[axes_kept][tuple(values[k][a] for a in axes_kept)] == 1

    for k in keys:
        for axis in sorted(shown[k], key=_rank, reverse=True):
            if len(label(k)) <= limit:
                break
            kept = [a for a in shown[k] if a != axis]
            if kept and tells_apart(k, kept):
                shown[k] = kept
    out = {k: label(k) or "all cells" for k in keys}
    counted = Counter(out.values())
    for n, k in enumerate(keys, 1):
        if len(out[k]) > limit or counted[out[k]] > 1:
            tag = f"…#{n}"
            out[k] = out[k][: limit - len(tag)].rstrip() + tag
    return out


@dataclass
class Key:
    """One row of a page's key table: a trace label and the full setting it stands for."""

    label: str  # the cell's label (a bar, a box)
    full: str  # the full setting, with the task
    color: str = ""
    series: str = ""  # the label of its series (a line, a legend entry)
