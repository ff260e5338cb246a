"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    with open_atomic(path, mode=mode) as handle:
        handle.write(text)


@contextmanager
def open_atomic(path: Path, *, mode: int = 0o644) -> Iterator[TextIO]:
    """A text handle whose content replaces `path` when the block ends without an error, for
    files too large to build in memory first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
