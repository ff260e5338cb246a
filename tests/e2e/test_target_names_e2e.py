"""Names a new user can mistype: `fpmon proxy --target` refuses a target that neither the config
nor the history knows (with a did-you-mean) unless --new-target, and an explicit --baseline that
does not exist is an error, not an empty lock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run
from tests.e2e.conftest import Spawn


@pytest.fixture
def configured(write_config: Callable[..., Path], fake: FakeAPI) -> FakeAPI:
    write_config(fake.base_url, grok={"model": "model-a"})
    return fake


def test_proxy_refuses_a_misspelled_target(
    fpmon: Callable[..., Run], configured: FakeAPI, isolated: Path
) -> None:
    run = fpmon("proxy", "--upstream", configured.base_url, "--target", "grk", timeout=30)
    assert run.code == 2
    assert run.out == ""
    [line] = run.err.splitlines()
    assert line.startswith("fpmon: error: unknown target 'grk' (did you mean 'grok'?)")
    assert "--new-target" in line
    assert not (isolated / "xdg-data").exists()  # no history was started under the typo


def start_proxy(spawn: Spawn, upstream: str, *args: str) -> str:
    proc = spawn("proxy", "--listen", "127.0.0.1:0", "--upstream", upstream, *args)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return banner


def test_proxy_takes_a_target_of_the_config_or_the_history_or_a_new_one_on_purpose(
    cli: Callable[..., Run], spawn: Spawn, configured: FakeAPI, isolated: Path
) -> None:
    assert "(target grok," in start_proxy(spawn, configured.base_url, "--target", "grok")
    banner = start_proxy(spawn, configured.base_url, "--target", "search-app", "--new-target")
    assert "(target search-app," in banner
    assert cli("check").code == 0  # the history knows grok now
    (isolated / "fpmon.toml").unlink()  # and the config is gone
    assert "(target grok," in start_proxy(spawn, configured.base_url, "--target", "grok")


@pytest.mark.parametrize("command", [("check",), ("watch", "--every", "1s", "--count", "1")])
def test_an_explicit_baseline_that_does_not_exist_is_an_error(
    cli: Callable[..., Run], configured: FakeAPI, command: tuple[str, ...]
) -> None:
    run = cli(*command, "--baseline", "missing.lock")
    assert run.code == 2
    [line] = run.err.splitlines()
    assert line.startswith("fpmon: error: --baseline missing.lock: no such file")
    assert configured.requests() == []
