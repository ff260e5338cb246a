"""Opening a history's database safely, and what every part of the History class shares:
the connection, where the history is, its errors as one HistoryError line.

A SQLite history is a file created owner-only, in WAL mode, refused when it (or its -wal
and -shm files) is not a regular file; PostgreSQL's connection is store/postgres.py."""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.domain.chain import SealedRow
from fp_monitor.domain.errors import HistoryError
from fp_monitor.store.dialect import Database

BUSY_TIMEOUT_SECONDS = 60.0
_T = TypeVar("_T")


class Connected:
    """What the parts of History share: the database, the path, and what the write
    transaction under way leaves for its seal."""

    def __init__(self, connection: Database, path: HistoryLocation) -> None:
        self._db = connection
        self.path = path
        # What the write transaction under way leaves for its seal (see _seal).
        self._unsealed: list[SealedRow] = []
        self._relisted: list[SealedRow] = []
        self._pruned_before: str | None = None
        self._trimmed_hash: str | None = None

    def fetch_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query, for the store's reading modules (report, canary, sites):
        through this connection and its error mapping, so that a locked or corrupt history is
        one line and exit 4, as for every other reading command."""
        with history_errors(self.path):
            rows = self._db.execute(sql, params).fetchall()
        # fpmon writes no bytes: a BLOB is an edit made outside it (SQLite stores one in any
        # column), and the readers would fail on it as if fpmon had a bug.
        if any(isinstance(value, bytes) for row in rows for value in row):
            raise HistoryError(
                f"history {self.path}: a stored value is bytes where fpmon writes text: the"
                " history was edited outside fpmon; run `fpmon verify` to find the record, and"
                " restore the file from a copy or an export"
            )
        return rows

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # SQL text that differs between the stores (store/report_queries.py).
    def index_hint(self, index: str) -> str:
        """What follows a table's name to make SQLite read it through `index` (SQLite has no
        statistics unless ANALYZE ran, which fpmon never runs)."""
        return f" INDEXED BY {index}"

    def epoch_seconds(self, column: str) -> str:
        """An expression: the whole seconds since the epoch of a timestamp column."""
        return f"CAST(strftime('%s', {column}) AS INTEGER)"

    def _decode(self, where: str, column: str, decode: Callable[[Any], _T], value: Any) -> _T:
        """A stored value as its reader needs it; a corrupt one is a HistoryError naming the
        row, not a crash in whatever reads it next."""
        try:
            return decode(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise HistoryError(
                f"history {self.path}: {where}: {column} is corrupt ({str(exc)[:80]}): "
                "run `fpmon verify`, and restore the file from a copy or an export"
            ) from None


def enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL; SQLite does not apply the busy timeout to this pragma, so processes
    creating one history at the same moment wait here instead of failing."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))


def create_private(path: Path) -> None:
    """Create the file readable by its owner only, before SQLite creates it with the umask."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        refuse_special(path)
    except FileNotFoundError:
        # Not O_EXCL, which refuses a symlink to nothing: SQLite then made its target 0644.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def refuse_special(path: Path) -> None:
    """HistoryError unless the history (FileNotFoundError when it is missing) and the -wal and
    -shm files SQLite keeps beside it are regular files: SQLite waits forever on a FIFO."""
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            if file == path:
                raise
            continue
        if not stat.S_ISREG(mode):
            kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), "a special file")
            what = "it" if file == path else f"{file} beside it"
            raise HistoryError(
                f"history {path}: {what} is {kind}, not a regular file: "
                "pass --history with the path of a history file"
            )


def _why_unwritable(path: Path, problem: str) -> str:
    """SQLite says "read-only" or "unable to open" when it cannot create its -wal and -shm
    files beside the history, however writable the history itself is: name the directory."""
    directory = path.resolve().parent
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return (
            f"the directory {directory} is read-only, and SQLite keeps its -wal and -shm files "
            "beside the history: make the directory writable, or pass --history"
        )
    if "readonly" in problem:
        return "the file is read-only: check its permissions or pass --history"
    return problem


@contextmanager
def history_errors(path: HistoryLocation) -> Iterator[None]:
    """sqlite3 and OS errors -> HistoryError naming the file and what to do (PostgreSQL's
    connection turns its driver's errors into HistoryError itself)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            text = "the file is not an fpmon history (not a SQLite database)"
        elif "locked" in text or "busy" in text:
            text = "locked by another process; try again, or pass another --history"
        elif isinstance(path, Path) and ("readonly" in text or "unable to open" in text):
            text = _why_unwritable(path, text)
        raise HistoryError(f"history {path}: {text}") from exc
    except OSError as exc:
        text = exc.strerror or str(exc)
        if isinstance(path, Path) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            text = _why_unwritable(path, text)
        raise HistoryError(f"history {path}: {text}") from exc
