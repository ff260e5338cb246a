"""What the history's code needs of a database connection: sqlite3's `execute` and
`executemany` with `?` and `:name` parameters. SQLite's connection is one as it is;
PostgreSQL's is wrapped in one (store/postgres.py), so the reads and writes are written once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    @property
    def description(self) -> Any: ...


class Database(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def close(self) -> None: ...


def dict_rows(cursor: Cursor) -> Iterator[dict[str, Any]]:
    """Each row of `cursor` as {column: value}."""
    names = [column[0] for column in cursor.description]
    for values in cursor:
        yield dict(zip(names, values, strict=True))
