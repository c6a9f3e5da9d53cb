"""Dynamic shapes on the Triton backend: a program seen with several sizes is built once, as
kernels that take the sizes as arguments (codegen/render_triton.py), and gives torch's values at
every size, including sizes that are not multiples of any block and rows longer than the RBLOCK
its hints chose (the looped form of the kernel).

Runs under TRITON_INTERPRET=1 with LAZY_BACKEND=triton; the sizes are small (the interpreter
costs ~1 ms per program). Each test starts with no programs, so the first size builds a program
for its sizes, the second one the program for all sizes, and later sizes build nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import sympy
import torch

import lazy
from codegen import compile_triton, render_triton
from codegen.kernel_ir import BufferArg, Expr, Kernel, Reduce, Store, size_symbol
from lazy import runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def triton_dynamic(tmp_path, monkeypatch):
    """Every Kernel this test's programs load (`compile_triton.load` calls), in order."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when a generated module is imported
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path / "lazy-cache"))
    monkeypatch.setenv("LAZY_DEBUG", "1")  # says why each program is built, and when sizes stay fixed
    monkeypatch.setattr(runtime, "_programs", OrderedDict())
    monkeypatch.setattr(runtime, "_families", OrderedDict())
    monkeypatch.setattr(runtime, "_bound", {})
    loaded = []
    real = compile_triton.load

    def spy(k, config=None):
        loaded.append(k)
        return real(k, config)

    monkeypatch.setattr(compile_triton, "load", spy)
    return loaded


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def across_sizes(fn, shapes, loaded, capsys, rtol=1e-5, atol=1e-5, dtype=torch.float32):
    """Run `fn(m, *inputs)` (m: the torch or the lazy module) at each list of input shapes; check
    lazy against torch, one program for the first sizes and one for all others; returns the
    kernels of that second program (the ones that take sizes)."""
    base = len(loaded)
    for i, shapes_i in enumerate(shapes):
        xs = [randn(*s, seed=i * 10 + j, dtype=dtype) for j, s in enumerate(shapes_i)]
        ref = fn(torch, *xs)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = fn(lazy, *[lazy.tensor(x) for x in xs])
        got = got if isinstance(got, tuple) else (got,)
        lazy.realize(*got)
        for g, r in zip(got, ref):
            g = g.torch()
            assert g.dtype == r.dtype and g.shape == r.shape, (shapes_i, g.shape, r.shape)
            torch.testing.assert_close(g, r, rtol=rtol, atol=atol, msg=lambda m, at=shapes_i: f"at shapes {at}: {m}")
        if i == 0:
            first = len(loaded)
        if i == 1:
            built = len(loaded)
    err = capsys.readouterr().err
    assert "sizes stay fixed" not in err, err
    assert "are arguments from now on" in err
    sym = loaded[first:]
    assert len(loaded) == built  # no kernels after the second sizes: two kernel sets in all
    assert sym and all(k.sizes for k in sym) and not any(k.sizes for k in loaded[base:first])
    return sym


def source_of(k) -> str:
    return compile_triton.write_source(k).read_text()


# -- Kernel IR with size symbols, rendered directly ------------------------------------------------

D0 = size_symbol("d0")
X0, R0 = (sympy.Symbol(n, integer=True, nonnegative=True) for n in ("x0", "r0"))


def load(index, mask=()):
    return Expr("load", (), (0, index, mask), "float32")


def add(a, b):
    return Expr("add", (a, b), None, "float32")


def diag_kernel() -> Kernel:
    diag = load(D0**2 + X0 * (D0 + 1))  # the diagonal of the second of two d0 x d0 matrices
    when3 = load(X0, (("ge", D0 - 3, 0),))  # depends on the size: evaluated at run time
    always = load(X0, (("ge", D0 - 2, 0),))  # every size is >= 2: no condition
    never = load(X0, (("lt", D0 + 1, 2),))  # d0 + 1 >= 3 for every size: reads 0, no load
    last = Expr("index", (), D0 - 1, "float32")  # a value of the size alone
    return Kernel("diag", (BufferArg("b0", "float32", 2 * D0**2, False), BufferArg("b1", "float32", D0, True)),
                  (D0,), (), (Store(1, X0, add(add(add(diag, when3), add(always, never)), last), "float32"),),
                  {"hints": {"d0": 4}}, (), ("d0",))


def test_sizes_in_indices_and_in_conditions_on_sizes_alone():
    k = diag_kernel()
    src = source_of(k)
    assert "((d0*d0) + " in src and "tl.full([1], (d0 + -3), tl.int64) >= 0" in src
    assert src.count("mask=(tl.full(") == 1 and "tl.full([1], 0.0, tl.float32)" in src  # the others: none
    assert "tl.full([1], (d0 + -1), tl.float32)" in src
    fn = compile_triton.load(k)
    for d in (2, 3, 5, 16, 17):
        x, out = randn(2 * d * d, seed=d), torch.empty(d)
        fn(x, out, d)
        ref = x.view(2, d, d)[1].diagonal() + x[:d] * (2 if d >= 3 else 1) + (d - 1)
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("hint", [5, 3000])
def test_the_hint_chooses_the_blocks_and_every_row_length_is_right(hint):
    row = Reduce("acc0", "sum", load(X0 * D0 + R0), "float32", (D0,), ("r0",), 1)
    k = Kernel("rowsum", (BufferArg("b0", "float32", 3 * D0, False), BufferArg("b1", "float32", 3, True)),
               (3,), (row,), (Store(1, X0, Expr("acc", (), "acc0", "float32"), "float32"),),
               {"hints": {"d0": hint}}, (), ("d0",))
    cfg = render_triton.choose_config(k)
    assert cfg.RBLOCK == render_triton.next_pow2(hint)  # one block at the hint...
    src = source_of(k)
    assert f"LOOPED=(d0 > {cfg.RBLOCK})" in src  # ...and a loop for longer rows
    fn = compile_triton.load(k)
    for d in (2, 7, 33, cfg.RBLOCK, cfg.RBLOCK + 1, 3 * cfg.RBLOCK - 1):
        x, out = randn(3 * d, seed=d), torch.empty(3)
        fn(x, out, d)
        torch.testing.assert_close(out, x.view(3, d).sum(1), rtol=1e-5, atol=1e-5)


# -- elementwise -----------------------------------------------------------------------------------

BF = [(5, 9), (7, 13), (2, 2), (2, 3), (3, 2), (33, 7), (7, 33), (13, 37)]


def test_elementwise_over_changing_batch_and_features(triton_dynamic, capsys):
    def f(m, x, y):
        F = x.shape[1]
        out = (x * y + 1).relu() * 0.5 + m.arange(F)  # broadcast (F,) and an iota of a changing size
        return out, m.nn.functional.pad(x, (1, 2)) * 3.0  # masks against a changing bound

    sym = across_sizes(f, [[(b, f_), (f_,)] for b, f_ in BF], triton_dynamic, capsys)
    assert {k.sizes for k in sym} == {("d0", "d1")}
    src = source_of(sym[0])
    assert "def grid(d0, d1):" in src and "GRID = None" in src
    assert "'d0': 'i64'" in src and "do_not_specialize=['d0', 'd1']" in src


# -- row reductions ---------------------------------------------------------------------------------

def row_ops(m, x):
    return x.softmax(-1), x.sum(-1), x.amax(-1), (x * 2).log_softmax(-1)


def norm_ops(m, x, w, b):
    F = x.shape[-1]
    return m.nn.functional.layer_norm(x, (F,), w, b), x - x.mean(-1, keepdim=True)


# A mean over 2 elements multiplies by 0.5, a literal of the graph (lazy/graph.py `literal`): another
# program, so the tests of means leave out rows of 2.
@pytest.mark.parametrize("lengths", [[7, 3, 2, 33, 5, 100], [100, 33, 7, 2, 3, 65, 200]],
                         ids=["hint-short", "hint-long"])
def test_row_reductions_with_a_changing_row_length(triton_dynamic, capsys, lengths):
    # the hint is the second length: rows up to its power of two are one block, longer ones loop
    sym = across_sizes(row_ops, [[(6, n)] for n in lengths], triton_dynamic, capsys)
    srcs = [source_of(k) for k in sym]
    assert any("if LOOPED:" in s and "VARIANTS = [" in s for s in srcs)
    assert all(", int64 indices" in s for s in srcs)


@pytest.mark.parametrize("lengths", [[7, 3, 33, 5, 100], [100, 33, 7, 3, 65]], ids=["hint-short", "hint-long"])
def test_layer_norm_with_a_changing_row_length(triton_dynamic, capsys, lengths):
    across_sizes(norm_ops, [[(6, n), (n,), (n,)] for n in lengths], triton_dynamic, capsys)


def test_row_reductions_with_a_changing_row_count(triton_dynamic, capsys):
    sym = across_sizes(row_ops, [[(r, 20)] for r in (5, 9, 2, 3, 33, 17)], triton_dynamic, capsys)
    sym += across_sizes(norm_ops, [[(r, 20), (20,), (20,)] for r in (5, 9, 2, 3, 33, 17)], triton_dynamic,
                        capsys)
    assert not any("LOOPED" in source_of(k) for k in sym)  # rows of 20: one block whatever their count


def test_float16_rows(triton_dynamic, capsys):
    def f(m, x):
        return x.softmax(-1), x.sum(-1), (x * x).amax(-1)

    across_sizes(f, [[(4, n)] for n in (7, 3, 2, 33, 13)], triton_dynamic, capsys, rtol=2e-3, atol=2e-3,
                 dtype=torch.float16)


# -- column reductions ------------------------------------------------------------------------------

def test_column_reductions_over_the_changing_dim(triton_dynamic, capsys):
    def f(m, x):
        return x.sum(0), x.amax(0), (x - x.sum(0) * 0.25).abs().sum(0)

    def mean(m, x):
        return x.mean(0), (x - x.mean(0)).abs().sum(0)

    across_sizes(f, [[(n, 6)] for n in (5, 9, 2, 3, 33, 100)], triton_dynamic, capsys)
    across_sizes(mean, [[(n, 6)] for n in (5, 9, 3, 33, 100)], triton_dynamic, capsys)


# -- two symbols: (B, T, C) ---------------------------------------------------------------------------

def test_two_symbols_reshape_transpose_last_and_flip(triton_dynamic, capsys):
    def f(m, x):
        B, T, C = x.shape
        y = (x.reshape(B * T, C) * 0.5).softmax(-1).reshape(B, T, C)
        return y, x[:, -1].exp(), x.transpose(1, 2).flip(2) + 1, x.sum(1), x[:, :-1].sum(2)

    sym = across_sizes(f, [[(3, 5, 8)], [(4, 7, 8)], [(2, 2, 8)], [(2, 3, 8)], [(3, 2, 8)], [(7, 33, 8)],
                           [(5, 13, 8)]], triton_dynamic, capsys)
    assert all(k.sizes == ("d0", "d1") for k in sym)


# -- a GEMM over a changing batch: BLAS, then its epilogue as a kernel with sizes ---------------------

def test_linear_with_a_changing_batch(triton_dynamic, capsys):
    def f(m, x, w, b):
        return (x @ w + b).relu() * 2.0

    (k,) = across_sizes(f, [[(n, 12), (12, 5), (5,)] for n in (3, 9, 2, 33, 7)], triton_dynamic, capsys,
                        rtol=1e-4, atol=1e-4)
    assert k.name.endswith("_epilogue") and k.sizes == ("d0",)


# -- ahead of time, and Triton's specialization ---------------------------------------------------

def symbolic_kernels(loaded, capsys):
    def softmax(m, x):
        return x.softmax(-1)

    def gpt(m, x):
        B, T, C = x.shape
        return (x.reshape(B * T, C) * 0.5).softmax(-1), x[:, -1].exp(), x.transpose(1, 2).flip(2)

    ks = across_sizes(softmax, [[(3, 7)], [(3, 9)]], loaded, capsys)
    return ks + across_sizes(gpt, [[(3, 5, 8)], [(4, 7, 8)]], loaded, capsys)


@pytest.mark.skipif(os.environ.get("LAZY_SKIP_AOT") == "1", reason="LAZY_SKIP_AOT=1")
def test_symbolic_kernels_compile_for_sm90(triton_dynamic, capsys):
    kernels = symbolic_kernels(triton_dynamic, capsys) + [diag_kernel()]
    # TRITON_INTERPRET=1 here, so this compiles in one subprocess with the variable unset
    results = compile_triton.aot_compile_many(kernels, "sm_90")
    for k, res in zip(kernels, results):
        assert res["target"] == "sm_90" and ".target sm_90a" in res["ptx"] and res["cubin_bytes"] > 0
        assert res["spills"] == 0 and res["shared"] <= compile_triton.H100_SHARED_LIMIT
        assert res["sizes"] == list(k.sizes) and res["grid"][0] >= 1  # the grid at the hints
    # the softmax over a changing row: one block at the hints, and its looped form compiled too
    variants = results[0]["variants"]
    assert [v["constexprs"]["LOOPED"] for v in variants] == [False, True]
    assert all(v["spills"] == 0 and v["cubin_bytes"] > 0 for v in variants)


_SPECIALIZATION = """
import importlib.util, json, sys
import torch
from triton.backends.compiler import BaseBackend
from triton.runtime.jit import create_function_from_signature

spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
fn = mod.KERNEL
bind = create_function_from_signature(fn.signature, fn.params, BaseBackend)  # what JIT.run keys binaries by
bufs = [torch.empty(64) for _ in range(sum(t.startswith("*") for t in mod.SIGNATURE.values()))]
out = {}
for d in (2, 16, 17, 1 << 33):
    sizes = [d] * len(mod.SIZES)
    _, specialization, _ = bind(*bufs, *sizes, **mod.CONSTEXPRS)
    out[d] = [list(s) for s, t in zip(specialization, mod.SIGNATURE.values()) if t == "i64"]
print(json.dumps(out))
"""


def test_size_arguments_compile_once_for_every_size(triton_dynamic, capsys):
    """Triton 3.9 specializes an int argument on its value being 1, on divisibility by 16 and on
    int32 vs int64 range (a new binary each); the size parameters are annotated i64 and in
    `do_not_specialize`, so every size gives the same key: one binary."""
    (k,) = across_sizes(lambda m, x: x.softmax(-1), [[(3, 7)], [(3, 9)]], triton_dynamic, capsys)
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _SPECIALIZATION, str(compile_triton.write_source(k))],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len({json.dumps(v) for v in keys.values()}) == 1 and keys["2"] == [["i64", None]]


@pytest.mark.skipif(os.environ.get("LAZY_SKIP_AOT") == "1", reason="LAZY_SKIP_AOT=1")
def test_lazy_kernels_compiles_a_scripts_symbolic_kernels(tmp_path, capsys):
    from lazy import kernels_report

    script = tmp_path / "prog.py"
    script.write_text("import lazy\nfor n in (7, 9, 33):\n    lazy.randn(4, n).softmax(-1).realize()\n")
    assert kernels_report.main(str(script), [], "sm_90") == 0
    out = capsys.readouterr().out
    assert "2 kernel(s) compiled for sm_90" in out and "FAILED" not in out  # the first size's, then all sizes'
