"""Fan-out: how fast do N concurrent probe requests complete, per HTTP client, in one run?

Starts `fpmon fake-api` in its own process with a fixed latency, then sends the same requests
(default 150 = 50 targets x 3 samples) with each client side by side and prints each median
wall time and its ratio to the fastest. Loopback only.

    python benchmarks/fanout.py [--requests 150] [--latency 0.1] [--repeat 5]

Clients: fpmon's own probe (httpx2, as shipped), httpx2 with keep-alive off, bare aiohttp and a
stdlib-only asyncio client (the floor), plus httpx 0.28 and its aiohttp transport when those
packages are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from urllib.parse import urlsplit

BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def start_fake(latency: float) -> tuple[subprocess.Popen[str], str]:
    config = Path(tempfile.mkdtemp()) / "fleet.toml"
    config.write_text(f'[default]\nfingerprints = ["fp_bench00001"]\nlatency = {latency}\n')
    server = subprocess.Popen(
        [sys.executable, "-m", "fp_monitor", "fake-api", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    base_url = server.stdout.readline().split()[4]
    return server, base_url


async def with_fpmon_probe(url: str, n: int) -> None:
    from fp_monitor.config.providers import Auth
    from fp_monitor.config.settings import Target
    from fp_monitor.probe.request import probe_async

    base = url.removesuffix("/chat/completions")
    targets = [
        Target(f"t{i}", "custom", "bench", base, Auth.NONE, None, "max_tokens", samples=3)
        for i in range(n // 3)
    ]
    results = await probe_async(targets, concurrency=n)
    assert all(o.ok for group in results for o in group)


async def with_httpx2_no_keepalive(url: str, n: int) -> None:
    import httpx2

    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx2.AsyncClient(limits=limits) as client:
        responses = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(n)))
    assert all(r.status_code == 200 for r in responses)


async def with_httpx2(url: str, n: int) -> None:
    import httpx2

    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx2.AsyncClient(limits=limits) as client:
        responses = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(n)))
    assert all(r.status_code == 200 for r in responses)


async def with_httpx(url: str, n: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits) as client:
        responses = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(n)))
    assert all(r.status_code == 200 for r in responses)


async def with_httpx_aiohttp(url: str, n: int) -> None:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        responses = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(n)))
    assert all(r.status_code == 200 for r in responses)


async def with_aiohttp(url: str, n: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.post(url, json=BODY) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(n)))
    assert all(s == 200 for s in statuses)


async def with_stdlib(url: str, n: int) -> None:
    """The floor: one raw HTTP/1.1 request per connection, nothing else."""
    parts = urlsplit(url)
    payload = json.dumps(BODY).encode()
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request)
        data = await reader.read()
        writer.close()
        return data

    replies = await asyncio.gather(*(one() for _ in range(n)))
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies)


def clients_to_compare() -> dict[str, Callable[[str, int], Coroutine[None, None, None]]]:
    """Every client installed here, fpmon's own probe first."""
    clients: dict[str, Callable[[str, int], Coroutine[None, None, None]]] = {
        "fpmon probe (httpx2, as shipped)": with_fpmon_probe,
        "httpx2 default transport": with_httpx2,
        "httpx2, keep-alive off": with_httpx2_no_keepalive,
    }
    if importlib.util.find_spec("httpx"):
        clients["httpx 0.28"] = with_httpx
    if importlib.util.find_spec("httpx_aiohttp"):
        clients["httpx 0.28 + aiohttp transport"] = with_httpx_aiohttp
    if importlib.util.find_spec("aiohttp"):
        clients["aiohttp (bare)"] = with_aiohttp
    clients["stdlib asyncio (floor)"] = with_stdlib
    return clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    clients = clients_to_compare()

    server, base_url = start_fake(args.latency)
    url = base_url + "/chat/completions"
    try:
        times: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.repeat):  # interleaved, so drift hits every client alike
            for name, client in clients.items():
                started = time.perf_counter()
                asyncio.run(client(url, args.requests))
                times[name].append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait()
    medians = {name: statistics.median(t) for name, t in times.items()}
    fastest = min(medians.values())
    print(
        f"{args.requests} concurrent requests, server latency {args.latency:g}s, "
        f"median of {args.repeat}"
    )
    print(f"{'client':<36} {'seconds':>8} {'x fastest':>10}")
    for name, seconds in sorted(medians.items(), key=lambda item: item[1]):
        print(f"{name:<36} {seconds:>8.3f} {seconds / fastest:>10.2f}")


if __name__ == "__main__":
    main()
