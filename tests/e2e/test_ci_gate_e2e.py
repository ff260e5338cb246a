"""The CI gate with the installed command: lock, fail on every run until accepted, accept,
pass; --locked; reports; bad lock files."""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"


def lock_entries(path: Path = Path("fpmon.lock")) -> dict:
    return tomllib.loads(path.read_text())["targets"]


def test_lock_fail_review_accept_pass(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 4}, beta={"model": "model-b"})
    assert fpmon("check").code == 0
    accepted = fpmon("accept")
    assert accepted.code == 0, accepted.err
    assert f"alpha: + fingerprint {A}" in accepted.out and "wrote" in accepted.out
    lock = lock_entries(isolated / "fpmon.lock")
    assert lock["alpha"]["fingerprints"] == [A, B]
    assert lock["alpha"]["models"] == ["model-a-2026"]
    assert lock["beta"]["fingerprints"] == [C]

    fake.rotate("model-a", [C])
    for _ in range(2):  # the history no longer widens a locked target: it keeps failing
        failed = fpmon("check")
        assert failed.code == 1
        assert "fpmon accept alpha" in failed.out
    before = (isolated / "fpmon.lock").read_bytes()
    assert fpmon("accept", "alpha").code == 0
    assert lock_entries(isolated / "fpmon.lock")["alpha"]["fingerprints"] == [A, B, C]
    assert (
        lock_entries(isolated / "fpmon.lock")["beta"]
        == tomllib.loads(before.decode())["targets"]["beta"]
    )
    assert fpmon("check").code == 0


def test_reaccept_leaves_the_lock_byte_identical(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    assert fpmon("accept", "--probe").code == 0
    first = (isolated / "fpmon.lock").read_bytes()
    again = fpmon("accept", "--probe")
    assert again.code == 0 and "alpha: unchanged" in again.out
    assert (isolated / "fpmon.lock").read_bytes() == first


def test_replace_makes_the_lock_equal_to_what_was_observed(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    assert fpmon("accept", "--probe").code == 0
    fake.rotate("model-a", [C])
    replaced = fpmon("accept", "--probe", "--replace")
    assert replaced.code == 0
    assert (
        f"alpha: - fingerprint {A}" in replaced.out and f"alpha: + fingerprint {C}" in replaced.out
    )
    assert lock_entries()["alpha"]["fingerprints"] == [C]


def test_lock_entry_serves_as_previous_without_history(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 4})
    (isolated / "fpmon.lock").write_text(
        f'version = 1\n[targets.alpha]\nfingerprints = ["{A}", "{B}"]\nmodels = ["model-a-2026"]\n'
    )
    result = fpmon("check", "--json")
    assert result.code == 0
    assert result.json()["targets"][0]["status"] == "same"
    fake.rotate("model-a", [C])
    assert fpmon("check", "--json").json()["targets"][0]["status"] == "new"


def test_locked_flag_fails_a_target_without_entry(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"}, beta={"model": "model-b"})
    assert fpmon("accept", "--probe", "alpha").code == 0
    result = fpmon("check", "--locked", "--json")
    assert result.code == 1
    statuses = {t["name"]: t["status"] for t in result.json()["targets"]}
    assert statuses == {"alpha": "same", "beta": "new"}
    assert fpmon("check", "--json").code == 0  # without --locked beta's history decides


def test_accept_unknown_target_and_target_without_success(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"}, beta={"model": "model-b"})
    unknown = fpmon("accept", "gamma")
    assert unknown.code == 2 and "unknown target 'gamma'" in unknown.err
    assert not Path("fpmon.lock").exists()
    assert fpmon("check", "alpha").code == 0
    partial = fpmon("accept", "alpha", "beta")
    assert partial.code == 3
    assert "beta: no successful check" in partial.err
    assert list(lock_entries()) == ["alpha"]


def test_bad_lock_is_exit_2_and_nothing_probed(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    for text in ("version = 7\n", "not toml ["):
        (isolated / "fpmon.lock").write_text(text)
        result = fpmon("check")
        assert result.code == 2
        assert "fpmon.lock" in result.err and len(result.err.strip().splitlines()) == 1
    assert fake.requests() == []
    assert not (isolated / "xdg-data/fpmon/history.db").exists()


def test_baseline_flag_env_and_config_key(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    assert fpmon("accept", "--probe", "--baseline", "ci/flag.lock").code == 0
    assert (isolated / "ci/flag.lock").exists() and not (isolated / "fpmon.lock").exists()
    assert fpmon("accept", "--probe", env={"FPMON_BASELINE": "env.lock"}).code == 0
    assert (isolated / "env.lock").exists()


def test_junit_step_summary_and_workflow_commands(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"}, beta={"model": "model-b"})
    assert fpmon("accept", "--probe").code == 0
    fake.rotate("model-a", [C])
    summary = isolated / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = fpmon("check", "--locked", "--junit", "reports/junit.xml", env=env)
    assert result.code == 1
    suite = ET.parse(isolated / "reports/junit.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["alpha"].find("failure") is not None and cases["beta"].find("failure") is None
    assert f"{A}, {B} -> {C}" in (cases["alpha"].find("failure").get("message") or "")
    assert "| alpha | new |" in summary.read_text()
    errors = [line for line in result.out.splitlines() if line.startswith("::error ")]
    assert len(errors) == 1 and "fpmon accept alpha" in errors[0]
    markdown = fpmon("check", "--format", "markdown", "--no-record")
    assert markdown.out.startswith("### fpmon check\n") and "| beta | same |" in markdown.out
