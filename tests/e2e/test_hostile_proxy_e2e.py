"""Hostile input to `fpmon proxy`, as installed, over raw sockets on loopback (issue 12).

Request targets that try to make the proxy relay an application's key to another host:
127.0.0.2, which is loopback too on Linux, listens as the thief. Whatever the target, nothing may
reach it and nothing of it may be recorded. An --upstream holding credentials is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path

import pytest

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run

KEY = "sk-proj-hostile-proxy-0123456789abcdef"
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


class Thief:
    """A listener on 127.0.0.2 that answers like an API and keeps every byte it is sent."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.2", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with suppress(OSError):
                    self.received.append(conn.recv(65536) or b"(connected)")
                    body = json.dumps(
                        {"model": "m", "system_fingerprint": "fp_stolen", "choices": []}
                    ).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
                    )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


class Proxy:
    """`fpmon proxy --target px` in front of `upstream`, its log in a file."""

    def __init__(self, upstream: str, state: Path) -> None:
        assert FPMON is not None
        state.mkdir(parents=True, exist_ok=True)
        self.history = state / "history.db"
        self.log = state / "proxy.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FPMON_")}
        env.update(
            FPMON_HISTORY=str(self.history),
            XDG_CONFIG_HOME=str(state / "config"),
            XDG_DATA_HOME=str(state / "data"),
        )
        command = [FPMON, "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [*command, "--target", "px", "--new-target"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=state,
                env=env,
            )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        host, port = banner.split()[2].removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def send(self, request_line: str, body: bytes = CHAT) -> bytes:
        """One request with the key in its Authorization header, as raw bytes; the answer."""
        head = (
            f"{request_line}\r\nhost: 127.0.0.1:{self.address[1]}\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        answer = b""
        with socket.create_connection(self.address, timeout=5) as sock:
            sock.sendall(head.encode("latin-1") + body)
            with suppress(TimeoutError):
                while chunk := sock.recv(65536):
                    answer += chunk
        return answer

    def records(self) -> list[dict[str, object]]:
        """Every observation recorded so far (the writer thread is given its moment first)."""
        self.process.send_signal(signal.SIGTERM)  # stopping writes what is queued
        self.process.communicate(timeout=15)
        if not self.history.exists():
            return []
        with closing(sqlite3.connect(self.history)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM observations ORDER BY id")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def thief() -> Iterator[Thief]:
    thief = Thief()
    yield thief
    thief.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeAPI]:
    with FakeAPI({"m": ModelBehaviour(["fp_upstream01"], "m-1")}) as fake:
        yield fake


@pytest.fixture
def proxy(upstream: FakeAPI, tmp_path: Path) -> Iterator[Proxy]:
    """In front of an upstream with no path, as the DeepSeek and Perplexity presets have."""
    proxy = Proxy(upstream.url, tmp_path / "proxy")
    yield proxy
    proxy.stop()


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


# Request lines that are not origin-form: each would point the proxy elsewhere than its
# upstream, or (glued onto an upstream without a path) make the upstream URL name another host.
NOT_A_PATH = [
    "POST *@127.0.0.2:{port}/steal/chat/completions HTTP/1.1",
    "POST *@127.0.0.2:{port}/v1/chat/completions?x=1 HTTP/1.1",
    "POST *.evil/v1/chat/completions HTTP/1.1",
    "POST * HTTP/1.1",
    "POST http://127.0.0.2:{port}/v1/chat/completions HTTP/1.1",
    "POST https://127.0.0.2:{port}/v1/chat/completions HTTP/1.1",
    "POST //127.0.0.2:{port}/v1/chat/completions HTTP/1.1",
    "POST ///127.0.0.2:{port}/v1/chat/completions HTTP/1.1",
    "POST 127.0.0.2:{port} HTTP/1.1",
    "POST @127.0.0.2:{port}/v1/chat/completions HTTP/1.1",
    "POST :{port}@127.0.0.2/v1/chat/completions HTTP/1.1",
    "OPTIONS * HTTP/1.1",
]


@pytest.mark.parametrize("request_line", NOT_A_PATH)
def test_a_target_that_is_not_a_path_is_refused_and_reaches_no_one(
    request_line: str, proxy: Proxy, thief: Thief, upstream: FakeAPI
) -> None:
    upstream.reset()
    answer = proxy.send(request_line.format(port=thief.port))
    assert _status(answer) == 400
    assert thief.received == []
    assert upstream.requests() == []
    assert proxy.records() == []
    log = proxy.log.read_text()
    assert "Traceback" not in log and KEY not in log


def test_authority_form_connect_reaches_no_one(proxy: Proxy, thief: Thief) -> None:
    answer = proxy.send(f"CONNECT 127.0.0.2:{thief.port} HTTP/1.1", body=b"")
    assert not answer.startswith(b"HTTP/1.1 2")
    assert thief.received == []
    assert proxy.records() == []


# Origin-form targets that hide another host in an escaped or odd path: they are paths, so
# they are forwarded, but to the upstream only, their escapes left as they are.
TRICKY_PATHS = [
    "/%2F%2F127.0.0.2:{port}/v1/chat/completions",
    "/%2f127.0.0.2:{port}/v1/chat/completions",
    "/@127.0.0.2:{port}/v1/chat/completions",
    "/v1/..%2F..%2F127.0.0.2:{port}/chat/completions",
    "/\\\\127.0.0.2:{port}/v1/chat/completions",
]


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_an_escaped_host_in_a_path_stays_on_the_upstream(
    path: str, proxy: Proxy, thief: Thief, upstream: FakeAPI
) -> None:
    upstream.reset()
    sent = path.format(port=thief.port)
    answer = proxy.send(f"POST {sent} HTTP/1.1")
    assert _status(answer) in (400, 404)
    assert thief.received == []
    assert [r.path for r in upstream.requests()] in ([], [sent.split("?")[0]])
    assert all(r["base_url"].startswith(upstream.url + "/") for r in proxy.records())


def test_a_path_is_still_forwarded_and_recorded(proxy: Proxy, thief: Thief) -> None:
    answer = proxy.send("POST /v1/chat/completions HTTP/1.1")
    assert _status(answer) == 200 and b"fp_upstream01" in answer
    assert [r["fingerprint"] for r in proxy.records()] == ["fp_upstream01"]
    assert thief.received == []


def test_an_upstream_with_credentials_is_refused_in_one_line(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    history = isolated / "history.db"
    result = fpmon(
        "proxy",
        "--upstream",
        "http://user:pa55-w0rd-secret@127.0.0.2:9/v1",
        "--target",
        "px",
        env={"FPMON_HISTORY": str(history)},
        timeout=15,
    )
    assert result.code == 2
    assert result.out == ""
    (line,) = result.err.splitlines()
    assert "user name or password" in line and "***@127.0.0.2:9" in line
    assert "pa55-w0rd-secret" not in line and "user:pa55" not in line
    assert not history.exists()


# --- one lone surrogate in a server's answer -----------------------------------------------
# JSON can carry a lone surrogate ("\ud800"), which no UTF-8 file can hold: such a string is
# stored written out as its escape, tagged as such, and never costs another record.

BAD = "\ud800"
ESCAPED = "\\ud800"


def history_rows(path: Path, query: str) -> list[dict[str, object]]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query)]


@pytest.mark.parametrize(
    ("bad", "code", "field", "stored"),
    [
        (ModelBehaviour([BAD], "bad-1"), 0, "fingerprint", ESCAPED),
        (ModelBehaviour(["fp_bad000001"], f"bad-{BAD}"), 0, "resolved_model", f"bad-{ESCAPED}"),
    ],
    ids=["fingerprint", "model"],
)
def test_check_stores_a_lone_surrogate_escaped_beside_a_healthy_target(
    fpmon: Callable[..., Run],
    write_config: Callable[..., Path],
    isolated: Path,
    bad: ModelBehaviour,
    code: int,
    field: str,
    stored: str,
) -> None:
    with FakeAPI({"good": ModelBehaviour(["fp_good00001"], "good-1"), "bad": bad}) as fake:
        write_config(fake.base_url, good={"model": "good"}, bad={"model": "bad"})
        history = isolated / "h.db"
        result = fpmon("check", "--history", str(history))
        second = fpmon("check", "--history", str(history))
    assert (result.code, second.code) == (code, code), result.err + second.err
    assert ESCAPED in result.out and "Traceback" not in result.err
    rows = history_rows(history, "SELECT * FROM observations ORDER BY id")
    assert {r["target"] for r in rows} == {"bad", "good"}
    bad_rows = [r for r in rows if r["target"] == "bad"]
    assert {r[field] for r in bad_rows} == {stored}
    assert all(json.loads(str(r["tags"])) == {"fpmon.escaped": field} for r in bad_rows)
    statuses = history_rows(history, "SELECT target, status FROM checks ORDER BY id")
    assert [s["status"] for s in statuses if s["target"] == "bad"][1] == "same"


def test_check_stores_an_error_message_with_a_lone_surrogate(
    fpmon: Callable[..., Run], write_config: Callable[..., Path], isolated: Path
) -> None:
    from fp_monitor.devtools.fake_api import Fault

    with FakeAPI({"good": ModelBehaviour(["fp_good00001"], "good-1")}) as fake:
        message = {"error": {"message": f"no model {BAD} here", "type": "invalid_request_error"}}
        fake.add_faults([Fault("status", status=400, body=message, model="bad", times=99)])
        write_config(fake.base_url, good={"model": "good"}, bad={"model": "bad"})
        history = isolated / "h.db"
        result = fpmon("check", "--history", str(history))
    assert result.code == 3, result.err
    row, *_ = history_rows(history, "SELECT * FROM observations WHERE target = 'bad'")
    assert row["error_message"] == f"HTTP 400: no model {ESCAPED} here"
    assert json.loads(str(row["tags"])) == {"fpmon.escaped": "error_message"}
    assert history_rows(history, "SELECT fingerprint FROM observations WHERE target = 'good'")


def test_watch_goes_on_through_a_lone_surrogate(
    fpmon: Callable[..., Run], write_config: Callable[..., Path], isolated: Path
) -> None:
    fleet = {"good": ModelBehaviour(["fp_good00001"]), "bad": ModelBehaviour([BAD])}
    with FakeAPI(fleet) as fake:
        write_config(fake.base_url, good={"model": "good"}, bad={"model": "bad"})
        history = isolated / "h.db"
        result = fpmon("watch", "--every", "1s", "--count", "2", "--history", str(history))
    assert result.code == 0, result.err
    rows = history_rows(history, "SELECT target, fingerprint FROM observations")
    assert {(r["target"], r["fingerprint"]) for r in rows} == {
        ("bad", ESCAPED),
        ("good", "fp_good00001"),
    }
    checks = history_rows(history, "SELECT target FROM checks")
    assert sorted(c["target"] for c in checks) == ["bad", "bad", "good", "good"]


def _json(**fields: object) -> bytes:
    """A request body as JSON text, escapes and all (httpx2 would refuse a lone surrogate)."""
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_the_proxy_records_200_answers_and_the_bad_one_sent_at_once(tmp_path: Path) -> None:
    import asyncio

    import httpx2

    fleet = {"good": ModelBehaviour(["fp_good00001"], "good-1")}
    with FakeAPI(fleet, default=ModelBehaviour([BAD])) as fake:
        proxy = Proxy(fake.base_url, tmp_path / "proxy")
        try:
            url = f"http://{proxy.address[0]}:{proxy.address[1]}"

            async def main() -> list[int]:
                async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
                    # the bad one asks for a model named with a lone surrogate, served as one
                    models = ["good"] * 100 + [f"bad-{BAD}"] + ["good"] * 100
                    answers = await asyncio.gather(
                        *(client.post("/chat/completions", content=_json(model=m)) for m in models)
                    )
                    stream = await client.post(
                        "/chat/completions", content=_json(model="streamed", stream=True)
                    )
                return [a.status_code for a in [*answers, stream]]

            assert asyncio.run(main()) == [200] * 202
            rows = proxy.records()
        finally:
            proxy.stop()
    assert len(rows) == 202
    bad = [r for r in rows if r["fingerprint"] == ESCAPED]
    assert [(r["requested_model"], r["resolved_model"]) for r in bad] == [
        (f"bad-{ESCAPED}", f"bad-{ESCAPED}"),
        ("streamed", "streamed"),
    ]
    assert [json.loads(str(r["tags"])) for r in bad] == [
        {"fpmon.escaped": "fingerprint,resolved_model,requested_model"},
        {"fpmon.escaped": "fingerprint"},
    ]
    assert "Traceback" not in proxy.log.read_text()
