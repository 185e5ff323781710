"""PyTorch through transformers: the default backend (loading, speed settings, the timed pipeline)."""
