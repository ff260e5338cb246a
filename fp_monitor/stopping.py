"""How fpmon's long-running commands (watch, proxy, otlp, fake-api) hear that they should stop:
SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C) go to one handler while a block runs, and the
handlers that were there before come back after it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

Handler = Callable[[int, FrameType | None], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_stop(handler: Handler) -> Iterator[None]:
    """`handler` receives SIGINT and SIGTERM inside the block. Off the main thread, which
    receives no signals, the block runs with the handlers as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
