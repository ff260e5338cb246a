"""The installed `fpmon history`, `stats`, `verify`, `export`, `import` and `prune` on histories
recorded by `fpmon check` against the fake API over loopback."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config.settings import load_config
from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import Run

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
HISTORY = "history.db"


@pytest.fixture
def recorded(fake: FakeAPI, write_config: Callable[..., Path]) -> Path:
    """alpha: [A, B] twice, a check where every sample failed, [C] (new), [A, B] (changed);
    beta: [C] five times. Recorded by `fpmon check`'s core in this process (five subprocesses
    per test would double the time of this file); the commands under test run installed."""
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2}, beta={"model": "model-b"})
    (Path.cwd() / "fpmon.toml").write_text(
        f'history = "{HISTORY}"\n' + (Path.cwd() / "fpmon.toml").read_text()
    )
    for step in range(5):
        if step == 2:
            fake.add_faults([Fault("status", status=500, model="model-a", times=2)])
        if step == 3:
            fake.rotate("model-a", [C])
        if step == 4:
            fake.rotate("model-a", [A, B])
        run_check(load_config(Path("fpmon.toml")), [], CheckOptions())
    return Path(HISTORY)


def execute(path: Path, sql: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql)
        db.commit()


def parse_csv(text: str) -> list[dict[str, Any]]:
    """CSV rows with their JSON-text cells (lists, objects) read back."""
    found = []
    for row in csv.DictReader(io.StringIO(text)):
        found.append({k: json.loads(v) if v[:1] in ("[", "{") else v for k, v in row.items()})
    return found


# --- history ----------------------------------------------------------------------------


def test_timeline_runs_in_every_format(fpmon: Callable[..., Run], recorded: Path) -> None:
    as_json = fpmon("history", "alpha", "--format", "json")
    assert as_json.code == 0, as_json.err
    document = as_json.json()
    assert document["version"] == 1
    runs = document["runs"]
    assert [(r["fingerprints"], r["checks"], r["observations"], r["errors"]) for r in runs] == [
        ([A, B], 3, 4, 2),  # the failed check counts in the run being served
        ([C], 1, 2, 0),
        ([A, B], 1, 2, 0),
    ]
    assert all(r["models"] == ["model-a-2026"] and r["target"] == "alpha" for r in runs)
    assert runs[0]["first_seen"] < runs[0]["last_seen"] < runs[1]["first_seen"]
    assert all(r["first_seen"].endswith("Z") for r in runs)

    lines = fpmon("history", "alpha", "--format", "jsonl").out.splitlines()
    assert [json.loads(line) for line in lines] == runs

    rows = parse_csv(fpmon("history", "alpha", "--format", "csv").out)
    assert [
        {
            **r,
            "checks": int(r["checks"]),
            "observations": int(r["observations"]),
            "errors": int(r["errors"]),
            "samples": int(r["samples"]),
        }
        for r in rows
    ] == runs

    table = fpmon("history", "alpha")
    assert table.code == 0 and "\x1b" not in table.out
    lines = [line.split() for line in table.out.splitlines()[2:]]
    assert [line[1] for line in lines] == [f"{A},", C, f"{A},"]


def test_all_targets_newest_runs_and_limits(fpmon: Callable[..., Run], recorded: Path) -> None:
    runs = fpmon("history", "--format", "json").json()["runs"]
    assert sorted({r["target"] for r in runs}) == ["alpha", "beta"]
    assert [r["last_seen"] for r in runs] == sorted(r["last_seen"] for r in runs)
    beta = [r for r in runs if r["target"] == "beta"]
    assert [(r["fingerprints"], r["checks"]) for r in beta] == [([C], 5)]
    newest = fpmon("history", "--limit", "1", "--format", "json").json()["runs"]
    assert newest == [runs[-1]]
    assert fpmon("history", "--since", "0s", "--format", "json").json()["runs"] == []
    assert fpmon("history", "--until", "0s", "--format", "json").json()["runs"] == runs
    assert fpmon("history", "--until", "2000-01-01", "--format", "json").json()["runs"] == []
    assert "no checks in this range" in fpmon("history", "--since", "0s").out


def test_raw_observations_in_every_format(fpmon: Callable[..., Run], recorded: Path) -> None:
    result = fpmon("history", "alpha", "--observations", "--limit", "100", "--format", "json")
    observations = result.json()["observations"]
    assert len(observations) == 10
    assert [o["id"] for o in observations] == sorted(o["id"] for o in observations)
    failed = [o for o in observations if o["error"] is not None]
    assert len(failed) == 2
    assert failed[0]["error"]["kind"] == "server" and failed[0]["error"]["status_code"] == 500
    assert failed[0]["fingerprint"] is None and failed[0]["fingerprint_state"] is None
    ok = [o for o in observations if o["error"] is None]
    assert {o["fingerprint"] for o in ok} == {A, B, C}
    assert all(o["fingerprint_state"] == "value" and o["model"] == "model-a-2026" for o in ok)
    assert all(o["status_code"] == 200 and o["latency_ms"] >= 0 for o in ok)

    jsonl = fpmon("history", "alpha", "--observations", "--limit", "100", "--format", "jsonl")
    assert [json.loads(line) for line in jsonl.out.splitlines()] == observations

    rows = parse_csv(
        fpmon("history", "alpha", "--observations", "--limit", "100", "--format", "csv").out
    )
    assert [int(r["id"]) for r in rows] == [o["id"] for o in observations]
    assert [r["fingerprint"] for r in rows] == [o["fingerprint"] or "" for o in observations]
    assert [r["error"] for r in rows] == [o["error"] or "" for o in observations]

    newest = fpmon("history", "--observations", "--limit", "3", "--format", "json").json()
    assert len(newest["observations"]) == 3
    table = fpmon("history", "--observations", "--limit", "3")
    assert table.code == 0 and len(table.out.strip().splitlines()) == 2 + 3


def test_null_absent_and_empty_stay_distinct(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    fake.set_model("odd", ModelBehaviour([None, "<absent>", ""]))
    write_config(fake.base_url, odd={"model": "odd", "samples": 3})
    assert fpmon("check").code == 0
    observations = fpmon("history", "--observations", "--format", "json").json()["observations"]
    shown = [("~" if o["fingerprint"] is None else o["fingerprint"]) for o in observations]
    assert sorted(zip(shown, [o["fingerprint_state"] for o in observations], strict=True)) == [
        ("", "empty"),
        ("<absent>", "absent"),
        ("~", "null"),
    ]
    (run,) = fpmon("history", "--format", "json").json()["runs"]
    assert sorted(run["fingerprints"], key=str) == ["", "<absent>", None]


def test_server_strings_cannot_inject_markup_or_escapes(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    evil = "fp_[bold red]x[/]\x1b[2J"
    fake.set_model("evil", ModelBehaviour([evil], resolved_model="m\rREWRITE"))
    write_config(fake.base_url, evil={"model": "evil", "samples": 1})
    assert fpmon("check").code == 0
    for args in (("history",), ("history", "--observations"), ("stats",)):
        out = fpmon(*args).out
        assert "\x1b" not in out and "\r" not in out, args
        assert "fp_[bold red]x[/]\\x1b[2J" in out, args


def test_reading_errors(fpmon: Callable[..., Run], recorded: Path, isolated: Path) -> None:
    unknown = fpmon("history", "alpah")
    assert unknown.code == 2 and "did you mean 'alpha'" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1
    bad = fpmon("history", "--since", "last tuesday")
    assert bad.code == 2 and "--since" in bad.err and "ISO date" in bad.err
    missing = fpmon("history", "--history", "nowhere.db")
    assert missing.code == 4 and "no history at nowhere.db" in missing.err
    assert not (isolated / "nowhere.db").exists()
    garbage = isolated / "garbage.db"
    garbage.write_text("not sqlite " * 200)
    for command in ("history", "stats", "verify", "export"):
        assert fpmon(command, "--history", str(garbage)).code == 4, command


def test_reading_needs_no_config_and_no_key(
    fpmon: Callable[..., Run], recorded: Path, isolated: Path
) -> None:
    (isolated / "fpmon.toml").unlink()
    result = fpmon("history", "--history", str(recorded), "--format", "json")
    assert result.code == 0 and len(result.json()["runs"]) == 4


# --- stats ------------------------------------------------------------------------------


def test_stats_figures_and_timeline(fpmon: Callable[..., Run], recorded: Path) -> None:
    result = fpmon("stats", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["version"] == 1 and data["since"] < data["until"]
    alpha = {t["name"]: t for t in data["targets"]}["alpha"]
    assert (alpha["checks"], alpha["successful_checks"], alpha["observations"]) == (5, 4, 10)
    assert alpha["fingerprints"] == [A, B, C] and alpha["models"] == ["model-a-2026"]
    served = {s["value"]: s["share"] for s in alpha["served"]["fingerprints"]}
    assert alpha["served"]["checks"] == 4
    assert served == {A: 0.375, B: 0.375, C: 0.25}  # 3, 3 and 2 of 8 successful samples
    assert (alpha["new_events"], alpha["changed"]) == (1, 1)
    assert alpha["flap_rate"] == 0.25
    assert alpha["errors"] == 2 and alpha["error_rate"] == 0.2
    assert alpha["errors_by_kind"] == {"server": {"count": 2, "rate": 0.2}}
    assert alpha["latency_ms"]["p50"] <= alpha["latency_ms"]["p95"]

    table = fpmon("stats", "alpha")
    assert table.code == 0 and "\x1b" not in table.out
    # the timeline: the rows under its title, up to the next blank line
    after_title = table.out.split("alpha: fingerprints from", 1)[1].split("\n\n", 1)[0]
    timeline = {
        line.split()[0]: line.split(maxsplit=1)[1]
        for line in after_title.splitlines()
        if line.startswith("fp_")
    }
    assert set(timeline) == {A, B, C}
    assert set(timeline[C].strip()) <= {"█", "·", " "} and "█" in timeline[C]
    assert "alpha: fingerprints from" in table.out
    assert fpmon("stats", "--since", "0s", "--json").json()["targets"] == []


# --- the audit trail --------------------------------------------------------------------


def test_verify_passes_then_names_an_edited_record(
    fpmon: Callable[..., Run], recorded: Path
) -> None:
    ok = fpmon("verify")
    assert ok.code == 0 and "verified 25 records: the chain is intact" in ok.out
    execute(recorded, "UPDATE observations SET fingerprint = 'fp_forged' WHERE id = 7")
    broken = fpmon("verify")
    assert broken.code == 1
    assert "record 7 (" in broken.err and "was edited" in broken.err
    assert len(broken.err.strip().splitlines()) == 1


def test_export_import_round_trip_and_idempotence(
    fpmon: Callable[..., Run], recorded: Path, isolated: Path
) -> None:
    exported = fpmon("export", "--output", "backup.jsonl")
    assert exported.code == 0 and "exported 25 records" in exported.out
    streamed = fpmon("export")
    assert streamed.out == (isolated / "backup.jsonl").read_text()
    first = fpmon("import", "backup.jsonl", "--history", "copy.db")
    assert first.code == 0 and "imported 25 records (10 checks)" in first.out
    assert fpmon("verify", "--history", "copy.db").code == 0
    again = fpmon("import", "backup.jsonl", "--history", "copy.db")
    assert again.code == 0 and "imported 0 records" in again.out
    assert "25 already present" in again.out
    assert fpmon("export", "--history", "copy.db").out == streamed.out
    original = fpmon("history", "--format", "json").json()["runs"]
    copied = fpmon("history", "--history", "copy.db", "--format", "json").json()["runs"]
    # an imported check is timed by its last observation: runs of one check may swap places
    assert sorted((r["target"], r["fingerprints"], r["checks"]) for r in copied) == sorted(
        (r["target"], r["fingerprints"], r["checks"]) for r in original
    )


def test_import_reports_a_bad_line_and_keeps_the_rest(
    fpmon: Callable[..., Run], recorded: Path, isolated: Path
) -> None:
    lines = fpmon("export").out.splitlines()
    lines.insert(3, '{"version": 1, "target": "half a record"}')
    (isolated / "damaged.jsonl").write_text("\n".join(lines) + "\n")
    result = fpmon("import", "damaged.jsonl", "--history", "copy.db")
    assert result.code == 0
    assert "damaged.jsonl:4: not a valid record, skipped: missing field" in result.err
    assert "imported 25 records" in result.out and "1 invalid line skipped" in result.out
    assert fpmon("verify", "--history", "copy.db").code == 0
    missing = fpmon("import", "nothing.jsonl")
    assert missing.code == 2 and "cannot read nothing.jsonl" in missing.err


def test_import_from_stdin(fpmon: Callable[..., Run], recorded: Path, isolated: Path) -> None:
    import subprocess

    from tests.conftest import FPMON

    assert FPMON is not None
    exported = fpmon("export").out
    proc = subprocess.run(
        [FPMON, "import", "-", "--history", "piped.db"],
        input=exported,
        capture_output=True,
        text=True,
        cwd=isolated,
        timeout=60,
    )
    assert proc.returncode == 0 and "imported 25 records" in proc.stdout


def test_prune_then_check_is_same_and_verify_passes(
    fpmon: Callable[..., Run], fake: FakeAPI, recorded: Path
) -> None:
    no_age = fpmon("prune")
    assert no_age.code == 2 and "--older-than 90d" in no_age.err
    dry = fpmon("prune", "--older-than", "0s", "--dry-run")
    assert dry.code == 0 and "would prune 25 observations" in dry.out
    assert fpmon("verify").out.startswith("verified 25 records")
    pruned = fpmon("prune", "--older-than", "0s")
    assert pruned.code == 0 and "pruned 25 observations and 8 checks" in pruned.out
    verified = fpmon("verify")
    assert verified.code == 0 and "verified 0 records" in verified.out
    assert "prune deleted 25 records up to record 25" in verified.out
    check = fpmon("check", "--json")
    assert {t["name"]: t["status"] for t in check.json()["targets"]} == {
        "alpha": "same",
        "beta": "same",
    }
    fake.rotate("model-a", [C])
    assert fpmon("check", "--json").json()["targets"][0]["status"] == "changed"
    assert fpmon("verify").code == 0
    execute(recorded, "DELETE FROM observations WHERE id = 26")
    assert fpmon("verify").code == 1


def test_prune_uses_the_retention_key(
    fpmon: Callable[..., Run], recorded: Path, isolated: Path
) -> None:
    config = isolated / "fpmon.toml"
    config.write_text('retention = "30d"\n' + config.read_text())
    kept = fpmon("prune")
    assert kept.code == 0 and "pruned 0 observations and 0 checks" in kept.out
    config.write_text(config.read_text().replace('retention = "30d"', 'retention = "0s"'))
    bad = fpmon("prune")
    assert bad.code == 2 and "retention: must be longer than 0s" in bad.err
