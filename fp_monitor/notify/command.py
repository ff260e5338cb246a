"""The `command` kind: a program run without a shell, the event on its stdin and in FPMON_*
variables, without the providers' keys in its environment."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping

from fp_monitor.config.settings import (
    Command,
)
from fp_monitor.domain.errors import NotifyError
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import redact
from fp_monitor.notify.events import Notification
from fp_monitor.notify.payload import env_values, payload


def send(command: Command, notification: Notification, environ: Mapping[str, str]) -> None:
    target = notification.target
    env = {
        **environ,
        "FPMON_EVENT": notification.event.value,
        "FPMON_TARGET": clean(target.name),
        "FPMON_STATUS": target.status.value,
        "FPMON_BEFORE": env_values(target.previous),
        "FPMON_NOW": env_values(target.fingerprints),
    }
    program = command.run[0]
    try:
        proc = subprocess.run(
            command.run,
            input=json.dumps(payload(notification)).encode(),
            env=env,
            capture_output=True,
            timeout=command.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NotifyError(
            f"notify {command.name}: {program} did not finish within {command.timeout:g}s "
            "and was stopped"
        ) from None
    except OSError as exc:
        raise NotifyError(
            f"notify {command.name}: cannot run {program}: {exc.strerror or exc}"
        ) from None
    if proc.returncode != 0:
        said = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line]
        last = f": {redact(clean(said[-1]))[:300]}" if said else ""
        raise NotifyError(
            f"notify {command.name}: {program} exited with status {proc.returncode}{last}"
        )
