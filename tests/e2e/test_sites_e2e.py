"""Two sites writing one history, on both stores (the `history_url` fixture): each observation
keeps where it was made from, `stats` shows what each site is served, the chain verifies, and an
export and import keep the site."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import tomli_w

from fp_monitor.devtools.fake_api import FakeAPI, ModelBehaviour
from tests.conftest import Run, config_text, edit_stored, stored_rows


def _site_config(path: Path, base_url: str, site: str | None) -> Path:
    text = config_text(base_url, a={"model": "model-a", "samples": 2})
    if site is not None:  # else FPMON_SITE names it
        data = {"defaults": {"site": site}}
        text = text.replace("[defaults]\n", tomli_w.dumps(data).removesuffix("\n") + "\n", 1)
    path.write_text(text)
    return path


def test_two_sites_share_one_history(
    history_url: str, fake: FakeAPI, fpmon: Callable[..., Run], isolated: Path
) -> None:
    # The second region is served a configuration the first is not.
    other = FakeAPI(
        {"model-a": ModelBehaviour(fingerprints=["fp_dddddddddd"], resolved_model="model-a-2026")}
    )
    with other:
        eu = _site_config(isolated / "eu.toml", fake.base_url, "eu-west")
        us = _site_config(isolated / "us.toml", other.base_url, None)
        runs = [
            fpmon("check", "--config", str(eu)),
            fpmon("check", "--config", str(us), env={"FPMON_SITE": "us-east"}),
            fpmon("check", "--config", str(eu)),
        ]
    assert all(r.code in (0, 1) for r in runs), [r.err for r in runs]
    assert stored_rows(
        history_url, "SELECT site, count(*) FROM observations GROUP BY site ORDER BY site"
    ) == [("eu-west", 4), ("us-east", 2)]

    listed = fpmon("history", "--observations", "--json", "--config", str(eu))
    assert {o["site"] for o in listed.json()["observations"]} == {"eu-west", "us-east"}
    table = fpmon("history", "--observations", "--config", str(eu))
    assert "us-east" in table.out and "eu-west" in table.out

    stats = fpmon("stats", "a", "--json", "--config", str(eu)).json()["targets"][0]
    sites = {s["site"]: s for s in stats["sites"]}
    assert set(sites) == {"eu-west", "us-east"}
    assert {f["value"] for f in sites["eu-west"]["fingerprints"]} == {
        "fp_aaaaaaaaaa",
        "fp_bbbbbbbbbb",
    }
    assert sites["us-east"]["fingerprints"] == [{"value": "fp_dddddddddd", "share": 1.0}]
    assert sites["us-east"]["only_here"] == ["fp_dddddddddd"]
    assert sites["eu-west"]["samples"] == 4
    shown = fpmon("stats", "a", "--config", str(eu))
    assert "served now, by site" in shown.out and "us-east" in shown.out

    verify = fpmon("verify", "--config", str(eu))
    assert verify.code == 0, verify.out + verify.err

    # The site travels with the record, under its hash, to another history and back.
    assert fpmon("export", "--config", str(eu), "-o", "all.jsonl").code == 0
    lines = Path("all.jsonl").read_text().splitlines()
    assert [json.loads(line)["site"] for line in lines].count("us-east") == 2
    moved = str(isolated / "moved.db")
    imported = fpmon("import", "all.jsonl", "--history", moved)
    assert imported.code == 0, imported.err
    assert fpmon("verify", "--history", moved).code == 0
    assert fpmon("export", "--history", moved, "-o", "again.jsonl").code == 0
    assert Path("again.jsonl").read_text().splitlines() == lines

    metrics = fpmon("check", "--config", str(eu), "--metrics-file", "fpmon.prom")
    assert metrics.code in (0, 1), metrics.err
    exposition = Path("fpmon.prom").read_text()
    assert 'fpmon_samples_total{site="eu-west",target="a"} 6.0' in exposition
    assert 'fpmon_samples_total{site="us-east",target="a"} 2.0' in exposition


def test_an_edited_site_breaks_the_chain(
    history_url: str, fake: FakeAPI, fpmon: Callable[..., Run], isolated: Path
) -> None:
    config = _site_config(isolated / "fpmon.toml", fake.base_url, "eu-west")
    assert fpmon("check", "--config", str(config)).code == 0
    edit_stored(history_url, "UPDATE observations SET site = 'us-east' WHERE id = 1")
    verify = fpmon("verify", "--config", str(config))
    assert verify.code == 1
    assert "record 1 (a, " in verify.err and "was edited" in verify.err


def test_a_bad_site_is_one_line_and_exit_2(
    fake: FakeAPI, fpmon: Callable[..., Run], isolated: Path
) -> None:
    config = _site_config(isolated / "fpmon.toml", fake.base_url, "x" * 65)
    bad = fpmon("check", "--config", str(config))
    assert bad.code == 2 and bad.out == ""
    assert bad.err.strip().splitlines() == [
        f"fpmon: error: {config}: [defaults] site: expected at most 64 characters, got 65"
    ]
    env = fpmon("check", "--config", str(config), env={"FPMON_SITE": "eu\nwest"})
    assert env.code == 2
    assert "FPMON_SITE: expected printable characters only" in env.err
    assert len(env.err.strip().splitlines()) == 1
