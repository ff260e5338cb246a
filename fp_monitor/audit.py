"""The audit trail as core functions: `fpmon verify`, `export`, `import` and `prune`.

Export writes one record per line exactly as stored (with `prev_hash` and `hash`); import
appends the records in the file's order with those hashes, so that the chain verifies as it was
written, and rebuilds from them the checks and known values that detection reads.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn

from fp_monitor.config.history_url import HistoryLocation, PostgresURL
from fp_monitor.config.settings import Config
from fp_monitor.config.site import site_problem
from fp_monitor.domain.chain import (
    GENESIS_HASH,
    NO_TAGS,
    RECORD_FIELDS,
    SEALED_COLUMNS,
    Checkpoint,
    CheckpointKind,
    Seal,
    SealedRow,
    baseline_digest,
    chain_hash,
    rows_digest,
)
from fp_monitor.domain.detect import detect
from fp_monitor.domain.errors import ChainBroken, ConfigError
from fp_monitor.domain.models import ErrorKind, Source, Status
from fp_monitor.fileio import open_atomic
from fp_monitor.reading import missing_history, open_history
from fp_monitor.store.audit import CheckSets
from fp_monitor.store.facts import merge_known
from fp_monitor.store.history import History, database_size, history_exists
from fp_monitor.store.recording import Appended
from fp_monitor.store.rows import observation_from_row, parse_timestamp, timestamp

EXPORT_VERSION = 1
IMPORT_BATCH = 5000
"""Records per write transaction: a long import lets concurrent checks in between."""
MAX_LINE_BYTES = 16 * 2**20
"""The longest line import reads: a record holds the server strings of at most one response
body (4 MiB, the probe's bound) and 16 KiB of raw response; the rest is room for JSON escapes."""
FUTURE_SKEW = timedelta(minutes=5)
"""How far ahead of this machine's clock an imported record may be (the exporting machine's
clock may run ahead): a record dated later would stay every later check's previous one."""
_INTEGER_MAX = 2**63 - 1  # SQLite's INTEGER

_HASH = re.compile(r"^[0-9a-f]{64}$")
_STATES = (None, "value", "null", "empty", "absent")
_ERROR_KINDS = frozenset(kind.value for kind in ErrorKind)
_SOURCES = frozenset(source.value for source in Source)
# (type, may be null) per exported field, as the observations table declares them.
_FIELD_TYPES: dict[str, tuple[type, bool]] = {
    "check_id": (str, False),
    "observed_at": (str, False),
    "source": (str, False),
    "target": (str, False),
    "provider": (str, False),
    "base_url": (str, False),
    "requested_model": (str, False),
    "resolved_model": (str, True),
    "fingerprint": (str, True),
    "fingerprint_state": (str, True),
    "response_id": (str, True),
    "request_id": (str, True),
    "http_status": (int, True),
    "latency_ms": (float, True),
    "attempts": (int, False),
    "prompt_tokens": (int, True),
    "completion_tokens": (int, True),
    "total_tokens": (int, True),
    "headers": (str, False),
    "error_kind": (str, True),
    "error_message": (str, True),
    "request_shape": (str, False),
    "raw_response": (str, True),
    "prev_hash": (str, False),
    "tags": (str, False),
    "canary": (str, True),
    "site": (str, True),
    "hash": (str, False),
}


@dataclass(frozen=True)
class Verified:
    records: int
    head_id: int
    head_hash: str
    checkpoints: tuple[Checkpoint, ...]
    seal: Seal | None
    """The last seal: its hash covers everything verified (None: nothing was ever written)."""


@dataclass(frozen=True)
class Imported:
    appended: int
    present: int
    """Records skipped because a record with the same hash was already in the history."""
    checks: int
    """Checks rebuilt from the appended records."""
    invalid: tuple[str, ...]
    """One line per skipped line of the file: where and why."""
    junctions: tuple[int, ...]
    """Line numbers of records that continue another chain than this history's."""


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    observations: int
    checks: int
    dry_run: bool
    size_before: int
    size_after: int


def verify_history(path: HistoryLocation, head: str | None = None) -> Verified:
    """Walk the whole chain and the seals; ChainBroken names the first record, row or seal that
    does not verify. `head`: the hash of a seal printed by an earlier verify, which must still
    be in the chain (else the history was rewritten or cut after it, or pruned past it)."""
    if head is not None and not _HASH.match(head):
        raise ConfigError(f"--head {head[:80]!r}: expected the 64 hex digits of a seal's hash")
    with open_history(path) as history, history.snapshot():
        checkpoints = history.checkpoints()
        result = history.walk_chain(checkpoints)
        if result.broken is not None:
            raise ChainBroken(f"the chain is broken: {result.broken.describe()}")
        _verify_caches(history, checkpoints)
        seal = verify_seals(history, checkpoints)
        if head is not None and not history.has_seal(head):
            raise ChainBroken(
                f"the head {head} is not a seal of this history: it was rewritten or cut "
                "after that head was printed, or pruned past it"
            )
    return Verified(result.records, result.head_id, result.head_hash, tuple(checkpoints), seal)


def verify_seals(history: History, checkpoints: Sequence[Checkpoint]) -> Seal | None:
    """Each seal unedited, chained to the one before, bound to a record still there (or
    pruned), and listing what it listed; each check row and checkpoint listed as it is now, and
    each listed one that is gone explained by a prune. ChainBroken names the first that is not;
    returns the last seal. Run after walk() passed."""
    last_prune = next((c for c in reversed(checkpoints) if c.kind is CheckpointKind.PRUNE), None)
    first = history.first_record()
    by_seal = itertools.groupby(history.sealed_rows(), key=lambda row: row.seal)
    listed_next = next(by_seal, None)
    last: Seal | None = None
    first_prev = trimmed = pruned_before = None
    newest_prune = 0
    for seal in history.seals():
        where = f"seal {seal.id} ({seal.created_at})"
        if seal.computed_hash() != seal.hash:
            raise ChainBroken(f"{where} was edited: its content no longer matches its hash")
        if last is None:
            first_prev = seal.prev_hash
        elif seal.prev_hash != last.hash or seal.after_id < last.after_id:
            raise ChainBroken(
                f"{where} does not follow seal {last.id}: a seal was deleted, added or moved"
            )
        if problem := _binding_problem(history, seal, last_prune):
            raise ChainBroken(f"{where} {problem}")
        if listed_next is not None and listed_next[0] < seal.id:
            break  # rows listed by a seal that is gone: said below
        listed: list[SealedRow] = []
        if listed_next is not None and listed_next[0] == seal.id:
            listed = list(listed_next[1])
            listed_next = next(by_seal, None)
        if len(listed) != seal.rows or rows_digest(listed) != seal.rows_digest:
            raise ChainBroken(f"{where} no longer lists the rows it sealed: the list was edited")
        new_prune = False
        for row in listed:
            if row.table != "chain_checkpoints":
                continue
            if row.after_id is None:  # a prune's
                new_prune, newest_prune = row.row_id > newest_prune, max(row.row_id, newest_prune)
            elif not (last.after_id if last else 0) <= row.after_id <= seal.after_id:
                raise ChainBroken(
                    f"the import checkpoint after record {row.after_id} was sealed by {where}, "
                    "after later records: it was added to bridge an edit or a deletion"
                )
        if last is not None and seal.baseline != last.baseline and not new_prune:
            raise ChainBroken(
                f"{where} changed the known values of pruned records, which only a prune that "
                "deletes records does: the table known_baseline was edited"
            )
        if seal.trimmed_hash is not None:
            if trimmed is not None and seal.trimmed_hash != trimmed and not new_prune:
                raise ChainBroken(f"{where} says seals were pruned, but no record was")
            trimmed = seal.trimmed_hash
        if seal.pruned_before is not None:
            if first is not None and seal.pruned_before > first[1]:
                raise ChainBroken(
                    f"{where} says what was older than {seal.pruned_before} was pruned, but "
                    f"record {first[0]} is older: the prune was forged"
                )
            pruned_before = max(pruned_before or "", seal.pruned_before)
        last = seal
    if listed_next is not None:
        raise ChainBroken(f"seal {listed_next[0]} is missing, but its rows are listed: deleted")
    head_id, _ = history.head()
    if last is None:
        if head_id or history.baseline_digest() != baseline_digest([]):
            raise ChainBroken("nothing in the history is sealed: its seals were deleted")
    elif first_prev != (trimmed or GENESIS_HASH):
        raise ChainBroken("the first seal does not follow the last one pruned: seals were deleted")
    elif head_id != last.after_id:
        raise ChainBroken(
            f"the records after record {last.after_id} are not sealed: they were added "
            "after the fact"
        )
    elif history.baseline_digest() != last.baseline:
        raise ChainBroken(f"the table known_baseline was edited after seal {last.id}")
    for table in SEALED_COLUMNS:
        _verify_sealed_rows(history, table, pruned_before, last_prune)
    return last


def _binding_problem(history: History, seal: Seal, last_prune: Checkpoint | None) -> str | None:
    """Whether the record a seal was written after is still the one it sealed."""
    if seal.after_id == 0:
        return None if seal.record_hash == GENESIS_HASH else "was edited"
    found = history.record_at(seal.after_id)
    if found is not None:
        if found[0] == seal.record_hash:
            return None
        return f"was written after record {seal.after_id}, which was replaced since"
    if last_prune is not None and (
        seal.after_id < last_prune.after_id
        or (seal.after_id == last_prune.after_id and seal.record_hash == last_prune.hash)
    ):
        return None
    return f"was written after record {seal.after_id}, which is missing: it was deleted"


def _verify_sealed_rows(
    history: History, table: str, pruned_before: str | None, last_prune: Checkpoint | None
) -> None:
    """Merge the rows of `table` with what the seals list of it, both in id order."""
    rows = history.row_hashes(table)
    listed = itertools.groupby(history.sealed_rows(table=table), key=lambda row: row.row_id)
    row, group = next(rows, None), next(listed, None)
    while row is not None or group is not None:
        if group is None or (row is not None and row[0] < group[0]):
            assert row is not None
            raise ChainBroken(f"{row[2]} is not sealed: it was added after the fact")
        entries = list(group[1])
        if row is not None and row[0] == group[0]:
            matching = [e for e in entries if e.row_hash == row[1]]
            if not matching:
                columns = " (its status, learning state or another column)" * (table == "checks")
                raise ChainBroken(
                    f"{row[2]} is not what seal {entries[-1].seal} sealed: it was edited{columns}"
                )
            entries.remove(matching[0])
            row = next(rows, None)
        for gone in entries:
            if not _pruned(gone, pruned_before, last_prune):
                name = "check row" if table == "checks" else "checkpoint"
                raise ChainBroken(
                    f"{name} {gone.row_id}, sealed by seal {gone.seal}, is missing: it was deleted"
                )
        group = next(listed, None)


def _pruned(row: SealedRow, pruned_before: str | None, last_prune: Checkpoint | None) -> bool:
    """Whether a prune explains that a listed row is gone."""
    if row.checked_at is not None:
        return pruned_before is not None and row.checked_at < pruned_before
    pruned_through = last_prune.after_id if last_prune is not None else 0
    return row.after_id is not None and row.after_id < pruned_through


def _verify_caches(history: History, checkpoints: Sequence[Checkpoint]) -> None:
    """Detection reads the checks and known values, not the records: each must be what the
    chained records (and the baseline of the pruned ones) give, else ChainBroken names it."""
    expected = merge_known(history.known_baseline(), history.derived_known())
    for table, stored, derived in (
        ("known_values_by_source", history.stored_known(), expected),
        ("known_values", history.stored_known(by_source=False), history.expected_union()),
    ):
        for key in sorted(stored.keys() | derived.keys()):
            if stored.get(key) == derived.get(key):
                continue
            change = "added" if key not in derived else "deleted" if key not in stored else "edited"
            raise ChainBroken(
                f"the table {table} does not follow from the chained records: "
                f"{' '.join(key)[:120]!r} was {change} "
                f"(stored {stored.get(key)}, the records give {derived.get(key)})"
            )
    last_prune = max(
        (timestamp(c.created_at) for c in checkpoints if c.kind is CheckpointKind.PRUNE),
        default=None,
    )
    derived_checks = history.derived_checks()
    for (
        row_id,
        check_id,
        target,
        source,
        at,
        status,
        fps,
        models,
        headers,
        errors,
    ) in history.check_rows():
        problem = _check_problem(
            derived_checks.get((check_id, target, source)),
            fps,
            models,
            headers,
            errors,
            status,
            at,
            last_prune,
        )
        if problem:
            raise ChainBroken(f"check row {row_id} ({target}, {at}) {problem}")


def _check_problem(
    sets: CheckSets | None,
    fingerprints: str | None,
    models: str | None,
    headers: str | None,
    errors: int,
    status: str,
    checked_at: str,
    last_prune: str | None,
) -> str | None:
    try:
        parse_timestamp(checked_at)
        Status(status)
        stored = (
            None if fingerprints is None else sorted(json.loads(fingerprints)),
            None if models is None else sorted(json.loads(models)),
            {k: sorted(v) for k, v in json.loads(headers or "{}").items()},
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return f"is corrupt: {str(exc)[:80]}"
    if sets is None:
        # Prune keeps each target's latest successful check without its records.
        if last_prune is not None and checked_at <= last_prune:
            return None
        return "has no records in the chain: it was added"
    succeeded = bool(sets.fingerprints or sets.models)
    derived = (
        sorted(sets.fingerprints) if succeeded else None,
        sorted(sets.models) if succeeded else None,
        {k: sorted(v) for k, v in sets.headers.items()} if succeeded else {},
    )
    if stored != derived or errors != sets.errors:
        return "does not follow from its records: it was edited"
    return None


def export_history(path: HistoryLocation, output: Path | None, stdout: IO[str]) -> int:
    """Write every record as a JSON line to `output` (atomically, owner-only) or `stdout`."""
    with open_history(path) as history:
        if output is None:
            return _write_records(history, stdout)
        with open_atomic(output, mode=0o600) as handle:
            return _write_records(history, handle)


def _write_records(history: History, handle: IO[str]) -> int:
    count = 0
    for row in history.iter_chain():
        record = {"version": EXPORT_VERSION, **{f: row[f] for f in RECORD_FIELDS}}
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def import_history(path: HistoryLocation, source: Path, now: datetime) -> Imported:
    """Append the records of an export file that the history does not hold yet; a record dated
    after `now` (beyond FUTURE_SKEW) is invalid."""
    invalid: list[str] = []
    junctions: list[int] = []
    appended = present = checks = 0
    with _open_input(source) as stream, History.open(path) as history:
        groups = _check_groups(_valid_records(stream, source, invalid, now + FUTURE_SKEW))
        for batch in _batches(groups, IMPORT_BATCH):
            with history.write():
                # The observations first, in one statement; then each check, which detection
                # reads from the checks and known values, not from the observations.
                outcomes = iter(history.append_records([r for group in batch for _, r in group]))
                for group in batch:
                    new = []
                    for (line, record), outcome in zip(
                        group, itertools.islice(outcomes, len(group)), strict=True
                    ):
                        if outcome is Appended.PRESENT:
                            present += 1
                            continue
                        new.append(record)
                        if outcome is Appended.SPLICED:
                            junctions.append(line)
                    if new:
                        _rebuild_check(history, new)
                        appended += len(new)
                        checks += 1
    return Imported(appended, present, checks, tuple(invalid), tuple(junctions))


def _rebuild_check(history: History, records: Sequence[Mapping[str, Any]]) -> None:
    """The check row and known values of imported records, with the status detection gives
    them against the history as it stands (the lock is not consulted)."""
    observations = [observation_from_row(r) for r in records]
    target, source = observations[0].target, Source(records[0]["source"])
    facts = history.facts(target, kind=source)
    result = detect(target, observations, facts, samples=len(observations))
    checked_at = max(o.observed_at for o in observations)
    history.record_check(records[0]["check_id"], checked_at, result, observations, source)


@contextmanager
def _open_input(source: Path) -> Iterator[BinaryIO]:
    if str(source) == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = source.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def _valid_records(
    stream: BinaryIO, source: Path, invalid: list[str], latest: datetime
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each valid line; each other non-blank line is noted."""
    for number, raw in enumerate(_bounded_lines(stream), start=1):
        try:
            if raw is None:
                raise ValueError(f"the line is longer than {MAX_LINE_BYTES // 2**20} MiB")
            if not raw.strip():
                continue
            yield number, parse_record(raw.decode("utf-8"), latest)
        except (UnicodeDecodeError, ValueError) as exc:
            invalid.append(f"{source}:{number}: not a valid record, skipped: {exc}")
        except RecursionError:
            invalid.append(f"{source}:{number}: not a valid record, skipped: nested too deeply")


def _bounded_lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Each line of `stream`; None for a line longer than MAX_LINE_BYTES, whose rest is read
    past a MiB at a time, never held whole."""
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        del line  # not held while its rest is read
        while (rest := stream.readline(2**20)) and not rest.endswith(b"\n"):
            pass
        yield None


def parse_record(text: str, latest: datetime) -> dict[str, Any]:
    """One exported line -> its record; ValueError says what is wrong with it. A record dated
    after `latest` is refused."""
    data = json.loads(text, parse_constant=_refuse_constant)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if data.get("version") != EXPORT_VERSION:
        raise ValueError(f"expected version {EXPORT_VERSION}, got {data.get('version')!r}")
    record = {}
    for field in RECORD_FIELDS:
        if field == "tags" and field not in data:
            data[field] = NO_TAGS  # exported before records had tags
        if field == "canary" and field not in data:
            data[field] = None  # exported before records had canary data
        if field == "site" and field not in data:
            data[field] = None  # exported before records had a site
        if field not in data:
            raise ValueError(f"missing field {field!r}")
        kind, nullable = _FIELD_TYPES[field]
        value = data[field]
        # bool is an int to Python, never to this format
        if (value is None and not nullable) or (value is not None and (type(value) is not kind)):
            raise ValueError(f"{field}: expected {kind.__name__}, got {type(value).__name__}")
        record[field] = value
    _check_semantics(record, latest)
    if chain_hash(record) != record["hash"]:
        raise ValueError("its hash does not match its content (the line was edited)")
    return record


def _refuse_constant(name: str) -> NoReturn:
    # Python's json reads NaN and Infinity; SQLite stores NaN as NULL, breaking the hash.
    raise ValueError(f"{name} is not a number JSON allows")


def _check_semantics(record: Mapping[str, Any], latest: datetime) -> None:
    """What storing the record, detection and the reading commands rely on."""
    for field, value in record.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{field}: not valid Unicode (a lone surrogate)") from None
        elif isinstance(value, int) and not 0 <= value <= _INTEGER_MAX:
            raise ValueError(f"{field}: {str(value)[:40]} is out of range (0 to {_INTEGER_MAX})")
    latency = record["latency_ms"]
    if latency is not None and not 0 <= latency <= sys.float_info.max:  # false for NaN too
        raise ValueError(f"latency_ms: expected a finite number of 0 or more, got {latency}")
    for field in ("hash", "prev_hash"):
        if not _HASH.match(record[field]):
            raise ValueError(f"{field}: expected 64 hex digits")
    at = record["observed_at"]
    try:
        moment: datetime | None = parse_timestamp(at)
    except ValueError:
        moment = None
    if moment is None or timestamp(moment) != at:
        raise ValueError(
            f"observed_at: expected a time like 2026-11-29T10:00:00.000000Z, got {at[:40]!r}"
        )
    if moment > latest:
        raise ValueError(
            f"observed_at: {at} is in the future (this machine's clock says "
            f"{timestamp(latest - FUTURE_SKEW)})"
        )
    if record["fingerprint_state"] not in _STATES:
        raise ValueError(f"fingerprint_state: unknown state {record['fingerprint_state'][:40]!r}")
    if record["source"] not in _SOURCES:
        raise ValueError(f"source: expected probe or traffic, got {record['source'][:40]!r}")
    if record["error_kind"] is not None and record["error_kind"] not in _ERROR_KINDS:
        raise ValueError(f"error_kind: unknown kind {record['error_kind'][:40]!r}")
    if record["site"] is not None and (problem := site_problem(record["site"])):
        raise ValueError(f"site: {problem}")
    for field in ("headers", "tags"):
        try:
            mapping = json.loads(record[field])
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{field}: expected a JSON object of strings")


def _check_groups(
    records: Iterable[tuple[int, dict[str, Any]]],
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Consecutive records of one check of one target: a check writes them together."""
    for _, group in itertools.groupby(records, key=_check_key):
        yield list(group)


def _check_key(record: tuple[int, dict[str, Any]]) -> tuple[str, str, str]:
    _, data = record
    return data["check_id"], data["target"], data["source"]


def _batches(
    groups: Iterable[list[tuple[int, dict[str, Any]]]], size: int
) -> Iterator[list[list[tuple[int, dict[str, Any]]]]]:
    batch: list[list[tuple[int, dict[str, Any]]]] = []
    count = 0
    for group in groups:
        batch.append(group)
        count += len(group)
        if count >= size:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def prune_history(config: Config, older_than: float | None, now: datetime, dry_run: bool) -> Pruned:
    """Delete the records older than `older_than` seconds (else the config's `retention`) from
    the start of the chain, keep a checkpoint so the rest still verifies, and VACUUM."""
    seconds = older_than if older_than is not None else config.retention
    if seconds is None:
        raise ConfigError(
            'say how much history to keep: --older-than 90d, or retention = "90d" in fpmon.toml'
        )
    cutoff = now - timedelta(seconds=seconds)
    if not history_exists(config.history):  # pruning never starts an empty history
        raise missing_history(config.history)
    size_before = _size(config.history)
    with History.open(config.history) as history:
        with history.write():
            plan = history.prune_plan(cutoff)
            # Deleting a stretch that was tampered with would erase the evidence.
            checkpoints = [c for c in history.checkpoints() if c.after_id < plan.last_id]
            result = history.walk_chain(checkpoints, plan.last_id)
            if result.broken is not None:
                raise ChainBroken(
                    f"refusing to prune: the chain is broken: {result.broken.describe()}"
                )
            try:  # a prune lists again the rows of the seals it deletes: they must hold
                verify_seals(history, history.checkpoints())
            except ChainBroken as exc:
                raise ChainBroken(f"refusing to prune: {exc}") from None
            if not dry_run:
                history.prune(plan)
        if not dry_run and (plan.observations or plan.checks):
            history.vacuum()
    return Pruned(
        cutoff, plan.observations, plan.checks, dry_run, size_before, _size(config.history)
    )


def _size(path: HistoryLocation) -> int:
    if isinstance(path, PostgresURL):
        return database_size(path)
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
