"""The canary's stored forms: hostile top lists from a server, signatures in the history and the
lock (round trips, byte-stable accept), each sample's data chained in the history, and the probe
reading a completion's logprobs."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fp_monitor.audit import verify_history
from fp_monitor.domain.canary import (
    CanaryMode,
    CanarySample,
    CanaryStatus,
    CanaryVerdict,
    Signature,
    judge,
    parse_top,
    signature_data,
    signature_from_data,
    verdict_data,
)
from fp_monitor.domain.chain import chain_hash
from fp_monitor.domain.detect import detect
from fp_monitor.domain.drift import with_verdict
from fp_monitor.domain.errors import ChainBroken, ConfigError
from fp_monitor.domain.models import (
    ALL_SOURCES,
    FailOn,
    LockEntry,
    Observation,
    Status,
    TargetResult,
    Window,
)
from fp_monitor.net import redact as redact_module
from fp_monitor.net.redact import register, scrub
from fp_monitor.probe.request import canary_sample
from fp_monitor.store.canary import (
    canary_recent,
    canary_signatures,
    canary_verdicts,
    logprobs_refused,
    save_canary,
)
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import accept_values, read_lock, write_lock
from fp_monitor.store.rows import observation_row
from tests.conftest import edit_stored
from tests.unit.domain.test_canary import logits, response, sample
from tests.unit.store.test_history import T0, obs
from tests.unit.store.test_store_both import history, location

__all__ = ["history"]  # the fixture: SQLite, then PostgreSQL (history_url)

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
EVERYTHING = Window(None, None, ALL_SOURCES)


def learned(seed: int = 1) -> tuple[Signature, ...]:
    rng = random.Random(seed)
    base = logits(seed)
    signatures: tuple[Signature, ...] = ()
    for _ in range(10):
        samples = [sample(response(base, rng)) for _ in range(5)]
        signatures = judge(signatures, samples, mode=CanaryMode.LOGPROBS, learning=True).signatures
    return signatures


@pytest.mark.parametrize(
    "value",
    [
        [{"token": "a", "logprob": math.nan}],
        [{"token": "a", "logprob": 0.5}],
        [{"token": 7, "logprob": -1.0}],
        [{"token": "a", "logprob": True}],
        [{"token": "a"}],
        ["a", -1.0],
        {"token": "a", "logprob": -1.0},
        [{"token": "a", "logprob": -1.0}] * 65,
    ],
)
def test_a_hostile_top_list_is_no_top_list(value: object) -> None:
    assert parse_top(value) is None


def test_a_top_list_is_sorted_and_long_tokens_are_cut() -> None:
    top = parse_top([{"token": "b", "logprob": -2}, {"token": "x" * 500, "logprob": -0.5}])
    assert top == (("x" * 100, -0.5), ("b", -2.0))


def test_a_key_across_the_token_cut_is_hidden_before_the_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redact_module, "_registered", set())
    key = "gw/CANARY+" + "0123456789abcdef" * 2  # not key-shaped: only registration hides it
    register(key)
    token = "x" * 90 + key
    first = {"token": token, "logprob": -0.1, "top_logprobs": [{"token": token, "logprob": -0.1}]}
    body = {"choices": [{"message": {"content": token}, "logprobs": {"content": [first]}}]}
    got = canary_sample(json.dumps(body).encode(), "fp_a")
    assert got == CanarySample("fp_a", (("x" * 90 + "***", -0.1),), "x" * 90 + "***")


def test_the_probe_reads_logprobs_and_ignores_anything_else() -> None:
    body = {
        "choices": [
            {
                "message": {"content": "Blue"},
                "logprobs": {
                    "content": [
                        {
                            "token": "Blue",
                            "logprob": -0.3,
                            "top_logprobs": [
                                {"token": "Blue", "logprob": -0.3, "bytes": [66]},
                                {"token": "Red", "logprob": -1.9, "bytes": None},
                            ],
                        }
                    ]
                },
            }
        ]
    }
    got = canary_sample(json.dumps(body).encode(), "fp_a")
    assert got == CanarySample("fp_a", (("Blue", -0.3), ("Red", -1.9)), "Blue")
    body["choices"][0]["logprobs"] = "nonsense"
    assert canary_sample(json.dumps(body).encode(), "fp_a").top == ()
    assert canary_sample(b'{"choices": ["x"]}', "fp_a") == CanarySample("fp_a", (), None)


def test_signatures_round_trip_as_data() -> None:
    for signature in learned():
        assert signature_from_data(json.loads(json.dumps(signature_data(signature)))) == (
            dataclasses.replace(
                signature,
                center=tuple((t, round(v, 5)) for t, v in signature.center),
                floor=round(signature.floor, 5),
                distances=tuple(round(d, 6) for d in signature.distances),
                noise=round(signature.noise, 6),
            )
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "off"}, "kind"),
        ({"samples": 0}, "samples"),
        ({"logprobs": ["x"]}, "logprobs"),
        ({"tokens": "Blue"}, "tokens"),
        ({"floor": math.inf}, "floor"),
    ],
)
def test_a_broken_signature_says_what_is_wrong(change: dict[str, object], message: str) -> None:
    data = {**signature_data(learned()[0]), **change}
    with pytest.raises(ValueError, match=message):
        signature_from_data(data)


def test_the_lock_round_trips_signatures_and_accepting_twice_is_byte_stable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fpmon.lock"
    entry, change = accept_values(
        "t", None, frozenset({"fp_a"}), frozenset({"m"}), replace=False, now=AT,
        signatures=learned(),
    )  # fmt: skip
    assert change.added_signatures and entry.canary is not None
    write_lock(path, {"t": entry})
    text = path.read_text()
    again, change = accept_values(
        "t", read_lock(path)["t"], frozenset({"fp_a"}), frozenset({"m"}), replace=False, now=AT,
        signatures=signature_rounded(learned()),
    )  # fmt: skip
    assert not change.changed
    write_lock(path, {"t": again})
    assert path.read_text() == text


def signature_rounded(signatures: tuple[Signature, ...]) -> tuple[Signature, ...]:
    return tuple(signature_from_data(signature_data(s)) for s in signatures)


def test_a_broken_canary_table_in_the_lock_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "fpmon.lock"
    write_lock(path, {"t": LockEntry(frozenset({"fp_a"}), frozenset(), AT, learned())})
    path.write_text(path.read_text().replace('kind = "logprobs"', 'kind = "loud"', 1))
    with pytest.raises(ConfigError, match=r"\[targets.t\] canary: .*kind"):
        read_lock(path)


def checked(
    history: History, observations: list[Observation], verdict: CanaryVerdict | None
) -> TargetResult:
    """What `fpmon check` records for one target, with the canary's verdict on it."""
    with history.write():
        result = detect("grok", observations, history.facts("grok"), samples=len(observations))
        if verdict is not None:
            result = with_verdict(result, verdict, FailOn.NEW)
        history.append_check(uuid.uuid4().hex, T0, result, observations)
    return result


DRIFT = CanaryVerdict(
    CanaryMode.LOGPROBS, CanaryStatus.DRIFT, ("b",), ("a",), 1e-12, 0.4, 0.02, 3, "b"
)


def test_the_history_keeps_signatures_samples_verdicts_and_refusals(history: History) -> None:
    assert canary_signatures(history, "t") == () and logprobs_refused(history, "t") is None
    top = (("Blue", -0.3), ("Red", -1.5))
    with_canary = dataclasses.replace(obs("fp_a"), canary=CanarySample("fp_a", top, "Blue"))
    checked(history, [with_canary, obs("fp_a")], None)
    (recent,) = canary_recent(history, "grok", 10)
    assert recent == CanarySample("fp_a", top, "Blue")
    assert history.observations("grok", EVERYTHING, 10)[-1].observation.canary == recent
    with history.write():
        save_canary(history, "grok", learned(), AT, refused=True)
        save_canary(history, "grok", learned(2), AT.replace(hour=11), refused=True)
    assert canary_signatures(history, "grok") == signature_rounded(learned(2))
    assert logprobs_refused(history, "grok") == AT  # the first refusal is kept
    assert canary_verdicts(history, "grok", EVERYTHING) == []
    result = checked(history, [obs("fp_a")], DRIFT)
    assert result.status is Status.DRIFT
    ((_, stored),) = canary_verdicts(history, "grok", EVERYTHING)
    assert stored == verdict_data(DRIFT)


def test_a_checks_canary_verdict_is_sealed_and_older_seals_still_verify(
    history: History, history_url: str
) -> None:
    checked(history, [obs("fp_a")], None)  # a check without a verdict: hashed as before 0012
    checked(history, [obs("fp_a")], DRIFT)
    assert verify_history(location(history_url)).records == 2
    edit_stored(history_url, "UPDATE checks SET canary = replace(canary, 'drift', 'known')")
    with pytest.raises(ChainBroken, match=r"check row 2 .*was edited"):
        verify_history(location(history_url))


def test_a_verdict_added_to_a_check_without_one_is_caught(
    history: History, history_url: str
) -> None:
    checked(history, [obs("fp_a")], None)
    edit_stored(history_url, f"UPDATE checks SET canary = '{json.dumps(verdict_data(DRIFT))}'")
    with pytest.raises(ChainBroken, match="check row 1 "):
        verify_history(location(history_url))


def test_a_samples_canary_data_is_chained() -> None:
    observation = dataclasses.replace(
        obs("fp_a"), canary=CanarySample("fp_a", (("Blue", -0.3),), "Blue")
    )
    row = observation_row("c", observation, "0" * 64)
    plain = observation_row("c", obs("fp_a"), "0" * 64)
    assert plain["canary"] is None
    assert chain_hash(plain) == chain_hash({k: v for k, v in plain.items() if k != "canary"})
    edited = {**row, "canary": row["canary"].replace("-0.3", "-0.4")}
    assert chain_hash(edited) != chain_hash(row) != chain_hash(plain)


def test_a_key_the_server_echoes_in_first_tokens_is_hidden_from_the_canary_data() -> None:
    key = "sk-canary-0123456789abcdef"
    echoed = CanarySample(f"fp-{key}", ((f"A{key}", -0.1), ("Red", -2.0)), f"A{key}")
    hidden = scrub(dataclasses.replace(obs(f"fp-{key}"), canary=echoed), also=[key])
    assert hidden.canary is not None and key not in repr(hidden.canary)
    assert hidden.canary.fingerprint == hidden.fingerprint
    assert [logprob for _, logprob in hidden.canary.top] == [-0.1, -2.0]
