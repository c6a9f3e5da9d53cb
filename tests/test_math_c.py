"""float32 exp, log, tanh and erf in the C backend (codegen/render_c.PRELUDE: `lz_expf`, ...).

They are the prelude's own inline functions, not glibc's, so a value has the same bits whatever
computes it: a 16-lane loop body, its narrower epilogue, its scalar tail, another kernel. (glibc's
libmvec has a separate algorithm per vector width: `log` of a tensor of equal values gave two
different results, and an argmin of ties picked the wrong one.) Checked here on every instruction
set the CPU has (conftest.ISA_PATHS: AVX-512, AVX2, SSE):

- accuracy against the function in float64 over a sweep of float32 inputs spaced evenly in bit
  pattern (every binade, subnormals, +-inf, NaN), with each function's bound (`BOUND_ULP`: what the
  sweep measured, rounded up);
- a vector loop and a scalar loop give the same bits for every input of the sweep;
- kernels: equal inputs give equal outputs at every position, the loops vectorize and call no libm.
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

FUNCTIONS = ("exp", "log", "tanh", "erf")
# measured on the sweep with fused multiply-adds (AVX2, AVX-512): exp 0.975, log 0.755, tanh 1.248,
# erf 0.801 ulp; without them (SSE) exp 0.946 ulp, erf 0.973
BOUND_ULP = {"exp": 1.0, "log": 0.8, "tanh": 1.3, "erf": 1.0}
REFERENCE = {"exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "erf": torch.erf}

LOOPS = render_c.PRELUDE + "".join(rf"""
void {f}_vector(const float* restrict a, float* restrict o, int64_t n) {{
  #pragma omp simd
  for (int64_t i = 0; i < n; i++) o[i] = lz_{f}f(a[i]);
}}
void {f}_scalar(const float* restrict a, float* restrict o, int64_t n) {{
  for (int64_t i = 0; i < n; i++) {{ o[i] = lz_{f}f(a[i]); __asm__ volatile("" ::: "memory"); }}
}}
""" for f in FUNCTIONS)


def sweep(step: int = 4099) -> np.ndarray:
    """Every `step`-th float32 bit pattern (both signs, NaNs included), and the special values."""
    bits = np.arange(0, 1 << 32, step, dtype=np.uint64).astype(np.uint32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 88.72, 88.7229, 88.73, 89.0, -87.34,
                         -103.97, -103.98, -104.0, 0.625, -0.625, 0.875, 2.0, 4.0, -4.0, 1.0, 3e38], np.float32)
    return np.concatenate([bits.view(np.float32), specials])


def run(fn_name: str, x: np.ndarray) -> np.ndarray:
    fn = compile_c.load(LOOPS, fn_name)
    out = np.empty_like(x)
    fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    return out


def max_ulp(name: str, x: np.ndarray, got: np.ndarray) -> float:
    """Largest error of `got` against the float64 function, in units of the float32 result's last
    place; results that are NaN, infinite or zero when rounded must equal the rounded reference."""
    exact = REFERENCE[name](torch.from_numpy(x).double()).numpy()
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32)
    finite = np.isfinite(rounded) & (rounded != 0)
    np.testing.assert_array_equal(got[~finite], rounded[~finite])
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.float64)
    return float((np.abs(got[finite] - exact[finite]) / ulp).max())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_vector_loop_within_bound(name):
    x = sweep()
    assert x.size % 16  # the loop ends in a tail
    assert max_ulp(name, x, run(f"{name}_vector", x)) <= BOUND_ULP[name]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_vector_and_scalar_loops_give_the_same_bits(name):
    x = sweep(1009)
    np.testing.assert_array_equal(run(f"{name}_vector", x).view(np.uint32), run(f"{name}_scalar", x).view(np.uint32))


@pytest.mark.parametrize("name", FUNCTIONS + ("sin", "cos", "sigmoid"))
@pytest.mark.parametrize("n", [1, 15, 37, 1031])
def test_equal_inputs_give_equal_outputs_at_every_position(name, n):
    # perf/fuzz.py seed 777 case 2654: an argmin over logit's ties picked the wrong one
    for v in np.linspace(0.1, 3.0, 24, dtype=np.float32):
        y = getattr(lazy.tensor(torch.full((n,), float(v))) * 1.0, name)().torch()
        assert (y == y[0]).all(), (name, float(v), y.unique())


def test_argmin_over_ties_of_a_fused_log():
    x = torch.tensor([2.0, 3.0, 9.0, -4.0, -9.0, 0.0] * 7)
    assert lazy.tensor(x).logit(eps=0.25).argmin().item() == x.logit(eps=0.25).argmin().item()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1023, 4097])
def test_odd_lengths_strided_and_fused(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(2 * n, generator=g) * 20  # results from 1e-35 to 1e35
    lx = lazy.tensor(x)
    got = (lx[::2].exp() * 0.5 + lx[1::2].log1p().tanh() + lx[1::2].erf()).numpy()
    want = (x[::2].double().exp() * 0.5 + x[1::2].double().log1p().tanh() + x[1::2].double().erf()).float().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_softmax_and_sigmoid_keep_nan_and_inf():
    x = torch.tensor([[0.0, -np.inf, 3.0, np.nan], [np.inf, 1.0, -np.inf, 2.0], [-1e4, -1e4, 50.0, 88.0]])
    for f, t in ((lambda a: a.softmax(-1), lambda a: a.softmax(-1)), (lambda a: a.sigmoid(), torch.sigmoid)):
        np.testing.assert_allclose(f(lazy.tensor(x)).numpy(), t(x).numpy(), rtol=1e-6, atol=0, equal_nan=True)


# every kernel that computes a float32 exp, log, tanh or erf vectorizes, and none calls libm for them
# (a relu-sigmoid-tanh chain ran 16x slower when its exp could not be speculated and jump threading
# left it in a branch)
LIBM_CALL = re.compile(r"call\s+[0-9a-f]+ <(_ZGV\w+|expf|logf|tanhf|erff)(@plt)?>")
PROGRAMS = {
    "exp": lambda x: x.exp(),
    "where": lambda x: lazy.where(x > 0, x.exp(), x * 0.1),
    "elu": lambda x: lazy.where(x > 0, x, x.exp() - 1),
    "sigmoid": lambda x: x.sigmoid(),
    "relu_then_sigmoid": lambda x: (x.relu() - 0.5).sigmoid(),
    "silu": lambda x: x * x.sigmoid(),
    "gelu": lambda x: lazy.nn.functional.gelu(x),
    "gelu_tanh": lambda x: lazy.nn.functional.gelu(x, approximate="tanh"),
    "clamp_then_log": lambda x: x.clamp(0.1, 1).log(),
    "masked_sum": lambda x: (x.exp() * (x > 0)).sum(-1),
    "softmax": lambda x: x.softmax(-1),
    "log_softmax": lambda x: x.log_softmax(-1),
    "logsumexp": lambda x: x.logsumexp(-1),
    "bfloat16": lambda x: x.to(lazy.bfloat16).exp(),
    "float16_softmax": lambda x: x.to(lazy.float16).softmax(-1),
}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.parametrize("name", PROGRAMS)
def test_math_loops_vectorize_without_libm_calls(monkeypatch, name, isa):
    sources: list[str] = []
    x = lazy.tensor(torch.randn(64, 1000))
    with render_spy(monkeypatch, lambda k, src: sources.append(src)):
        PROGRAMS[name](x).realize()
    with_math = [s for s in sources if re.search(r"lz_(exp|log|tanh|erf)f\(", kernel_body(s))]
    assert with_math
    packed = {"avx512": "zmm", "avx2": "ymm"}.get(isa, "xmm")
    for src in with_math:
        asm = disassembly(src)
        assert not LIBM_CALL.search(asm), f"{name}: a libm call in\n{kernel_body(src)}"
        assert re.search(rf"\bv?(mul|fmadd\d*)ps\s.*%{packed}", asm), f"{name}: no packed {packed} math in\n{kernel_body(src)}"


def test_each_path_compiles_for_its_instruction_set(isa):
    if isa == "native":
        pytest.skip("not an x86 CPU: one path, the native one")
    assert native_macro("__AVX512F__") == (isa == "avx512") and native_macro("__AVX__") == (isa != "sse")
