"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from fp_monitor.domain.errors import ConfigError


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


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, a file that `write_atomic` could not write: a directory, a
    path under a file, or a directory that takes no new file (read-only, /proc, no permission).
    The test is the real one: a temporary file made and removed where the file's directory is,
    or its nearest existing parent when `write_atomic` would make the directory."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; name a file, like {path / 'report'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a directory")
    try:
        fd, temp = tempfile.mkstemp(dir=parent, prefix=".fpmon-", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {parent}: {exc.strerror}") from None
    os.close(fd)
    Path(temp).unlink()
