"""The HTML dashboard: rendered from a small fixture history, self-contained, and loaded in a real
headless Chromium with the network cut off: no console errors, every chart drawn.

The browser test needs Chromium (Debian: `apt-get install -y chromium`; `.ci/run` installs it) and
the `playwright` package (in the `test` extra), driving the system browser: playwright never
downloads one of its own here. Without either it skips and says why. `LAZY_TEST_BROWSER` may name
another Chromium-family executable.
"""

import copy
import json
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


# -- records the validator accepts, each missing or zeroing one optional field --------------------
def _small_record() -> dict:
    """A valid record with every field the dashboard reads (add one here when it starts reading
    another): a bandwidth-bound row, a matmul-bound row, an old row without
    a roof of its own, a missing row; lazy and two peers."""
    def peer(s, **kw):
        return {"status": "ok", "median_s": s, "kernels": 1, "error": None, **kw}

    bw_row = {"workload": "add", "description": "a + b", "status": "ok", "missing": None, "error": None,
              "flops": None, "roof_gbps": 40.0, "kernels": 1, "expected_kernels": 1, "kernel_names": ["k0_add"],
              "kernel_detail": [{"name": "k0_add", "seconds": 1e-6, "gbps": 0.77, "roof_fraction": 0.02},
                                {"name": "k1_copy", "seconds": 2e-6, "gbps": 0.25, "roof_fraction": 0.01}],
              "overhead_us": 12.0, "lazy_first_call_s": 0.2,
              "compile": {"lazy_cold_s": 0.2, "lazy_warm_s": 0.001, "torch.compile_cold_s": 2.0,
                          "torch.compile_warm_s": 0.1},
              "peers": {"lazy": peer(1e-5, gbps=0.08, roof_fraction=0.002), "torch": peer(2e-5, gbps=0.04),
                        "torch.compile": {"status": "failed", "error": "RuntimeError: no"}}}
    mm_row = {"workload": "matmul", "status": "ok", "flops": 2 * 64 ** 3, "kernels": 1,
              "kernel_detail": [{"name": "k0_gemm", "seconds": 1e-4, "gbps": 0.5}],
              "peers": {"lazy": peer(1e-4, gflops=5.0, roof_fraction=0.5), "torch": peer(2e-4, gflops=4.0)}}
    old_row = {"workload": "scale", "status": "ok", "kernel_detail": [{"name": "k0_mul", "gbps": 0.3}],
               "peers": {}}  # from a run before rows had their own roof: the triad is their roof
    missing_row = {"workload": "conv", "status": "missing", "missing": "no conv2d yet", "peers": {}}
    return {"schema": 1, "date": "2026-11-20T09:00:00+00:00",
            "git": {"commit": "dead0000111122223333444455556666777788ff", "dirty": False},
            "machine": {"cpu": "AMD EPYC", "cpus_usable": 2, "memory_gb": 23.5, "gpu": "none"},
            "versions": {"torch": "2.13.0"}, "size": "tiny", "device": "cpu", "backend": "c",
            "peers": ["lazy", "torch", "torch.compile"], "peers_unavailable": {"tinygrad": "not installed"},
            "bandwidth": {"copy_gbps": 50.0, "triad_gbps": 60.0, "method": "OpenMP C copy and triad"},
            "matmul": {"gflops": 8.0, "method": "numpy matmul (BLAS)"},
            "torch_compile_startup_s": 18.0, "wall_s": 3.0, "results": [bw_row, mm_row, old_row, missing_row]}


def _field_paths(x, path=()):
    """Every dict key, at any depth (through lists), as a path of keys and list indices."""
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        if isinstance(x, dict):
            yield path + (k,)
        yield from _field_paths(v, path + (k,))


def _one_field_variants() -> dict[str, dict]:
    """The small record with one field dropped, null, zero or empty: those the validator accepts."""
    base = _small_record()
    out, seen = {}, set()
    for path in _field_paths(base):
        for how, value in (("drop", None), ("null", None), ("zero", 0), ("empty", [])):
            rec = copy.deepcopy(base)
            parent = rec
            for k in path[:-1]:
                parent = parent[k]
            if how == "drop":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            text = json.dumps(rec, sort_keys=True)
            if text not in seen and history.validate(rec) == []:
                seen.add(text)
                out[f"{how}-" + ".".join(map(str, path))] = rec
    return out


VARIANTS = _one_field_variants()


def test_the_variants_cover_the_fields_that_crashed():
    assert {"drop-matmul.method", "zero-bandwidth.triad_gbps", "drop-results.0.kernel_detail.0.seconds",
            "drop-results.0.kernel_detail.0.name"} <= set(VARIANTS)
    assert len(VARIANTS) > 100, len(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_record_the_validator_accepts_renders(name):
    rec = VARIANTS[name]
    page = dashboard.render([_small_record(), rec])  # the trend charts compare it with a full run
    assert "chart-speedup" in page and "matmul" in page


def test_unmeasured_limits_are_marked_not_drawn_at_zero():
    page = dashboard.render([VARIANTS["zero-bandwidth.triad_gbps"]])
    assert "triad not measured in this run" in page and "triad 0.0" not in page
    assert "k0_mul: 0.3 GB\\u002fs, triad not measured" in page  # its row has no roof of its own
    page = dashboard.render([VARIANTS["drop-matmul.method"]])
    assert "method not recorded" in page
    page = dashboard.render([VARIANTS["zero-matmul.gflops"]])
    assert "matmul roof not measured" in page and "0 GFLOP/s (measured)" not in page
