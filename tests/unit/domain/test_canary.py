"""The canary's statistics: distances and tolerance of logprob signatures, the G-test of sampled
first tokens, and the verdicts (learned, known, suspect, drift) over simulated configurations."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fp_monitor.domain.canary import (
    CONFIRM_ROUNDS,
    DRIFT_P,
    RECENT,
    RESOLUTION,
    SAMPLED_CONFIRM,
    SAMPLED_DRIFT_P,
    CanaryMode,
    CanarySample,
    CanaryStatus,
    Signature,
    _scan,
    chi2_sf,
    distance,
    fisher,
    found_logprobs,
    g_test,
    judge,
    replay,
    surprisal_test,
    tail_p,
)

VOCAB = [f"w{i}" for i in range(40)]
LOGPROBS = CanaryMode.LOGPROBS
SAMPLED = CanaryMode.SAMPLED


def logits(seed: int) -> list[float]:
    """A configuration's first-token logits: uncertain, a few likely tokens and a long tail."""
    rng = random.Random(seed)
    return [rng.gauss(0, 1.5) for _ in VOCAB]


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    total = math.log(sum(math.exp(v - top) for v in values)) + top
    return [v - total for v in values]


def response(
    base: Sequence[float], rng: random.Random, noise: float = 0.02, k: int = 20, scale: float = 1
) -> tuple[tuple[str, float], ...]:
    """One response's top-k logprobs: the configuration's logits with response noise."""
    noisy = log_softmax([v + rng.gauss(0, noise * scale) for v in base])
    ranked = sorted(zip(VOCAB, noisy, strict=True), key=lambda kv: -kv[1])[:k]
    return tuple((t, round(lp, 6)) for t, lp in ranked)


def shifted(base: Sequence[float], size: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [v + rng.gauss(0, size) for v in base]


def sample(top: tuple[tuple[str, float], ...], fingerprint: str = "fp_a") -> CanarySample:
    return CanarySample(fingerprint, top, top[0][0])


def learn(
    configurations: Sequence[tuple[str, Sequence[float]]],
    rng: random.Random,
    *,
    checks: int = 40,
    per_check: int = 9,
    noise: float = 0.02,
) -> tuple[Signature, ...]:
    """Signatures after a learning phase over configurations drawn at random."""
    signatures: tuple[Signature, ...] = ()
    for _ in range(checks):
        drawn = [rng.choice(configurations) for _ in range(per_check)]
        samples = [sample(response(base, rng, noise), fp) for fp, base in drawn]
        signatures = judge(signatures, samples, mode=LOGPROBS, learning=True).signatures
    return signatures


def verdict(signatures: tuple[Signature, ...], samples: Sequence[CanarySample]) -> CanaryStatus:
    return judge(signatures, samples, mode=LOGPROBS, learning=False).verdict.status


# --- the pieces -----------------------------------------------------------------------------


def test_distance_is_zero_for_the_same_vector_and_uses_the_floor_for_missing_tokens() -> None:
    top = (("a", -0.5), ("b", -1.0), ("c", -3.0))
    signature = found_logprobs(CanarySample("fp", top))
    assert distance(top, signature) == 0.0
    # "b" left the top list: it takes this response's lowest logprob (-3.0), 2.0 away from -1.0,
    # over the union of three tokens; the largest tenth of three gaps is none.
    assert distance((("a", -0.5), ("c", -3.0)), signature) == pytest.approx(2.0 / 3)


def test_distance_leaves_out_the_largest_tenth_of_gaps() -> None:
    base = tuple((f"t{i}", -float(i)) for i in range(20))
    signature = found_logprobs(CanarySample("fp", base))
    wild = (("t0", -9.0), *base[1:])  # one token 9 nats off: trimmed away
    assert distance(wild, signature) == 0.0


def test_tail_p_is_empirical_inside_and_falls_off_beyond() -> None:
    largest = tuple(sorted((1.0 + i / 100 for i in range(64)), reverse=True))
    assert tail_p(100, largest, 1.5) == pytest.approx(15 / 101)
    beyond = [tail_p(100, largest, z) for z in (2.0, 4.0, 16.0)]
    assert beyond[0] <= 1 / 101 and beyond[0] > beyond[1] > beyond[2]
    assert beyond[2] < DRIFT_P  # thin noise: 16x its spread is far outside
    assert tail_p(0, (), 5.0) == 1.0  # nothing to judge by


def test_tail_p_of_heavy_noise_is_wider() -> None:
    rng = random.Random(1)
    thin = sorted((1 + abs(rng.gauss(0, 0.1)) for _ in range(200)), reverse=True)[:64]
    heavy = sorted((1 + abs(rng.paretovariate(2.0) - 1) for _ in range(200)), reverse=True)[:64]
    z = 4 * max(heavy)
    assert tail_p(200, heavy, z) > 1000 * tail_p(200, thin, z)


def test_few_distances_assume_a_heavy_tail() -> None:
    assert tail_p(3, (1.0, 0.9), 10.0) == pytest.approx((1.0 / 10.0) ** 2 / 4)


@pytest.mark.parametrize(
    ("x", "df", "expected"),
    [(3.841458820694124, 1, 0.05), (9.487729036781154, 4, 0.05), (30.0, 10, 0.000857)],
)
def test_chi2_sf_matches_tables(x: float, df: int, expected: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-3)


def test_chi2_sf_far_tail() -> None:
    assert chi2_sf(100.0, 2) == pytest.approx(math.exp(-50), rel=1e-9)
    assert chi2_sf(0.0, 3) == 1.0


def test_fisher_combines_two_p_values() -> None:
    assert fisher(1.0, 1.0) == pytest.approx(1.0)
    assert fisher(0.01, 0.01) == pytest.approx(1e-4 * (1 - math.log(1e-4)))


def test_g_test_tells_same_from_different() -> None:
    same_p, same_tv = g_test({"a": 120, "b": 80, "c": 50}, {"a": 14, "b": 10, "c": 6})
    assert same_p > 0.1 and same_tv < 0.1
    other_p, other_tv = g_test({"a": 120, "b": 80, "c": 50}, {"x": 20, "a": 2, "y": 8})
    assert other_p < 1e-9 and other_tv > 0.8
    assert g_test({}, {"a": 3}) == (1.0, 0.0)


# --- logprobs verdicts ----------------------------------------------------------------------


def test_two_configurations_under_one_fingerprint_are_two_signatures() -> None:
    rng = random.Random(7)
    a = logits(1)
    b = shifted(a, 0.5, 2)  # another kernel: same fingerprint, different numerics
    signatures = learn([("fp_a", a), ("fp_a", b)], rng)
    matched = {}
    for name, base in (("a", a), ("b", b), ("a", a), ("b", b)):
        judged = judge(signatures, [sample(response(base, rng))], mode=LOGPROBS, learning=False)
        assert judged.verdict.status is CanaryStatus.KNOWN
        matched.setdefault(name, set()).update(judged.verdict.signatures)
    assert not matched["a"] & matched["b"]  # each configuration matches its own signature


def test_first_check_then_learned_then_known() -> None:
    rng = random.Random(3)
    base = logits(4)
    first = judge((), [sample(response(base, rng))], mode=LOGPROBS, learning=True)
    assert first.verdict.status is CanaryStatus.FIRST and first.verdict.known == ()
    other = judge(
        first.signatures, [sample(response(base, rng), "fp_b")], mode=LOGPROBS, learning=False
    )
    assert other.verdict.status is CanaryStatus.LEARNED  # a new fingerprint: not the canary's


def test_a_silent_perturbation_of_ten_times_the_noise_is_drift_when_two_responses_agree() -> None:
    rng = random.Random(11)
    a, b = logits(1), logits(2)
    signatures = learn([("fp_a", a), ("fp_a", b)], rng)
    changed = shifted(a, 10 * 0.02, 99)
    alone = judge(signatures, [sample(response(changed, rng))], mode=LOGPROBS, learning=False)
    assert alone.verdict.status is CanaryStatus.SUSPECT  # one response proves nothing yet
    assert alone.verdict.p_value is not None and alone.verdict.p_value < 1e-6
    pair = [sample(response(changed, rng)), sample(response(changed, rng))]
    judged = judge(signatures, pair, mode=LOGPROBS, learning=False)
    v = judged.verdict
    assert v.status is CanaryStatus.DRIFT and v.p_value is not None and v.p_value < 1e-10
    assert v.drifted in {s.id for s in judged.signatures} and v.drifted not in v.known
    assert v.distance is not None and v.noise is not None and v.distance > 5 * v.noise
    # Known from then on, like a new fingerprint (no lock): the next sample of it is no alarm.
    assert verdict(judged.signatures, [sample(response(changed, rng))]) is CanaryStatus.KNOWN


def test_a_response_far_beyond_any_tail_is_drift_alone() -> None:
    rng = random.Random(11)
    a = logits(1)
    signatures = learn([("fp_a", a)], rng)
    judged = judge(signatures, [sample(response(logits(9), rng))], mode=LOGPROBS, learning=False)
    assert judged.verdict.status is CanaryStatus.DRIFT
    assert judged.verdict.p_value is not None and judged.verdict.p_value < DRIFT_P


def test_one_odd_response_is_a_suspect_and_a_second_agreeing_one_is_drift() -> None:
    rng = random.Random(5)
    a = logits(1)
    signatures = learn([("fp_a", a)], rng, noise=0.02)
    # A perturbation of about 3x the noise: outside, not far enough for one response alone.
    changed = shifted(a, 3 * 0.02, 42)
    first = judge(signatures, [sample(response(changed, rng))], mode=LOGPROBS, learning=False)
    assert first.verdict.status is CanaryStatus.SUSPECT
    assert first.verdict.p_value is not None and DRIFT_P <= first.verdict.p_value < 1e-3
    second = judge(
        first.signatures, [sample(response(changed, rng))], mode=LOGPROBS, learning=False
    )
    assert second.verdict.status is CanaryStatus.DRIFT
    assert second.verdict.drifted == first.verdict.signatures[0]


def test_odd_responses_that_disagree_stay_suspects() -> None:
    """Outliers never seen while learning (4x the noise, each in its own direction) are
    suspects, never drift: no two of them agree."""
    rng = random.Random(8)
    a = logits(1)
    signatures = learn([("fp_a", a)], rng)
    statuses = []
    for seed in range(8):
        odd = response(a, random.Random(seed), noise=0.02, scale=4)
        judged = judge(signatures, [sample(odd)] * 1, mode=LOGPROBS, learning=False)
        statuses.append(judged.verdict.status)
        signatures = judged.signatures
    assert CanaryStatus.SUSPECT in statuses and CanaryStatus.DRIFT not in statuses


def test_learning_takes_in_what_after_learning_is_drift() -> None:
    rng = random.Random(2)
    a = logits(1)
    signatures = learn([("fp_a", a)], rng)
    other = [sample(response(logits(50), rng))]
    assert judge(signatures, other, mode=LOGPROBS, learning=True).verdict.status is (
        CanaryStatus.LEARNED
    )
    assert verdict(signatures, other) is CanaryStatus.DRIFT


def test_samples_without_logprobs_are_unavailable() -> None:
    judged = judge((), [CanarySample("fp", (), "Hi")], mode=LOGPROBS, learning=False)
    assert judged.verdict.status is CanaryStatus.UNAVAILABLE and judged.verdict.samples == 0


def test_replay_gives_the_signatures_checks_left() -> None:
    rng = random.Random(4)
    a, b = logits(1), logits(2)
    checks = []
    for k in range(30):
        drawn = [rng.choice([("fp_a", a), ("fp_b", b)]) for _ in range(3)]
        checks.append(([sample(response(base, rng), fp) for fp, base in drawn], k < 20))
    signatures: tuple[Signature, ...] = ()
    for samples, learning in checks:
        signatures = judge(signatures, samples, mode=LOGPROBS, learning=learning).signatures
    assert replay(checks, LOGPROBS) == signatures


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(0.001, 0.3),
    k=st.integers(5, 20),
    configurations=st.integers(1, 3),
    spread=st.floats(0.0, 2.0),
)
def test_a_sample_of_a_known_signatures_own_noise_is_never_drift(
    seed: int, noise: float, k: int, configurations: int, spread: float
) -> None:
    """After learning, a fresh response of any learned configuration, with that
    configuration's own noise, is never `drift`."""
    rng = random.Random(seed)
    first = logits(seed)
    bases = [first] + [shifted(first, spread, seed + i) for i in range(1, configurations)]
    signatures: tuple[Signature, ...] = ()
    for _ in range(30):
        drawn = [rng.choice(bases) for _ in range(9)]
        samples = [sample(response(b, rng, noise, k)) for b in drawn]
        signatures = judge(signatures, samples, mode=LOGPROBS, learning=True).signatures
    for base in bases:
        fresh = [sample(response(base, rng, noise, k))]
        assert verdict(signatures, fresh) is not CanaryStatus.DRIFT


def test_a_provider_that_answers_bit_for_bit_does_not_alarm_on_rounding() -> None:
    top = tuple((f"t{i}", -0.1 * i - 0.3) for i in range(20))
    signatures: tuple[Signature, ...] = ()
    for _ in range(30):
        samples = [sample(top)] * 3
        signatures = judge(signatures, samples, mode=LOGPROBS, learning=True).signatures
    rounded = tuple((t, round(lp + 0.0004, 3)) for t, lp in top)
    assert verdict(signatures, [sample(rounded)]) is CanaryStatus.KNOWN
    assert RESOLUTION > 0.0004


# --- sampled verdicts -----------------------------------------------------------------------


def draw(base: Sequence[float], rng: random.Random) -> str:
    weights = [math.exp(v) for v in base]
    return rng.choices(VOCAB, weights)[0]


def run_sampled(
    rng: random.Random,
    phases: Sequence[tuple[int, Sequence[float], bool]],
    spent: list[int] | None = None,
) -> list[CanaryStatus]:
    """Statuses over checks of 3 samples: (checks, logits, learning) per phase. With `spent`,
    a suspect takes its confirmation samples as `fpmon check` does, and their number is
    appended there per check."""
    signatures: tuple[Signature, ...] = ()
    recent: list[CanarySample] = []
    statuses = []
    for checks, base, learning in phases:
        for _ in range(checks):
            samples = [CanarySample("fp", (), draw(base, rng)) for _ in range(3)]
            judged = judge(signatures, samples, mode=SAMPLED, learning=learning, recent=recent)
            extra = 0
            for _ in range(CONFIRM_ROUNDS if spent is not None else 0):
                if not judged.verdict.wants_confirmation:
                    break
                more = judged.verdict.confirmation_samples
                samples += [CanarySample("fp", (), draw(base, rng)) for _ in range(more)]
                extra += more
                judged = judge(signatures, samples, mode=SAMPLED, learning=learning, recent=recent)
            if spent is not None:
                spent.append(extra)
            statuses.append(judged.verdict.status)
            signatures = judged.signatures
            recent = [*recent, *samples][-RECENT:]
    return statuses


def test_sampled_first_tokens_of_the_same_model_stay_known() -> None:
    rng = random.Random(1)
    base = logits(1)
    statuses = run_sampled(rng, [(80, base, True), (1000, base, False)])
    assert CanaryStatus.DRIFT not in statuses


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.5, 2.5),
    learning_checks=st.integers(20, 100),
)
def test_sampled_windows_of_a_known_signatures_own_model_are_never_drift(
    seed: int, spread: float, learning_checks: int
) -> None:
    """After learning, first tokens drawn from the learned model itself, peaked or flat, from
    a signature of 60 samples or of 300, are never `drift`."""
    rng = random.Random(seed)
    base = [rng.gauss(0, spread) for _ in VOCAB]
    statuses = run_sampled(rng, [(learning_checks, base, True), (150, base, False)])
    assert CanaryStatus.DRIFT not in statuses


def test_sampled_substitution_is_drift_within_ten_checks() -> None:
    rng = random.Random(2)
    statuses = run_sampled(rng, [(80, logits(1), True), (20, logits(77), False)])
    after = statuses[80:]
    assert CanaryStatus.DRIFT in after[:10]
    assert after.count(CanaryStatus.DRIFT) == 1  # then the new behaviour is known


@pytest.mark.parametrize("seed", range(5))
def test_a_sampled_substitution_is_drift_within_ten_checks_with_confirmations(seed: int) -> None:
    """Another model behind the target: a window leaning away from the signature is a
    suspect, which buys SAMPLED_CONFIRM more samples a round, and the change is `drift`
    within ten checks, once."""
    rng = random.Random(seed)
    spent: list[int] = []
    statuses = run_sampled(rng, [(80, logits(seed), True), (30, logits(seed + 100), False)], spent)
    after = statuses[80:]
    assert CanaryStatus.DRIFT in after[:10]
    assert after.count(CanaryStatus.DRIFT) == 1
    assert set(spent) <= {0, SAMPLED_CONFIRM, CONFIRM_ROUNDS * SAMPLED_CONFIRM}


def test_an_unchanged_sampled_model_pays_about_one_confirmation_sample_a_check() -> None:
    rng = random.Random(5)
    spent: list[int] = []
    statuses = run_sampled(rng, [(80, logits(5), True), (600, logits(5), False)], spent)
    assert CanaryStatus.DRIFT not in statuses
    assert sum(spent[80:]) / 600 < 2.0


def test_the_surprisal_test_is_calm_on_the_signatures_own_tokens_and_sure_on_others() -> None:
    rng = random.Random(3)
    base = logits(3)
    reference = Counter(draw(base, rng) for _ in range(250))
    calm = [surprisal_test(reference, [draw(base, rng) for _ in range(30)]) for _ in range(300)]
    assert min(calm) > 1e-4  # 300 windows of the same model: nothing near an alarm
    rare = sorted(VOCAB, key=lambda t: reference[t])[:20]  # tokens it (almost) never answers
    assert surprisal_test(reference, [rng.choice(rare) for _ in range(30)]) < 1e-12
    assert surprisal_test(reference, []) == 1.0


def test_a_window_crowding_onto_a_few_rare_tokens_is_the_g_tests() -> None:
    """Five rare tokens answered six times each are common among the pooled samples, so the
    surprisal test hardly sees them; the G-test does, and the scan takes the lesser p."""
    rng = random.Random(3)
    base = logits(3)
    reference = Counter(draw(base, rng) for _ in range(250))
    rare = sorted(VOCAB, key=lambda t: reference[t])[:5]
    window = [rng.choice(rare) for _ in range(30)]
    assert g_test(reference, Counter(window))[0] < 1e-7
    assert _scan(reference, window)[0] < SAMPLED_DRIFT_P


@pytest.mark.parametrize("seed", [0, 4])
def test_a_young_signature_of_a_flat_model_does_not_make_its_own_windows_foreign(
    seed: int,
) -> None:
    """60 samples of a flat first token miss much of its tail: a window of the same model meets
    tokens the signature never saw. Pooling both (the permutation null) keeps that calm; the
    signature's own samples as the null put 2,000 such windows at p 1.6e-4 and 7.7e-4."""
    rng = random.Random(seed)
    base = [v / 1.5 for v in logits(seed)]  # flatter: logits ~ N(0, 1)
    reference = Counter(draw(base, rng) for _ in range(60))
    windows = [[draw(base, rng) for _ in range(24)] for _ in range(2000)]
    assert min(surprisal_test(reference, w) for w in windows) > 1e-3


def test_a_learned_sampled_signature_is_not_taught_after_learning() -> None:
    rng = random.Random(4)
    base = logits(4)
    signatures: tuple[Signature, ...] = ()
    for _ in range(80):
        samples = [CanarySample("fp", (), draw(base, rng)) for _ in range(3)]
        signatures = judge(signatures, samples, mode=SAMPLED, learning=True).signatures
    after = judge(
        signatures, [CanarySample("fp", (), draw(base, rng))], mode=SAMPLED, learning=False
    )
    assert after.verdict.status is CanaryStatus.KNOWN
    assert after.signatures == signatures  # a change's first samples would move it otherwise
