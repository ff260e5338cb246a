"""Property-based tests: whatever a user writes, config parsing ends in a config or in one
line and exit 2; detection's invariants hold for any observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fp_monitor.config.providers import PRESETS
from fp_monitor.config.settings import TARGET_KEYS, TOP_KEYS, Config, load_config
from fp_monitor.domain.detect import detect
from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import ABSENT, NULL, Observation, Status, TargetFacts

KEYS = st.sampled_from([*TARGET_KEYS, *TOP_KEYS, "modle", "api_key", "x"])
SCALARS = st.one_of(
    st.text(max_size=20),
    st.sampled_from([*PRESETS, "30s", "0s", "5m", "-1s", "http://127.0.0.1:1/v1", "sk-x" * 5]),
    st.integers(min_value=-5, max_value=2000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
TARGET = st.dictionaries(KEYS, VALUES, max_size=6)
DOCUMENT = st.fixed_dictionaries(
    {},
    optional={
        "targets": st.dictionaries(st.text(min_size=1, max_size=8), TARGET | VALUES, max_size=3),
        "defaults": TARGET | VALUES,
        "history": VALUES,
        "baseline": VALUES,
    },
)


def assert_config_or_one_line(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert "\n" not in str(exc) and str(exc)
    else:
        assert isinstance(config, Config) and config.targets


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DOCUMENT)
def test_any_toml_gives_a_config_or_a_one_line_error(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "fpmon.toml"
    try:
        path.write_text(tomli_w.dumps(data))
    except (TypeError, ValueError):
        return  # not representable in TOML (e.g. NaN is fine, but a naive datetime key is not)
    assert_config_or_one_line(path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_config_or_a_one_line_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fpmon.toml"
    path.write_bytes(raw)
    assert_config_or_one_line(path)


# --- detection invariants --------------------------------------------------------------------

TOKENS = st.sampled_from(["fp_a", "fp_b", "fp_c", NULL, ABSENT, ""])
MODELS = st.sampled_from(["m-1", "m-2", NULL])
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def observation(fingerprint: str | None, model: str | None, index: int) -> Observation:
    return Observation(
        target="t",
        provider="custom",
        base_url="http://x",
        requested_model="m",
        observed_at=T0 + timedelta(seconds=index),
        attempts=1,
        latency_ms=float(index),
        request_shape="s",
        fingerprint=fingerprint,
        resolved_model=model,
    )


SAMPLES = st.lists(st.tuples(TOKENS, MODELS), min_size=1, max_size=6)
SETS = st.frozensets(TOKENS, max_size=4)
MODEL_SETS = st.frozensets(MODELS, max_size=2)


def facts_of(previous: Any, previous_models: Any, known: Any, known_models: Any) -> TargetFacts:
    return TargetFacts(
        previous_fingerprints=previous,
        previous_models=previous_models,
        known_fingerprints=known | (previous or frozenset()),
        known_models=known_models | (previous_models or frozenset()),
    )


@given(SAMPLES, SETS, MODEL_SETS, SETS, MODEL_SETS, st.booleans(), st.randoms())
def test_detection_invariants(
    samples: list[tuple[str, str]],
    previous: frozenset[str],
    previous_models: frozenset[str],
    known: frozenset[str],
    known_models: frozenset[str],
    learning: bool,
    rng: Any,
) -> None:
    facts = facts_of(previous or None, previous_models if previous else None, known, known_models)
    observations = [observation(f, m, i) for i, (f, m) in enumerate(samples)]
    result = detect("t", observations, facts, samples=len(samples), learning=learning)
    inside = {f for f, _ in samples} <= facts.known_fingerprints and {
        m for _, m in samples
    } <= facts.known_models
    if inside:
        assert result.status is not Status.NEW and result.status is not Status.LEARNED
    shuffled = list(observations)
    rng.shuffle(shuffled)
    again = detect("t", shuffled, facts, samples=len(samples), learning=learning)
    assert again.status == result.status and again.changes == result.changes
    assert (again.fingerprints, again.models) == (result.fingerprints, result.models)
    assert detect("t", observations, facts, samples=len(samples), learning=learning) == result
    if learning:
        assert not result.unexpected


@pytest.mark.parametrize("value", [NULL, ABSENT, "", "fp_a"])
def test_each_value_state_is_inside_its_own_known_set(value: str) -> None:
    facts = facts_of(frozenset({value}), frozenset({"m-1"}), frozenset(), frozenset())
    result = detect("t", [observation(value, "m-1", 0)], facts, samples=1)
    assert result.status is Status.SAME
