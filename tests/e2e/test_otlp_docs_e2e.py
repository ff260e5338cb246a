"""Every example of docs/how-to/otlp.md works: the TOML is a valid configuration, the shell
lines and the systemd unit's ExecStart start `fpmon otlp`, the Collector's YAML sends both
pipelines to it, the Python runs, and the /status JSON has the keys a running receiver
answers with."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import yaml

from fp_monitor.config.settings import load_config
from tests.conftest import FPMON

DOC = Path(__file__).parents[2] / "docs" / "how-to" / "otlp.md"


def blocks(language: str) -> list[str]:
    found = re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.S | re.M)
    assert found, f"no {language} example in {DOC}"
    return found


@pytest.fixture
def doc_config(isolated: Path) -> Path:
    (toml,) = blocks("toml")
    path = isolated / "fpmon.toml"
    path.write_text(toml)
    return path


def start(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`fpmon otlp ...` on a free port; the process and its URL once it is ready."""
    assert FPMON is not None and args[:2] == ["fpmon", "otlp"], args
    process = subprocess.Popen(
        [FPMON, *args[1:], "--listen", "127.0.0.1:0"],  # the last --listen wins
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "FPMON_HISTORY": str(cwd / "history.db"), **env},
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    if not banner.startswith("fpmon otlp: http://"):
        process.kill()
        pytest.fail(f"{shlex.join(args)} did not start: {banner}{process.communicate()[1]}")
    return process, banner.split()[2]


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_the_toml_is_a_valid_configuration(doc_config: Path) -> None:
    loaded = load_config(doc_config)
    assert [t.name for t in loaded.targets] == ["shop-prod", "local-llama"]
    assert loaded.otlp_auto_targets is True


def test_each_shell_line_starts_the_receiver(doc_config: Path) -> None:
    lines = [line for block in blocks("shell") for line in block.splitlines() if line.strip()]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)
        env = {}
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        process, _ = start(words, doc_config.parent, env)
        stop(process)


def test_the_systemd_unit_starts_the_receiver_with_its_token(doc_config: Path) -> None:
    (unit,) = blocks("ini")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit)
    words = shlex.split(parser["Service"]["ExecStart"])
    assert words[0].endswith("/fpmon")
    words[0] = "fpmon"
    words[words.index("--config") + 1] = str(doc_config)
    token = "doc-token-123"
    process, url = start(words, doc_config.parent, {"FPMON_OTLP_TOKEN": token})
    with httpx2.Client(trust_env=False) as http:
        assert http.get(url + "/status").status_code == 401
        assert http.get(url + "/status", headers={"authorization": f"Bearer {token}"}).is_success
    stop(process)
    assert parser["Service"]["RestartPreventExitStatus"] == "2"


def test_the_collector_sends_both_pipelines_to_fpmon() -> None:
    (text,) = blocks("yaml")
    collector = yaml.safe_load(text)
    fpmon = collector["exporters"]["otlphttp/fpmon"]
    assert fpmon["endpoint"] == "http://127.0.0.1:4318" and fpmon["compression"] == "gzip"
    for pipeline in ("traces", "metrics"):
        exporters = collector["service"]["pipelines"][pipeline]["exporters"]
        assert exporters == ["otlphttp/tracing", "otlphttp/fpmon"]
    # the Collector's own receiver leaves fpmon's default port free
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] != "127.0.0.1:4318"


def test_the_python_example_runs(isolated: Path) -> None:
    (code,) = blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=isolated,
        env={**os.environ, "OPENAI_API_KEY": "sk-unused"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_status_example_has_the_keys_of_a_real_status(doc_config: Path) -> None:
    (text,) = blocks("json")
    documented = json.loads(text)
    process, url = start(["fpmon", "otlp"], doc_config.parent, {})
    with httpx2.Client(trust_env=False) as http:
        real = http.get(url + "/status").json()
    stop(process)
    assert set(documented) == set(real) and documented["version"] == real["version"]
    assert set(documented["unmatched"][0]) == {"host", "model", "count"}
