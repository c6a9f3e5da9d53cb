"""Call fission in the C backend: a vector store loop that computes two or more math functions
(exp, tanh, log...) per element runs as one loop per call over blocks of FISSION_BLOCK elements,
the values a later loop needs kept in L1 scratch arrays.

Checked against torch on every loop shape that reaches a split (1-D parallel blocks, short 1-D
loops, rows of 2-D kernels, row kernels after their reductions), and against the unsplit loop
under the knobs that change where the loop sits (streaming stores, next-row prefetch, swapped
loops).
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
import torch
from conftest import disassembly, kernel_body, kernels_of

import lazy
from codegen import compile_c, render_c
from codegen.render_c import CConfig

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")

# the split only changes which values pass through memory; a contraction into an fma that the
# split prevents (or allows) moves a result by an ulp or so
SPLIT_RTOL, SPLIT_ATOL = 2e-6, 1e-7


def chain(t):
    """The bench's 10-op chain: a stable sigmoid (exp), then tanh."""
    y = ((t * 2.0 + 1.0).relu() - 0.5).sigmoid() * 3.0 + t
    return y.tanh().abs() * 0.5


def torch_chain(t):
    y = torch.sigmoid(torch.relu(t * 2.0 + 1.0) - 0.5) * 3.0 + t
    return torch.abs(torch.tanh(y)) * 0.5


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def loops(src: str) -> list[str]:
    """The text from each vector loop's `simd` pragma to the next pragma, in order."""
    return re.split(r"#pragma omp[^\n]*\bsimd\b[^\n]*\n", kernel_body(src))[1:]


def run(k, cfg: CConfig, seed=0) -> list[torch.Tensor]:
    """`k` rendered under `cfg`, run on random inputs (the same for the same seed): its buffers."""
    g = torch.Generator().manual_seed(seed)
    bufs = [torch.randn(b.numel, generator=g).to(lazy.runtime.TORCH_DTYPES[b.dtype]) for b in k.buffers]
    fn = compile_c.load(render_c.render_c(k, config=cfg))
    fn.argtypes = [ctypes.c_void_p] * len(bufs)
    fn(*[b.data_ptr() for b in bufs])
    return bufs


def assert_split_keeps_results(k, cfg: CConfig):
    assert render_c._fission_stages(k, cfg), "the kernel should split under this config"
    for got, ref in zip(run(k, cfg), run(k, CConfig(**{**cfg.__dict__, "fission": False}))):
        np.testing.assert_allclose(got.float().numpy(), ref.float().numpy(), rtol=SPLIT_RTOL, atol=SPLIT_ATOL)


# -- what the split looks like -------------------------------------------------------------------
def test_the_chain_splits_into_one_loop_per_call():
    x = lazy.tensor(randn(1 << 16))
    (k,) = kernels_of(lambda: chain(x).realize())
    src = render_c.render_c(k)
    first, second = loops(src)
    assert "expf(" in first and "tanhf(" not in first
    assert "tanhf(" in second and "expf(" not in second
    # the exp and its argument pass through scratch; the input is loaded again, not kept
    assert re.search(r"fs\d+\[x0 - x0c\] = t\d+;", first) and "b0[x0]" in second
    assert f"x0c += {render_c.FISSION_BLOCK}" in src
    assert "fission" in render_c.search_space(k)
    (unsplit,) = loops(render_c.render_c(k, config=CConfig(fission=False)))
    assert "expf(" in unsplit and "tanhf(" in unsplit


def test_the_split_loops_are_vectorized_and_call_no_libm():
    # exp and tanh are the prelude's inline functions (render_c: the same bits at every width)
    x = lazy.tensor(randn(1 << 16))
    (k,) = kernels_of(lambda: chain(x).realize())
    asm = disassembly(render_c.render_c(k))
    assert re.search(r"\bv?mulps\b", asm), "packed float multiplies: the loops are vectorized"
    assert not re.search(r"call\s.*<(_ZGV\w+|expf|tanhf)(@plt)?>", asm)


def test_one_call_or_calls_once_per_row_do_not_split():
    x = lazy.tensor(randn(64, 300))
    (one,) = kernels_of(lambda: (x.exp() * 2.0 + x).realize())
    assert not render_c._fission_stages(one, CConfig()) and "fission" not in render_c.search_space(one)
    # exp of each row's sum is computed once per row: one call per element remains
    ks = kernels_of(lambda: (x.tanh() * x.sum(-1, keepdim=True).exp()).realize())
    assert not any(render_c._fission_stages(k, CConfig()) for k in ks)


def test_three_calls_make_three_loops():
    x = lazy.tensor(randn(5000))
    (k,) = kernels_of(lambda: x.exp().clamp(max=4.0).tanh().sigmoid().realize())
    parts = loops(render_c.render_c(k))
    assert len(parts) == 3 and all(len(re.findall(r"\blz_(expf|tanhf)\(", p)) == 1 for p in parts)


# -- results against torch ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 1023, 1024, 1025, 4097, 100_003, 1 << 18])
def test_1d_chain_matches_torch(n):
    x = randn(n, seed=n)
    np.testing.assert_allclose(chain(lazy.tensor(x)).numpy(), torch_chain(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (300, 200), (5, 3000), (40, 1025)])
def test_2d_chain_matches_torch_on_views_and_broadcasts(shape):
    x, row = randn(*shape, seed=1), randn(shape[1], seed=2)
    t, r = lazy.tensor(x), lazy.tensor(row)
    np.testing.assert_allclose(chain(t).numpy(), torch_chain(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chain(t + r).numpy(), torch_chain(x + row).numpy(), rtol=1e-5, atol=1e-6)
    xt = randn(shape[1], shape[0], seed=3)  # a transposed (strided) view
    np.testing.assert_allclose(chain(lazy.tensor(xt).T).numpy(), torch_chain(xt.T).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_chain_matches_torch(dtype):
    x = randn(3001, seed=4, dtype=dtype)
    got = chain(lazy.tensor(x)).torch()
    assert got.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    np.testing.assert_allclose(got.float().numpy(), torch_chain(x).float().numpy(), rtol=tol, atol=tol)


def test_a_row_kernel_splits_its_store_loop_after_the_reductions():
    x = randn(37, 2049, seed=5)
    t = lazy.tensor(x)
    ks = kernels_of(lambda: ((t - t.amax(-1, keepdim=True)).exp().tanh() * t.sum(-1, keepdim=True)).realize())
    assert len(ks) == 1 and render_c._fission_stages(ks[0], CConfig())
    got = ((t - t.amax(-1, keepdim=True)).exp().tanh() * t.sum(-1, keepdim=True)).numpy()
    ref = (torch.tanh(torch.exp(x - x.amax(-1, keepdim=True))) * x.sum(-1, keepdim=True)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_gelu_backward_splits_and_matches_torch():
    # exact GELU's gradient needs erf and exp per element: a training step's kernel that splits
    x = randn(4099, seed=6)
    t = lazy.tensor(x).requires_grad_()
    torch.nn.functional.gelu(xr := x.clone().requires_grad_()).sum().backward()
    ks = kernels_of(lambda: (lazy.nn.functional.gelu(t).sum().backward(), t.grad.realize()))
    assert any(render_c._fission_stages(k, CConfig()) for k in ks)
    np.testing.assert_allclose(t.grad.numpy(), xr.grad.numpy(), rtol=1e-5, atol=1e-6)


# -- the split under the other knobs ------------------------------------------------------------
@pytest.mark.parametrize("cfg", [CConfig(), CConfig(stream=True), CConfig(chunk=4096), CConfig(parallel_min_work=1 << 62),
                                 CConfig(simdlen=8), CConfig(threads=1)])
def test_1d_split_keeps_results_under_every_knob(cfg):
    x = lazy.tensor(randn(50_001))
    (k,) = kernels_of(lambda: chain(x).realize())
    assert_split_keeps_results(k, cfg)


@pytest.mark.parametrize("cfg", [CConfig(), CConfig(stream=True), CConfig(interchange=True), CConfig(parallel_min_work=0)])
def test_2d_split_keeps_results_under_every_knob(cfg):
    x = lazy.tensor(randn(33, 3001))
    (k,) = kernels_of(lambda: chain(x).realize())
    assert_split_keeps_results(k, cfg)


@pytest.mark.parametrize("cfg", [CConfig(), CConfig(prefetch=True), CConfig(prefetch=True, stream=True),
                                 CConfig(row_fn=False)])
def test_row_kernel_split_keeps_results_under_every_knob(cfg):
    x = lazy.tensor(randn(9, 1500))
    (k,) = kernels_of(lambda: ((x - x.mean(-1, keepdim=True)).exp().tanh() * 2.0).realize())
    assert_split_keeps_results(k, cfg)


# -- what a split must keep ------------------------------------------------------------------------
def test_two_outputs_each_with_its_own_call():
    x = randn(3000, seed=7)
    t = lazy.tensor(x)
    a, b = t.exp(), (t * 0.5).tanh()
    ks = kernels_of(lambda: lazy.realize(a, b))
    assert len(ks) == 1 and render_c._fission_stages(ks[0], CConfig())
    np.testing.assert_allclose(a.numpy(), x.exp().numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), (x * 0.5).tanh().numpy(), rtol=1e-6, atol=1e-7)


def test_calls_under_a_select_and_a_boolean_output():
    x = randn(2500, seed=8)
    t = lazy.tensor(x)
    np.testing.assert_allclose(lazy.where(t > 0, t.exp(), t.tanh()).numpy(),
                               torch.where(x > 0, x.exp(), x.tanh()).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal((t.exp() - 1.0 > t.tanh() * 3.0).numpy(), (x.exp() - 1.0 > x.tanh() * 3.0).numpy())


def test_float64_calls_split_too():
    x = randn(3001, seed=9).double()
    t = lazy.tensor(x)
    (k,) = kernels_of(lambda: chain(t).realize())
    assert render_c._fission_stages(k, CConfig())
    np.testing.assert_allclose(chain(t).numpy(), torch_chain(x).numpy(), rtol=1e-12, atol=1e-14)


def test_an_in_place_update_reads_the_old_value_in_every_loop():
    x = randn(5000, seed=10)
    t = lazy.tensor(x.clone())
    t -= (t.exp() * 0.1).tanh() * t.sigmoid()
    ref = x - (x.exp() * 0.1).tanh() * x.sigmoid()
    np.testing.assert_allclose(t.numpy(), ref.numpy(), rtol=1e-6, atol=1e-7)
