"""The HTML dashboard: rendered from a small fixture history, self-contained, and loaded in a real
headless Chromium with the network cut off: no console errors, every chart drawn.

The browser test needs Chromium (Debian: `apt-get install -y chromium`; `.ci/run` installs it) and
the `playwright` package (in the `test` extra), driving the system browser: playwright never
downloads one of its own here. Without either it skips and says why. `LAZY_TEST_BROWSER` may name
another Chromium-family executable.
"""

import copy
import os
import re
import shutil
from pathlib import Path

import pytest

from perf import dashboard, history

FIXTURE = Path(__file__).parent / "fixtures" / "bench_history.jsonl"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _records():
    records, problems = history.load(FIXTURE)
    assert problems == [] and len(records) >= 3
    return records


def _browser() -> str | None:
    env = os.environ.get("LAZY_TEST_BROWSER")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_fixture_is_valid_history():
    for rec in _records():
        assert history.validate(rec) == []


def test_page_is_self_contained():
    page = dashboard.render(_records())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc=", page, re.IGNORECASE), "no external scripts"
    assert not re.search(r"<link[^>]*\bhref=", page, re.IGNORECASE), "no external stylesheets or fonts"
    assert "@import" not in page.split("<script", 1)[0]
    for chart in dashboard.CHARTS:
        assert f"id=\"chart-{chart}\"" in page or f"id='chart-{chart}'" in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js is inlined


def test_page_shows_missing_and_failed_rows():
    records = _records()
    page = dashboard.render(records)
    for r in records[-1]["results"]:
        assert r["workload"] in page
        if r["status"] == "missing":
            assert f"missing: {r['missing']}" in page


def test_partial_records_render():
    rec = copy.deepcopy(_records()[-1])
    rec["peers"] = ["lazy", "torch"]  # an old run: fewer peers, no compile data, a failed row
    rec["torch_compile_startup_s"] = None
    for r in rec["results"]:
        r["compile"] = {}
        r["peers"] = {p: e for p, e in r["peers"].items() if p in rec["peers"]}
    rec["results"][0].update(status="failed", error="RuntimeError: boom", kernels=None)
    rec["results"][0]["peers"]["lazy"] = {"status": "failed", "error": "RuntimeError: boom"}
    page = dashboard.render([rec])
    assert "RuntimeError: boom" in page
    empty = copy.deepcopy(rec)
    empty["results"] = []
    assert "chart-speedup" in dashboard.render([rec, empty])
    with pytest.raises(ValueError):
        dashboard.render([])


def test_dashboard_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found (looked for $LAZY_TEST_BROWSER, chromium, chromium-browser, google-chrome): "
                    "install it with `apt-get install -y chromium` (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed: pip install -e '.[test]'")
    page_path = dashboard.write(_records(), tmp_path / "dashboard.html")
    problems, outside = [], []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:  # the page must not need the network: block and remember any attempt
            outside.append(r.request.url)
            r.abort()

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=browser, args=BROWSER_ARGS, headless=True)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.route("**/*", route)
            page.goto(page_path.as_uri(), wait_until="load")
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= "
                                   f"{len(dashboard.CHARTS)}", timeout=30_000)
            drawn = page.evaluate("""ids => ids.map(id => {
                const el = document.getElementById(id);
                return [id, !!el && el.classList.contains('js-plotly-plot'),
                        el ? el.querySelectorAll('.main-svg').length : 0,
                        el ? el.querySelectorAll('g.trace').length : 0,
                        el ? el.getBoundingClientRect().height : 0];
            })""", [f"chart-{c}" for c in dashboard.CHARTS])
            title = page.title()
            rows = page.locator("table.results tbody tr").count()
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            b.close()
    assert problems == [], problems
    assert outside == [], f"the page tried to reach the network: {outside}"
    assert "lazy-triton performance" in title
    for chart_id, is_plot, svgs, traces, height in drawn:
        assert is_plot and svgs >= 1 and height > 100, (chart_id, is_plot, svgs, height)
        assert traces >= 1, f"{chart_id} drew no data"
    assert rows == len(_records()[-1]["results"])
    shot = tmp_path / "dashboard.png"
    assert shot.exists() and shot.stat().st_size > 20_000
