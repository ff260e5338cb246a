"""`fpmon report`'s page: one self-contained HTML file drawn from a Report record.

Everything is inlined: uPlot (fp_monitor/output/assets, with its licence and version) and the
page's own script and style, so the file opens from a CI artifact or a disk with no network. A
Content-Security-Policy allows only those inline blocks (by hash) and no request of any kind.

Server strings are data: in the HTML they are escaped; the charts get them in a JSON block
whose `<`, `>` and `&` are escaped, and show them as text (textContent, canvas).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from fp_monitor.domain.models import Status
from fp_monitor.domain.report import (
    CHANGE_LIMIT,
    Band,
    BandKind,
    Buckets,
    Report,
    TargetReport,
    error_periods,
)
from fp_monitor.domain.text import plural, show_duration, show_value, show_values

UPLOT_VERSION = "1.6.32"
PALETTE_SIZE = 8
PATTERNS = 6
RUN_LIMIT = 200
"""Rows per band in a timeline's table (a value that comes and goes has many runs)."""
KIND_AXIS = {
    BandKind.FINGERPRINT: "fp",
    BandKind.MODEL: "model",
    BandKind.SIGNATURE: "sig",
    BandKind.ERROR: "error",
}
"""The short kind before a band's value on the timeline's axis."""
KIND_TITLES = {
    BandKind.FINGERPRINT: "fingerprint",
    BandKind.MODEL: "model",
    BandKind.SIGNATURE: "signature",
    BandKind.ERROR: "error",
}
_AXIS_LIMIT = 22


def asset(name: str) -> str:
    """A file of fp_monitor/output/assets, as installed with the package."""
    return (resources.files("fp_monitor.output") / "assets" / name).read_text(encoding="utf-8")


def render_report(report: Report) -> str:
    styles = [asset("uPlot.min.css"), asset("report.css")]
    scripts = [asset("uPlot.iife.min.js"), asset("report.js")]
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hashes(scripts)}",
            f"style-src {_hashes(styles)}",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    body = "".join(
        (
            _header(report),
            _summary(report),
            *(_target(report.buckets, index, t) for index, t in enumerate(report.targets)),
            _audit(report),
        )
    )
    return "".join(
        (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n',
            '<meta name="referrer" content="no-referrer">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            f"<title>fpmon report, {_e(_when(report.generated_at))}</title>\n",
            *(f"<style>{style}</style>\n" for style in styles),
            "</head>\n<body>\n",
            body,
            '<div id="tooltip" role="status" hidden></div>\n',
            '<script type="application/json" id="report-data">',
            _json(_chart_data(report)),
            "</script>\n",
            *(f"<script>{script}</script>\n" for script in scripts),
            "</body>\n</html>\n",
        )
    )


def _hashes(blocks: Iterable[str]) -> str:
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
    )


def _json(data: Any) -> str:
    # Inside <script>, `</script>` or `<!--` in a value would end the block: escape < > &.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _when(moment: datetime | None, seconds: bool = False) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


@functools.lru_cache(maxsize=4096)  # every target's tables name the same bucket edges
def _edge(buckets: Buckets, index: int) -> str:
    return _when(buckets.edge(index), seconds=buckets.size < 60)


# A share table names the same few values in every bucket: tens of thousands of calls on a
# large history, each cleaning the value character by character (benchmarks/report.py).
@functools.lru_cache(maxsize=4096)
def _value(token: str) -> str:
    return f'<span class="value">{_e(show_value(token))}</span>'


def _values(tokens: Iterable[str], locked: Iterable[str] = ()) -> str:
    marked = set(locked)
    shown = [_value(t) + (" (lock)" if t in marked else "") for t in tokens]
    return ", ".join(shown) if shown else "-"


def _status(status: str | None) -> str:
    if status is None:
        return "-"
    return f'<span class="status-{_e(status)}">{_e(status)}</span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table of already escaped cells; a header ending in '#' is a number column."""
    head = "".join(
        f'<th class="num">{h[:-1]}</th>' if h.endswith("#") else f"<th>{h}</th>" for h in headers
    )
    numeric = [h.endswith("#") for h in headers]
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if n else f"<td>{c}</td>"
            for c, n in zip(row, numeric, strict=True)
        )
        + "</tr>\n"
        for row in rows
    )
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def _header(report: Report) -> str:
    b = report.buckets
    sources = ", ".join(sorted(s.value for s in report.sources))
    return (
        "<header>\n<h1>fpmon report</h1>\n"
        f'<p class="lead">From {_edge(b, 0)} to {_edge(b, b.count)}, '
        f"{show_duration_seconds(b.size)} per bucket; "
        f"{plural(len(report.targets), 'target')}; observations of: {_e(sources)}.</p>\n"
        "</header>\n"
    )


def show_duration_seconds(seconds: int) -> str:
    return show_duration(timedelta(seconds=seconds))


def _summary(report: Report) -> str:
    rows = []
    for index, t in enumerate(report.targets):
        lock = t.lock.fingerprints if t.lock else frozenset()
        rows.append(
            (
                f'<a href="#target-{index}">{_e(t.name)}</a>',
                _status(t.status),
                _values((b.value for b in t.of(BandKind.FINGERPRINT)), lock),
                _values(b.value for b in t.of(BandKind.MODEL)),
                _values(sorted(lock)) if t.lock else "no entry",
                str(t.checks),
                str(t.observations),
                str(t.failed),
                str(t.new_events),
                _e(_when(t.last_change_at, seconds=report.buckets.size < 60)),
            )
        )
    table = _table(
        (
            "target",
            "status",
            "fingerprints",
            "models",
            "lock",
            "checks#",
            "samples#",
            "failed#",
            "new#",
            "last changed",
        ),
        rows,
        css="summary",
    )
    idle = (
        f'<p class="note">No check in this range: {_e(", ".join(report.idle))}.</p>\n'
        if report.idle
        else ""
    )
    empty = "" if report.targets else '<p class="note">No check in this range.</p>\n'
    shown = table if rows else ""
    return f'<section id="summary">\n<h2>Summary</h2>\n{empty}{shown}{idle}</section>\n'


def _target(buckets: Buckets, index: int, t: TargetReport) -> str:
    learning = ""
    if t.learning is not None:
        until = "still learning" if t.learning.end is None else f"to {_when(t.learning.end, True)}"
        learning = (
            f" Learning its served set from {_when(t.learning.start, True)} {until} (shaded)."
        )
    facts = (
        f'<p class="lead">Latest status {_status(t.status)}; {plural(t.checks, "check")} '
        f"({t.successful_checks} succeeded), {plural(t.observations, 'sample')}, "
        f"{t.failed} failed.{_e(learning)}</p>\n"
    )
    return (
        f'<section class="target" id="target-{index}">\n<h2>{_e(t.name)}</h2>\n{facts}'
        f"{_timeline(buckets, index, t)}{_shares(buckets, index, t)}"
        f"{_changes(t)}{_errors(buckets, t)}</section>\n"
    )


def _swatch(band: Band, index: int) -> str:
    colour, pattern = _look(band, index)
    return f'<span class="swatch c{colour} p{pattern}" aria-hidden="true"></span>'


def _look(band: Band, index: int) -> tuple[str, int]:
    """(colour class, pattern) of the index-th band of its kind: colour and pattern both
    change from one value to the next, so no value is told from another by colour alone."""
    colour = "err" if band.kind is BandKind.ERROR else str(index % PALETTE_SIZE)
    return colour, index % PATTERNS


def _legend(bands: Sequence[Band]) -> str:
    items = "".join(
        f"<li>{_swatch(b, i)}{_e(KIND_TITLES[b.kind])} {_value(b.value)}"
        f"{' (lock)' if b.locked else ''}</li>"
        for i, b in enumerate(bands)
    )
    return f'<ul class="legend">{items}</ul>\n'


def _timeline(buckets: Buckets, index: int, t: TargetReport) -> str:
    rows = []
    for band in t.bands:
        runs = band.runs()
        for run in runs[-RUN_LIMIT:]:
            rows.append(
                (
                    _e(KIND_TITLES[band.kind]),
                    _value(band.value) + (" (lock)" if band.locked else ""),
                    _e(_edge(buckets, run.first)),
                    _e(_edge(buckets, run.last + 1)),
                    # A signature band counts the checks that matched it (report_queries).
                    plural(run.samples, "check")
                    if band.kind is BandKind.SIGNATURE
                    else str(run.samples),
                )
            )
        if len(runs) > RUN_LIMIT:
            rows.append(("", _e(f"and {len(runs) - RUN_LIMIT} earlier stretches"), "", "", ""))
    table = _table(("kind", "value", "from", "to", "samples#"), rows)
    kinds = [KIND_TITLES[k] for k in BandKind if t.of(k)]
    caption = f"What was served: one band per {', '.join(kinds) or 'value'}"
    return (
        f"<figure>\n<figcaption>{_e(caption)}; ▼ marks a change event, grey a bucket "
        "with no check</figcaption>\n"
        f'<div class="chart timeline" id="timeline-{index}"></div>\n'
        f"<details><summary>The timeline as a table: when each value was served</summary>\n"
        f"{table}</details>\n</figure>\n"
    )


def _shares(buckets: Buckets, index: int, t: TargetReport) -> str:
    values = t.of(BandKind.FINGERPRINT)
    rows = []
    for i in range(buckets.count):
        if t.ok[i]:
            shares = ", ".join(
                f"{_value(band.value)} {band.counts[i] / t.ok[i]:.1%}"
                for band in values
                if band.counts[i]
            )
            rows.append((_e(_edge(buckets, i)), str(t.ok[i]), shares))
    return (
        "<figure>\n<figcaption>Share of each fingerprint in the successful samples of each "
        "bucket</figcaption>\n"
        f'<div class="chart share" id="share-{index}"></div>\n{_legend(values)}'
        "<details><summary>The shares as a table, bucket by bucket</summary>\n"
        f"{_table(('bucket from', 'samples#', 'fingerprints served'), rows)}</details>\n"
        "</figure>\n"
    )


def _changes(t: TargetReport) -> str:
    if not t.change_count:
        return '<h3>Change events</h3>\n<p class="note">None in this range.</p>\n'
    rows = []
    for event in t.changes:
        when = _e(_when(event.checked_at, seconds=True))
        status = _status(event.status)
        source = _e(event.source.value)
        if not event.changes:
            rows.append((when, status, source, "-", "-", _e(_no_diff(event.status)), "-"))
        for change in event.changes:
            rows.append(
                (
                    when,
                    status,
                    source,
                    _e(change.field),
                    _e(show_values(change.before)),
                    _e(show_values(change.now)),
                    _e(_when(change.before_first_seen)),
                )
            )
    more = (
        f'<p class="note">The newest {CHANGE_LIMIT} of {t.change_count} change events; '
        "`fpmon history` lists every run.</p>\n"
        if t.change_count > len(t.changes)
        else ""
    )
    table = _table(
        ("checked at", "status", "source", "field", "before", "now", "before first seen"), rows
    )
    return f"<h3>Change events</h3>\n{table}{more}"


def _no_diff(status: str) -> str:
    return "the values became known" if status == Status.FIRST.value else "no diff"


def _errors(buckets: Buckets, t: TargetReport) -> str:
    periods = error_periods(buckets, t.of(BandKind.ERROR))
    if not periods:
        return '<h3>Error periods</h3>\n<p class="note">No failed sample in this range.</p>\n'
    rows = [
        (
            _e(_when(p.start, buckets.size < 60)),
            _e(_when(p.end, buckets.size < 60)),
            str(p.failed),
            _e(", ".join(f"{kind} {count}" for kind, count in p.kinds)),
        )
        for p in periods
    ]
    return "<h3>Error periods</h3>\n" + _table(("from", "to", "failed#", "kinds"), rows)


def _audit(report: Report) -> str:
    chain = report.chain
    if chain is None:
        verdict = "not verified for this report (--no-verify): run `fpmon verify`"
        head = "-"
    elif chain.broken:
        verdict = f'<span class="broken">BROKEN: {_e(chain.broken)}</span>'
        head = f"record {chain.head_id}, hash {chain.head_hash} (the last that verified)"
    else:
        verdict = (
            f'<span class="intact">intact</span>: {plural(chain.records, "record")} verified'
            + (f", {plural(chain.checkpoints, 'checkpoint')}" if chain.checkpoints else "")
        )
        head = f"record {chain.head_id}, hash {chain.head_hash}"
    items = (
        ("verify", verdict),
        ("chain head", f'<span class="value">{_e(head)}</span>'),
        ("records in the history", str(report.records)),
        ("range", _e(f"since {_when(report.since)}, until {_when(report.until)}")),
        ("made at", _e(_when(report.generated_at, seconds=True))),
        ("made by", _e(f"fpmon {report.version}; charts by uPlot {UPLOT_VERSION} (MIT)")),
    )
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>\n" for k, v in items)
    return f'<section id="audit">\n<h2>Audit</h2>\n<dl class="audit">\n{rows}</dl>\n</section>\n'


def _chart_data(report: Report) -> dict[str, Any]:
    b = report.buckets
    return {
        "buckets": {"start": int(b.start.timestamp()), "size": b.size, "count": b.count},
        "targets": [
            {
                "name": t.name,
                "ok": list(t.ok),
                "bands": [_band_data(band, t) for band in t.bands],
                "learning": None
                if t.learning is None
                else [
                    t.learning.start.timestamp(),
                    None if t.learning.end is None else t.learning.end.timestamp(),
                ],
                "changes": [e.checked_at.timestamp() for e in t.changes],
            }
            for t in report.targets
        ],
    }


def _band_data(band: Band, target: TargetReport) -> dict[str, Any]:
    index = target.of(band.kind).index(band)
    colour, pattern = _look(band, index)
    shown = show_value(band.value)
    axis = shown if len(shown) <= _AXIS_LIMIT else shown[: _AXIS_LIMIT - 1] + "…"
    return {
        "kind": KIND_TITLES[band.kind],
        "value": shown,
        "label": f"{KIND_TITLES[band.kind]} {shown}",
        "axis": f"{KIND_AXIS[band.kind]}: {axis}" + (" (lock)" if band.locked else ""),
        "counts": list(band.counts),
        "locked": band.locked,
        "colour": colour if colour == "err" else int(colour),
        "pattern": pattern,
    }


def report_line(path: str, report: Report) -> str:
    """What `fpmon report` prints once the file is written."""
    b = report.buckets
    verified = (
        "chain not verified (--no-verify)"
        if report.chain is None
        else f"chain broken: {report.chain.broken}"
        if report.chain.broken
        else f"chain intact ({plural(report.chain.records, 'record')})"
    )
    return (
        f"wrote {path}: {plural(len(report.targets), 'target')} from {_edge(b, 0)} to "
        f"{_edge(b, b.count)}, {show_duration_seconds(b.size)} per bucket; {verified}"
    )
