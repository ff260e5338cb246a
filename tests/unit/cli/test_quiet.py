"""`fpmon check --quiet`: it prints what is unexpected or could not be probed, whatever the exit
code (report-only mode with --exit-zero must still report), and nothing otherwise. The help,
the docs and the code say the same. In-process against the fake API."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault
from tests.conftest import Run
from tests.docs.markdown import ROOT

RULE = "only the targets that are unexpected or could not be probed"


@pytest.fixture
def two(cli: Callable[..., Run], write_config: Callable[..., Path], fake: FakeAPI) -> FakeAPI:
    write_config(fake.base_url, alpha={"model": "model-a"}, beta={"model": "model-b"})
    assert cli("check").code == 0
    return fake


@pytest.mark.parametrize("exit_zero", [False, True], ids=["gate", "exit-zero"])
def test_quiet_shows_a_new_value_and_an_error_whatever_the_exit_code(
    cli: Callable[..., Run], two: FakeAPI, exit_zero: bool
) -> None:
    extra = ("--exit-zero",) if exit_zero else ()
    assert cli("check", "-q", *extra) == Run(0, "", "")
    two.rotate("model-a", ["fp_0123456789"])
    new = cli("check", "-q", *extra)
    assert new.code == (0 if exit_zero else 1)
    assert "alpha" in new.out and "new" in new.out and "fp_0123456789" in new.out
    assert "beta" not in new.out  # the target that is as expected is left out
    two.add_faults([Fault("status", status=500, model="model-b", times=99)])
    failed = cli("check", "-q", *extra, "--json")
    assert failed.code == (0 if exit_zero else 3)
    assert [t["name"] for t in json.loads(failed.out)["targets"]] == ["beta"]


def test_the_help_and_the_docs_say_what_quiet_does(cli: Callable[..., Run]) -> None:
    shown = re.sub(r"[\s│]+", " ", cli("check", "--help").out)
    assert RULE in shown
    for page in ("docs/tutorial/check.md", "docs/how-to/cron-systemd.md"):
        text = re.sub(r"\s+", " ", (ROOT / page).read_text())
        assert RULE in text, page
