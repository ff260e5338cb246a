"""Provider presets: data, not code paths (docs: Reference, Configuration, Presets; and
Explanation, What fingerprints mean)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from fp_monitor.domain.fingerprints import NO_SIGNAL_ADVICE


class Auth(StrEnum):
    BEARER = "bearer"
    """Authorization: Bearer KEY; the key variable must be set."""
    OPTIONAL_BEARER = "optional-bearer"
    """Authorization: Bearer KEY when the key variable is set; none otherwise (local servers)."""
    API_KEY = "api-key"
    """Azure's api-key: KEY header."""
    NONE = "none"


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str
    auth: Auth
    key_env: str | None
    token_param: str
    default_model: str | None
    """Used when targets are built from the environment (no config file)."""
    top_logprobs: int = 0
    """The most top logprobs the API returns for a token; 0: it has no logprobs (as far as
    its documentation says), so `canary = "auto"` samples the first token instead."""


_MCT = "max_completion_tokens"
_MT = "max_tokens"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "openai",
            "https://api.openai.com/v1",
            Auth.BEARER,
            "OPENAI_API_KEY",
            _MCT,
            "gpt-4o-mini",
            top_logprobs=20,
        ),
        Preset("azure", "", Auth.API_KEY, "AZURE_OPENAI_API_KEY", _MCT, None, top_logprobs=20),
        Preset("xai", "https://api.x.ai/v1", Auth.BEARER, "XAI_API_KEY", _MT, "grok-4"),
        Preset(
            "groq",
            "https://api.groq.com/openai/v1",
            Auth.BEARER,
            "GROQ_API_KEY",
            _MT,
            "llama-3.1-8b-instant",
        ),
        Preset(
            "deepseek",
            "https://api.deepseek.com",
            Auth.BEARER,
            "DEEPSEEK_API_KEY",
            _MT,
            "deepseek-chat",
            top_logprobs=20,
        ),
        Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            Auth.BEARER,
            "OPENROUTER_API_KEY",
            _MT,
            "openai/gpt-4o-mini",
        ),
        Preset(
            "together",
            "https://api.together.xyz/v1",
            Auth.BEARER,
            "TOGETHER_API_KEY",
            _MT,
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ),
        Preset(
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            Auth.BEARER,
            "FIREWORKS_API_KEY",
            _MT,
            "accounts/fireworks/models/llama-v3p1-8b-instruct",
            top_logprobs=5,
        ),
        Preset(
            "mistral",
            "https://api.mistral.ai/v1",
            Auth.BEARER,
            "MISTRAL_API_KEY",
            _MT,
            "mistral-small-latest",
        ),
        Preset(
            "perplexity",
            "https://api.perplexity.ai",
            Auth.BEARER,
            "PERPLEXITY_API_KEY",
            _MT,
            "sonar",
        ),
        Preset(
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            Auth.BEARER,
            "GEMINI_API_KEY",
            _MT,
            "gemini-2.5-flash",
        ),
        Preset(
            "anthropic",
            "https://api.anthropic.com/v1",
            Auth.BEARER,
            "ANTHROPIC_API_KEY",
            _MT,
            "claude-haiku-4-5",
        ),
        # Ollama's OpenAI-compatible API returns up to 20 top logprobs (0.12.11 and later)
        Preset("ollama", "http://127.0.0.1:11434/v1", Auth.NONE, None, _MT, None, top_logprobs=20),
        Preset(
            "vllm",
            "http://127.0.0.1:8000/v1",
            Auth.OPTIONAL_BEARER,
            "VLLM_API_KEY",
            _MT,
            None,
            top_logprobs=20,  # vLLM's default --max-logprobs
        ),
        Preset(
            "lmstudio",
            "http://127.0.0.1:1234/v1",
            Auth.OPTIONAL_BEARER,
            "LMSTUDIO_API_KEY",
            _MT,
            None,
        ),
        Preset(
            "llamacpp",
            "http://127.0.0.1:8080/v1",
            Auth.OPTIONAL_BEARER,
            "LLAMACPP_API_KEY",
            _MT,
            None,
            top_logprobs=20,
        ),
        Preset("custom", "", Auth.OPTIONAL_BEARER, None, _MT, None),
    )
}

AZURE_DEFAULT_API_VERSION = "2024-10-21"


def provider_for_url(url: str) -> str:
    """The preset whose API `url` belongs to (same host and port), else custom."""
    netloc = urlsplit(url).netloc.lower()
    if netloc.endswith(".openai.azure.com"):
        return "azure"
    for preset in PRESETS.values():
        if preset.base_url and urlsplit(preset.base_url).netloc == netloc:
            return preset.name
    return "custom"


def presets_with_keys() -> list[Preset]:
    """The presets whose well-known key variable is set in the environment (and that have a
    default model to probe): what `fpmon init` writes, and the targets of a run with no config."""
    return [
        p for p in PRESETS.values() if p.key_env and p.default_model and os.environ.get(p.key_env)
    ]


# --- what each provider's API does with fingerprints, streams and logprobs -------------------


class FingerprintSupport(StrEnum):
    SENT = "sent"
    """A value that changes with the backend."""
    CONSTANT = "constant"
    """The same value whatever serves: no signal."""
    NOT_SENT = "not sent"
    """No system_fingerprint (absent, null or empty), by the provider's own docs and SDKs."""
    DEPENDS = "depends"
    """Passed through from whichever provider the request is routed to."""
    UNDOCUMENTED = "undocumented"


class StreamShape(StrEnum):
    """Which chunks of a streamed answer carry the fingerprint (see domain/streams.py, which
    records every shape alike)."""

    EVERY_CHUNK = "every chunk"
    AFTER_FILTER = "every chunk after a prompt-filter chunk"
    TERMINAL = "the last chunk only"
    FIRST_CHUNK = "the first chunk only"
    NONE = "none"
    UNDOCUMENTED = "undocumented"


class Logprobs(StrEnum):
    """What the API does with `logprobs` / `top_logprobs` (for the canary's `auto` mode)."""

    SUPPORTED = "supported"
    REFUSED = "refused"
    """Answered with a 400."""
    IGNORED = "ignored"
    """Accepted, and no logprobs come back."""
    UNDOCUMENTED = "undocumented"
    """Try them; a refusal is an answer."""


@dataclass(frozen=True)
class Realities:
    """How a provider's API behaves where fpmon looks: its fingerprint, the chunks of a stream
    that carry it, and its logprobs. Data from each provider's own documentation and SDKs (and
    the servers' source for vLLM, llama.cpp, SGLang and Ollama); `undocumented` where they say
    nothing."""

    fingerprint: FingerprintSupport
    stream: StreamShape
    logprobs: Logprobs
    note: str = ""
    """What the fingerprint looks like, or why there is none."""

    @property
    def signal(self) -> bool:
        """Whether the fingerprint can tell one backend from another at all."""
        return self.fingerprint not in (FingerprintSupport.CONSTANT, FingerprintSupport.NOT_SENT)

    def summary(self) -> str:
        """One line for `fpmon init`: what the fingerprint is worth, and the logprobs."""
        fingerprint = {
            FingerprintSupport.SENT: f"sends system_fingerprint (streams it on {self.stream})",
            FingerprintSupport.CONSTANT: "sends a constant system_fingerprint",
            FingerprintSupport.NOT_SENT: "sends no system_fingerprint",
            FingerprintSupport.DEPENDS: "passes the routed provider's system_fingerprint on",
            FingerprintSupport.UNDOCUMENTED: "its system_fingerprint is undocumented",
        }[self.fingerprint]
        parts = [fingerprint, self.note, f"logprobs {self.logprobs}"]
        if not self.signal:
            parts.append(f"no usable fingerprint: {NO_SIGNAL_ADVICE}")
        return "; ".join(part for part in parts if part)


_F, _S, _L = FingerprintSupport, StreamShape, Logprobs
REALITIES: dict[str, Realities] = {
    "openai": Realities(_F.SENT, _S.EVERY_CHUNK, _L.SUPPORTED, "fp_ and 10 hex digits, opaque"),
    "azure": Realities(_F.SENT, _S.AFTER_FILTER, _L.SUPPORTED, "as OpenAI's"),
    "xai": Realities(_F.SENT, _S.EVERY_CHUNK, _L.UNDOCUMENTED, "fp_ and 10 hex digits, opaque"),
    "groq": Realities(_F.SENT, _S.EVERY_CHUNK, _L.REFUSED, "fp_ and 10 hex digits, opaque"),
    "deepseek": Realities(
        _F.SENT, _S.EVERY_CHUNK, _L.SUPPORTED, "decoded: a hash, the deployment, its features"
    ),
    "openrouter": Realities(_F.DEPENDS, _S.UNDOCUMENTED, _L.UNDOCUMENTED),
    "together": Realities(_F.NOT_SENT, _S.NONE, _L.UNDOCUMENTED),
    "fireworks": Realities(_F.UNDOCUMENTED, _S.UNDOCUMENTED, _L.SUPPORTED),
    "mistral": Realities(_F.NOT_SENT, _S.NONE, _L.UNDOCUMENTED),
    "perplexity": Realities(_F.UNDOCUMENTED, _S.UNDOCUMENTED, _L.UNDOCUMENTED),
    "gemini": Realities(_F.NOT_SENT, _S.NONE, _L.UNDOCUMENTED),
    "anthropic": Realities(_F.NOT_SENT, _S.NONE, _L.IGNORED),
    "ollama": Realities(_F.CONSTANT, _S.EVERY_CHUNK, _L.SUPPORTED, "always fp_ollama"),
    "vllm": Realities(
        _F.SENT,
        _S.TERMINAL,
        _L.SUPPORTED,
        "decoded: version, parallelism, config hash; null in its none mode",
    ),
    "lmstudio": Realities(_F.UNDOCUMENTED, _S.UNDOCUMENTED, _L.UNDOCUMENTED),
    "llamacpp": Realities(
        _F.SENT, _S.EVERY_CHUNK, _L.SUPPORTED, "decoded: build number and commit"
    ),
    "custom": Realities(_F.UNDOCUMENTED, _S.UNDOCUMENTED, _L.UNDOCUMENTED),
}
"""Per preset (every preset has an entry)."""


def realities(provider: str) -> Realities:
    """The preset's realities; a provider fpmon has no preset for is undocumented."""
    return REALITIES.get(provider, REALITIES["custom"])


REASONING_MODEL = re.compile(
    r"(^|/)(o[1-9](-|$)|gpt-5|grok-4|qwq|deepseek-r1|magistral)|reasoner|thinking|gemini-2\.5",
    re.IGNORECASE,
)
"""Models that reason before they answer: no logprobs, and a visible first token costs hidden
reasoning tokens, so `canary = "auto"` is off for them."""
