"""fpmon against what a user would write instead, measured side by side in one run.

    python benchmarks/run.py            # about 2-4 minutes on 2 cores; loopback only

Prints one table of ratios, each row naming the commands it compared:

- fan-out: 50 targets x 3 samples against the fake API answering in 300 ms: `fpmon check`
  against (a) a sequential shell loop of curl + jq doing the same 150 requests and (b) the floor
  for a Python tool, a stdlib-only asyncio script sending the 150 requests at once. Goals: at
  least 10x faster than (a), within 2x of (b). The HTTP transports compared in the same run
  follow (benchmarks/fanout.py).
- one target, no latency: `fpmon check` against the script a user would write with the
  official openai SDK, making the same request and appending the fingerprint to a SQLite file.
  Goal: fpmon no slower.
- history scale (SQLite only here; run it alone for PostgreSQL) and watch memory:
  benchmarks/history_scale.py and benchmarks/watch_memory.py,
  smaller than their defaults, with their own output.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

import tomli_w
from fanout import clients_to_compare, start_fake

HERE = Path(__file__).resolve().parent
FPMON = shutil.which("fpmon", path=str(Path(sys.executable).parent)) or "fpmon"
TARGETS, SAMPLES, LATENCY = 50, 3, 0.3

STDLIB_FLOOR = """
import asyncio, json, sys
from urllib.parse import urlsplit
url, n = sys.argv[1], int(sys.argv[2])
parts = urlsplit(url)
payload = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 1}).encode()
head = (f"POST {parts.path} HTTP/1.1\\r\\nHost: {parts.netloc}\\r\\n"
        f"Content-Type: application/json\\r\\nContent-Length: {len(payload)}\\r\\n"
        "Connection: close\\r\\n\\r\\n").encode()
async def one():
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head + payload)
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\\r\\n\\r\\n", 1)[1]).get("system_fingerprint")
async def main():
    for fingerprint in await asyncio.gather(*(one() for _ in range(n))):
        print(fingerprint)
asyncio.run(main())
"""

CURL_LOOP = """
for i in $(seq "$2"); do
  curl -s -X POST "$1" -H 'content-type: application/json' \
    -d '{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":1}' \
    | jq -r .system_fingerprint
done
"""

OPENAI_SCRIPT = """
import sqlite3, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=2)
response = client.chat.completions.create(
    model="bench", messages=[{"role": "user", "content": "hi"}], max_tokens=1
)
with sqlite3.connect(sys.argv[2]) as db:
    db.execute("CREATE TABLE IF NOT EXISTS fingerprints (at TEXT, model TEXT, fingerprint TEXT)")
    db.execute(
        "INSERT INTO fingerprints VALUES (datetime('now'), ?, ?)",
        (response.model, response.system_fingerprint),
    )
"""


def timed(command: list[str], repeat: int) -> float:
    """Median wall time of `command` run `repeat` times (it must exit 0 or 1)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{command[:3]} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return statistics.median(times)


def write_config(directory: Path, base_url: str, targets: int, samples: int) -> Path:
    config = {
        "history": str(directory / "history.db"),
        "defaults": {"learning": False, "retries": 0, "samples": samples, "timeout": "30s"},
        "targets": {
            f"t{i:02d}": {"provider": "custom", "base_url": base_url, "model": "bench"}
            for i in range(targets)
        },
    }
    path = directory / "fpmon.toml"
    path.write_text(tomli_w.dumps(config))
    return path


Row = tuple[str, str, float, float, str, Callable[[float], bool]]


def fan_out(work: Path) -> list[Row]:
    server, base_url = start_fake(LATENCY)
    url = base_url + "/chat/completions"
    n = TARGETS * SAMPLES
    try:
        config = write_config(work / "fanout", base_url, TARGETS, SAMPLES)
        fpmon = timed(
            [FPMON, "check", "--quiet", "--concurrency", str(n), "-c", str(config)], repeat=5
        )
        floor = timed([sys.executable, "-c", STDLIB_FLOOR, url, str(n)], repeat=5)
        curl = timed(["bash", "-c", CURL_LOOP, "loop", url, str(n)], repeat=1)
        transports = {name: _best(client, url, n) for name, client in clients_to_compare().items()}
    finally:
        server.terminate()
        server.wait()
    rows: list[Row] = [
        (
            f"fan-out {TARGETS}x{SAMPLES}, 300 ms",
            "curl + jq, sequential loop",
            fpmon,
            curl,
            ">= 10x faster",
            lambda r: r >= 10,
        ),
        (
            f"fan-out {TARGETS}x{SAMPLES}, 300 ms",
            "stdlib asyncio script (floor)",
            fpmon,
            floor,
            "within 2x",
            lambda r: r >= 0.5,
        ),
    ]
    shipped = transports.pop("fpmon probe (httpx2, as shipped)")
    for name, seconds in transports.items():
        rows.append(
            (f"transport, {n} requests", name, shipped, seconds, "(report)", lambda r: True)
        )
    return rows


def _best(client: Callable[[str, int], Coroutine[None, None, None]], url: str, n: int) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        asyncio.run(client(url, n))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def one_target(work: Path) -> list[Row]:
    server, base_url = start_fake(0.0)
    try:
        config = write_config(work / "one", base_url, targets=1, samples=1)
        fpmon = timed([FPMON, "check", "--quiet", "-c", str(config)], repeat=7)
        database = str(work / "one" / "sdk.db")
        sdk = timed([sys.executable, "-c", OPENAI_SCRIPT, base_url, database], repeat=7)
    finally:
        server.terminate()
        server.wait()
    return [
        (
            "one target, no latency",
            "openai SDK script + SQLite",
            fpmon,
            sdk,
            "no slower",
            lambda r: r >= 1.0,
        )
    ]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fpmon-bench-") as tmp:
        work = Path(tmp)
        (work / "fanout").mkdir()
        (work / "one").mkdir()
        rows = fan_out(work) + one_target(work)
    print(f"fpmon benchmarks, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"{'benchmark':<28} {'compared with':<36} {'fpmon s':>8} {'other s':>8} {'ratio':>7}  goal"
    )
    for bench, other, fpmon, alternative, goal, met in rows:
        ratio = alternative / fpmon
        verdict = "" if goal == "(report)" else ("met" if met(ratio) else "NOT MET")
        print(
            f"{bench:<28} {other:<36} {fpmon:>8.3f} {alternative:>8.3f} {ratio:>6.2f}x  "
            f"{goal} {verdict}"
        )
    print("ratio = other / fpmon: above 1, fpmon is faster")
    # The other benchmarks, smaller than their defaults so that this run stays a few minutes.
    for script, *args in (
        ("history_scale.py", "--rows", "200000", "--repeat", "3", "--no-postgres"),
        ("watch_memory.py", "--count", "300"),
    ):
        print(f"\n$ python benchmarks/{script} {' '.join(args)}")
        sys.stdout.flush()
        subprocess.run([sys.executable, str(HERE / script), *args], check=False)


if __name__ == "__main__":
    main()
