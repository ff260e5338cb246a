"""fpmon.lock: round trip, byte-stable output, the accept rules, and bad files."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import ABSENT, NULL, LockEntry
from fp_monitor.store.lockfile import HEADER, accept_values, read_lock, write_lock

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def test_round_trip_keeps_every_value_state(tmp_path: Path) -> None:
    path = tmp_path / "fpmon.lock"
    entries = {
        "grok": LockEntry(frozenset({"fp_b", "fp_a"}), frozenset({"grok-4-0709"}), T0),
        "legacy": LockEntry(frozenset({NULL, ABSENT, ""}), frozenset({"gpt-4-0613"}), T1),
    }
    write_lock(path, entries)
    assert read_lock(path) == entries
    data = tomllib.loads(path.read_text())
    assert data["version"] == 1
    assert data["targets"]["legacy"]["fingerprints"] == ["", "<absent>", "<null>"]
    assert path.read_text().startswith(HEADER)


def test_output_is_sorted_and_byte_stable(tmp_path: Path) -> None:
    one, two = tmp_path / "one.lock", tmp_path / "two.lock"
    entries = {
        "b": LockEntry(frozenset({"fp_2", "fp_1"}), frozenset({"m"}), T0),
        "a": LockEntry(frozenset({"fp_3"}), frozenset(), T0),
    }
    write_lock(one, entries)
    write_lock(two, dict(reversed(list(entries.items()))))
    assert one.read_bytes() == two.read_bytes()
    text = one.read_text()
    assert text.index("[targets.a]") < text.index("[targets.b]")
    assert text.index('"fp_1"') < text.index('"fp_2"')


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.tuples(
            st.frozensets(st.text(max_size=12), max_size=4),
            st.frozensets(st.text(max_size=12), max_size=3),
        ),
        max_size=4,
    )
)
def test_any_lock_round_trips(tmp_path_factory: pytest.TempPathFactory, data: dict) -> None:
    path = tmp_path_factory.mktemp("lock") / "fpmon.lock"
    entries = {name: LockEntry(fps, models, T0) for name, (fps, models) in data.items()}
    write_lock(path, entries)
    assert read_lock(path) == entries


def test_missing_lock_is_empty(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "absent.lock") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = ", "not valid TOML"),
        ("[targets.a]\nfingerprints = []\n", "no version"),
        ("version = 2\n", "version 2"),
        ("version = 1\ntargets = 3\n", "targets must be a table"),
        ("version = 1\n[targets.a]\nfingerprints = [1]\n", "[targets.a] fingerprints"),
        ("version = 1\n[targets.a]\naccepted_at = 'yesterday'\n", "[targets.a] accepted_at"),
    ],
)
def test_bad_lock_is_a_one_line_usage_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fpmon.lock"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_lock(path)
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE
    assert expected in message and str(path) in message and "\n" not in message


def test_accept_adds_by_default_and_replace_replaces() -> None:
    current = LockEntry(frozenset({"fp_a"}), frozenset({"m1"}), T0)
    added, change = accept_values(
        "t", current, frozenset({"fp_b"}), frozenset({"m1"}), replace=False, now=T1
    )
    assert added == LockEntry(frozenset({"fp_a", "fp_b"}), frozenset({"m1"}), T1)
    assert (change.added, change.removed) == (("fp_b",), ())
    replaced, change = accept_values(
        "t", current, frozenset({"fp_b"}), frozenset({"m2"}), replace=True, now=T1
    )
    assert replaced == LockEntry(frozenset({"fp_b"}), frozenset({"m2"}), T1)
    assert (change.removed, change.added_models, change.removed_models) == (
        ("fp_a",),
        ("m2",),
        ("m1",),
    )


def test_accepted_at_moves_only_when_the_entry_changes() -> None:
    current = LockEntry(frozenset({"fp_a", "fp_b"}), frozenset({"m"}), T0)
    entry, change = accept_values(
        "t", current, frozenset({"fp_a"}), frozenset({"m"}), replace=False, now=T1
    )
    assert entry.accepted_at == T0 and not change.changed
    first, change = accept_values(
        "t", None, frozenset({"fp_a"}), frozenset({"m"}), replace=False, now=T1
    )
    assert first.accepted_at == T1 and change.changed
