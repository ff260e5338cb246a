"""One output switch: every command that prints data takes --format (table, json, jsonl, csv,
markdown), --json is its shorthand and may not disagree with it, and a concept has one field
name in every format. Run in-process (the `cli` fixture) against the fake API on loopback."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

FORMATS = ("table", "json", "jsonl", "csv", "markdown")
# (command line, the key of the records in its JSON document)
DATA_COMMANDS = (
    (("check",), "targets"),
    (("targets",), "targets"),
    (("history",), "runs"),
    (("history", "--observations"), "observations"),
    (("stats",), "targets"),
)


@pytest.fixture
def checked(
    cli: Callable[..., Run], write_config: Callable[..., Path], fake: FakeAPI
) -> Callable[..., Run]:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    first = cli("check")
    assert first.code == 0, first.err
    return cli


@pytest.mark.parametrize(("command", "key"), DATA_COMMANDS, ids=lambda c: " ".join(c))
def test_every_data_command_prints_the_same_records_in_every_format(
    checked: Callable[..., Run], command: tuple[str, ...], key: str
) -> None:
    outputs = {fmt: checked(*command, "--format", fmt) for fmt in FORMATS}
    for fmt, run in outputs.items():
        assert run.code == 0, f"{fmt}: {run.err}"
        assert run.out.strip(), fmt
    document = json.loads(outputs["json"].out)
    records = document[key]
    assert records, document
    lines = [json.loads(line) for line in outputs["jsonl"].out.splitlines()]
    assert [sorted(r) for r in lines] == [sorted(r) for r in records]
    if command != ("check",):  # each check is a new one: its values move, its fields do not
        assert lines == records
    rows = list(csv.DictReader(io.StringIO(outputs["csv"].out)))
    assert len(rows) == len(records)
    assert set(rows[0]) == set(records[0])
    markdown = outputs["markdown"].out.splitlines()
    header = next(line for line in markdown if line.startswith("| "))
    assert markdown[markdown.index(header) + 1].startswith("|---|")
    assert "alpha" in outputs["markdown"].out and "alpha" in outputs["table"].out
    assert "{" not in outputs["table"].out  # a table, not JSON


@pytest.mark.parametrize(("command", "key"), DATA_COMMANDS, ids=lambda c: " ".join(c))
def test_json_is_the_shorthand_of_format_json(
    checked: Callable[..., Run], command: tuple[str, ...], key: str
) -> None:
    shorthand = checked(*command, "--json")
    both = checked(*command, "--json", "--format", "json")
    assert shorthand.code == both.code == 0, shorthand.err + both.err
    assert sorted(json.loads(shorthand.out)[key][0]) == sorted(json.loads(both.out)[key][0])


@pytest.mark.parametrize("command", [c for c, _ in DATA_COMMANDS], ids=" ".join)
@pytest.mark.parametrize("other", ["markdown", "table", "csv"])
def test_json_with_a_conflicting_format_is_refused_before_anything_runs(
    checked: Callable[..., Run], fake: FakeAPI, command: tuple[str, ...], other: str
) -> None:
    fake.reset()
    run = checked(*command, "--json", "--format", other)
    assert run.code == 2
    assert run.out == ""
    [line] = run.err.splitlines()
    assert f"--json means --format json, which disagrees with --format {other}" in line
    assert fake.requests() == []


def test_a_concept_has_one_name_in_history_export_and_stats(checked: Callable[..., Run]) -> None:
    observations = json.loads(checked("history", "--observations", "--json").out)["observations"]
    exported = [json.loads(line) for line in checked("export").out.splitlines()]
    assert [o["resolved_model"] for o in observations] == [e["resolved_model"] for e in exported]
    assert all(o["resolved_model"] == "model-a-2026" for o in observations)
    assert all(o["model"] == o["resolved_model"] for o in observations)  # the older name
    [run] = json.loads(checked("history", "--json").out)["runs"]
    assert run["samples"] == run["observations"] == 2
    [target] = json.loads(checked("stats", "--json").out)["targets"]
    assert target["samples"] == target["observations"] == 2
    [checked_target] = json.loads(checked("check", "--json").out)["targets"]
    assert checked_target["samples"] == 2
    table = checked("history", "--observations").out.splitlines()[0]
    assert "resolved model" in table


def test_check_jsonl_and_csv_hold_the_targets_of_the_json_document(
    checked: Callable[..., Run],
) -> None:
    [line] = checked("check", "--format", "jsonl").out.splitlines()
    target = json.loads(line)
    assert target["name"] == "alpha" and target["status"] == "same"
    [row] = csv.DictReader(io.StringIO(checked("check", "--format", "csv").out))
    assert row["name"] == "alpha" and json.loads(row["fingerprints"]) == target["fingerprints"]
