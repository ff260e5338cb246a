"""Prometheus metrics from the installed command: `fpmon check --metrics-file` (the textfile),
`fpmon watch --metrics-port` scraped over HTTP, and a real Prometheus server scraping a watch."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fp_monitor.devtools.fake_api import ABSENT, FakeAPI, ModelBehaviour
from tests.conftest import Run
from tests.e2e.conftest import Spawn, wait_for

A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
EXAMPLES = Path(__file__).parents[2] / "examples" / "prometheus"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def info(found: Samples) -> set[tuple[str, str, str, str]]:
    return {
        (s["target"], s["provider"], s["model"], s["fingerprint"])
        for s, _ in found.get("fpmon_fingerprint_info", [])
    }


def metrics_url(proc: subprocess.Popen[str]) -> str:
    """The URL that `fpmon watch` announces on its first stderr line."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"metrics at (http://\S+)", line)
    assert match, line
    return match.group(1)


def scrape(url: str) -> Samples:
    return parse(httpx2.get(url, timeout=5, trust_env=False).text)


def test_check_writes_the_textfile(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    fake.set_model("nullish", ModelBehaviour([None], resolved_model="old-0613"))
    fake.set_model("absent", ModelBehaviour([ABSENT]))
    fake.set_model("empty", ModelBehaviour([""]))
    write_config(
        fake.base_url,
        alpha={"model": "model-a", "samples": 2},
        n={"model": "nullish", "samples": 1},
        a={"model": "absent", "samples": 1},
        e={"model": "empty", "samples": 1},
    )
    textfile = isolated / "textfile" / "fpmon.prom"
    result = fpmon("check", "--metrics-file", str(textfile))
    assert result.code == 0, result.err
    found = parse(textfile.read_text())
    assert info(found) == {
        ("alpha", "custom", "model-a-2026", A),
        ("alpha", "custom", "model-a-2026", B),
        ("n", "custom", "old-0613", "<null>"),
        ("a", "custom", "absent", "<absent>"),
        ("e", "custom", "empty", "<empty>"),
    }
    assert {s["target"]: v for s, v in found["fpmon_probe_success"]} == dict.fromkeys(
        ["alpha", "n", "a", "e"], 1.0
    )
    assert all(0 < v < 5 for _, v in found["fpmon_probe_duration_seconds"])  # seconds, not ms
    first = {
        s["target"] for s, v in found["fpmon_fingerprint_changes_total"] if s["status"] == "first"
    }
    assert first == {"alpha", "n", "a", "e"}
    assert len(found["fpmon_last_check_timestamp_seconds"]) == 1
    assert "fpmon_watch_interval_seconds" not in found  # a one-off check has no interval
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644  # node-exporter must read it
    assert [p.name for p in textfile.parent.iterdir()] == ["fpmon.prom"]  # no temp file left

    # A later run that fails: counters go on from the history, the info stays the last seen.
    fake.rotate("model-a", [C])
    assert fpmon("check", "alpha", "--metrics-file", str(textfile)).code == 1
    found = parse(textfile.read_text())
    assert info(found) == {("alpha", "custom", "model-a-2026", C)}  # only the checked target
    new = [v for s, v in found["fpmon_fingerprint_changes_total"] if s["status"] == "new"]
    assert new == [1.0]


def test_metrics_file_usage_errors(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    dry = fpmon("check", "--no-record", "--metrics-file", "m.prom")
    assert dry.code == 2 and "drop --no-record" in dry.err
    (isolated / "a-file").write_text("")
    blocked = fpmon("check", "--metrics-file", str(isolated / "a-file" / "m.prom"))
    assert blocked.code == 2 and "--metrics-file" in blocked.err
    assert fake.requests() == []  # refused before anything was probed


def test_watch_serves_metrics_over_http(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a", "samples": 2})
    proc = spawn("watch", "--every", "200ms", "--metrics-port", "0", "--history", "h.db")
    url = metrics_url(proc)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    found = wait_for(
        lambda: (s := scrape(url)) and info(s) and s, what="the first check in /metrics"
    )
    assert isinstance(found, dict)
    assert info(found) == {
        ("alpha", "custom", "model-a-2026", A),
        ("alpha", "custom", "model-a-2026", B),
    }
    assert found["fpmon_watch_interval_seconds"] == [({}, 0.2)]
    assert found["fpmon_probe_success"] == [({"target": "alpha"}, 1.0)]

    fake.rotate("model-a", [C])

    def rotated() -> Samples | None:
        s = scrape(url)
        return s if info(s) == {("alpha", "custom", "model-a-2026", C)} else None

    found = wait_for(rotated, what="the new fingerprint in /metrics")
    assert isinstance(found, dict)  # and the old values are gone, not stale
    changes = {s["status"]: v for s, v in found["fpmon_fingerprint_changes_total"]}
    assert changes["new"] == 1 and changes["first"] == 1
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_watch_metrics_port_in_use_is_a_usage_error(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, alpha={"model": "model-a"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = fpmon("watch", "--every", "1s", "--metrics-port", str(port))
    assert result.code == 2
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1" in result.err
    assert fake.requests() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(binary: Path) -> None:
    """Skip where the Debian package prometheus is not installed; fail in CI, which has it."""
    if binary.exists():
        return
    if os.environ.get("FPMON_REQUIRE_PROMETHEUS"):
        pytest.fail(f"{binary} is missing and this run requires it (.ci/run installs it)")
    pytest.skip(f"{binary} not installed (Debian package prometheus; .ci/run installs it)")


def test_the_example_config_and_alert_rules_are_valid_and_fire_when_they_should() -> None:
    require(PROMTOOL)
    config = subprocess.run(
        [PROMTOOL, "check", "config", EXAMPLES / "prometheus.yml"], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = Path(__file__).parent / "prometheus" / "fpmon-rules.test.yml"
    tested = subprocess.run([PROMTOOL, "test", "rules", rules], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_real_prometheus_scrapes_the_watch(
    spawn: Spawn, fake: FakeAPI, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    require(PROMETHEUS)
    fake.set_model("legacy", ModelBehaviour([None], resolved_model="gpt-4-0613"))
    write_config(
        fake.base_url, alpha={"model": "model-a", "samples": 2}, legacy={"model": "legacy"}
    )
    watch = spawn("watch", "--every", "1s", "--metrics-port", "0", "--history", "h.db")
    target = metrics_url(watch).removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: fpmon\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        server = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def result() -> list[dict[str, object]] | None:
            try:
                answer = httpx2.get(
                    api, params={"query": "fpmon_fingerprint_info"}, timeout=5, trust_env=False
                ).json()
            except (httpx2.HTTPError, ValueError):
                return None  # not listening yet
            found = answer.get("data", {}).get("result", [])
            return found if len(found) == 3 else None

        found = wait_for(result, timeout=90, what="Prometheus to return fpmon_fingerprint_info")
        assert isinstance(found, list)
        labels = {
            (m["target"], m["model"], m["fingerprint"], m["job"], m["instance"], m["provider"])
            for m in (r["metric"] for r in found)  # type: ignore[index]
        }
        assert labels == {
            ("alpha", "model-a-2026", A, "fpmon", target, "custom"),
            ("alpha", "model-a-2026", B, "fpmon", target, "custom"),
            ("legacy", "gpt-4-0613", "<null>", "fpmon", target, "custom"),
        }
        assert {r["value"][1] for r in found} == {"1"}  # type: ignore[index]
    finally:
        server.terminate()
        server.wait(timeout=30)
    watch.send_signal(signal.SIGTERM)
    watch.communicate(timeout=10)
    assert watch.returncode == 0
