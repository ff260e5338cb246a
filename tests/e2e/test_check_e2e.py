"""The installed `fpmon check` against the fake API over loopback: exit codes, table rows,
the JSON contract and what the history holds afterwards."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import ABSENT, FakeAPI, Fault, ModelBehaviour
from tests.conftest import Run

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"


def rows(output: str) -> list[list[str]]:
    """The table rows of plain output, each split into its cells."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


def row_of(output: str, first_cell: str) -> list[str]:
    return next(r for r in rows(output) if r[0] == first_cell)


def history_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def one_target(fake: FakeAPI, write_config: Callable[..., Path]) -> Path:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 4})
    return Path("history.db")


def test_first_same_new_changed_exit_codes_and_rows(
    fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path
) -> None:
    first = fpmon("check", "--history", str(one_target))
    assert first.code == 0, first.err
    assert row_of(first.out, "alpha")[:4] == ["alpha", "first", f"{A}, {B}", "model-a-2026"]

    same = fpmon("check", "--history", str(one_target))
    assert (same.code, row_of(same.out, "alpha")[1]) == (0, "same")
    assert "changes" not in same.out

    fake.rotate("model-a", [C])
    new = fpmon("check", "--history", str(one_target))
    assert new.code == 1
    assert row_of(new.out, "alpha")[1:3] == ["new", C]
    diff = [r for r in rows(new.out) if r[:2] == ["alpha", "fingerprint"]]
    assert len(diff) == 1
    assert diff[0][2:4] == [f"{A}, {B}", C]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", diff[0][4])

    fake.rotate("model-a", [A])
    flap = fpmon("check", "--history", str(one_target))
    assert (flap.code, row_of(flap.out, "alpha")[1]) == (0, "changed")
    fake.rotate("model-a", [B])
    strict = fpmon("check", "--history", str(one_target), "--fail-on", "change")
    assert (strict.code, row_of(strict.out, "alpha")[1]) == (1, "changed")

    statuses = history_rows(one_target, "SELECT status FROM checks ORDER BY id")
    assert [s for (s,) in statuses] == ["first", "same", "new", "changed", "changed"]
    assert history_rows(one_target, "SELECT count(*) FROM observations") == [(20,)]


def test_resolved_model_change_is_new(
    fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path
) -> None:
    assert fpmon("check").code == 0
    fake.set_model("model-a", ModelBehaviour([A, B], resolved_model="model-a-2027"))
    result = fpmon("check", "--json")
    assert result.code == 1
    target = result.json()["targets"][0]
    assert (target["status"], target["models"]) == ("new", ["model-a-2027"])
    assert target["previous_models"] == ["model-a-2026"]


def test_json_contract(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    fake.set_model("nullish", ModelBehaviour([None], resolved_model="old-0613"))
    fake.set_model("absent", ModelBehaviour([ABSENT]))
    fake.set_model("empty", ModelBehaviour([""]))
    write_config(
        fake.base_url,
        n={"model": "nullish", "samples": 2},
        a={"model": "absent", "samples": 1},
        e={"model": "empty", "samples": 1},
    )
    result = fpmon("check", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["version"] == 1 and data["exit_code"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", data["checked_at"])
    by_name = {t["name"]: t for t in data["targets"]}
    assert by_name["n"]["fingerprints"] == [None]
    assert by_name["a"]["fingerprints"] == ["<absent>"]
    assert by_name["e"]["fingerprints"] == [""]
    n = by_name["n"]
    assert n["status"] == "first" and n["models"] == ["old-0613"] and n["samples"] == 2
    assert n["previous"] is None and n["errors"] == [] and n["latency_ms"] >= 0
    for key in ("known", "previous_models", "known_models"):
        assert key in n
    # The three states stay distinct in the history too.
    states = history_rows(
        Path("xdg-data/fpmon/history.db"),
        "SELECT target, fingerprint, fingerprint_state FROM observations ORDER BY id",
    )
    assert sorted(set(states)) == [("a", None, "absent"), ("e", "", "empty"), ("n", None, "null")]


def test_null_then_absent_is_a_change(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    fake.set_model("m", ModelBehaviour([None]))
    write_config(fake.base_url, t={"model": "m", "samples": 1})
    assert fpmon("check").code == 0
    fake.rotate("m", [ABSENT])
    result = fpmon("check", "--json")
    assert (result.code, result.json()["targets"][0]["status"]) == (1, "new")


def test_quiet_prints_nothing_on_success_and_everything_on_change(
    fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path
) -> None:
    first = fpmon("check", "--quiet")
    assert (first.code, first.out, first.err) == (0, "", "")
    fake.rotate("model-a", [C])
    changed = fpmon("check", "--quiet")
    assert changed.code == 1 and "new" in changed.out and C in changed.out


def test_exit_zero_reports_only(fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path) -> None:
    assert fpmon("check").code == 0
    fake.rotate("model-a", [C])
    result = fpmon("check", "--exit-zero")
    assert result.code == 0 and "new" in result.out
    fake.add_faults([Fault("status", status=500, times=10)])
    assert fpmon("check", "--exit-zero").code == 0


def test_no_record_leaves_history_untouched(
    fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path
) -> None:
    assert fpmon("check", "--no-record").code == 0
    assert not Path("xdg-data/fpmon/history.db").exists()
    assert fpmon("check").code == 0
    fake.rotate("model-a", [C])
    dry = fpmon("check", "--no-record", "--json")
    assert (dry.code, dry.json()["targets"][0]["status"]) == (1, "new")
    assert dry.json()["recorded"] is False
    count = history_rows(Path("xdg-data/fpmon/history.db"), "SELECT count(*) FROM checks")
    assert count == [(1,)]


def test_missing_key_is_exit_3_and_other_targets_are_checked(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(
        fake.base_url,
        keyed={"model": "model-a", "api_key_env": "FPMON_TEST_UNSET_KEY", "provider": "openai"},
        free={"model": "model-b"},
    )
    result = fpmon("check", "--json")
    assert result.code == 3
    by_name = {t["name"]: t for t in result.json()["targets"]}
    assert by_name["keyed"]["status"] == "error"
    assert by_name["keyed"]["errors"][0]["kind"] == "missing_key"
    assert "FPMON_TEST_UNSET_KEY" in by_name["keyed"]["errors"][0]["message"]
    assert by_name["free"]["status"] == "first"
    assert all(r.model == "model-b" for r in fake.requests())


def test_named_targets_only(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, one={"model": "model-a"}, two={"model": "model-b"})
    result = fpmon("check", "two", "--json")
    assert [t["name"] for t in result.json()["targets"]] == ["two"]
    unknown = fpmon("check", "tow")
    assert unknown.code == 2 and "did you mean 'two'" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1


def test_piped_output_is_plain_and_unwrapped(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    long_fp = "fp_" + "x" * 100
    fake.set_model("long", ModelBehaviour([long_fp], resolved_model="m" * 60))
    write_config(fake.base_url, long={"model": "long", "samples": 1})
    result = fpmon("check", env={"COLUMNS": "40"})
    assert "\x1b" not in result.out
    row = row_of(result.out, "long")
    assert row[2] == long_fp[:63] + "…" and row[3] == "m" * 60
    whole = fpmon("check", "--json", env={"COLUMNS": "40"})
    assert whole.json()["targets"][0]["fingerprints"] == [long_fp]


def test_server_strings_cannot_inject_markup_or_escapes(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    evil = "fp_[bold red]x[/]\x1b[2J\x1b]0;pwned\x07"
    fake.set_model("evil", ModelBehaviour([evil], resolved_model="m\rREWRITE"))
    write_config(fake.base_url, evil={"model": "evil", "samples": 1})
    result = fpmon("check")
    assert result.code == 0
    assert "\x1b" not in result.out and "\r" not in result.out and "\x07" not in result.out
    assert "fp_[bold red]x[/]\\x1b[2J" in result.out
    assert "m\\rREWRITE" in result.out


def test_history_unwritable_is_exit_4_and_nothing_probed(
    fpmon: Callable[..., Run], fake: FakeAPI, one_target: Path, isolated: Path
) -> None:
    broken = isolated / "not-a-db"
    broken.write_text("this is not sqlite " * 100)
    result = fpmon("check", "--history", str(broken))
    assert result.code == 4
    assert "not an fpmon history" in result.err and len(result.err.strip().splitlines()) == 1
    assert fake.requests() == []


def test_python_dash_m_and_version(fpmon: Callable[..., Run]) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fp_monitor", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and re.fullmatch(r"fpmon \d+\.\d+\.\d+\n", proc.stdout)
    assert fpmon("--version").out == proc.stdout
