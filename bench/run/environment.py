"""The environment fingerprint written to env.json, and the differences that make two runs incomparable.

Each probe is independent and may fail (no GPU driver, not a git checkout, a container hiding
/proc): a failed probe's section becomes None and ``errors[section]`` says why, so ``fingerprint``
never raises. It does no GPU work and creates no CUDA context (GPU facts come from NVML).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.core import host

LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "nvidia-ml-py", "psutil")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "CUDA_VISIBLE_DEVICES")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _cpu() -> dict[str, Any]:
    import psutil

    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": model or platform.processor() or None,
        "arch": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,  # what this process may run on (containers, taskset)
        "ram_bytes": psutil.virtual_memory().total,
    }


def _os() -> dict[str, Any]:
    return {"system": platform.system(), "kernel": platform.release(), "platform": platform.platform()}


def _python() -> dict[str, Any]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation()}


def _libraries() -> dict[str, Any]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _torch() -> dict[str, Any]:
    import torch

    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }


def _gpu() -> dict[str, Any]:
    import pynvml

    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "power_limit_w": _optional(
                        lambda h=handle: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
                    ),
                    "sm_clock_mhz": _optional(
                        lambda h=handle: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
                    ),
                    "mem_clock_mhz": _optional(
                        lambda h=handle: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
                    ),
                    "max_sm_clock_mhz": _optional(
                        lambda h=handle: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
                    ),
                }
            )
        return {
            "driver_version": _text(pynvml.nvmlSystemGetDriverVersion()),
            "names": [gpu["name"] for gpu in gpus],
            "devices": gpus,
        }
    finally:
        pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(fn: Callable[[], Any]) -> Any:
    """A reading some GPUs do not support (power limit, clocks on some virtualised GPUs)."""
    try:
        return fn()
    except Exception:  # pynvml.NVMLError_NotSupported and friends
        return None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=5, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[0] if done.stderr.strip() else "git failed")
        return done.stdout.strip()

    git("rev-parse", "--is-inside-work-tree")
    commit, reason = None, None
    try:
        commit = git("rev-parse", "HEAD")
    except RuntimeError as exc:  # a repository without commits yet
        reason = f"no commit: {exc}"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty, "reason": reason}


PROBES: dict[str, Callable[[], Any]] = {
    "cpu": _cpu,
    "os": _os,
    "python": _python,
    "libraries": _libraries,
    "torch": _torch,
    "gpu": _gpu,
    "git": _git,
    "env_vars": lambda: {name: os.environ.get(name) for name in THREAD_ENV_VARS},
    "hostname": socket.gethostname,
    "cpu_governor": lambda: host.governor(),  # {"governor": name or None, "reason": why not readable}
}


def fingerprint() -> dict[str, Any]:
    """Everything that makes a measurement machine-specific; JSON-serialisable, never raises."""
    env: dict[str, Any] = {"timestamp_utc": datetime.now(timezone.utc).isoformat(), "errors": {}}
    for section, probe in PROBES.items():
        try:
            env[section] = probe()
        except Exception as exc:  # a probe must never take the run down (ImportError, NVMLError, OSError...)
            env[section] = None
            env["errors"][section] = f"{type(exc).__name__}: {exc}"
    return env


# (label, path) of the facts that make two runs' timings incomparable when they differ
COMPARED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CPU model", ("cpu", "model")),
    ("CPU cores usable", ("cpu", "usable_cores")),
    ("GPU", ("gpu", "names")),
    ("NVIDIA driver", ("gpu", "driver_version")),
    ("torch", ("torch", "version")),
    ("transformers", ("libraries", "transformers")),
    ("tokenizers", ("libraries", "tokenizers")),
    ("CUDA (torch build)", ("torch", "cuda")),
    ("cuDNN", ("torch", "cudnn")),
    ("torch threads", ("torch", "num_threads")),
)


def _get(env: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(env, dict):
            return None
        env = env.get(key)
    return env


def differences(env_a: dict[str, Any], env_b: dict[str, Any]) -> list[str]:
    """Warnings (baseline = a, current = b) where the machines or software differ."""
    missing = [name for name, env in (("baseline", env_a), ("current", env_b)) if not env]
    if missing:
        return [f"no environment fingerprint for the {' and '.join(missing)} run: cannot check it matches"]
    warnings = []
    for label, path in COMPARED:
        a, b = _get(env_a, path), _get(env_b, path)
        if a != b:
            warnings.append(f"{label} differs: {a!r} (baseline) vs {b!r} (current)")
    return warnings
