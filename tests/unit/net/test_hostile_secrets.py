"""Hostile input against secrets, at unit level: a server echoing a key in any JSON encoding
of it, through every field it controls; credential headers, userinfo and webhook URLs in the
configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from fp_monitor.config.settings import load_config
from fp_monitor.domain.errors import ConfigError, ExitCode
from fp_monitor.domain.models import RAW_RESPONSE_LIMIT, Observation
from fp_monitor.net import redact as redact_module
from fp_monitor.net.redact import redact, register, scrub
from fp_monitor.traffic.recording import Exchange, Recorder, RequestInfo

KEY = "gw/CANARY+" + "0123456789abcdef" * 2
"""Not shaped like a provider's key: only its registration can hide it."""


def json_forms(key: str) -> dict[str, str]:
    """The key as the inside of a JSON string, in the encodings JSON allows."""
    plain = json.dumps(key)[1:-1]
    return {
        "plain": plain,
        "escaped-slash": plain.replace("/", "\\/"),
        "all-u-lower": "".join(f"\\u{ord(c):04x}" for c in key),
        "all-u-upper": "".join(f"\\u{ord(c):04X}" for c in key),
        "mixed": "".join(
            f"\\u{ord(c):04x}" if i % 3 == 0 else "\\/" if c == "/" else c
            for i, c in enumerate(key)
        ),
    }


FORMS = json_forms(KEY)


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact_module, "_registered", set())


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_registered_key_is_hidden_in_every_json_encoding(form: str) -> None:
    register(KEY)
    body = f'{{"error": {{"message": "bad key {form} given"}}}}'
    hidden = redact(body)
    assert json.loads(hidden) == {"error": {"message": "bad key *** given"}}


def test_a_key_outside_the_bmp_is_hidden_as_a_surrogate_pair() -> None:
    key = "gw-\U0001f511-secret"
    register(key)
    assert redact(json.dumps({"k": key})) == '{"k": "***"}'  # ensure_ascii: \ud83d\udd11


def test_half_of_a_key_at_the_cut_of_the_raw_response_is_not_kept() -> None:
    register(KEY)
    raw = "x" * (RAW_RESPONSE_LIMIT - 10) + FORMS["escaped-slash"] + "tail"
    now = datetime.now(UTC)
    observation = Observation("t", "custom", "http://h", "m", now, 1, 1.0, "s", raw_response=raw)
    kept = scrub(observation).raw_response
    assert kept == "x" * (RAW_RESPONSE_LIMIT - 10) + "***tail"[:10]
    assert KEY[:8] not in (kept or "")


def answer(form: str) -> bytes:
    return (
        f'{{"id": "{form}", "model": "m-{form}", "system_fingerprint": "fp-{form}", '
        '"choices": [{"index": 0, "message": {"content": "Hi"}}]}'
    ).encode()


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_recorded_answer_echoing_the_requests_key_keeps_none_of_it(
    form: str, streaming: bool, isolated: Path
) -> None:
    """The recording clients and the proxy decode answers here: the request's own key, never
    registered, is hidden from the fingerprint, model, response id and tracked headers."""
    sent = [("authorization", f"Bearer {KEY}")]
    info = RequestInfo.of("http://127.0.0.1:9/v1/chat/completions", b"{}", {}, sent)
    recorder = Recorder("app", history=isolated / "h.db")
    recorder.track_headers = ("x-echo",)
    kind = "text/event-stream" if streaming else "application/json"
    headers = httpx2.Headers({"content-type": kind, "x-echo": KEY, "x-request-id": KEY})
    exchange = Exchange(recorder, info, 200, headers)
    body = answer(form)
    exchange.feed(b"data: " + body + b"\n\ndata: [DONE]\n\n" if streaming else body)
    observation = exchange.conclude()
    assert observation is not None and observation.ok
    assert (observation.fingerprint, observation.resolved_model) == ("fp-***", "m-***")
    assert (observation.response_id, observation.request_id) == ("***", "***")
    assert observation.headers == {"x-echo": "***"}


LITERAL = "s3cr3t-literal-value-42"
CREDENTIAL_HEADER_NAMES = [
    "Authorization",
    "Proxy-Authorization",
    "api-key",
    "X-API-Key",
    "Ocp-Apim-Subscription-Key",
    "X-Goog-Api-Key",
    "Cookie",
    "X-Auth-Token",
    "X-Amz-Security-Token",
    "X-Jwt-Assertion",
    "Helicone-Auth",
    "X-Portkey-Api-Key",
    "X-Client-Secret",
    "X-Upstream-Password",
]


def refused(tmp_path: Path, text: str) -> str:
    """The one-line message of a config refused with exit code 2."""
    path = tmp_path / "fpmon.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refusal:
        load_config(path)
    message = str(refusal.value)
    assert refusal.value.exit_code == ExitCode.USAGE
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def target(extra: str, base_url: str = "http://127.0.0.1:9/v1") -> str:
    return f'[targets.gw]\nprovider = "custom"\nmodel = "m"\nbase_url = "{base_url}"\n{extra}\n'


@pytest.mark.parametrize("header", CREDENTIAL_HEADER_NAMES)
def test_a_literal_credential_header_of_a_target_is_refused_unechoed(
    tmp_path: Path, header: str
) -> None:
    message = refused(tmp_path, target(f'headers = {{ "{header}" = "Bearer {LITERAL}" }}'))
    assert f"[targets.gw] headers: {header}: secrets are not written in the config file" in message
    assert "${MY_TOKEN}" in message and LITERAL not in message


@pytest.mark.parametrize("header", CREDENTIAL_HEADER_NAMES)
def test_a_credential_header_read_from_the_environment_is_accepted(
    tmp_path: Path, header: str
) -> None:
    path = tmp_path / "fpmon.toml"
    path.write_text(target(f'headers = {{ "{header}" = "Bearer ${{GW_TOKEN}}", X-Team = "llm" }}'))
    (loaded,) = load_config(path).targets
    assert loaded.headers == {header: "Bearer ${GW_TOKEN}", "X-Team": "llm"}


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user:s3cr3t@127.0.0.1:9/v1",
        "https://:s3cr3t@api.example.com/v1",
        "https://s3cr3t@api.example.com",
        "http://a@b@127.0.0.1:9/v1",
        "http://127.0.0.1:9\\\\@s3cr3t.example/v1",
        "user:s3cr3t@api.example.com/v1",
    ],
    ids=["user-password", "password-only", "user-only", "two-at", "backslash", "no-scheme"],
)
def test_userinfo_in_a_base_url_is_refused_unechoed(tmp_path: Path, base_url: str) -> None:
    message = refused(tmp_path, target("", base_url=base_url))
    assert "[targets.gw] base_url: holds a user name or password" in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:9/v1/users/@me", "https://h.example/v1?x=a@b", "http://h/#@x"]
)
def test_an_at_sign_after_the_host_is_not_userinfo(tmp_path: Path, base_url: str) -> None:
    path = tmp_path / "fpmon.toml"
    path.write_text(target("", base_url=base_url))
    assert load_config(path).targets[0].base_url == base_url
