"""A third backend for the tests: a runtime with its own engine (numpy, no transformers model) that times
three of the six stages. It proves the seam: its package plus one ``BACKENDS`` entry runs a whole sweep."""
