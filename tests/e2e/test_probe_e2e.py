"""What the probe sends and how every failure mode of a server ends: error kind, HTTP status,
exit code, and the observation kept in the history."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import FPMON, Run, config_text

HISTORY = Path("xdg-data/fpmon/history.db")


def observations(sql: str = "SELECT error_kind, http_status, attempts FROM observations") -> list:
    with sqlite3.connect(HISTORY) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        (Fault("status", status=401), "auth", 401),
        (Fault("status", status=403), "auth", 403),
        (Fault("status", status=404), "not_found", 404),
        (Fault("status", status=400), "bad_request", 400),
        (Fault("status", status=429, headers={"retry-after-ms": "5"}), "rate_limited", 429),
        (Fault("status", status=500, headers={"retry-after-ms": "5"}), "server", 500),
        (Fault("status", status=503, headers={"retry-after-ms": "5"}), "server", 503),
        (Fault("status", status=408, headers={"retry-after-ms": "5"}), "timeout", 408),
        (Fault("html"), "bad_response", 200),
        (Fault("truncated"), "bad_response", 200),
        (Fault("not_chat"), "bad_response", 200),
        (Fault("huge"), "bad_response", 200),
        (Fault("redirect", location="http://127.0.0.1:9/steal"), "bad_response", 307),
        (Fault("drop", headers={"retry-after-ms": "5"}), "connection", None),
        (Fault("drop_mid_body"), "connection", None),
        (Fault("slow", delay=3.0), "timeout", None),
    ],
    ids=lambda v: v.kind + str(v.status) if isinstance(v, Fault) else None,
)
def test_fault_matrix(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    fault: Fault,
    kind: str,
    status: int | None,
) -> None:
    write_config(fake.base_url, t={"model": "model-a", "samples": 1, "timeout": "1s", "retries": 2})
    fault.times = 10  # outlasts every retry
    fake.add_faults([fault])
    result = fpmon("check", "--json")
    assert result.code == 3, result.err
    target = result.json()["targets"][0]
    assert target["status"] == "error"
    assert [(e["kind"], e["status_code"]) for e in target["errors"]] == [(kind, status)]
    assert target["errors"][0]["message"]
    stored = observations()
    assert [(k, s) for k, s, _ in stored] == [(kind, status)]
    retried = kind in ("rate_limited", "server", "timeout", "connection")
    assert stored[0][2] == (3 if retried else 1)


def test_retries_then_success_keeps_attempt_count(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "samples": 1, "retries": 2})
    fake.add_faults([Fault("status", status=503, headers={"retry-after-ms": "5"}, times=2)])
    result = fpmon("check", "--json")
    assert result.code == 0
    assert result.json()["targets"][0]["fingerprints"] == ["fp_cccccccccc"]
    assert observations() == [(None, 200, 3)]
    assert len(fake.requests()) == 3


def test_x_should_retry_false_stops_retries(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "samples": 1, "retries": 2})
    fake.add_faults([Fault("status", status=503, headers={"x-should-retry": "false"}, times=5)])
    assert fpmon("check").code == 3
    assert len(fake.requests()) == 1


def test_partial_failure_takes_status_from_successes(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "samples": 3, "retries": 0})
    fake.add_faults([Fault("status", status=400)])
    result = fpmon("check", "--json")
    assert result.code == 0
    target = result.json()["targets"][0]
    assert target["status"] == "first" and len(target["errors"]) == 1
    fake.add_faults([Fault("status", status=400)])
    table = fpmon("check")
    assert table.code == 0
    assert "t: 1 of 3 samples failed: bad_request: HTTP 400" in table.out


def test_request_shape_per_preset(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    fake.set_model("o4-mini", ModelBehaviour(["fp_r"], reasoning=True))
    write_config(
        fake.base_url,
        oa={"provider": "openai", "model": "o4-mini", "api_key_env": "K"},
        xa={"provider": "xai", "model": "model-b", "api_key_env": "K"},
        custom={"model": "model-a", "params": {"max_tokens": 5, "seed": 7}},
    )
    result = fpmon("check", "--json", env={"K": "sk-fpmontestkey000001"})
    assert result.code == 0, result.out
    bodies = {r.model: r.body for r in fake.requests()}
    assert bodies["o4-mini"]["max_completion_tokens"] == 1
    assert "max_tokens" not in bodies["o4-mini"]
    assert bodies["model-b"]["max_tokens"] == 1
    assert bodies["model-a"]["max_tokens"] == 5 and bodies["model-a"]["seed"] == 7
    for body in bodies.values():
        assert "temperature" not in body and body.get("n", 1) == 1
        assert len(body["messages"]) == 1
    auth = {r.model: r.auth for r in fake.requests()}
    assert auth == {"o4-mini": "bearer", "model-b": "bearer", "model-a": None}


def test_azure_deployment_path_and_api_key_header(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    with FakeAPI(
        {"prod-4o": ModelBehaviour(["fp_azure0001"], resolved_model="gpt-4o-2024-08-06")},
        api_keys=["azure-secret-key-1"],
    ) as fake:
        (isolated / "fpmon.toml").write_text(
            "[targets.az]\nprovider = 'azure'\nbase_url = '" + fake.url + "'\n"
            "deployment = 'prod-4o'\napi_version = '2024-10-21'\n"
        )
        result = fpmon("check", "--json", env={"AZURE_OPENAI_API_KEY": "azure-secret-key-1"})
        assert result.code == 0, result.out + result.err
        target = result.json()["targets"][0]
        assert target["fingerprints"] == ["fp_azure0001"]
        request = fake.requests()[0]
        assert request.path == "/openai/deployments/prod-4o/chat/completions"
        assert "api-version=2024-10-21" in request.query
        assert (request.auth, request.key_ok) == ("api-key", True)
        assert "model" not in request.body and request.body["max_completion_tokens"] == 1


def test_canary_key_never_leaves_the_process(fpmon: Callable[..., Run], isolated: Path) -> None:
    canary = "sk-CANARY-" + "9" * 32
    with FakeAPI(
        {"m": ModelBehaviour(["fp_k"])}, api_keys=["other"], echo_key_in_errors=True
    ) as fake:
        (isolated / "fpmon.toml").write_text(
            config_text(fake.base_url, t={"model": "m", "api_key_env": "CANARY_KEY"})
        )
        env = {"CANARY_KEY": canary}
        outputs = [
            fpmon("check", env=env),
            fpmon("check", "--json", env=env),
            fpmon("check", "--debug", env=env),
            fpmon("targets", env=env),
            fpmon("targets", "--json", env=env),
        ]
        assert all(r.code in (0, 3) for r in outputs)
        assert fake.requests()[0].key_ok is False  # the server saw it and echoed it back
    for run in outputs:
        assert canary not in run.out and canary not in run.err
    for path in isolated.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path


def test_six_concurrent_processes_lose_no_row(
    fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, a={"model": "model-a", "samples": 3}, b={"model": "model-b"})
    env = {**os.environ}
    procs = [
        subprocess.Popen([FPMON or "fpmon", "check", "--quiet"], cwd=isolated, env=env)
        for _ in range(6)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    assert observations("SELECT count(*) FROM observations") == [(6 * 6,)]
    assert observations("SELECT count(*) FROM checks") == [(12,)]
    chain = observations("SELECT prev_hash, hash FROM observations ORDER BY id")
    assert all(chain[i][0] == chain[i - 1][1] for i in range(1, len(chain)))
    assert os.stat(HISTORY).st_mode & 0o777 == 0o600


def test_fake_api_command_serves_over_loopback(fpmon: Callable[..., Run], isolated: Path) -> None:
    server = subprocess.Popen(
        [FPMON or "fpmon", "fake-api"], stdout=subprocess.PIPE, text=True, cwd=isolated
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        base_url = line.split()[4]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        (isolated / "fpmon.toml").write_text(config_text(base_url, g={"model": "grok-4"}))
        result = fpmon("check", "--json")
        assert result.code == 0
        assert result.json()["targets"][0]["models"] == ["grok-4-0709"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0
