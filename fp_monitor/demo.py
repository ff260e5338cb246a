"""`fpmon demo`: the real check pipeline against the built-in fake API, in a temporary
directory, showing first / same / new / changed with a line on what each means."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config import Config, Target
from fp_monitor.errors import ExitCode
from fp_monitor.fake_api import FakeAPI, ModelBehaviour
from fp_monitor.providers import PRESETS
from fp_monitor.render import STATUS_MEANING, render_check

MODEL = "demo-model"
RESOLVED = "demo-model-2026-11-01"
SERVED: list[str | None] = ["fp_4f1c2a9e07", "fp_b83d5e6a10"]
ROLLOUT = "fp_e9917c3b55"

# (what happens at the provider, the set the fake serves from then on)
STEPS: tuple[tuple[str, list[str | None]], ...] = (
    ("A first check: fpmon records the set of fingerprints the backend serves.", SERVED),
    ("The same backend again.", SERVED),
    ("The provider rolls out a new backend configuration.", [ROLLOUT]),
    ("Traffic moves back to configurations seen before.", SERVED[:1]),
)


def run_demo(console: Console) -> int:
    """Run the four checks and explain them; exits 0 (the alarm in step 3 is the point)."""
    with tempfile.TemporaryDirectory(prefix="fpmon-demo-") as tmp:
        fake = FakeAPI({MODEL: ModelBehaviour(fingerprints=SERVED, resolved_model=RESOLVED)})
        with fake:
            config = _demo_config(fake.base_url, Path(tmp))
            console.print(
                Text(
                    f"fpmon demo: a fake OpenAI-compatible API at {fake.base_url}, "
                    f"a history in {tmp}",
                    style="dim",
                )
            )
            for number, (story, served) in enumerate(STEPS, start=1):
                fake.rotate(MODEL, served)
                console.print()
                console.print(Text(f"{number}. {story}  $ fpmon check", style="bold"))
                result = run_check(config, [], CheckOptions())
                render_check(console, result)
                status = result.targets[0].status
                console.print(
                    Text(
                        f"-> {status.value}: {STATUS_MEANING[status]} "
                        f"(exit code {int(result.exit_code)})"
                    )
                )
    console.print()
    console.print(
        "Next: `fpmon init` writes fpmon.toml for the provider keys in your environment; "
        "`fpmon check` probes them. `fpmon fake-api` serves this fake API for rehearsals."
    )
    return ExitCode.OK


def _demo_config(base_url: str, directory: Path) -> Config:
    preset = PRESETS["custom"]
    target = Target(
        name="demo",
        provider="custom",
        model=MODEL,
        base_url=base_url,
        auth=preset.auth,
        api_key_env=None,
        token_param=preset.token_param,
        samples=4,
        retries=0,
        timeout=10.0,
    )
    return Config(
        targets=(target,),
        source=None,
        history=directory / "history.db",
        baseline=directory / "fpmon.lock",
    )
