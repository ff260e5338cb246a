"""`fpmon init`: a starter fpmon.toml built from the provider keys in the environment."""

from __future__ import annotations

from pathlib import Path

from fp_monitor.config.providers import PRESETS, presets_with_keys, realities
from fp_monitor.domain.errors import ConfigError
from fp_monitor.fileio import write_atomic

HEADER = """\
# fpmon configuration. Reference: README.md ("Configuration"); every preset is shown in
# config.example.toml. API keys are never written here: name their variables with api_key_env.

[defaults]
timeout = "30s"
retries = 2
samples = 3
"""


def write_starter_config(path: Path, *, force: bool) -> list[str]:
    """Write the starter file; returns the providers whose keys were found."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    found = [p.name for p in presets_with_keys()]
    # Each target says what its provider's fingerprint is worth, where the reader decides.
    blocks = [
        f"\n# {realities(name).summary()}"
        f'\n[targets.{name}]\nprovider = "{name}"\nmodel = "{PRESETS[name].default_model}"\n'
        f'api_key_env = "{PRESETS[name].key_env}"\n'
        for name in found or ["openai"]
    ]
    write_atomic(path, HEADER + "".join(blocks))
    return found
