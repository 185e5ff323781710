"""Report: the run's page, its rows, charts and tables, the answer and its question, prices, uncertainty and the terminal summary."""
