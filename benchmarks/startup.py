"""Start-up: what a command costs before it does anything, side by side in one run.

    python benchmarks/startup.py [--repeat 20]

Runs each command `--repeat` times, alternating them so that a busy machine slows all alike,
and prints the median wall time of each and its difference from bare Python:

- `python -c pass` (the floor) and `python -c "import typer"` (what any typer CLI pays);
- `fpmon --version` (goal: within 60 ms of bare Python), `fpmon check --help`;
- `fpmon check` of one target against the fake API on loopback (a fresh history each time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fanout import start_fake

FPMON = shutil.which("fpmon", path=str(Path(sys.executable).parent)) or "fpmon"
VERSION_GOAL_MS = 60.0


def commands(base_url: str, workdir: Path) -> dict[str, list[str]]:
    config = workdir / "fpmon.toml"
    config.write_text(
        f'[targets.bench]\nprovider = "custom"\nbase_url = "{base_url}"\nmodel = "bench"\n'
        "samples = 1\n"
    )
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        "fpmon --version": [FPMON, "--version"],
        "fpmon check --help": [FPMON, "check", "--help"],
        "fpmon check (1 target)": [FPMON, "check", "--config", str(config), "--quiet"],
    }


def timed(argv: list[str], workdir: Path) -> float:
    history = workdir / "history.db"
    history.unlink(missing_ok=True)
    env = {**os.environ, "FPMON_HISTORY": str(history), "NO_COLOR": "1"}
    start = time.perf_counter()
    subprocess.run(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    server, url = start_fake(latency=0.0)
    base_url = url.removesuffix("/chat/completions")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            runs = commands(base_url, workdir)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeat):
                for name, argv in runs.items():
                    times[name].append(timed(argv, workdir))
    finally:
        server.terminate()
        server.wait()
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':<28} {'median ms':>10} {'- bare python':>14}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<28} {median:>10.1f} {median - floor:>+14.1f}")
    version = statistics.median(times["fpmon --version"]) - floor
    verdict = "met" if version <= VERSION_GOAL_MS else "NOT met"
    print(f"goal: fpmon --version within {VERSION_GOAL_MS:.0f} ms of bare Python: {verdict}")


if __name__ == "__main__":
    main()
