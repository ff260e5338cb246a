"""What a user reads: the result and diff tables as plain text, escaping of server strings,
error lines, the console's plain mode, and the `check --json` contract of README.md."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fp_monitor.domain.models import (
    ABSENT,
    NULL,
    Change,
    CheckResult,
    ErrorKind,
    ProbeError,
    Status,
    TargetResult,
)
from fp_monitor.domain.text import clean
from fp_monitor.output.contracts import check_json
from fp_monitor.output.render import make_console, render_check

README = Path(__file__).resolve().parents[3] / "README.md"
WHEN = datetime(2026, 11, 2, 8, 14, 59, tzinfo=UTC)
A, B, C = "fp_4f1c2a9e07", "fp_b83d5e6a10", "fp_e9917c3b55"


def target(name: str = "openai", **overrides: Any) -> TargetResult:
    fields: dict[str, Any] = {
        "name": name,
        "status": Status.SAME,
        "unexpected": False,
        "fingerprints": (A, B),
        "models": ("gpt-4o-mini-2024-07-18",),
        "previous": (A, B),
        "previous_models": ("gpt-4o-mini-2024-07-18",),
        "known": (A, B),
        "known_models": ("gpt-4o-mini-2024-07-18",),
        "samples": 3,
        "errors": (),
        "latency_ms": 412.345,
        "changes": (),
    }
    return TargetResult(**{**fields, **overrides})


def result(*targets: TargetResult, exit_code: int = 0, recorded: bool = True) -> CheckResult:
    return CheckResult(
        check_id="9f1c0000aaaa",
        checked_at=datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC),
        targets=targets,
        exit_code=exit_code,
        recorded=recorded,
    )


def rendered(check: CheckResult) -> str:
    out = io.StringIO()
    render_check(make_console(out), check)
    return out.getvalue()


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def rows(text: str) -> list[list[str]]:
    """Each non-blank line split into its table cells (two or more spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in lines(text)]


def rollout() -> TargetResult:
    return target(
        status=Status.NEW,
        unexpected=True,
        fingerprints=(C,),
        changes=(Change("openai", "fingerprint", (A, B), (C,), WHEN),),
    )


# --- the result table and the diff table ---------------------------------------------------


def test_result_table_rows() -> None:
    text = rendered(
        result(
            rollout(),
            target("grok", models=("grok-4-0709",), latency_ms=388.0),
            target(
                "down",
                status=Status.ERROR,
                fingerprints=(),
                models=(),
                latency_ms=None,
                errors=(ProbeError(ErrorKind.SERVER, 500, "HTTP 500: oops"),) * 3,
            ),
            exit_code=1,
        )
    )
    table = rows(text)
    assert table[0] == ["target", "status", "fingerprints", "models", "latency"]
    assert ["openai", "new", C, "gpt-4o-mini-2024-07-18", "412 ms"] in table
    assert ["grok", "same", f"{A}, {B}", "grok-4-0709", "388 ms"] in table
    assert ["down", "error", "-", "-", "-"] in table


def test_value_states_read_distinctly() -> None:
    text = rendered(
        result(
            target("n", fingerprints=(NULL,)),
            target("a", fingerprints=(ABSENT,)),
            target("e", fingerprints=("",)),
        )
    )
    by_name = {r[0]: r for r in rows(text)}
    assert by_name["n"][2] == "<null>"
    assert by_name["a"][2] == "<absent>"
    assert by_name["e"][2] == '""'


def test_diff_table_rows_with_first_seen_in_utc() -> None:
    model_change = Change("openai", "model", ("gpt-4o-2024-05-13",), ("gpt-4o-2024-08-06",), None)
    check = target(
        status=Status.NEW,
        unexpected=True,
        fingerprints=(C,),
        models=("gpt-4o-2024-08-06",),
        changes=(*rollout().changes, model_change),
    )
    text = rendered(result(check, exit_code=1))
    table = rows(text)
    header = table.index(["target", "field", "before", "now", "before seen since"])
    assert table[header - 1] == ["changes"]
    assert table[header + 2] == ["openai", "fingerprint", f"{A}, {B}", C, "2026-11-02 08:14 UTC"]
    assert table[header + 3] == [
        "openai",
        "model",
        "gpt-4o-2024-05-13",
        "gpt-4o-2024-08-06",
        "-",
    ]


def test_no_diff_table_when_nothing_changed() -> None:
    text = rendered(result(target()))
    assert "changes" not in text and "before seen since" not in text


def test_unexpected_target_is_explained_and_dry_run_said() -> None:
    text = rendered(result(rollout(), target("grok"), exit_code=1, recorded=False))
    explained = [line for line in lines(text) if line.startswith("openai:")]
    assert len(explained) == 1 and "never seen" in explained[0]
    assert not any(line.startswith("grok:") for line in lines(text))
    assert lines(text)[-1] == "dry run: nothing was recorded"
    assert "dry run" not in rendered(result(target()))


@pytest.mark.parametrize("length", [63, 64])
def test_values_up_to_64_characters_are_whole(length: int) -> None:
    value = "f" * length
    text = rendered(result(target(fingerprints=(value,), models=("m" * length,))))
    row = rows(text)[2]
    assert row[2:4] == [value, "m" * length]


@pytest.mark.parametrize("length", [65, 200])
def test_longer_values_are_shortened_to_64_with_an_ellipsis(length: int) -> None:
    value = "fp_" + "0123456789" * 20
    value = value[:length]
    text = rendered(
        result(
            target(
                status=Status.NEW,
                fingerprints=(value,),
                models=("m" * length,),
                changes=(Change("openai", "fingerprint", (A,), (value,), WHEN),),
            )
        )
    )
    cells = [c for r in rows(text) for c in r if c.endswith("…")]
    assert cells == [value[:63] + "…", "m" * 63 + "…", value[:63] + "…"]
    assert all(len(c) == 64 for c in cells)


def test_rows_never_wrap_even_with_twenty_values() -> None:
    many = tuple(f"fp_{i:010d}" for i in range(20))
    models = tuple(f"model-{i:02d}-2026-11-01" for i in range(20))
    check = target(
        status=Status.NEW,
        fingerprints=many,
        models=models,
        changes=(Change("openai", "fingerprint", many[:10], many, WHEN),),
    )
    text = rendered(result(check, exit_code=1))
    row = [r for r in rows(text) if r[0] == "openai" and r[1] == "new"]
    assert row == [["openai", "new", ", ".join(many), ", ".join(models), "412 ms"]]
    diff = [r for r in rows(text) if r[:2] == ["openai", "fingerprint"]]
    assert diff == [
        ["openai", "fingerprint", ", ".join(many[:10]), ", ".join(many), "2026-11-02 08:14 UTC"]
    ]


# --- server strings are data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("fp_\x1b[2Jx", "fp_\\x1b[2Jx"),
        ("fp_\rREWRITE", "fp_\\rREWRITE"),
        ("fp_\x07bell", "fp_\\x07bell"),
        ("fp_\u202egnp.exe", "fp_\\u202egnp.exe"),
        ("fp_a\nb", "fp_a\\nb"),
        ("fp_a\u2028b", "fp_a\\u2028b"),
        ("fp_[bold]x[/bold]", "fp_[bold]x[/bold]"),
        ("gpt-4o mini 🙂 é", "gpt-4o mini 🙂 é"),
    ],
)
def test_clean_makes_control_characters_visible(raw: str, shown: str) -> None:
    assert clean(raw) == shown


def test_hostile_server_strings_render_literally() -> None:
    evil_fp = "fp_[bold red]x[/]\x1b]0;pwned\x07\u202e"
    evil_model = "[link=https://evil.example]m[/link]\r"
    text = rendered(
        result(
            target(
                "evil",
                status=Status.NEW,
                fingerprints=(evil_fp,),
                models=(evil_model,),
                errors=(ProbeError(ErrorKind.SERVER, 500, "HTTP 500: [red]no[/red]\x1b[2J"),),
                changes=(Change("evil", "fingerprint", (A,), (evil_fp,), WHEN),),
            )
        )
    )
    for char in ("\x1b", "\r", "\x07", "\u202e"):
        assert char not in text
    assert text.count("fp_[bold red]x[/]\\x1b]0;pwned\\x07\\u202e") == 2
    assert "[link=https://evil.example]m[/link]\\r" in text
    assert "HTTP 500: [red]no[/red]\\x1b[2J" in text


# --- error lines -----------------------------------------------------------------------------


def test_error_line_names_target_count_kind_and_message() -> None:
    limited = ProbeError(ErrorKind.RATE_LIMITED, 429, "HTTP 429: slow down")
    text = rendered(result(target(samples=3, errors=(limited, limited))))
    assert "openai: 2 of 3 samples failed: rate_limited: HTTP 429: slow down" in lines(text)
    assert text.count("slow down") == 1


def test_each_distinct_error_is_shown_once() -> None:
    errors = (
        ProbeError(ErrorKind.TIMEOUT, None, "no answer within 5s"),
        ProbeError(ErrorKind.SERVER, 503, "HTTP 503: overloaded"),
        ProbeError(ErrorKind.SERVER, 503, "HTTP 503: overloaded"),
    )
    text = rendered(
        result(target(status=Status.ERROR, samples=3, errors=errors, fingerprints=(), models=()))
    )
    error_lines = [line for line in lines(text) if "no answer" in line or "overloaded" in line]
    assert len(error_lines) == 2
    assert error_lines[0].startswith("openai: 3 of 3 samples failed: ")
    # Continuation lines are indented under the first; what follows is "kind: message".
    lead = "openai: 3 of 3 samples failed"
    shown = {line.strip().removeprefix(lead).removeprefix(": ") for line in error_lines}
    assert shown == {
        "timeout: no answer within 5s",
        "server: HTTP 503: overloaded",
    }


def test_error_messages_are_shortened_and_escaped() -> None:
    message = "HTTP 502: <html>" + "x" * 500 + "\x1b[31m"
    text = rendered(result(target(errors=(ProbeError(ErrorKind.SERVER, 502, message),))))
    line = next(line for line in lines(text) if "samples failed" in line)
    assert "\x1b" not in line and line.endswith("…")
    assert len(line.split("server: ", 1)[1]) == 200


# --- the console ---------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_on_a_pipe_is_plain_and_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    console = make_console(out)
    long_row = target(fingerprints=tuple(f"fp_{i:010d}" for i in range(8)), status=Status.NEW)
    render_check(console, result(long_row, exit_code=1))
    text = out.getvalue()
    assert "\x1b" not in text
    assert len([line for line in text.splitlines() if line.startswith("openai ")]) == 1


def test_console_on_a_terminal_has_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = FakeTerminal()
    render_check(make_console(out), result(rollout(), exit_code=1))
    assert "\x1b[" in out.getvalue()


def test_no_color_on_a_terminal_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = FakeTerminal()
    render_check(make_console(out), result(rollout(), exit_code=1))
    assert "new" in out.getvalue()
    assert "\x1b" not in out.getvalue()


def test_rich_markup_in_plain_console_output_is_literal() -> None:
    out = io.StringIO()
    make_console(out).print("next: run [bold]fpmon check[/bold]")
    assert out.getvalue() == "next: run [bold]fpmon check[/bold]\n"


# --- the JSON contract -----------------------------------------------------------------------


def readme_example() -> dict[str, Any]:
    text = README.read_text()
    block = re.search(r"### JSON.*?```json\n(.*?)```", text, re.S)
    assert block, "README.md lost its JSON example"
    return json.loads(block.group(1))


def json_type(value: Any) -> str:
    return "number" if type(value) in (int, float) else type(value).__name__


def test_check_json_has_exactly_the_readme_fields_and_types() -> None:
    example = readme_example()
    limited = ProbeError(ErrorKind.RATE_LIMITED, 429, "HTTP 429: slow down")
    data = json.loads(
        json.dumps(
            check_json(
                result(target(errors=(limited,), headers={"server": ("a",)}, unseen_estimate=0.25))
            )
        )
    )
    assert list(data) == list(example)
    for key, value in example.items():
        assert json_type(data[key]) == json_type(value), key
    (item,) = data["targets"]
    model_target = example["targets"][0]
    assert list(item) == list(model_target)
    for key, value in model_target.items():
        assert json_type(item[key]) == json_type(value), key
    assert list(item["errors"][0]) == list(model_target["errors"][0])
    for key, value in model_target["errors"][0].items():
        assert json_type(item["errors"][0][key]) == json_type(value), key


def test_check_json_values() -> None:
    limited = ProbeError(ErrorKind.RATE_LIMITED, 429, "HTTP 429: slow down")
    data = check_json(
        result(
            target(
                status=Status.NEW,
                unexpected=True,
                fingerprints=(C,),
                errors=(limited,),
                headers={"server": ("nginx", "envoy")},
                changes=rollout().changes,
            ),
            exit_code=1,
        )
    )
    assert data["version"] == 1 and data["exit_code"] == 1 and type(data["exit_code"]) is int
    assert data["checked_at"] == "2026-11-29T10:00:00.123456Z"
    assert (data["check_id"], data["recorded"]) == ("9f1c0000aaaa", True)
    (item,) = data["targets"]
    assert (item["name"], item["status"], item["unexpected"]) == ("openai", "new", True)
    assert item["fingerprints"] == [C]
    assert item["previous"] == [A, B] and item["known"] == [A, B]
    assert item["models"] == item["previous_models"] == ["gpt-4o-mini-2024-07-18"]
    assert item["headers"] == {"server": ["nginx", "envoy"]}
    assert item["samples"] == 3
    assert item["errors"] == [
        {"kind": "rate_limited", "status_code": 429, "message": "HTTP 429: slow down"}
    ]
    assert item["latency_ms"] == 412.3


def test_check_json_value_states_and_whole_values() -> None:
    long_value = "fp_" + "x" * 300 + "\x1b[2J"
    data = check_json(
        result(
            target(
                fingerprints=(NULL, ABSENT, "", long_value),
                models=(NULL,),
                previous=(NULL,),
                known=(NULL, ABSENT),
                previous_models=None,
                known_models=(),
                latency_ms=None,
            )
        )
    )
    item = json.loads(json.dumps(data))["targets"][0]
    assert item["fingerprints"] == [None, "<absent>", "", long_value]
    assert item["models"] == [None]
    assert item["previous"] == [None] and item["known"] == [None, "<absent>"]
    assert item["previous_models"] is None and item["known_models"] == []
    assert item["latency_ms"] is None
