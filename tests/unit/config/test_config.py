"""fpmon.toml: the search order, presets, defaults, validation messages, paths, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fp_monitor.config.providers import PRESETS, Auth
from fp_monitor.config.settings import Config, load_config, parse_duration, parse_moment
from fp_monitor.domain.errors import ConfigError, ExitCode

# The presets the product promises (docs/reference/configuration.md, Presets).
DESIGN_PRESETS = (
    "openai",
    "azure",
    "xai",
    "groq",
    "deepseek",
    "openrouter",
    "together",
    "fireworks",
    "mistral",
    "perplexity",
    "gemini",
    "anthropic",
    "ollama",
    "vllm",
    "lmstudio",
    "llamacpp",
    "custom",
)

MCT = "max_completion_tokens"
MT = "max_tokens"

# Per preset: base URL, auth, key variable, token-limit parameter (as each provider documents).
# The key variable of the local servers is not in the notes: None means "not asserted".
PRESET_TABLE: dict[str, tuple[str, Auth, str | None, str]] = {
    "openai": ("https://api.openai.com/v1", Auth.BEARER, "OPENAI_API_KEY", MCT),
    "xai": ("https://api.x.ai/v1", Auth.BEARER, "XAI_API_KEY", MT),
    "groq": ("https://api.groq.com/openai/v1", Auth.BEARER, "GROQ_API_KEY", MT),
    "deepseek": ("https://api.deepseek.com", Auth.BEARER, "DEEPSEEK_API_KEY", MT),
    "openrouter": ("https://openrouter.ai/api/v1", Auth.BEARER, "OPENROUTER_API_KEY", MT),
    "together": ("https://api.together.xyz/v1", Auth.BEARER, "TOGETHER_API_KEY", MT),
    "fireworks": ("https://api.fireworks.ai/inference/v1", Auth.BEARER, "FIREWORKS_API_KEY", MT),
    "mistral": ("https://api.mistral.ai/v1", Auth.BEARER, "MISTRAL_API_KEY", MT),
    "perplexity": ("https://api.perplexity.ai", Auth.BEARER, "PERPLEXITY_API_KEY", MT),
    "gemini": (
        "https://generativelanguage.googleapis.com/v1beta/openai",
        Auth.BEARER,
        "GEMINI_API_KEY",
        MT,
    ),
    "anthropic": ("https://api.anthropic.com/v1", Auth.BEARER, "ANTHROPIC_API_KEY", MT),
    "ollama": ("http://127.0.0.1:11434/v1", Auth.NONE, None, MT),
    "vllm": ("http://127.0.0.1:8000/v1", Auth.OPTIONAL_BEARER, None, MT),
    "lmstudio": ("http://127.0.0.1:1234/v1", Auth.OPTIONAL_BEARER, None, MT),
    "llamacpp": ("http://127.0.0.1:8080/v1", Auth.OPTIONAL_BEARER, None, MT),
}

FAKE_KEY = "sk-proj-Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dF"


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real config, key or state of the machine leaks in; cwd is an empty directory."""
    for name in ("FPMON_CONFIG", "FPMON_HISTORY", "FPMON_BASELINE", "FPMON_SITE"):
        monkeypatch.delenv(name, raising=False)
    for preset in PRESETS.values():
        if preset.key_env:
            monkeypatch.delenv(preset.key_env, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def target_toml(name: str, provider: str = "openai", model: str = "gpt-4o", extra: str = "") -> str:
    return f'[targets.{name}]\nprovider = "{provider}"\nmodel = "{model}"\n{extra}\n'


def load_text(tmp_path: Path, text: str, name: str = "fpmon.toml") -> Config:
    return load_config(write(tmp_path / "cfg" / name, text))


# --- search order -----------------------------------------------------------------------


def _four_configs(tmp_path: Path) -> dict[str, Path]:
    return {
        "flag": write(tmp_path / "flag" / "a.toml", target_toml("from-flag")),
        "env": write(tmp_path / "env" / "b.toml", target_toml("from-env")),
        "cwd": write(Path.cwd() / "fpmon.toml", target_toml("from-cwd")),
        "user": write(tmp_path / "xdg-config" / "fpmon" / "config.toml", target_toml("from-user")),
    }


def names(config: Config) -> list[str]:
    return [t.name for t in config.targets]


def test_config_flag_wins_over_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _four_configs(tmp_path)
    monkeypatch.setenv("FPMON_CONFIG", str(files["env"]))
    config = load_config(files["flag"])
    assert names(config) == ["from-flag"]
    assert config.source == files["flag"]


def test_env_config_wins_over_cwd_and_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _four_configs(tmp_path)
    monkeypatch.setenv("FPMON_CONFIG", str(files["env"]))
    assert names(load_config()) == ["from-env"]


def test_cwd_config_wins_over_user_dir(tmp_path: Path) -> None:
    _four_configs(tmp_path)
    config = load_config()
    assert names(config) == ["from-cwd"]
    assert config.source is not None
    assert config.source.resolve() == (Path.cwd() / "fpmon.toml").resolve()


def test_user_config_dir_is_the_last_place(tmp_path: Path) -> None:
    files = _four_configs(tmp_path)
    files["cwd"].unlink()
    config = load_config()
    assert names(config) == ["from-user"]
    assert config.source == files["user"]


def test_missing_config_flag_file_is_a_config_error(tmp_path: Path) -> None:
    _four_configs(tmp_path)  # a fallback must not be used instead
    missing = tmp_path / "nowhere" / "fpmon.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.exit_code == ExitCode.USAGE == 2
    assert str(missing) in str(info.value)


def test_missing_fpmon_config_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _four_configs(tmp_path)
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("FPMON_CONFIG", str(missing))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.exit_code == 2
    assert str(missing) in str(info.value)


# --- defaults and presets ---------------------------------------------------------------


def test_defaults_are_merged_under_each_target(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
[defaults]
timeout = "10s"
samples = 5
retries = 1
track_headers = ["Server"]
params = { seed = 7 }

[targets.a]
provider = "openai"
model = "gpt-4o"
samples = 9

[targets.b]
provider = "xai"
model = "grok-4"
timeout = "2m"
""",
    )
    a, b = config.targets
    assert (a.samples, a.timeout, a.retries) == (9, 10.0, 1)
    assert (b.samples, b.timeout, b.retries) == (5, 120.0, 1)
    assert a.track_headers == b.track_headers == ("server",)
    assert dict(a.params) == dict(b.params) == {"seed": 7}


def test_built_in_defaults_without_a_defaults_table(tmp_path: Path) -> None:
    (target,) = load_text(tmp_path, target_toml("t")).targets
    assert (target.samples, target.retries, target.timeout) == (3, 2, 30.0)
    assert target.enabled is True
    assert target.track_headers == ()
    assert target.expect == frozenset()


def test_the_presets_are_the_documented_ones() -> None:
    assert set(PRESETS) == set(DESIGN_PRESETS)


@pytest.mark.parametrize("provider", sorted(PRESET_TABLE))
def test_preset_resolves_url_auth_key_and_token_param(tmp_path: Path, provider: str) -> None:
    base_url, auth, key_env, token_param = PRESET_TABLE[provider]
    (target,) = load_text(tmp_path, target_toml("t", provider, "some-model")).targets
    assert target.base_url == base_url
    assert target.endpoint == f"{base_url}/chat/completions"
    assert target.auth is auth
    assert target.token_param == token_param
    if key_env is not None:
        assert target.api_key_env == key_env
    if auth is Auth.NONE:
        assert target.api_key_env is None


def test_target_overrides_preset_base_url_and_key_env(tmp_path: Path) -> None:
    extra = 'base_url = "https://proxy.example.com/v1/"\napi_key_env = "MY_PROXY_KEY"'
    (target,) = load_text(tmp_path, target_toml("t", "openai", "gpt-4o", extra)).targets
    assert target.endpoint == "https://proxy.example.com/v1/chat/completions"
    assert target.api_key_env == "MY_PROXY_KEY"
    assert target.token_param == MCT


def test_azure_builds_the_deployment_endpoint(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
[targets.az]
provider = "azure"
base_url = "https://myres.openai.azure.com/"
deployment = "gpt4o-prod"
""",
    )
    (target,) = config.targets
    assert target.endpoint == (
        "https://myres.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions"
        "?api-version=2024-10-21"
    )
    assert target.model == "gpt4o-prod"
    assert target.auth is Auth.API_KEY
    assert target.api_key_env == "AZURE_OPENAI_API_KEY"
    assert target.token_param == MCT


def test_azure_api_version_and_model_can_be_set(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
[targets.az]
provider = "azure"
base_url = "https://myres.openai.azure.com"
deployment = "dep"
model = "gpt-4o"
api_version = "2025-01-01-preview"
""",
    )
    (target,) = config.targets
    assert target.endpoint.endswith(
        "/openai/deployments/dep/chat/completions?api-version=2025-01-01-preview"
    )
    assert target.model == "gpt-4o"


def test_custom_with_base_url(tmp_path: Path) -> None:
    extra = 'base_url = "http://10.0.0.5:9000/v1"'
    (target,) = load_text(tmp_path, target_toml("c", "custom", "m", extra)).targets
    assert target.endpoint == "http://10.0.0.5:9000/v1/chat/completions"
    assert target.token_param == MT


# --- the bad-config matrix --------------------------------------------------------------

T = "mytarget"
TT = "targets." + T
OK = target_toml(T)
BAD_CONFIGS = [
    # id, file text, fragments the message must contain, secret it must not contain
    ("not_toml", "this is not toml\n", ["TOML"], None),
    ("unknown_top_key", OK + "[target.x]\nmodel = 'a'\n", ["'target'", "'targets'"], None),
    (
        "unknown_target_key",
        target_toml(T, extra='modle = "x"'),
        [TT, "'modle'", "did you mean 'model'"],
        None,
    ),
    (
        "unknown_defaults_key",
        "[defaults]\nsample = 3\n" + OK,
        ["defaults", "'sample'", "did you mean 'samples'"],
        None,
    ),
    (
        "unknown_provider",
        target_toml(T, provider="opnai"),
        [TT, "provider", "opnai", "did you mean 'openai'"],
        None,
    ),
    ("missing_provider", f'[targets.{T}]\nmodel = "gpt-4o"\n', [TT, "provider"], None),
    ("missing_model", f'[targets.{T}]\nprovider = "openai"\n', [TT, "model"], None),
    ("empty_model", target_toml(T, model=""), [TT, "model"], None),
    (
        "bad_duration",
        target_toml(T, extra='timeout = "30 seconds"'),
        [TT, "timeout", "30 seconds"],
        None,
    ),
    ("timeout_zero", target_toml(T, extra="timeout = 0"), [TT, "timeout"], None),
    ("timeout_zero_s", target_toml(T, extra='timeout = "0s"'), [TT, "timeout"], None),
    ("timeout_bool", target_toml(T, extra="timeout = true"), [TT, "timeout"], None),
    ("samples_zero", target_toml(T, extra="samples = 0"), [TT, "samples"], None),
    ("samples_1001", target_toml(T, extra="samples = 1001"), [TT, "samples", "1001"], None),
    ("samples_string", target_toml(T, extra='samples = "3"'), [TT, "samples"], None),
    ("samples_bool", target_toml(T, extra="samples = true"), [TT, "samples"], None),
    ("retries_negative", target_toml(T, extra="retries = -1"), [TT, "retries"], None),
    (
        "track_headers_string",
        target_toml(T, extra='track_headers = "server"'),
        [TT, "track_headers"],
        None,
    ),
    ("expect_numbers", target_toml(T, extra="expect = [1, 2]"), [TT, "expect"], None),
    ("headers_not_table", target_toml(T, extra='headers = "x"'), [TT, "headers"], None),
    (
        "header_authorization",
        target_toml(T, extra=f'headers = {{ Authorization = "Bearer {FAKE_KEY}" }}'),
        [TT, "headers", "Authorization"],
        FAKE_KEY,
    ),
    (
        "header_api_key",
        target_toml(T, extra=f'headers = {{ "api-key" = "{FAKE_KEY}" }}'),
        [TT, "headers", "api-key"],
        FAKE_KEY,
    ),
    (
        "literal_api_key",
        target_toml(T, extra=f'api_key = "{FAKE_KEY}"'),
        [TT, "api_key", "api_key_env"],
        FAKE_KEY,
    ),
    (
        "literal_key_in_defaults",
        f'[defaults]\napi_key = "{FAKE_KEY}"\n' + OK,
        ["defaults", "api_key", "api_key_env"],
        FAKE_KEY,
    ),
    (
        "key_in_api_key_env",
        target_toml(T, extra=f'api_key_env = "{FAKE_KEY}"'),
        [TT, "api_key_env"],
        FAKE_KEY,
    ),
    (
        "base_url_without_scheme",
        target_toml(T, extra='base_url = "api.example.com/v1"'),
        [TT, "base_url"],
        None,
    ),
    ("custom_without_base_url", target_toml(T, provider="custom"), [TT, "base_url"], None),
    (
        "azure_without_deployment",
        target_toml(T, provider="azure", extra='base_url = "https://r.openai.azure.com"'),
        [TT, "deployment"],
        None,
    ),
    ("enabled_string", target_toml(T, extra='enabled = "yes"'), [TT, "enabled"], None),
    ("empty_targets", "[targets]\n", ["targets"], None),
    ("no_targets", "[defaults]\nsamples = 2\n", ["targets"], None),
    ("target_not_table", "[targets]\nx = 5\n", ["targets.x"], None),
    ("defaults_not_table", "defaults = 3\n" + OK, ["defaults"], None),
    ("history_number", "history = 5\n" + OK, ["history"], None),
    ("baseline_empty", 'baseline = ""\n' + OK, ["baseline"], None),
]


@pytest.mark.parametrize(
    ("text", "fragments", "secret"),
    [
        pytest.param(text, fragments, secret, id=case)
        for case, text, fragments, secret in BAD_CONFIGS
    ],
)
def test_bad_config_is_one_line_naming_file_target_and_key(
    tmp_path: Path, text: str, fragments: list[str], secret: str | None
) -> None:
    path = write(tmp_path / "cfg" / "fpmon.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.USAGE == 2
    assert "\n" not in message and "\r" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    if secret is not None:
        assert secret not in message
        assert secret[:12] not in message


def test_literal_key_message_shows_the_env_var_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, target_toml(T, extra=f'api_key = "{FAKE_KEY}"'))
    assert 'api_key_env = "' in str(info.value)
    assert FAKE_KEY not in repr(info.value)


# --- no config file: targets from the environment ---------------------------------------


def test_targets_from_well_known_key_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0000000000")
    monkeypatch.setenv("XAI_API_KEY", "xai-test-0000000000")
    config = load_config()
    assert config.source is None
    by_name = {t.name: t for t in config.targets}
    assert set(by_name) == {"openai", "xai"}
    assert by_name["openai"].provider == "openai"
    assert by_name["openai"].api_key_env == "OPENAI_API_KEY"
    assert by_name["openai"].base_url == "https://api.openai.com/v1"
    assert by_name["xai"].api_key_env == "XAI_API_KEY"
    assert all(t.model for t in config.targets)


def test_empty_key_variable_is_not_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test_0000000000")
    assert names(load_config()) == ["groq"]


def test_no_config_and_no_keys_says_how_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "fpmon init" in message
    assert "fpmon demo" in message
    assert "\n" not in message


def test_a_config_file_wins_over_key_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0000000000")
    write(Path.cwd() / "fpmon.toml", target_toml("only-this", "xai", "grok-4"))
    assert names(load_config()) == ["only-this"]


# --- history and baseline paths ---------------------------------------------------------

PATHS_TOML = 'history = "data/h.db"\nbaseline = "locks/fp.lock"\n' + target_toml("t")


def test_history_and_baseline_keys_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, PATHS_TOML)
    assert config.history == tmp_path / "cfg" / "data" / "h.db"
    assert config.baseline == tmp_path / "cfg" / "locks" / "fp.lock"


def test_env_overrides_config_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPMON_HISTORY", str(tmp_path / "env.db"))
    monkeypatch.setenv("FPMON_BASELINE", str(tmp_path / "env.lock"))
    config = load_text(tmp_path, PATHS_TOML)
    assert config.history == tmp_path / "env.db"
    assert config.baseline == tmp_path / "env.lock"


def test_flags_override_env_and_config_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FPMON_HISTORY", str(tmp_path / "env.db"))
    monkeypatch.setenv("FPMON_BASELINE", str(tmp_path / "env.lock"))
    path = write(tmp_path / "cfg" / "fpmon.toml", PATHS_TOML)
    config = load_config(path, history=tmp_path / "flag.db", baseline=tmp_path / "flag.lock")
    assert config.history == tmp_path / "flag.db"
    assert config.baseline == tmp_path / "flag.lock"


def test_default_paths(tmp_path: Path) -> None:
    config = load_text(tmp_path, target_toml("t"))
    assert config.history == tmp_path / "xdg-data" / "fpmon" / "history.db"
    assert config.baseline == tmp_path / "cfg" / "fpmon.lock"


def test_tilde_in_history_key_is_the_home_directory(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'history = "~/fp/h.db"\n' + target_toml("t"))
    assert config.history == tmp_path / "home" / "fp" / "h.db"


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
        ("0s", 0.0),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "s", "30 seconds", "5 min", "-5s", "5w", "abc", "1h30m", "30S"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="30s"):
        parse_duration(text)


# --- selecting targets ------------------------------------------------------------------

SELECT_TOML = (
    target_toml("grok", "xai", "grok-4")
    + target_toml("gpt", "openai", "gpt-4o")
    + target_toml("off", "openai", "gpt-4o-mini", "enabled = false")
)


def test_select_unknown_target_suggests_the_close_name(tmp_path: Path) -> None:
    config = load_text(tmp_path, SELECT_TOML)
    with pytest.raises(ConfigError, match=r"did you mean 'grok'") as info:
        config.select(["grk"])
    assert info.value.exit_code == 2
    assert "grk" in str(info.value)


def test_select_leaves_out_disabled_targets_when_none_named(tmp_path: Path) -> None:
    config = load_text(tmp_path, SELECT_TOML)
    assert [t.name for t in config.select([])] == ["grok", "gpt"]


def test_select_named_targets_in_order_once_even_if_disabled(tmp_path: Path) -> None:
    config = load_text(tmp_path, SELECT_TOML)
    assert [t.name for t in config.select(["off", "grok", "off"])] == ["off", "grok"]


def test_a_bad_value_from_defaults_is_reported_in_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, '[defaults]\ntimeout = "0s"\n' + target_toml("grok"))
    assert "[defaults] timeout:" in str(caught.value)
    assert "[targets.grok]" not in str(caught.value)


# --- retention and reading without targets ----------------------------------------------


def test_retention_is_read_in_seconds(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'retention = "90d"\n' + target_toml("t")).retention == 90 * 86400
    assert load_text(tmp_path, target_toml("t")).retention is None


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('retention = "90 days"', "retention: '90 days' is not a duration"),
        ('retention = "0s"', "retention: must be longer than 0s"),
        ("retention = 90", 'retention: expected a duration like "90d"'),
        ('retension = "90d"', "unknown key 'retension' (did you mean 'retention'?)"),
    ],
)
def test_bad_retention_is_one_line_naming_the_key(tmp_path: Path, line: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, f"{line}\n" + target_toml("t"))
    assert info.value.exit_code == 2
    assert fragment in str(info.value)
    assert "fpmon.toml" in str(info.value) and "\n" not in str(info.value)


def test_reading_commands_need_no_config_and_no_key() -> None:
    config = load_config(history=Path("h.db"), require_targets=False)
    assert (config.targets, config.history, config.retention) == ((), Path("h.db"), None)
    with pytest.raises(ConfigError):
        load_config(history=Path("h.db"))


NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("30d", NOW - timedelta(days=30)),
        ("0s", NOW),
        ("12h", NOW - timedelta(hours=12)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:30:00Z", datetime(2026, 11, 1, 10, 30, tzinfo=UTC)),
        ("2026-11-01T12:30:00+02:00", datetime(2026, 11, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_parse_moment(text: str, moment: datetime) -> None:
    parsed = parse_moment(text, NOW)
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "30 days", "-5d"])
def test_parse_moment_rejects_naming_both_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"neither a duration .* nor an ISO date"):
        parse_moment(text, NOW)


# --- site ---------------------------------------------------------------------------------


def test_the_site_defaults_to_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "runner-7")
    assert load_text(tmp_path, target_toml("a")).targets[0].site == "runner-7"
    long_name = "node-" + "x" * 80 + ".example.internal"  # a fully qualified name
    monkeypatch.setattr("socket.gethostname", lambda: long_name)
    assert load_text(tmp_path, target_toml("a")).targets[0].site == long_name[:64]


def test_the_site_comes_from_defaults_a_target_or_fpmon_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        '[defaults]\nsite = "eu-west"\n'
        + target_toml("a")
        + target_toml("b", extra='site = "eu-west-2"')
    )
    assert [t.site for t in load_text(tmp_path, text).targets] == ["eu-west", "eu-west-2"]
    # One config file for every region: each watcher says where it runs.
    monkeypatch.setenv("FPMON_SITE", "us-east")
    assert [t.site for t in load_text(tmp_path, text).targets] == ["us-east", "us-east"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('""', "expected a non-empty string"),
        ('"  "', "expected a non-empty string"),
        ("3", "expected a non-empty string"),
        (f'"{"x" * 65}"', "expected at most 64 characters, got 65"),
        ('"eu\\u001b[2J"', "expected printable characters only"),
        ('"eu\\nwest"', "expected printable characters only"),
    ],
)
def test_a_bad_site_names_the_key(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_text(tmp_path, target_toml("a", extra=f"site = {value}"))
    message = str(raised.value)
    assert f"fpmon.toml: [targets.a] site: {problem}" in message
    assert "\n" not in message and "\x1b" not in message
    assert raised.value.exit_code == ExitCode.USAGE


def test_a_bad_fpmon_site_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FPMON_SITE", "x" * 65)
    with pytest.raises(ConfigError, match=r"^FPMON_SITE: expected at most 64 characters"):
        load_text(tmp_path, target_toml("a"))
