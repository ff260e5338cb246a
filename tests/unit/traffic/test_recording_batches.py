"""Recorded responses written in a batch (one transaction, the facts read once and carried in
memory, the rows inserted together) give what writing them one at a time gives: the same
statuses, the same notifications, the same known values and a history that verifies. On both
stores (`history_url`)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.audit import verify_history
from fp_monitor.check import detect_target
from fp_monitor.config.history_url import history_location
from fp_monitor.domain.canary import CanaryMode, CanaryStatus, CanaryVerdict
from fp_monitor.domain.errors import ChainBroken
from fp_monitor.domain.learning import LearningSettings
from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    ErrorKind,
    LockEntry,
    Observation,
    Source,
    Status,
    TargetFacts,
    TargetResult,
)
from fp_monitor.notify.events import Notification
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import write_lock
from fp_monitor.store.recording import PendingCheck
from fp_monitor.traffic.recording import Recorder
from tests.conftest import edit_stored, postgres_database, stored_rows
from tests.unit.store.test_history import T0, obs

TARGET = "app"


def traffic(
    fingerprint: str | None,
    seconds: float,
    *,
    model: str = "m-1",
    error: bool = False,
    backend: str = "b1",
) -> Observation:
    return obs(
        fingerprint,
        model,
        target=TARGET,
        at=T0 + timedelta(seconds=seconds),
        error=ErrorKind.SERVER if error else None,
        headers={"x-backend": backend},
    )


def sequence() -> list[Observation]:
    """Every status traffic can get, in an order a batch of spans can have: a first value, the
    same, changes (of a header too), the four fingerprint states, errors, values learned while
    learning and, once learning has ended (after the default learn_min_samples without a value
    seen once), `new`
    values and a new model. Some spans are earlier than the ones before them, or at the same
    moment: spans come out of order."""
    seen: list[Observation] = [
        traffic("fp_a", 1),
        traffic("fp_a", 2),
        traffic("fp_b", 3, backend="b2"),
        traffic("fp_b", 2.5),  # earlier than the previous one: it does not become the previous
        traffic("", 4),
        traffic(NULL, 4),  # the same moment as the one before
        traffic(ABSENT, 5),
        traffic(None, 6, error=True),
    ]
    ending = LearningSettings().min_samples
    seen += [
        traffic(("fp_a", "fp_b", "", NULL, ABSENT)[n % 5], 10 + n * 100 / ending)
        for n in range(ending)
    ]
    seen += [
        traffic("fp_c", 200),
        traffic("fp_a", 199),
        traffic("fp_c", 201),
        traffic("fp_a", 202, model="m-2"),
        traffic("fp_d", 202),  # `new` at the moment of the latest `new`: now the latest
        traffic("fp_e", 201.5),  # `new` before the latest `new`: not the latest
        traffic(None, 203, error=True),
        traffic("fp_a", 150),  # long before the latest `new`
    ]
    return seen


def detected(observation: Observation, facts: TargetFacts) -> TargetResult:
    """The detection of one response, learning with the default settings."""
    return detect_target(
        TARGET,
        [observation],
        facts,
        settings=LearningSettings(),
        expect=frozenset(),
        entry=None,
        checked_at=observation.observed_at,
    )


def test_running_facts_are_the_facts_the_history_gives_after_each_check(
    history_url: str,
) -> None:
    """The facts carried through a batch equal History.facts read after every check of it,
    from a history whose only check is a probe's: the previous check until traffic succeeds,
    however much later than the traffic it was made."""
    with History.open(history_location(history_url, "test")) as history:
        probe = traffic("fp_p", 1000)
        with history.write():
            result = detected(probe, history.facts(TARGET))
            history.append_check("probe", probe.observed_at, result, [probe], Source.PROBE)
        statuses = []
        with history.write():
            running = history.running_facts(TARGET, Source.TRAFFIC)
            assert not running.own_previous
            for n, observation in enumerate(sequence()):
                at = observation.observed_at
                result = detected(observation, running.facts)
                history.append_checks(
                    [PendingCheck(f"c{n}", at, result, (observation,))], Source.TRAFFIC
                )
                running = running.after(result, [observation], at)
                assert running.facts == history.facts(TARGET, kind=Source.TRAFFIC), n
                statuses.append(result.status)
    assert {Status.SAME, Status.CHANGED, Status.LEARNED, Status.NEW, Status.ERROR} <= set(statuses)


@contextmanager
def second_history(history_url: str, isolated: Path) -> Iterator[str]:
    """Another empty history on the same store as `history_url`."""
    if history_url.startswith("postgresql://"):
        with postgres_database() as url:
            yield url
    else:
        yield str(isolated / "state" / "one-at-a-time.db")


def written(recorder: Recorder, observations: list[Observation]) -> list[Notification]:
    """What the recorder's writer does with one batch: detect and record each response in one
    transaction; the notifications it calls for."""
    return recorder._writing.run(functools.partial(recorder._write, observations=observations))


def history_contents(url: str) -> dict[str, Any]:
    """What a reader of the history sees, without the random check ids and the chain's hashes
    (which cover those ids)."""
    return {
        "checks": stored_rows(
            url,
            "SELECT target, checked_at, status, fingerprints, models, headers, samples, errors,"
            " learning, source FROM checks ORDER BY id",
        ),
        "observations": stored_rows(
            url,
            "SELECT observed_at, source, fingerprint, fingerprint_state, resolved_model,"
            " response_id, error_kind, headers, tags FROM observations ORDER BY id",
        ),
        "known": stored_rows(url, "SELECT * FROM known_values ORDER BY 1, 2, 3"),
        "known_by_source": stored_rows(
            url, "SELECT * FROM known_values_by_source ORDER BY 1, 2, 3, 4"
        ),
    }


@pytest.mark.parametrize("locked", [False, True], ids=["learning", "locked"])
def test_a_batch_records_what_one_response_at_a_time_records(
    history_url: str, isolated: Path, locked: bool
) -> None:
    """Learning, or a lock entry without fp_c and m-2: each response outside it is `new`, and
    announced once."""
    if locked:
        accepted = frozenset({"fp_a", "fp_b", "", NULL, ABSENT})
        write_lock(isolated / "fpmon.lock", {TARGET: LockEntry(accepted, frozenset({"m-1"}))})
    observations = sequence()
    with second_history(history_url, isolated) as single_url:
        batched = Recorder(TARGET, history=history_url)
        single = Recorder(TARGET, history=single_url)
        try:
            batch_news = written(batched, observations)
            single_news = [n for o in observations for n in written(single, [o])]
        finally:
            batched.flush()
            single.flush()
        batch_contents = history_contents(history_url)
        assert batch_contents == history_contents(single_url)
        for url in (history_url, single_url):
            verified = verify_history(history_location(url, "test"))
            assert verified.records == len(observations)
    # The same events of the same detections.
    assert [(n.event, n.target, n.checked_at) for n in batch_news] == [
        (n.event, n.target, n.checked_at) for n in single_news
    ]
    statuses = [row[2] for row in batch_contents["checks"]]
    assert {"same", "changed", "error", "new"} <= set(statuses)
    events = [n.event.value for n in batch_news]
    if locked:  # the lock is the previous check of the first
        assert statuses.count("new") == 5  # fp_c twice, m-2, fp_d, fp_e
        assert events == ["new"] * 4  # fp_c announced once
    else:
        assert statuses[0] == "first"
        assert statuses.count("new") == 4  # fp_c, m-2, fp_d, fp_e: once recorded, known
        assert statuses.count("learned") == 4  # fp_b, "", <null>, <absent>
        assert events == ["learned"] * 4 + ["new"] * 4


def test_the_seal_lists_each_check_row_as_it_reads_back(history_url: str) -> None:
    """The seal hashes each check row from the values just written, not read back: the hash is
    the one of the row as stored (a canary verdict, a later sealed column, included), verify
    passes, and a check row edited afterwards fails it."""
    verdict = CanaryVerdict(
        CanaryMode.LOGPROBS, CanaryStatus.DRIFT, ("a",), ("b",), 0.1, 0.2, 0.3, 3
    )
    location = history_location(history_url, "test")
    with History.open(location) as history:
        with history.write():
            running = history.running_facts(TARGET, Source.TRAFFIC)
            checks = []
            for n, observation in enumerate(sequence()):
                at = observation.observed_at
                result = detected(observation, running.facts)
                if n == 3:
                    result = replace(result, canary=verdict)
                checks.append(PendingCheck(f"c{n}", at, result, (observation,)))
                running = running.after(result, [observation], at)
            history.append_checks(checks, Source.TRAFFIC)
            listed = list(history._unsealed)
            read_back = [history._sealed_row("checks", row.row_id) for row in listed]
        assert listed == read_back
        assert len(listed) == len(checks)
    assert stored_rows(history_url, "SELECT canary FROM checks WHERE check_id = 'c3'") != [(None,)]
    verify_history(location)
    edit_stored(history_url, "UPDATE checks SET status = 'same' WHERE check_id = 'c5'")
    with pytest.raises(ChainBroken, match="check"):
        verify_history(location)
