"""`fpmon check --shard I/N` against the fake API: the shards of a fleet probe every target
once; an empty shard and bad values end as documented."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI
from tests.conftest import Run

NAMES = [f"t{n}" for n in range(24)]


def test_three_shards_probe_every_target_exactly_once(
    fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run]
) -> None:
    write_config(fake.base_url, **{name: {"model": "model-b", "samples": 1} for name in NAMES})
    probed: list[str] = []
    for shard in ("1/3", "2/3", "3/3"):
        run = fpmon("check", "--shard", shard, "--json", "--history", f"h{shard[0]}.db")
        assert run.code == 0, run.err
        probed += [t["name"] for t in run.json()["targets"]]
    assert sorted(probed) == sorted(NAMES)  # each once: no target twice, none left out
    assert len(fake.requests()) == len(NAMES)  # the server saw one request per target


def test_an_empty_shard_checks_nothing_and_a_bad_one_is_exit_2(
    fake: FakeAPI, write_config: Callable[..., Path], fpmon: Callable[..., Run]
) -> None:
    write_config(fake.base_url, only={"model": "model-b"})
    runs = {shard: fpmon("check", "--shard", shard) for shard in ("1/2", "2/2")}
    (full,) = [shard for shard, run in runs.items() if "only" in run.out]
    assert runs[full].code == 0
    (empty,) = set(runs) - {full}  # one target, two shards: the other holds nothing
    assert runs[empty].code == 0
    assert runs[empty].err == f"fpmon: shard {empty} holds none of the targets: nothing to check\n"
    document = fpmon("check", "--shard", empty, "--json")
    assert document.code == 0 and document.json()["targets"] == []
    assert document.json()["recorded"] is False
    watch = fpmon("watch", "--every", "1m", "--count", "1", "--shard", empty)
    assert watch.code == 2
    assert watch.err.strip().splitlines() == [
        f"fpmon: error: --shard {empty}: holds none of the targets; use fewer shards than targets"
    ]
    for bad in ("0/2", "3/2", "a/b"):
        run = fpmon("check", "--shard", bad)
        assert run.code == 2 and run.out == ""
        assert len(run.err.strip().splitlines()) == 1 and f"'{bad}'" in run.err
