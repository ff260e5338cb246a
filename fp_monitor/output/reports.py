"""Reports that CI systems read: JUnit XML, a markdown table (GitHub step summary or stdout)
and GitHub Actions workflow commands."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from fp_monitor.domain.models import CheckResult, Status
from fp_monitor.domain.text import clean, describe
from fp_monitor.fileio import write_atomic
from fp_monitor.output.formats import markdown_cell as _md
from fp_monitor.output.formats import markdown_table
from fp_monitor.output.render import diff_table, explanation, result_table


def junit_xml(result: CheckResult) -> str:
    """One testsuite, one testcase per target: <failure> for an unexpected change, <error>
    for a target that could not be probed."""
    failures = [t for t in result.targets if t.unexpected]
    errors = [t for t in result.targets if t.status is Status.ERROR]
    suite = ET.Element(
        "testsuite",
        name="fpmon",
        tests=str(len(result.targets)),
        failures=str(len(failures)),
        errors=str(len(errors)),
        timestamp=result.checked_at.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for target in result.targets:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="fpmon",
            name=clean(target.name),
            time=f"{(target.latency_ms or 0) / 1000:.3f}",
        )
        if target.unexpected:
            node = ET.SubElement(case, "failure", type=target.status.value)
        elif target.status is Status.ERROR:
            node = ET.SubElement(case, "error", type=target.errors[0].kind.value)
        else:
            continue
        node.set("message", f"{target.status.value}: {describe(target)}")
        node.text = describe(target)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def markdown(result: CheckResult) -> str:
    """The check as the terminal shows it, in markdown: the result table, the changes table,
    a line per target that changed or failed, and what an unexpected status means."""
    lines = markdown_table(result_table(result)).rstrip("\n").splitlines()
    changes = diff_table(result)
    if changes is not None:
        lines += ["", markdown_table(changes, level=4).rstrip("\n")]
    notes = [
        f"- **{_md(t.name)}**: {_md(describe(t))}"
        for t in result.targets
        if t.changes or t.errors or t.unexpected
    ]
    explained = [_md(line) for t in result.targets if (line := explanation(t)) is not None]
    parts = ["### fpmon check", "", *lines, "", *notes, "", *explained]
    return "\n".join(parts).rstrip() + "\n"


def workflow_commands(result: CheckResult) -> list[str]:
    """GitHub Actions annotations: ::error for an unexpected change, ::warning for a probe
    failure."""
    lines = []
    for t in result.targets:
        if t.unexpected:
            title = f"fpmon: {t.name} {t.status.value}"
            lines.append(f"::error title={_property(title)}::{_data(describe(t))}")
        elif t.status is Status.ERROR:
            title = f"fpmon: {t.name} could not be probed"
            lines.append(f"::warning title={_property(title)}::{_data(describe(t))}")
    return lines


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def publish(
    result: CheckResult,
    *,
    junit: Path | None,
    environ: Mapping[str, str],
    stdout: TextIO,
) -> None:
    """Every CI report that applies: --junit, $GITHUB_STEP_SUMMARY, GitHub annotations."""
    if junit is not None:
        write_atomic(junit, junit_xml(result))
    if summary := environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown(result))
    if environ.get("GITHUB_ACTIONS") == "true":
        for line in workflow_commands(result):
            print(line, file=stdout)
