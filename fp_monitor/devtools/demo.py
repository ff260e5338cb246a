"""`fpmon demo`: the real check pipeline against the built-in fake API, in a temporary
directory, showing first / learned / same / new / changed / drift with a line on what each
means."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

from fp_monitor.check import CheckOptions, run_check
from fp_monitor.config.providers import PRESETS
from fp_monitor.config.settings import CANARY_PROMPT, Config, Target
from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from fp_monitor.domain.canary import CanaryMode
from fp_monitor.domain.errors import ExitCode
from fp_monitor.domain.learning import LearningSettings
from fp_monitor.output.render import STATUS_MEANING, render_check

MODEL = "demo-model"
RESOLVED = "demo-model-2026-11-01"
COMMON, SECOND, RARE = "fp_4f1c2a9e07", "fp_b83d5e6a10", "fp_71d0c9e2aa"
ROLLOUT = "fp_e9917c3b55"
# Small numbers so the story fits in six checks; the story says what the defaults are.
LEARNING = LearningSettings(bootstrap_samples=8, min_samples=12, learning_samples=4)
DEFAULTS = LearningSettings()
SILENT_CHANGE = 30.0
"""The last step's perturbation of the served configuration, in multiples of its noise."""


def _fleet(fingerprints: list[str | None], weights: list[float] | None = None) -> ModelBehaviour:
    return ModelBehaviour(fingerprints=fingerprints, weights=weights, resolved_model=RESOLVED)


# (what happens at the provider, what the fake API serves from then on)
STEPS: tuple[tuple[str, ModelBehaviour | None], ...] = (
    (
        f"A first check: fpmon takes {LEARNING.bootstrap_samples} samples (the bootstrap; "
        f"{DEFAULTS.bootstrap_samples} by default, fewer here to keep the demo short) of what "
        "the backend serves.",
        _fleet([COMMON, SECOND], [3, 1]),
    ),
    (
        "A rarer backend configuration shows up while fpmon is still learning the set.",
        _fleet([COMMON, SECOND, RARE], [2, 1, 1]),
    ),
    (
        f"The same backends again: enough samples now ({LEARNING.min_samples} here, "
        f"{DEFAULTS.min_samples} by default), and no value seen only once.",
        None,
    ),
    ("The provider rolls out a new backend configuration.", _fleet([ROLLOUT])),
    ("Traffic moves back to a configuration seen before.", _fleet([COMMON])),
    (
        "The provider silently changes the model behind that configuration (new weights, same "
        "fingerprint): the canary's logprobs move.",
        None,
    ),
)


def run_demo(console: Console) -> int:
    """Run the checks and explain them; exits 0 (the alarm of step 4 is the point)."""
    with tempfile.TemporaryDirectory(prefix="fpmon-demo-") as tmp, FakeAPI() as fake:
        config = _demo_config(fake.base_url, Path(tmp))
        console.print(
            Text(
                f"fpmon demo: a fake OpenAI-compatible API at {fake.base_url}, a history in {tmp}",
                style="dim",
            )
        )
        for number, (story, fleet) in enumerate(STEPS, start=1):
            if fleet is not None:
                fake.set_model(MODEL, fleet)
            if number == len(STEPS):
                fake.perturb(MODEL, 0, SILENT_CHANGE)
            console.print()
            console.print(Text(f"{number}. {story}  $ fpmon check", style="bold"))
            result = run_check(config, [], CheckOptions())
            render_check(console, result)
            target = result.targets[0]
            console.print(
                Text(
                    f"-> {target.status.value}: {STATUS_MEANING[target.status]} "
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
        learning=LEARNING,
        canary=CanaryMode.LOGPROBS,
        prompt=CANARY_PROMPT,
    )
    return Config(
        targets=(target,),
        source=None,
        history=directory / "history.db",
        baseline=directory / "fpmon.lock",
    )
