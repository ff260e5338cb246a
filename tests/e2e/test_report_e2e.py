"""The installed `fpmon report` on a history recorded against the fake API: the file it writes,
its exit codes and messages, and the `fpmon report` lines of the CI examples."""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from tests.e2e.report_history import HOSTILE, TARGETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recorded(report_config: Path, isolated: Path) -> Path:
    """A copy of the recorded history in the test's directory, with its config (which names
    history.db beside it)."""
    for name in ("fpmon.toml", "fpmon.lock", "history.db"):
        shutil.copyfile(report_config.parent / name, isolated / name)
    return isolated / "fpmon.toml"


def chart_data(html: str) -> dict[str, Any]:
    (data,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def test_report_writes_one_page_with_every_target(
    fpmon: Callable[..., Run], recorded: Path
) -> None:
    made = fpmon("report", "--output", "out/report.html")
    assert made.code == 0, made.err
    assert made.err == ""
    (line,) = made.out.splitlines()
    assert line.startswith("wrote out/report.html: 5 targets from ")
    with closing(sqlite3.connect(recorded.parent / "history.db")) as db:
        (records,) = db.execute("SELECT count(*) FROM observations").fetchone()
    assert line.endswith(f"per bucket; chain intact ({records} records)")
    html = (recorded.parent / "out" / "report.html").read_text()
    data = chart_data(html)
    assert sorted(t["name"] for t in data["targets"]) == sorted(TARGETS)
    bands = {t["name"]: [(b["kind"], b["value"]) for b in t["bands"]] for t in data["targets"]}
    assert ("fingerprint", "fp_cccccccccc") in bands["rotating"]
    assert ("error", "server") in bands["failing"]
    assert [v for k, v in bands["hostile"] if k == "fingerprint"] == sorted(HOSTILE)
    learning = {t["name"]: t["learning"] for t in data["targets"]}
    assert learning["learning"] is not None and learning["rotating"] is None
    assert "new" in html and "BROKEN" not in html


def test_named_targets_sources_and_ranges(fpmon: Callable[..., Run], recorded: Path) -> None:
    made = fpmon("report", "rotating", "failing", "-o", "two.html", "--source", "probe")
    assert made.code == 0, made.err
    data = chart_data((recorded.parent / "two.html").read_text())
    assert [t["name"] for t in data["targets"]] == ["rotating", "failing"]
    later = fpmon("report", "-o", "none.html", "--since", "2999-01-01")
    assert later.code == 0, later.err
    assert "No check in this range" in (recorded.parent / "none.html").read_text()
    traffic = fpmon("report", "-o", "traffic.html", "--source", "traffic")
    assert traffic.code == 0 and "0 targets" in traffic.out


def test_no_verify_leaves_the_chain_out(fpmon: Callable[..., Run], recorded: Path) -> None:
    made = fpmon("report", "-o", "fast.html", "--no-verify")
    assert made.code == 0 and made.out.rstrip().endswith("chain not verified (--no-verify)")
    assert "not verified for this report" in (recorded.parent / "fast.html").read_text()


def test_a_broken_chain_is_reported_and_exits_1(fpmon: Callable[..., Run], recorded: Path) -> None:
    with closing(sqlite3.connect(recorded.parent / "history.db")) as db:
        db.execute("UPDATE observations SET fingerprint = 'fp_forged' WHERE id = 3")
        db.commit()
    made = fpmon("report", "-o", "report.html")
    assert made.code == 1
    assert made.err.startswith("fpmon: error: the chain is broken: record 3 (")
    assert "(the report shows it)" in made.err
    html = (recorded.parent / "report.html").read_text()
    assert "BROKEN: record 3 (" in html


# Edits that SQLite's JSON encoding of a record, which the walk hashes, would not show: a float
# it writes with 15 digits, text it writes unescaped (tests/unit/store/test_chain_walk.py has
# the rest).
FAST_PATH_EDITS = {
    "latency one ulp up": "UPDATE observations SET latency_ms = ? WHERE id = 3",
    "http_status a float": "UPDATE observations SET http_status = ? WHERE id = 3",
    "non-ASCII fingerprint": "UPDATE observations SET fingerprint = 'fp_é' || char(1) WHERE id = 3",
}


@pytest.mark.parametrize("edit", FAST_PATH_EDITS)
def test_an_edit_the_walks_encoding_would_hide_fails_the_report_and_verify(
    fpmon: Callable[..., Run], recorded: Path, edit: str
) -> None:
    with closing(sqlite3.connect(recorded.parent / "history.db")) as db:
        latency, status = db.execute(
            "SELECT latency_ms, http_status FROM observations WHERE id = 3"
        ).fetchone()
        moved = math.nextafter(latency if "latency" in edit else float(status), math.inf)
        sql = FAST_PATH_EDITS[edit]
        db.execute(sql, (moved,) if "?" in sql else ())
        db.commit()
    made = fpmon("report", "-o", "report.html")
    assert made.code == 1, made.err
    assert made.err.startswith("fpmon: error: the chain is broken: record 3 (")
    assert "was edited" in made.err and "Traceback" not in made.err
    verified = fpmon("verify")
    assert verified.code == 1 and "record 3 (" in verified.err and "was edited" in verified.err
    assert len(verified.err.strip().splitlines()) == 1 and "Traceback" not in verified.err


def test_a_blob_where_text_was_fails_verify_and_the_report_naming_the_record(
    fpmon: Callable[..., Run], recorded: Path
) -> None:
    """json_array refuses a BLOB: the walk reads the rest the slow way."""
    with closing(sqlite3.connect(recorded.parent / "history.db")) as db:
        db.execute("UPDATE observations SET fingerprint = CAST(fingerprint AS BLOB) WHERE id = 3")
        db.commit()
    verified = fpmon("verify")
    assert verified.code == 1 and "record 3 (" in verified.err and "was edited" in verified.err
    assert len(verified.err.strip().splitlines()) == 1 and "Traceback" not in verified.err
    # The report's own queries read that column too: a history edited outside fpmon, not a bug.
    for walk in ("--verify", "--no-verify"):
        made = fpmon("report", "-o", "r.html", walk)
        assert made.code == 4 and "bytes where fpmon writes text" in made.err, made.err
        assert len(made.err.strip().splitlines()) == 1 and "Traceback" not in made.err
        assert not (recorded.parent / "r.html").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("rotatin", "-o", "r.html"), 2, "no target 'rotatin' in the history"),
        (("-o", "r.html", "--since", "yesterday"), 2, "neither a duration"),
        (("-o", "fpmon.toml/r.html"), 2, "cannot write the report to fpmon.toml/r.html"),
        ((), 2, "Missing option '--output'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    fpmon: Callable[..., Run], recorded: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    made = fpmon("report", *args)
    assert made.code == code
    assert message in made.err
    assert len(made.err.splitlines()) == 1, made.err
    assert not (recorded.parent / "r.html").exists()


def test_no_history_is_exit_4(fpmon: Callable[..., Run], isolated: Path) -> None:
    made = fpmon("report", "-o", "r.html", "--history", "missing.db")
    assert made.code == 4
    assert "no history at missing.db" in made.err
    assert not (isolated / "r.html").exists()


def example_commands() -> list[str]:
    """The `fpmon report` lines of the GitHub and GitLab examples."""
    found = []
    for path in (ROOT / "examples/github/fpmon-check.yml", ROOT / "examples/gitlab/.gitlab-ci.yml"):
        found += re.findall(r"^\s*(?:- )?(?:run: )?(fpmon report .*)$", path.read_text(), re.M)
    return found


def test_the_ci_examples_upload_a_report_that_fpmon_writes(
    fpmon: Callable[..., Run], recorded: Path
) -> None:
    commands = example_commands()
    assert len(commands) == 2, commands
    for command in commands:
        args = command.split()[1:]
        made = fpmon(*args, env={"FPMON_HISTORY": str(recorded.parent / "history.db")})
        assert made.code == 0, (command, made.err)
        output = args[args.index("--output") + 1]
        assert (recorded.parent / output).stat().st_size > 50_000
    for path in (ROOT / "examples/github/fpmon-check.yml", ROOT / "examples/gitlab/.gitlab-ci.yml"):
        assert "fpmon-report.html" in path.read_text().split("fpmon report", 1)[1]
