"""No code from data: tuning configs read from an export file or the tuning database are checked
knob by knob (codegen/knobs.py) before any of them reaches generated source.

A tuning file used to be trusted: a `simdlen` holding C text went into `#pragma omp simd
simdlen(...)` and ran `system()` in the next program that launched the kernel. These tests write
that file (and its cousins: out-of-range, mistyped, unknown and nested knobs), import it and
tamper the database with it, and check that nothing of it runs: an import is refused whole, a
tampered row is reported and the kernel runs with its default config. The specs beside each
config class are checked against the search spaces the tuner walks, so they cannot drift apart.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, fields, replace

import numpy as np
import pytest
import torch
from conftest import kernels_of, run_cli

import lazy
from codegen import gemm_c, gemm_triton, knobs, render_c, render_triton, tune, tunedb
from codegen.gemm_c import GemmCConfig
from codegen.gemm_triton import GemmConfig
from codegen.kernel_ir import BufferArg, ExternCall, StridedView
from codegen.render_c import CConfig
from codegen.render_triton import TritonConfig
from lazy import runtime

CLASSES = (CConfig, TritonConfig, GemmCConfig, GemmConfig)
# valid values of the knobs that have no default
REQUIRED = {TritonConfig: {"XBLOCK": 64}, GemmConfig: {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}}


def injection(path) -> str:
    """A simdlen that closes the pragma, runs a shell command, and reopens it (it worked)."""
    return (f'1)\n  for (int lz_i = 0; lz_i < 1; lz_i++) {{ extern int system(const char*); system("id > {path}"); }}'
            "\n  #pragma omp simd simdlen(8")


# (what the config holds, the knob the refusal must name)
BAD_C_CONFIGS = [
    ({"tile": 0}, "tile"),
    ({"tile": -8}, "tile"),
    ({"tile": 2.5}, "tile"),
    ({"tile": 64.0}, "tile"),
    ({"tile": "64"}, "tile"),
    ({"simdlen": -4}, "simdlen"),
    ({"simdlen": 3}, "simdlen"),
    ({"threads": True}, "threads"),
    ({"threads": 0}, "threads"),
    ({"unroll": 1}, "unroll"),
    ({"chunk": [4096]}, "chunk"),
    ({"tile": {"value": 64}}, "tile"),
    ({"stream": {"nested": {"deeper": True}}}, "stream"),
    ({"evil_knob": 1}, "evil_knob"),
]


@pytest.fixture(autouse=True)
def db(tmp_path, monkeypatch):
    path = tmp_path / "tuning.sqlite"
    monkeypatch.setenv("LAZY_TUNE_DB", str(path))
    monkeypatch.delenv("LAZY_TUNE", raising=False)
    tune.forget()
    tunedb._warned.clear()
    yield path
    tune.forget()


@pytest.fixture
def fresh_programs():
    """Programs compiled inside are compiled again (so the tuning database is read again), and
    forgotten after."""
    saved = dict(runtime._programs)
    runtime._programs.clear()
    tune.forget()
    yield
    runtime._programs.clear()
    runtime._programs.update(saved)
    tune.forget()


X = np.random.default_rng(0).standard_normal((48, 200)).astype(np.float32)


def workload():
    """Two kernels: a pointwise one (the injection's target) and a column sum (tiled: tile matters)."""
    x = lazy.tensor(X)
    return [x + 1.0, (x * 2.0).sum(0)]


def the_kernels():
    return kernels_of(lambda: lazy.realize(*workload()))


def stored_row(k, config, default_config=None, kind="c", name=None) -> dict:
    return {"kernel": k.key(), "device": tune.device_name(kind), "version": tune.backend_version(kind),
            "backend": kind, "name": name or k.name, "config": config, "default_config": default_config or {},
            "default_s": 2e-3, "tuned_s": 1e-3, "tried": 5, "rejected": 0, "tuning_s": 1.5, "created": 1.0}


def tamper(db, rows: list[dict]) -> None:
    """Write rows straight into the sqlite file, as anyone who can write it could."""
    assert tunedb.put([])  # our schema, so the file is read rather than set aside
    con = sqlite3.connect(db)
    with con:
        for r in rows:
            con.execute(f"INSERT OR REPLACE INTO tuned ({', '.join(tunedb.FIELDS)}) VALUES "
                        f"({', '.join('?' * len(tunedb.FIELDS))})",
                        [json.dumps(r[f]) if f in ("config", "default_config") else r[f] for f in tunedb.FIELDS])
    con.close()


def launches():
    return [ln for p in runtime._programs.values() for ln in p.launches]


def gemm_call(dtype="float32", m=32, n=48, k=40) -> ExternCall:
    return ExternCall("k0_matmul", "matmul",
                      (BufferArg("b0", dtype, m * n, True), BufferArg("b1", dtype, m * k, False),
                       BufferArg("b2", dtype, k * n, False)),
                      (StridedView((m, n), (n, 1), 0), StridedView((m, k), (k, 1), 0), StridedView((k, n), (n, 1), 0)))


# -- the import ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, knob", [("injection", "simdlen")] + BAD_C_CONFIGS)
def test_an_import_with_a_bad_config_is_refused_whole(db, tmp_path, bad, knob):
    pwned = tmp_path / "pwned"
    config = {"simdlen": injection(pwned)} if bad == "injection" else bad
    pointwise, colsum = the_kernels()
    export = tmp_path / "tuned.json"
    rows = [stored_row(colsum, {"tile": 128}), stored_row(pointwise, config)]  # a good row first
    export.write_text(json.dumps({"app": tunedb.APP, "schema": tunedb.SCHEMA, "rows": rows}))
    rc, out, err = run_cli("tune", "--import", str(export))
    assert rc == 2 and "imported" not in out
    assert err.count("\n") == 1 and "cannot import" in err and "row 1" in err and knob in err, err
    assert "expected" in err or "unknown knob" in err
    assert tunedb.rows() == []  # nothing half-written: not even the good row
    with pytest.raises(ValueError, match=f"row 1 .*{knob}"):
        tunedb.load_export(export)
    lazy.realize(*workload())
    assert not pwned.exists()


@pytest.mark.parametrize("row_change, message", [
    ({"backend": "python"}, "unknown backend 'python'"),
    ({"default_config": {"tile": 0}}, "default_config: CConfig.tile=0"),
    ({"name": 42}, "name=42 is not a string"),
    ({"tried": True}, "tried=True is not an integer"),
    ({"tuned_s": "fast"}, "tuned_s='fast' is not a number or null"),
    ({"backend": "triton", "config": {"XBLOCK": 48}}, "TritonConfig.XBLOCK=48: expected a power of two"),
    ({"backend": "triton", "config": {"RBLOCK": 64}}, "TritonConfig: missing knob XBLOCK"),
    ({"backend": "gemm", "config": {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "input_precision": "tf32\")"}},
     "GemmConfig.input_precision='tf32\")': expected one of 'ieee', 'tf32', 'tf32x3'"),
    ({"backend": "cgemm", "config": {"MR": 31}}, "GemmCConfig.MR=31: expected an integer from 1 to 30"),
])
def test_an_import_checks_every_field_of_a_row(tmp_path, row_change, message):
    (pointwise, _) = the_kernels()
    export = tmp_path / "tuned.json"
    export.write_text(json.dumps({"app": tunedb.APP, "schema": tunedb.SCHEMA,
                                  "rows": [{**stored_row(pointwise, {}), **row_change}]}))
    with pytest.raises(ValueError, match="row 0") as e:
        tunedb.load_export(export)
    assert message in str(e.value)


def test_a_good_export_still_imports(tmp_path):
    pointwise, colsum = the_kernels()
    export = tmp_path / "tuned.json"
    export.write_text(json.dumps({"app": tunedb.APP, "schema": tunedb.SCHEMA, "rows": [
        stored_row(colsum, asdict(CConfig(tile=128, simdlen=8)), asdict(CConfig())),
        stored_row(pointwise, {"threads": 1, "unroll": True})]}))
    rc, out, err = run_cli("tune", "--import", str(export))
    assert rc == 0 and "imported 2" in out, err
    assert len(tunedb.rows()) == 2


# -- the database ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, knob", [("injection", "simdlen")] + BAD_C_CONFIGS
                         + [("default_config", "tile")])
def test_a_tampered_database_row_runs_the_default_config(db, tmp_path, capfd, fresh_programs, bad, knob):
    pwned = tmp_path / "pwned"
    config = {"simdlen": injection(pwned)} if bad == "injection" else {} if bad == "default_config" else bad
    default_config = {"tile": -1} if bad == "default_config" else {}
    pointwise, colsum = the_kernels()
    tamper(db, [stored_row(k, config, default_config) for k in (pointwise, colsum)])
    runtime._programs.clear()
    tune.forget()
    capfd.readouterr()
    y, s = workload()
    np.testing.assert_allclose(y.numpy(), X + 1.0, rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), (X.astype(np.float64) * 2).sum(0), rtol=1e-5, atol=1e-5)
    assert not pwned.exists()
    ran = {ln.kernel.key(): ln for ln in launches()}
    for k in (pointwise, colsum):
        assert ran[k.key()].config is None and ran[k.key()].source == render_c.render_c(k)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("lazy: tuning database")]
    assert len(warnings) == 2, err
    assert all("rejected, running its default config" in w and knob in w for w in warnings), err


def test_a_good_database_row_is_still_used(db, fresh_programs):
    _, colsum = the_kernels()
    tamper(db, [stored_row(colsum, {"tile": 16, "simdlen": 8})])
    runtime._programs.clear()
    tune.forget()
    _, s = workload()
    np.testing.assert_allclose(s.numpy(), (X.astype(np.float64) * 2).sum(0), rtol=1e-5, atol=1e-5)
    (ln,) = [ln for ln in launches() if ln.kernel.key() == colsum.key()]
    assert ln.config == CConfig(tile=16, simdlen=8) and "simdlen(8)" in ln.source and "xb += 16" in ln.source


@pytest.mark.parametrize("config, knob", [
    ({"MC": 4}, "MC=4"),  # less than a micro-tile: the MC / MR * MR step is 0, the loop never ends
    ({"NC": 8}, "NC=8"),
    ({"MR": 16, "NV": 2}, "MR=16, NV=2"),  # more accumulators than registers
    ({"KC": "512\n#include </etc/passwd>"}, "GemmCConfig.KC="),
])
def test_a_tampered_c_gemm_row_runs_the_default_config(db, capfd, config, knob):
    call = gemm_call()
    assert tune.kind_of(call, "c") == "cgemm"
    tamper(db, [stored_row(call, config, kind="cgemm")])
    assert tune.tuned_config(call, "c") is None
    assert knob in capfd.readouterr().err


def test_a_tampered_triton_row_runs_the_default_config(db, capfd):
    x = lazy.tensor(X)
    (k,) = kernels_of(lambda: x.softmax(-1).realize())
    tamper(db, [stored_row(k, {"XBLOCK": 1 << 20, "RBLOCK": 1 << 20},  # 2^40 elements a block
                           asdict(render_triton.choose_config(k)), kind="triton")])
    assert tune.tuned_config(k, "triton") is None
    assert "a block holds at most 1048576 elements" in capfd.readouterr().err


# -- the renderers: defence in depth ---------------------------------------------------------------
def forged(cfg, **values):
    """`cfg` with `values` set behind the dataclass's back (frozen, and never checked by itself)."""
    cfg = replace(cfg)
    for name, v in values.items():
        object.__setattr__(cfg, name, v)
    return cfg


@pytest.mark.parametrize("values, knob", [
    ({"simdlen": 'x) system("id"); //'}, "simdlen"), ({"tile": 0}, "tile"), ({"tile": -8}, "tile"),
    ({"simdlen": -4}, "simdlen"), ({"threads": "4) num_threads(1"}, "threads"), ({"chunk": 2.5}, "chunk"),
    ({"unroll": "yes"}, "unroll"),
])
def test_the_c_renderer_refuses_a_bad_knob_before_rendering(values, knob):
    _, colsum = the_kernels()
    with pytest.raises(ValueError, match=rf"CConfig\.{knob}=.*expected"):
        render_c.render_c(colsum, config=forged(CConfig(), **values))
    with pytest.raises(ValueError, match=rf"CConfig\.{knob}="):
        render_c.render_c(colsum, config=CConfig(**values))  # built in code: not checked until rendered


def test_the_other_renderers_refuse_a_bad_knob_before_rendering():
    x = lazy.tensor(X)
    (k,) = kernels_of(lambda: x.softmax(-1).realize())
    with pytest.raises(ValueError, match=r"TritonConfig\.num_warps='4\\n.*expected a power of two"):
        render_triton.render_triton(k, forged(render_triton.choose_config(k), num_warps="4\nimport os"))
    with pytest.raises(ValueError, match=r"TritonConfig\.XBLOCK=0"):
        render_triton.render_triton(k, TritonConfig(XBLOCK=0))
    call = gemm_call()
    with pytest.raises(ValueError, match=r"GemmCConfig\.MC='96\) \*/ "):
        gemm_c.render_gemm_c(call, forged(GemmCConfig(), MC="96) */ int x; /*"))
    with pytest.raises(ValueError, match=r"GemmCConfig MC=4"):
        gemm_c.render_gemm_c(call, GemmCConfig(MC=4))
    evil = 'ieee"); import os; os.system("id"); ("'
    for check in (True, False):  # the tuner renders with check=False: the knobs are checked anyway
        with pytest.raises(ValueError, match=r"GemmConfig\.input_precision="):
            gemm_triton.render(call, forged(gemm_triton.choose_config(call), input_precision=evil), check=check)
    with pytest.raises(ValueError, match=r"GemmConfig\.BLOCK_K=8"):
        gemm_triton.render(call, GemmConfig(32, 32, 8), check=False)


def test_src_formats_only_integers_and_listed_words():
    cfg = GemmConfig(32, 32, 32, input_precision="tf32")
    assert knobs.src(cfg, "BLOCK_M") == "32" and knobs.src(cfg, "input_precision") == "tf32"
    with pytest.raises(knobs.KnobError, match="only integers and enum values"):
        knobs.src(CConfig(), "unroll")
    with pytest.raises(knobs.KnobError, match="only integers and enum values"):
        knobs.src(CConfig(), "simdlen")  # None: the renderer decides, it does not format it
    assert knobs.describe(cfg) == repr(cfg) and knobs.py_dict(cfg) == repr(asdict(cfg))


# -- what the tuner builds -------------------------------------------------------------------------
def test_the_tuner_skips_points_outside_the_specs(monkeypatch):
    _, colsum = the_kernels()
    monkeypatch.setattr(render_c, "search_space", lambda k: {"tile": (0, 16, 64), "simdlen": (None, 3, 8)})
    tried = []

    def bench(_k, cfg):
        tried.append(cfg)
        return 0.1 if cfg.tile == 0 or cfg.simdlen == 3 else 1.0

    tensors = [torch.randn(b.numel).to(runtime.TORCH_DTYPES[b.dtype]) for b in colsum.buffers]
    res = tune.tune_kernel(colsum, "c", tensors, bench=bench, store=False)
    assert res.rejected == [] and tried  # skipped before anything was built, not built and failed
    assert all(c.tile != 0 and c.simdlen != 3 for c in tried)
    knobs.check(res.best)


# -- the report ------------------------------------------------------------------------------------
def test_report_and_warnings_escape_control_characters(db, capfd):
    evil = "\x1b[2J\u202e\x07k0"  # clear the screen, reverse the text, ring the bell
    tunedb.put([{**stored_row(the_kernels()[0], {"tile": 16}), "name": evil, "backend": "c\x1b[31m",
                 "config": {"tile\x1b[1m": "\x1b[0m"}, "kernel": "\x1b[41m" * 4}])
    rc, out, _ = run_cli("tune", "--report", "--all-devices")
    assert rc == 0 and "1 tuned kernel(s)" in out
    assert not any(c in out for c in "\x1b\x07\u202e")
    assert "\\x1b[2J\\u202e\\x07k0" in out and "c\\x1b[31m" in out and "tile\\x1b[1m=\\x1b[0m" in out
    tunedb._warn(f"a message naming {evil}")
    err = capfd.readouterr().err
    assert "\x1b" not in err and "naming \\x1b[2J\\u202e\\x07k0" in err


def test_a_tampered_row_of_the_wrong_shape_does_not_break_the_report(db):
    tunedb.put([{**stored_row(the_kernels()[0], {}), "config": [1, 2], "default_config": "x", "tried": "many",
                 "tuning_s": "slow", "name": 7}])
    rc, out, _ = run_cli("tune", "--report", "--all-devices")
    assert rc == 0 and "[1, 2]" in out


# -- the specs and the search spaces ---------------------------------------------------------------
def knob_cases():
    return [pytest.param(cls, f.name, id=f"{cls.__name__}.{f.name}") for cls in CLASSES for f in fields(cls)]


def default_of(cls, name):
    (f,) = [f for f in fields(cls) if f.name == name]
    return REQUIRED[cls][name] if name in REQUIRED.get(cls, {}) else f.default


def build(cls, name, v):
    return knobs.from_dict(cls, {**REQUIRED.get(cls, {}), name: v})


def wrong_types(spec: knobs.Spec) -> list:
    common = [[], {}, {"nested": 1}, object()]
    if spec.kind == "bool":
        return common + [1, 0, "true", 1.0] + ([] if spec.none else [None])
    if spec.kind == "enum":
        return common + [1, True, 1.5, spec.values[0].encode()] + ([] if spec.none else [None])
    good = spec.values[0] if spec.values else spec.lo
    return common + [True, False, float(good), str(good), good + 0.5] + ([] if spec.none else [None])


def out_of_range(spec: knobs.Spec) -> list:
    if spec.kind == "bool":
        return []  # two values, both allowed: nothing in range to get wrong
    if spec.kind == "enum":
        return [spec.values[0].upper() + "x", "", spec.values[0] + "\n"]
    bad = [spec.lo - 1, spec.hi + 1, -(2 ** 70), 2 ** 70]
    if spec.values:
        bad.append(next(v for v in range(spec.lo, spec.hi) if v not in spec.values))
    if spec.pow2:
        bad.append(3 * spec.lo if spec.lo > 1 else 3)
    return bad


@pytest.mark.parametrize("cls, name", knob_cases())
def test_every_knob_rejects_wrong_types_and_out_of_range_values(cls, name):
    spec = knobs.specs(cls)[name]
    bad_values = wrong_types(spec) + out_of_range(spec)
    assert bad_values or spec.kind == "bool"
    for v in bad_values:
        with pytest.raises(knobs.KnobError) as e:
            build(cls, name, v)
        msg = str(e.value)
        assert f"{cls.__name__}.{name}=" in msg and "expected" in msg and "\n" not in msg, msg
        with pytest.raises(knobs.KnobError, match=rf"{cls.__name__}\.{name}="):  # built in code
            knobs.check(forged(build(cls, name, default_of(cls, name)), **{name: v}))


def search_spaces() -> dict:
    """Every search space the tuner walks, on kernels that make every knob appear."""
    x, y, z = lazy.tensor(X), lazy.tensor(np.ones(40_000, np.float32)), lazy.tensor(np.ones((200, 300), np.float32))
    ks = (kernels_of(lambda: lazy.realize((z * 2.0).sum(0), x.softmax(-1), (y * 3.0).exp(), x.T + 1.0,
                                          (y.sigmoid() + y).tanh(), (x * x).sum())))
    calls = [gemm_call(dtype, m, n, k) for dtype in ("float32", "float16", "float64")
             for m, n, k in ((32, 48, 40), (1024, 1024, 1024), (1, 4096, 64))]
    spaces: dict = {cls: {} for cls in CLASSES}

    def add(cls, space):
        for knob, values in space.items():
            spaces[cls].setdefault(knob, set()).update(values)

    for k in ks:
        add(CConfig, render_c.search_space(k))
        add(TritonConfig, render_triton.search_space(k))
    for call in calls:
        add(GemmConfig, gemm_triton.search_space(call))
        add(GemmCConfig, gemm_c.search_space(call))
    for c in gemm_c.CONFIGS:
        add(GemmCConfig, {f: (v,) for f, v in asdict(c).items()})
    for call in calls:
        for c in gemm_triton.candidate_configs(call):
            add(GemmConfig, {f: (v,) for f, v in asdict(c).items()})
    return spaces


def test_every_searched_value_is_allowed_by_its_knob():
    spaces = search_spaces()
    for cls in CLASSES:
        assert set(spaces[cls]) <= set(knobs.specs(cls)), cls
        for name, values in spaces[cls].items():
            for v in values:
                build(cls, name, v)  # raises on a value the spec does not allow
    assert set(spaces[CConfig]) == {f.name for f in fields(CConfig)}  # every C knob is searched somewhere
    # whole points, too: the tuner's and the heuristics' configs pass the checks that span knobs
    assert all(gemm_c.valid_config(c) for c in gemm_c.CONFIGS)
    for cls in CLASSES:
        for f in fields(cls):
            build(cls, f.name, default_of(cls, f.name))  # defaults are allowed


def test_every_config_field_declares_a_spec():
    for cls in CLASSES:
        assert set(knobs.specs(cls)) == {f.name for f in fields(cls)}
