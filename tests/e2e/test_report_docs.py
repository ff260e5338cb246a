"""docs/report.md's console examples run, in order, in a scratch directory against the fake
API on loopback (the docs site's own runner, tests/docs in the docs branch, does the same for
every page once merged); its bash blocks marked not-run pass `bash -n`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "report.md"
BIN = str(Path(sys.executable).parent)


def fenced(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", PAGE.read_text(), flags=re.M | re.S)


def commands(block: str) -> list[str]:
    """The `$ ` lines of a console block, each with its here-document."""
    found: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if not line.startswith("$ "):
            continue
        command = [line[2:]]
        if heredoc := re.search(r"<<\s*'?(\w+)'?", line):
            while i < len(lines):
                command.append(lines[i])
                i += 1
                if command[-1] == heredoc.group(1):
                    break
        found.append("\n".join(command))
    return found


def test_the_console_examples_run(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in fenced("console"):
        for command in commands(block):
            script.append(command.replace("8787", port))
            if command.endswith("&"):
                script.append(
                    f"for _ in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:{port}/ "
                    "&& break; sleep 0.05; done"
                )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPMON_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", HOME=str(tmp_path), NO_COLOR="1")
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"))
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in out + err and "internal error" not in out + err
    for page in ("report.html", "grok.html", "probes.html"):
        assert "uPlot" in (tmp_path / page).read_text(), page


def test_the_other_shell_examples_parse() -> None:
    blocks = fenced("bash")
    assert blocks
    for block in blocks:
        checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
