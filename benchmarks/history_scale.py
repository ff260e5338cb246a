"""History scale: do `fpmon check`, `history` and `stats` stay as fast with a million records?

Generates synthetic histories in the real schema (rows made by fpmon's own `observation_row`
and `chain_hash`, written with executemany in one transaction): 50 targets checked once an
hour with 3 samples, flapping between two fingerprints with a rollout every 3 weeks, 5 of the
targets stable throughout (the slowest case for a timeline), and failures; no check carries a
learning state, as for locked targets (the slowest case for detection's facts). One history holds
`--rows` observations (default 1,000,000: about 9 months), one only the last 30 days of the
same data, one is empty. Then, side by side in one run (interleaved, median of `--repeat`),
the installed command against the fake API (in its own process, loopback):

    fpmon check                        50 targets x 3 samples
    fpmon history --limit 50           the newest runs over all targets
    fpmon stats --since 30d            all 50 targets

with each time's ratio to the empty history (target for check: <= 1.2), and the throughput
of `fpmon export`, `fpmon import` (the 30-day history into a new file) and `fpmon verify`.

    python benchmarks/history_scale.py [--rows 1000000] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fanout import start_fake

from fp_monitor.domain.chain import chain_hash
from fp_monitor.domain.models import ErrorKind, Observation, Usage
from fp_monitor.store.history import History
from fp_monitor.store.rows import observation_row, timestamp

TARGETS = 50
STABLE_TARGETS = 5
SAMPLES = 3
EVERY = timedelta(hours=1)
ROLLOUT_CHECKS = 21 * 24  # a new pair of fingerprints every three weeks
FPMON = [sys.executable, "-m", "fp_monitor"]
# A chat completion as a provider returns it; formatted rather than json.dumps'd, which took a
# fifth of the generation time (the values need no escaping).
RAW_RESPONSE = (
    '{"id": "%s", "object": "chat.completion", "model": "%s", "choices": [{"index": 0, '
    '"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}], '
    '"usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}, '
    '"system_fingerprint": "%s"}'
)


@dataclass
class _TargetState:
    previous: frozenset[str] | None = None
    known: set[str] = field(default_factory=set)


def generate(path: Path, rows: int, end: datetime) -> int:
    """Write about `rows` observations ending at `end`; returns how many were written."""
    History.open(path).close()  # the real schema, migrations included
    per_check = TARGETS * SAMPLES
    checks = max(1, rows // per_check)
    start = end - checks * EVERY
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN IMMEDIATE")
    columns = None
    batch: list[tuple[object, ...]] = []
    check_rows: list[tuple[object, ...]] = []
    first_seen: dict[tuple[str, str, str], str] = {}  # (target, field, value) -> time
    samples: Counter[tuple[str, str, str]] = Counter()
    states = [_TargetState() for _ in range(TARGETS)]
    prev_hash = "0" * 64
    next_id = 1
    for k in range(checks):
        at = start + k * EVERY
        check_id = f"{k:016x}{0:016x}"
        for t, state in enumerate(states):
            observations = list(_samples(t, k, at))
            for observation in observations:
                row = observation_row(check_id, observation, prev_hash)
                row["hash"] = prev_hash = chain_hash(row)
                columns = columns or ("id", *row)
                batch.append((next_id, *row.values()))
                next_id += 1
                if observation.ok:
                    for field, value in (
                        ("fingerprint", observation.fingerprint),
                        ("model", observation.resolved_model),
                    ):
                        key = (f"t{t:02d}", field, str(value))
                        first_seen.setdefault(key, row["observed_at"])
                        samples[key] += 1
            check_rows.append(_check_row(check_id, t, at, observations, state))
        if len(batch) >= 20_000:
            _insert(db, "observations", columns, batch)
            batch = []
    _insert(db, "observations", columns, batch)
    _insert(
        db,
        "checks",
        (
            "check_id",
            "target",
            "checked_at",
            "status",
            "fingerprints",
            "models",
            "headers",
            "samples",
            "errors",
        ),
        check_rows,
    )
    _insert(
        db,
        "known_values",
        ("target", "field", "value", "first_seen", "samples"),
        [(*key, first, samples[key]) for key, first in first_seen.items()],
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return next_id - 1


def _samples(t: int, k: int, at: datetime) -> Iterator[Observation]:
    epoch = 0 if t < STABLE_TARGETS else k // ROLLOUT_CHECKS
    pair = [f"fp_{t:02d}{epoch:03d}{i}" for i in "ab"]
    for i in range(SAMPLES):
        failed = (k + t) % 97 == 0 or ((k + t) % 31 == 0 and i == 0)
        value = pair[(k + i) % 2]
        if t >= STABLE_TARGETS and epoch and (k + t) % 7 == 0 and i == 2:
            value = f"fp_{t:02d}{epoch - 1:03d}a"  # an older configuration still answers: a flap
        latency = 250.0 + (k * 7 + t * 13 + i * 17) % 400
        yield Observation(
            target=f"t{t:02d}",
            provider="custom",
            base_url="http://127.0.0.1:8000/v1",
            requested_model=f"bench-{t:02d}",
            observed_at=at + timedelta(milliseconds=i),
            attempts=3 if failed else 1,
            latency_ms=latency,
            request_shape=f"shape{t:02d}",
            http_status=None if failed else 200,
            fingerprint=None if failed else value,
            resolved_model=None if failed else f"bench-{t:02d}-2026",
            response_id=None if failed else f"chatcmpl-{k:x}{t:02d}{i}",
            request_id=f"req_{k:x}{t:02d}{i}",
            usage=Usage() if failed else Usage(9, 1, 10),
            error_kind=ErrorKind.TIMEOUT if failed else None,
            error_message="timed out after 30s" if failed else None,
            raw_response=None
            if failed
            else RAW_RESPONSE % (f"chatcmpl-{k:x}{t:02d}{i}", f"bench-{t:02d}-2026", value),
        )


def _check_row(
    check_id: str,
    t: int,
    at: datetime,
    observations: list[Observation],
    state: _TargetState,
) -> tuple[object, ...]:
    """The checks row, with a status by the detection rules (no lock, models constant)."""
    values = frozenset(o.fingerprint for o in observations if o.ok and o.fingerprint)
    errors = sum(not o.ok for o in observations)
    if not values:
        status = "error"
    elif state.previous is None:
        status = "first"
    elif values - state.known:
        status = "new"
    elif values <= state.previous:
        status = "same"
    else:
        status = "changed"
    if values:
        state.previous = values
        state.known |= values
    models = json.dumps([f"bench-{t:02d}-2026"]) if values else None
    return (
        check_id,
        f"t{t:02d}",
        timestamp(at + timedelta(seconds=1)),
        status,
        json.dumps(sorted(values)) if values else None,
        models,
        "{}",
        SAMPLES,
        errors,
    )


def _insert(
    db: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...] | None,
    rows: list[tuple[object, ...]],
) -> None:
    if rows and columns:
        marks = ", ".join("?" for _ in columns)
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def fleet_config(directory: Path, base_url: str) -> Path:
    config = directory / "fpmon.toml"
    targets = "".join(
        f'[targets.t{t:02d}]\nprovider = "custom"\nbase_url = "{base_url}"\n'
        f'model = "bench-{t:02d}"\nsamples = {SAMPLES}\nretries = 0\n\n'
        for t in range(TARGETS)
    )
    config.write_text(targets)
    return config


def timed(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the histories here and keep them")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="fpmon-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    end = datetime.now(UTC) - timedelta(minutes=5)
    files = {
        "empty": directory / "empty.db",
        "30 days": directory / "30d.db",
        "big": directory / "big.db",
    }
    for path in directory.glob("*.db*"):
        path.unlink()
    History.open(files["empty"]).close()
    started = time.perf_counter()
    written = generate(files["big"], args.rows, end)
    generation = time.perf_counter() - started
    month = generate(files["30 days"], 30 * 24 * TARGETS * SAMPLES, end)
    size = files["big"].stat().st_size

    server, base_url = start_fake(0.0)
    try:
        config = fleet_config(directory, base_url)
        commands = {
            f"fpmon check ({TARGETS} targets x {SAMPLES})": ["check", "-c", str(config)],
            "fpmon history --limit 50": ["history", "--limit", "50"],
            "fpmon stats --since 30d": ["stats", "--since", "30d"],
        }
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.repeat + 1):  # the first round warms up, untimed
            for name, command in commands.items():
                for label, path in files.items():
                    elapsed = timed([*FPMON, *command, "--history", str(path)], directory)
                    if round_:
                        times.setdefault((name, label), []).append(elapsed)
    finally:
        server.terminate()
        server.wait()

    export_file = directory / "30d.jsonl"
    export_time = timed(
        [*FPMON, "export", "--history", str(files["30 days"]), "-o", str(export_file)], directory
    )
    imported = directory / "imported.db"
    import_time = timed([*FPMON, "import", str(export_file), "--history", str(imported)], directory)
    verify_time = timed([*FPMON, "verify", "--history", str(files["big"])], directory)

    print(
        f"{written:,} observations ({TARGETS} targets, hourly, {SAMPLES} samples), "
        f"{size / 2**20:,.0f} MiB, generated in {generation:.0f} s; 30-day history: "
        f"{month:,}; {os.cpu_count()} cores; median of {args.repeat}, seconds, warm file cache"
    )
    print(
        f"{'command':<34} {'empty':>7} {'30 days':>8} {'big':>7} {'big/empty':>10} "
        f"{'big/30 days':>12}"
    )
    for name in commands:
        median = {label: statistics.median(times[(name, label)]) for label in files}
        print(
            f"{name:<34} {median['empty']:>7.3f} {median['30 days']:>8.3f} {median['big']:>7.3f} "
            f"{median['big'] / median['empty']:>10.2f} {median['big'] / median['30 days']:>12.2f}"
        )
    print(f"fpmon export: {month / export_time:,.0f} rows/s ({month:,} rows, {export_time:.1f} s)")
    print(f"fpmon import: {month / import_time:,.0f} rows/s ({month:,} rows, {import_time:.1f} s)")
    print(
        f"fpmon verify: {written / verify_time:,.0f} rows/s ({written:,} rows, {verify_time:.1f} s)"
    )
    if args.keep is None:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


if __name__ == "__main__":
    main()
