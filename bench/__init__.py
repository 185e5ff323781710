"""florence2-bench: benchmark Florence-2 models honestly (accuracy, speed, memory, energy)."""

__version__ = "0.1.0"
