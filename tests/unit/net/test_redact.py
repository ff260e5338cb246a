"""Keys never leave the process: registered secrets and key-shaped tokens are hidden."""

from __future__ import annotations

import pytest

from fp_monitor.net import redact as redact_module
from fp_monitor.net.redact import redact, register


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with nothing registered, and leaves nothing behind."""
    monkeypatch.setattr(redact_module, "_registered", set())


def test_a_registered_secret_is_replaced_everywhere() -> None:
    register("local-secret-1234")
    text = "auth failed for local-secret-1234; retried with local-secret-1234"
    assert redact(text) == "auth failed for ***; retried with ***"


def test_a_secret_that_is_not_key_shaped_is_only_hidden_once_registered() -> None:
    text = "token hunter2hunter2 rejected"
    assert redact(text) == text
    register("hunter2hunter2")
    assert redact(text) == "token *** rejected"


def test_the_longest_registered_secret_wins() -> None:
    register("abcd")
    register("abcdefgh-long")
    assert redact("x abcdefgh-long y abcd z") == "x *** y *** z"


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dF",
        "sk-ant-api03-Zq9xW3vB7nM2kL5pR8tY1uI4",
        "sk-Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dF",
        "sk-proj-abc*************************xyz9",
        "xai-Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dFgH",
        "gsk_Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dF",
        "pplx-Zq9xW3vB7nM2kL5pR8tY1uI4oP6aS0dF",
        "fw_Zq9xW3vB7nM2kL5pR8tY1uI4",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
    ],
    ids=["openai", "anthropic", "openai-legacy", "masked", "xai", "groq", "pplx", "fw", "gemini"],
)
def test_key_shaped_tokens_are_replaced_without_registration(key: str) -> None:
    message = f"Incorrect API key provided: {key}. You can find your API key at ..."
    hidden = redact(message)
    assert key not in hidden
    assert key[:10] not in hidden
    assert hidden == "Incorrect API key provided: ***. You can find your API key at ..."


@pytest.mark.parametrize("short", ["", "a", "ab", "abc"])
def test_short_strings_are_not_registered(short: str) -> None:
    register(short)
    text = "a cab, a cabbage, abc and ab"
    assert redact(text) == text


def test_ordinary_text_is_untouched() -> None:
    register("sk-proj-registered-000000")
    text = "risk-assessment task-force: 429 rate limited, fp_6ca29cf396, gpt-4o-2024-08-06"
    assert redact(text) == text
