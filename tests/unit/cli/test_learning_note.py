"""The learning note of `fpmon check`: once when a target starts learning and once when it
stops, never a made-up estimate, and never the promise of `learned` where the status is `new`.
In-process against the fake API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI, Fault
from tests.conftest import Run

LEARNING = {"learning": True, "bootstrap_samples": 2, "samples": 2, "learn_min_samples": 4}


def notes(run: Run) -> list[str]:
    return [line for line in run.out.splitlines() if line.startswith("beta: learning")]


def test_the_note_shows_when_learning_starts_and_when_it_ends(
    cli: Callable[..., Run], write_config: Callable[..., Path], fake: FakeAPI
) -> None:
    write_config(fake.base_url, beta={"model": "model-b", **LEARNING})
    first, second, third = cli("check"), cli("check"), cli("check")
    assert [r.code for r in (first, second, third)] == [0, 0, 0]
    [started] = notes(first)
    assert started.startswith("beta: learning its served set (unseen share estimated at 0.0%)")
    [ended] = notes(second)
    assert ended.startswith("beta: learning is over (unseen share estimated at 0.0%)")
    assert notes(third) == []


def test_a_failing_target_shows_no_estimate_it_does_not_have(
    cli: Callable[..., Run], write_config: Callable[..., Path], fake: FakeAPI
) -> None:
    write_config(fake.base_url, beta={"model": "model-b", **LEARNING})
    fake.add_faults([Fault("status", status=500, times=99)])
    table = cli("check", "--no-record")
    assert table.code == 3
    assert "0.0%" not in table.out and notes(table) == []
    [target] = json.loads(cli("check", "--json").out)["targets"]
    assert target["unseen_estimate"] is None


def test_locked_new_is_not_said_to_be_learned(
    cli: Callable[..., Run], write_config: Callable[..., Path], fake: FakeAPI
) -> None:
    write_config(fake.base_url, beta={"model": "model-b", **LEARNING})
    run = cli("check", "--locked")
    assert run.code == 1
    assert "new" in run.out.splitlines()[2]
    assert "learned" not in run.out
