"""`fpmon report` against its budgets, on a million-observation history.

The history is benchmarks/history_scale.py's (fpmon's own schema, rows made by its
`observation_row` and `chain_hash`, inserted with executemany): 50 targets checked hourly with
3 samples, rollouts every three weeks, flaps and failures; 1,000,000 observations are about
nine months. Then, with the installed command (median of `--repeat`, warm file cache):

    size        10 targets over 90 days, hourly checks              budget < 2 MB
    render      that page opened in Debian's headless Chromium       budget < 1 s
    generation  every target and record of the 1M history            budget < 3 s

Times are wall and CPU seconds: on a shared machine the CPU time is the steadier figure.
Generation is measured side by side (interleaved) with --no-verify (the report's own queries)
and with the chain walk (the default): the walk is `fpmon verify`'s, linear in the history
(every record is read and hashed, in two threads beside the report's queries); the difference
in CPU time is its cost. `fpmon verify` follows: the same walk, and the check rows, known values
and seals, which the report does not check. Render time is from navigation start to the first
frame after the charts were built (performance.now() in the page).

    python benchmarks/report.py [--rows 1000000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from history_scale import generate

FPMON = shutil.which("fpmon", path=str(Path(sys.executable).parent)) or "fpmon"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEN = [f"t{t:02d}" for t in range(10)]
# From navigation start to the first frame painted after report.js built the charts.
FIRST_FRAME = """() => new Promise(done => requestAnimationFrame(() =>
  done([window.fpmonReport.renderMs, performance.now()])))"""


def timed(args: list[str], repeat: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `fpmon ARGS`."""
    return interleaved([args], repeat)[0]


def interleaved(commands: list[list[str]], repeat: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) seconds of each `fpmon ARGS`, run in turn `repeat` times (so that a
    change in the machine's load falls on each alike). CPU time (user + system of the process,
    its threads included) is what a busy shared machine inflates least; wall time is what a
    user waits."""
    walls: list[list[float]] = [[] for _ in commands]
    cpus: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        for args, wall, cpu in zip(commands, walls, cpus, strict=True):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run([FPMON, *args], capture_output=True, text=True, check=False)
            wall.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                raise SystemExit(f"fpmon {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return [
        (statistics.median(wall), statistics.median(cpu))
        for wall, cpu in zip(walls, cpus, strict=True)
    ]


def render_times(page: Path, repeat: int) -> tuple[float, float]:
    """(charts built, first frame) in ms after navigation start, medians."""
    from playwright.sync_api import sync_playwright

    built, painted = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeat + 1):  # the first opening warms up, untimed
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda e, found=errors: found.append(str(e)))
            tab.goto(page.resolve().as_uri())
            tab.wait_for_function("window.fpmonReport !== undefined")
            charts, frame = tab.evaluate(FIRST_FRAME)
            if errors:
                raise SystemExit(f"{page}: {errors}")
            built.append(charts)
            painted.append(frame)
            tab.close()
        browser.close()
    return statistics.median(built[1:]), statistics.median(painted[1:])


def _seconds(wall_cpu: tuple[float, float]) -> str:
    return f"{wall_cpu[0]:.2f} / {wall_cpu[1]:.2f}"


def _budget(met: bool, budget: str) -> str:
    return f"{budget} {'met' if met else 'NOT MET'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the history and reports here, keep them")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="fpmon-report-"))
    directory.mkdir(parents=True, exist_ok=True)
    history = directory / "big.db"
    if not history.exists():
        started = time.perf_counter()
        generate(history, args.rows, datetime.now(UTC) - timedelta(minutes=5))
        print(f"history generated in {time.perf_counter() - started:.0f} s", flush=True)
    rows = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(history)!r})"
            ".execute('SELECT count(*) FROM observations').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    on = ["--history", str(history)]
    ten = directory / "ten-targets-90-days.html"
    every = directory / "everything.html"

    ten_time = timed(
        ["report", *TEN, "--since", "90d", "-o", str(ten), "--no-verify", *on], args.repeat
    )
    size = ten.stat().st_size
    quick, full, verify = interleaved(
        [
            ["report", "-o", str(every), "--no-verify", *on],
            ["report", "-o", str(every), *on],
            ["verify", *on],
        ],
        args.repeat,
    )
    built, painted = render_times(ten, args.repeat) if Path(CHROMIUM).exists() else (None, None)

    rows_shown: list[tuple[str, str, str]] = [
        ("size: 10 targets, 90 days, hourly (bytes)", f"{size:,}", _budget(size < 2e6, "< 2 MB")),
        ("time to make that report (s, wall / CPU)", _seconds(ten_time), ""),
    ]
    if built is not None and painted is not None:
        rows_shown += [
            ("render: charts built (ms after navigation start)", f"{built:.0f}", ""),
            (
                "render: first frame painted (ms)",
                f"{painted:.0f}",
                _budget(painted < 1000, "< 1 s"),
            ),
        ]
    else:
        rows_shown.append((f"render: no {CHROMIUM}, not measured", "-", ""))
    rows_shown += [
        ("generation, every target and record:", "", ""),
        ("  --no-verify (its own queries)", _seconds(quick), _budget(quick[0] < 3, "< 3 s")),
        ("  with the chain walk (the default)", _seconds(full), _budget(full[0] < 3, "< 3 s")),
        ("  the walk's share (with - without, CPU)", f"{full[1] - quick[1]:.2f}", ""),
        ("fpmon verify: the walk, the caches and the seals", _seconds(verify), ""),
    ]
    load = os.getloadavg()[0]
    print(
        f"{int(rows):,} observations, 50 targets, hourly x 3 samples; median of {args.repeat}; "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end"
    )
    for name, value, budget in rows_shown:
        print(f"{name:<52} {value:>16}  {budget}")
    if args.keep is None:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
