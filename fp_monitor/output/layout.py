"""Tables that stay readable at any width, and piped output without trailing blanks.

Rich shrinks a table that does not fit by cutting its cells with an ellipsis, so that on a
narrow terminal a fingerprint or a resolved model (the very values fpmon tracks) is cut to a few
characters. `Fitted` decides at render time, from the width it is given: the table as it is when
it fits; the table with its cells wrapped between words when every word still fits (a value is
one word: it moves to the next line, it is never cut); otherwise one `key: value` block per row.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import IO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

_UNBOUNDED = 1_000_000


class Fitted:
    """A rich Table shown whole, wrapped between words, or as records: never a cut value."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.layout(console, options))

    def layout(self, console: Console, options: ConsoleOptions) -> RenderableType:
        """The table with widths that fit `options.max_width`, or its records."""
        table = self.table
        wide = options.update(max_width=_UNBOUNDED)
        columns = [
            [_widths(console, wide, cell) for cell in _column_cells(table, i)]
            for i in range(len(table.columns))
        ]
        natural = [max((most for _, most in c), default=0) for c in columns]
        # A column that must not wrap (a timeline row) needs its whole width or a record.
        least = [
            n if column.no_wrap else max((fewest for fewest, _ in c), default=0)
            for n, c, column in zip(natural, columns, table.columns, strict=True)
        ]
        # What the table adds around its cells: padding, and the separators between columns
        # (rich's own arithmetic, as its Table measures itself).
        chrome = table._extra_width + sum(
            table._get_padding_width(i) for i in range(len(table.columns))
        )
        room = options.max_width - chrome
        if sum(natural) <= room:
            return _with_widths(table, [None] * len(natural))
        if sum(least) > room:
            return records(table)
        # Every word fits: give each column its longest word, and share what is left in
        # proportion to how much more each column would take to show its cells on one line.
        spare = room - sum(least)
        wants = [n - m for n, m in zip(natural, least, strict=True)]
        total = sum(wants) or 1
        widths = [m + spare * w // total for m, w in zip(least, wants, strict=True)]
        return _with_widths(table, widths)


def _widths(console: Console, options: ConsoleOptions, cell: RenderableType) -> tuple[int, int]:
    """(its longest word, its longest line): the narrowest a cell can be without cutting a
    word, and its width on one line. Counted directly for text, which every fpmon cell is:
    a table of thousands of rows is measured once more, so this must be quick."""
    if isinstance(cell, Text):
        plain = cell.plain
        longest_line = max((cell_len(line) for line in plain.splitlines()), default=0)
        return max((cell_len(word) for word in plain.split()), default=0), longest_line
    measured = Measurement.get(console, options, cell)
    return measured.minimum, measured.maximum


def _column_cells(table: Table, index: int) -> Iterator[RenderableType]:
    column = table.columns[index]
    if table.show_header:
        yield Text(str(column.header))
    yield from column.cells


def _with_widths(table: Table, widths: Sequence[int | None]) -> Table:
    """`table` with these column widths (None: as wide as its cells); a value that is one long
    word folds onto the next line rather than being cut."""
    for column, width in zip(table.columns, widths, strict=True):
        column.width = width
        column.overflow = "fold"
    return table


def records(table: Table) -> RenderableType:
    """One block per row, `header: cell` per line (the cell alone when the table has no
    header; nothing for an empty cell), blocks apart by a blank line, under the table's
    title."""
    parts: list[RenderableType] = []
    if table.title:
        parts.append(Text(str(table.title)))
    headers = [str(c.header) for c in table.columns]
    rows = zip(*(list(c.cells) for c in table.columns), strict=True)
    for number, row in enumerate(rows):
        if number or table.title:
            parts.append(Text(""))
        for header, cell in zip(headers, row, strict=True):
            value = cell if isinstance(cell, Text) else Text(str(cell))
            if not value.plain:
                continue
            line = value.copy() if not table.show_header else Text(f"{header}: ").append(value)
            line.overflow = "fold"
            parts.append(line)
    return Group(*parts)


class TrimmedLines(io.TextIOBase):
    """A text stream that drops the blanks at the end of each line before passing it on: rich
    pads every table cell to its column's width, which piped output (a file, grep, a diff)
    should not carry."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self.stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        # A line not yet ended goes out as it is: what follows may still belong to it.
        if self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()
