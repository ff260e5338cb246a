"""A locked `new` in the CI reports on every run, not only the first: the JUnit <failure>, the
::error annotation and the markdown summary each carry what the lock accepts ("before") and the
value served ("now"); the markdown summary also has the changes table and the explanation line.
In-process against the fake API, with the GitHub Actions environment set."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import Run

ACCEPTED = ("fp_6ca29cf396", "fp_9a1b2c3d4e")
ROLLED = "fp_rolled0001"
LOCK = f"""version = 1

[targets.grok]
fingerprints = ["{ACCEPTED[0]}", "{ACCEPTED[1]}"]
models = ["grok-4-0709"]
"""


@pytest.fixture
def locked_rollout(
    write_config: Callable[..., Path], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    summary = isolated / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    (isolated / "fpmon.lock").write_text(LOCK)
    return summary


def test_every_run_of_a_locked_new_reports_before_and_now(
    cli: Callable[..., Run],
    write_config: Callable[..., Path],
    locked_rollout: Path,
    isolated: Path,
) -> None:
    rolled = ModelBehaviour([ROLLED], resolved_model="grok-4-0709")
    with FakeAPI({"grok-4": rolled}) as fake:
        write_config(fake.base_url, grok={"model": "grok-4"})
        runs = [cli("check", "--junit", f"junit-{n}.xml") for n in (1, 2)]
    assert [r.code for r in runs] == [1, 1]
    before, now = ", ".join(ACCEPTED), ROLLED
    for number, run in enumerate(runs, start=1):
        failure = ET.parse(isolated / f"junit-{number}.xml").getroot().find("testcase/failure")
        assert failure is not None
        for text in (failure.get("message") or "", failure.text or ""):
            assert f"fingerprint: {before} -> {now}" in text, (number, text)
        [error] = [line for line in run.out.splitlines() if line.startswith("::error ")]
        assert f"fingerprint: {before} -> {now}" in error
    summaries = locked_rollout.read_text().split("### fpmon check")[1:]
    assert len(summaries) == 2
    for summary in summaries:
        assert f"- **grok**: fingerprint: {before} -> {now}" in summary
        assert "grok: a value never seen (or accepted) before: the backend changed; if " in summary
    # the first run moved from the accepted set to the new value: its summary has the table
    assert "#### changes" in summaries[0]
    assert f"| grok | fingerprint | {before} | {now} |" in summaries[0]
