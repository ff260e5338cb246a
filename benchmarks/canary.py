"""The canary: does it catch a silent change behind a fingerprint, without false alarms?

Drives the real `fp_monitor.domain.canary.judge` (and the real learning rule of
`fp_monitor.domain.learning`) over a seeded simulated fleet, and prints side by side, in the
same run and on the same draws:

- fpmon's canary in `logprobs` mode (top-20 logprobs of the first token) and `sampled` mode
  (the first token drawn at temperature 1), each with the confirmation samples `fpmon check`
  takes for a suspect;
- the fingerprint-only rule: a silent change moves no fingerprint, so it never alarms;
- a window permutation test on mean logprobs as in Chauvin et al. (ICLR 2026): consecutive
  windows of 30 samples (10 checks), statistic = mean over the union of tokens of |mean logprob
  in window A - in window B| (a token missing from a response takes its lowest logprob), p by
  200 permutations, tested when a window completes;
- a G-test on sampled first tokens as the closest CLI peer does: the learning phase's tokens
  against each window of 30, rare tokens pooled, an effect floor (Cramér's V >= 0.1), alpha
  0.05 (one prompt: Benjamini-Hochberg changes nothing).

The baselines are shown twice: at their own alpha, and at the false-alarm rate of fpmon (zero),
their threshold set by an oracle to the largest statistic they reached over every seed's
10,000 unchanged checks, which favours them.

The fleet: 3 configurations (shares 0.5 / 0.3 / 0.2); the first two share one fingerprint and
differ in numerics by 4x the noise; 3 samples per check; learning as `fpmon check` does it
(bootstrap 20, 9 samples a check while learning, the default end). First-token logits over 50
tokens ~ N(0, 1.5), an uncertain first token. Response-to-response noise on each logit:
- `gaussian`: N(0, 0.05);
- `heavy`: Student t with 3 degrees scaled to the same spread, and 2% of responses with 5x the
  noise (outliers), so that the method is not tuned to its own fake;
- `flat` (a robustness row, not among the defaults; added after the method was settled):
  first-token logits ~ N(0, 1.0), a flatter first token that sampling tells apart less
  easily, and Student t noise with 2 degrees (no finite variance).
A silent perturbation moves the 0.3 configuration's logits by N(0, m x 0.05) (m x the noise)
from a check after learning on; a substitution serves another model behind the same
fingerprints from then on.

    python benchmarks/canary.py [--seeds 20] [--seed-base 0] [--checks 10000] [--jobs 2]
        [--models gaussian,heavy,flat] [--changes substitution,10]

Needs numpy (a dev dependency) for the permutation baseline only.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fp_monitor.domain.canary import (
    CONFIRM_ROUNDS,
    RECENT,
    CanaryMode,
    CanarySample,
    CanaryStatus,
    Signature,
    chi2_sf,
    judge,
)
from fp_monitor.domain.learning import LearningSettings, learning_state, samples_for_check

VOCAB = [f"w{i:02d}" for i in range(50)]
TOP_K = 20
NOISE = 0.05
SAMPLES = 3
CHECK_SECONDS = 1800.0
SHARES = (0.5, 0.3, 0.2)
FINGERPRINTS = ("fp_one", "fp_one", "fp_two")
PERTURBED = 1  # the 0.3 configuration, hidden under the fingerprint of the 0.5 one
SIZES = (1, 2, 3, 5, 10, 20, 50)
SUBSTITUTION = "substitution"
WINDOW = 30
PERMUTATIONS = 200
PEER_ALPHA = 0.05
PEER_EFFECT = 0.1
PERM_ALPHA = 0.05
HORIZON = 200  # checks after the change: not caught by then is missed
CHANGE_AT = 60  # learning ends at about check 27 with the defaults
MODELS = ("gaussian", "heavy")
ROBUSTNESS = "flat"
"""A noise model the method was not built on: flatter first tokens, a heavier tail."""


# --- the fleet --------------------------------------------------------------------------------


@dataclass
class Fleet:
    logits: list[np.ndarray]
    rng: np.random.Generator
    noise_model: str

    @classmethod
    def make(cls, seed: int, noise_model: str) -> Fleet:
        rng = np.random.default_rng(seed)
        spread = 1.0 if noise_model == ROBUSTNESS else 1.5
        a = rng.normal(0, spread, len(VOCAB))
        b = a + rng.normal(0, 4 * NOISE, len(VOCAB))
        c = rng.normal(0, spread, len(VOCAB))
        return cls([a, b, c], np.random.default_rng(seed + 1_000_000), noise_model)

    def perturb(self, size: float | str, seed: int) -> None:
        rng = np.random.default_rng(seed + 2_000_000)
        if size == SUBSTITUTION:
            # Another model behind the target, served the same way (its own two
            # configurations under the first fingerprint, a third under the second).
            other = Fleet.make(seed + 5_000_000, self.noise_model).logits
            self.logits[:] = other
        else:
            self.logits[PERTURBED] = self.logits[PERTURBED] + rng.normal(
                0, float(size) * NOISE, len(VOCAB)
            )

    def draw(self, count: int) -> list[Response]:
        configs = self.rng.choice(3, size=count, p=SHARES)
        return [self.response(int(c)) for c in configs]

    def response(self, config: int) -> Response:
        n = len(VOCAB)
        if self.noise_model == "gaussian":
            noise = self.rng.normal(0, NOISE, n)
        elif self.noise_model == ROBUSTNESS:
            # Student t with 2 degrees: no finite variance; its interquartile range made that
            # of the Gaussian's (1.63 against 1.35 for one unit).
            noise = self.rng.standard_t(2, n) * NOISE * 1.35 / 1.63
        else:
            noise = self.rng.standard_t(3, n) * NOISE / math.sqrt(3)
            if self.rng.random() < 0.02:
                noise *= 5
        noisy = self.logits[config] + noise
        shifted = noisy - noisy.max()
        lsm = shifted - math.log(np.exp(shifted).sum())
        order = np.argsort(-lsm)[:TOP_K]
        top = tuple((VOCAB[i], round(float(lsm[i]), 6)) for i in order)
        probs = np.exp(lsm)
        token = VOCAB[int(self.rng.choice(n, p=probs / probs.sum()))]
        vector = np.full(n, lsm[order[-1]])
        vector[order] = lsm[order]
        present = np.zeros(n, dtype=bool)
        present[order] = True
        return Response(config, FINGERPRINTS[config], top, token, vector, present)


@dataclass
class Response:
    config: int
    fingerprint: str
    top: tuple[tuple[str, float], ...]
    token: str
    vector: np.ndarray
    present: np.ndarray

    def canary(self) -> CanarySample:
        return CanarySample(self.fingerprint, self.top, self.token)


# --- fpmon, as `fpmon check` runs it ----------------------------------------------------------


@dataclass
class Canary:
    mode: CanaryMode
    signatures: tuple[Signature, ...] = ()
    recent: list[CanarySample] = field(default_factory=list)
    confirmations: int = 0

    def check(
        self, fleet: Fleet, responses: list[Response], learning: bool
    ) -> tuple[CanaryStatus, list[Response]]:
        samples = [r.canary() for r in responses]
        judged = judge(
            self.signatures, samples, mode=self.mode, learning=learning, recent=self.recent
        )
        extra: list[Response] = []
        # As `fpmon check` does (check.py _confirm): up to CONFIRM_ROUNDS rounds of the
        # verdict's confirmation samples while it stays a suspect.
        for _ in range(CONFIRM_ROUNDS):
            if not judged.verdict.wants_confirmation:
                break
            more = fleet.draw(judged.verdict.confirmation_samples)
            extra += more
            self.confirmations += len(more)
            samples += [r.canary() for r in more]
            judged = judge(
                self.signatures, samples, mode=self.mode, learning=learning, recent=self.recent
            )
        self.signatures = judged.signatures
        self.recent = [*self.recent, *samples][-RECENT:]
        return judged.verdict.status, extra


# --- the baselines ------------------------------------------------------------------------


def permutation_stat(a: np.ndarray, b: np.ndarray, union: np.ndarray) -> float:
    return float(np.abs(a.mean(axis=0) - b.mean(axis=0))[union].mean())


def permutation_test(
    previous: Sequence[Response], current: Sequence[Response], rng: np.random.Generator
) -> tuple[float, float]:
    """(statistic, p) of two windows of logprob vectors."""
    x = np.stack([r.vector for r in (*previous, *current)])
    union = np.stack([r.present for r in (*previous, *current)]).any(axis=0)
    observed = permutation_stat(x[: len(previous)], x[len(previous) :], union)
    n = len(x)
    order = np.argsort(rng.random((PERMUTATIONS, n)), axis=1)
    half = len(previous)
    xs = x[order]  # (perms, n, tokens)
    diffs = np.abs(xs[:, :half].mean(axis=1) - xs[:, half:].mean(axis=1))[:, union].mean(axis=1)
    p = (1 + int((diffs >= observed).sum())) / (PERMUTATIONS + 1)
    return observed, p


def peer_g_test(reference: Counter[str], window: Counter[str]) -> tuple[float, float]:
    """(p, Cramér's V) of a plain G-test of homogeneity, tokens expected < 5 pooled."""
    n1, n2 = sum(reference.values()), sum(window.values())
    total = n1 + n2
    kept, pooled = [], [0, 0]
    for token in sorted(set(reference) | set(window)):
        a, b = reference[token], window[token]
        if min((a + b) * n1, (a + b) * n2) / total < 5:
            pooled[0] += a
            pooled[1] += b
        else:
            kept.append((a, b))
    if sum(pooled):
        kept.append((pooled[0], pooled[1]))
    if len(kept) < 2:
        return 1.0, 0.0
    g = 0.0
    chi = 0.0
    for a, b in kept:
        column = a + b
        for observed, row in ((a, n1), (b, n2)):
            expected = row * column / total
            if observed:
                g += observed * math.log(observed / expected)
            chi += (observed - expected) ** 2 / expected
    g *= 2
    v = math.sqrt(chi / total)  # Cramér's V of a 2 x k table
    return chi2_sf(g, len(kept) - 1), v


# --- one run ------------------------------------------------------------------------------


@dataclass
class Trace:
    """What each rule said at each check of one run (after learning)."""

    logprobs: list[CanaryStatus] = field(default_factory=list)
    sampled: list[CanaryStatus] = field(default_factory=list)
    perm: dict[int, tuple[float, float]] = field(default_factory=dict)
    """check index of a completed window -> (statistic, p)."""
    peer: dict[int, tuple[float, float]] = field(default_factory=dict)
    """check index of a completed window -> (p, V)."""
    first_sampled: int | None = None
    learning_checks: int = 0
    samples: int = 0
    extra_logprobs: int = 0
    extra_sampled: int = 0


def run(seed: int, noise_model: str, checks: int, change: float | str | None) -> Trace:
    fleet = Fleet.make(seed, noise_model)
    settings = LearningSettings()
    logprobs, sampled = Canary(CanaryMode.LOGPROBS), Canary(CanaryMode.SAMPLED)
    counts: Counter[str] = Counter()
    trace = Trace()
    ended = False
    first: int | None = None
    history: list[Response] = []
    reference: Counter[str] = Counter()
    perm_rng = np.random.default_rng(seed + 3_000_000)
    window_start: int | None = None
    for k in range(checks):
        if change is not None and k == CHANGE_AT:
            fleet.perturb(change, seed)
        age = None if first is None else (k - first) * CHECK_SECONDS
        before = learning_state(counts, first_success_age=age, ended=ended, settings=settings)
        n = samples_for_check(
            SAMPLES,
            settings=settings,
            first_check=first is None,
            has_lock=False,
            learning=before.learning,
        )
        responses = fleet.draw(n)
        status_l, extra_l = logprobs.check(fleet, responses, before.learning)
        status_s, extra_s = sampled.check(fleet, responses, before.learning)
        changed_now = change is not None and k >= CHANGE_AT
        sampled_now = change == SUBSTITUTION or any(
            r.config == PERTURBED for r in (*responses, *extra_l)
        )
        if changed_now and trace.first_sampled is None and sampled_now:
            trace.first_sampled = k
        counts.update(r.fingerprint for r in responses)
        first = k if first is None else first
        if not ended:
            after = learning_state(
                counts,
                first_success_age=(k - first) * CHECK_SECONDS,
                ended=False,
                settings=settings,
            )
            ended = not after.learning
        if before.learning:
            trace.learning_checks += 1
            reference.update(r.token for r in responses)
            continue
        trace.logprobs.append(status_l)
        trace.sampled.append(status_s)
        trace.samples += len(responses)
        trace.extra_logprobs += len(extra_l)
        trace.extra_sampled += len(extra_s)
        # The windowed baselines see the regular samples only.
        window_start = k if window_start is None else window_start
        history.extend(responses)
        if (k - window_start + 1) % (WINDOW // SAMPLES) == 0 and len(history) >= 2 * WINDOW:
            trace.perm[k] = permutation_test(
                history[-2 * WINDOW : -WINDOW], history[-WINDOW:], perm_rng
            )
            trace.peer[k] = peer_g_test(reference, Counter(r.token for r in history[-WINDOW:]))
            history = history[-2 * WINDOW :]
    return trace


def _job(
    args: tuple[int, str, int, float | str | None],
) -> tuple[tuple[int, str, float | str | None], Trace]:
    seed, noise_model, checks, change = args
    return (seed, noise_model, change), run(seed, noise_model, checks, change)


# --- the report ---------------------------------------------------------------------------


def offset_checks(trace: Trace) -> int:
    return trace.learning_checks


def delay(statuses: Sequence[CanaryStatus], trace: Trace) -> int | None:
    """Checks from the first check that sampled the change to the first drift (None: missed)."""
    if trace.first_sampled is None:
        return None
    start = trace.first_sampled - trace.learning_checks
    for i, status in enumerate(statuses[start:]):
        if status is CanaryStatus.DRIFT:
            return i
    return None


def window_delay(
    windows: dict[int, tuple[float, float]], alarm: object, trace: Trace
) -> int | None:
    if trace.first_sampled is None:
        return None
    for k in sorted(windows):
        if k >= trace.first_sampled and alarm(windows[k]):  # type: ignore[operator]
            return k - trace.first_sampled
    return None


def cell(delays: Sequence[int | None], seeds: int) -> str:
    caught = [d for d in delays if d is not None]
    at_once = sum(d == 0 for d in caught)
    if not caught:
        return f"missed {seeds}/{seeds}"
    text = f"{at_once}/{seeds} at 0, median {statistics.median(caught):g}, max {max(caught)}"
    missed = len(delays) - len(caught)
    return text + (f", missed {missed}" if missed else "")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def cpu_per_check() -> tuple[float, float]:
    """Median ms of the canary statistics for one check of 3 samples, on a target with 1,000
    stored samples (logprobs, sampled)."""
    timings = []
    for mode in (CanaryMode.LOGPROBS, CanaryMode.SAMPLED):
        fleet = Fleet.make(0, "gaussian")
        canary = Canary(mode)
        for k in range(334):
            canary.check(fleet, fleet.draw(SAMPLES), k < 90)
        spent = []
        for _ in range(200):
            samples = [r.canary() for r in fleet.draw(SAMPLES)]
            started = time.perf_counter()
            judge(canary.signatures, samples, mode=mode, learning=False, recent=canary.recent)
            spent.append((time.perf_counter() - started) * 1000)
        timings.append(statistics.median(spent))
    return timings[0], timings[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--seed-base", type=int, default=0, help="the first seed (another base: fresh seeds)"
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"noise models: gaussian,heavy,{ROBUSTNESS}"
    )
    parser.add_argument(
        "--changes",
        default=",".join(map(str, [*SIZES, SUBSTITUTION])),
        help="the changes measured: sizes in noise widths, and/or substitution",
    )
    args = parser.parse_args(argv)
    models = args.models.split(",")
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    changes: list[float | str] = [
        c if c == SUBSTITUTION else int(c) for c in args.changes.split(",")
    ]
    jobs = [(s, m, args.checks, None) for m in models for s in seeds]
    jobs += [(s, m, CHANGE_AT + HORIZON, c) for m in models for c in changes for s in seeds]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = dict(pool.map(_job, jobs, chunksize=1))
    else:
        results = dict(_job(job) for job in jobs)
    elapsed = time.perf_counter() - started
    print(
        f"canary benchmark: {len(seeds)} seeds (from {args.seed_base}) x {args.checks} checks "
        "per noise model; "
        f"3 configurations (shares {'/'.join(map(str, SHARES))}, the first two under one "
        f"fingerprint), {SAMPLES} samples/check, noise {NOISE} nats per logit; "
        f"{len(jobs)} runs in {elapsed:.0f}s"
    )
    verdicts = []
    for model in models:
        null = [results[(s, model, None)] for s in seeds]
        perm_null = max((st for t in null for st, _ in t.perm.values()), default=0.0)
        peer_null = min(
            (p for t in null for p, v in t.peer.values() if v >= PEER_EFFECT), default=1.0
        )
        print()
        print(f"== noise model: {model}")
        checks_after = [len(t.logprobs) for t in null]
        rows = [
            [
                "rule",
                "seeds with 0 false alarms",
                "false alarms / 10,000 checks",
                "extra samples / check",
            ]
        ]
        for label, key in (("fpmon logprobs", "logprobs"), ("fpmon sampled", "sampled")):
            fa = [
                getattr(t, key).count(CanaryStatus.DRIFT) * 10_000 / len(getattr(t, key))
                for t in null
            ]
            extra = sum(getattr(t, f"extra_{key}") for t in null) / sum(checks_after)
            rows.append(
                [
                    label,
                    f"{sum(f == 0 for f in fa)}/{len(seeds)}",
                    f"mean {statistics.mean(fa):.2f}, max {max(fa):.2f}",
                    f"{extra:.3f}",
                ]
            )
            verdicts.append(
                (f"{model}: {label}: 0 false alarms in every seed", all(f == 0 for f in fa))
            )
        rows.append(
            [
                "fingerprint only",
                f"{len(seeds)}/{len(seeds)}",
                "0 (it never sees a silent change)",
                "0",
            ]
        )
        for label, windows, alarm in (
            (f"permutation test, p < {PERM_ALPHA}", "perm", lambda w: w[1] < PERM_ALPHA),
            (
                f"peer G-test, p < {PEER_ALPHA}, V >= {PEER_EFFECT}",
                "peer",
                lambda w: w[0] < PEER_ALPHA and w[1] >= PEER_EFFECT,
            ),
        ):
            fa = [
                sum(alarm(w) for w in getattr(t, windows).values()) * 10_000 / len(t.logprobs)
                for t in null
            ]
            rows.append(
                [
                    label,
                    f"{sum(f == 0 for f in fa)}/{len(seeds)}",
                    f"mean {statistics.mean(fa):.2f}, max {max(fa):.2f}",
                    "0",
                ]
            )
        print("false alarms after learning (each rule on the same draws):")
        print_table(rows)
        print(
            f"output tokens per sample: 1 in every mode (max_tokens 1); learning took "
            f"{statistics.mean(t.learning_checks for t in null):.0f} checks"
        )
        print()
        print(
            "checks from the first check that samples the changed configuration to the alarm "
            f"(0 = that check; missed = not within {HORIZON} checks); baselines at their own alpha "
            "and, marked 'at 0 FA', at fpmon's false-alarm rate (oracle threshold):"
        )
        rows = [
            [
                "change",
                "fpmon logprobs",
                "permutation",
                "permutation at 0 FA",
                "fpmon sampled",
                "peer G-test",
                "peer at 0 FA",
            ]
        ]
        for change in changes:
            traces = [results[(s, model, change)] for s in seeds]
            name = change if change == SUBSTITUTION else f"{change}x noise"
            lp = [delay(t.logprobs, t) for t in traces]
            sm = [delay(t.sampled, t) for t in traces]
            perm = [window_delay(t.perm, lambda w: w[1] < PERM_ALPHA, t) for t in traces]
            perm0 = [
                window_delay(t.perm, lambda w, limit=perm_null: w[0] > limit, t) for t in traces
            ]
            peer = [
                window_delay(t.peer, lambda w: w[0] < PEER_ALPHA and w[1] >= PEER_EFFECT, t)
                for t in traces
            ]
            peer0 = [
                window_delay(
                    t.peer, lambda w, limit=peer_null: w[0] < limit and w[1] >= PEER_EFFECT, t
                )
                for t in traces
            ]
            rows.append(
                [
                    str(name),
                    cell(lp, len(seeds)),
                    cell(perm, len(seeds)),
                    cell(perm0, len(seeds)),
                    cell(sm, len(seeds)),
                    cell(peer, len(seeds)),
                    cell(peer0, len(seeds)),
                ]
            )
            if change == 10:
                verdicts.append(
                    (
                        f"{model}: logprobs: 10x caught at the first check that samples it "
                        "in every seed",
                        all(d == 0 for d in lp),
                    )
                )
            if change == SUBSTITUTION:
                verdicts.append(
                    (
                        f"{model}: sampled: a substitution caught within 10 checks in every seed",
                        all(d is not None and d <= 10 for d in sm),
                    )
                )
                verdicts.append(
                    (
                        f"{model}: logprobs: a substitution caught at once in every seed",
                        all(d == 0 for d in lp),
                    )
                )
        print_table(rows)
    lp_ms, sm_ms = cpu_per_check()
    print()
    print(
        f"CPU per check of the canary statistics (3 samples, 1,000 stored samples): "
        f"logprobs {lp_ms:.2f} ms, sampled {sm_ms:.2f} ms (goal: under 5 ms)"
    )
    verdicts.append(("CPU per check under 5 ms", max(lp_ms, sm_ms) < 5))
    print()
    for text, met in verdicts:
        print(f"{text}: {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
