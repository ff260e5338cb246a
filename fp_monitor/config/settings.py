"""fpmon.toml -> frozen Config; the search order; validation with messages that name the key."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from fp_monitor.config.formats import grammars
from fp_monitor.config.history_url import (
    HistoryLocation,
    history_location,
    is_postgres,
    postgres_url,
)
from fp_monitor.config.providers import (
    AZURE_DEFAULT_API_VERSION,
    PRESETS,
    REASONING_MODEL,
    Auth,
    presets_with_keys,
)
from fp_monitor.config.site import SITE_VARIABLE, machine_site, site_problem
from fp_monitor.domain.canary import CanaryMode
from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.fingerprints import BUILTIN_GRAMMARS, Grammar
from fp_monitor.domain.learning import BOOTSTRAP_MAX, BOOTSTRAP_MIN, LearningSettings
from fp_monitor.domain.models import Event
from fp_monitor.net.redact import register

# Defaults live here and nowhere else.
DEFAULT_SAMPLES = 3
DEFAULT_RETRIES = 2
DEFAULT_TIMEOUT = 30.0
DEFAULT_PROMPT = "hi"
DEFAULT_ERROR_AFTER = 2
DEFAULT_NOTIFY_ON = frozenset({Event.NEW, Event.DRIFT, Event.ERROR, Event.RECOVERED})
CANARY_PROMPT = "Name one colour. Answer with a single word."
"""The probe's message when the canary is on (and `prompt` is not set): many first tokens are
likely (docs/canary.md says why that matters), and the answer is harmless anywhere."""
CANARY_TEMPERATURE = 1.0
"""`sampled` mode: the model's own distribution, whatever the provider's default."""
DEFAULT_WEBHOOK_TIMEOUT = 10.0
DEFAULT_WEBHOOK_RETRIES = 2
DEFAULT_COMMAND_TIMEOUT = 30.0
# The longest durations accepted: an infinite timeout hangs a check for ever, and a duration
# past ten years is a typo that overflows date arithmetic.
MAX_TIMEOUT = 3600.0
MAX_DURATION = 3650 * 86400.0
CONFIG_FILENAME = "fpmon.toml"
LOCK_FILENAME = "fpmon.lock"

_Choice = TypeVar("_Choice", bound=StrEnum)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
"""`${NAME}` in a notifier's url or in a header value (a notifier's or a target's): expanded
from the environment at send time."""
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "ocp-apim-subscription-key",
        "x-goog-api-key",
        "cookie",
        "x-auth-token",
        "x-amz-security-token",
        "x-jwt-assertion",
    }
)
"""Request headers known to carry credentials (see `carries_credentials`)."""
_CREDENTIAL_NAME = re.compile(r"key|token|secret|auth|cookie|passw|signature", re.IGNORECASE)

TARGET_KEYS = (
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "headers",
    "params",
    "prompt",
    "samples",
    "timeout",
    "retries",
    "track_headers",
    "expect",
    "enabled",
    "deployment",
    "api_version",
    "learning",
    "bootstrap_samples",
    "learn_min_samples",
    "learn_samples",
    "learn_unseen",
    "learn_max",
    "error_after",
    "remind",
    "site",
    "canary",
)
TOP_KEYS = (
    "history",
    "baseline",
    "retention",
    "defaults",
    "targets",
    "notify",
    "otlp",
    "fingerprint_formats",
)
OTLP_KEYS = ("auto_targets",)
_NOTIFY_COMMON_KEYS = ("type", "on", "targets", "timeout")
NOTIFY_KEYS = {
    "webhook": (*_NOTIFY_COMMON_KEYS, "url", "format", "headers", "retries"),
    "command": (*_NOTIFY_COMMON_KEYS, "run"),
    "apprise": (*_NOTIFY_COMMON_KEYS, "url"),
}
# Keys people reach for when they paste a key into the file; refused with the env-var form.
_LITERAL_KEY_NAMES = {"api_key", "apikey", "api-key", "key", "token", "api_token"}


def carries_credentials(header: str) -> bool:
    """A header known to carry credentials, or whose name says it might: its value in a
    config file must come from the environment, and a request's value is never stored."""
    return header.lower() in CREDENTIAL_HEADERS or _CREDENTIAL_NAME.search(header) is not None


def expand(text: str, environ: Mapping[str, str]) -> str:
    """`${NAME}` -> the variable's value, registered as a secret (hidden from every message and
    record from then on); KeyError(NAME) when the variable is unset or empty."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not environ.get(name):
            raise KeyError(name)
        register(environ[name])
        return environ[name]

    return ENV_REFERENCE.sub(value, text)


def parse_duration(text: str, longest: float = MAX_DURATION) -> float:
    """'30s', '5m', '2h', '7d' (and '250ms') -> seconds, at most `longest`; ValueError names
    the accepted forms or the bound."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 5m, 2h or 7d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > longest:
        raise ValueError(f"{text.strip()!r} is too long: at most {show_bound(longest)}")
    return seconds


def show_bound(seconds: float) -> str:
    """A bound in the largest unit that writes it whole: 3600.0 -> '1h'."""
    unit = next(u for u in ("d", "h", "m", "s", "ms") if seconds % _UNIT_SECONDS[u] == 0)
    return f"{seconds / _UNIT_SECONDS[unit]:g}{unit}"


def parse_moment(text: str, now: datetime) -> datetime:
    """A duration back from `now` ('30d', '0s') or an ISO date or time (UTC unless it says
    otherwise) -> an aware datetime; ValueError names both forms."""
    if _DURATION.match(text):
        return now - timedelta(seconds=parse_duration(text))
    try:
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first moment in UTC
        raise ValueError(f"{text!r} is out of range: use a date from year 1 to 9999") from None
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h, 0s) nor an ISO date "
            "(2026-11-01 or 2026-11-01T10:00:00Z)"
        ) from None


@dataclass(frozen=True)
class Target:
    name: str
    provider: str
    model: str
    base_url: str
    auth: Auth
    api_key_env: str | None
    token_param: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    prompt: str = DEFAULT_PROMPT
    samples: int = DEFAULT_SAMPLES
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    track_headers: tuple[str, ...] = ()
    expect: frozenset[str] = frozenset()
    enabled: bool = True
    deployment: str | None = None
    api_version: str | None = None
    learning: LearningSettings = field(default_factory=LearningSettings)
    error_after: int = DEFAULT_ERROR_AFTER
    """Consecutive failed checks before an `error` notification goes out."""
    remind: float | None = None
    """Seconds between repeated `new` notifications of a value left unaccepted; None: one."""
    site: str | None = None
    """Where the target is probed from (config/site.py); None only in a Target built by hand."""
    canary: CanaryMode = CanaryMode.AUTO
    """Config key `canary`: the behaviour canary on the probe (see `canary_plan`)."""

    @property
    def endpoint(self) -> str:
        """The chat-completions URL that the probe posts to."""
        base = self.base_url.rstrip("/")
        if self.provider == "azure":
            return (
                f"{base}/openai/deployments/{self.deployment}/chat/completions"
                f"?api-version={self.api_version}"
            )
        return f"{base}/chat/completions"


class WebhookFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"
    DISCORD = "discord"


@dataclass(frozen=True, kw_only=True)
class Notifier:
    """A [notify.NAME] table: where events go, and which events of which targets."""

    name: str
    on: frozenset[Event]
    targets: frozenset[str] | None
    """None: every target."""
    timeout: float

    def wants(self, event: Event, target: str) -> bool:
        return event in self.on and (self.targets is None or target in self.targets)


@dataclass(frozen=True, kw_only=True)
class Webhook(Notifier):
    url: str
    """May hold ${NAME} references: webhook URLs often embed their secret."""
    format: WebhookFormat
    headers: Mapping[str, str]
    """Values may hold ${NAME} references; never stored expanded."""
    retries: int


@dataclass(frozen=True, kw_only=True)
class Command(Notifier):
    run: tuple[str, ...]
    """argv, run without a shell."""


@dataclass(frozen=True, kw_only=True)
class AppriseNotifier(Notifier):
    url: str
    """An Apprise URL (mailto://, msteams://, pagerduty://, tgram://, ntfy://...), or ${NAME}
    to read it from the environment: such URLs carry their service's credentials."""


@dataclass(frozen=True)
class Config:
    targets: tuple[Target, ...]
    source: Path | None
    """The file the config came from; None when targets came from the environment."""
    history: HistoryLocation
    """A SQLite file, or a PostgreSQL database (config/history_url.py)."""
    baseline: Path
    retention: float | None = None
    """Seconds of history `fpmon prune` keeps when no --older-than is given."""
    notifiers: tuple[Notifier, ...] = ()
    otlp_auto_targets: bool = False
    """[otlp] auto_targets: `fpmon otlp` makes a target of each unmatched host and model."""
    grammars: tuple[Grammar, ...] = BUILTIN_GRAMMARS
    """The fingerprint grammars: the file's [fingerprint_formats.*] first, then the built-in."""

    def select(self, names: list[str]) -> tuple[Target, ...]:
        """The named targets (all enabled ones when none are named); unknown names are errors."""
        if not names:
            return tuple(t for t in self.targets if t.enabled)
        by_name = {t.name: t for t in self.targets}
        for name in names:
            if name not in by_name:
                raise ConfigError(f"unknown target {name!r}{did_you_mean(name, by_name)}")
        return tuple(by_name[n] for n in dict.fromkeys(names))

    def notifier(self, name: str) -> Notifier:
        """The [notify.NAME] table called `name`; an unknown name is an error."""
        by_name = {n.name: n for n in self.notifiers}
        if name not in by_name:
            where = self.source or "the configuration"
            known = (
                f"its notifiers: {', '.join(sorted(by_name))}"
                if by_name
                else "it has no [notify.NAME] table"
            )
            raise ConfigError(
                f"{where}: no {_section('notify', name)} table{did_you_mean(name, by_name)}; "
                f"{known}"
            )
        return by_name[name]


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def find_config_file(explicit: Path | None) -> Path | None:
    """--config, else $FPMON_CONFIG, else ./fpmon.toml, else the user config dir."""
    if explicit is not None or (explicit := _env_path("FPMON_CONFIG")) is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    for candidate in (
        Path(CONFIG_FILENAME),
        Path(platformdirs.user_config_dir("fpmon")) / "config.toml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def default_history_path() -> Path:
    return Path(platformdirs.user_data_dir("fpmon")) / "history.db"


def load_config(
    explicit: Path | None = None,
    *,
    history: Path | str | None = None,
    baseline: Path | None = None,
    require_targets: bool = True,
) -> Config:
    """Find and validate the configuration; flags and env override the file's paths.
    `require_targets=False`: commands that only read the history run with no config at all."""
    path = find_config_file(explicit)
    if path is None:
        targets = targets_from_environment()
        if not targets and require_targets:
            raise ConfigError(
                "no configuration found and no provider key in the environment: "
                "run `fpmon init` to write fpmon.toml, or `fpmon demo` to see fpmon work "
                "without keys"
            )
        data: dict[str, Any] = {}
        notifiers: tuple[Notifier, ...] = ()
        base_dir = Path.cwd()
    else:
        data = read_toml(path)
        targets = _parse_targets(data, str(path))
        notifiers = _parse_notifiers(data, str(path), {t.name for t in targets})
        base_dir = path.parent
    where = str(path) if path else "environment"
    located = _history(history, data, where, base_dir)
    baseline = (
        baseline or _env_path("FPMON_BASELINE") or _path_key(data, "baseline", where, base_dir)
    )
    return Config(
        targets=targets,
        source=path,
        history=located or default_history_path(),
        baseline=baseline or base_dir / LOCK_FILENAME,
        retention=_retention(data, where),
        notifiers=notifiers,
        otlp_auto_targets=_otlp_auto_targets(data, where),
        grammars=grammars(data, where),
    )


def _otlp_auto_targets(data: dict[str, Any], where: str) -> bool:
    table = data.get("otlp", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [otlp] must be a table")
    _check_keys(table, OTLP_KEYS, where, "[otlp] ")
    return _Reader(table, f"{where}: [otlp]").boolean("auto_targets", False)


def _retention(data: dict[str, Any], where: str) -> float | None:
    value = data.get("retention")
    if value is None:
        return None
    reader = _Reader(data, f"{where}:")
    if not isinstance(value, str):
        raise reader.fail("retention", f'expected a duration like "90d", got {value!r}')
    return reader.duration("retention", 0.0)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's content, or a one-line ConfigError saying what is wrong with it."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: tables or arrays nested too deeply for fpmon to read; flatten them"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _history(
    flag: Path | str | None, data: dict[str, Any], where: str, base_dir: Path
) -> HistoryLocation | None:
    """--history, else $FPMON_HISTORY, else the config's `history`: a path or a PostgreSQL URL."""
    if flag is not None:
        return history_location(str(flag), "--history")
    if value := os.environ.get("FPMON_HISTORY"):
        return history_location(value, "FPMON_HISTORY")
    value = data.get("history")
    if isinstance(value, str) and is_postgres(value):
        return postgres_url(value, where)
    return _path_key(data, "history", where, base_dir)


def _path_key(data: dict[str, Any], key: str, where: str, base_dir: Path) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key}: expected a file path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _parse_targets(data: dict[str, Any], where: str) -> tuple[Target, ...]:
    _check_keys(data, TOP_KEYS, where, "")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: [defaults] must be a table")
    _check_keys(defaults, TARGET_KEYS, where, "[defaults] ")
    tables = data.get("targets", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(
            f"{where}: no targets: add a [targets.NAME] table (see config.example.toml)"
        )
    targets = []
    for name, table in tables.items():
        section = target_section(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table")
        _check_keys(table, TARGET_KEYS, where, f"{section} ")
        read = _Reader({**defaults, **table}, f"{where}: {section}")
        # A bad value inherited from [defaults] is reported where it is written.
        read.inherited = {k: f"{where}: [defaults]" for k in defaults if k not in table}
        targets.append(_build_target(name, read))
    return tuple(targets)


def target_section(name: str) -> str:
    return _section("targets", name)


def _section(table: str, name: str) -> str:
    """`[TABLE.NAME]` as TOML writes it: a name with spaces, dots or newlines is quoted, so a
    message naming it stays on one line."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", name)
    return f"[{table}.{name if bare else json.dumps(name)}]"


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, section: str) -> None:
    for key in table:
        if key.lower() in _LITERAL_KEY_NAMES:
            raise ConfigError(
                f"{where}: {section}{key}: API keys are not allowed in the config file; "
                f'export the key and name its variable instead: api_key_env = "MY_API_KEY"'
            )
        if key not in allowed:
            raise ConfigError(f"{where}: {section}unknown key {key!r}{did_you_mean(key, allowed)}")


class _Reader:
    """Typed access to one target's merged table, with errors that name the key."""

    def __init__(self, table: dict[str, Any], where: str) -> None:
        self.table = table
        self.where = where
        self.inherited: dict[str, str] = {}

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.inherited.get(key, self.where)} {key}: {problem}")

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.table.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.fail(key, "expected a non-empty string")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false")
        return value

    def share(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.fail(key, f"expected a share from 0 to 1, like 0.01, got {value!r}")
        return float(value)

    def duration(
        self,
        key: str,
        default: float,
        *,
        allow_zero: bool = False,
        longest: float = MAX_DURATION,
    ) -> float:
        value = self.table.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                seconds = parse_duration(value, longest)
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise self.fail(key, f"expected a duration like 30s, got {value!r}")
        if not seconds <= longest:  # written so that nan is refused too
            raise self.fail(
                key, f"expected a duration of at most {show_bound(longest)}, got {value!r}"
            )
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise self.fail(key, "must be longer than 0s")
        return seconds

    def string_list(self, key: str) -> list[str]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, 'expected a list of strings, like ["a", "b"]')
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table, like { name = value }")
        return value


def _build_target(name: str, read: _Reader) -> Target:
    provider = read.string("provider")
    if provider is None:
        raise read.fail("provider", f"missing; one of: {', '.join(PRESETS)}")
    preset = PRESETS.get(provider)
    if preset is None:
        raise read.fail(
            "provider", f"unknown provider {provider!r}{did_you_mean(provider, PRESETS)}"
        )
    base_url = read.string("base_url", preset.base_url or None)
    if base_url is None:
        raise read.fail("base_url", f"required for provider {provider!r}")
    if _has_userinfo(base_url):
        # Never echoed: the part before @ is a password.
        raise read.fail(
            "base_url",
            "holds a user name or password (user:secret@host); remove it and put the key in "
            'an environment variable: api_key_env = "MY_API_KEY"',
        )
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise read.fail("base_url", f"expected an http:// or https:// URL, got {base_url!r}")
    deployment = read.string("deployment")
    api_version = read.string("api_version")
    if provider == "azure":
        if deployment is None:
            raise read.fail("deployment", "required for provider 'azure'")
        api_version = api_version or AZURE_DEFAULT_API_VERSION
    model = read.string("model", deployment)
    if model is None:
        raise read.fail("model", "missing: name the model to probe")
    headers = _headers(read)
    params = read.mapping("params")
    try:
        json.dumps(params, allow_nan=False)
    except ValueError:
        raise read.fail(
            "params", "nan and inf are not JSON numbers: write finite numbers"
        ) from None
    defaults = LearningSettings()
    learning = LearningSettings(
        enabled=read.boolean("learning", defaults.enabled),
        bootstrap_samples=read.integer(
            "bootstrap_samples", defaults.bootstrap_samples, BOOTSTRAP_MIN, BOOTSTRAP_MAX
        ),
        min_samples=read.integer("learn_min_samples", defaults.min_samples, 0, 1_000_000),
        learning_samples=read.integer(
            "learn_samples", defaults.learning_samples, BOOTSTRAP_MIN, BOOTSTRAP_MAX
        ),
        unseen=read.share("learn_unseen", defaults.unseen),
        max_age=read.duration("learn_max", defaults.max_age, allow_zero=True),
    )
    canary = _choice(read, "canary", read.string("canary", "auto") or "auto", CanaryMode)
    mode, _ = canary_plan(provider, model, canary)
    return Target(
        name=name,
        provider=provider,
        model=model,
        base_url=base_url,
        auth=preset.auth,
        api_key_env=_key_variable(read, preset.key_env),
        token_param=preset.token_param,
        headers=headers,
        params=params,
        prompt=read.string("prompt")
        or (CANARY_PROMPT if mode is not CanaryMode.OFF else DEFAULT_PROMPT),
        samples=read.integer("samples", DEFAULT_SAMPLES, 1, 1000),
        timeout=read.duration("timeout", DEFAULT_TIMEOUT, longest=MAX_TIMEOUT),
        retries=read.integer("retries", DEFAULT_RETRIES, 0, 10),
        track_headers=tuple(h.lower() for h in read.string_list("track_headers")),
        expect=frozenset(read.string_list("expect")),
        enabled=read.boolean("enabled", True),
        deployment=deployment,
        api_version=api_version,
        learning=learning,
        error_after=read.integer("error_after", DEFAULT_ERROR_AFTER, 1, 1000),
        remind=read.duration("remind", 0.0, allow_zero=True) or None,
        site=_site(read),
        canary=canary,
    )


def _site(read: _Reader) -> str:
    """$FPMON_SITE overrides the file (as $FPMON_HISTORY does): one config file serves the
    watchers of every region, each started with its own FPMON_SITE."""
    value = read.table.get("site")
    if value is None or SITE_VARIABLE in os.environ:
        return machine_site()
    if problem := site_problem(value):
        raise read.fail("site", problem)
    return str(value)


def canary_plan(provider: str, model: str, setting: CanaryMode) -> tuple[CanaryMode, str]:
    """The canary mode a target's probe uses, and why (what `fpmon targets` shows); the probe
    may still fall back at run time (`runtime_canary`)."""
    preset = PRESETS.get(provider)
    top = preset.top_logprobs if preset else 0
    if setting is CanaryMode.OFF:
        return CanaryMode.OFF, "canary = off"
    if setting is not CanaryMode.AUTO:
        return setting, f"canary = {setting.value}"
    if REASONING_MODEL.search(model):
        return CanaryMode.OFF, (
            "a reasoning model: no logprobs, and a visible token costs hidden reasoning tokens"
        )
    if top:
        return CanaryMode.LOGPROBS, f"the {provider} API returns the top {top} logprobs"
    return CanaryMode.SAMPLED, (
        f"no logprobs known for the {provider} API: the first token sampled at temperature "
        f"{CANARY_TEMPERATURE:g}"
    )


def target_canary(target: Target) -> tuple[CanaryMode, str]:
    return canary_plan(target.provider, target.model, target.canary)


def runtime_canary(target: Target, logprobs_rejected: bool) -> tuple[CanaryMode, str]:
    """The mode of this check: auto falls back to `sampled` once the provider has answered 400
    to the logprob parameters (the history remembers it)."""
    mode, why = target_canary(target)
    if mode is CanaryMode.LOGPROBS and logprobs_rejected and target.canary is CanaryMode.AUTO:
        return CanaryMode.SAMPLED, "the API answered 400 to logprobs: the first token sampled"
    return mode, why


def _key_variable(read: _Reader, default: str | None) -> str | None:
    name = read.string("api_key_env", default)
    if name is not None and not _ENV_NAME.match(name):
        # Most likely the key itself was pasted here: never echo it.
        raise read.fail(
            "api_key_env",
            'expected the name of an environment variable, like api_key_env = "MY_API_KEY" '
            "(never the key itself)",
        )
    return name


def _parse_notifiers(
    data: dict[str, Any], where: str, target_names: set[str]
) -> tuple[Notifier, ...]:
    tables = data.get("notify", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: notify must hold [notify.NAME] tables")
    notifiers = []
    for name, table in tables.items():
        section = _section("notify", name)
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table")
        read = _Reader(table, f"{where}: {section}")
        notifiers.append(_build_notifier(name, read, where, target_names))
    return tuple(notifiers)


def _build_notifier(name: str, read: _Reader, where: str, target_names: set[str]) -> Notifier:
    kind = read.string("type")
    if kind is None:
        raise read.fail("type", f"missing; one of: {', '.join(NOTIFY_KEYS)}")
    if kind not in NOTIFY_KEYS:
        raise read.fail("type", f"unknown type {kind!r}{did_you_mean(kind, NOTIFY_KEYS)}")
    _check_keys(read.table, NOTIFY_KEYS[kind], where, f"{_section('notify', name)} ")
    on = DEFAULT_NOTIFY_ON
    if "on" in read.table:
        on = frozenset(_choice(read, "on", value, Event) for value in read.string_list("on"))
    targets = None
    if "targets" in read.table:
        targets = frozenset(read.string_list("targets"))
        if unknown := sorted(targets - target_names):
            raise read.fail(
                "targets", f"unknown target {unknown[0]!r}{did_you_mean(unknown[0], target_names)}"
            )
    if kind == "command":
        run = read.string_list("run")
        if not run or not run[0].strip():
            raise read.fail(
                "run", 'missing: the program and its arguments, like run = ["/path/to/script"]'
            )
        return Command(
            name=name,
            on=on,
            targets=targets,
            timeout=read.duration("timeout", DEFAULT_COMMAND_TIMEOUT, longest=MAX_TIMEOUT),
            run=tuple(run),
        )
    if kind == "apprise":
        return _build_apprise(name, read, on, targets)
    url = read.string("url")
    if url is None:
        raise read.fail("url", 'missing: where to POST, like url = "${SLACK_WEBHOOK_URL}"')
    _check_references(read, "url", url)
    # The value is never echoed: a webhook URL usually is its own secret.
    if not ENV_REFERENCE.search(url) and not re.match(r"^https?://[^/\s]+", url):
        raise read.fail("url", "expected an http:// or https:// URL, or ${NAME} to read it from")
    headers = _headers(read)
    return Webhook(
        name=name,
        on=on,
        targets=targets,
        timeout=read.duration("timeout", DEFAULT_WEBHOOK_TIMEOUT, longest=MAX_TIMEOUT),
        url=url,
        format=_choice(read, "format", read.string("format", "json") or "json", WebhookFormat),
        headers=headers,
        retries=read.integer("retries", DEFAULT_WEBHOOK_RETRIES, 0, 10),
    )


def _build_apprise(
    name: str, read: _Reader, on: frozenset[Event], targets: frozenset[str] | None
) -> AppriseNotifier:
    url = read.string("url")
    if url is None or not ENV_REFERENCE.fullmatch(url.strip()):
        # An Apprise URL holds its service's credentials (a token, a password): like an API key
        # it is never written in the file.
        raise read.fail(
            "url",
            "expected ${NAME}, the environment variable holding the Apprise URL, like "
            'url = "${APPRISE_URL}"',
        )
    _check_references(read, "url", url)
    return AppriseNotifier(
        name=name,
        on=on,
        targets=targets,
        timeout=read.duration("timeout", DEFAULT_WEBHOOK_TIMEOUT, longest=MAX_TIMEOUT),
        url=url,
    )


def _has_userinfo(url: str) -> bool:
    """Whether the authority of `url` (what precedes its path, query or fragment) holds an @."""
    authority = re.split(r"[/?#]", url.partition("//")[2] or url, maxsplit=1)[0]
    return "@" in authority


def _headers(read: _Reader) -> dict[str, str]:
    """A `headers` table; a credential header's value must be read from the environment."""
    headers = read.mapping("headers")
    for header, value in headers.items():
        if not isinstance(value, str):
            raise read.fail("headers", f"{header}: expected a string value")
        _check_references(read, "headers", value, f"{header}: ")
        if carries_credentials(header) and not ENV_REFERENCE.search(value):
            raise read.fail(
                "headers",
                f"{header}: secrets are not written in the config file; export it and write "
                f'{header} = "${{MY_TOKEN}}" (or "Bearer ${{MY_TOKEN}}"; an API key: '
                'api_key_env = "MY_API_KEY")',
            )
    return headers


def _choice(read: _Reader, key: str, value: str, choices: type[_Choice]) -> _Choice:
    allowed = [c.value for c in choices]
    if value not in allowed:
        raise read.fail(
            key,
            f"unknown value {value!r}{did_you_mean(value, allowed)}; one of: {', '.join(allowed)}",
        )
    return choices(value)


def _check_references(read: _Reader, key: str, text: str, lead: str = "") -> None:
    for name in ENV_REFERENCE.findall(text):
        if not _ENV_NAME.match(name):
            raise read.fail(key, f"{lead}${{{name}}} does not name an environment variable")


def targets_from_environment() -> tuple[Target, ...]:
    """One target per well-known provider key variable that is set (used with no config)."""
    return tuple(
        _build_target(
            p.name, _Reader({"provider": p.name, "model": p.default_model}, "environment:")
        )
        for p in presets_with_keys()
    )


def key_status(target: Target) -> str:
    """What `fpmon targets` says of a target's key: read from the environment, never kept."""
    if target.api_key_env is None or target.auth is Auth.NONE:
        return "not needed"
    if os.environ.get(target.api_key_env):
        return "set"
    return "MISSING" if target.auth in (Auth.BEARER, Auth.API_KEY) else "not set (optional)"
