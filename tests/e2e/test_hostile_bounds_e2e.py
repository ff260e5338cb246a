"""Hostile-input matrix, bounds: strings a server sends that a spreadsheet or a Prometheus
parser would act on, numbers and nesting in config and lock files that have no sane meaning,
and a webhook receiver that drips its answer. Every attack runs the installed `fpmon` against
loopback servers and asserts what a user would see."""

from __future__ import annotations

import csv
import io
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import FPMON, Run, config_text
from tests.e2e.conftest import Spawn, wait_for
from tests.e2e.test_metrics_e2e import metrics_url

MEGABYTE = 1_000_000


# --- CSV: formula injection (OWASP) -----------------------------------------------------------

FORMULAS = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]


def history_csv(isolated: Path, *args: str) -> list[dict[str, str]]:
    """`fpmon history --format csv` parsed from its raw bytes (text mode would turn a CR inside
    a quoted cell into a newline)."""
    assert FPMON is not None
    out = subprocess.run(
        [FPMON, "history", "--format", "csv", *args], cwd=isolated, capture_output=True, check=True
    ).stdout
    return list(csv.DictReader(io.StringIO(out.decode(), newline="")))


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(
    fpmon: Callable[..., Run], fake: FakeAPI, isolated: Path
) -> None:
    model = '=HYPERLINK("http://evil.example/", "x")'
    fake.set_model("m", ModelBehaviour([*FORMULAS, "fp_plain"], resolved_model=model))
    (isolated / "fpmon.toml").write_text(
        config_text(fake.base_url, **{"@evil": {"model": "m", "samples": len(FORMULAS) + 1}})
    )
    assert fpmon("check").code == 0

    rows = history_csv(isolated, "--observations")
    assert sorted(r["fingerprint"] for r in rows) == sorted(
        ["'" + f for f in FORMULAS] + ["fp_plain"]
    )
    assert {(r["target"], r["model"]) for r in rows} == {("'@evil", "'" + model)}

    assert [r["target"] for r in history_csv(isolated)] == ["'@evil"]


# --- Prometheus: label values every parser reads back -----------------------------------------

HOSTILE_LABELS = [
    ("fp_\r_cr", "fp_\\r_cr"),
    ("fp_\n_lf", "fp_\\n_lf"),
    ("fp_\x1b[31m_esc", "fp_\\x1b[31m_esc"),
    ("fp_\x07_bel", "fp_\\x07_bel"),
    ('fp_"quoted"', 'fp_"quoted"'),
    ("fp_\\back\\slash\\", "fp_\\back\\slash\\"),
]


def info_labels(text: str) -> list[dict[str, str]]:
    """The labels of fpmon_fingerprint_info, as prometheus-client's own parser reads them."""
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fpmon_fingerprint_info"
    ]


def assert_tame(labels: list[dict[str, str]]) -> None:
    for values in labels:
        for value in values.values():
            assert len(value) <= 200, len(value)
            assert not any(unicodedata.category(ch) == "Cc" for ch in value), repr(value)


@pytest.mark.parametrize(("sent", "shown"), HOSTILE_LABELS, ids=lambda v: repr(v)[:12])
def test_metrics_file_escapes_hostile_fingerprints_and_models(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    sent: str,
    shown: str,
) -> None:
    fake.set_model("m", ModelBehaviour([sent], resolved_model="model" + sent))
    write_config(fake.base_url, alpha={"model": "m", "samples": 1})
    result = fpmon("check", "--metrics-file", "fpmon.prom")
    assert result.code == 0, result.err
    labels = info_labels((isolated / "fpmon.prom").read_text())
    assert [(s["fingerprint"], s["model"]) for s in labels] == [(shown, "model" + shown)]
    assert_tame(labels)


def test_metrics_file_cuts_a_megabyte_label_and_keeps_one_series(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    # Two values that differ only at their end: cut, they must not become duplicate series.
    huge = ["x" * MEGABYTE + "a", "x" * MEGABYTE + "b"]
    fake.set_model("m", ModelBehaviour(huge, resolved_model="\x1b" + "m" * MEGABYTE))
    write_config(fake.base_url, alpha={"model": "m", "samples": 2})
    result = fpmon("check", "--metrics-file", "fpmon.prom")
    assert result.code == 0, result.err
    prom = isolated / "fpmon.prom"
    assert prom.stat().st_size < 10_000
    labels = info_labels(prom.read_text())
    assert len(labels) == 1
    assert labels[0]["fingerprint"].startswith("xxxx") and labels[0]["fingerprint"].endswith("…")
    assert labels[0]["model"].startswith("\\x1bmmm") and labels[0]["model"].endswith("…")
    assert_tame(labels)


def test_watch_serves_hostile_labels_escaped(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    sent = 'fp_\r\n\x1b\x07"\\' + "z" * MEGABYTE
    fake.set_model("m", ModelBehaviour([sent], resolved_model="m\r\x07"))
    write_config(fake.base_url, alpha={"model": "m", "samples": 1})
    proc = spawn("watch", "--every", "1h", "--metrics-port", "0", "--history", "h.db")
    url = metrics_url(proc)

    def scraped() -> list[dict[str, str]]:
        return info_labels(httpx2.get(url, timeout=5, trust_env=False).text)

    labels = wait_for(scraped, what="the first check in /metrics")
    assert isinstance(labels, list) and len(labels) == 1
    assert labels[0]["fingerprint"].startswith('fp_\\r\\n\\x1b\\x07"\\zzz')
    assert labels[0]["model"] == "m\\r\\x07"
    assert_tame(labels)


# --- A webhook receiver that drips its answer -------------------------------------------------


@dataclass
class Dripper:
    """A raw-socket webhook receiver on loopback: it reads the request, announces
    content-length 1000, then sends one byte a second."""

    url: str
    connections: list[float] = field(default_factory=list)
    """When each connection was accepted (time.monotonic())."""


@pytest.fixture
def dripper() -> Iterator[Dripper]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    state = Dripper(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            for _ in range(1000):
                if stop.wait(1):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return  # fpmon hung up, as it should

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            state.connections.append(time.monotonic())
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield state
    stop.set()
    listener.close()


def with_hook(config: Path, url: str, **keys: object) -> None:
    table = {"type": "webhook", "url": url, **keys}
    config.write_text(config.read_text() + tomli_w.dumps({"notify": {"drip": table}}))


def test_notify_test_against_a_dripping_receiver_ends_at_its_timeout(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    dripper: Dripper,
) -> None:
    with_hook(
        write_config(fake.base_url, alpha={"model": "model-a"}),
        dripper.url,
        timeout="2s",
        retries=0,
    )
    started = time.monotonic()
    result = fpmon("notify", "test", "drip", timeout=20)
    elapsed = time.monotonic() - started
    assert result.code == 3, result.err
    assert elapsed < 2 + 2.5, f"took {elapsed:.1f}s"
    assert dripper.connections  # it did reach the receiver
    line = result.err.strip()
    assert "\n" not in line and line.startswith("fpmon: error: notify drip: POST to 127.0.0.1")
    assert line.endswith("failed after 1 attempt: no complete answer within 2s")


def test_watch_stopped_while_notifying_counts_the_recorded_check(
    spawn: Spawn,
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    dripper: Dripper,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a", "samples": 1})
    with_hook(config, dripper.url, timeout="30s", retries=0, on=["new"])
    # A lock that does not know what the fake serves: the first check is `new` and notifies.
    (isolated / "fpmon.lock").write_text(
        tomli_w.dumps({"version": 1, "targets": {"alpha": {"fingerprints": ["fp_other"]}}})
    )
    proc = spawn("watch", "--every", "1h", "--history", "h.db")
    wait_for(lambda: dripper.connections, what="the notification of the first check")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "fpmon: watch stopped by SIGTERM after 1 check"
    with sqlite3.connect(isolated / "h.db") as db:
        assert db.execute("SELECT count(*) FROM checks").fetchone() == (1,)


# --- Numbers and nesting with no sane meaning -------------------------------------------------

HUGE = "99999999999999999999d"
INF, NAN = float("inf"), float("nan")

BAD_TARGET_KEYS = [
    ({"timeout": INF}, "timeout: expected a duration of at most 1h, got inf"),
    ({"timeout": 1e308}, "timeout: expected a duration of at most 1h, got 1e+308"),
    ({"timeout": NAN}, "timeout: expected a duration of at most 1h, got nan"),
    ({"timeout": HUGE}, f"timeout: '{HUGE}' is too long: at most 1h"),
    ({"learn_max": NAN}, "learn_max: expected a duration of at most 3650d, got nan"),
    ({"learn_max": INF}, "learn_max: expected a duration of at most 3650d, got inf"),
    ({"learn_unseen": NAN}, "learn_unseen: expected a share from 0 to 1, like 0.01, got nan"),
    ({"params": {"temperature": NAN}}, "params: nan and inf are not JSON numbers"),
]


@pytest.mark.parametrize(
    ("keys", "message"), BAD_TARGET_KEYS, ids=[str(k) for k, _ in BAD_TARGET_KEYS]
)
def test_a_target_number_out_of_bounds_is_a_usage_error(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    keys: dict[str, object],
    message: str,
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", **keys})
    result = fpmon("check", timeout=20)
    assert result.code == 2, result.err
    assert result.err.startswith("fpmon: error: ") and len(result.err.splitlines()) == 1
    assert f"[targets.alpha] {message}" in result.err
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'retention = "{HUGE}"\n', f"retention: '{HUGE}' is too long: at most 3650d"),
        (
            '[notify.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\ntimeout = inf\n',
            "[notify.hook] timeout: expected a duration of at most 1h, got inf",
        ),
        (
            '[notify.run]\ntype = "command"\nrun = ["true"]\ntimeout = nan\n',
            "[notify.run] timeout: expected a duration of at most 1h, got nan",
        ),
    ],
    ids=["retention", "webhook-timeout", "command-timeout"],
)
def test_a_config_duration_out_of_bounds_is_a_usage_error(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    text: str,
    message: str,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a"})
    body = config.read_text()
    config.write_text(text + body if text.startswith("retention") else body + text)
    result = fpmon("check")
    assert result.code == 2, result.err
    assert len(result.err.splitlines()) == 1 and message in result.err, result.err
    assert fake.requests() == []


BAD_FLAGS = [
    (("watch", "--every", HUGE), f"'{HUGE}' is too long: at most 3650d"),
    (("prune", "--older-than", HUGE), f"'{HUGE}' is too long: at most 3650d"),
    (("history", "--since", HUGE), f"'{HUGE}' is too long: at most 3650d"),
    (("history", "--until", HUGE), f"'{HUGE}' is too long: at most 3650d"),
    (("stats", "--since", HUGE), f"'{HUGE}' is too long: at most 3650d"),
    (("history", "--since", "0001-01-01T00:00:00+01:00"), "use a date from year 1 to 9999"),
    (("history", "--limit", "99999999999999999999"), "1000000000"),
    (("history", "--observations", "--limit", "99999999999999999999"), "1000000000"),
    (("watch", "--every", "1s", "--count", "99999999999999999999"), "1000000000"),
    (("watch", "--every", "1s", "--jitter", "nan%"), "from 0% to 99%"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_flag_out_of_bounds_is_a_usage_error(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    args: tuple[str, ...],
    message: str,
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    assert fpmon("check").code == 0  # a history to read, so that only the flag can be wrong
    result = fpmon(*args, timeout=20)
    assert result.code == 2, result.err
    assert len(result.err.splitlines()) == 1 and message in result.err, result.err


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("where", ["config", "lock"])
def test_a_file_nested_500_deep_is_a_usage_error(
    fpmon: Callable[..., Run],
    fake: FakeAPI,
    write_config: Callable[..., Path],
    isolated: Path,
    where: str,
) -> None:
    config = write_config(fake.base_url, alpha={"model": "model-a"})
    if where == "config":
        config.write_text(f"deep = {nested(500)}\n" + config.read_text())
        path = config
    else:
        path = isolated / "fpmon.lock"
        path.write_text(f"version = 1\ndeep = {nested(500)}\n")
    result = fpmon("check")
    assert result.code == 2, result.err
    # a lock that cannot be read names the command that rewrites it
    fix = " (regenerate it with `fpmon accept --replace`)" if where == "lock" else ""
    assert result.err.strip() == (
        f"fpmon: error: {path.name}: tables or arrays nested too deeply for fpmon to read; "
        f"flatten them{fix}"
    )
