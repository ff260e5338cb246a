"""CI reports on text: JUnit XML parsed by a real XML parser, markdown, workflow commands."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from fp_monitor.domain.models import (
    NULL,
    Change,
    CheckResult,
    ErrorKind,
    ProbeError,
    Status,
    TargetResult,
)
from fp_monitor.output.reports import junit_xml, markdown, publish, workflow_commands

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def target(name: str, status: Status, **kw: object) -> TargetResult:
    values: dict = {
        "name": name,
        "status": status,
        "unexpected": False,
        "fingerprints": ("fp_a",),
        "models": ("m-1",),
        "previous": ("fp_a",),
        "previous_models": ("m-1",),
        "known": ("fp_a",),
        "known_models": ("m-1",),
        "samples": 3,
        "errors": (),
        "latency_ms": 250.0,
        "changes": (),
    }
    values.update(kw)
    return TargetResult(**values)


RESULT = CheckResult(
    check_id="c1",
    checked_at=NOW,
    exit_code=1,
    recorded=True,
    targets=(
        target("steady", Status.SAME),
        target(
            "grok",
            Status.NEW,
            unexpected=True,
            fingerprints=("fp_new",),
            changes=(Change("grok", "fingerprint", ("fp_a",), ("fp_new",), NOW),),
        ),
        target(
            "down",
            Status.ERROR,
            fingerprints=(),
            models=(),
            latency_ms=None,
            errors=(ProbeError(ErrorKind.RATE_LIMITED, 429, "HTTP 429: slow down\x1b[31m"),),
        ),
        target("legacy", Status.SAME, fingerprints=(NULL,)),
    ),
)


def test_junit_has_one_testcase_per_target_with_failure_and_error() -> None:
    suite = ET.fromstring(junit_xml(RESULT))
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["steady", "grok", "down", "legacy"]
    assert list(cases["steady"]) == [] and list(cases["legacy"]) == []
    failure = cases["grok"].find("failure")
    assert failure is not None and failure.get("type") == "new"
    message = failure.get("message") or ""
    assert "fp_a -> fp_new" in message and "fpmon accept grok" in message
    error = cases["down"].find("error")
    assert error is not None and error.get("type") == "rate_limited"
    assert "slow down" in (error.text or "") and "\x1b" not in (error.text or "")
    assert cases["grok"].get("time") == "0.250"


def test_markdown_table_rows_and_notes() -> None:
    lines = markdown(RESULT).splitlines()
    assert lines[2] == "| target | status | fingerprints | models | latency |"
    assert "| grok | new | fp_new | m-1 | 250 ms |" in lines
    assert "| down | error | - | - | - |" in lines
    assert "| legacy | same | &lt;null> | m-1 | 250 ms |" in lines
    assert any(line.startswith("- **grok**: fingerprint: fp_a -> fp_new") for line in lines)


def test_workflow_commands_error_for_change_warning_for_failure() -> None:
    lines = workflow_commands(RESULT)
    assert len(lines) == 2
    assert lines[0].startswith("::error title=fpmon%3A grok new::fingerprint: fp_a -> fp_new")
    assert lines[1].startswith("::warning title=fpmon%3A down could not be probed::rate_limited")


def test_publish_writes_junit_summary_and_annotations(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = io.StringIO()
    environ = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true"}
    publish(RESULT, junit=tmp_path / "out" / "junit.xml", environ=environ, stdout=out)
    assert ET.parse(tmp_path / "out" / "junit.xml").getroot().get("failures") == "1"
    assert summary.read_text().startswith("earlier step\n### fpmon check")
    assert out.getvalue().count("::") == 4


def test_publish_without_ci_environment_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    publish(RESULT, junit=None, environ={}, stdout=out)
    assert out.getvalue() == "" and list(tmp_path.iterdir()) == []
