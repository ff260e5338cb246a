"""The README's links lead to files a reader of the repository has (mkdocs build --strict checks
the links inside docs/), and no page points at a file a user does not have."""

from __future__ import annotations

import re

import pytest

from tests.docs.markdown import ROOT, pages

# Files and documents that were once referred to and that no user has.
MISSING = (
    "DESIGN.md",
    "provider-notes",
    "provider document",
    "../shared",
    "fp_monitor/fake_api.py",
)


def _page_params() -> list[object]:
    found: list[object] = []
    for page in pages():
        found.append(pytest.param(page, id=str(page.relative_to(ROOT))))
    return found


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    broken = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not broken


@pytest.mark.parametrize("page", _page_params())
def test_no_reference_to_a_file_users_do_not_have(page: object) -> None:
    text = page.read_text()  # type: ignore[attr-defined]
    assert not [name for name in MISSING if name in text]


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 200
