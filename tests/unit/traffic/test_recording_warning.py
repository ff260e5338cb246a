"""`on_unexpected="warn"` points its warning at the application's own line, not at fpmon's: so
Python's default filter (once per place) shows it once per call site, which is how a warning is
meant to be read. The official SDK against the fake API, a lock that keeps the value unexpected."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

from openai import AsyncOpenAI, OpenAI

import fp_monitor
from fp_monitor import UnexpectedFingerprintWarning
from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour

MESSAGES = [{"role": "user", "content": "hi"}]
LOCK = 'version = 1\n[targets.app]\nfingerprints = ["fp_accepted01"]\nmodels = ["m-1"]\n'
ROLLOUT = {"m": ModelBehaviour(["fp_rollout001"], resolved_model="m-1")}


def ask(client: OpenAI) -> None:
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


def ask_elsewhere(client: OpenAI) -> None:
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


def read_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    for _chunk in stream:  # a stream is judged as it is read: here
        pass


async def ask_async(client: AsyncOpenAI) -> None:
    await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


def place(function: Callable[..., object], offset: int = 1) -> tuple[str, int]:
    """(file name, line) of the statement `offset` lines into `function`'s body."""
    return Path(__file__).name, inspect.getsourcelines(function)[1] + offset


def shown(caught: list[warnings.WarningMessage]) -> list[tuple[str, int]]:
    assert all("unexpected fingerprint fp_rollout001" in str(w.message) for w in caught)
    return [(Path(w.filename).name, w.lineno) for w in caught]


def test_each_call_site_gets_its_warning_once(
    write_config: Callable[..., Path], isolated: Path
) -> None:
    (isolated / "fpmon.lock").write_text(LOCK)
    with FakeAPI(ROLLOUT) as fake:
        write_config(fake.base_url, app={"model": "m"})
        http = fp_monitor.recording_client("app", on_unexpected="warn")
        client = OpenAI(base_url=fake.base_url, api_key="k", http_client=http, max_retries=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default", UnexpectedFingerprintWarning)  # Python's default
            for _ in range(3):
                ask(client)
            ask_elsewhere(client)
            read_stream(client)
        http.close()
    assert shown(caught) == [place(ask), place(ask_elsewhere), place(read_stream, 2)]


def test_an_async_call_site_gets_its_warning(
    write_config: Callable[..., Path], isolated: Path
) -> None:
    (isolated / "fpmon.lock").write_text(LOCK)

    async def main(base_url: str) -> None:
        http = fp_monitor.recording_async_client("app", on_unexpected="warn")
        async with AsyncOpenAI(base_url=base_url, api_key="k", http_client=http) as client:
            await ask_async(client)

    with FakeAPI(ROLLOUT) as fake:
        write_config(fake.base_url, app={"model": "m"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default", UnexpectedFingerprintWarning)
            asyncio.run(main(fake.base_url))
    assert shown(caught) == [place(ask_async)]
