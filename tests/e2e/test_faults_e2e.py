"""Hostile and broken servers: fpmon keeps working, answers with the right error kind and
exit code, stores the observation, and never lets a key follow a redirect."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import FPMON, Run

HISTORY = Path("xdg-data/fpmon/history.db")


def only_error(run: Run) -> tuple[str, int | None, str]:
    assert run.code == 3, run.out + run.err
    (error,) = run.json()["targets"][0]["errors"]
    return error["kind"], error["status_code"], error["message"]


def stored(sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(HISTORY) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "x", "choices": [], "model": "\xff\xfe"}', "not valid UTF-8"),
        (b"[" * 10_000 + b"]" * 10_000, "not a chat completion"),
        (b'{"choices": [], "system_fingerprint": 42}', "neither a string nor null"),
        (b"", "not valid JSON"),
    ],
    ids=["invalid-utf8", "nested-10000", "fingerprint-not-string", "empty"],
)
def test_a_body_that_is_not_a_chat_completion_is_bad_response(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    body: bytes,
    expected: str,
) -> None:
    write_config(fake.base_url, t={"model": "model-a", "samples": 1})
    fake.add_faults([Fault("status", status=200, body=body)])
    kind, status, message = only_error(fpmon("check", "--json"))
    assert (kind, status) == ("bad_response", 200) and expected in message
    assert stored("SELECT error_kind, http_status FROM observations") == [("bad_response", 200)]


def test_a_100000_character_fingerprint_is_whole_in_json_short_in_tables(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    huge = "fp_" + "9" * 100_000
    fake.set_model("big", ModelBehaviour([huge]))
    write_config(fake.base_url, t={"model": "big", "samples": 1})
    table = fpmon("check")
    assert table.code == 0
    assert max(len(line) for line in table.out.splitlines()) < 300
    assert huge[:63] + "…" in table.out
    whole = fpmon("check", "--json")
    assert whole.json()["targets"][0]["fingerprints"] == [huge]
    assert stored("SELECT length(fingerprint) FROM observations LIMIT 1") == [(len(huge),)]


def test_a_server_that_drips_one_byte_a_second_cannot_stretch_the_timeout(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-a", "samples": 1, "timeout": "2s"})
    fake.add_faults([Fault("drip", delay=1.0)])
    started = time.monotonic()
    kind, _status, message = only_error(fpmon("check", "--json"))
    assert kind == "timeout" and "2s" in message
    assert time.monotonic() - started < 8


def test_a_redirect_to_another_origin_carries_no_key(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    with FakeAPI() as elsewhere:
        write_config(
            fake.base_url,
            t={"model": "model-a", "samples": 1, "api_key_env": "K", "provider": "openai"},
        )
        target = elsewhere.base_url + "/chat/completions"
        fake.add_faults([Fault("redirect", location=target)])
        kind, status, message = only_error(
            fpmon("check", "--json", env={"K": "sk-redirect-canary-0001"})
        )
        assert (kind, status) == ("bad_response", 307)
        assert "does not follow redirects" in message and target in message
        assert elsewhere.requests() == []
    assert fake.requests()[0].auth == "bearer"


def test_sigkill_of_one_of_eight_concurrent_writers_loses_nothing_else(
    write_config: Callable[..., Path], isolated: Path
) -> None:
    fleet = {"slow": ModelBehaviour(["fp_s"], latency=0.2)}
    with FakeAPI(fleet) as fake:
        write_config(fake.base_url, a={"model": "slow", "samples": 3}, b={"model": "slow"})
        procs = [
            subprocess.Popen(
                [FPMON or "fpmon", "check", "--json"],
                cwd=isolated,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        time.sleep(0.25)
        procs[3].send_signal(signal.SIGKILL)
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes[3] == -signal.SIGKILL and codes[:3] + codes[4:] == [0] * 7
    assert stored("PRAGMA integrity_check") == [("ok",)]
    finished = {json.loads(out)["check_id"] for i, out in enumerate(outputs) if i != 3}
    recorded = {check for (check,) in stored("SELECT DISTINCT check_id FROM checks")}
    assert finished <= recorded and len(recorded - finished) <= 1
    per_check = stored("SELECT check_id, count(*) FROM observations GROUP BY check_id")
    assert all(count == 6 for _check, count in per_check)  # no half-written check
