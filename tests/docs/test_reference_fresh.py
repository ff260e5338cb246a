"""The generated reference pages are what docs/gen_reference.py makes of the code today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.docs.markdown import ROOT

GENERATED = ("cli.md", "configuration.md", "exit-codes.md")


def test_generated_reference_pages_are_fresh(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    stale = [
        name
        for name in GENERATED
        if (tmp_path / name).read_text() != (ROOT / "docs" / "reference" / name).read_text()
    ]
    assert not stale, f"stale: docs/reference/{stale}: run python docs/gen_reference.py"


def test_every_generated_page_is_in_the_site_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in GENERATED:
        assert f"reference/{name}" in nav
