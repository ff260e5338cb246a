"""What the fake API's model "thinks": first-token logits per prompt and configuration, the
noise between responses, top logprobs in OpenAI's shape, and sampling at a temperature.

Each served configuration (a position in a ModelBehaviour's fingerprints, so two positions
with one fingerprint are two configurations under one fingerprint) gets logits for any prompt,
deterministic from the prompt, the model and its position: the model's logits plus a small
offset per configuration (`numerics`, the way kernels or GPUs differ). Every response adds
noise to the logits (`noise`, with a share `outliers` of responses `outlier_scale` times as
noisy), the way batching and non-deterministic kernels do. A perturbation moves one
configuration's logits by `size` times the noise without touching its fingerprint: a silent
change to rehearse.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

VOCAB = (
    "Blue", "Red", "Green", "Purple", "Orange", "Yellow", "Black", "White", "Silver", "Gold",
    "Teal", "Pink", "Gray", "Crimson", "Indigo", "Violet", "Amber", "Navy", "Coral", "Olive",
    "I", "The", "My", "It", "Hello", "Hi", "Sure", "Well", "As", "Honestly",
    "Seven", "Three", "Forty", "One", "Twelve", "Nine", "Apple", "River", "Stone", "Cloud",
    "Maybe", "Yes", "No", "Light", "Dark", "Sky", "Sea", "Sun", "Moon", "Star",
)  # fmt: skip
"""First tokens the fake can answer with (the canary prompt asks for one word)."""
MAX_TOP_LOGPROBS = 20
"""OpenAI's limit of `top_logprobs`."""


def _normal(seed: str, count: int, spread: float) -> list[float]:
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    return [rng.gauss(0.0, spread) for _ in range(count)]


def logits(
    prompt: str,
    model: str,
    configuration: int,
    *,
    numerics: float,
    noise: float,
    perturbation: float = 0.0,
) -> list[float]:
    """One configuration's first-token logits for `prompt` (before response noise)."""
    base = _normal(f"model\0{model}\0{prompt}", len(VOCAB), 1.5)
    offset = _normal(f"configuration\0{model}\0{configuration}\0{prompt}", len(VOCAB), numerics)
    shifted = [b + o for b, o in zip(base, offset, strict=True)]
    if perturbation:
        move = _normal(
            f"perturbation\0{model}\0{configuration}\0{perturbation}\0{prompt}",
            len(VOCAB),
            perturbation * noise,
        )
        shifted = [v + m for v, m in zip(shifted, move, strict=True)]
    return shifted


def respond(
    values: Sequence[float],
    rng: random.Random,
    *,
    noise: float,
    outliers: float,
    outlier_scale: float,
    temperature: float,
) -> tuple[str, list[tuple[str, float]]]:
    """One response: (the sampled first token, every token's logprob, most likely first)."""
    scale = noise * (outlier_scale if rng.random() < outliers else 1.0)
    noisy = [v + rng.gauss(0.0, scale) for v in values]
    top = max(noisy)
    normalizer = top + math.log(sum(math.exp(v - top) for v in noisy))
    logprobs = sorted(
        ((token, v - normalizer) for token, v in zip(VOCAB, noisy, strict=True)),
        key=lambda kv: -kv[1],
    )
    if temperature <= 0:
        return logprobs[0][0], logprobs
    weights = [math.exp((lp - logprobs[0][1]) / temperature) for _, lp in logprobs]
    token = rng.choices([t for t, _ in logprobs], weights)[0]
    return token, logprobs


def logprobs_content(
    token: str, logprobs: Sequence[tuple[str, float]], top: int
) -> list[dict[str, Any]]:
    """OpenAI's `choices[0].logprobs.content`: the one generated token and its top list."""

    def entry(name: str, value: float) -> dict[str, Any]:
        return {"token": name, "logprob": round(value, 6), "bytes": list(name.encode())}

    chosen = dict(logprobs)[token]
    return [
        {
            **entry(token, chosen),
            "top_logprobs": [entry(name, value) for name, value in logprobs[:top]],
        }
    ]
