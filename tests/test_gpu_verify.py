"""scripts/gpu-verify.sh runs once, on a lent GPU machine, with no second chance: its dry run on this
CPU (tiny checkpoint) must go through every step and leave the files the integrator collects.

~40 s: one Python start per step; worth it, since a typo in the script would cost the GPU session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_dry_run_goes_through_every_step(tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_VERIFY_DRY_RUN": "1", "GPU_VERIFY_RUN": str(run),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-verify.sh"), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=7200)  # a hang guard, not a speed bound
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = dict(line.split()[:2] for line in (out / "steps.txt").read_text().splitlines())
    # the check exits 1 on a CPU (no CUDA memory or NVML energy: implausible as GPU figures); perf 4: one
    # round and no A/A control cannot judge the CPU target; the rest 0
    assert steps == {"env": "0", "pixels": "0", "check": "1", "perf": "4", "targets": "0", "server": "0"}
    log = (out / "gpu-verify.log").read_text()
    assert "Traceback" not in log
    assert "within tolerance" in log and "dry run on cpu" in log
    files = sorted(p.name for p in out.iterdir())
    assert files == ["env.json", "gpu-verify.log", "perf.json", "results.jsonl", "run.tar.gz", "server-results.jsonl",
                     "steps.txt", "targets.json"]  # at most 8 files come back from the GPU machine
    with tarfile.open(out / "run.tar.gz") as tar:
        names = tar.getnames()
    assert {"run/results.jsonl", "run/env.json", "run/perf.json", "run/targets.json", "run/report.html"} <= set(names)
    targets = json.loads((out / "targets.json").read_text())["targets"]
    assert len(targets) == 5 and {t["verdict"] for t in targets} == {"not measured"}  # CPU figures meet nothing
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert any(r["status"] == "ok" and r["settings"]["prefetch"] for r in records)
    assert any(r["status"] == "skipped" and r["compile"] == "graphs" for r in records)
    perf = json.loads((out / "perf.json").read_text())
    assert perf["measured"] == 1 and perf["settings"][1]["skipped"] == "unsupported"
    assert perf["judgement"]["verdict"] == "not judged" and perf["host_load"]["rounds"]
    [server] = [json.loads(line) for line in (out / "server-results.jsonl").read_text().splitlines()]
    assert server["status"] == "ok" and server["scenario"] == "server" and server["server"]["n_requests"] >= 64
