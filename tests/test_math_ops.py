"""fmod, the inverse trigonometric and hyperbolic functions, addcmul and addcdiv against torch:
values over odd sizes, 0-d and empty tensors in every float dtype, torch's special values (zeros
with their sign, infinities, NaN), gradients (first and second order, and at the edges where the
derivative is infinite), in-place forms, and the accuracy of the composites in ulp.

Measured accuracy (tests/test_math_ops.py::test_*_ulp; C backend and interpreter alike), against
float64 for float32 inputs and against mpmath (120 bits) for float64 inputs:

    float32   atan 2.75  asin 3.32  acos 3.42  atan2 3.05  asinh 0.50  acosh 0.50  atanh 0.50
    float64   atan 0.80  asin 1.73  acos 1.76  atan2 1.28  asinh 2.32  acosh 2.19  atanh 2.45

(torch's float32 kernels, SLEEF: atan 0.52, asin 0.72, acos 0.79, asinh 1.59, acosh 1.83, atanh 1.00.)
"""

import math
import os

import mpmath
import numpy as np
import pytest
import torch
from torch.testing import assert_close

import lazy

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # see tests/test_autograd.py: set before triton is imported

INF, NAN = math.inf, math.nan

# the bounds asserted: the measured maxima above, rounded up
ULP32 = {"atan": 3.0, "asin": 3.5, "acos": 3.5, "atan2": 3.25, "asinh": 0.51, "acosh": 0.51, "atanh": 0.51}
ULP64 = {"atan": 1.0, "asin": 2.0, "acos": 2.0, "atan2": 1.5, "asinh": 2.5, "acosh": 2.5, "atanh": 2.5}
DOMAIN = {"atan": (-6, 6), "asin": (-0.98, 0.98), "acos": (-0.98, 0.98), "asinh": (-6, 6), "acosh": (1.02, 6),
          "atanh": (-0.98, 0.98)}
UNARY = sorted(DOMAIN)
TOL = {torch.float32: {"rtol": 2e-6, "atol": 1e-7}, torch.float64: {"rtol": 1e-14, "atol": 1e-15},
       torch.float16: {"rtol": 1e-3, "atol": 1e-3}, torch.bfloat16: {"rtol": 8e-3, "atol": 8e-3}}


@pytest.fixture(autouse=True, params=["c", "interp"])
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    return request.param


def sample(lo, hi, *shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def same(got, want, **tol):
    assert got.dtype is lazy.dtypes.as_dtype(want.dtype) and tuple(got.shape) == tuple(want.shape)
    g, w = got.torch(), want
    assert_close(g, w, equal_nan=True, **(tol or TOL.get(w.dtype, {})))


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (0,), (3, 5), (2, 0, 3)])
def test_unary_values(name, dtype, shape):
    t = sample(*DOMAIN[name], *shape, dtype=dtype)
    x = lazy.tensor(t)
    want = getattr(torch, name)(t)
    same(getattr(x, name)(), want)
    same(getattr(lazy, name)(x), want)
    same(getattr(lazy, "arc" + name[1:])(x), want)


@pytest.mark.parametrize("name", UNARY)
def test_unary_special_values_and_signed_zeros(name):
    t = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 2.0, -2.0, 1e-30, -1e-30, 3e38, -3e38, 0.5])
    got = getattr(lazy.tensor(t), name)().torch()
    want = getattr(torch, name)(t)
    assert_close(got, want, equal_nan=True, rtol=2e-6, atol=0)
    if not want[:2].isnan().any():
        assert torch.equal(torch.signbit(got[:2]), torch.signbit(want[:2]))


@pytest.mark.parametrize("name", UNARY)
def test_unary_ints_compute_in_the_default_dtype(name):
    t = torch.tensor([0, 1, 2, -1, 3])
    same(getattr(lazy.tensor(t), name)(), getattr(torch, name)(t))


def test_atan2_values_and_special_cases():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        y, x = sample(-3, 3, 5, 7, dtype=dtype), sample(-3, 3, 7, seed=1, dtype=dtype)
        same(lazy.atan2(lazy.tensor(y), lazy.tensor(x)), torch.atan2(y, x))
        same(lazy.tensor(y).arctan2(lazy.tensor(x)), torch.arctan2(y, x))
    sp = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 1e-45, 3e38])
    yy, xx = torch.meshgrid(sp, sp, indexing="ij")
    got = lazy.atan2(lazy.tensor(yy), lazy.tensor(xx)).torch()
    want = torch.atan2(yy, xx)
    assert_close(got, want, equal_nan=True, rtol=2e-7, atol=0)  # C's rules, with signed zeros
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    same(lazy.atan2(lazy.tensor([1, -2]), lazy.tensor(3)), torch.atan2(torch.tensor([1, -2]), torch.tensor(3)))
    same(lazy.atan2(lazy.tensor([[0.5]]), lazy.tensor([1.0, -1.0])), torch.atan2(torch.tensor([[0.5]]), torch.tensor([1.0, -1.0])))


# ---------------------------------------------------------------- accuracy in ulp

def _sweep32() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1e-45, -1e-45, 1.17e-38, 3.4e38, -3.4e38, 2.4142135,
                      0.41421357, 1e-8, 1e8, 2.0 ** 28], dtype=np.float32)
    return np.concatenate([edges, rng.uniform(-1, 1, 100000), rng.uniform(-4, 4, 100000),
                           10 ** rng.uniform(-40, 38.5, 100000) * rng.choice([-1, 1], 100000),
                           np.float32(1) - np.arange(1, 2000) * np.float32(6e-8),
                           np.float32(1) + np.arange(1, 2000) * np.float32(1.2e-7)]).astype(np.float32)


def _max_ulp32(got: np.ndarray, ref: np.ndarray) -> float:
    r32 = ref.astype(np.float32)
    both_nan = np.isnan(got) & np.isnan(r32)
    assert np.all(both_nan | (got == r32) | (np.isfinite(got) & np.isfinite(r32))), "inf/NaN where the reference differs"
    ok = np.isfinite(r32) & np.isfinite(got)
    spacing = np.maximum(np.spacing(np.abs(r32[ok])).astype(np.float64), 2.0 ** -149)
    return float((np.abs(got[ok].astype(np.float64) - ref[ok]) / spacing).max())


@pytest.mark.parametrize("name", UNARY)
def test_float32_ulp(name):
    x = _sweep32()
    with np.errstate(all="ignore"):
        ref = getattr(np, "arc" + name[1:])(x.astype(np.float64))
    assert _max_ulp32(getattr(lazy.tensor(x), name)().numpy(), ref) <= ULP32[name]


def test_atan2_float32_ulp():
    y, x = _sweep32(), np.roll(_sweep32(), 7777)
    with np.errstate(all="ignore"):
        ref = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    assert _max_ulp32(lazy.atan2(lazy.tensor(y), lazy.tensor(x)).numpy(), ref) <= ULP32["atan2"]


def _max_ulp64(got, exact) -> float:
    worst = 0.0
    for g, r in zip(got, exact):
        if r is None:
            continue
        sp = np.spacing(abs(float(r))) if r != 0 else 5e-324
        worst = max(worst, float(abs(mpmath.mpf(float(g)) - r) / sp))
    return worst


@pytest.mark.parametrize("name", UNARY)
def test_float64_ulp(name, backend):
    mpmath.mp.prec = 120
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 1500), 10 ** rng.uniform(-300, 300, 1500) * rng.choice([-1, 1], 1500),
                        rng.uniform(-4, 4, 1500), 1 - 10 ** rng.uniform(-16, -1, 300), 1 + 10 ** rng.uniform(-15, 0, 300),
                        [0.66, 0.6600000001, 2.414213562373095, 0.4142135623730950]])
    f = getattr(mpmath, name)

    def exact(v):
        r = f(mpmath.mpf(float(v)))
        return r if isinstance(r, mpmath.mpf) and mpmath.isfinite(r) else None

    got = getattr(lazy.tensor(x), name)().numpy()
    assert _max_ulp64(got, [exact(v) for v in x]) <= ULP64[name]
    if name == "atan":
        y, xx = rng.standard_normal(1500) * 10 ** rng.uniform(-5, 5, 1500), rng.standard_normal(1500) * 10 ** rng.uniform(-5, 5, 1500)
        got = lazy.atan2(lazy.tensor(y), lazy.tensor(xx)).numpy()
        assert _max_ulp64(got, [mpmath.atan2(mpmath.mpf(float(a)), mpmath.mpf(float(b))) for a, b in zip(y, xx)]) \
            <= ULP64["atan2"]


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unary_gradients(name, dtype):
    t = sample(*DOMAIN[name], 33, dtype=dtype)
    x, tx = lazy.tensor(t).requires_grad_(), t.clone().requires_grad_()
    w = sample(-1, 1, 33, seed=5, dtype=dtype)
    (getattr(x, name)() * lazy.tensor(w)).sum().backward()
    (getattr(tx, name)() * w).sum().backward()
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    assert_close(x.grad.torch(), tx.grad, **tol)


@pytest.mark.parametrize("name", UNARY)
def test_unary_second_order_gradients(name):
    t = sample(*DOMAIN[name], 9, dtype=torch.float64)
    x, tx = lazy.tensor(t).requires_grad_(), t.clone().requires_grad_()
    (g,) = lazy.autograd.grad(getattr(x, name)().sum(), x, create_graph=True)
    (tg,) = torch.autograd.grad(getattr(tx, name)().sum(), tx, create_graph=True)
    assert_close(lazy.autograd.grad(g.sum(), x)[0].torch(), torch.autograd.grad(tg.sum(), tx)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,points", [("asin", [1.0, -1.0, 0.0]), ("acos", [1.0, -1.0, 0.0]),
                                         ("atan", [0.0, INF, -INF]), ("acosh", [1.0, INF]),
                                         ("asinh", [0.0, INF, -INF]), ("atanh", [1.0, -1.0, 0.0])])
def test_gradients_at_the_edges_are_torchs(name, points):
    """inf where the derivative is infinite (no NaN from a product rule with a 0 factor), 0 at +-inf."""
    t = torch.tensor(points).requires_grad_()
    x = lazy.tensor(points).requires_grad_()
    getattr(t, name)().sum().backward()
    getattr(x, name)().sum().backward()
    assert_close(x.grad.torch(), t.grad, equal_nan=True)


def test_atan2_gradients():
    for dtype, tol in ((torch.float32, {"rtol": 2e-5, "atol": 1e-6}), (torch.float64, {"rtol": 1e-12, "atol": 1e-13})):
        y, x = sample(-3, 3, 4, 5, dtype=dtype), sample(-3, 3, 5, seed=1, dtype=dtype)
        ly, lx = lazy.tensor(y).requires_grad_(), lazy.tensor(x).requires_grad_()
        ty, tx = y.clone().requires_grad_(), x.clone().requires_grad_()
        lazy.atan2(ly, lx).sum().backward()
        torch.atan2(ty, tx).sum().backward()
        assert_close(ly.grad.torch(), ty.grad, **tol)
        assert_close(lx.grad.torch(), tx.grad, **tol)


# ---------------------------------------------------------------- fmod

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                                   torch.int8])
def test_fmod_values(dtype):
    a = sample(-20, 20, 6, 7, dtype=torch.float64)
    b = sample(-5, 5, 7, seed=1, dtype=torch.float64)
    if dtype.is_floating_point:
        a, b = a.to(dtype), b.to(dtype)
    else:
        a, b = a.round().to(dtype), torch.where(b.round() == 0, 3.0, b.round()).to(dtype)
    same(lazy.fmod(lazy.tensor(a), lazy.tensor(b)), torch.fmod(a, b))
    same(lazy.tensor(a).fmod(3), torch.fmod(a, 3))
    same(lazy.tensor(a).fmod(-2.5), torch.fmod(a, -2.5))


def test_fmod_special_values_are_cs():
    a = torch.tensor([5.0, -5.0, 5.5, -0.0, 0.0, INF, -INF, NAN, 3.0, 1e30, -7.0, 1e-40])
    b = torch.tensor([3.0, 3.0, -2.0, 2.0, -2.0, 2.0, 2.0, 2.0, 0.0, 3.0, INF, 3e-41])
    got, want = lazy.fmod(lazy.tensor(a), lazy.tensor(b)).torch(), torch.fmod(a, b)
    assert_close(got, want, equal_nan=True, rtol=0, atol=0)  # exact: the remainder is representable
    assert torch.equal(torch.signbit(got[~want.isnan()]), torch.signbit(want[~want.isnan()]))
    same(lazy.fmod(lazy.tensor(2.5), 1.0), torch.fmod(torch.tensor(2.5), 1.0))
    with pytest.raises(RuntimeError, match="not implemented for 'Bool'"):
        lazy.fmod(lazy.tensor([True]), True)


def test_fmod_gradients_and_inplace():
    a, b = sample(-9, 9, 11, dtype=torch.float64), sample(0.5, 3, 11, seed=1, dtype=torch.float64)
    b = torch.where(torch.arange(11) % 2 == 0, b, -b)
    la, lb = lazy.tensor(a).requires_grad_(), lazy.tensor(b).requires_grad_()
    ta, tb = a.clone().requires_grad_(), b.clone().requires_grad_()
    lazy.fmod(la, lb).sum().backward()
    torch.fmod(ta, tb).sum().backward()
    assert_close(la.grad.torch(), ta.grad)
    assert_close(lb.grad.torch(), tb.grad)
    x, t = lazy.tensor(a.clone()), a.clone()
    x.fmod_(2.0)
    t.fmod_(2.0)
    same(x, t)


# ---------------------------------------------------------------- addcmul, addcdiv

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("value", [1, 0.5, -2])
def test_addcmul_addcdiv(dtype, value):
    a, p, q = sample(-2, 2, 3, 1, dtype=dtype), sample(-2, 2, 4, seed=1, dtype=dtype), sample(0.5, 2, 3, 4, seed=2, dtype=dtype)
    la, lp, lq = (lazy.tensor(v) for v in (a, p, q))
    same(lazy.addcmul(la, lp, lq, value=value), torch.addcmul(a, p, q, value=value))
    same(la.addcdiv(lp, lq, value=value), a.addcdiv(p, q, value=value))
    x, t = lazy.tensor(sample(-1, 1, 3, 4, dtype=dtype)), sample(-1, 1, 3, 4, dtype=dtype)
    x.addcmul_(lp, lq, value=value)
    t.addcmul_(p, q, value=value)
    same(x, t)
    x.addcdiv_(lp, lq, value=value)
    t.addcdiv_(p, q, value=value)
    same(x, t)


def test_addcmul_addcdiv_ints_promotion_gradients_and_errors():
    a, p, q = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([2, 2, 2])
    same(lazy.addcmul(lazy.tensor(a), lazy.tensor(p), lazy.tensor(q), value=3), torch.addcmul(a, p, q, value=3))
    same(lazy.addcmul(lazy.tensor(a), lazy.tensor(p.double()), lazy.tensor(q)), torch.addcmul(a, p.double(), q))
    with pytest.raises(RuntimeError, match="Integer division with addcdiv is no longer supported"):
        lazy.addcdiv(lazy.tensor(a), lazy.tensor(p), lazy.tensor(q))
    with pytest.raises(RuntimeError, match="must not be a floating point"):
        lazy.addcmul(lazy.tensor(a), lazy.tensor(p), lazy.tensor(q), value=0.5)
    vals = [sample(-2, 2, 5, seed=i, dtype=torch.float64) for i in range(3)]
    vals[2] = vals[2].abs() + 0.5
    lz = [lazy.tensor(v).requires_grad_() for v in vals]
    tt = [v.clone().requires_grad_() for v in vals]
    (lazy.addcdiv(*lz, value=0.7) * lazy.addcmul(*lz, value=-1.5)).sum().backward()
    (torch.addcdiv(*tt, value=0.7) * torch.addcmul(*tt, value=-1.5)).sum().backward()
    for lv, tv in zip(lz, tt):
        assert_close(lv.grad.torch(), tv.grad)


def test_triton_backend(backend, monkeypatch):
    """The composites on the Triton backend (its interpreter here, which is slow: a few values)."""
    if backend == "interp":
        pytest.skip("once is enough")
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    t = torch.linspace(-3, 3, 37)
    for name in ("atan", "asinh", "atanh"):
        u = t / 3.5 if name == "atanh" else t
        same(getattr(lazy.tensor(u), name)(), getattr(torch, name)(u), rtol=4e-7, atol=0)
    same(lazy.atan2(lazy.tensor(t), lazy.tensor(t.flip(0))), torch.atan2(t, t.flip(0)), rtol=4e-7, atol=0)
    same(lazy.fmod(lazy.tensor(t), 1.3), torch.fmod(t, 1.3), rtol=0, atol=0)
