"""`fpmon otlp` throughput: spans per second from the request to a committed record, with 1 and
8 concurrent senders, side by side with `fpmon proxy`'s cost per recorded response, in one run.

Starts `fpmon otlp --target bench` in its own process with an empty history. Each sender posts
protobuf ExportTraceServiceRequests of `--batch` spans (the OpenTelemetry SDK's batch processor
sends up to 512), every span carrying a fingerprint, until `--spans` were sent; the clock stops
when /status says every one is recorded (detection, learning, the lock and the history's
transaction done). The receiver's CPU time (user + system, from /proc) over the same span,
divided by the spans, is its cost per span. Then `fpmon fake-api` and `fpmon proxy --target
bench` in front of it: `--responses` chat completions through the proxy, 8 at a time, until
recorded, and the proxy's CPU per recorded response. Loopback only. Goals: at least 5,000
spans per second, under 0.2 ms of CPU per span.

    python benchmarks/otlp.py [--spans 50000] [--batch 512] [--responses 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

TICKS = os.sysconf("SC_CLK_TCK")


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m fp_monitor ARGS` and return it with the URL its first line announces."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fp_monitor", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, next(word for word in line.split() if word.startswith("http://"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def export_body(spans: int, offset: int) -> bytes:
    """One request as the SDK's exporter sends it: `spans` chat spans of one service."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name", value=AnyValue(string_value="bench"))
    scope = resource.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    now = time.time_ns()
    for n in range(spans):
        span = scope.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name="chat gpt-4o-mini",
            kind=3,
            start_time_unix_nano=now,
            end_time_unix_nano=now + 250_000_000,
        )
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            ("gen_ai.response.id", f"chatcmpl-{offset + n:012d}"),
            ("openai.response.system_fingerprint", f"fp_{(offset + n) % 3:010d}"),
        ):
            span.attributes.add(key=key, value=AnyValue(string_value=value))
        span.attributes.add(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=9))
        span.attributes.add(key="gen_ai.usage.output_tokens", value=AnyValue(int_value=1))
    return request.SerializeToString()


async def recorded(client: httpx2.AsyncClient, url: str, count: int, field: str) -> None:
    while True:
        status = (await client.get(url + "/status")).json() if field else {}
        if status.get(field, 0) >= count:
            return
        await asyncio.sleep(0.02)


async def otlp_run(url: str, pid: int, senders: int, bodies: list[bytes], done: int) -> float:
    """Seconds from the first request to the last span recorded; the receiver's CPU is read
    around it by the caller."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"content-type": "application/x-protobuf"}
    limits = httpx2.Limits(max_connections=senders + 1)
    async with httpx2.AsyncClient(trust_env=False, timeout=120, limits=limits) as client:

        async def sender() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                while True:
                    answer = await client.post(url + "/v1/traces", content=body, headers=headers)
                    if answer.status_code != 503:
                        break
                    await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                assert answer.status_code == 200, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        await recorded(client, url, done, "recorded")
        return time.perf_counter() - started


async def proxy_run(url: str, responses: int, concurrency: int) -> None:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    limits = httpx2.Limits(max_connections=concurrency)
    async with httpx2.AsyncClient(trust_env=False, timeout=60, limits=limits) as client:
        remaining = iter(range(responses))

        async def worker() -> None:
            for _ in remaining:
                answer = await client.post(url + "/chat/completions", json=body)
                assert answer.status_code == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def wait_recorded(history: Path, count: int) -> None:
    import sqlite3

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(history) as db:
                if db.execute("SELECT count(*) FROM observations").fetchone()[0] >= count:
                    return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the proxy did not record {count} responses in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000, help="per sender count")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--responses", type=int, default=2000)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fpmon-bench-otlp-"))
    batches = -(-options.spans // options.batch)
    bodies = [export_body(options.batch, n * options.batch) for n in range(batches)]
    spans = batches * options.batch
    rows = []
    load_before = os.getloadavg()[0]
    total = 0
    receiver, url = start(
        ["otlp", "--listen", "127.0.0.1:0", "--target", "bench"],
        {"FPMON_HISTORY": str(work / "otlp.db")},
    )
    try:
        for senders in (1, 8):
            total += spans
            before = cpu_seconds(receiver.pid)
            seconds = asyncio.run(otlp_run(url, receiver.pid, senders, bodies, total))
            cpu = cpu_seconds(receiver.pid) - before
            rows.append((f"fpmon otlp, {senders} sender(s)", spans, "spans", seconds, cpu))
    finally:
        receiver.terminate()
        receiver.wait(timeout=60)
    fleet = work / "fleet.toml"
    fleet.write_text('[default]\nfingerprints = ["fp_bench00001"]\n')
    fake, fake_url = start(["fake-api", "--config", str(fleet)], {})
    history = work / "proxy.db"
    proxy, proxy_url = start(
        [
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            fake_url,
            "--target",
            "bench",
            "--new-target",
        ],
        {"FPMON_HISTORY": str(history)},
    )
    try:
        asyncio.run(proxy_run(proxy_url, 50, 8))  # connections open, history made
        wait_recorded(history, 50)
        before, started = cpu_seconds(proxy.pid), time.perf_counter()
        asyncio.run(proxy_run(proxy_url, options.responses, 8))
        wait_recorded(history, 50 + options.responses)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(proxy.pid) - before
        rows.append(("fpmon proxy, 8 at a time", options.responses, "responses", seconds, cpu))
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
        fake.terminate()
        fake.wait(timeout=60)
    print(
        f"{spans} spans per run in requests of {options.batch}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    print(f"{'path':28}{'recorded':>18}{'seconds':>9}{'per second':>12}{'CPU per item':>15}")
    for name, count, unit, seconds, cpu in rows:
        print(
            f"{name:28}{count:>8} {unit:<9}{seconds:>9.2f}{count / seconds:>12,.0f}"
            f"{cpu / count * 1000:>12.3f} ms"
        )
    otlp_cpu = min(cpu / count for _, count, unit, _, cpu in rows if unit == "spans")
    proxy_cpu = rows[-1][4] / rows[-1][1]
    best = max(count / seconds for _, count, unit, seconds, _ in rows if unit == "spans")
    print(
        f"a recorded response costs the proxy {proxy_cpu / otlp_cpu:.1f}x the CPU of a span "
        f"through fpmon otlp; goals: >= 5,000 spans/s ({best:,.0f}: "
        f"{'met' if best >= 5000 else 'not met'}), < 0.2 ms CPU per span "
        f"({otlp_cpu * 1000:.3f} ms: {'met' if otlp_cpu < 0.0002 else 'not met'})"
    )


if __name__ == "__main__":
    main()
