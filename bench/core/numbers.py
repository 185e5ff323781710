"""Numbers read from stored JSON: a bool is not a number, and NaN or infinity is not a measurement.

One rule for every reader (records, settings, reports, history), so a hand-edited or hostile file is
judged the same wherever it is read.
"""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """An int or float, not a bool (NaN and infinity included: the caller says why they are wrong)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A number (not a bool) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def finite_number(value: Any) -> float | None:
    """The value as a float when it is a finite number, else None."""
    return float(value) if is_finite(value) else None
