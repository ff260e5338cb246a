"""Hostile-input matrix, the behaviour canary: a server answering the canary's logprob request
with control characters, markup, spreadsheet formulas, lone surrogates, a megabyte token,
ten thousand alternatives, logprobs that are not numbers (or not logprobs), shapes that are
not OpenAI's, or the API key inside a token. The installed `fpmon` runs every command that
shows, stores or carries the canary's data; each case asserts what a user would see: the probe
succeeds, the output is strict JSON and tame text, the history stays small and verifies."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fp_monitor.devtools.fake_api import FakeAPI, Fault, ModelBehaviour
from tests.conftest import Run
from tests.e2e.test_hostile_bounds_e2e import assert_tame, history_csv, info_labels
from tests.e2e.test_hostile_secrets_e2e import written

KEY = "gw/CANARY+" + "0123456789abcdef" * 2
"""Not shaped like a provider's key: only its registration can hide it."""
ENV = {"GW_KEY": KEY}
MEGABYTE = 1_000_000


def completion(content: Any, logprobs: Any) -> bytes:
    """A chat completion whose first token and logprobs are the server's choice (NaN and
    Infinity written as Python's json writes them, which JSON does not allow)."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "logprobs": logprobs,
        "finish_reason": "length",
    }
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m-1",
        "system_fingerprint": "fp_a",
        "choices": [choice],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    return json.dumps(body).encode()


def top(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    """OpenAI's logprobs object: the first token's top alternatives are `pairs`."""
    alternatives = [{"token": t, "logprob": lp, "bytes": None} for t, lp in pairs]
    first = alternatives[0] if alternatives else {"token": "x", "logprob": -0.1}
    return {"content": [{**first, "top_logprobs": alternatives}], "refusal": None}


def plain(*tokens: str) -> dict[str, Any]:
    """Well-formed logprobs over `tokens` (the first most likely)."""
    return top(*((t, -0.1 - i) for i, t in enumerate(tokens)))


def strict_json(text: str) -> Any:
    """JSON as every parser reads it: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def tame(text: str) -> None:
    """Nothing a terminal would act on: no control character but newline."""
    bad = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch != "\n"]
    assert not bad, repr(bad[:5])
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def configure(isolated: Path, base_url: str, mode: str) -> None:
    document = {
        "defaults": {"retries": 0, "timeout": "10s", "learning": False, "samples": 2},
        "targets": {
            "t": {
                "provider": "custom",
                "base_url": base_url,
                "model": "m",
                "canary": mode,
                "api_key_env": "GW_KEY",
            }
        },
    }
    (isolated / "fpmon.toml").write_text(tomli_w.dumps(document))


def ok(run: Run, *codes: int) -> Run:
    assert run.code in (codes or (0,)), (run.code, run.err[-2000:])
    assert "Traceback" not in run.err
    return run


def attack(
    fpmon: Callable[..., Run], isolated: Path, body: bytes, mode: str = "logprobs"
) -> dict[str, Any]:
    """Serve `body` to three checks (the last after `accept`), then show, export, import, verify
    and report the history; returns the first check's JSON target. Every command must succeed."""
    with FakeAPI({"m": ModelBehaviour(["fp_a"])}) as fake:
        configure(isolated, fake.base_url, mode)
        fake.add_faults([Fault("status", status=200, body=body, times=6)])
        first = ok(fpmon("check", "--json", env=ENV))
        table = ok(fpmon("check", "--metrics-file", "m.prom", env=ENV))
        ok(fpmon("accept", "t", env=ENV))
        ok(fpmon("check", env=ENV))  # judged against the signatures read back from the lock
    (result,) = strict_json(first.out)["targets"]
    assert result["errors"] == [] and result["fingerprints"] == ["fp_a"]
    tame(first.out + table.out + table.err)
    assert_tame(info_labels((isolated / "m.prom").read_text()))
    strict_json(ok(fpmon("stats", "--json", env=ENV)).out)
    records = ok(fpmon("history", "--observations", "--format", "jsonl", env=ENV)).out
    for line in records.split("\n")[:-1]:  # not splitlines: U+2028 is no line end in JSON
        strict_json(line)
    tame(ok(fpmon("history", "--observations", env=ENV)).out)
    for row in history_csv(isolated, "--observations"):
        assert not any(cell[:1] in ("=", "+", "-", "@") for cell in row.values() if cell)
    ok(fpmon("export", "--output", "export.jsonl", env=ENV))
    for line in (isolated / "export.jsonl").read_text().splitlines():
        strict_json(line)
    ok(fpmon("import", "export.jsonl", "--history", "copy.db", env=ENV))
    assert "the chain is intact" in ok(fpmon("verify", env=ENV)).out
    ok(fpmon("verify", "--history", "copy.db", env=ENV))
    ok(fpmon("report", "--output", "report.html", env=ENV))
    page = (isolated / "report.html").read_text()
    assert "<script>alert" not in page
    # Bounded: three checks of two samples each, whatever the server sent.
    assert sum(p.stat().st_size for p in isolated.rglob("*.db*")) < 2 * MEGABYTE
    assert (isolated / "fpmon.lock").stat().st_size < 100_000
    return result


HOSTILE_TOKENS = {
    "ansi": "\x1b[31mred\x1b[0m",
    "controls": "a\x00b\x07c\r\nd\x9b",
    "lone-surrogate": "\ud800x",
    "script": "<script>alert(1)</script>",
    "formula": "=cmd|' /C calc'!A0",
    "formula-at": "@SUM(A1)",
}


@pytest.mark.parametrize("mode", ["logprobs", "sampled"])
@pytest.mark.parametrize("token", HOSTILE_TOKENS.values(), ids=HOSTILE_TOKENS.keys())
def test_hostile_tokens_are_data(
    fpmon: Callable[..., Run], isolated: Path, token: str, mode: str
) -> None:
    result = attack(fpmon, isolated, completion(token, plain(token, "b", "c")), mode)
    assert (result["canary"]["mode"], result["canary"]["status"]) == (mode, "first")
    assert result["canary"]["samples"] == 2


@pytest.mark.parametrize("mode", ["logprobs", "sampled"])
def test_a_megabyte_token_is_cut(fpmon: Callable[..., Run], isolated: Path, mode: str) -> None:
    huge = "x" * MEGABYTE
    result = attack(fpmon, isolated, completion(huge, plain(huge, "b")), mode)
    assert result["canary"]["samples"] == 2


def test_ten_thousand_alternatives_are_no_canary_data(
    fpmon: Callable[..., Run], isolated: Path
) -> None:
    many = top(*((f"t{i}", -1.0 - i / 10_000) for i in range(10_000)))
    result = attack(fpmon, isolated, completion("t0", many))
    assert result["canary"]["status"] == "unavailable"


VALUES = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "string": "-0.5",
    "null": None,
    "huge": -1e308,
    "positive": 3.0,
    "bool": False,
    "bignum": -(10**400),
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_logprobs_that_are_not_logprobs_are_no_canary_data(
    fpmon: Callable[..., Run], isolated: Path, value: Any
) -> None:
    result = attack(fpmon, isolated, completion("a", top(("a", -0.1), ("b", value))))
    assert result["canary"]["status"] == "unavailable"
    assert result["canary"]["distance"] is None


SHAPES = {
    "logprobs-string": "nope",
    "content-object": {"content": {"token": "a"}},
    "content-empty": {"content": []},
    "content-of-numbers": {"content": [1, 2]},
    "top-object": {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": {"a": -0.1}}]},
    "top-missing": {"content": [{"token": "a", "logprob": -0.1}]},
    "entry-missing-logprob": {"content": [{"token": "a", "top_logprobs": [{"token": "a"}]}]},
    "entry-a-list": {"content": [{"top_logprobs": [["a", -0.1, 3]]}]},
    "deep": {"content": [{"top_logprobs": [[[[[[[["a"]]]]]]]]}]},
}


@pytest.mark.parametrize("logprobs", SHAPES.values(), ids=SHAPES.keys())
def test_shapes_that_are_not_openais_are_no_canary_data(
    fpmon: Callable[..., Run], isolated: Path, logprobs: Any
) -> None:
    result = attack(fpmon, isolated, completion("a", logprobs))
    assert result["canary"]["status"] == "unavailable"


@pytest.mark.parametrize("content", [{"a": 1}, ["a"], 7, ""], ids=repr)
def test_an_answer_that_is_not_text_is_no_token(
    fpmon: Callable[..., Run], isolated: Path, content: Any
) -> None:
    result = attack(fpmon, isolated, completion(content, plain("a", "b")))
    assert result["canary"]["samples"] == 2  # the logprobs still count


# At the token cut (100 characters) a key must not survive in part either.
KEY_TOKENS = {"whole": KEY, "at-cut": "x" * 90 + KEY}


@pytest.mark.parametrize("mode", ["logprobs", "sampled"])
@pytest.mark.parametrize("token", KEY_TOKENS.values(), ids=KEY_TOKENS.keys())
def test_a_key_inside_a_token_reaches_nothing(
    fpmon: Callable[..., Run], isolated: Path, token: str, mode: str
) -> None:
    attack(fpmon, isolated, completion(token, plain(token, "b" + token, "c")), mode)
    # Without the key in the environment, nothing can hide it on the way out: it must not be
    # stored.
    shown = ok(fpmon("history", "--observations", "--format", "jsonl")).out
    everything = written(isolated).decode("utf-8", "replace") + shown
    for piece in (KEY, KEY[:8], KEY[-8:]):
        assert piece not in everything
    assert "***" in (isolated / "fpmon.lock").read_text()
