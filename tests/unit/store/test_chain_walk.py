"""verify's walk on SQLite: each record's chained values encoded by SQLite's json_array (in C)
and hashed; a record it encodes otherwise is hashed as chain_hash does. Whatever is stored, the
walk must find what chain_hash's walk finds: an edit that SQLite's encoding would hide (a float
moved by one unit in the last place, which it prints with 15 digits; text it writes unescaped)
must still break the chain."""

from __future__ import annotations

import math
import random
import sqlite3
import struct
from contextlib import closing
from dataclasses import replace
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.domain.canary import CanarySample
from fp_monitor.domain.chain import _ENCODER, CHAINED_COLUMNS, row_links, walk
from fp_monitor.domain.models import ErrorKind
from fp_monitor.store import audit
from fp_monitor.store.audit import _NUMBERS
from fp_monitor.store.history import History
from tests.unit.store.test_history import obs, record

HOSTILE = 'fp_é\x01"\\\x7f\u2028𝄞'
"""A fingerprint no JSON encoder writes alike: non-ASCII, control characters, escapes."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A history of eight records: hostile text, latencies json_array rounds, a failure,
    tags, a site and canary data."""
    path = tmp_path / "history.db"
    canary = CanarySample("fp_a", (("ok", -0.1), ("no", -2.5)), "ok")
    samples = [
        obs("fp_a", latency=0.1),
        obs(HOSTILE, latency=0.1 + 0.2),
        obs("fp_a", latency=float("inf")),
        obs(error=ErrorKind.SERVER, latency=None),
        replace(obs("fp_a"), tags={"team": "é"}),
        replace(obs("fp_a"), site="eu-west"),
        replace(obs("fp_a"), canary=canary, tags={"team": "a"}, site="eu-west"),
        replace(obs("fp_a"), canary=canary),
    ]
    with History.open(path) as history:
        for n, sample in enumerate(samples):
            record(history, [sample], check_id=f"c{n}")
    return path


def execute(path: Path, sql: str, *args: Any) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql, args)
        db.commit()


def walks(path: Path) -> list[Any]:
    """The walk two ways: chain_hash on every record, and SQLite's encoding (walk_chain, as
    the report and verify run it)."""
    with History.open(path) as history, history.snapshot():
        checkpoints = history.checkpoints()
        slow = walk(
            row_links(history.iter_chain()),
            checkpoints,
            history.record_place,
        )
        fast = history.walk_chain(checkpoints)
    return [slow, fast]


def test_every_record_verifies_the_fast_way_or_the_slow_way_alike(path: Path) -> None:
    slow, fast = walks(path)
    assert slow == fast
    assert slow.broken is None and slow.records == 8 and slow.head_id == 8


# name -> the edit of record 4 or 2, as someone who can write the file could make it
EDITS: dict[str, tuple[str, tuple[Any, ...]]] = {
    # 15 significant digits print both as 0.1: json_array's text alone would hide it
    "latency moved by one ulp": (
        "UPDATE observations SET latency_ms = ? WHERE id = 1",
        (math.nextafter(0.1, 1.0),),
    ),
    "latency 0.1 + 0.2 rounded": ("UPDATE observations SET latency_ms = 0.3 WHERE id = 2", ()),
    "a float in an integer column": (
        "UPDATE observations SET http_status = ? WHERE id = 1",
        (math.nextafter(200.0, 300.0),),
    ),
    "text in an integer column": (
        "UPDATE observations SET attempts = 'one' WHERE id = 1",
        (),
    ),
    # a TEXT column keeps a number as text: json_array writes "5", as chain_hash does
    "a number where text was": ("UPDATE observations SET request_shape = 5 WHERE id = 1", ()),
    "non-ASCII text edited": (
        "UPDATE observations SET fingerprint = ? WHERE id = 2",
        (HOSTILE.replace("é", "è"),),
    ),
    "a control character edited": (
        "UPDATE observations SET fingerprint = ? WHERE id = 2",
        (HOSTILE.replace("\x01", "\x02"),),
    ),
    "a DEL added": ("UPDATE observations SET fingerprint = 'fp_a' || char(127) WHERE id = 1", ()),
    "a NUL inside": ("UPDATE observations SET fingerprint = 'fp_a' || char(0) WHERE id = 1", ()),
    "the same bytes as a BLOB": (
        "UPDATE observations SET fingerprint = CAST('fp_a' AS BLOB) WHERE id = 1",
        (),
    ),
    "tags added": ('UPDATE observations SET tags = \'{"a":"b"}\' WHERE id = 1', ()),
    "tags removed": ("UPDATE observations SET tags = '{}' WHERE id = 5", ()),
    "a site added": ("UPDATE observations SET site = 'eu-west' WHERE id = 1", ()),
    "canary data removed": ("UPDATE observations SET canary = NULL WHERE id = 8", ()),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_the_encoding_could_hide_still_breaks_the_chain(path: Path, edit: str) -> None:
    sql, args = EDITS[edit]
    execute(path, sql, *args)
    slow, fast = walks(path)
    assert slow == fast
    assert slow.broken is not None and "was edited" in slow.broken.problem
    edited = int(sql.rsplit("id = ", 1)[1])
    assert slow.broken.id == edited and slow.broken.target == "grok"


# name -> a value json_array writes otherwise than chain_hash: SQLite's bytes then hash to
# what a forger stores, never to what chain_hash makes of the record
FORGED: dict[str, tuple[str, Any]] = {
    "a DEL": ("fingerprint", "fp_a\x7f"),
    "non-ASCII text": ("fingerprint", "fp_é"),
    "a float in an integer column": ("http_status", math.nextafter(200.0, 300.0)),
    "a latency json_array rounds": ("latency_ms", math.nextafter(0.1, 1.0)),
}


@pytest.mark.parametrize("forged", FORGED)
def test_a_hash_forged_from_sqlites_encoding_does_not_verify(path: Path, forged: str) -> None:
    """The record edited and its hash set to SQLite's encoding of it: chain_hash's walk finds
    it edited, and so must the walk that reads SQLite's encoding."""
    column, value = FORGED[forged]
    execute(path, f"UPDATE observations SET {column} = ? WHERE id = 1", value)
    with closing(sqlite3.connect(path)) as db:
        (_, _, _, text, *_) = db.execute(audit._ENCODED_RECORDS, (1, 1)).fetchone()
    if text is not None:  # NULL for a float outside latency_ms: nothing to forge from
        execute(path, "UPDATE observations SET hash = ? WHERE id = 1", sha256(text).hexdigest())
    slow, fast = walks(path)
    assert slow == fast
    assert slow.broken is not None and slow.broken.id == 1 and "was edited" in slow.broken.problem


def test_a_record_moved_or_deleted_breaks_the_fast_walk_where_it_breaks_the_walk(
    path: Path,
) -> None:
    execute(path, "DELETE FROM observations WHERE id = 5")
    slow, fast = walks(path)
    assert slow == fast
    assert slow.broken is not None and slow.broken.id == 6
    assert "a record between them was deleted" in slow.broken.problem


# --- the encoding itself ------------------------------------------------------------------


@pytest.fixture
def sqlite() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


def encoded(db: sqlite3.Connection, *values: Any) -> bytes:
    marks = ", ".join("?" * len(values))
    (text,) = db.execute(f"SELECT CAST(json_array({marks}) AS BLOB)", values).fetchone()
    return bytes(text)


def test_json_array_writes_every_ascii_string_as_python_does_or_not_in_ascii(
    sqlite: sqlite3.Connection,
) -> None:
    for code in range(128):
        for text in (chr(code), f"a{chr(code)}b", chr(code) * 3):
            ours = _ENCODER.encode([text, 5, None, "5", -(2**63)]).encode()
            theirs = encoded(sqlite, text, 5, None, "5", -(2**63))
            # Equal, or SQLite's has a byte chain_hash's never has (the walk then hashes it
            # the slow way): DEL, which Python escapes and SQLite writes as it is.
            assert theirs == ours or not (theirs.isascii() and b"\x7f" not in theirs), code
    for text in ("é", "\u2028", "𝄞", "\udfff".encode("utf-8", "surrogatepass").decode("latin-1")):
        assert not encoded(sqlite, text).isascii()


def test_sqlite_writes_a_float_in_json_as_it_casts_it_to_text(sqlite: sqlite3.Connection) -> None:
    """The walk compares Python's repr with CAST(latency_ms AS TEXT): json_array must write
    the same text, or a float it rounds could pass."""
    rng = random.Random(19)
    values = [rng.uniform(0, 1e5) for _ in range(2000)]
    values += [round(rng.uniform(0, 1e4), 3) for _ in range(2000)]
    # any double, NaN aside (SQLite stores NULL)
    values += [v for (v,) in struct.iter_unpack("<d", rng.randbytes(8 * 4000)) if v == v]
    values += [0.0, -0.0, 1e15, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, math.inf, -math.inf]
    for value in values:
        cast, array = sqlite.execute("SELECT CAST(?1 AS TEXT), json_array(?1)", (value,)).fetchone()
        assert array == f"[{cast}]", value


def test_only_the_numeric_columns_can_hold_a_float(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        declared = {row[1]: row[2] for row in db.execute("PRAGMA table_info(observations)")}
    chained = (*CHAINED_COLUMNS, "tags", "canary", "site")
    assert {c for c in chained if declared[c] != "TEXT"} == {*_NUMBERS, "latency_ms"}


def test_a_blob_anywhere_is_an_edit_not_a_crash(path: Path) -> None:
    execute(path, "UPDATE observations SET raw_response = X'00ff' WHERE id = 3")
    slow, fast = walks(path)
    assert slow == fast and slow.broken is not None and slow.broken.id == 3
