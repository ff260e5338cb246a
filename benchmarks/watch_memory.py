"""Memory of a long `fpmon watch`: does its RSS stay flat over 1,000 checks?

Starts `fpmon fake-api` and `fpmon watch --every 0s --count 1000` (with /metrics served, as in
production) in their own processes, samples the watcher's resident set size from
/proc/PID/status while it runs and the number of checks it has recorded from its history, then
prints the RSS at check 100 and at the last check, and their ratio (flat: close to 1).
Linux only; loopback only.

    python benchmarks/watch_memory.py [--count 1000] [--targets 2] [--samples 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from fanout import start_fake  # benchmarks/ is on sys.path when a script here runs

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a running process, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def checks(history: Path) -> int:
    """Watch rounds recorded so far (each writes one row per target with one check id)."""
    if not history.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"{history.as_uri()}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(DISTINCT check_id) FROM checks").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet, or busy for a moment
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fpmon-bench-") as tmp:
        workdir = Path(tmp)
        fake, base_url = start_fake(latency=0.0)
        history = workdir / "history.db"
        config = workdir / "fpmon.toml"
        config.write_text(
            f'history = "{history}"\n[defaults]\nretries = 0\nsamples = {args.samples}\n'
            + "".join(
                f'[targets.t{i}]\nprovider = "custom"\nbase_url = "{base_url}"\nmodel = "m{i}"\n'
                for i in range(args.targets)
            )
        )
        started = time.monotonic()
        watch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fp_monitor",
                "watch",
                "--config",
                str(config),
                "--every",
                "0s",
                "--count",
                str(args.count),
                "--metrics-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # (checks recorded, rss) while the watch runs
        points: list[tuple[int, int]] = []
        try:
            while watch.poll() is None:
                rss = rss_bytes(watch.pid)
                if rss is not None:
                    points.append((checks(history), rss))
                time.sleep(0.05)
        finally:
            fake.terminate()
            fake.wait()
        elapsed = time.monotonic() - started
        if watch.returncode != 0:
            print(f"fpmon watch exited with {watch.returncode}", file=sys.stderr)
            return 1
        done = checks(history)

    early = next(((n, rss) for n, rss in points if n >= 100), None)
    late = max(points)  # the last sample: the most checks recorded
    if early is None or done < args.count:
        print(f"only {done} checks recorded: nothing to compare", file=sys.stderr)
        return 1
    print(
        f"fpmon watch --every 0s --count {args.count}: {args.targets} targets x "
        f"{args.samples} samples, {done} checks in {elapsed:.1f}s"
    )
    print(f"RSS at check {early[0]:>5}: {early[1] / MIB:6.1f} MiB")
    print(f"RSS at check {late[0]:>5}: {late[1] / MIB:6.1f} MiB")
    print(f"ratio: {late[1] / early[1]:.3f} (flat = close to 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
