"""The chart library and the page's own script ship inside the wheel: an installed fpmon (not
this source tree) finds them and writes a report with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS = (
    "uPlot.iife.min.js",
    "uPlot.min.css",
    "uPlot.LICENSE",
    "README.md",
    "report.js",
    "report.css",
)
FIND = (
    "import fp_monitor, json; from fp_monitor.output.html_report import asset;"
    "print(json.dumps([fp_monitor.__file__, [len(asset(n)) for n in {names!r}]]))"
)


def test_the_wheel_carries_the_assets_and_the_installed_package_finds_them(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("fpmon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fp_monitor/output/assets/{name}" for name in ASSETS} <= names

    site = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    found = subprocess.run(
        [sys.executable, "-c", FIND.format(names=ASSETS)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    where, sizes = json.loads(found.stdout)
    assert Path(where).is_relative_to(site)  # the installed copy, not the source tree
    assert all(size > 100 for size in sizes), sizes
