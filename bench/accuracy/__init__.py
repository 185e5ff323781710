"""Accuracy: the task registry, metrics and scorings, datasets and their fetching."""
