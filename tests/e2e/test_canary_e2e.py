"""The canary with the installed command against the fake API over loopback: a silent change is
`drift` (exit 1, `new` wins), the JSON `canary` object, the lock carries the accepted
signatures to a fresh runner, a provider refusing logprobs never fails a probe and `auto`
falls back, notifications, `fpmon targets`, and every sample's logprobs in history and export."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import Run
from tests.e2e.conftest import recorded

MODEL = "m"
FP = "fp_aaaaaaaaaa"
# Learning in a few checks: 10 samples, then 6 a check, ended at 20 with nothing seen once.
LEARN = {
    "learning": True,
    "bootstrap_samples": 10,
    "learn_samples": 6,
    "learn_min_samples": 20,
    "samples": 3,
}
CANARY_KEYS = ["mode", "status", "signatures", "known_signatures", "p_value", "distance", "noise"]


@pytest.fixture
def behaving() -> Iterator[FakeAPI]:
    """One model, two configurations under one fingerprint, noisy logprobs."""
    with FakeAPI(
        {
            MODEL: ModelBehaviour([FP, FP], resolved_model="m-1", noise=0.02, seed=1),
            "refuses": ModelBehaviour([FP], logprobs="rejected", seed=1),
            "ignores": ModelBehaviour([FP], logprobs="ignored", seed=1),
        }
    ) as fake:
        yield fake


def configure(isolated: Path, base_url: str, extra: str = "", **target: Any) -> None:
    table = {"provider": "custom", "base_url": base_url, "model": MODEL, "canary": "logprobs"}
    document = {
        "defaults": {"retries": 0, "timeout": "5s"},
        "targets": {"t": {**table, **LEARN, **target}},
    }
    (isolated / "fpmon.toml").write_text(tomli_w.dumps(document) + extra)


def check(fpmon: Callable[..., Run], *args: str, env: dict[str, str] | None = None) -> Run:
    return fpmon("check", "--json", *args, env=env)


def target_of(run: Run) -> dict[str, Any]:
    assert run.code in (0, 1), run.err
    return run.json()["targets"][0]


def learn(fpmon: Callable[..., Run], env: dict[str, str] | None = None) -> None:
    for _ in range(6):
        if not target_of(check(fpmon, env=env))["learning"]:
            return
    pytest.fail("the target did not finish learning")


def test_a_silent_change_is_drift_then_known(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    first = target_of(check(fpmon))
    assert first["canary"]["status"] == "first" and first["canary"]["mode"] == "logprobs"
    learn(fpmon)
    quiet = check(fpmon)
    assert quiet.code == 0 and target_of(quiet)["status"] == "same"
    assert target_of(quiet)["canary"]["status"] == "known"

    behaving.perturb(MODEL, 0, 30)  # configuration 0: new weights, same fingerprint
    behaving.perturb(MODEL, 1, 30)
    drift = check(fpmon)
    assert drift.code == 1
    result = target_of(drift)
    assert (result["status"], result["unexpected"], result["fingerprints"]) == (
        "drift",
        True,
        [FP],
    )
    canary = result["canary"]
    assert list(canary)[: len(CANARY_KEYS)] == CANARY_KEYS
    assert canary["status"] == "drift" and canary["samples"] >= 3
    assert canary["p_value"] < 1e-6 and canary["distance"] > 5 * canary["noise"]
    assert canary["drifted"] in canary["signatures"]
    assert canary["drifted"] not in canary["known_signatures"]

    table = fpmon("check")  # known from then on, like a new fingerprint without a lock
    assert table.code == 0, table.out
    assert "drift" not in table.out.split("\n")[2]


def test_the_table_shows_a_behaviour_row_and_fail_on_never_exits_0(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    learn(fpmon)
    behaving.perturb(MODEL, 0, 40)
    behaving.perturb(MODEL, 1, 40)
    run = fpmon("check", "--fail-on", "never")
    assert run.code == 0, run.out + run.err
    row = next(line for line in run.out.splitlines() if " behaviour " in line)
    assert "x the noise" in row and "p " in row
    assert "t: every fingerprint and model is known, but the behaviour is not" not in run.out


def test_new_wins_over_drift(fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path) -> None:
    configure(isolated, behaving.base_url)
    learn(fpmon)
    behaving.perturb(MODEL, 0, 40)
    behaving.rotate(MODEL, ["fp_zzzzzzzzzz", "fp_zzzzzzzzzz"])
    result = target_of(check(fpmon))
    assert result["status"] == "new"


def test_the_lock_carries_the_signatures_to_a_fresh_runner(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    learn(fpmon)
    accepted = fpmon("accept", "t")
    assert accepted.code == 0 and "+ behaviour" in accepted.out
    lock = (isolated / "fpmon.lock").read_text()
    assert "[[targets.t.canary]]" in lock and 'kind = "logprobs"' in lock
    assert fpmon("accept", "t").out.strip() == "t: unchanged"
    assert (isolated / "fpmon.lock").read_text() == lock  # byte for byte

    fresh = {"FPMON_HISTORY": str(isolated / "fresh.db")}  # a CI runner: no history
    same = check(fpmon, "--locked", env=fresh)
    assert same.code == 0, same.out
    assert target_of(same)["canary"]["status"] == "known"

    behaving.perturb(MODEL, 0, 40)
    behaving.perturb(MODEL, 1, 40)
    for _ in range(2):  # the lock judges: drift until accepted
        drift = check(fpmon, "--locked", env=fresh)
        assert drift.code == 1 and target_of(drift)["status"] == "drift"


def test_a_lock_entry_without_signatures_does_not_judge_behaviour(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    (isolated / "fpmon.lock").write_text(
        f'version = 1\n[targets.t]\nfingerprints = ["{FP}"]\nmodels = ["m-1"]\n'
    )
    run = check(fpmon)
    assert run.code == 0
    assert target_of(run)["canary"]["status"] == "unlocked"


def test_a_provider_refusing_logprobs_never_fails_a_probe_and_auto_falls_back(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    # The openai preset supports logprobs, so auto asks for them; this server refuses.
    configure(
        isolated,
        behaving.base_url,
        provider="openai",
        model="refuses",
        canary="auto",
        api_key_env="K",
    )
    env = {"K": "sk-fpmontestkey000001"}
    first = check(fpmon, env=env)
    assert first.code == 0, first.out + first.err
    result = target_of(first)
    assert result["errors"] == [] and result["canary"]["status"] == "unavailable"
    behaving.reset()
    second = target_of(check(fpmon, env=env))
    assert second["canary"]["mode"] == "sampled" and second["canary"]["status"] != "unavailable"
    bodies = [r.body for r in behaving.requests()]
    assert all("logprobs" not in b and b["temperature"] == 1.0 for b in bodies)
    assert all(b["max_completion_tokens"] == 1 for b in bodies)  # one output token each


def test_a_provider_ignoring_logprobs_is_unavailable_not_an_error(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url, model="ignores")
    run = check(fpmon)
    assert run.code == 0
    assert target_of(run)["canary"]["status"] == "unavailable"


def test_drift_is_notified_with_the_canary(
    fpmon: Callable[..., Run],
    behaving: FakeAPI,
    isolated: Path,
    recorder: tuple[str, Path],
) -> None:
    run_line, events = recorder
    configure(isolated, behaving.base_url, extra=f"\n[notify.cmd]\ntype = 'command'\n{run_line}\n")
    learn(fpmon)
    behaving.perturb(MODEL, 0, 40)
    behaving.perturb(MODEL, 1, 40)
    assert fpmon("check").code == 1
    (event,) = [e for e in recorded(events) if e["stdin"]["event"] == "drift"]
    assert event["env"]["FPMON_STATUS"] == "drift"
    assert event["stdin"]["canary"]["status"] == "drift"
    assert "behaviour:" in event["stdin"]["summary"]


def test_targets_shows_each_canary_mode_and_why(fpmon: Callable[..., Run], isolated: Path) -> None:
    document = {
        "targets": {
            "gpt": {"provider": "openai", "model": "gpt-4o-mini"},
            "o4": {"provider": "openai", "model": "o4-mini"},
            "groq": {"provider": "groq", "model": "llama-3.1-8b-instant"},
            "quiet": {"provider": "openai", "model": "gpt-4o-mini", "canary": "off"},
        }
    }
    (isolated / "fpmon.toml").write_text(tomli_w.dumps(document))
    shown = {t["name"]: t["canary"] for t in fpmon("targets", "--json").json()["targets"]}
    assert shown["gpt"] == {"mode": "logprobs", "why": "the openai API returns the top 20 logprobs"}
    assert shown["o4"]["mode"] == "off" and "reasoning model" in shown["o4"]["why"]
    assert shown["groq"]["mode"] == "sampled" and "temperature 1" in shown["groq"]["why"]
    assert shown["quiet"] == {"mode": "off", "why": "canary = off"}
    table = fpmon("targets").out
    assert "logprobs: the openai API returns the top 20 logprobs" in table


def test_bad_canary_value_is_one_line_and_exit_2(fpmon: Callable[..., Run], isolated: Path) -> None:
    (isolated / "fpmon.toml").write_text(
        '[defaults]\ncanary = "logprob"\n[targets.t]\nprovider = "openai"\nmodel = "x"\n'
    )
    run = fpmon("targets")
    assert run.code == 2
    assert run.err.strip().count("\n") == 0
    assert "canary" in run.err and "did you mean 'logprobs'" in run.err


def test_history_and_export_keep_every_samples_logprobs(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    assert check(fpmon).code == 0
    observations = fpmon("history", "--observations", "--format", "json").json()["observations"]
    assert len(observations) == 10
    assert all(len(o["canary"]["top"]) == 20 and o["canary"]["token"] for o in observations)
    exported = fpmon("export").out.splitlines()
    records = [json.loads(line) for line in exported]
    assert all(json.loads(r["canary"])["top"] for r in records)
    (isolated / "export.jsonl").write_text("\n".join(exported) + "\n")
    other = {"FPMON_HISTORY": str(isolated / "other.db")}
    assert fpmon("import", "export.jsonl", env=other).code == 0
    assert fpmon("verify", env=other).code == 0
    # Editing a sample's logprobs breaks the chain.
    tampered = json.loads(exported[0])
    canary = json.loads(tampered["canary"])
    canary["top"][0][1] -= 1.0
    tampered["canary"] = json.dumps(canary)
    (isolated / "tampered.jsonl").write_text(json.dumps(tampered) + "\n")
    third = {"FPMON_HISTORY": str(isolated / "third.db")}
    imported = fpmon("import", "tampered.jsonl", env=third)
    assert "hash does not match" in imported.out + imported.err


if sys.platform == "win32":  # pragma: no cover - the command notifier's script path
    pytest.skip("POSIX only", allow_module_level=True)


def test_drift_in_junit_markdown_metrics_and_stats(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    configure(isolated, behaving.base_url)
    learn(fpmon)
    behaving.perturb(MODEL, 0, 40)
    behaving.perturb(MODEL, 1, 40)
    summary = isolated / "summary.md"
    run = fpmon(
        "check",
        "--junit",
        "report.xml",
        "--metrics-file",
        "fpmon.prom",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert run.code == 1
    junit = (isolated / "report.xml").read_text()
    assert 'failures="1"' in junit and 'type="drift"' in junit and "behaviour: " in junit
    markdown = summary.read_text()
    assert "| t | drift | fp_aaaaaaaaaa |" in markdown and "behaviour: " in markdown
    metrics = (isolated / "fpmon.prom").read_text()
    assert 'fpmon_canary_drift_total{target="t"} 1.0' in metrics
    distance = next(line for line in metrics.splitlines() if line.startswith("fpmon_canary_dist"))
    assert float(distance.split()[-1]) > 0.1
    stats = fpmon("stats")
    assert stats.code == 0
    line = next(line for line in stats.out.splitlines() if line.startswith("t: canary"))
    assert "drift 1" in line and "known behaviours" in line
    figures = fpmon("stats", "--json").json()["targets"][0]["canary"]
    assert figures["mode"] == "logprobs" and figures["statuses"]["drift"] == 1
    assert figures["latest"] == "drift" and figures["known_signatures"] >= 3


def test_the_report_draws_a_band_per_behaviour_signature(
    fpmon: Callable[..., Run], behaving: FakeAPI, isolated: Path
) -> None:
    """The report's timeline has a signature band for each behaviour the canary matched,
    counted in checks, and the drifted one among them."""
    configure(isolated, behaving.base_url)
    learn(fpmon)
    behaving.perturb(MODEL, 0, 30)
    behaving.perturb(MODEL, 1, 30)
    drifted = target_of(check(fpmon))["canary"]["drifted"]
    assert fpmon("report", "--output", "report.html").code == 0
    page = (isolated / "report.html").read_text()
    rows = re.findall(
        r"<tr><td>signature</td><td>(.*?)</td>.*?<td class=\"num\">(\d+) checks?</td></tr>", page
    )
    assert rows, page[:2000]
    assert any(drifted in value for value, _ in rows)
    assert "one band per fingerprint, model, signature" in page
