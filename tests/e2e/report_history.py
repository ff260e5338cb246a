"""A history for `fpmon report`, recorded by the installed `fpmon check` against the fake API
over loopback: a rotation, a flap, an error period, a learning phase, hostile fingerprints and a
lock. Recorded once per test module (about ten seconds of checks); tests that alter it work on
a copy. (Subprocesses, not the core in this process: Playwright's sync API keeps an event loop
running in the test's thread, where the check's asyncio.run cannot start another.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import FPMON, config_text

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
HOSTILE = ("<script>window.pwned=1</script>", '"><img src=x onerror="window.pwned=2">')
TARGETS = ("flapping", "hostile", "learning", "rotating", "failing")
ROUNDS = 8


def record_history(directory: Path) -> Path:
    """Eight checks, about 0.3 s apart so that they fall in several buckets. `rotating` serves
    [A, B] then [C] (new) from the fifth; `flapping` one of A and B per check (changed);
    `failing` fails in the fourth and fifth; `learning` learns; `hostile` serves markup and
    is in the lock. Returns the config file; its history is history.db beside it."""
    fleet = {
        "model-a": ModelBehaviour(fingerprints=[A, B], resolved_model="model-a-2026"),
        "model-f": ModelBehaviour(fingerprints=[A, B], resolved_model="model-f-1"),
        "model-h": ModelBehaviour(fingerprints=list(HOSTILE), resolved_model="h-1"),
        "model-l": ModelBehaviour(fingerprints=[A, B, C], resolved_model="l-1"),
        "model-x": ModelBehaviour(fingerprints=[C], resolved_model="x-1"),
    }
    config = directory / "fpmon.toml"
    with FakeAPI(fleet) as fake:
        config.write_text(
            'history = "history.db"\n'
            + config_text(
                fake.base_url,
                rotating={"model": "model-a", "samples": 2},
                flapping={"model": "model-f", "samples": 1},
                failing={"model": "model-x", "samples": 2},
                learning={"model": "model-l", "samples": 3, "learning": True},
                hostile={"model": "model-h", "samples": 2},
            )
        )
        for step in range(ROUNDS):
            if step == 3:
                fake.add_faults([Fault("status", status=503, model="model-x", times=4)])
            if step == 4:
                fake.rotate("model-a", [C])
            _fpmon(directory, "check", "--exit-zero", "--quiet")
            if step == 0:
                _fpmon(directory, "accept", "hostile")
            time.sleep(0.3)
    return config


def _fpmon(directory: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPMON_")}
    assert FPMON is not None, "the fpmon command is not installed: pip install -e '.[dev]'"
    proc = subprocess.run(
        [FPMON, *args, "--config", str(directory / "fpmon.toml")],
        cwd=directory,
        env={**env, "XDG_CONFIG_HOME": str(directory), "XDG_DATA_HOME": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
