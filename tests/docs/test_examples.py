"""Every example in the documentation works: a TOML or JSON block parses (a configuration is
loaded by fpmon itself, a fake API fleet file is served), a Python block compiles, every shell
example passes `bash -n`, and the shell examples of each page run for real, in order, in a
scratch directory, against the fake API on loopback.

A shell block that cannot run here (it installs a service, commits to git, needs a provider key
or runs until stopped) carries `<!-- not-run: reason -->` right before its fence; it is still
syntax-checked. In the examples that run:

- a port 87xx (`fpmon fake-api --port 8787 &`) is replaced by a free port, and a command started
  in the background is waited for until its port answers;
- `CMD; echo $?   # N` checks that CMD exits N; any other command must exit 0;
- nothing may print a traceback, an internal error or "command not found".
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.docs.markdown import ROOT, SHELL, Block, all_blocks, blocks, commands, pages

BIN = str(Path(sys.executable).parent)


def _ids(found: list[Block]) -> list[str]:
    return [b.where for b in found]


TOML = all_blocks("toml")
JSON = all_blocks("json")
PYTHON = all_blocks("python")
SHELL_BLOCKS = all_blocks(*SHELL)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("FPMON_") and k != "NO_COLOR"
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp),
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
        XDG_DATA_HOME=str(tmp / "xdg-data"),
        NO_COLOR="1",
        COLUMNS="120",
    )
    env.update(extra)
    return env


# --- TOML -----------------------------------------------------------------------------------


def _fpmon(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["fpmon", *args],
        cwd=tmp,
        env=env or _env(tmp),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _as_config(data: dict[str, Any]) -> dict[str, Any] | None:
    """A block that is (part of) an fpmon.toml, completed with the targets its notifiers name;
    None for another kind of TOML."""
    if "version" in data or "models" in data or "default" in data or "api_keys_env" in data:
        return None
    if not set(data) & {"targets", "defaults", "notify", "fingerprint_formats"}:
        return None
    if "targets" in data:
        return data
    named = {t for table in data.get("notify", {}).values() for t in table.get("targets", [])}
    targets = {
        name: {"provider": "custom", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
        for name in named or {"example"}
    }
    return {**data, "targets": targets}


def _toml_text(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


@pytest.mark.parametrize("block", TOML, ids=_ids(TOML))
def test_toml_example(block: Block, tmp_path: Path) -> None:
    data = tomllib.loads(block.text)
    if "version" in data:  # a lock file
        assert data["version"] == 1, block.where
        assert isinstance(data.get("targets"), dict), block.where
        return
    if {"models", "default", "api_keys_env"} & set(data):  # a fake API fleet file
        _serve_fleet(block, tmp_path, data)
        return
    config = _as_config(data)
    assert config is not None, f"{block.where}: neither a config, a lock nor a fleet file"
    path = tmp_path / "fpmon.toml"
    path.write_text(block.text if config is data else _toml_text(config))
    keys = {
        t["api_key_env"]: "sk-docs-test" for t in config["targets"].values() if "api_key_env" in t
    }
    proc = _fpmon(tmp_path, "targets", "--config", str(path), "--json", env=_env(tmp_path, **keys))
    assert proc.returncode == 0, f"{block.where}: {proc.stderr}"
    loaded = json.loads(proc.stdout)
    assert {t["name"] for t in loaded["targets"]} == set(config["targets"]), block.where


def _serve_fleet(block: Block, tmp: Path, data: dict[str, Any]) -> None:
    path = tmp / "fleet.toml"
    path.write_text(block.text)
    env = _env(tmp, **{name: "fake-key" for name in data.get("api_keys_env", [])})
    proc = subprocess.Popen(
        ["fpmon", "fake-api", "--config", str(path)],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake API serving on "), f"{block.where}: {line}"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, f"{block.where}: {err}"


# --- JSON and Python --------------------------------------------------------------------------


@pytest.mark.parametrize("block", JSON, ids=_ids(JSON))
def test_json_example_parses(block: Block) -> None:
    json.loads(block.text)


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_python_example_compiles(block: Block) -> None:
    compile(block.text, block.where, "exec")


def test_readme_check_json_is_the_reference_one() -> None:
    """tests/test_render.py checks `check --json` against the README's example; the reference
    page shows the same document."""
    readme = [b.text for b in blocks(ROOT / "README.md") if b.lang == "json"]
    reference = [
        b.text for b in blocks(ROOT / "docs" / "reference" / "json.md") if b.lang == "json"
    ]
    assert readme and readme[0] == reference[0]


# --- shell ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=_ids(SHELL_BLOCKS))
def test_shell_example_syntax(block: Block) -> None:
    script = commands(block)
    assert script.strip(), f"{block.where}: a shell block with no command"
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, f"{block.where}: {proc.stderr}"


def test_few_examples_are_not_run() -> None:
    skipped = [b for b in SHELL_BLOCKS if b.not_run]
    assert len(skipped) <= len(SHELL_BLOCKS) // 2, [b.where for b in skipped]


_EXIT = re.compile(r"^(?P<cmd>.*\S)\s*;\s*echo \$\?\s*(?:#\s*(?P<code>\d+)\b.*)?$")
_BAD = ("Traceback", "internal error", "command not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def page_script(page: Path) -> tuple[str, list[int | None]]:
    """The runnable shell examples of `page` as one bash script, and the exit codes its
    `; echo $?  # N` lines expect, in order."""
    ports: dict[str, str] = {}
    expected: list[int | None] = []
    out = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in blocks(page):
        if block.lang not in SHELL or block.not_run:
            continue
        out.append(f"# --- {block.where}")
        script = commands(block)
        for port in sorted(set(re.findall(r"\b87\d\d\b", script))):
            ports.setdefault(port, str(_free_port()))
        for port, free in ports.items():
            script = re.sub(rf"\b{port}\b", free, script)
        for line in script.splitlines():
            match = _EXIT.match(line)
            if match:
                code = match.group("code")
                expected.append(int(code) if code is not None else None)
                line = f'{{ {match["cmd"]}; }} && echo "docs-exit=0" || echo "docs-exit=$?"'
            out.append(line)
            if line.rstrip().endswith("&"):
                for free in ports.values():
                    if free in line:
                        out.append(
                            f"for _ in $(seq 300); do curl -s -o /dev/null "
                            f"http://127.0.0.1:{free}/ && break; sleep 0.05; done"
                        )
    return "\n".join(out) + "\n", expected


RUNNABLE = [p for p in pages() if any(b.lang in SHELL and not b.not_run for b in blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_shell_examples_run(page: Path, tmp_path: Path) -> None:
    script, expected = page_script(page)
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{page.name}: timed out\n{out}\n{err}")
    shown = f"\n--- script\n{script}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert proc.returncode == 0, f"{page.name}: exit {proc.returncode}{shown}"
    for bad in _BAD:
        assert bad not in out + err, f"{page.name}: {bad!r}{shown}"
    codes = [int(c) for c in re.findall(r"^docs-exit=(\d+)$", out, re.M)]
    assert len(codes) == len(expected), shown
    for got, want in zip(codes, expected, strict=True):
        if want is not None:
            assert got == want, f"{page.name}: exit {got}, the page says {want}{shown}"
