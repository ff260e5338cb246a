"""Detection: does learning the served set remove day-one false alarms without hiding rollouts?

Drives the real `fp_monitor.domain.detect.detect` and `fp_monitor.domain.learning` over a
seeded simulated fleet and prints, side by side, the core rule (learning off: every value
outside the known set is `new`) and the learning rule (defaults, or variants given with --variant):

- false alarms: checks with status `new` for a value that was served from the start;
- each rollout's delay in checks from its first sampled appearance to its alarm (goal 0); a
  rollout first sampled while the target is still learning is `learned`, never alarmed, and is
  reported as such;
- the learning length in checks (checks whose statuses were decided while learning).

The fleet: shares 0.50/0.25/0.15/0.07/0.03, 3 samples per check (a learning target's first
check takes bootstrap_samples, its later checks while learning learn_samples), 10,000 checks;
a rollout takes share 0.20 at check 5,000 and another 0.02 at check 7,000 (the values already
served are scaled by 1 - share). One check is 30 minutes
(for learn_max). Both rules see the same draws: check k of seed s uses its own generator, so the
rules differ only by their decisions (and by the bootstrap's extra samples on the first check).
No network, no files, no clock: pure computation.

    python benchmarks/detection.py [--seeds 20] [--checks 10000] [--jobs 2]
    python benchmarks/detection.py --variant min=250,max=48h   # a third column
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from fp_monitor.domain.detect import detect
from fp_monitor.domain.learning import (
    LearningSettings,
    estimate_converged,
    learning_state,
    samples_for_check,
    unseen_probability,
)
from fp_monitor.domain.models import Observation, Status, TargetFacts

NAME = "bench"
MODEL = "bench-model-2026"
SAMPLES = 3
CHECK_SECONDS = 1800.0  # one check every 30 minutes
BASE = {"fp_s50": 0.50, "fp_s25": 0.25, "fp_s15": 0.15, "fp_s07": 0.07, "fp_s03": 0.03}


@dataclass(frozen=True)
class Rollout:
    value: str
    share: float
    at: int  # the first check index (0-based) that can sample it


ROLLOUTS = (Rollout("fp_roll20", 0.20, 5000), Rollout("fp_roll02", 0.02, 7000))


@dataclass(frozen=True)
class Rule:
    label: str
    settings: LearningSettings


@dataclass
class RolloutOutcome:
    first_sampled: int | None = None
    alarmed: int | None = None
    learned: bool = False

    @property
    def delay(self) -> int | None:
        if self.first_sampled is None or self.alarmed is None:
            return None
        return self.alarmed - self.first_sampled


@dataclass
class Run:
    """One rule over one seed."""

    seed: int
    false_alarms: int = 0
    false_alarm_values: list[str] = field(default_factory=list)
    learning_checks: int = 0
    end_samples: int | None = None
    end_reason: str | None = None  # "estimate" or "learn_max"
    unseen_at_end: tuple[str, ...] = ()
    rollouts: dict[str, RolloutOutcome] = field(default_factory=dict)


def fleet(checks: int) -> list[tuple[int, list[str], list[float]]]:
    """(first check, values, cumulative weights) for each period of the fleet."""
    periods: list[tuple[int, list[str], list[float]]] = []
    shares = dict(BASE)
    boundaries = [0, *(r.at for r in ROLLOUTS if r.at < checks)]
    for start in boundaries:
        for rollout in ROLLOUTS:
            if rollout.at == start:
                shares = {v: s * (1 - rollout.share) for v, s in shares.items()}
                shares[rollout.value] = rollout.share
        values = list(shares)
        periods.append((start, values, list(itertools.accumulate(shares[v] for v in values))))
    return periods


def observation(value: str) -> Observation:
    return Observation(
        target=NAME,
        provider="custom",
        base_url="http://127.0.0.1:9/v1",
        requested_model="bench",
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempts=1,
        latency_ms=1.0,
        request_shape="bench",
        http_status=200,
        fingerprint=value,
        resolved_model=MODEL,
    )


def simulate(rule: Rule, seed: int, checks: int) -> Run:
    settings = rule.settings
    periods = fleet(checks)
    starts = [p[0] for p in periods]
    cache = {v: observation(v) for _, values, _ in periods for v in values}
    run = Run(seed, rollouts={r.value: RolloutOutcome() for r in ROLLOUTS})

    counts: Counter[str] = Counter()
    facts = TargetFacts()
    first_success: int | None = None
    ended = False
    for k in range(checks):
        _, values, cumulative = periods[bisect.bisect_right(starts, k) - 1]
        # The statuses are decided by the state BEFORE the check, its age taken at this check.
        age = None if first_success is None else (k - first_success) * CHECK_SECONDS
        before = learning_state(counts, first_success_age=age, ended=ended, settings=settings)
        n = samples_for_check(
            SAMPLES,
            settings=settings,
            first_check=first_success is None,
            has_lock=False,
            learning=before.learning,
        )
        # Check k's own generator: both rules draw the same values (the first n of them).
        rng = random.Random(seed * 1_000_003 + k)
        top = cumulative[-1]
        drawn = [values[bisect.bisect_right(cumulative, rng.random() * top)] for _ in range(n)]
        result = detect(
            NAME,
            [cache[v] for v in drawn],
            facts,
            samples=n,
            learning=before.learning,
        )
        run.learning_checks += before.learning
        if settings.enabled and not before.learning and run.end_reason is None:
            # The first check decided after learning: what the target knew when it ended.
            run.end_samples = before.samples
            run.end_reason = "estimate" if estimate_converged(counts, settings) else "learn_max"
            run.unseen_at_end = tuple(v for v in BASE if counts[v] == 0)

        outside = set(drawn) - facts.known_fingerprints
        if result.status is Status.NEW:
            base = sorted(outside & BASE.keys())
            if base:
                run.false_alarms += 1
                run.false_alarm_values += base
        for value, outcome in run.rollouts.items():
            if value in drawn and outcome.first_sampled is None:
                outcome.first_sampled = k
            if value in outside:
                if result.status is Status.NEW:
                    outcome.alarmed = k
                elif result.status is Status.LEARNED:
                    outcome.learned = True

        # Record the check, as the history would.
        counts.update(drawn)
        if first_success is None:
            first_success = k
        seen = frozenset(drawn)
        facts = TargetFacts(
            previous_fingerprints=seen,
            previous_models=frozenset({MODEL}),
            known_fingerprints=facts.known_fingerprints | seen,
            known_models=frozenset({MODEL}),
        )
        if settings.enabled and not ended:
            # As check.py does: learning ends at this check when the state after it (this
            # check's samples included) is no longer learning, and never restarts.
            after = learning_state(
                counts,
                first_success_age=(k - first_success) * CHECK_SECONDS,
                ended=ended,
                settings=settings,
            )
            ended = not after.learning
    return run


def _job(args: tuple[Rule, int, int]) -> Run:
    return simulate(*args)


# --- the report ---------------------------------------------------------------------------


def describe(settings: LearningSettings) -> str:
    if not settings.enabled:
        return f"learning off, {SAMPLES} samples"
    hours = settings.max_age / 3600
    return (
        f"boot {settings.bootstrap_samples}, {settings.learning_samples}/check, "
        f"min {settings.min_samples}, <{settings.unseen:g}, max {hours:g}h"
    )


def rollout_cell(runs: Sequence[Run], value: str) -> str:
    outcomes = [r.rollouts[value] for r in runs]
    sampled = [o for o in outcomes if o.first_sampled is not None]
    delays = [o.delay for o in sampled if o.delay is not None]
    learned = sum(o.learned for o in sampled)
    missing = sum(o.delay is None and not o.learned for o in sampled)
    if not sampled:
        return "not sampled in any seed"
    if not delays:
        cell = "never alarmed"
    else:
        on_time = sum(d == 0 for d in delays)
        cell = f"max {max(delays)} ({on_time}/{len(sampled)} at 0)"
    if learned:
        cell += f", {learned} learned"
    if missing:
        cell += f", {missing} missed"
    if len(sampled) < len(runs):
        cell += f", {len(runs) - len(sampled)} unsampled"
    return cell


def table(rules: Sequence[Rule], results: dict[str, list[Run]], seeds: int) -> list[str]:
    rows: list[tuple[str, list[str]]] = [("rule", [r.label for r in rules])]
    rows.append(("settings", [describe(r.settings) for r in rules]))
    cells: dict[str, list[str]] = {}
    for rule in rules:
        runs = results[rule.label]
        fa = [r.false_alarms for r in runs]
        learning = rule.settings.enabled
        lengths = [r.learning_checks for r in runs]
        ends = [r.end_samples for r in runs if r.end_samples is not None]
        reasons = Counter(r.end_reason for r in runs if r.end_reason)
        missed = Counter(v for r in runs for v in r.unseen_at_end)
        columns = {
            # While learning a value outside the known set is `learned`, so every false alarm
            # comes after learning; the core rule never learns, so all its checks count.
            "seeds with 0 false alarms after learning": f"{sum(f == 0 for f in fa)}/{seeds}",
            "false alarms / seed": f"mean {statistics.mean(fa):.2f}, max {max(fa)}",
            "false alarms by value": ", ".join(
                f"{v.removeprefix('fp_')} {c}"
                for v, c in sorted(Counter(v for r in runs for v in r.false_alarm_values).items())
            )
            or "none",
            **{
                f"rollout {ro.share:g} @{ro.at} delay": rollout_cell(runs, ro.value)
                for ro in ROLLOUTS
            },
            "learning length (checks)": (
                f"mean {statistics.mean(lengths):.1f}, max {max(lengths)}" if learning else "0"
            ),
            "samples at learning end": (
                f"mean {statistics.mean(ends):.0f}, min {min(ends)}, max {max(ends)}"
                if ends
                else "n/a"
            ),
            "learning ended by": (
                ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if reasons else "n/a"
            ),
            "base values unseen at end": (
                ", ".join(f"{v.removeprefix('fp_')} in {c}" for v, c in sorted(missed.items()))
                or "none"
            )
            if learning
            else "n/a",
        }
        for key, value in columns.items():
            cells.setdefault(key, []).append(value)
    rows += list(cells.items())
    widths = [max(len(row[0]) for row in rows)]
    widths += [max(len(row[1][i]) for row in rows) for i in range(len(rules))]
    lines = []
    for i, (name, values) in enumerate(rows):
        pairs = zip(values, widths[1:], strict=True)
        parts = [name.ljust(widths[0])] + [v.ljust(w) for v, w in pairs]
        lines.append("  ".join(parts).rstrip())
        if i == 1:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def verdicts(rules: Sequence[Rule], results: dict[str, list[Run]], seeds: int) -> list[str]:
    lines = []
    for rule in rules:
        runs = results[rule.label]
        bad = [r.seed for r in runs if r.false_alarms]
        late = [
            (r.seed, ro.value)
            for r in runs
            for ro in ROLLOUTS
            if r.rollouts[ro.value].first_sampled is not None and r.rollouts[ro.value].delay != 0
        ]
        where = f"seeds {bad}" if len(bad) <= 10 else f"{len(bad)} of {seeds} seeds"
        goal1 = "MET" if not bad else f"NOT MET (false alarms in {where})"
        exercised = any(o.first_sampled is not None for r in runs for o in r.rollouts.values())
        goal2 = "MET" if not late else f"NOT MET ({len(late)} rollout(s) not alarmed at once)"
        if not exercised:
            goal2 = "NOT EXERCISED (no rollout sampled within --checks)"
        lines.append(f"{rule.label}: zero false alarms after learning in every seed: {goal1}")
        lines.append(f"{rule.label}: each rollout alarmed at its first sampled check: {goal2}")
    return lines


def parse_variant(text: str) -> Rule:
    """`min=250,max=48h,boot=20,unseen=0.01` -> a learning rule with those settings."""
    settings = LearningSettings()
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key in ("min", "min_samples", "learn_min_samples"):
            settings = replace(settings, min_samples=int(value))
        elif key in ("per", "learn_samples"):
            settings = replace(settings, learning_samples=int(value))
        elif key in ("boot", "bootstrap", "bootstrap_samples"):
            settings = replace(settings, bootstrap_samples=int(value))
        elif key in ("unseen", "learn_unseen"):
            settings = replace(settings, unseen=float(value))
        elif key in ("max", "learn_max"):
            factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(value[-1:])
            seconds = float(value[:-1]) * factor if factor else float(value)
            settings = replace(settings, max_age=seconds)
        else:
            raise SystemExit(f"--variant: unknown key {key!r} (min, per, boot, unseen, max)")
    return Rule(f"learning ({text})", settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=20, help="seeds in the sweep (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--variant", action="append", default=[], help="another learning rule, e.g. min=250"
    )
    parser.add_argument("--per-seed", action="store_true", help="one line per seed and rule")
    args = parser.parse_args(argv)

    rules = [
        Rule("core", LearningSettings(enabled=False)),
        Rule("learning (defaults)", LearningSettings()),
        *(parse_variant(v) for v in args.variant),
    ]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = [(rule, seed, args.checks) for rule in rules for seed in seeds]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(_job, jobs, chunksize=1))
    else:
        runs = [_job(job) for job in jobs]
    elapsed = time.perf_counter() - started
    results: dict[str, list[Run]] = {}
    for (rule, _, _), run in zip(jobs, runs, strict=True):
        results.setdefault(rule.label, []).append(run)

    shares = "/".join(f"{s:.2f}" for s in BASE.values())
    rollouts = ", ".join(f"{r.share:g} at check {r.at}" for r in ROLLOUTS)
    print(
        f"detection benchmark: {len(seeds)} seeds (from {args.first_seed}) x {args.checks} "
        f"checks; shares {shares}; {SAMPLES} samples/check; 1 check = 30 min"
    )
    print(f"rollouts: {rollouts}; the real detect(), {len(jobs)} runs in {elapsed:.1f}s")
    print()
    for line in table(rules, results, len(seeds)):
        print(line)
    print()
    for line in verdicts(rules, results, len(seeds)):
        print(line)
    print()
    print("P(a configuration of share s is unseen after n samples) = (1 - s) ** n:")
    for n in (20, 100, 161, 250, 300):
        cells = ", ".join(f"s={s:g}: {unseen_probability(s, n):.4f}" for s in (0.07, 0.03, 0.02))
        print(f"  n={n:<4} {cells}")
    if args.per_seed:
        print()
        for rule in rules:
            for run in results[rule.label]:
                delays = " ".join(
                    f"{v}:{o.delay if o.delay is not None else ('learned' if o.learned else '-')}"
                    for v, o in run.rollouts.items()
                )
                learning = (
                    f"learning {run.learning_checks} checks (ended by {run.end_reason} at"
                    f" {run.end_samples} samples)"
                    if rule.settings.enabled
                    else "no learning"
                )
                print(
                    f"{rule.label:<22} seed {run.seed:>4}  false alarms {run.false_alarms}"
                    f" {run.false_alarm_values}  {learning}  {delays}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
