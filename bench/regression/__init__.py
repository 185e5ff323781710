"""Regression: compare two runs, and the history of runs."""
