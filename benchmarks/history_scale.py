"""History scale: do `fpmon check`, `history` and `stats` stay as fast with a million records,
on SQLite and on PostgreSQL, and how many checks per second do concurrent writers record?

Generates synthetic histories through fpmon's own History (`observation_row`, `chain_hash`,
`append_records` and `record_check` in write transactions of 200 checks, each ending with its
seal, so that `fpmon verify` passes): 50 targets checked once an hour with 3 samples, flapping
between two fingerprints with a rollout every 3 weeks, 5 of the targets stable throughout (the
slowest case for a timeline), and failures; no check carries a learning state, as for locked
targets (the slowest case for detection's facts). Per store, one history holds `--rows`
observations (default 1,000,000: about 9 months), one only the last 30 days of the same data,
one is empty. Then, side by side in one run (interleaved, median of `--repeat`), the installed
command against the fake API (in its own process, loopback):

    fpmon check                        50 targets x 3 samples
    fpmon history --limit 50           the newest runs over all targets
    fpmon stats --since 30d            all 50 targets

with each time's ratio to the store's empty history (target for check: <= 1.2); the throughput
of `fpmon export`, `fpmon import` (the 30-day history into a new one) and `fpmon verify`; and
the write rate: 1, 4 and 16 `fpmon check` processes at once, each checking the 50 targets
`--writer-checks` times into one new history per store, in target checks and observations
recorded per second.

PostgreSQL: `--postgres URL` names a server where the role may create databases (the benchmark
creates its own and drops them); without it, a throwaway server is started the way the tests
start theirs (.ci/postgres.sh) and stopped at the end. `--no-postgres` runs SQLite alone.

    python benchmarks/history_scale.py [--rows 1000000] [--repeat 5] [--keep DIR]
        [--postgres URL | --no-postgres] [--writer-checks 3]
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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))
from fanout import start_fake

from fp_monitor.config.history_url import HistoryLocation, PostgresURL, history_location
from fp_monitor.domain.chain import chain_hash
from fp_monitor.domain.models import (
    ErrorKind,
    Observation,
    ProbeError,
    Status,
    TargetResult,
    Usage,
)
from fp_monitor.store.history import History
from fp_monitor.store.rows import observation_row

TARGETS = 50
STABLE_TARGETS = 5
SAMPLES = 3
EVERY = timedelta(hours=1)
ROLLOUT_CHECKS = 21 * 24  # a new pair of fingerprints every three weeks
BATCH_CHECKS = 200
"""Checks per write transaction while generating (each ends with a seal)."""
WRITERS = (1, 4, 16)
FPMON = [sys.executable, "-m", "fp_monitor"]
REPO = Path(__file__).resolve().parent.parent
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


def generate(location: HistoryLocation, rows: int, end: datetime) -> int:
    """Write about `rows` observations ending at `end` through the History, as checks would
    (the chain, the check rows, the known values and a seal per transaction); returns how many
    were written."""
    per_check = TARGETS * SAMPLES
    checks = max(1, rows // per_check)
    start = end - checks * EVERY
    states = [_TargetState() for _ in range(TARGETS)]
    written = 0
    with History.open(location) as history:
        for first in range(0, checks, BATCH_CHECKS):
            with history.write():
                _, prev_hash = history.head()
                records = []
                made = []
                for k in range(first, min(checks, first + BATCH_CHECKS)):
                    at = start + k * EVERY
                    check_id = f"{k:016x}{0:016x}"
                    for t, state in enumerate(states):
                        observations = list(_samples(t, k, at))
                        for observation in observations:
                            row = observation_row(check_id, observation, prev_hash)
                            row["hash"] = prev_hash = chain_hash(row)
                            records.append(row)
                        made.append((check_id, at, _result(t, observations, state), observations))
                history.append_records(records)
                for check_id, at, result, observations in made:
                    history.record_check(check_id, at + timedelta(seconds=1), result, observations)
                written += len(records)
    return written


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


def _result(t: int, observations: list[Observation], state: _TargetState) -> TargetResult:
    """The check's result, with a status by the detection rules (no lock, models constant)."""
    values = frozenset(o.fingerprint for o in observations if o.ok and o.fingerprint)
    if not values:
        status = Status.ERROR
    elif state.previous is None:
        status = Status.FIRST
    elif values - state.known:
        status = Status.NEW
    elif values <= state.previous:
        status = Status.SAME
    else:
        status = Status.CHANGED
    previous = state.previous
    if values:
        state.previous = values
        state.known |= values
    models = (f"bench-{t:02d}-2026",) if values else ()
    return TargetResult(
        name=f"t{t:02d}",
        status=status,
        unexpected=False,
        fingerprints=tuple(sorted(values)),
        models=models,
        previous=None if previous is None else tuple(sorted(previous)),
        previous_models=models,
        known=tuple(sorted(state.known)),
        known_models=models,
        samples=SAMPLES,
        errors=tuple(
            ProbeError(ErrorKind.TIMEOUT, None, "timed out") for o in observations if not o.ok
        ),
        latency_ms=None,
        changes=(),
    )


def fleet_config(directory: Path, base_url: str, name: str = "fpmon.toml", extra: str = "") -> Path:
    config = directory / name
    targets = "".join(
        f'[targets.t{t:02d}]\nprovider = "custom"\nbase_url = "{base_url}"\n'
        f'model = "bench-{t:02d}"\nsamples = {SAMPLES}\nretries = 0\n{extra}\n'
        for t in range(TARGETS)
    )
    config.write_text(targets)
    return config


def timed(args: list[str], cwd: Path, codes: tuple[int, ...] = (0, 1)) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in codes:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


# --- the stores ---------------------------------------------------------------------------


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server started by .ci/postgres.sh (the tests' own), stopped by its pg_stop
    when this bash's stdin closes: the URL of a database the role may create databases from."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        # .ci/postgres.sh would install the package: a benchmark asks instead.
        raise SystemExit(
            "no PostgreSQL server binaries: install Debian's postgresql package, or pass "
            "--postgres URL or --no-postgres"
        )
    shell = subprocess.Popen(
        ["bash", "-c", '. .ci/postgres.sh >&2 && echo "$FPMON_TEST_POSTGRES" && cat; pg_stop'],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdin is not None and shell.stdout is not None
    try:
        url = shell.stdout.readline().strip()
        if not url:
            raise SystemExit("could not start a PostgreSQL server (.ci/postgres.sh)")
        yield url
    finally:
        shell.stdin.close()
        shell.wait()


class Databases:
    """New databases on one PostgreSQL server, dropped at the end."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.made: list[str] = []

    def new(self, label: str) -> PostgresURL:
        import psycopg

        name = f"fpmon_bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        url = urlunsplit(urlsplit(self.server)._replace(path=f"/{name}"))
        location = history_location(url, "--postgres")
        assert isinstance(location, PostgresURL)
        return location

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as admin:
            for name in self.made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Store:
    name: str
    histories: dict[str, HistoryLocation]
    """empty, 30 days, big."""
    new_history: Callable[[], HistoryLocation]
    """A new empty history (for the writers and import)."""
    written: int = 0
    month: int = 0
    generation: float = 0.0


def _arg(location: HistoryLocation) -> str:
    return location.url if isinstance(location, PostgresURL) else str(location)


def fill(store: Store, rows: int, end: datetime) -> None:
    History.open(store.histories["empty"]).close()
    started = time.perf_counter()
    store.written = generate(store.histories["big"], rows, end)
    store.generation = time.perf_counter() - started
    store.month = generate(store.histories["30 days"], 30 * 24 * TARGETS * SAMPLES, end)


def writers_rate(
    store: Store, writers: int, config: Path, directory: Path, checks: int
) -> tuple[float, float]:
    """`writers` fpmon check processes at once, each running `checks` checks of the fleet one
    after another into one new history: (target checks, observations) recorded per second."""
    location = store.new_history()
    History.open(location).close()  # migrated before the clock starts
    script = "; ".join(
        f"{' '.join(FPMON)} check -c {config} --history '{_arg(location)}' >/dev/null"
        for _ in range(checks)
    )
    started = time.perf_counter()
    procs = [subprocess.Popen(["bash", "-c", script], cwd=directory) for _ in range(writers)]
    for proc in procs:
        proc.wait()
    elapsed = time.perf_counter() - started
    with History.open(location) as history:
        recorded = history.count_observations()
    if recorded != writers * checks * TARGETS * SAMPLES:
        raise SystemExit(f"{store.name}, {writers} writers: {recorded} observations recorded")
    verify = [*FPMON, "verify", "--history", _arg(location)]
    timed(verify, directory, codes=(0,))
    return writers * checks * TARGETS / elapsed, recorded / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the SQLite histories here and keep them")
    parser.add_argument("--postgres", help="a server URL (default: start a throwaway one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--writer-checks", type=int, default=3)
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="fpmon-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db*"):
        path.unlink()
    try:
        with postgres_server(args) as server:
            databases = Databases(server) if server else None
            try:
                run(args, directory, databases)
            finally:
                if databases is not None:
                    databases.drop()
    finally:  # a failed run leaves no gigabyte behind either
        if args.keep is None:
            shutil.rmtree(directory)


@contextmanager
def postgres_server(args: argparse.Namespace) -> Iterator[str | None]:
    """The server of the PostgreSQL histories: --postgres, a throwaway one, or none."""
    if args.no_postgres:
        yield None
    elif args.postgres:
        yield args.postgres
    else:
        with throwaway_postgres() as url:
            yield url


def run(args: argparse.Namespace, directory: Path, databases: Databases | None) -> None:
    end = datetime.now(UTC) - timedelta(minutes=5)
    counter = iter(range(1_000_000))
    stores = [
        Store(
            "SQLite",
            {
                label: directory / f"{label.replace(' ', '')}.db"
                for label in ("empty", "30 days", "big")
            },
            lambda: directory / f"new-{next(counter)}.db",
        )
    ]
    if databases is not None:
        stores.append(
            Store(
                "PostgreSQL",
                {
                    label: databases.new(label.replace(" ", ""))
                    for label in ("empty", "30 days", "big")
                },
                lambda: databases.new("new"),
            )
        )
    for store in stores:
        fill(store, args.rows, end)

    server, base_url = start_fake(0.0)
    try:
        config = fleet_config(directory, base_url)
        commands = {
            f"fpmon check ({TARGETS} targets x {SAMPLES})": ["check", "-c", str(config)],
            "fpmon history --limit 50": ["history", "--limit", "50"],
            "fpmon stats --since 30d": ["stats", "--since", "30d"],
        }
        times: dict[tuple[str, str, str], list[float]] = {}
        for round_ in range(args.repeat + 1):  # the first round warms up, untimed
            for name, command in commands.items():
                for store in stores:
                    for label, location in store.histories.items():
                        elapsed = timed([*FPMON, *command, "--history", _arg(location)], directory)
                        if round_:
                            times.setdefault((store.name, name, label), []).append(elapsed)
        # Without learning every check is 3 samples, as in the load worked out on paper (a
        # learning target's first check would take its bootstrap samples).
        steady = fleet_config(directory, base_url, "writers.toml", "learning = false\n")
        rates = {
            (store.name, writers): writers_rate(
                store, writers, steady, directory, args.writer_checks
            )
            for writers in WRITERS
            for store in stores
        }
    finally:
        server.terminate()
        server.wait()

    throughput = []
    for store in stores:
        export_file = directory / f"30d-{store.name}.jsonl"
        month = _arg(store.histories["30 days"])
        export_time = timed(
            [*FPMON, "export", "--history", month, "-o", str(export_file)], directory
        )
        imported = _arg(store.new_history())
        import_time = timed([*FPMON, "import", str(export_file), "--history", imported], directory)
        big = _arg(store.histories["big"])
        verify_time = timed([*FPMON, "verify", "--history", big], directory, codes=(0,))
        throughput.append((store, export_time, import_time, verify_time))

    for store in stores:
        print(
            f"{store.name}: {store.written:,} observations ({TARGETS} targets, hourly, "
            f"{SAMPLES} samples), generated in {store.generation:.0f} s; 30-day history: "
            f"{store.month:,}"
        )
    print(f"{os.cpu_count()} cores; median of {args.repeat}, seconds, warm cache")
    print(
        f"{'command':<34} {'store':<11} {'empty':>7} {'30 days':>8} {'big':>7} "
        f"{'big/empty':>10} {'big/30 days':>12}"
    )
    for name in commands:
        for store in stores:
            median = {
                label: statistics.median(times[(store.name, name, label)])
                for label in store.histories
            }
            print(
                f"{name:<34} {store.name:<11} {median['empty']:>7.3f} {median['30 days']:>8.3f} "
                f"{median['big']:>7.3f} {median['big'] / median['empty']:>10.2f} "
                f"{median['big'] / median['30 days']:>12.2f}"
            )
    print(
        f"concurrent writers: each `fpmon check` of {TARGETS} targets x {SAMPLES}, "
        f"{args.writer_checks} times in a row, into one new history; recorded per second"
    )
    print(f"{'writers':>7} " + " ".join(f"{s.name + ' checks/s':>22} {'obs/s':>8}" for s in stores))
    for writers in WRITERS:
        cells = " ".join(
            f"{rates[(s.name, writers)][0]:>22.0f} {rates[(s.name, writers)][1]:>8.0f}"
            for s in stores
        )
        print(f"{writers:>7} {cells}")
    for store, export_time, import_time, verify_time in throughput:
        print(
            f"{store.name}: export {store.month / export_time:,.0f} rows/s, import "
            f"{store.month / import_time:,.0f} rows/s ({store.month:,} rows), verify "
            f"{store.written / verify_time:,.0f} rows/s ({store.written:,} rows, "
            f"{verify_time:.1f} s)"
        )


if __name__ == "__main__":
    main()
