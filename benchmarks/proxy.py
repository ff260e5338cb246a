"""Proxy overhead: how much later a streamed chunk reaches the application through `fpmon proxy`
than straight from the API, with 100 streams open at once, in one run.

Starts `fpmon fake-api` (streams of 4 events, `--event-delay` apart, like slow tokens) and
`fpmon proxy` in front of it, each in its own process. Then `--streams` workers each keep one
stream open at all times (a new request as soon as the previous stream ends; the first ones
staggered), for `--seconds`, straight to the API and through the proxy in alternating phases.
Two medians per path: the time to the first chunk (what the request's way through the proxy
adds), and how late each later chunk comes after the first one, beyond the event delay (what
relaying a chunk adds). Prints both paths and their difference: what the proxy adds. Every
proxied stream is recorded in a temporary history. Loopback only.

`--burst` measures the other extreme instead: `--streams` requests sent at the same instant,
rounds of them, where the figure is mostly queueing in three Python processes on this machine.

    python benchmarks/proxy.py [--streams 100] [--seconds 5] [--phases 2] [--burst]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m fp_monitor ARGS` and return it with the URL its first line announces."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fp_monitor", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, next(word for word in line.split() if word.startswith("http://"))


async def one_stream(client: httpx2.AsyncClient, url: str, delay: float) -> list[float]:
    """Seconds to the first event, then how late each later event came after the first one
    (beyond its schedule)."""
    started = time.perf_counter()
    arrivals = []
    async with client.stream("POST", url, json=BODY) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                arrivals.append(time.perf_counter())
    assert response.status_code == 200 and arrivals
    first = arrivals[0]
    return [first - started] + [at - first - n * delay for n, at in enumerate(arrivals) if n]


async def steady(
    client: httpx2.AsyncClient, url: str, streams: int, seconds: float, delay: float
) -> list[list[float]]:
    """`streams` streams open at all times for `seconds`; the lags of the streams that ran."""
    deadline = time.perf_counter() + seconds
    found: list[list[float]] = []

    async def worker() -> None:
        # staggered over one stream's length (the fake's 4 events), like real traffic
        await asyncio.sleep(random.uniform(0, delay * 3))
        while time.perf_counter() < deadline:
            found.append(await one_stream(client, url, delay))

    await asyncio.gather(*(worker() for _ in range(streams)))
    return found


async def burst(
    client: httpx2.AsyncClient, url: str, streams: int, rounds: int, delay: float
) -> list[list[float]]:
    found: list[list[float]] = []
    for _ in range(rounds):
        found += await asyncio.gather(*(one_stream(client, url, delay) for _ in range(streams)))
    return found


async def measure(
    urls: dict[str, str], options: argparse.Namespace
) -> dict[str, list[list[float]]]:
    limits = httpx2.Limits(
        max_connections=options.streams * 2, max_keepalive_connections=options.streams * 2
    )
    found: dict[str, list[list[float]]] = {name: [] for name in urls}
    async with httpx2.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:
        for url in urls.values():  # open the connections of both paths first
            await burst(client, url, options.streams, 1, options.event_delay)
        for _ in range(options.phases):
            for name, url in urls.items():
                if options.burst:
                    found[name] += await burst(
                        client, url, options.streams, options.rounds, options.event_delay
                    )
                else:
                    found[name] += await steady(
                        client,
                        url,
                        options.streams,
                        options.seconds,
                        options.event_delay,
                    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase and path")
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--event-delay", type=float, default=0.5)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="with --burst")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fpmon-bench-"))
    fleet = work / "fleet.toml"
    fleet.write_text(
        f'[default]\nfingerprints = ["fp_bench00001"]\nstream_delay = {options.event_delay}\n'
    )
    fake, fake_url = start(["fake-api", "--config", str(fleet)])
    history = work / "history.db"
    command = ["proxy", "--listen", "127.0.0.1:0", "--upstream", fake_url]
    proxy, proxy_url = start(
        [*command, "--target", "bench", "--new-target"],
        env={"FPMON_HISTORY": str(history)},
    )
    urls = {"direct": fake_url, "proxied": proxy_url}
    load_before = os.getloadavg()[0]
    try:
        found = asyncio.run(measure({k: v + "/chat/completions" for k, v in urls.items()}, options))
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        fake.terminate()
        fake.wait(timeout=30)
    with sqlite3.connect(history) as db:
        recorded = db.execute("SELECT count(*) FROM observations").fetchone()[0]
    first = {k: statistics.median(s[0] for s in v) * 1000 for k, v in found.items()}
    later = {k: statistics.median(lag for s in v for lag in s[1:]) * 1000 for k, v in found.items()}
    mode = (
        f"bursts of {options.streams} simultaneous streams"
        if options.burst
        else f"{options.streams} streams open at all times"
    )
    print(
        f"{mode}, events {options.event_delay * 1000:g} ms apart; "
        f"{len(found['direct'])} direct and {len(found['proxied'])} proxied streams "
        f"({recorded} recorded)"
    )
    print(
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"on {os.cpu_count()} CPUs (the three processes share them with whatever else runs)"
    )
    print(f"{'median':12}{'first chunk':>14}{'later chunks':>16}")
    for name in found:
        print(f"{name:12}{first[name]:>11.2f} ms{later[name]:>13.2f} ms")
    print(
        f"{'added':12}{first['proxied'] - first['direct']:>11.2f} ms"
        f"{later['proxied'] - later['direct']:>13.2f} ms"
    )


if __name__ == "__main__":
    main()
