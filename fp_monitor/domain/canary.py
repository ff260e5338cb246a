"""The canary: a behaviour fingerprint out of the probe's one output token.

A provider can change what runs behind a model (weights, quantization, kernels) without a new
`system_fingerprint`, or send none at all. The first token's distribution for a fixed prompt
moves with any such change, so each probe sample carries it:

- `logprobs` mode: the first token's top log-probabilities (a vector over up to 20 tokens);
- `sampled` mode: the first token itself, drawn at a fixed temperature (one categorical draw).

A provider serves several configurations at once, and two of them can share one fingerprint
yet differ in numerics, so a target learns a *set* of signatures per fingerprint, like its set
of fingerprints, with the same learning phase and lock.

logprobs. A signature is the mean top-logprob vector of the samples that joined it and the
distances of those samples from it (each measured before the sample joined, so that the spread
is what a new sample of the same configuration shows). The distance of a sample from a
signature is the mean, over the union of their tokens, of the absolute logprob difference (a
token missing from a top list takes that list's lowest logprob, as in Chauvin et al.), after
removing the median difference (a shift of every logprob is the softmax normalizer moving,
which one wild logit does) and leaving out the largest tenth of the differences, so that one
token crossing the top-k boundary or one wild value cannot make a sample look foreign. The
tolerance of a signature is its own samples' distances: a new distance inside them has the
empirical p-value; beyond the largest, a Pareto tail fitted to the largest ones (Hill)
extrapolates, so heavy-tailed noise gives a wide tolerance and tight noise a narrow one. A
young signature borrows the spread of the target's other signatures (the noise comes from the
serving stack).

Per sample, the best-matching signature of the sample's fingerprint decides:
- while learning: p >= SUSPECT_P joins it (and teaches it), anything else founds a new
  signature (`learned`);
- after learning: p >= SUSPECT_P is `known` (a learned signature is no longer taught, so that
  no slow drift can drag it along; a young one founded since is, until OWN_MIN members);
- p < DRIFT_P: far outside every known behaviour, `drift` at once;
- in between: `suspect`. One unusual response is not an alarm; a second one that agrees with
  it (both outside every known signature and at most half as far from each other as from
  them) is a new behaviour: `drift`, with Fisher's combination of the two p-values. Two
  outliers do not agree: each is off in its own direction.

sampled. A signature is a count of first tokens per fingerprint, learned while the target
learns and not taught after (a change's first samples look like it before they are told
apart). After learning, the newest samples of the fingerprint, at each of the SCAN lengths,
are compared with each known signature by a G-test of homogeneity (Williams' correction, rare
tokens pooled) and by a surprisal test (are they as likely as the signature's own samples?
a permutation test over both, so that it holds however few samples the signature has); the
least p-value, corrected for the tests taken, decides: `drift` needs p < SAMPLED_DRIFT_P and
a total-variation distance of at least EFFECT_FLOOR, so a tiny but significant shift is not
an alarm; p < SAMPLED_SUSPECT_P, the first hint of a change, is a `suspect`, which takes
SAMPLED_CONFIRM confirmation samples a round.

Pure: samples and signatures in, a verdict and the updated signatures out. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

SUSPECT_P = 1e-3
"""Below this a sample matches no signature: outside every known behaviour."""
JOIN_P = 0.01
"""After learning, a sample teaches a young signature only from this p on (well inside it)."""
AGREE_RATIO = 0.35
"""Two unusual responses agree when they are at most this share as far from each other as
from every known signature."""
DRIFT_P = 1e-10
"""Below this one response alone is `drift`. Above it, a second response must agree (see
`judge`): an outlier never seen while learning must not be an alarm on its own."""
KEEP = 64
"""Member distances a signature keeps: its largest ones (the tail is what the tolerance reads)."""
OWN_MIN = 20
"""Members a signature needs before its own spread is its tolerance; before, the pooled one."""
POOL_MIN = 10
"""Measured distances the target needs before the pooled spread is trusted; before, each
sample's distance to its nearest neighbour in the check stands in (a bootstrap check)."""
FREEZE = 500
"""A signature stops learning at this many members, so that no slow drift can drag it along."""
TAIL_MIN = 5
"""Largest distances needed to fit the tail; with fewer, a heavy tail (ALPHA_FEW) is assumed."""
ALPHA_FEW = 2.0
ALPHA_MIN = 3.0
"""The heaviest tail the fit may assume beyond the largest distances seen: a few outliers
among the members (a bump at 5x the noise) make the Hill estimate near 1, which would put a
substituted model (30x the noise) inside the tolerance; noise of finite variance decays faster
than the cube."""
ALPHA_MAX = 20.0
RESOLUTION = 0.005
"""Distances below this many nats are not told apart: providers round their logprobs, and a
bit-exact provider must not alarm on a last-digit difference."""
TRIM = 0.1
"""Share of the largest per-token differences left out of a distance."""
MAX_TOKENS = 48
"""Tokens a logprobs signature keeps (its most likely ones)."""
CONFIRM = 6
"""Samples a check adds for a target with a suspect: a change is confirmed in the check that
first sees it whenever one of them reaches the same configuration (each costs one token)."""
CONFIRM_ROUNDS = 2
"""Rounds of CONFIRM samples while a suspect stays unconfirmed: a configuration serving 30%
of calls is missed by both with probability 0.7^12 = 1.4%."""
SAMPLED_CONFIRM = 9
"""sampled: samples a confirmation round adds. A first token carries far less than a top-20
list, and a sampled suspect is a window leaning away from its signature, not one response:
its evidence is bought in larger steps."""
CANDIDATES = 4
"""Unconfirmed behaviours remembered per target (the newest): a change is confirmed within a
check or two (see CONFIRM), while each remembered outlier is one more chance of a false match."""
AGREE_P = 0.05
"""Two agreeing responses are as close as two of one configuration: in the bulk of the noise."""

RECENT = 240
"""The target's newest samples (of every fingerprint) that a check reads: sampled mode tests
windows of them, up to the longest SCAN of one fingerprint."""
SCAN = (12, 18, 24, 30, 45, 60, 90, 120)
"""sampled: the newest samples tested, at each of these lengths (those there are): a change
fills a short window with new samples checks before it fills a long one, where the samples
from before it dilute the evidence; a long one sees a subtler change. The least p-value
counts, times the tests taken."""
SAMPLED_DRIFT_P = 1e-6
SMOOTHING = 0.5
"""sampled: added to every token's count (Jeffreys) when the surprisal test takes shares."""
CHERNOFF_MAX_RATE = 20.0
"""The surprisal test's search for the tightest Chernoff bound stops at this rate."""
SAMPLED_SUSPECT_P = 0.5
"""sampled: below this (and above SAMPLED_DRIFT_P) the check is a suspect and takes the
confirmation samples: one token per sample carries little, so evidence is bought where it is
needed, not at every check. Loose on purpose: three samples a check cannot prove a change
within ten checks, so the first hint of one (the least of the window p-values, corrected,
under one half) buys the samples that can; an unchanged model pays for it with one or two
samples a check on average."""
EFFECT_FLOOR = 0.15
"""sampled: the least total-variation distance that is an alarm."""
SAMPLED_MIN = 60
"""sampled: samples a signature needs before a window is tested against it."""
SAMPLED_FREEZE = 300
POOL_EXPECTED = 1.0
"""sampled: tokens expected fewer times than this (in either sample) are pooled into one."""


class CanaryMode(StrEnum):
    AUTO = "auto"
    LOGPROBS = "logprobs"
    SAMPLED = "sampled"
    OFF = "off"


class CanaryStatus(StrEnum):
    FIRST = "first"
    """No signature was known: this check's samples are the first."""
    LEARNED = "learned"
    """A behaviour not seen before, while learning (or under a fingerprint not seen before)."""
    KNOWN = "known"
    """Every sample matches a known signature."""
    SUSPECT = "suspect"
    """A sample outside every known signature, not yet confirmed: no alarm."""
    DRIFT = "drift"
    """A behaviour outside every known signature, after learning: an alarm."""
    UNAVAILABLE = "unavailable"
    """No sample carried canary data (e.g. the provider ignored the logprob parameters)."""
    UNLOCKED = "unlocked"
    """The target's lock entry accepts no signatures: behaviour is not judged (fpmon accept)."""


_SEVERITY = (
    CanaryStatus.DRIFT,
    CanaryStatus.SUSPECT,
    CanaryStatus.LEARNED,
    CanaryStatus.FIRST,
    CanaryStatus.KNOWN,
)


@dataclass(frozen=True)
class CanarySample:
    """What one probe sample says about behaviour."""

    fingerprint: str
    """The sample's fingerprint token: signatures are learned per fingerprint."""
    top: tuple[tuple[str, float], ...] = ()
    """The first token's top logprobs, most likely first; empty when none came back."""
    token: str | None = None
    """The first token sampled (the visible answer)."""

    def usable(self, mode: CanaryMode) -> bool:
        return bool(self.top) if mode is CanaryMode.LOGPROBS else self.token is not None


@dataclass(frozen=True)
class Signature:
    """One learned behaviour of one fingerprint."""

    id: str
    kind: CanaryMode
    """LOGPROBS or SAMPLED."""
    fingerprint: str
    samples: int
    center: tuple[tuple[str, float], ...] = ()
    """logprobs: mean logprob per token, most likely first."""
    floor: float = 0.0
    """logprobs: mean of the members' lowest returned logprob (a missing token's value)."""
    distances: tuple[float, ...] = ()
    """logprobs: the largest member distances (nats, normalized), largest first."""
    noise: float = 0.0
    """logprobs: mean member distance: the typical response-to-response noise."""
    counts: tuple[tuple[str, int], ...] = ()
    """sampled: first tokens and how often each was drawn."""
    candidate: bool = False
    """Seen once after learning and not confirmed: not a known behaviour."""
    evidence: float | None = None
    """candidate: the p-value of the sample that founded it."""
    outside: float | None = None
    """candidate: that sample's normalized distance from the nearest known signature."""


@dataclass(frozen=True)
class CanaryVerdict:
    """What the canary says of one target's check."""

    mode: CanaryMode
    status: CanaryStatus
    signatures: tuple[str, ...]
    """Ids of the signatures this check's samples matched or founded."""
    known: tuple[str, ...]
    """Ids of the signatures known before the check (of this mode)."""
    p_value: float | None
    """Of the most unusual sample (logprobs) or window (sampled); None when nothing was
    judged against a learned tolerance."""
    distance: float | None
    """logprobs: that sample's distance in nats; sampled: total-variation distance."""
    noise: float | None
    """logprobs: the typical distance of the signature it was measured against."""
    samples: int
    """Samples of this check that carried canary data."""
    drifted: str | None = None
    """The id of the new behaviour, when the status is drift."""

    @property
    def wants_confirmation(self) -> bool:
        """A suspect: more samples in this check can confirm it (or not)."""
        return self.status is CanaryStatus.SUSPECT

    @property
    def confirmation_samples(self) -> int:
        """Samples the next confirmation round takes (0 without a suspect)."""
        if not self.wants_confirmation:
            return 0
        return SAMPLED_CONFIRM if self.mode is CanaryMode.SAMPLED else CONFIRM


@dataclass(frozen=True)
class Judgement:
    verdict: CanaryVerdict
    signatures: tuple[Signature, ...]
    """The target's signatures after the check (of every mode)."""


# --- logprobs: distances, tolerance ---------------------------------------------------------


def distance(top: Sequence[tuple[str, float]], signature: Signature) -> float:
    """How far a sample's logprobs are from a signature's, in nats: over the union of the
    sample's tokens and the signature's as many most likely ones (missing values take the
    floor), the differences less their median, then the mean of their absolute values with the
    largest tenth left out.

    Less the median: logprobs are logits less one normalizer, which every token of the
    vocabulary moves; one wild logit shifts every returned logprob by the same amount, which
    says nothing about the others. The trim: one token crossing the top-k boundary, or one wild
    value, must not make a sample look foreign."""
    sample = dict(top)
    floor = min(sample.values())
    center = dict(signature.center)
    tokens = set(sample) | {token for token, _ in signature.center[: len(sample)]}
    diffs = [sample.get(t, floor) - center.get(t, signature.floor) for t in tokens]
    shift = statistics.median(diffs)
    gaps = sorted(abs(d - shift) for d in diffs)
    keep = len(gaps) - int(len(gaps) * TRIM)
    return sum(gaps[:keep]) / keep


def _normalized(raw: float, members: int) -> float:
    """A distance as if from the true center: a center of n samples is itself off by about
    1/sqrt(n) of the noise; and nothing below the providers' rounding."""
    return max(raw / math.sqrt(1 + 1 / members), RESOLUTION)


def tail_p(members: int, largest: Sequence[float], z: float) -> float:
    """P(a member-like distance >= z) from `members` distances whose largest are `largest`
    (descending). Inside them: the empirical share; beyond: a Pareto tail fitted on the top
    fifth (Hill), assumed heavy (ALPHA_FEW) when there are too few to fit."""
    if members <= 0 or not largest:
        return 1.0
    above = sum(1 for d in largest if d >= z)
    if above:
        return min(1.0, (above + 1) / (members + 1))
    k = min(len(largest) - 1, max(TAIL_MIN, members // 5))
    p: float
    if k < TAIL_MIN:
        p = (largest[0] / z) ** ALPHA_FEW / (members + 1)
    else:
        u = largest[k]
        logs = sum(math.log(d / u) for d in largest[:k])
        alpha = min(k / logs, ALPHA_MAX) if logs > 0 else ALPHA_MAX
        # The Hill estimate from k points is off by about 1/sqrt(k): take the heavier end.
        alpha = max(alpha * (1 - 1 / math.sqrt(k)), ALPHA_MIN)
        p = k / (members + 1) * (u / z) ** alpha
    return min(p, 1 / (members + 1))


def _pool(signatures: Iterable[Signature]) -> tuple[int, tuple[float, ...]]:
    members, largest = 0, list[float]()
    for signature in signatures:
        members += signature.samples
        largest.extend(signature.distances)
    return members, tuple(sorted(largest, reverse=True)[:KEEP])


def _neighbours(samples: Sequence[CanarySample]) -> list[float]:
    """Each sample's normalized distance to its nearest other sample of its fingerprint (inf
    when it has none): the noise, before any signature has measured it. Two samples of one
    configuration are each other's nearest; a configuration sampled once is far from all."""
    alone = [found_logprobs(s) for s in samples]
    nearest = []
    for i, sample in enumerate(samples):
        gaps = [
            distance(sample.top, other)
            for j, other in enumerate(alone)
            if j != i and other.fingerprint == sample.fingerprint
        ]
        nearest.append(_normalized(min(gaps), 1) if gaps else math.inf)
    return nearest


def _score(
    top: Sequence[tuple[str, float]],
    signature: Signature,
    pooled: tuple[int, tuple[float, ...]],
) -> tuple[float, float, float]:
    """(p-value, raw distance, normalized distance) of a sample against a signature."""
    raw = distance(top, signature)
    z = _normalized(raw, signature.samples)
    if signature.samples >= OWN_MIN:
        return tail_p(signature.samples, signature.distances, z), raw, z
    return tail_p(*pooled, z), raw, z


def _new_id(kind: CanaryMode, fingerprint: str, content: object) -> str:
    text = json.dumps([kind.value, fingerprint, content], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def found_logprobs(
    sample: CanarySample, *, candidate: bool = False, evidence: float | None = None
) -> Signature:
    """A signature of one sample."""
    top = tuple(sorted(sample.top, key=lambda kv: -kv[1]))[:MAX_TOKENS]
    return Signature(
        id=_new_id(CanaryMode.LOGPROBS, sample.fingerprint, top),
        kind=CanaryMode.LOGPROBS,
        fingerprint=sample.fingerprint,
        samples=1,
        center=top,
        floor=min(lp for _, lp in top),
        candidate=candidate,
        evidence=evidence,
    )


def join_logprobs(
    signature: Signature, top: Sequence[tuple[str, float]], z: float | None
) -> Signature:
    """The signature with one more member (its distance `z` measured before it joined)."""
    n = signature.samples
    if n >= FREEZE:
        return signature
    sample = dict(top)
    floor = min(sample.values())
    center = dict(signature.center)
    tokens = set(sample) | set(center)
    merged = {
        t: (n * center.get(t, signature.floor) + sample.get(t, floor)) / (n + 1) for t in tokens
    }
    ranked = tuple(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))[:MAX_TOKENS]
    distances, noise = signature.distances, signature.noise
    if z is not None:
        distances = tuple(sorted((*distances, z), reverse=True)[:KEEP])
        measured = n - 1  # the founding member has no distance
        noise = (noise * measured + z) / (measured + 1)
    return replace(
        signature,
        samples=n + 1,
        center=ranked,
        floor=(n * signature.floor + floor) / (n + 1),
        distances=distances,
        noise=noise,
    )


def fisher(p1: float, p2: float) -> float:
    """Fisher's combination of two independent p-values (chi-square with 4 degrees)."""
    x = -math.log(max(p1 * p2, 1e-300))
    return min(1.0, math.exp(-x) * (1 + x))


# --- sampled: the G-test ---------------------------------------------------------------------


def g_test(reference: Mapping[str, int], window: Mapping[str, int]) -> tuple[float, float]:
    """(p-value, total-variation distance) of the homogeneity of two token counts: a G-test
    with Williams' correction, tokens expected fewer than POOL_EXPECTED times pooled."""
    n1, n2 = sum(reference.values()), sum(window.values())
    if not n1 or not n2:
        return 1.0, 0.0
    tokens = set(reference) | set(window)
    tv = 0.5 * sum(abs(reference.get(t, 0) / n1 - window.get(t, 0) / n2) for t in tokens)
    total = n1 + n2
    kept: list[tuple[int, int]] = []
    pooled = [0, 0]
    for t in sorted(tokens):
        a, b = reference.get(t, 0), window.get(t, 0)
        column = a + b
        if min(column * n1, column * n2) / total < POOL_EXPECTED:
            pooled[0] += a
            pooled[1] += b
        else:
            kept.append((a, b))
    if sum(pooled):
        kept.append((pooled[0], pooled[1]))
    if len(kept) < 2:
        return 1.0, tv
    g = 0.0
    for a, b in kept:
        column = a + b
        for observed, row in ((a, n1), (b, n2)):
            if observed:
                g += observed * math.log(observed * total / (row * column))
    g *= 2
    df = len(kept) - 1
    williams = 1 + (total * (1 / n1 + 1 / n2) - 1) * (
        total * sum(1 / (a + b) for a, b in kept) - 1
    ) / (6 * total * df)
    return chi2_sf(g / williams, df), tv


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with `df` degrees >= x): the regularized upper incomplete gamma."""
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2, x / 2)


def _gamma_q(a: float, x: float) -> float:
    # Numerical Recipes' gammq: the series below a + 1, the continued fraction above.
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        denominator = a
        for _ in range(500):
            denominator += 1
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def found_sampled(fingerprint: str, tokens: Sequence[str]) -> Signature:
    counts = tuple(sorted(Counter(tokens).items()))
    return Signature(
        id=_new_id(CanaryMode.SAMPLED, fingerprint, counts),
        kind=CanaryMode.SAMPLED,
        fingerprint=fingerprint,
        samples=len(tokens),
        counts=counts,
    )


def join_sampled(signature: Signature, tokens: Sequence[str]) -> Signature:
    if signature.samples >= SAMPLED_FREEZE:
        return signature
    counts = Counter(dict(signature.counts))
    counts.update(tokens)
    return replace(
        signature, samples=signature.samples + len(tokens), counts=tuple(sorted(counts.items()))
    )


# --- the verdict -----------------------------------------------------------------------------


@dataclass
class _Outcome:
    """One sample's (or window's) judgement, while the verdict is built."""

    status: CanaryStatus
    signature: str
    p: float | None = None
    distance: float | None = None
    noise: float | None = None


def judge(
    signatures: Sequence[Signature],
    samples: Sequence[CanarySample],
    *,
    mode: CanaryMode,
    learning: bool,
    recent: Sequence[CanarySample] = (),
) -> Judgement:
    """Judge one check's samples against the target's signatures of `mode` (LOGPROBS or
    SAMPLED) and learn from them. `learning`: the target is still learning (a behaviour not
    seen before is `learned`, not `drift`). `recent`: the target's earlier samples, oldest
    first (sampled mode tests a window of them)."""
    if mode not in (CanaryMode.LOGPROBS, CanaryMode.SAMPLED):
        raise ValueError(f"judge needs the logprobs or sampled mode, not {mode}")
    usable = [s for s in samples if s.usable(mode)]
    mine = [s for s in signatures if s.kind is mode]
    others = [s for s in signatures if s.kind is not mode]
    known = tuple(s.id for s in mine if not s.candidate)
    if not usable:
        verdict = CanaryVerdict(mode, CanaryStatus.UNAVAILABLE, (), known, None, None, None, 0)
        return Judgement(verdict, tuple(signatures))
    if mode is CanaryMode.LOGPROBS:
        outcomes, mine = _judge_logprobs(mine, usable, learning)
    else:
        outcomes, mine = _judge_sampled(mine, usable, learning, recent)
    if not known:
        outcomes = [replace(o, status=CanaryStatus.FIRST) for o in outcomes]
    worst = min(outcomes, key=lambda o: (_SEVERITY.index(o.status), o.p if o.p is not None else 2))
    judged = [o for o in outcomes if o.p is not None]
    shown = min(judged, key=lambda o: o.p or 0.0) if judged else None
    if worst.status in (CanaryStatus.DRIFT, CanaryStatus.SUSPECT):
        shown = worst
    verdict = CanaryVerdict(
        mode=mode,
        status=worst.status,
        signatures=tuple(dict.fromkeys(o.signature for o in outcomes)),
        known=known,
        p_value=None if shown is None else shown.p,
        distance=None if shown is None else shown.distance,
        noise=None if shown is None else shown.noise,
        samples=len(usable),
        drifted=worst.signature if worst.status is CanaryStatus.DRIFT else None,
    )
    return Judgement(verdict, (*others, *mine))


def _judge_logprobs(
    signatures: list[Signature], samples: Sequence[CanarySample], learning: bool
) -> tuple[list[_Outcome], list[Signature]]:
    sigs = list(signatures)
    outcomes = []
    measured = len(_pool(s for s in sigs if not s.candidate)[1])
    nearest = _neighbours(samples) if measured < POOL_MIN else []
    for i, sample in enumerate(samples):
        same = [s for s in sigs if s.fingerprint == sample.fingerprint and not s.candidate]
        if not same:
            new = found_logprobs(sample)
            sigs.append(new)
            outcomes.append(_Outcome(CanaryStatus.LEARNED, new.id))
            continue
        pooled = _pool(s for s in sigs if not s.candidate)
        if len(pooled[1]) < POOL_MIN and nearest:
            # Too little measured noise: the other samples' nearest-neighbour distances stand
            # in (this sample's own left out, or a lone configuration would vouch for itself).
            others = [d for j, d in enumerate(nearest) if j != i and d < math.inf]
            merged = sorted((*pooled[1], *others), reverse=True)[:KEEP]
            pooled = (pooled[0] + len(others), tuple(merged))
        scored = [(*_score(sample.top, s, pooled), s) for s in same]
        p, raw, z, best = max(scored, key=lambda item: (item[0], -item[2]))
        noise = best.noise or None
        # While learning, a signature that measures its own noise takes only samples well
        # inside it: two configurations a few noise widths apart are learned apart, not
        # blurred into one wide signature.
        joins = JOIN_P if best.samples >= OWN_MIN or not learning else SUSPECT_P
        if p >= joins and (learning or best.samples < OWN_MIN):
            sigs[sigs.index(best)] = join_logprobs(best, sample.top, z)
            outcomes.append(_Outcome(CanaryStatus.KNOWN, best.id, p, raw, noise))
        elif learning:
            new = found_logprobs(sample)
            sigs.append(new)
            outcomes.append(_Outcome(CanaryStatus.LEARNED, new.id, p, raw, noise))
        elif p >= SUSPECT_P:
            # Known; a learned signature is not taught after learning, so that nothing can
            # drag it along.
            outcomes.append(_Outcome(CanaryStatus.KNOWN, best.id, p, raw, noise))
        elif p < DRIFT_P:
            new = found_logprobs(sample)
            sigs.append(new)
            outcomes.append(_Outcome(CanaryStatus.DRIFT, new.id, p, raw, noise))
        else:
            outcomes.append(_suspect(sigs, sample, p, raw, z, pooled, noise))
    if any(o.status is CanaryStatus.DRIFT for o in outcomes):
        # The other unusual responses of a check that drifted are part of the same change
        # (a rollout moves every configuration at once): known from now on, not a second
        # alarm at the next check.
        waiting = {o.signature for o in outcomes if o.status is CanaryStatus.SUSPECT}
        sigs = [
            replace(s, candidate=False, evidence=None, outside=None) if s.id in waiting else s
            for s in sigs
        ]
    return outcomes, sigs


def _suspect(
    sigs: list[Signature],
    sample: CanarySample,
    p: float,
    raw: float,
    z: float,
    pooled: tuple[int, tuple[float, ...]],
    noise: float | None,
) -> _Outcome:
    """A sample outside every known signature, but not far enough for one response to prove a
    change: drift when it agrees with an earlier unconfirmed one (both far from everything
    known, close to each other, as two responses of one new configuration are; two outliers
    point in different directions), else it waits as a candidate. Updates `sigs`."""
    for candidate in sigs:
        if not candidate.candidate or candidate.fingerprint != sample.fingerprint:
            continue
        mutual = _normalized(distance(sample.top, candidate), 1)
        apart = min(z, candidate.outside or z)
        if mutual <= AGREE_RATIO * apart and tail_p(*pooled, mutual) >= AGREE_P:
            confirmed = replace(
                join_logprobs(candidate, sample.top, None),
                candidate=False,
                evidence=None,
                outside=None,
            )
            sigs[sigs.index(candidate)] = confirmed
            evidence = candidate.evidence if candidate.evidence is not None else 1.0
            return _Outcome(CanaryStatus.DRIFT, candidate.id, fisher(evidence, p), raw, noise)
    new = found_logprobs(sample, candidate=True, evidence=p)
    sigs.append(replace(new, outside=z))
    # Only the newest unconfirmed behaviours are kept.
    for stale in [s for s in sigs if s.candidate][:-CANDIDATES]:
        sigs.remove(stale)
    return _Outcome(CanaryStatus.SUSPECT, new.id, p, raw, noise)


def _judge_sampled(
    signatures: list[Signature],
    samples: Sequence[CanarySample],
    learning: bool,
    recent: Sequence[CanarySample],
) -> tuple[list[_Outcome], list[Signature]]:
    sigs = list(signatures)
    outcomes = []
    by_fingerprint: dict[str, list[str]] = {}
    for sample in samples:
        assert sample.token is not None  # usable() made sure of it
        by_fingerprint.setdefault(sample.fingerprint, []).append(sample.token)
    for fingerprint, tokens in by_fingerprint.items():
        same = [s for s in sigs if s.fingerprint == fingerprint and not s.candidate]
        if not same:
            new = found_sampled(fingerprint, tokens)
            sigs.append(new)
            outcomes.append(_Outcome(CanaryStatus.LEARNED, new.id))
            continue
        if learning:
            # One signature per fingerprint while learning: its first-token distribution.
            grown = max(same, key=lambda s: s.samples)
            sigs[sigs.index(grown)] = join_sampled(grown, tokens)
            outcomes.append(_Outcome(CanaryStatus.KNOWN, grown.id))
            continue
        earlier = [s.token for s in recent if s.fingerprint == fingerprint and s.token is not None]
        sequence = [*earlier, *tokens]
        scored = []
        for signature in same:
            if signature.samples < SAMPLED_MIN:
                scored.append((1.0, 0.0, signature, False))
                continue
            p, tv = _scan(dict(signature.counts), sequence)
            scored.append((p, tv, signature, True))
        p, tv, best, tested = max(scored, key=lambda item: (item[0], -item[1]))
        if p >= SAMPLED_SUSPECT_P or tv < EFFECT_FLOOR:
            if best.samples < SAMPLED_MIN:  # a young signature (of a drift) still learns;
                # a learned one is not taught after learning: the first checks of a change
                # look like it before they are told apart, and would move it towards them.
                sigs[sigs.index(best)] = join_sampled(best, tokens)
            outcomes.append(
                _Outcome(CanaryStatus.KNOWN, best.id, p if tested else None, tv if tested else None)
            )
            continue
        if p >= SAMPLED_DRIFT_P:
            # Not taught to the signature: if it is the start of a change, it must not move.
            outcomes.append(_Outcome(CanaryStatus.SUSPECT, best.id, p, tv))
            continue
        new = found_sampled(fingerprint, tokens)
        sigs.append(new)
        outcomes.append(_Outcome(CanaryStatus.DRIFT, new.id, p, tv))
    return outcomes, sigs


def _scan(reference: Mapping[str, int], sequence: Sequence[str]) -> tuple[float, float]:
    """(p-value, total variation) of the newest samples against a signature's counts: at each
    of the SCAN lengths there are samples for, the lesser p-value of the G-test (any change of
    the distribution) and of the surprisal test (tokens the signature finds unlikely, which a
    G-test over many tokens and few samples hardly sees); the least over them all, corrected
    (Bonferroni) for the number taken."""
    lengths = [n for n in SCAN if n <= len(sequence)] or [len(sequence)]
    tests = []
    for n in lengths:
        newest = sequence[-n:]
        p, tv = g_test(reference, Counter(newest))
        tests.append((min(p, surprisal_test(reference, newest)), tv))
    p, tv = min(tests, key=lambda test: test[0])
    return min(1.0, p * 2 * len(lengths)), tv


def surprisal_test(reference: Mapping[str, int], window: Sequence[str]) -> float:
    """The p-value that the window's tokens are, on average, as likely as the signature's own
    samples are: a permutation test on surprisal. The signature's samples and the window's are
    pooled; each token's surprisal is -log of its smoothed share among the pooled samples with
    that one sample left out; under "the same model" the window is any m of the pooled samples,
    so its mean surprisal is compared with the mean of m drawn from all of them (a Chernoff
    bound on the tail, which also bounds drawing without replacement: never smaller than the
    truth).

    Pooled, not the signature's alone: a signature of a few dozen samples has not seen a good
    part of its own model's rare tokens, and a window that meets a few of them must not look
    foreign on that account (a null taken from the signature alone, as before, did: one false
    `drift` in 200,000 checks under heavy-tailed noise). Leaving each sample out gives a token
    seen once the surprisal of a token never seen, so an unchanged model's rare tokens are no
    evidence; a model that favours tokens the signature hardly knows still gives a window of
    high surprisal."""
    if not window or sum(reference.values()) < 2:
        return 1.0
    pooled = Counter(reference)
    pooled.update(window)
    n = sum(pooled.values())
    kinds = len(pooled) + 1  # the tokens seen, and the unseen ones as one more

    def surprisal(token: str) -> float:
        return -math.log((pooled[token] - 1 + SMOOTHING) / (n - 1 + SMOOTHING * kinds))

    null = [(count / n, surprisal(token)) for token, count in pooled.items()]
    mean = sum(share * value for share, value in null)
    observed = statistics.fmean(surprisal(t) for t in window)
    if observed <= mean:
        return 1.0

    def exponent(rate: float) -> float:  # log of the bound, for one rate
        log_mgf = math.log(sum(share * math.exp(rate * (v - observed)) for share, v in null))
        return len(window) * log_mgf

    low, high = 0.0, CHERNOFF_MAX_RATE
    for _ in range(40):  # the exponent is convex in the rate: a ternary search finds its least
        a, b = low + (high - low) / 3, high - (high - low) / 3
        low, high = (low, b) if exponent(a) <= exponent(b) else (a, high)
    return min(1.0, math.exp(exponent((low + high) / 2)))


def replay(
    checks: Iterable[tuple[Sequence[CanarySample], bool]], mode: CanaryMode
) -> tuple[Signature, ...]:
    """The signatures that a history of checks ((samples, learning) oldest first) leaves: how
    a verdict is recomputed from the stored samples."""
    signatures: tuple[Signature, ...] = ()
    recent: list[CanarySample] = []
    for samples, learning in checks:
        signatures = judge(
            signatures, samples, mode=mode, learning=learning, recent=recent
        ).signatures
        recent = [*recent, *samples][-RECENT:]
    return signatures


# --- stored forms (the history's JSON, the lock's TOML) ------------------------------------

MAX_TOKEN_CHARS = 100
"""A token longer than this is not a first token: it is cut (server strings are data)."""


def sample_data(sample: CanarySample) -> dict[str, object]:
    """A sample as stored beside its observation (its fingerprint is the observation's)."""
    return {"top": [[token, logprob] for token, logprob in sample.top], "token": sample.token}


def sample_from_data(data: object, fingerprint: str) -> CanarySample | None:
    """The inverse of `sample_data`; None for anything else (an edited or foreign row)."""
    if not isinstance(data, dict):
        return None
    token = data.get("token")
    top = parse_top(data.get("top"))
    if top is None or not (token is None or isinstance(token, str)):
        return None
    return CanarySample(fingerprint, top, token)


def sample_column(sample: CanarySample | None) -> str | None:
    """The history's `observations.canary` text of a sample (None without canary data)."""
    return None if sample is None else json.dumps(sample_data(sample))


def sample_from_column(text: str | None, fingerprint: str | None) -> CanarySample | None:
    """The inverse of `sample_column`, given the observation's fingerprint token."""
    if text is None or fingerprint is None:
        return None
    return sample_from_data(json.loads(text), fingerprint)


def parse_top(
    value: object, limit: int = 64, clean: Callable[[str], str] = str
) -> tuple[tuple[str, float], ...] | None:
    """[[token, logprob], ...] or [{"token": .., "logprob": ..}, ...] (OpenAI's shape) -> a
    top list, most likely first; None when it is not one: every logprob must be a finite
    number at most 0 (a little above, for rounding) and every token a string. `clean` runs on
    each token before it is cut to MAX_TOKEN_CHARS: the probe's redaction, which must see a
    key whole (cut first, the part of a key before the cut would survive it)."""
    if not isinstance(value, list) or len(value) > limit:
        return None
    found: dict[str, float] = {}
    for item in value:
        if isinstance(item, dict):
            token, logprob = item.get("token"), item.get("logprob")
        elif isinstance(item, list) and len(item) == 2:
            token, logprob = item
        else:
            return None
        if not isinstance(token, str) or isinstance(logprob, bool):
            return None
        if not isinstance(logprob, int | float) or not -1e4 <= logprob <= 1e-3:
            return None
        found.setdefault(clean(token)[:MAX_TOKEN_CHARS], float(logprob))
    return tuple(sorted(found.items(), key=lambda kv: -kv[1]))


def signature_data(signature: Signature) -> dict[str, object]:
    """A signature as plain data (JSON in the history, a TOML table in the lock), rounded so
    that accepting twice with nothing new leaves the lock byte for byte as it was."""
    data: dict[str, object] = {
        "id": signature.id,
        "kind": signature.kind.value,
        "fingerprint": signature.fingerprint,
        "samples": signature.samples,
    }
    if signature.kind is CanaryMode.LOGPROBS:
        data["tokens"] = [token for token, _ in signature.center]
        data["logprobs"] = [round(lp, 5) for _, lp in signature.center]
        data["floor"] = round(signature.floor, 5)
        data["distances"] = [round(d, 6) for d in signature.distances]
        data["noise"] = round(signature.noise, 6)
    else:
        data["tokens"] = [token for token, _ in signature.counts]
        data["counts"] = [count for _, count in signature.counts]
    if signature.candidate:
        data["candidate"] = True
        data["evidence"] = signature.evidence
        data["outside"] = signature.outside
    return data


def signature_from_data(data: object) -> Signature:
    """The inverse of `signature_data`; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a signature must be a table")
    try:
        kind = CanaryMode(data["kind"])
        ident, fingerprint, samples = data["id"], data["fingerprint"], data["samples"]
        tokens = data["tokens"]
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"a signature needs id, kind, fingerprint, samples, tokens ({exc})"
        ) from None
    if kind not in (CanaryMode.LOGPROBS, CanaryMode.SAMPLED):
        raise ValueError(f"kind: expected logprobs or sampled, not {kind.value}")
    if not isinstance(ident, str) or not isinstance(fingerprint, str):
        raise ValueError("id and fingerprint must be strings")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError("samples must be a whole number of at least 1")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens must be a list of strings")
    if kind is CanaryMode.SAMPLED:
        counts = data.get("counts")
        if (
            not isinstance(counts, list)
            or len(counts) != len(tokens)
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        ):
            raise ValueError("counts must be one whole number per token")
        return Signature(
            ident, kind, fingerprint, samples, counts=tuple(zip(tokens, counts, strict=True))
        )
    numbers = {key: data.get(key) for key in ("logprobs", "distances")}
    for key, values in numbers.items():
        if not isinstance(values, list) or not all(_finite(v) for v in values):
            raise ValueError(f"{key} must be a list of numbers")
    logprobs, distances = numbers["logprobs"], numbers["distances"]
    assert isinstance(logprobs, list) and isinstance(distances, list)
    if len(logprobs) != len(tokens) or not tokens:
        raise ValueError("logprobs must be one number per token")
    candidate = data.get("candidate", False) is True
    return Signature(
        ident,
        kind,
        fingerprint,
        samples,
        center=tuple((t, _number(v, "logprobs")) for t, v in zip(tokens, logprobs, strict=True)),
        floor=_number(data.get("floor"), "floor"),
        distances=tuple(sorted((_number(d, "distances") for d in distances), reverse=True)[:KEEP]),
        noise=_number(data.get("noise", 0.0), "noise"),
        candidate=candidate,
        evidence=_number(data.get("evidence"), "evidence") if candidate else None,
        outside=_number(data.get("outside"), "outside") if candidate else None,
    )


def _number(value: object, key: str) -> float:
    if not _finite(value):
        raise ValueError(f"{key} must be a number")
    return float(value)  # type: ignore[arg-type]  # _finite made sure of it


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verdict_data(verdict: CanaryVerdict) -> dict[str, object]:
    """A check's canary verdict as the history (and `check --json`) keeps it."""
    return {
        "mode": verdict.mode.value,
        "status": verdict.status.value,
        "signatures": list(verdict.signatures),
        "known_signatures": list(verdict.known),
        "p_value": verdict.p_value,
        "distance": verdict.distance,
        "noise": verdict.noise,
        "samples": verdict.samples,
        "drifted": verdict.drifted,
    }


def verdict_column(verdict: CanaryVerdict | None) -> str | None:
    """The history's `checks.canary` text of a verdict (None when the canary is off)."""
    return None if verdict is None else json.dumps(verdict_data(verdict))
