"""`lazy bench` and `lazy dashboard` on the command line: options, exit codes, the files they write and
the run record's schema. Benchmarks are never timed assertions: nothing here checks a speed.

The bench runs at `--size tiny` with one timed call and no torch.compile (~20 s of startup): the
whole suite in this process without the cold-compile measurement (compiled kernels come from the
disk cache after the first run), and two workloads through the console script with it.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from perf import history
from perf.run import format_table
from perf.workloads import SUITE, WORKLOADS

FIXTURE = Path(__file__).parent / "fixtures" / "bench_history.jsonl"
STATUSES = {"ok", "missing", "failed", "mismatch"}


def _cli(*args, timeout=300):  # the installed entry point's module, in a fresh process
    return subprocess.run([sys.executable, "-m", "lazy.cli", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


_main = run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `lazy bench --size tiny --json` appended to a copy of the fixture history."""
    d = tmp_path_factory.mktemp("bench")
    hist = d / "history.jsonl"
    shutil.copy(FIXTURE, hist)
    rc, out, err = _main("bench", "--size", "tiny", "--repeat", "1", "--warmup", "0", "--no-compile", "--no-cold",
                         "--peers", "lazy.jit,numpy,torch,tinygrad", "--json", "--output", str(hist),
                         "--dashboard", str(d / "dash.html"))
    return {"rc": rc, "out": out, "err": err, "hist": hist, "dash": d / "dash.html"}


def test_help_names_every_option():
    rc, out, _ = _main("bench", "--help")
    assert rc == 0
    for opt in ("--size", "--filter", "--json", "--output", "--dashboard", "--no-compile", "--repeat", "--list"):
        assert opt in out
    assert "Exit codes" in out
    rc, out, _ = _main("dashboard", "--help")
    assert rc == 0 and "--output" in out


def test_unknown_workload_is_a_usage_error_listing_the_valid_ones():
    rc, out, err = _main("bench", "--filter", "no_such_workload", "--no-save")
    assert rc == 2 and out == ""
    assert "no_such_workload" in err
    for name in SUITE:
        assert name in err


def test_other_usage_errors_exit_2():
    assert _main("bench", "--peers", "numpy,pandas", "--no-save")[0] == 2
    assert _main("bench", "--size", "enormous")[0] == 2
    assert _main("bench", "--repeat", "0", "--no-save")[0] == 2


def test_model_suite_lists_the_models_and_checks_its_usage():
    from perf import models

    rc, out, _ = _main("bench", "--suite", "models", "--list")
    assert rc == 0 and all(name in out for name in models.MODELS)
    assert _main("bench", "--suite", "models", "--size", "medium", "--no-save")[0] == 2  # tiny and small only
    rc, _, err = _main("bench", "--suite", "models", "--filter", "alexnet", "--no-save")
    assert rc == 2 and "alexnet" in err and "resnet18" in err
    assert _main("bench", "--suite", "models", "--peers", "pandas", "--no-save")[0] == 2
    assert _main("bench", "--suite", "models", "--repeat", "0", "--no-save")[0] == 2

def test_list_shows_every_workload_and_what_is_missing():
    rc, out, _ = _main("bench", "--list")
    assert rc == 0
    for name, w in SUITE.items():
        assert name in out
        if w.missing():
            assert f"missing: {w.missing()}" in out


def test_suite_covers_the_issue_and_keeps_the_demo_set():
    groups = {w.group for w in SUITE.values()}
    assert {"elementwise", "normalization", "reduction", "broadcast", "matmul", "training"} <= groups
    assert list(WORKLOADS) == ["elementwise_chain", "softmax", "layernorm", "sum_of_squares"]
    for w in WORKLOADS.values():
        assert w.lazy and w.torch and w.numpy and w.missing() is None


def test_tiny_run_exit_code_json_and_history(tiny_run):
    assert tiny_run["rc"] == 0, tiny_run["err"]
    rec = json.loads(tiny_run["out"])  # strict JSON: no NaN
    assert history.validate(rec) == []
    assert [r["workload"] for r in rec["results"]] == list(SUITE)
    assert rec["size"] == "tiny" and rec["device"] == "cpu" and rec["peers"][0] == "lazy"
    assert rec["peers_unavailable"]["torch.compile"] == "not requested"
    assert "tinygrad" in rec["peers"] or "tinygrad" in rec["peers_unavailable"]
    for key in ("commit", "dirty"):
        assert key in rec["git"]
    for key in ("numpy", "torch", "python", "tinygrad", "cc"):
        assert key in rec["versions"]
    assert rec["bandwidth"]["copy_gbps"] > 0 and rec["bandwidth"]["triad_gbps"] > 0 and rec["matmul"]["gflops"] > 0
    assert "cpu" in rec["machine"]

    records, problems = history.load(tiny_run["hist"])
    fixture_records, _ = history.load(FIXTURE)
    assert problems == [] and len(records) == len(fixture_records) + 1  # appended, nothing rewritten
    assert records[-1]["date"] == rec["date"] and records[-1]["results"] == rec["results"]
    assert tiny_run["dash"].exists() and "chart-speedup" in tiny_run["dash"].read_text()
    assert f"[{len(SUITE)}/{len(SUITE)}]" in tiny_run["err"] and "history:" in tiny_run["err"]  # progress


def test_tiny_run_rows(tiny_run):
    rec = json.loads(tiny_run["out"])
    for r in rec["results"]:
        w = SUITE[r["workload"]]
        assert r["status"] in STATUSES
        assert r["peers"]["torch"]["median_s"] > 0  # every workload has a torch implementation
        if w.missing():  # shown as missing, not hidden, and its peers still ran
            assert r["status"] == "missing" and r["missing"] == w.missing()
            assert r["peers"]["lazy"]["status"] == "missing"
            continue
        assert r["status"] == "ok", r.get("error")
        lz = r["peers"]["lazy"]
        assert lz["median_s"] > 0 and lz["samples"] >= 1
        assert (lz["gflops"] if r["flops"] else lz["gbps"]) > 0
        assert 0 < lz["roof_fraction"]
        assert r["kernels"] >= 1 and len(r["kernel_names"]) == r["kernels"]
        assert r["expected_kernels"] is None or r["kernels"] == r["expected_kernels"]
        assert r["compile"]["lazy_first_call_s"] > 0
        assert r["overhead_us"] >= 0 and r["rel_err"] <= w.rtol
        assert all(k["gbps"] is None or k["gbps"] > 0 for k in r["kernel_detail"])
        jit = r["peers"]["lazy.jit"]  # the same function replayed by lazy.jit: same values
        assert jit["status"] == "ok" and jit["median_s"] > 0 and jit["rel_err"] <= w.rtol
        # (one timed call: a jit is still recording after it; the bench's default warm-up replays)
        assert jit["jit_status"] in ("capturing", "replaying") or jit["jit_status"].startswith("failed: ")
        if not r["flops"]:  # bandwidth rows: rated against a triad timed in the same rounds
            assert r["roof_gbps"] > 0 and lz["roof_fraction"] == pytest.approx(lz["gbps"] / r["roof_gbps"])
            assert r["kernel_roof_fraction"] > 0 and 0 < lz["attainable_fraction"]
            assert "compute_floor_s" not in r  # tiny rows are cache-resident already


def test_compute_floor_scales_a_cache_resident_copy(monkeypatch):
    from perf import run

    monkeypatch.setattr(run, "FLOOR_NUMEL", 1 << 12)
    limits = {"bandwidth": run.measure_bandwidth(n=1 << 16, repeat=1), "matmul": {"gflops": 1.0}}
    r = run.bench_workload(SUITE["elementwise_chain"], 1 << 14, run.make_peers("cpu", []), repeat=2, warmup=1,
                           cold=False, limits=limits)
    assert r["status"] == "ok" and r["compute_floor_s"] > 0
    assert r["attainable_s"] == pytest.approx(max(r["bytes"] / (r["roof_gbps"] * 1e9), r["compute_floor_s"]))
    assert r["peers"]["lazy"]["attainable_fraction"] == pytest.approx(r["attainable_s"] / r["peers"]["lazy"]["median_s"])
    assert "floor" in run.format_table({**_record_for([r]), "results": [r]})


def _record_for(results):
    rec = json.loads(json.dumps(history.load(FIXTURE)[0][-1]))
    rec["results"] = results
    return rec


def test_jit_rows_that_cannot_replay_are_marked_not_warned(tiny_run):
    assert "JitWarning" not in tiny_run["err"]
    rec = json.loads(tiny_run["out"])
    table = format_table(rec)
    for r in rec["results"]:
        status = r["peers"].get("lazy.jit", {}).get("jit_status", "")
        if status.startswith("failed"):
            row = next(line for line in table.splitlines() if line.startswith(r["workload"] + " "))
            assert "*" in row


def test_table_shows_every_row_and_missing_features(tiny_run):
    rec = json.loads(tiny_run["out"])
    table = format_table(rec)
    for name in SUITE:
        assert name in table
    for r in rec["results"]:
        if r["status"] == "missing":
            assert f"missing: {r['missing']}" in table
    assert "x numpy" in table and "x torch" in table
    assert f"triad {rec['bandwidth']['triad_gbps']:.1f} GB/s" in table


def test_console_script_prints_the_table_and_measures_compile_times(tmp_path):
    r = _cli("bench", "--size", "tiny", "--filter", "softmax,sum_inner", "--repeat", "1", "--no-compile",
             "--peers", "torch", "--output", str(tmp_path / "h.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "softmax" in r.stdout and "sum_inner_permuted" in r.stdout and "x torch" in r.stdout
    assert "GB/s" in r.stdout and "cold s" in r.stdout
    assert "[1/3] softmax" in r.stderr and "[3/3] sum_inner_permuted" in r.stderr  # progress goes to stderr
    assert (tmp_path / "dashboard.html").exists()  # default: beside the history
    records, problems = history.load(tmp_path / "h.jsonl")
    assert problems == [] and len(records) == 1
    for row in records[0]["results"]:
        c = row["compile"]
        assert c["lazy_cold_s"] > 0 and c["lazy_warm_s"] > 0 and c["lazy_compiler_s"] >= 0


def test_dashboard_command_renders_the_fixture(tmp_path):
    rc, out, err = _main("dashboard", str(FIXTURE), "--output", str(tmp_path / "d.html"))
    assert rc == 0, err
    assert (tmp_path / "d.html").read_text().startswith("<!DOCTYPE html>")
    assert "d.html" in out


def test_dashboard_command_errors(tmp_path):
    rc, _, err = _main("dashboard", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "d.html"))
    assert rc == 2 and "no history file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{\"schema\": 1}\n")
    rc, _, err = _main("dashboard", str(bad), "--output", str(tmp_path / "d.html"))
    assert rc == 2 and "bad.jsonl:1" in err and "bad.jsonl:2" in err and "no valid run record" in err
    assert not (tmp_path / "d.html").exists()


def test_dashboard_skips_a_corrupt_line_and_says_so(tmp_path):
    hist = tmp_path / "h.jsonl"
    hist.write_text(FIXTURE.read_text() + "{truncated\n")
    rc, _, err = _main("dashboard", str(hist), "--output", str(tmp_path / "d.html"))
    assert rc == 0 and "line skipped" in err and (tmp_path / "d.html").exists()


def test_a_failing_measurement_slot_leaves_the_peers_alone(monkeypatch):
    from perf import run

    def broken_floor(*a, **kw):
        def call():
            raise RuntimeError("floor broke")
        return call

    monkeypatch.setattr(run, "FLOOR_NUMEL", 1 << 12)
    monkeypatch.setattr(run, "_floor_runs", broken_floor)
    limits = {"bandwidth": run.measure_bandwidth(n=1 << 16, repeat=1), "matmul": {"gflops": 1.0}}
    r = run.bench_workload(SUITE["softmax"], 1 << 14, run.make_peers("cpu", []), repeat=2, warmup=1,
                           cold=False, limits=limits)
    assert r["status"] == "ok" and "compute_floor_s" not in r
    assert set(r["peers"]) == {"lazy"} and r["overhead_us"] >= 0 and r["roof_gbps"] > 0


@pytest.mark.parametrize("where", ["output", "dashboard"])
def test_bench_refuses_an_unwritable_target_before_running(tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    targets = {"output": str(tmp_path / "h.jsonl"), "dashboard": str(tmp_path / "d.html")}
    for bad, why in [(str(tmp_path), "is a directory"), (str(blocker / "sub" / "x"), "is not a directory")]:
        rc, out, err = _main("bench", "--filter", "softmax", "--size", "tiny", "--no-compile",
                             *(f"--{k}={bad if k == where else v}" for k, v in targets.items()))
        assert rc == 2 and out == "" and f"--{where}: cannot write" in err and why in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created, nothing half-written


def test_dashboard_refuses_a_directory_as_output(tmp_path):
    rc, _, err = _main("dashboard", str(FIXTURE), "--output", str(tmp_path))
    assert rc == 2 and "is a directory" in err


def _corruptions(record):
    """Every field of `record` (lists: their first item) set in turn to values of the wrong type."""
    def paths(o, p=()):
        yield p
        items = o.items() if isinstance(o, dict) else enumerate(o[:1]) if isinstance(o, list) else ()
        for k, v in items:
            yield from paths(v, (*p, k))

    for path in list(paths(record))[1:]:
        for bad in ("x", [1], None):
            yield path, bad


def test_history_records_of_the_wrong_shape_are_skipped_never_crash_the_dashboard():
    import copy

    from perf import dashboard

    records, _ = history.load(FIXTURE)
    base = copy.deepcopy(records[-1])
    base["results"] = base["results"][:2]
    valid = []
    for path, bad in _corruptions(base):
        rec = copy.deepcopy(base)
        o = rec
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = bad
        if not history.validate(rec):
            valid.append(rec)
    assert len(valid) > 50
    for rec in valid:  # whatever passes validation renders (as the latest run: most charts show only that)
        dashboard.render([rec])
    rec = copy.deepcopy(records[-1])
    rec["results"][0]["peers"]["lazy"]["median_s"] = "fast"
    rec["schema"] = "1"
    problems = history.validate(rec)
    assert "results[0].peers.lazy.median_s is not a number or null (got \"fast\")" in problems
    assert "schema is not a integer (got \"1\")" in problems
    rec["bandwidth"] = {"method": "triad"}  # the charts divide by these
    assert {"bandwidth misses 'copy_gbps'", "bandwidth misses 'triad_gbps'"} <= set(history.validate(rec))


def test_dashboard_command_skips_a_wrongly_typed_record(tmp_path):
    rec = json.loads(FIXTURE.read_text().splitlines()[-1])
    rec["results"][0]["peers"] = ["lazy"]
    hist = tmp_path / "h.jsonl"
    hist.write_text(FIXTURE.read_text() + json.dumps(rec) + "\n")
    rc, _, err = _main("dashboard", str(hist), "--output", str(tmp_path / "d.html"))
    assert rc == 0 and "results[0].peers is not an object; line skipped" in err
