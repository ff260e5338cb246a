"""What the long-running commands say on stderr, as processes: a watch stopped by Ctrl-C says so
in one line (not that line and "interrupted" after it), and the proxy's warnings read like every
other command's (`fpmon: warning:`)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI
from tests.e2e.conftest import Spawn


def test_ctrl_c_on_a_watch_is_one_line(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    proc = spawn("watch", "--every", "1h", "--history", "h.db")
    assert proc.stdout is not None
    assert " alpha first " in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "fpmon: watch stopped by SIGINT after 1 check"
    assert "interrupted" not in err


def test_the_proxy_warns_like_every_other_command(spawn: Spawn, fake: FakeAPI) -> None:
    proc = spawn(
        "proxy",
        "--listen",
        "0.0.0.0:0",
        "--upstream",
        "http://192.0.2.1/v1",  # TEST-NET-1: never reached, only named
        "--target",
        "app",
        "--new-target",
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("fpmon proxy: ")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 2, err
    assert all(line.startswith("fpmon: warning: ") for line in warnings), warnings
