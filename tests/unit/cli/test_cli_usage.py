"""The command line speaks in fpmon's voice: usage errors name the flag, the value and what it
takes (never the validation library's wording), and the help shows no type for a flag that takes
no value. In-process (the `cli` fixture)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.conftest import Run

LIBRARY_WORDING = ("Value error", "Input should", "Invalid value for", "is not one of", ": (")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("check", "--fail-on", "sometimes"),
            "--fail-on 'sometimes': expected one of new, change, never",
        ),
        (
            ("check", "--fail-on", "neww"),
            "expected one of new, change, never (did you mean 'new'?)",
        ),
        (("check", "--samples", "0"), "--samples '0': expected a whole number from 1 to 1000"),
        (
            ("check", "--samples", "lots"),
            "--samples 'lots': expected a whole number from 1 to 1000",
        ),
        (("history", "--limit", "0"), "--limit '0': expected a whole number from 1 to"),
        (
            ("history", "--format", "xml"),
            "--format 'xml': expected one of table, json, jsonl, csv, markdown",
        ),
        (("watch", "--every", "5x"), "--every: '5x' is not a duration"),
        (("watch",), "Missing option '--every'"),
        (
            ("fake-api", "--port", "70000"),
            "--port '70000': expected a whole number from 0 to 65535",
        ),
    ],
)
def test_usage_errors_are_in_fpmons_words(
    cli: Callable[..., Run], args: tuple[str, ...], expected: str
) -> None:
    run = cli(*args)
    assert run.code == 2
    [line] = run.err.splitlines()
    assert line.startswith("fpmon: error: ") and expected in line, line
    assert not any(words in line for words in LIBRARY_WORDING), line
    assert line.endswith(f"(see `fpmon {args[0]} --help`)")


@pytest.mark.parametrize("command", [(), ("check",), ("history",), ("notify", "test")], ids=str)
def test_flags_show_no_value_type_in_help(
    cli: Callable[..., Run], command: tuple[str, ...]
) -> None:
    run = cli(*command, "--help")
    assert run.code == 0
    assert "--help" in run.out
    assert "<bool>" not in run.out


def test_a_default_time_is_shown_as_written(cli: Callable[..., Run]) -> None:
    shown = re.sub(r"[\s│]+", " ", cli("stats", "--help").out)
    assert "[default: 30d]" in shown
    assert "(30d)" not in shown
