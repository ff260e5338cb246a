"""Checks recorded in a batch, in one transaction: the traffic paths, where every recorded
response is its own check (traffic/recording.py). The facts are read once, at the start, and
carried from check to check in memory (domain.running_facts); the records, the known values and
the check rows of the whole batch are written with one statement each, where
History.append_check takes several per check. The rows and the chain are those of appending
the checks one by one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fp_monitor.domain.chain import chain_hash
from fp_monitor.domain.models import Observation, Source, TargetResult
from fp_monitor.domain.running_facts import RunningFacts
from fp_monitor.store.connection import _errors
from fp_monitor.store.history import History
from fp_monitor.store.recording import (
    CHECK_INSERT,
    check_values,
    count_known,
    known_samples,
)
from fp_monitor.store.rows import _marks, observation_row


@dataclass(frozen=True)
class PendingCheck:
    """One check to append: what History.append_check takes."""

    check_id: str
    checked_at: datetime
    result: TargetResult
    observations: tuple[Observation, ...]


def append_checks(history: History, checks: Sequence[PendingCheck], source: Source) -> None:
    """Append `checks` in order, as History.append_check would one by one; call inside
    `write()`."""
    db = history._db
    with _errors(history.path):
        head_id, prev_hash = history._head()
        columns: list[str] = []
        records: list[tuple[Any, ...]] = []
        for check in checks:
            for observation in check.observations:
                row = observation_row(check.check_id, observation, prev_hash, source)
                row["hash"] = prev_hash = chain_hash(row)
                head_id += 1
                columns = ["id", *row]
                records.append((head_id, *row.values()))
        if records:
            db.executemany(
                f"INSERT INTO observations ({', '.join(columns)}) VALUES ({_marks(len(columns))})",
                records,
            )
        count_known(
            db,
            [k for c in checks for k in known_samples(c.result.name, c.observations)],
            source,
        )
        # executemany gives no RETURNING rows: the ids are those after the last one before,
        # since nothing else writes until this transaction ends (write() holds the lock).
        (before,) = db.execute("SELECT coalesce(max(id), 0) FROM checks").fetchone()
        db.executemany(
            CHECK_INSERT,
            [check_values(c.check_id, c.checked_at, c.result, source) for c in checks],
        )
        history._unsealed.extend(
            ("checks", int(row_id))
            for (row_id,) in db.execute(
                "SELECT id FROM checks WHERE id > ? ORDER BY id", (int(before),)
            )
        )


def running_facts(history: History, target: str, kind: Source) -> RunningFacts:
    """The facts a batch of checks of `kind` starts from: History.facts, and whether its
    previous check is of that kind (when it is not, the batch's first successful check
    replaces it whatever its time). Call inside the batch's `write()`, so that nothing else is
    recorded until the batch commits."""
    facts = history.facts(target, kind=kind)
    with _errors(history.path):
        own = history._db.execute(
            "SELECT 1 FROM checks WHERE target = ? AND source = ? AND fingerprints IS NOT NULL"
            " ORDER BY checked_at DESC LIMIT 1",
            (target, kind.value),
        ).fetchone()
    return RunningFacts(facts, own_previous=own is not None)
