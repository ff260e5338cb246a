"""Learning the served set with the installed command: bootstrap, `learned`, the end of
learning, and a weighted fleet with a rollout."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour, Rollout
from tests.conftest import Run

A, B, C, D = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc", "fp_dddddddddd"
LEARN = {"learning": True, "samples": 3, "bootstrap_samples": 6, "learn_samples": 3}


def target_json(run: Run) -> dict:
    assert run.code in (0, 1), run.err
    return run.json()["targets"][0]


def test_first_check_bootstraps_and_explicit_samples_win(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", **LEARN, "learn_samples": 5})
    first = target_json(fpmon("check", "--json", "--no-record"))
    assert (first["status"], first["samples"]) == ("first", 6)
    assert len(fake.requests()) == 6  # --no-record bootstraps too
    assert target_json(fpmon("check", "--json"))["samples"] == 6
    assert target_json(fpmon("check", "--json"))["samples"] == 5  # learn_samples while learning
    explicit = fpmon("check", "--json", "--samples", "2", env={"FPMON_HISTORY": "other.db"})
    assert target_json(explicit)["samples"] == 2


def test_learned_is_never_unexpected_then_learning_ends(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "learn_min_samples": 9, **LEARN})
    first = target_json(fpmon("check", "--json"))
    assert (first["learning"], first["unseen_estimate"]) == (True, 0.0)
    fake.set_model("model-b", ModelBehaviour([C, D, D]))
    learned = fpmon("check", "--json", "--fail-on", "change")
    assert learned.code == 0
    result = target_json(learned)
    assert result["status"] == "learned" and result["fingerprints"] == [C, D]
    # 9 samples, fp_c seen 7 times, fp_d twice: the estimate is 0 and learning ends.
    assert (result["learning"], result["unseen_estimate"]) == (False, 0.0)
    fake.set_model("model-b", ModelBehaviour([A]))
    after = fpmon("check", "--json")
    assert after.code == 1 and target_json(after)["status"] == "new"


def test_a_value_seen_once_keeps_the_target_learning(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "learn_min_samples": 9, **LEARN})
    assert fpmon("check").code == 0
    fake.set_model("model-b", ModelBehaviour([C, C, D]))
    result = target_json(fpmon("check", "--json"))
    # 9 samples, fp_d once: estimate 1/9, not below 0.01: still learning.
    assert result["learning"] is True and abs(result["unseen_estimate"] - 1 / 9) < 1e-9


def test_learn_max_ends_learning(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    write_config(fake.base_url, t={"model": "model-b", "learn_max": "0s", **LEARN})
    first = target_json(fpmon("check", "--json"))
    assert first["status"] == "first" and first["learning"] is False
    fake.set_model("model-b", ModelBehaviour([D]))
    assert target_json(fpmon("check", "--json"))["status"] == "new"


def test_a_lock_entry_disables_learning(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(fake.base_url, t={"model": "model-b", **LEARN})
    (isolated / "fpmon.lock").write_text(
        f'version = 1\n[targets.t]\nfingerprints = ["{C}"]\nmodels = ["model-b-v1"]\n'
    )
    result = target_json(fpmon("check", "--json"))
    assert (result["status"], result["samples"], result["learning"]) == ("same", 3, False)
    fake.set_model("model-b", ModelBehaviour([D], resolved_model="model-b-v1"))
    assert target_json(fpmon("check", "--json"))["status"] == "new"


def test_weighted_fleet_with_a_rollout(
    fpmon: Callable[..., Run], write_config: Callable[..., Path], isolated: Path
) -> None:
    """A skewed fleet: the rare value is learned without alarm; a later rollout alarms."""
    fleet = ModelBehaviour(
        [A, B, C],
        mode="random",
        weights=[0.7, 0.25, 0.05],
        seed=7,
        rollouts=[Rollout(D, share=0.5, after_requests=150)],
    )
    with FakeAPI({"fleet": fleet}) as fake:
        write_config(
            fake.base_url,
            f={"model": "fleet", "learning": True, "samples": 5, "learn_min_samples": 60},
        )
        statuses = []
        for _ in range(30):
            run = fpmon("check", "--json")
            statuses.append(target_json(run)["status"])
            if statuses[-1] == "new":
                break
    assert "new" in statuses, statuses
    first_new = statuses.index("new")
    assert len(fake.requests()) > 150  # the alarm came only with the rollout
    assert all(s in ("first", "same", "changed", "learned") for s in statuses[:first_new])
    with sqlite3.connect(isolated / "xdg-data/fpmon/history.db") as db:
        learning = [r[0] for r in db.execute("SELECT learning FROM checks ORDER BY id")]
    assert learning[0] == 1 and learning[first_new] == 0


def test_stats_shows_learning_shares_and_the_unseen_risk(
    fpmon: Callable[..., Run], fake: FakeAPI, write_config: Callable[..., Path]
) -> None:
    fake.set_model("model-b", ModelBehaviour([C, C, C, D]))
    write_config(
        fake.base_url,
        t={
            "model": "model-b",
            "bootstrap_samples": 8,
            **{k: v for k, v in LEARN.items() if k != "bootstrap_samples"},
        },
    )
    assert fpmon("check").code == 0
    table = fpmon("stats")
    assert table.code == 0
    assert "t: served set still learning; 8 samples; unseen share estimated at 0.0%" in table.out
    assert "1%: 92.27%" in table.out  # 0.99 ** 8
    rows = [line.split() for line in table.out.splitlines() if line.startswith("fp_")]
    assert [C, "6", "75.0%", "40.9%", "-", "92.9%"] in rows
    figures = fpmon("stats", "--json").json()["targets"][0]["learning"]
    assert (figures["learning"], figures["samples"]) == (True, 8)
    assert [v["value"] for v in figures["values"]] == [C, D]
    assert figures["values"][1]["interval"] == [0.0715, 0.5907]  # Wilson, 2 of 8, by hand
