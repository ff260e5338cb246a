"""`--shard I/N`: a stable share of the targets, by a hash of each name, so that N watchers on N
machines split a fleet with no coordinator and no target probed twice. Pure.

SHA-256 of the name, not Python's hash(): that one is salted per process, and a target would
move between shards from one run to the next."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{1,9})\s*$", re.ASCII)
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class Shard:
    index: int
    """1 to count."""
    count: int

    def holds(self, name: str) -> bool:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'2/4' -> Shard(2, 4); ValueError says what is wrong and the accepted form."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"{text!r} is not I/N: write the shard and the shard count, like 2/4")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{text!r}: the shard count must be from 1 to {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise ValueError(f"{text!r}: the shard must be from 1 to {count}, like 1/{count}")
    return Shard(index, count)


def take_shard(names: Iterable[str], shard: Shard) -> list[str]:
    """The names of `names` that `shard` holds, in their order."""
    return [name for name in names if shard.holds(name)]
