"""Kernel autotuning: the search, candidate verification, budgets, the tuning database, the runtime
hook (tuned configs used by a later process), `lazy.tune`, LAZY_TUNE=1 and `lazy tune`.

Timing is never asserted: where a winner matters, a synthetic `bench(kernel, config)` decides it
(candidates still run for real, to be verified). Kernels are tiny; the database is a temporary
file per test (LAZY_TUNE_DB), the compiled-kernel cache is the usual one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch
from conftest import run_cli

import lazy
from codegen import render_c, render_triton, tune, tunedb
from codegen.kernel_ir import BufferArg, Expr, Kernel, Store
from codegen.render_c import CConfig
from lazy import runtime, tuning

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    path = tmp_path / "tuning.sqlite"
    monkeypatch.setenv("LAZY_TUNE_DB", str(path))
    monkeypatch.delenv("LAZY_TUNE", raising=False)
    tune.forget()
    tunedb._warned.clear()
    yield path
    tune.forget()
    assert runtime.tuner is None


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def kernels_of(fn) -> list:
    """The Kernel IR of what fn() realizes (in launch order)."""
    got = []

    def listen(k, backend):
        got.append(k)

    runtime.kernel_listeners.append(listen)
    try:
        out = fn()
        lazy.realize(*(out if isinstance(out, (list, tuple)) else [out]))
    finally:
        runtime.kernel_listeners.remove(listen)
    return got


def buffers_for(k, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b.numel, generator=g).to(runtime.TORCH_DTYPES[b.dtype]) for b in k.buffers]


def colsum_kernel():
    x = lazy.tensor(rand(48, 200))
    return kernels_of(lambda: (x * 2.0).sum(0))[0]


# -- the search ------------------------------------------------------------------------------------
SPACE = {"a": (1, 2, 4, 8, 16, 32, 64), "b": (None, 4, 8, 16), "c": (False, True), "d": (16, 32, 64, 128, 256)}
START = {"a": 8, "b": None, "c": False, "d": 64}


def synthetic(p: dict) -> float:
    """Known best: a=32, b=8, c=True, d=16 (with an interaction between a and d)."""
    return (1.0 + abs(np.log2(p["a"]) - 5) * 0.3 + {None: 0.4, 4: 0.2, 8: 0.0, 16: 0.1}[p["b"]]
            + (0.0 if p["c"] else 0.25) + abs(np.log2(p["d"]) - 4) * 0.1 * (1 + (p["a"] != 32)))


def test_search_finds_the_known_best_with_fewer_evaluations_than_exhaustive():
    calls = []
    s = tune.coordinate_descent(SPACE, START, lambda p: calls.append(dict(p)) or synthetic(p), min_gain=0.0)
    assert s.best == {"a": 32, "b": 8, "c": True, "d": 16}
    assert s.best_s == pytest.approx(1.0)
    exhaustive = np.prod([len(v) for v in SPACE.values()])
    assert s.evaluated == len(calls) < exhaustive / 4
    assert len({tuple(sorted(c.items(), key=str)) for c in calls}) == len(calls)  # nothing evaluated twice
    assert s.stop == "converged"


def test_search_stops_early_when_no_coordinate_improves():
    s = tune.coordinate_descent(SPACE, START, lambda p: 1.0)
    # one round: the start, two neighbours of each ordered knob, every other value of the others
    assert s.stop == "converged" and s.best == START
    assert s.evaluated == 1 + 2 + 3 + 1 + 2


def test_search_treats_identical_code_as_one_candidate_and_skips_invalid_points():
    evaluated = []
    s = tune.coordinate_descent(SPACE, START, lambda p: evaluated.append(p) or synthetic(p),
                                identity=lambda p: (p["a"], p["b"]), valid=lambda p: p["a"] <= 32)
    assert all(p["a"] <= 32 for p in evaluated)
    assert len({(p["a"], p["b"]) for p in evaluated}) == len(evaluated)  # c and d "do not change the code"
    assert s.best["a"] == 32 and s.best["b"] == 8


def test_search_honours_the_wall_budget_and_the_config_cap():
    def slow(p):
        time.sleep(0.05)
        return synthetic(p)

    t0 = time.perf_counter()
    s = tune.coordinate_descent(SPACE, START, slow, budget_s=0.3)
    assert s.stop == "budget" and time.perf_counter() - t0 < 0.3 + 0.05
    s = tune.coordinate_descent(SPACE, START, synthetic, max_configs=5)
    assert s.stop == "max_configs" and s.evaluated == 5


def test_every_value_of_a_knob_is_reachable_from_the_default():
    space = {"n": (1, 4, 16, 64), "u": (64, 1, 4)}  # n is walked (unimodal cost); u is not in order: a set
    for n in space["n"]:
        for u in space["u"]:
            def cost(p, n=n, u=u):
                return 1 + abs(space["n"].index(p["n"]) - space["n"].index(n)) + (p["u"] != u)

            assert tune.coordinate_descent(space, {"n": 4, "u": 64}, cost).best == {"n": n, "u": u}


def test_rejected_candidates_never_win():
    s = tune.coordinate_descent(SPACE, START, lambda p: None if p["c"] else synthetic(p), min_gain=0.0)
    assert s.best["c"] is False and s.best["a"] == 32


# -- the C search space ----------------------------------------------------------------------------
def test_default_config_renders_the_heuristic_source():
    k = colsum_kernel()
    src = render_c.render_c(k)
    assert render_c.render_c(k, config=CConfig()) == src
    assert f"xb += {render_c.TILE}" in src and "simdlen" not in src and "unroll" not in src


def test_every_c_knob_changes_the_code_and_keeps_the_result():
    x, y, z = lazy.tensor(rand(48, 200)), lazy.tensor(rand(40_000, seed=1)), lazy.tensor(rand(200, 300, seed=2))
    ks = (kernels_of(lambda: (z * 2.0).sum(0)) + kernels_of(lambda: x.softmax(-1))
          + kernels_of(lambda: (y * 3.0).exp()) + kernels_of(lambda: x.T + 1.0)
          + kernels_of(lambda: (y.sigmoid() + y).tanh()))
    seen_knobs = set()
    for k in ks:
        space = render_c.search_space(k)
        points = [{knob: v} for knob, values in space.items() for v in values if v != getattr(CConfig(), knob)]
        default_src = render_c.render_c(k)
        # verifying every single-knob change is what tune_kernel does before a candidate may win
        res = tune.tune_kernel(k, "c", buffers_for(k), bench=lambda _k, cfg: 1.0, max_configs=100, store=False)
        assert res.rejected == [], [(t.point, t.note) for t in res.rejected]
        for p in points:
            if render_c.render_c(k, config=replace(CConfig(), **p)) != default_src:
                seen_knobs |= set(p)
    assert seen_knobs == set(CConfig.__dataclass_fields__)


def test_c_knobs_appear_in_the_source():
    k = colsum_kernel()
    src = render_c.render_c(k, config=CConfig(tile=128, simdlen=8, unroll=True, threads=1, parallel_min_work=0,
                                              rsplit=True))
    assert "xb += 128" in src and "simdlen(8)" in src and '#pragma GCC optimize("unroll-loops")' in src
    assert "num_threads(1) reduction(+:acc0[:128])" in src
    assert "xb +=" not in render_c.render_c(k, config=CConfig(interchange=False))
    x = lazy.tensor(rand(1 << 16))
    (k1,) = kernels_of(lambda: x.exp())
    assert "x0c += 4096" in render_c.render_c(k1, config=CConfig(chunk=4096))
    y = lazy.tensor(rand(256, 300))
    (k2,) = kernels_of(lambda: y.softmax(-1))
    src = render_c.render_c(k2, config=CConfig(row_fn=True))
    assert "static inline void lazy_kernel_row(int64_t x0, const float* restrict b0" in src
    assert "x0++) lazy_kernel_row(x0, b0, b1);" in src


# -- verification --------------------------------------------------------------------------------
def test_a_wrong_candidate_is_rejected(monkeypatch):
    k = colsum_kernel()
    real = render_c.render_c

    def sabotaged(kernel, fn_name="lazy_kernel", threads=None, config=None):
        src = real(kernel, fn_name, threads, config)
        if config is not None and config.simdlen == 8:  # this config's kernel forgets half of the sum
            src = src.replace("acc0[j] += (double)", "acc0[j] += 0.5 * (double)")
        return src

    monkeypatch.setattr(render_c, "render_c", sabotaged)
    res = tune.tune_kernel(k, "c", buffers_for(k), bench=lambda _k, cfg: 0.1 if cfg.simdlen == 8 else 1.0,
                           store=False)
    assert res.best.simdlen != 8
    (bad,) = [t for t in res.rejected if t.point.get("simdlen") == 8]
    assert "WrongResult" in bad.note and "differ" in bad.note


def test_mismatch_is_exact_for_integers_and_tight_for_floats():
    a = torch.arange(10, dtype=torch.int32)
    assert tune.mismatch(a, a.clone(), "int32") is None
    assert "1 of 10" in tune.mismatch(a, a + (a == 3).int(), "int32")
    f = torch.randn(1000)
    assert tune.mismatch(f, f * (1 + 1e-7), "float32") is None  # a reordered float sum
    assert tune.mismatch(f, f * (1 + 1e-3), "float32") is not None
    nan = torch.tensor([float("nan"), 1.0])
    assert tune.mismatch(nan, nan.clone(), "float32") is None


def test_tuning_does_not_write_the_real_buffers_even_for_in_place_kernels():
    i = sympy.Symbol("x0", integer=True, nonnegative=True)
    load = Expr("load", (), (0, i, ()), "float32")
    k = Kernel("k0_inplace", (BufferArg("b0", "float32", 64, True),), (64,), (),
               (Store(0, i, Expr("add", (load, Expr("const", (), 1.0, "float32")), None, "float32"), "float32"),))
    t = torch.arange(64, dtype=torch.float32)
    res = tune.tune_kernel(k, "c", [t], bench=lambda _k, cfg: 1.0, store=False)
    assert torch.equal(t, torch.arange(64, dtype=torch.float32))
    assert res.rejected == []  # each candidate saw the same input: x + 1 once, not once per run


def test_tune_kernel_honours_the_budget_with_a_slow_benchmark():
    k = colsum_kernel()

    def slow(_k, cfg):
        time.sleep(0.2)
        return 1.0

    res = tune.tune_kernel(k, "c", buffers_for(k), bench=slow, budget_s=1.0, store=False)
    assert res.stop == "budget" and res.seconds < 1.0 + 0.35
    res = tune.tune_kernel(k, "c", buffers_for(k), bench=lambda _k, c: 1.0, max_configs=3, store=False)
    assert res.stop == "max_configs" and res.tried == 3


# -- the database --------------------------------------------------------------------------------
def row(kernel="k" * 24, device="dev", **kw):
    base = {"kernel": kernel, "device": device, "version": "v1", "backend": "c", "name": "k0_x",
            "config": {"tile": 128}, "default_config": {"tile": 64}, "default_s": 2e-3, "tuned_s": 1e-3,
            "tried": 5, "rejected": 0, "tuning_s": 1.5}
    return {**base, **kw}


def test_database_round_trip_and_no_file_means_no_query(db):
    assert tunedb.get("k" * 24, "dev", "v1") is None and not db.exists()
    x = lazy.tensor(rand(8, 8))
    before = tune.stats["lookups"]
    (x + 1.0).realize()
    assert tune.stats["lookups"] == before and not db.exists()  # no database: not even opened
    assert tunedb.put([row()])
    got = tunedb.get("k" * 24, "dev", "v1")
    assert got["config"] == {"tile": 128} and got["tuned_s"] == 1e-3
    assert tunedb.get("k" * 24, "other device", "v1") is None
    assert tunedb.get("k" * 24, "dev", "v2") is None


@pytest.mark.parametrize("content", ["corrupt", "foreign", "old schema"])
def test_unusable_database_is_reported_and_set_aside(db, capfd, content):
    if content == "corrupt":
        db.write_bytes(b"this is not sqlite, just bytes " * 100)
    else:
        con = sqlite3.connect(db)
        if content == "foreign":
            con.execute("CREATE TABLE users (id INTEGER)")
        else:
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute("CREATE TABLE tuned (kernel TEXT)")
            con.execute("INSERT INTO meta VALUES ('app', ?), ('schema', '0')", (tunedb.APP,))
        con.commit()
        con.close()
    assert tunedb.get("k" * 24, "dev", "v1") is None  # never raises
    assert tunedb.put([row()])
    assert tunedb.get("k" * 24, "dev", "v1")["config"] == {"tile": 128}
    err = capfd.readouterr().err
    assert err.count(str(db)) >= 1 and "moved it to" in err and err.count("lazy: tuning database") == 1
    aside = list(db.parent.glob("tuning.sqlite.corrupt-*"))
    assert len([p for p in aside if not p.name.endswith(("-wal", "-shm"))]) == 1


def test_concurrent_writers(db):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from codegen import tunedb
        me = sys.argv[1]
        for i in range(40):
            assert tunedb.put([{{"kernel": f"{{me}}-{{i}}", "device": "dev", "version": "v1", "backend": "c",
                                "name": "k", "config": {{"tile": i}}, "default_config": {{}}, "default_s": 1.0,
                                "tuned_s": 1.0, "tried": 1, "rejected": 0, "tuning_s": 0.0}},
                               {{"kernel": "shared", "device": "dev", "version": "v1", "backend": "c", "name": "k",
                                "config": {{"tile": i}}, "default_config": {{}}, "default_s": 1.0, "tuned_s": 1.0,
                                "tried": 1, "rejected": 0, "tuning_s": 0.0}}])
            assert tunedb.get(f"{{me}}-{{i}}", "dev", "v1") is not None
    """)
    env = {**os.environ, "LAZY_TUNE_DB": str(db)}
    procs = [subprocess.Popen([sys.executable, "-c", script, name], env=env, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b", "c")]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert not any("lazy:" in e for e in errs), errs
    keys = {r["kernel"] for r in tunedb.rows()}
    assert keys == {f"{n}-{i}" for n in "abc" for i in range(40)} | {"shared"}


def test_export_import_clear_round_trip(db, tmp_path):
    tunedb.put([row(), row(kernel="j" * 24, device="a GPU")])
    out = tmp_path / "tuned.json"
    assert tunedb.export(out) == 2
    assert tunedb.clear() == 2 and tunedb.rows() == []
    rows = tunedb.load_export(out)
    assert tunedb.put(rows) and {r["device"] for r in tunedb.rows()} == {"dev", "a GPU"}
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a lazy tuning export"):
        tunedb.load_export(tmp_path / "bad.json")


# -- the runtime ---------------------------------------------------------------------------------
def prefer_simdlen8(_k, cfg):
    return 0.5 if getattr(cfg, "simdlen", None) == 8 else 1.0


PROGRAM = """
import numpy as np, lazy
x = lazy.tensor(np.random.default_rng(0).standard_normal((48, 200)).astype(np.float32))  # rand(48, 200)
y = (x * 2.0).sum(0)
"""


def test_lazy_tune_stores_winners_that_a_second_process_uses(db):
    x = lazy.tensor(rand(48, 200))  # the same data as PROGRAM's x
    report = lazy.tune(lambda: (x * 2.0).sum(0), bench=prefer_simdlen8, max_configs=8)
    assert isinstance(report, tuning.TuneReport) and len(report.tuned) == 1
    (res,) = report.tuned
    assert res.best.simdlen == 8 and res.status == "tuned" and res.tried <= 8
    np.testing.assert_allclose(report.output.numpy(), (x.numpy().astype(np.float64) * 2).sum(0), rtol=1e-5, atol=1e-5)
    assert "k0_" in str(report) and "simdlen=8" in str(report)
    # this process: the program now launches the winner
    with lazy.profile():
        (x * 2.0).sum(0).realize()
    assert any(ln.config == res.best for p in runtime._programs.values() for ln in p.launches)
    # another process: no tuning, one lookup, the stored config
    check = PROGRAM + textwrap.dedent("""
        from lazy import runtime
        from codegen import tune
        y.realize()
        (ln,) = [ln for p in runtime._programs.values() for ln in p.launches]
        print(ln.config.simdlen, "simdlen(8)" in ln.source, tune.stats, runtime.tuner)
    """)
    out = subprocess.run([sys.executable, "-c", check], env={**os.environ, "LAZY_TUNE_DB": str(db)},
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["8", "True"] and "'hits': 1" in out.stdout and "None" in out.stdout
    # tuning again finds it stored: nothing is re-tuned
    again = lazy.tune(lambda: (x * 2.0).sum(0), bench=prefer_simdlen8)
    assert [r.status for r in again.kernels] == ["stored"] and again.tuned == []


def test_user_buffers_are_untouched_and_results_are_right():
    a = rand(64, 100)
    x = lazy.tensor(a)
    report = lazy.tune(lambda: [x.softmax(-1), (x * x).sum()], bench=lambda _k, cfg: 1.0, max_configs=4)
    assert np.array_equal(x.numpy(), a)
    sm, ss = report.output
    np.testing.assert_allclose(sm.numpy(), torch.softmax(torch.from_numpy(a), -1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ss.numpy(), (a.astype(np.float64) ** 2).sum(), rtol=1e-5)


def test_strided_buffers_are_copied_with_their_layout():
    t = torch.randn(300, 400)
    col = t[:, 3]  # a buffer whose kernel addresses 119601 elements from data_ptr()
    x = lazy.tensor(col)
    report = lazy.tune(lambda: (x * 2.0).sum(), bench=lambda _k, cfg: 1.0, max_configs=3)
    assert report.kernels[0].rejected == []
    torch.testing.assert_close(report.output.torch(), (col.double() * 2).sum().float())


def test_a_kernel_whose_tuning_fails_runs_with_its_default(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("benchmark exploded")

    monkeypatch.setattr(tune, "tune_kernel", broken)
    x = lazy.tensor(rand(16, 16))
    report = lazy.tune(lambda: x + 1.0)
    assert report.failed and "benchmark exploded" in report.failed[0][1]
    np.testing.assert_array_equal(report.output.numpy(), x.numpy() + 1)


def test_lazy_tune_env_switch_tunes_on_first_sight(db, tmp_path):
    env = {**os.environ, "LAZY_TUNE": "1", "LAZY_TUNE_DB": str(db), "LAZY_TUNE_MAX_CONFIGS": "3"}
    out = subprocess.run([sys.executable, "-c", PROGRAM + "print(y.numpy()[:2])"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "tune 1: k0_" in out.stderr and "3 configs" in out.stderr
    assert len(tunedb.rows()) == 1


# -- Triton: the same search, configs honoured, candidates verified under the interpreter ----------
@pytest.fixture
def interpreter(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lazy-cache"))


def test_triton_search_space_and_verified_candidates(interpreter):
    x = lazy.tensor(rand(8, 40))
    (k,) = kernels_of(lambda: x.softmax(-1))
    space = render_triton.search_space(k)
    d = render_triton.choose_config(k)
    assert set(space) == {"XBLOCK", "RBLOCK", "num_warps", "num_stages"}
    assert all(getattr(d, f) in v for f, v in space.items())
    src = render_triton.render_triton(k, replace(d, XBLOCK=2, RBLOCK=16))
    assert "'XBLOCK': 2, 'RBLOCK': 16" in src and "for roffset in range(0, 40, RBLOCK)" in src

    def cost(_k, cfg):  # the synthetic optimum: small row blocks, looped rows of 16
        return 1.0 + abs(cfg.XBLOCK - 2) + abs(np.log2(cfg.RBLOCK) - 4) + 0.1 * cfg.num_warps

    res = tune.tune_kernel(k, "triton", buffers_for(k), bench=cost, max_configs=12, store=False)
    assert res.rejected == [] and res.tried <= 12
    assert (res.best.XBLOCK, res.best.RBLOCK) != (d.XBLOCK, d.RBLOCK) and res.best.XBLOCK <= d.XBLOCK


def test_gemm_search_space_and_verified_candidates(interpreter):
    from codegen import gemm_triton
    from codegen.kernel_ir import ExternCall, StridedView

    m, n, kk = 32, 48, 40
    call = ExternCall("k0_matmul", "matmul",
                      (BufferArg("b0", "float32", m * n, True), BufferArg("b1", "float32", m * kk, False),
                       BufferArg("b2", "float32", kk * n, False)),
                      (StridedView((m, n), (n, 1), 0), StridedView((m, kk), (kk, 1), 0),
                       StridedView((kk, n), (n, 1), 0)))
    space = gemm_triton.search_space(call)
    assert {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"} <= set(space)
    res = tune.tune_kernel(call, "triton", buffers_for(call),
                           bench=lambda _k, cfg: 1.0 + abs(cfg.BLOCK_K - 16) / 16, max_configs=12, store=False)
    assert res.kind == "gemm" and res.rejected == [] and res.best.BLOCK_K == 16
    a = torch.randn(m, kk)
    b = torch.randn(kk, n)
    out = torch.empty(m, n)
    gemm_triton.load(call, res.best)(out, a, b)
    torch.testing.assert_close(out, a @ b, rtol=1e-4, atol=1e-4)


# -- `lazy tune` -------------------------------------------------------------------------------------
_main = run_cli


def test_cli_tunes_a_script_reports_and_manages_the_database(db, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(PROGRAM + "import sys\nprint('script ran with', sys.argv[1:])\ny.realize()\n")
    rc, out, err = _main("tune", "--budget-s", "5", "--max-configs", "3", str(script), "--lr", "0.1")
    assert rc == 0, err
    assert "script ran with ['--lr', '0.1']" in out and "1 tuned now" in out and "speedup" in out
    assert "tune 1: k0_" in err
    rc, out, _ = _main("tune", "--report")
    assert rc == 0 and "1 tuned kernel(s)" in out and "default ms" in out
    exported = tmp_path / "db.json"
    assert _main("tune", "--export", str(exported))[0] == 0 and len(json.loads(exported.read_text())["rows"]) == 1
    rc, out, _ = _main("tune", "--clear")
    assert rc == 0 and "cleared 1" in out and tunedb.rows() == []
    rc, out, _ = _main("tune", "--import", str(exported))
    assert rc == 0 and "imported 1" in out and len(tunedb.rows()) == 1
    rc, out, err = _main("tune", str(script))  # stored: nothing to tune again
    assert rc == 0 and "0 tuned now" in out and "stored" in err


def test_cli_exit_codes(tmp_path):
    failing = tmp_path / "fails.py"
    failing.write_text(PROGRAM + "y.realize()\nraise ValueError('boom')\n")
    rc, _, err = _main("tune", "--max-configs", "2", str(failing))
    assert rc == 1 and "ValueError: boom" in err
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    assert _main("tune", str(exits))[0] == 1
    assert _main("tune", str(tmp_path / "missing.py"))[0] == 2
    assert _main("tune")[0] == 2
    assert _main("tune", "--report", "--clear")[0] == 2
    assert _main("tune", "--budget-s", "0", str(exits))[0] == 2
    (tmp_path / "bad.json").write_text("{not json")
    rc, _, err = _main("tune", "--import", str(tmp_path / "bad.json"))
    assert rc == 2 and "not JSON" in err


def test_a_one_loop_parallel_kernel_carries_simd_on_its_parallel_loop():
    # inside the OpenMP region gcc loses `restrict`; with several outputs it then leaves the loop
    # scalar unless the loop itself says `simd` (an AdamW update with 4 outputs)
    ps = [lazy.tensor(rand(1 << 16, seed=s)) for s in range(3)]
    outs = [ps[0] * ps[1] + ps[2], ps[0] - ps[2], (ps[1] * 2.0).sqrt(), ps[2] / (ps[0].abs() + 1.0)]
    ks = kernels_of(lambda: outs)
    (k,) = [k for k in ks if len(k.stores) == 4]
    assert "#pragma omp parallel for simd schedule(static)" in render_c.render_c(k)


def test_a_row_reduction_with_a_per_row_scalar_is_not_interchanged():
    # rows reduced along their contiguous axis, plus a load of one value per row (a label, a
    # scale): that load does not move with the reduction, so it must not flip the loop order
    x, s = lazy.tensor(rand(300, 64)), lazy.tensor(rand(300, 1, seed=1))
    (k,) = kernels_of(lambda: (x * s).sum(-1))
    assert not render_c._prefers_interchange(k) and "xb +=" not in render_c.render_c(k)
