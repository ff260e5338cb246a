"""--shard I/N: the shards of a fleet are disjoint and cover it, whatever the names; a target's
shard never changes between runs; bad values say the accepted form."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp_monitor.domain.shards import Shard, parse_shard, take_shard


@given(
    names=st.lists(st.text(min_size=1, max_size=30), unique=True, max_size=60),
    count=st.integers(min_value=1, max_value=12),
)
def test_the_shards_are_disjoint_and_cover_every_target(names: list[str], count: int) -> None:
    shards = [take_shard(names, Shard(i, count)) for i in range(1, count + 1)]
    assert sorted(n for shard in shards for n in shard) == sorted(names)
    for i, shard in enumerate(shards):
        assert all(name in names for name in shard)
        assert not set(shard) & {n for other in shards[i + 1 :] for n in other}


def test_a_target_keeps_its_shard_from_run_to_run() -> None:
    # Pinned: SHA-256 of the name, never Python's per-process hash(). Changing it would move
    # every target of every team's watchers at once.
    names = ["grok", "gpt-4o", "claude", "llama", "mistral", "qwen", "deepseek", "gemini"]
    shard_of = {n: next(i for i in range(1, 5) if Shard(i, 4).holds(n)) for n in names}
    assert shard_of == {
        "grok": 1,
        "gpt-4o": 3,
        "claude": 2,
        "llama": 2,
        "mistral": 4,
        "qwen": 2,
        "deepseek": 4,
        "gemini": 3,
    }
    # The shard is the digest read as a big-endian number, modulo N (docs/how-to/team-history).
    digest = hashlib.sha256(b"mistral").digest()
    assert int.from_bytes(digest, "big") % 4 == 3


def test_a_thousand_targets_split_about_evenly() -> None:
    names = [f"target-{n}" for n in range(1000)]
    sizes = [len(take_shard(names, Shard(i, 4))) for i in range(1, 5)]
    assert all(200 <= size <= 300 for size in sizes), sizes


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0/2", "the shard must be from 1 to 2, like 1/2"),
        ("3/2", "the shard must be from 1 to 2, like 1/2"),
        ("1/0", "the shard count must be from 1 to 100000"),
        ("a/b", "is not I/N: write the shard and the shard count, like 2/4"),
        ("2", "is not I/N"),
        ("-1/2", "is not I/N"),
        ("1/1234567890", "is not I/N"),
        ("\u0661/\u0662", "is not I/N"),  # Arabic-Indic digits: not what a flag means
    ],
)
def test_a_bad_shard_says_the_accepted_form(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_shard(text)


def test_a_shard_reads_as_written() -> None:
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)
    assert str(parse_shard("2/4")) == "2/4"
