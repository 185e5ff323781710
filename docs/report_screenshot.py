"""Regenerate docs/report-screenshot.png: the top of a real report (header, answer, decision), rendered
by headless Chromium (Debian package ``chromium``; no network is used).

    python docs/report_screenshot.py RUN_DIR [RUN_DIR ...] [--out docs/report-screenshot.png]
        [--height 2200] [-- REPORT_ARGS ...]

Everything after ``--`` goes to ``florence2-bench report`` (e.g. ``--latency-bound-ms 500 --demand-qps 20``).
The committed screenshot was made with the command in README's "How to read the report".
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1400


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default=str(ROOT / "docs" / "report-screenshot.png"))
    parser.add_argument("--height", type=int, default=2200, help="pixels from the top of the page")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("report_screenshot: headless Chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        subprocess.run(
            [sys.executable, "-m", "bench", "report", *args.run_dirs, "-o", str(page), *extra], check=True, cwd=ROOT
        )
        shot = Path(tmp) / "shot.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000",
             f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={WIDTH},{args.height}",
             f"--screenshot={shot}", page.as_uri()],
            check=True, capture_output=True, timeout=300,
        )
        from PIL import Image

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:
            # a palette PNG keeps the file small enough to commit
            image.convert("RGB").quantize(colors=128).save(out, optimize=True)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
