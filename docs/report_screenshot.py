"""Regenerate docs/report-screenshot.png: the top of a real report (header, answer, decision), rendered
by headless Chromium (Debian package ``chromium``; no network is used); with ``--section ID``, the part
of the page from that section on (docs/report-charts-1400.png: ``--section chart-key``).

    python docs/report_screenshot.py RUN_DIR [RUN_DIR ...] [--out docs/report-screenshot.png]
        [--height 2200] [--section ID] [-- REPORT_ARGS ...]

Everything after ``--`` goes to ``florence2-bench report`` (e.g. ``--latency-bound-ms 500 --demand-qps 20``).
The committed screenshot was made with the command in README's "How to read the report".
"""

from __future__ import annotations

import argparse
import json
import re
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
    parser.add_argument("--height", type=int, default=2200, help="pixels from the top of the page (or section)")
    parser.add_argument("--section", help="start at the section with this id instead of the top")
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
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000",
                 f"--user-data-dir={Path(tmp) / 'profile'}"]
        top = _section_top(flags, page, args.section) if args.section else 0
        subprocess.run(
            [*flags, f"--window-size={WIDTH},{top + args.height}", f"--screenshot={shot}", page.as_uri()],
            check=True, capture_output=True, timeout=300,
        )
        from PIL import Image

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:
            # a palette PNG keeps the file small enough to commit
            image = image.crop((0, top, image.width, image.height))
            image.convert("RGB").quantize(colors=128).save(out, optimize=True)
    print(f"screenshot: {out}")
    return 0


def _section_top(flags: list[str], page: Path, section: str) -> int:
    """The section's distance from the top of the laid-out page, in pixels (read from the settled DOM)."""
    probe = page.with_name("probe.html")
    script = (f"<script>window.addEventListener('load', function () {{ setTimeout(function () {{"
              f"var s = document.getElementById({json.dumps(section)}); var p = document.createElement('pre');"
              f"p.id = 'section-top'; p.textContent = s ? Math.round(s.getBoundingClientRect().top + window.scrollY) : -1;"
              f"document.body.appendChild(p); }}, 300); }});</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run([*flags, f"--window-size={WIDTH},2000", "--dump-dom", probe.as_uri()],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    found = re.search(r'<pre id="section-top">(-?\d+)</pre>', dom)
    if not found or int(found.group(1)) < 0:
        raise SystemExit(f"report_screenshot: no section with id {section!r} in the report")
    return int(found.group(1))


if __name__ == "__main__":
    raise SystemExit(main())
