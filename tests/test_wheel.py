"""An install that is not a checkout: build the wheel from a clean copy of the tree, install it into a
fresh venv outside the checkout, and run the commands from elsewhere. Nothing is downloaded: the
wheel goes in with --no-deps and the test interpreter's packages are made visible through a .pth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LEFTOVERS = shutil.ignore_patterns(".git", ".nox", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                         "runs", "test-artifacts", ".pytest_cache", ".ruff_cache")


def _clean_copy(dest: Path) -> Path:
    """What a fresh clone holds: the files git knows (links kept as links), or the tree minus build output."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=False)
    if listed.returncode != 0:
        shutil.copytree(ROOT, dest, symlinks=True, ignore=BUILD_LEFTOVERS)
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        src, dst = ROOT / name, dest / name
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's console script, an environment for it) with the wheel built from a clean copy."""
    tmp = tmp_path_factory.mktemp("wheel")
    # no PYTHONPATH: a checkout on it (its egg-info) would make pip think the wheel is already installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLORENCE2_BENCH_MANIFESTS", "VIRTUAL_ENV")}
    source = _clean_copy(tmp / "source")
    # the interpreter's own setuptools when it has one (no download); else pip's isolated build fetches it
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp / "dist"),
                    *isolation], check=True, cwd=tmp, env=env)
    [wheel] = (tmp / "dist").glob("florence2_bench-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, cwd=tmp, env=env)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")  # after the venv's own
    env["OMP_NUM_THREADS"] = "1"
    return env_dir, env, tmp / "elsewhere"


def _has_setuptools() -> bool:
    return subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True).returncode == 0


def _run(installed, *args: str) -> subprocess.CompletedProcess:
    env_dir, env, cwd = installed
    cwd.mkdir(exist_ok=True)
    return subprocess.run([str(env_dir / "bin" / "florence2-bench"), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_not_the_checkout(installed):
    env_dir, env, cwd = installed
    cwd.mkdir(exist_ok=True)
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import bench; print(bench.__file__)"],
                           capture_output=True, text=True, env=env, cwd=cwd, check=True).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    done = _run(installed, "variants")
    assert done.returncode == 0, done.stderr
    assert "base" in done.stdout and "large" in done.stdout


@pytest.mark.slow
def test_the_wheel_lists_every_shipped_dataset(installed):
    done = _run(installed, "datasets", "list")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    shipped = {p.stem for p in (ROOT / "bench" / "datasets_manifest").glob("*.toml")}
    assert shipped and listed == shipped


@pytest.mark.slow
def test_the_wheel_runs_a_shipped_sweep_on_the_tiny_checkpoint(installed, tiny_checkpoint):
    out = installed[2] / "run"
    done = _run(installed, "run", "--sweep", "smoke", "--model-path", str(tiny_checkpoint), "--variants", "base",
                "--tasks", "caption", "--limit", "1", "--max-new-tokens", "2", "--num-beams", "1",
                "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["latency_ms"]["n"] >= 1
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
