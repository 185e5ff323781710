"""Core: errors, numbers, the file door, input bounds, process edges, the host, statistics and trackers; imports nothing else of bench."""
