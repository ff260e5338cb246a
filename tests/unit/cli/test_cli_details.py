"""Small things a new user reads: --jitter takes a share or a duration and says which is which,
counts agree with their nouns, `notify test` names the notifiers that exist, a piped watch says
when a target recovers, and a timeline never reads "0s per cell". In-process (the `cli` fixture)
against the fake API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault
from fp_monitor.domain.text import show_duration
from tests.conftest import Run


@pytest.fixture
def configured(write_config: Callable[..., Path], fake: FakeAPI) -> FakeAPI:
    write_config(fake.base_url, alpha={"model": "model-b", "samples": 1})
    return fake


@pytest.mark.parametrize(
    ("jitter", "message"),
    [
        ("5", "'5' has no unit: write 5% (a share of the interval) or 5s"),
        ("often", "'often' is neither a share of the interval (10%) nor a duration (5s)"),
        ("2m", "--jitter 2m: must be shorter than --every, or a share like 10%"),
        ("100%", "expected a percentage from 0% to 99%"),
    ],
)
def test_a_jitter_without_its_unit_is_refused_saying_both_readings(
    cli: Callable[..., Run], configured: FakeAPI, jitter: str, message: str
) -> None:
    run = cli("watch", "--every", "1m", "--count", "1", "--jitter", jitter)
    assert run.code == 2
    [line] = run.err.splitlines()
    assert message in line, line
    assert configured.requests() == []


@pytest.mark.parametrize("jitter", ["0", "5%", "5s", "0s"])
def test_a_jitter_as_a_share_or_a_duration_runs(
    cli: Callable[..., Run], configured: FakeAPI, jitter: str
) -> None:
    run = cli("watch", "--every", "1m", "--count", "1", "--jitter", jitter)
    assert run.code == 0, run.err
    assert " alpha first " in run.out


def test_a_piped_watch_says_when_a_target_recovers(
    cli: Callable[..., Run], configured: FakeAPI
) -> None:
    assert cli("check").code == 0
    configured.add_faults([Fault("status", status=500, times=2)])
    run = cli("watch", "--every", "0s", "--count", "3")
    assert run.code == 3, run.err
    lines = run.out.splitlines()
    statuses = [line.split()[1:3] for line in lines]
    assert statuses == [["alpha", "error"], ["alpha", "error"], ["alpha", "same"]]
    assert "recovered after 2 failed checks; fingerprint: fp_cccccccccc" in lines[2]


def test_counts_agree_with_their_nouns(
    cli: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    assert cli("check").code == 0
    exported = cli("export", "--output", "one.jsonl")
    assert exported.out.strip() == "exported 1 record to one.jsonl"
    imported = cli("import", "one.jsonl", "--history", "other.db")
    assert imported.out.startswith("imported 1 record (1 check) into other.db; ")
    assert "0 invalid lines skipped" in imported.out
    assert cli("verify", "--history", "other.db").out.startswith("verified 1 record: ")


def test_notify_test_names_the_notifiers_that_exist(
    cli: Callable[..., Run], fake: FakeAPI, isolated: Path
) -> None:
    config = isolated / "fpmon.toml"
    target = f'[targets.alpha]\nprovider = "custom"\nbase_url = "{fake.base_url}"\nmodel = "m"\n'
    config.write_text(target)
    none = cli("notify", "test", "nope")
    assert none.code == 2 and "it has no [notify.NAME] table" in none.err
    config.write_text(
        target
        + '[notify.ops]\ntype = "command"\nrun = ["true"]\n'
        + '[notify.pager]\ntype = "command"\nrun = ["true"]\n'
    )
    run = cli("notify", "test", "nope")
    assert run.code == 2
    [line] = run.err.splitlines()
    assert line.endswith("no [notify.nope] table; its notifiers: ops, pager"), line
    assert "did you mean 'ops'?" in cli("notify", "test", "opps").err


def test_a_timeline_of_less_than_a_minute_never_reads_zero_seconds_per_cell(
    cli: Callable[..., Run], configured: FakeAPI
) -> None:
    assert cli("check").code == 0
    [title] = [line for line in cli("stats").out.splitlines() if "per cell" in line]
    assert " 0s per cell" not in title
    assert show_duration(timedelta(milliseconds=250)) == "250ms"
    assert show_duration(timedelta(microseconds=10)) == "1ms"
    assert show_duration(timedelta(0)) == "0s"
