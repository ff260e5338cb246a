"""The hash of a record is fixed for ever: every history written by an earlier fpmon must keep
verifying. These values were computed by the first implementation (json.dumps of the list of
chained values); a faster encoding must give the same bytes."""

from __future__ import annotations

from typing import Any

from fp_monitor.domain.chain import CHAINED_COLUMNS, chain_hash


def _record() -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CHAINED_COLUMNS)
    row.update(
        check_id="c1",
        observed_at="2026-11-29T10:00:00.000000Z",
        source="probe",
        target="t",
        provider="openai",
        base_url="http://127.0.0.1:8000/v1",
        requested_model="m",
        resolved_model="m-2026",
        # Non-ASCII, a bidi override and markup: escaped as \\u sequences, as before.
        fingerprint="fp_é\u202e<",
        fingerprint_state="value",
        http_status=200,
        latency_ms=338.5,
        attempts=1,
        headers='{"x": "y"}',
        raw_response='{"a": "\\"q\\""}',
        prev_hash="0" * 64,
    )
    return row


def test_a_record_hashes_as_it_always_has() -> None:
    assert chain_hash(_record()) == (
        "cfb4aea51def1002786a19ab4dbdf47c96345921c17ba090118fed404d0131d2"
    )


def test_no_tags_hash_as_a_record_from_before_tags() -> None:
    assert chain_hash({**_record(), "tags": "{}"}) == chain_hash(_record())


def test_tags_are_hashed_after_the_chained_values() -> None:
    assert chain_hash({**_record(), "tags": '{"team": "a"}'}) == (
        "d899a0aaa5950a1e4a9ad2d953b35ff1bf67d2b60e65c42fcc34eb83e8fb9411"
    )
