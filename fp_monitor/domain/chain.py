"""The tamper-evident chain: each observation's hash covers its content and the hash of the
record before it. Pure: the hashes, and the walk that `fpmon verify` and `fpmon prune` run.

A chain can legitimately break in two places, each recorded as a checkpoint when it happens:
`prune` deleted the oldest records (the first record kept chains to the last one deleted) and
`import` appended records from another history (their first one chains to a record of that
history). Every other break is an edit, a deletion or a move.

What is written beside the records (check rows, checkpoints, the known values of pruned
records) is sealed: every write transaction ends with a seal that lists the hash of each row it
wrote, binds the record it was written after, and chains to the seal before it. So a row edited
or added later, a checkpoint bridging a deleted record, or a record deleted before a seal
breaks a seal, and rewriting the seals changes the last seal's hash, the head to keep elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

GENESIS_HASH = "0" * 64

# The chained content of an observation: every column but id and hash, in this order.
CHAINED_COLUMNS = (
    "check_id",
    "observed_at",
    "source",
    "target",
    "provider",
    "base_url",
    "requested_model",
    "resolved_model",
    "fingerprint",
    "fingerprint_state",
    "response_id",
    "request_id",
    "http_status",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "headers",
    "error_kind",
    "error_message",
    "request_shape",
    "raw_response",
    "prev_hash",
)
NO_TAGS = "{}"
RECORD_FIELDS = (*CHAINED_COLUMNS, "tags", "canary", "site", "hash")
"""A record as it is stored (beside its id) and exported."""


class Row(Protocol):
    """A record by column name: a dict, or the sqlite3.Row that verify reads by the million."""

    def __getitem__(self, key: str, /) -> Any: ...


# The chained values of a row in one C call (a tuple, encoded as the same JSON array).
_CHAINED_VALUES = operator.itemgetter(*CHAINED_COLUMNS)


def chain_hash(row: Row) -> str:
    values: tuple[Any, ...] = _CHAINED_VALUES(row)
    # Tags came with schema 0007: hashed only when there are some, so that every record
    # written before keeps its hash, and adding or removing tags later still breaks the chain.
    try:
        tags = row["tags"]
    except (KeyError, IndexError):
        tags = NO_TAGS
    # The canary's data came with schema 0015: hashed, after the tags whatever they are, only
    # when a record has some, so that every record written before keeps its hash.
    try:
        canary = row["canary"]
    except (KeyError, IndexError):
        canary = None
    if canary is not None:
        values += (tags, canary)
    elif tags != NO_TAGS:
        values += (tags,)
    # The site came with schema 0013: hashed only when there is one, and as a ["site", name]
    # pair, so that no site can hash like a record's tags or canary data (both strings).
    try:
        site = row["site"]
    except (KeyError, IndexError):
        site = None
    if site is not None:
        values += (["site", site],)
    return _sha256(values)


def _sha256(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()


def encoded_matches(encoded: bytes, hash_: str) -> bool:
    """Whether `encoded`, a record's chained values as JSON made elsewhere (SQLite's
    json_array), hashes to `hash_` as chain_hash's bytes did: equal bytes, and this module's
    JSON escapes every byte outside printable ASCII, so text holding one is other bytes."""
    return (
        hashlib.sha256(encoded).hexdigest() == hash_
        and encoded.isascii()
        and b"\x7f" not in encoded
    )


# One encoder for every hash: json.dumps with separators builds a new one per call, a quarter
# of the encoding time when verify hashes a million records. The same bytes (the hash of every
# record ever written depends on them).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _canonical(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


# The sealed content of a row beside the records, in this order (a column added later is not
# sealed unless added here, which changes the hash of every row sealed before: don't).
SEALED_COLUMNS = {
    "checks": (
        "id",
        "check_id",
        "target",
        "source",
        "checked_at",
        "status",
        "fingerprints",
        "models",
        "headers",
        "samples",
        "errors",
        "learning",
    ),
    "chain_checkpoints": ("id", "kind", "after_id", "from_hash", "hash", "records", "created_at"),
}


LATER_SEALED_COLUMNS = {"checks": ("canary",)}
"""Columns that came after rows were first sealed: a row's value is sealed, after its
SEALED_COLUMNS, only when it is not null, so that every row sealed before keeps its hash (a
check's canary verdict came with schema 0015_canary)."""


def sealed_columns(table: str) -> tuple[str, ...]:
    """The columns of `table` that `row_hash` takes, in order."""
    return SEALED_COLUMNS[table] + LATER_SEALED_COLUMNS.get(table, ())


def row_hash(table: str, values: Sequence[Any]) -> str:
    """The hash of a row of `table`: its `sealed_columns` values, as stored."""
    fixed = len(SEALED_COLUMNS[table])
    # Values given without the later columns hash as a row that has none.
    later = zip(LATER_SEALED_COLUMNS.get(table, ()), values[fixed:], strict=False)
    return _sha256([table, *values[:fixed], *([c, v] for c, v in later if v is not None)])


@dataclass(frozen=True)
class SealedRow:
    """One row as a seal lists it; kept after the row is pruned, which the row's time (a check's
    `checked_at`, an import checkpoint's `after_id`) must then explain."""

    seal: int
    table: str
    row_id: int
    row_hash: str
    checked_at: str | None
    after_id: int | None

    def content(self) -> list[Any]:
        return [self.table, self.row_id, self.row_hash, self.checked_at, self.after_id]


def rows_digest(rows: Iterable[SealedRow]) -> str:
    """The digest of what a seal lists, in (table, row id) order."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: (r.table, r.row_id)):
        digest.update(_canonical(row.content()) + b"\n")
    return digest.hexdigest()


def baseline_digest(rows: Iterable[Sequence[Any]]) -> str:
    """The digest of the known values of pruned records (known_baseline), in key order."""
    return _sha256(sorted(list(row) for row in rows))


@dataclass(frozen=True)
class Seal:
    """The end of one write transaction: it lists the rows written beside the records, binds
    the record the chain had reached (`after_id`, `record_hash`) and chains to the seal before."""

    id: int
    prev_hash: str
    after_id: int
    record_hash: str
    rows: int
    rows_digest: str
    baseline: str
    """The digest of known_baseline when the seal was written: only a prune changes it."""
    pruned_before: str | None
    """Of a prune's seal: the latest cutoff of any prune so far; a pruned check is older."""
    trimmed_hash: str | None
    """Of a prune's seal: the prev_hash of the first seal it kept (it deletes older seals)."""
    created_at: str
    hash: str

    def computed_hash(self) -> str:
        return _sha256(
            [
                self.id,
                self.prev_hash,
                self.after_id,
                self.record_hash,
                self.rows,
                self.rows_digest,
                self.baseline,
                self.pruned_before,
                self.trimmed_hash,
                self.created_at,
            ]
        )


class CheckpointKind(StrEnum):
    PRUNE = "prune"
    """The records up to `after_id` were deleted by `fpmon prune`."""
    IMPORT = "import"
    """The records after `after_id` were imported and continue another history's chain."""


@dataclass(frozen=True)
class Checkpoint:
    """A recorded break: the chain had reached `from_hash`; the next record chains to `hash`."""

    kind: CheckpointKind
    after_id: int
    from_hash: str
    hash: str
    records: int
    """How many records the prune deleted (0 for an import)."""
    created_at: datetime


@dataclass(frozen=True)
class Break:
    """The first place where the stored chain does not hold."""

    id: int
    """The record that does not verify; for a checkpoint, the record it follows."""
    problem: str
    target: str | None = None
    """None when the break is a checkpoint's rather than a record's."""
    observed_at: str | None = None

    def describe(self) -> str:
        if self.target is None:
            return f"the checkpoint after record {self.id} {self.problem}"
        return f"record {self.id} ({self.target}, {self.observed_at}) {self.problem}"


Link = tuple[int, str, str, bool]
"""One record as the walk reads it: id, prev_hash, hash, and whether its content still hashes
to its hash (the store decides that the fast way it can, see store/audit.py)."""

Locate = Callable[[int], tuple[str, str]]
"""The target and observed_at of a record, by id: what a break names (read only then)."""


def row_links(rows: Iterable[Row]) -> Iterator[Link]:
    """The links of rows read whole (id, hash and the chained columns): each hashed here."""
    for row in rows:
        try:
            intact = chain_hash(row) == row["hash"]
        except TypeError:  # a value JSON cannot hold (a BLOB): fpmon never writes one
            intact = False
        yield row["id"], row["prev_hash"], row["hash"], intact


@dataclass(frozen=True)
class Walk:
    records: int
    """Records walked (up to and including the broken one)."""
    head_id: int
    head_hash: str
    """The last record that verified (or the checkpoint or genesis the chain starts from)."""
    broken: Break | None


def walk(links: Iterable[Link], checkpoints: Sequence[Checkpoint], locate: Locate) -> Walk:
    """Check each record (in id order) against its own hash and against the record before it,
    crossing the recorded checkpoints; stop at the first break."""
    head_id, expected = 0, GENESIS_HASH
    prunes = [c for c in checkpoints if c.kind is CheckpointKind.PRUNE]
    for prune in prunes:
        # Each prune continues from where the one before it stopped: a deleted or edited
        # checkpoint cannot hide records.
        if prune.from_hash != expected:
            return Walk(0, head_id, expected, _checkpoint_break(prune))
        head_id, expected = prune.after_id, prune.hash
    junctions = sorted(
        (c for c in checkpoints if c.kind is CheckpointKind.IMPORT and c.after_id >= head_id),
        key=lambda c: c.after_id,
    )
    count = 0
    for record_id, prev_hash, hash_, intact in links:
        count += 1
        while junctions and junctions[0].after_id < record_id:
            junction = junctions.pop(0)
            if junction.from_hash != expected:
                problem = _link_problem(head_id, record_id)
                return Walk(count, head_id, expected, _break(locate, record_id, problem))
            expected = junction.hash
        if not intact:
            problem = "was edited: its content no longer matches its hash"
            return Walk(count, head_id, expected, _break(locate, record_id, problem))
        if prev_hash != expected:
            problem = _link_problem(head_id, record_id)
            return Walk(count, head_id, expected, _break(locate, record_id, problem))
        head_id, expected = record_id, hash_
    if junctions:
        return Walk(count, head_id, expected, _checkpoint_break(junctions[0]))
    return Walk(count, head_id, expected, None)


def _link_problem(previous_id: int, record_id: int) -> str:
    before = f"the record before it (id {previous_id})" if previous_id else "the start of the chain"
    if record_id != previous_id + 1:
        return f"does not follow {before}: a record between them was deleted"
    return f"does not follow {before}: it was moved out of order, or a record was deleted"


def _break(locate: Locate, record_id: int, problem: str) -> Break:
    target, observed_at = locate(record_id)
    return Break(record_id, problem, str(target), str(observed_at))


def _checkpoint_break(checkpoint: Checkpoint) -> Break:
    return Break(
        checkpoint.after_id,
        f"({checkpoint.kind.value}, {checkpoint.created_at:%Y-%m-%d %H:%M} UTC) does not match "
        "the records around it: a record or a checkpoint was deleted or edited",
    )
