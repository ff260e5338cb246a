"""What the history holds per site (the `site` of each observation, migration 0013): the
samples of each target counted per site, for the `fpmon_samples_total` metric."""

from __future__ import annotations

from collections.abc import Iterable

from fp_monitor.store.history import History


def samples_by_site(history: History, targets: Iterable[str]) -> dict[tuple[str, str | None], int]:
    """(target, site) -> observations recorded, over the whole history; site None: records
    made before observations had a site. Counted from the (target, site) index alone."""
    counts: dict[tuple[str, str | None], int] = {}
    for target in targets:
        for site, count in history.fetch_all(
            "SELECT site, count(*) FROM observations WHERE target = ? GROUP BY site", (target,)
        ):
            counts[(target, site)] = count
    return counts
