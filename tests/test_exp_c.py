"""float32 exp in the C backend (codegen/render_c.PRELUDE).

With AVX-512, vectorized loops call the kernel's own 16-lane exp (`_ZGVeN16v_expf`, defined in the
prelude); narrower loops and scalar tails call glibc (libmvec's vector expf, or expf). Every path
is checked against exp computed in float64 over a sweep of float32 inputs spaced evenly in bit
pattern (so every binade from subnormal inputs to the overflow threshold is hit), plus the special
values, and each path's error bound is stated:

- ours: 1.013 ulp at most over all 2^32 float32 inputs (a one-off exhaustive run; 21 inputs lie
  above 1 ulp, and the sweep here includes the worst of them), bound OURS_ULP;
- libmvec's vector expf: 2.64 ulp at most over all inputs (2.47 on this sweep), bound 3.

The module runs once per instruction set the CPU has (conftest.ISA_PATHS: AVX-512, AVX2, SSE),
so each path's exp is checked whichever CPU runs the tests.
"""

from __future__ import annotations

import ctypes
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import disassembly, kernel_body, native_macro, render_spy

import lazy
from codegen import compile_c, render_c

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 88.72, 88.7229, 88.73, 89.0,
                     100.0, 3e38, -87.33, -87.34, -103.27, -103.97, -103.98, -104.0, -200.0, -3e38], np.float32)
# the inputs where our exp errs most, from the exhaustive run: 1.0128, 1.0103 and 1.0095 ulp
WORST = np.array([float.fromhex("0x1.da72c4p+5"), float.fromhex("-0x1.782f42p+2"),
                  float.fromhex("-0x1.339a78p+5")], np.float32)
OURS_ULP = 1.02


def sweep(step: int = 4099) -> np.ndarray:
    pos = np.arange(0, 0x42B40000, step, dtype=np.uint32).view(np.float32)  # 0 .. 90
    neg = np.arange(0x80000000, 0xC2D00000, step, dtype=np.uint32).view(np.float32)  # -0 .. -104
    return np.concatenate([WORST, pos, neg, SPECIALS])  # first: the worst take the vector loop, not its tail


def max_ulp(x: np.ndarray, got: np.ndarray) -> float:
    """Largest error of `got` against exp(x) in float64, in units of the float32 result's last place;
    results that round to 0 or overflow (and NaN) must equal the rounded reference exactly."""
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
        rounded = exact.astype(np.float32)
    finite = np.isfinite(rounded) & (rounded != 0)
    np.testing.assert_array_equal(got[~finite], rounded[~finite])
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.float64)
    return float((np.abs(got[finite] - exact[finite]) / ulp).max())


LOOP = render_c.PRELUDE + r"""
void exp_loop(const float* restrict a, float* restrict o, int64_t n) {
  #pragma omp simd
  for (int64_t i = 0; i < n; i++) o[i] = expf(a[i]);
}
void exp_scalar(const float* restrict a, float* restrict o, int64_t n) {
  for (int64_t i = 0; i < n; i++) { o[i] = expf(a[i]); __asm__ volatile("" ::: "memory"); }
}
"""


def run(fn_name: str, x: np.ndarray, flags=None) -> np.ndarray:
    fn = compile_c.load(LOOP, fn_name, flags)
    out = np.empty_like(x)
    fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    return out


def test_lazy_exp_within_its_bound_on_avx512_and_three_ulp_elsewhere():
    x = sweep()
    got = lazy.tensor(x).exp().numpy()
    assert max_ulp(x, got) < (OURS_ULP if native_macro("__AVX512F__") else 3.0)


def test_vector_loop_and_its_tail():
    # 546k elements: a multiple of 16 plus 11, so the loop ends in a tail
    x = sweep()
    assert x.size % 16
    assert max_ulp(x, run("exp_loop", x)) < (OURS_ULP if native_macro("__AVX512F__") else 3.0)


def test_scalar_calls_are_glibc_expf():
    x = sweep(40_009)
    assert max_ulp(x, run("exp_scalar", x)) < 1.0


# the vector exp a kernel's loops call on each path: ours with AVX-512, libmvec's below it
PATH_EXP = {"avx512": "_ZGVeN16v_expf", "avx2": "_ZGVdN8v_expf", "sse": "_ZGVbN4v_expf"}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_each_path_compiles_the_kernels_for_its_instruction_set(monkeypatch, isa):
    if isa not in PATH_EXP:
        pytest.skip("not an x86 CPU: one path, the native one")
    assert native_macro("__AVX512F__") == (isa == "avx512") and native_macro("__AVX__") == (isa != "sse")
    sources: list[str] = []
    with render_spy(monkeypatch, lambda k, src: sources.append(src)):
        lazy.tensor(torch.randn(4096)).exp().realize()
    calls = set(re.findall(r"call\s+[0-9a-f]+ <(_ZGV\w+_expf)", disassembly(sources[-1])))
    assert calls == {PATH_EXP[isa]}, calls


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1023, 4097])
def test_odd_lengths_strided_and_fused(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(2 * n, generator=g) * 20  # results from 1e-35 to 1e35
    lx = lazy.tensor(x)
    got = (lx[::2].exp() * 0.5 + lx[1::2].exp()).numpy()
    want = (x[::2].double().exp() * 0.5 + x[1::2].double().exp()).float().numpy()
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=0)


def test_softmax_and_sigmoid_keep_nan_and_inf():
    x = torch.tensor([[0.0, -np.inf, 3.0, np.nan], [np.inf, 1.0, -np.inf, 2.0], [-1e4, -1e4, 50.0, 88.0]])
    for f, t in ((lambda a: a.softmax(-1), lambda a: a.softmax(-1)), (lambda a: a.sigmoid(), torch.sigmoid)):
        np.testing.assert_allclose(f(lazy.tensor(x)).numpy(), t(x).numpy(), rtol=1e-6, atol=0, equal_nan=True)


# every kernel that computes exp must call a vector exp: a loop that does not vectorize calls the
# scalar one per element (a relu-sigmoid-tanh chain ran 16x slower when its exp was a function gcc
# could not speculate, and jump threading left it in a branch)
VECTOR_EXP = re.compile(r"call\s+[0-9a-f]+ <_ZGV[bcde]N\d+v_expf")
EXP_PROGRAMS = {
    "exp": lambda x: x.exp(),
    "where": lambda x: lazy.where(x > 0, x.exp(), x * 0.1),
    "elu": lambda x: lazy.where(x > 0, x, x.exp() - 1),
    "sigmoid": lambda x: x.sigmoid(),
    "relu_then_sigmoid": lambda x: (x.relu() - 0.5).sigmoid(),
    "silu": lambda x: x * x.sigmoid(),
    "clamp_then_exp": lambda x: x.clamp(-1, 1).exp(),
    "masked_sum": lambda x: (x.exp() * (x > 0)).sum(-1),
    "softmax": lambda x: x.softmax(-1),
    "log_softmax": lambda x: x.log_softmax(-1),
    "logsumexp": lambda x: x.logsumexp(-1),
    "bfloat16": lambda x: x.to(lazy.bfloat16).exp(),
    "float16_softmax": lambda x: x.to(lazy.float16).softmax(-1),
}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.parametrize("name", EXP_PROGRAMS)
def test_exp_loops_vectorize(monkeypatch, name):
    sources: list[str] = []
    x = lazy.tensor(torch.randn(64, 1000))
    with render_spy(monkeypatch, lambda k, src: sources.append(src)):
        EXP_PROGRAMS[name](x).realize()
    with_exp = [s for s in sources if "expf(" in kernel_body(s)]
    assert with_exp
    for src in with_exp:
        assert VECTOR_EXP.search(disassembly(src)), f"{name}: no vector exp call in\n{kernel_body(src)}"
