"""Learning a target's served set: when does a target stop learning, and how much to trust it.

A provider serves one model from several backend configurations at once, in skewed shares. A
target's first checks see only the common ones; without learning, every rarer configuration that
shows up later would be reported as `new`, a false alarm. So a target without a lock entry
starts out *learning*: a value outside its known set is `learned` (it joins the set, no alarm)
until the history says the set is probably complete.

"Probably complete" is the Good-Turing estimate of the unseen share: the share of calls served by
configurations never sampled so far is estimated by the share of samples whose value was seen
exactly once. Learning ends when there are enough samples and that estimate is small, or when the
target has been observed for long enough (a cap, so a fleet with a long tail cannot keep a target
learning, and therefore silent, for ever).

Everything here is pure: no I/O and no clock. The caller derives the inputs from the history
(counts per fingerprint token, the age of the first successful observation, whether learning
already ended) and passes the time as an age, so the same inputs always give the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Bounds of `bootstrap_samples` (a config key): at least one request, and a cap so a typo cannot
# send thousands of billed requests in one check.
BOOTSTRAP_MIN = 1
BOOTSTRAP_MAX = 1000


@dataclass(frozen=True)
class LearningSettings:
    """A target's learning keys (all target keys, settable in `[defaults]`)."""

    enabled: bool = True
    """Config key `learning`. False turns bootstrap and learning off: exactly the core rule."""
    bootstrap_samples: int = 20
    """Config key `bootstrap_samples` (1 to 1000): requests of a learning target's first check,
    so the common configurations are known from the start."""
    min_samples: int = 250
    """Config key `learn_min_samples`: successful samples needed before learning can end (the
    Good-Turing estimate means little on a handful of samples). 250 leaves a configuration
    serving 3% of calls unseen with probability 0.0005 (100 left it unseen in 1 of 20 runs of
    benchmarks/detection.py)."""
    learning_samples: int = 9
    """Config key `learn_samples`: requests per check while the target learns (at least
    `samples`), so that it reaches 250 samples in about as many checks as 3 a check reached
    100; each is still one output token."""
    unseen: float = 0.01
    """Config key `learn_unseen`: learning can end once the unseen-share estimate is strictly
    below this share."""
    max_age: float = 86400.0
    """Config key `learn_max`, in seconds from the target's first successful observation:
    learning ends then regardless of the estimate."""

    def __post_init__(self) -> None:
        # A safety net under config.py's validation (which names the file and the target): an
        # impossible setting must not silently give a target that never, or always, learns.
        if not BOOTSTRAP_MIN <= self.bootstrap_samples <= BOOTSTRAP_MAX:
            raise ValueError(
                f"bootstrap_samples must be {BOOTSTRAP_MIN} to {BOOTSTRAP_MAX}, "
                f"not {self.bootstrap_samples}"
            )
        if not BOOTSTRAP_MIN <= self.learning_samples <= BOOTSTRAP_MAX:
            raise ValueError(
                f"learn_samples must be {BOOTSTRAP_MIN} to {BOOTSTRAP_MAX}, "
                f"not {self.learning_samples}"
            )
        if self.min_samples < 0:
            raise ValueError(f"learn_min_samples must be 0 or more, not {self.min_samples}")
        if not 0.0 <= self.unseen <= 1.0:
            raise ValueError(f"learn_unseen must be a share from 0 to 1, not {self.unseen}")
        if not self.max_age >= 0.0:  # written this way so that NaN is refused too
            raise ValueError(f"learn_max must be 0 or more seconds, not {self.max_age}")


@dataclass(frozen=True)
class LearningState:
    """Where a target stands, at one moment, in learning its served set."""

    learning: bool
    """True: a value outside the known set is `learned`, not `new`."""
    samples: int
    """Successful samples so far (the sum of the counts)."""
    unseen_estimate: float | None
    """Good-Turing estimate of the share of calls served by values not yet seen (0 to 1);
    None with no successful sample."""


def _checked(counts: Mapping[str, int]) -> tuple[int, int]:
    """(total samples, values seen exactly once), refusing negative counts (a caller's bug)."""
    total = singletons = 0
    for value, count in counts.items():
        if count < 0:
            raise ValueError(f"negative count {count} for {value!r}")
        total += count
        singletons += count == 1
    return total, singletons


def unseen_estimate(counts: Mapping[str, int]) -> float | None:
    """Good-Turing estimate of the unseen share: values seen exactly once / successful samples.

    `counts` holds successful samples per fingerprint token over the target's history (a value
    with count 0 was not seen and is ignored). None with no sample: nothing is known, which is
    not the same as "nothing unseen"."""
    total, singletons = _checked(counts)
    return singletons / total if total else None


def estimate_converged(counts: Mapping[str, int], settings: LearningSettings) -> bool:
    """The count condition that ends learning: at least `min_samples` samples AND an estimate
    strictly below `unseen`. Both are needed: on few samples a rare value is simply not seen
    yet, and then nothing is seen exactly once either, so the estimate alone would say 0."""
    total, singletons = _checked(counts)
    return total >= settings.min_samples and total > 0 and singletons / total < settings.unseen


def learning_state(
    counts: Mapping[str, int],
    *,
    first_success_age: float | None,
    ended: bool,
    settings: LearningSettings,
    has_lock: bool = False,
) -> LearningState:
    """The learning state of a target, from its history alone.

    counts: successful samples per fingerprint token over the target's history (for the state
    before a check: the earlier checks; after it: this check's samples included).
    first_success_age: seconds from the first successful observation to the moment evaluated
    (None: no success yet).
    ended: learning already ended at an earlier check (the history records it); it ends once
    and never restarts, even if a later rare value raises the estimate again, because otherwise a
    real rollout could reopen learning and be swallowed as `learned`.
    has_lock: the target has a lock entry; then the lock decides and the target never learns.
    """
    estimate = unseen_estimate(counts)
    samples, _ = _checked(counts)
    timed_out = first_success_age is not None and first_success_age >= settings.max_age
    learning = (
        settings.enabled
        and not has_lock
        and not ended
        and not estimate_converged(counts, settings)
        and not timed_out
    )
    return LearningState(learning=learning, samples=samples, unseen_estimate=estimate)


def samples_for_check(
    samples: int,
    *,
    settings: LearningSettings,
    first_check: bool,
    has_lock: bool,
    explicit: bool = False,
    learning: bool = False,
) -> int:
    """Requests to send to a target in this check.

    `samples`: the configured (or `--samples`) number; `first_check`: no earlier success;
    `explicit`: `samples` came from `--samples`, which overrides the bootstrap; `learning`: the
    target is still learning. A learning target's first check sends `bootstrap_samples` so that
    it starts out knowing the common configurations (a `--no-record` first check bootstraps
    too: it is still a first check), and its later checks `learning_samples` until it ends."""
    if not settings.enabled or has_lock or explicit:
        return samples
    if first_check:
        return settings.bootstrap_samples
    return max(samples, settings.learning_samples) if learning else samples


def share_interval(count: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a value's share: `count` of `total` samples (z=1.96: 95%).

    Wilson rather than the normal approximation because shares near 0 or 1 on few samples are
    the common case here, and there the normal interval collapses to a point or leaves [0, 1].
    With no sample the share can be anything: (0, 1)."""
    if total < 0 or not 0 <= count <= total:
        raise ValueError(f"need 0 <= count <= total, not {count} of {total}")
    if total == 0:
        return (0.0, 1.0)
    p = count / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    # The exact bounds at 0 and 1 (the formula gives them up to a rounding error), and a clamp
    # so that rounding never puts a bound outside [0, 1] or on the wrong side of the share.
    low = 0.0 if count == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if count == total else max(p, min(1.0, centre + half))
    return (low, high)


def unseen_probability(share: float, samples: int) -> float:
    """Probability that a configuration serving `share` of calls is still unseen after
    `samples` independent samples: (1 - share) ** samples. It tells how much to trust a known
    set: e.g. a 3% configuration stays unseen after 100 samples with probability 0.048."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be from 0 to 1, not {share}")
    if samples < 0:
        raise ValueError(f"samples must be 0 or more, not {samples}")
    return (1.0 - share) ** samples


TRUST_SHARES = (0.01, 0.02, 0.05, 0.10)
"""Shares for which `stats` says how likely a configuration that size is still unseen."""


@dataclass(frozen=True)
class ValueShare:
    value: str
    samples: int
    low: float
    high: float
    """Wilson 95% interval of the value's share."""


@dataclass(frozen=True)
class Trust:
    """How far to trust a target's known set: what `fpmon stats` shows about learning."""

    learning: bool | None
    """Still learning; None when the target does not learn (learning off, or locked)."""
    samples: int
    unseen_estimate: float | None
    values: tuple[ValueShare, ...]
    """Every fingerprint value seen, most served first."""
    still_unseen: tuple[tuple[float, float], ...]
    """(share s, probability that a configuration of share s is still unseen)."""


def trust(counts: Mapping[str, int], learning: bool | None) -> Trust:
    """The figures behind the known set: shares with intervals and the unseen risk."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return Trust(
        learning=learning,
        samples=total,
        unseen_estimate=unseen_estimate(counts),
        values=tuple(ValueShare(v, n, *share_interval(n, total)) for v, n in ranked if n),
        still_unseen=tuple((s, unseen_probability(s, total)) for s in TRUST_SHARES),
    )
