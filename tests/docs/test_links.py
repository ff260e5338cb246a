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
# The CLI reference is generated from the help texts in fp_monitor/cli.py, and `fpmon fake-api
# --config` still says "see fp_monitor/fake_api.py" there. Strict: once the help text points at
# the fake API reference page instead, this xfail turns into a failure and must be removed.
_CLI_HELP_TO_FIX = pytest.mark.xfail(
    reason="fp_monitor/cli.py: fake-api --config help names fp_monitor/fake_api.py", strict=True
)


def _page_params() -> list[object]:
    found: list[object] = []
    for page in pages():
        name = str(page.relative_to(ROOT))
        marks = [_CLI_HELP_TO_FIX] if name == "docs/reference/cli.md" else []
        found.append(pytest.param(page, id=name, marks=marks))
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
