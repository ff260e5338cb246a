"""The rehearsal tools say what they are: `fpmon fake-api` lists its models and its control
endpoints when it starts (each documented and each answering), and `fpmon demo` gives the real
defaults beside the small numbers it uses."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx2

from fp_monitor.devtools.fake_api import CONTROL_ENDPOINTS, default_fleet
from fp_monitor.domain.learning import LearningSettings
from tests.conftest import Run
from tests.docs.markdown import ROOT
from tests.e2e.conftest import Spawn

# A body each control endpoint takes, to show it answers.
BODIES = {
    "/_fake/models/{name}": {"fingerprints": ["fp_1111111111"]},
    "/_fake/rotate": {"model": "grok-4", "fingerprints": ["fp_2222222222"]},
    "/_fake/perturb": {"model": "grok-4", "configuration": 0, "size": 10.0},
    "/_fake/faults": [],
}


def test_fake_api_lists_its_models_and_control_endpoints_when_it_starts(spawn: Spawn) -> None:
    proc = spawn("fake-api", "--port", "0")
    assert proc.stdout is not None
    serving, models, control = (proc.stdout.readline().rstrip("\n") for _ in range(3))
    try:
        assert serving.startswith("fake API serving on http://127.0.0.1:")
        base = serving.split()[4].removesuffix("/v1")
        assert models == (
            f"models: {', '.join(sorted(default_fleet()))} (any other model: the default behaviour)"
        )
        assert control == f"control endpoints: {', '.join(CONTROL_ENDPOINTS)}"
        reference = (ROOT / "docs" / "reference" / "fake-api.md").read_text()
        for endpoint in CONTROL_ENDPOINTS:
            assert f"| `{endpoint}` |" in reference, endpoint
            method, path = endpoint.split()
            body = json.dumps(BODIES.get(path, {})).encode()
            url = base + path.replace("{name}", "my-model")
            answer = httpx2.request(method, url, content=body if method == "POST" else None)
            assert answer.status_code == 200, (endpoint, answer.text)
    finally:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_the_demo_says_the_defaults_beside_its_small_numbers(
    cli: Callable[..., Run], isolated: Path
) -> None:
    run = cli("demo")
    assert run.code == 0, run.err
    defaults = LearningSettings()
    assert f"the bootstrap; {defaults.bootstrap_samples} by default" in run.out
    assert f"{defaults.min_samples} by default" in run.out
    assert "before seen since" in run.out and "before first seen" not in run.out
