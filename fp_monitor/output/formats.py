"""The data formats every reading command shares: one JSON document, JSON lines, CSV and a
markdown table. A command's records are the same objects, with the same field names, in each:
the JSON document holds them in a list beside its metadata, JSON lines and CSV hold one record a
line or row, and markdown is the command's table in markdown syntax.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.table import Table
from rich.text import Text

from fp_monitor.domain.text import clean

_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
"""How a CSV cell that a spreadsheet would evaluate starts (OWASP, CSV injection)."""


def print_document(
    output_format: str,
    document: Mapping[str, Any],
    key: str,
    fields: Sequence[str],
    stdout: IO[str],
) -> None:
    """json: `document` whole; jsonl: one object per line, the records of `document[key]`;
    csv: a header row of `fields`, then one row per record, lists and objects as JSON text (so
    null, "" and "<absent>" stay distinct)."""
    if output_format == "json":
        stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
        stdout.write("\n")
    elif output_format == "jsonl":
        for record in document[key]:
            stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif output_format == "csv":
        # RFC 4180's CRLF: with it, the csv module also quotes a cell holding a lone CR,
        # which a reader would otherwise take for the end of the row.
        writer = csv.DictWriter(stdout, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        for record in document[key]:
            writer.writerow({k: csv_cell(v) for k, v in record.items()})
    else:
        raise ValueError(f"not a data format: {output_format!r}")


def csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA_LEADS):
        # A spreadsheet runs such a cell as a formula; OWASP's leading quote keeps it text.
        return "'" + value
    return "" if value is None else value


def markdown_table(table: Table, level: int = 3) -> str:
    """A rich table's header and cells as a markdown table (GitHub's flavour), under its title
    as a heading of this level."""
    headers = [str(column.header) for column in table.columns]
    rows = zip(*(list(column.cells) for column in table.columns), strict=True)
    lines = [
        "| " + " | ".join(markdown_cell(h) for h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for row in rows:
        cells = [cell.plain if isinstance(cell, Text) else str(cell) for cell in row]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    title = [f"{'#' * level} {markdown_cell(str(table.title))}", ""] if table.title else []
    return "\n".join([*title, *lines]) + "\n"


def markdown_cell(text: str) -> str:
    """A table cell: pipes escaped, and no HTML (<null> would vanish as an unknown tag)."""
    escaped = clean(text).replace("&", "&amp;").replace("<", "&lt;")  # no tag can open
    return escaped.replace("|", "\\|").replace("`", "'")
