"""The site in the chain: records written before it keep their hash; a site is hashed when
there is one, and editing it breaks the chain."""

from __future__ import annotations

from typing import Any

from fp_monitor.domain.chain import (
    CHAINED_COLUMNS,
    GENESIS_HASH,
    NO_TAGS,
    Walk,
    chain_hash,
    row_links,
    walk,
)


def row(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(CHAINED_COLUMNS)
    values.update(check_id="c1", target="grok", fingerprint="fp_a", prev_hash=GENESIS_HASH)
    values["tags"] = NO_TAGS
    return {**values, **changes}


def test_a_record_without_a_site_keeps_the_hash_it_had_before_sites() -> None:
    before_sites = row()  # what a history from before schema 0013 reads back: no column
    assert chain_hash(row(site=None)) == chain_hash(before_sites)


def test_the_site_is_hashed_and_cannot_pass_for_tags() -> None:
    assert chain_hash(row(site="eu-west")) != chain_hash(row(site="us-east"))
    assert chain_hash(row(site="eu-west")) != chain_hash(row())
    # The same text as tags or as the site: two different records, two different hashes.
    text = '{"a":"b"}'
    assert chain_hash(row(tags=text)) != chain_hash(row(site=text))


def test_an_edited_site_breaks_the_walk() -> None:
    first = row(site="eu-west")
    first["hash"] = chain_hash(first)
    stored = [{"id": 1, **first, "site": "us-east"}]
    broken = walked(stored).broken
    assert broken is not None and broken.id == 1 and "was edited" in broken.problem
    assert broken.target == "grok"
    assert walked([{"id": 1, **first}]).broken is None


def walked(rows: list[dict[str, Any]]) -> Walk:
    by_id = {row["id"]: (row["target"], row["observed_at"]) for row in rows}
    return walk(row_links(rows), [], by_id.__getitem__)
