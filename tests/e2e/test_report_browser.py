"""`fpmon report` opened in a real browser: Debian's headless Chromium driven by Playwright,
on a history recorded against the fake API (a rotation, a flap, an error period, a learning
phase, hostile fingerprints, a lock).

Without /usr/bin/chromium the tests skip, except where FPMON_REQUIRE_CHROMIUM=1 (CI, see
.ci/run): there they fail. The screenshot goes to the test's directory, and to the path in
FPMON_REPORT_SCREENSHOT when it is set (docs/img/report.png is made that way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FPMON, Run
from tests.e2e.report_history import HOSTILE, TARGETS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
A4_TEXT_WIDTH = 703  # 210 mm less 2 x 12 mm of margin, at 96 px per inch


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("FPMON_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"FPMON_REQUIRE_CHROMIUM=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Opened:
    """A report open in a page, with what the page logged and requested."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("window.fpmonReport !== undefined")

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)


@pytest.fixture(scope="module")
def report(report_config: Path) -> Path:
    """The report of the recorded history, made by the installed fpmon."""
    path = report_config.parent / "report.html"
    made = subprocess.run(
        [FPMON or "fpmon", "report", "--config", str(report_config), "--output", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("FPMON_")},
    )
    assert made.returncode == 0, made.stderr
    return path


@pytest.fixture
def opened(browser: Any, report: Path) -> Iterator[Opened]:
    page = Opened(browser, report)
    yield page
    page.page.close()


# Per chart: its size, and how many of its plot's pixels are painted (not white, not clear).
DRAWN = """() => window.fpmonReport.charts.map(({target, kind, plot}) => {
  const {left, top, width, height} = plot.bbox;
  const pixels = plot.ctx.getImageData(left, top, width, height).data;
  let painted = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const white = pixels[i] > 245 && pixels[i + 1] > 245 && pixels[i + 2] > 245;
    if (pixels[i + 3] > 0 && !white) painted++;
  }
  return {target, kind, painted, width: plot.root.getBoundingClientRect().width};
})"""


def test_every_chart_is_drawn_with_no_error_and_no_request(opened: Opened) -> None:
    charts = opened.evaluate(DRAWN)
    assert sorted((c["target"], c["kind"]) for c in charts) == sorted(
        (t, k) for t in TARGETS for k in ("timeline", "share")
    )
    for chart in charts:
        assert chart["painted"] > 500, chart
    assert opened.errors == []
    assert opened.requests == [opened.url]  # the file itself, nothing else


# The page position of a band's cell: the first bucket where it has samples, in its row.
BAND_POINT = """([target, value]) => {
  const chart = window.fpmonReport.charts.find(c => c.target === target && c.kind === "timeline");
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const t = data.targets.find(t => t.name === target);
  const row = t.bands.findIndex(b => b.value === value);
  const bucket = t.bands[row].counts.findIndex(n => n > 0);
  const x = data.buckets.start + (bucket + 0.5) * data.buckets.size;
  chart.el.scrollIntoView({block: "center"});
  const box = chart.plot.over.getBoundingClientRect();
  return [box.left + chart.plot.valToPos(x, "x"), box.top + chart.plot.valToPos(row, "y")];
}"""


@pytest.mark.parametrize(
    ("target", "value", "shown"),
    [
        ("rotating", "fp_cccccccccc", "fingerprint fp_cccccccccc"),
        ("failing", "server", "failed sample"),
        ("hostile", HOSTILE[0], f"fingerprint {HOSTILE[0]} (in the lock)"),
    ],
)
def test_a_hover_on_a_band_shows_its_value(
    opened: Opened, target: str, value: str, shown: str
) -> None:
    x, y = opened.evaluate(BAND_POINT, [target, value])
    opened.page.mouse.move(x, y)
    tooltip = opened.page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    assert shown in tooltip.inner_text()
    opened.page.mouse.move(1, 1)
    tooltip.wait_for(state="hidden")


SUMMARY = """() => [...document.querySelectorAll("table.summary tbody tr")].map(row =>
  [...row.querySelectorAll("td")].map(cell => cell.innerText))"""


def test_the_summary_table_matches_fpmon_stats(
    opened: Opened, fpmon: Callable[..., Run], report_config: Path
) -> None:
    stats = fpmon("stats", "--json", "--config", str(report_config))
    assert stats.code == 0, stats.err
    expected = {t["name"]: t for t in json.loads(stats.out)["targets"]}
    rows = opened.evaluate(SUMMARY)
    assert len(rows) == len(expected) == len(TARGETS)
    for name, status, fingerprints, models, _lock, checks, samples, failed, new, _ in rows:
        figures = expected[name]
        shown = {v.removesuffix(" (lock)") for v in fingerprints.split(", ")}
        assert shown == set(figures["fingerprints"]), name
        assert set(models.split(", ")) == set(figures["models"]), name
        assert int(checks) == figures["checks"], name
        assert int(samples) == figures["observations"], name
        assert int(failed) == figures["errors"], name
        assert int(new) == figures["new_events"], name
        assert status in ("same", "changed", "new", "learned", "error", "first"), name


def test_hostile_fingerprints_are_text(opened: Opened) -> None:
    assert opened.evaluate("() => [window.pwned, document.querySelectorAll('img').length]") == [
        None,
        0,
    ]
    text = opened.page.locator("body").inner_text()
    for hostile in HOSTILE:
        assert hostile in text
    assert opened.errors == []


def test_the_charts_fit_a4_when_printed(opened: Opened, tmp_path: Path) -> None:
    opened.page.emulate_media(media="print")
    opened.page.set_viewport_size({"width": A4_TEXT_WIDTH, "height": 1000})
    opened.evaluate("() => window.dispatchEvent(new Event('beforeprint'))")
    for chart in opened.evaluate(DRAWN):
        assert chart["width"] <= A4_TEXT_WIDTH, chart
    pdf = tmp_path / "report.pdf"
    opened.page.pdf(path=str(pdf), format="A4", print_background=True)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert opened.errors == []


def test_the_screenshot(opened: Opened, tmp_path: Path) -> None:
    """The picture the docs show (docs/img/report.png): made from this report."""
    shot = tmp_path / "report.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
    wanted = os.environ.get("FPMON_REPORT_SCREENSHOT")
    if wanted:
        shutil.copyfile(shot, wanted)
