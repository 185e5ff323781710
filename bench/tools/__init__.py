"""Tools beside the run's flow, each run as ``python -m bench.tools.NAME``.

- ``perf``: the model-card snippet against the harness's best settings (``perf.json``); its parts: ``perf_settings``
  (candidates and their keys), ``perf_runners`` (one batch), ``perf_measure`` (the rounds), ``perf_report`` (the verdict);
- ``gpucheck``: a budgeted GPU run whose measurements must come back plausible;
- ``targets``: the GPU targets, each measured, met or not, from a run directory (``targets.json``);
- ``scale``: report, compare, export and history timed on synthetic sweeps of 1k to 43k cells (``scale.json``).
"""
