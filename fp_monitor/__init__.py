"""fpmon: monitor the backend fingerprints (system_fingerprint) of OpenAI-compatible LLM APIs.

The Python API (see README, "Your own traffic"): `recording_client`, `recording_async_client`,
`check_response`, `UnexpectedFingerprint`, `UnexpectedFingerprintWarning`. They are imported
on first use, so that `import fp_monitor` (and the command line) stays quick.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs start-up that `fpmon --version` need not pay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fp_monitor.domain.errors import UnexpectedFingerprint
    from fp_monitor.traffic.recording import (
        UnexpectedFingerprintWarning,
        check_response,
        recording_async_client,
        recording_client,
    )

__version__ = "0.1.0"
__all__ = [
    "UnexpectedFingerprint",
    "UnexpectedFingerprintWarning",
    "__version__",
    "check_response",
    "recording_async_client",
    "recording_client",
]
_LAZY = {
    "UnexpectedFingerprint": "fp_monitor.domain.errors",
    "UnexpectedFingerprintWarning": "fp_monitor.traffic.recording",
    "check_response": "fp_monitor.traffic.recording",
    "recording_async_client": "fp_monitor.traffic.recording",
    "recording_client": "fp_monitor.traffic.recording",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fp_monitor' has no attribute {name!r}")
