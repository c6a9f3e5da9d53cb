"""Edge semantics where lazy once differed from torch: gradients at NaN and at zero deviation,
fully masked attention rows, half-precision RMS norm, log1p at -inf, integer aranges with float
arguments, values stored into integer tensors, and setitem values with leading size-1 dims."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lazy
from lazy.tensor import INPLACE

F = lazy.nn.functional
NAN = float("nan")


def grads(fn, values):
    """fn's gradient at `values` in lazy and in torch, as lists."""
    x = lazy.tensor(values).requires_grad_()
    fn(x).backward()
    t = torch.tensor(values, requires_grad=True)
    fn(t).backward()
    return x.grad.tolist(), t.grad.tolist()


@pytest.mark.parametrize("fn", [
    lambda x: x.max(), lambda x: x.min(), lambda x: x.max(0)[0], lambda x: x.min(0)[0],
    lambda x: x.clamp(0.0, 1.0).sum(), lambda x: x.clamp(min=0.0).sum(), lambda x: x.clamp(max=1.0).sum(),
], ids=["max", "min", "max(0)", "min(0)", "clamp", "clamp_min", "clamp_max"])
def test_gradients_at_nan_match_torch(fn):
    got, want = grads(fn, [0.5, NAN, 2.0])
    np.testing.assert_array_equal(got, want)


def test_amax_sends_its_nan_gradient_to_the_nan_like_max():
    # torch's amax gives NaN to every element here (its backward compares x == NaN); lazy's amax
    # and max share one rule, torch.max's
    x = lazy.tensor([0.5, NAN, 2.0]).requires_grad_()
    x.amax().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]


def test_std_gradient_is_zero_where_the_deviation_is_zero():
    got, want = grads(lambda x: x.std(), [1.0, 1.0, 1.0])
    assert got == want == [0.0, 0.0, 0.0]
    got, want = grads(lambda x: x.std(1).sum(), [[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert lazy.tensor([1.0, NAN]).std().isnan().item()


@pytest.mark.parametrize("mask", ["bool", "float"])
def test_attention_rows_with_every_key_masked_are_zero(mask):
    q = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    m = keep if mask == "bool" else torch.zeros(3, 3).masked_fill(~keep, -math.inf)
    want = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=m)
    lq = lazy.tensor(q).requires_grad_()
    got = F.scaled_dot_product_attention(lq, lq, lq, attn_mask=lazy.tensor(m))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert (got.numpy()[:, 1] == 0).all()
    got.sum().backward()
    assert np.isfinite(lq.grad.numpy()).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rms_norm_computes_in_float32_with_its_epsilon(dtype):
    x = torch.tensor([[0.0, 0.0, 1.0], [1e-3, -2e-3, 3e-3]], dtype=dtype)
    w = torch.tensor([1.0, 2.0, 0.5], dtype=dtype)
    for weight in (None, w):
        want = torch.nn.functional.rms_norm(x, (3,), weight)
        got = F.rms_norm(lazy.tensor(x), (3,), None if weight is None else lazy.tensor(weight)).torch()
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.float().numpy(), want.float().numpy())


def test_log1p_at_the_ends():
    x = torch.tensor([-math.inf, -2.0, -1.0, -0.5, 1e-10, 0.0, math.inf])
    np.testing.assert_array_equal(lazy.tensor(x).log1p().numpy(), torch.log1p(x).numpy())


@pytest.mark.parametrize("args", [(0, 5, 1.5), (0.5, 5, 1), (0, 5.7, 2), (-3.9, 4, 2.5), (10, 0.5, -3)])
def test_integer_arange_truncates_its_float_arguments(args):
    assert lazy.arange(*args, dtype=lazy.int64).tolist() == torch.arange(*args, dtype=torch.int64).tolist()


def test_integer_arange_with_a_step_truncated_to_zero_raises():
    with pytest.raises(RuntimeError, match="step must be nonzero"):
        lazy.arange(0, 1, 0.25, dtype=lazy.int64)


@pytest.mark.parametrize("dtype,bad,ok", [("uint8", [300, 256, -256, 1e10], [-255, -1, 255, 2.9]),
                                          ("int8", [128, -129], [-128, 127]),
                                          ("int32", [2**31, 2.5e10, math.inf, math.nan], [-2**31, 2**31 - 1]),
                                          ("int64", [2**63], [-2**63])])
def test_values_that_overflow_an_integer_dtype_raise_like_torch(dtype, bad, ok):
    ld, td = getattr(lazy, dtype), getattr(torch, dtype)
    for v in bad:
        a = lazy.zeros(3, dtype=ld)
        with pytest.raises(RuntimeError, match="without overflow"):
            a[0] = v
        with pytest.raises(RuntimeError, match="without overflow"):
            a.fill_(v)
        with pytest.raises(RuntimeError, match="without overflow"):
            lazy.full((2,), v, dtype=ld)
        assert a.tolist() == [0, 0, 0]  # nothing half-written
    for v in ok:
        a, t = lazy.zeros(3, dtype=ld), torch.zeros(3, dtype=td)
        a[1], t[1] = v, v
        assert a.tolist() == t.tolist()


def test_setitem_drops_leading_size_one_dims_of_the_value():
    a, t = lazy.zeros(2, 3), torch.zeros(2, 3)
    a[0], t[0] = lazy.ones(1, 1, 3), torch.ones(1, 1, 3)
    a[:, 1:] = np.full((1, 2, 2), 5.0, np.float32)
    t[:, 1:] = torch.full((1, 2, 2), 5.0)
    assert a.tolist() == t.tolist()
    with pytest.raises(RuntimeError):
        a[0] = lazy.ones(2, 3)  # a leading dim that is not 1 still does not fit


def test_max_over_several_dims_names_amax():
    with pytest.raises(TypeError, match="max: dim must be one int.*amax"):
        lazy.zeros(2, 3).max((0, 1))


def test_errors_name_the_operands_as_the_user_gave_them():
    with pytest.raises(TypeError, match=r"bitwise_or: expected integer or bool tensors, got lazy.bool, lazy.float32"):
        lazy.tensor([True, False]) | lazy.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3, 4\) and \(3, 4, 5\): the batch dims \(2,\) and \(3,\)"):
        lazy.ones(2, 3, 4) @ lazy.ones(3, 4, 5)


def test_float_alpha_on_integer_tensors_raises_like_torch():
    i = lazy.ones(2, dtype=lazy.int64)
    with pytest.raises(RuntimeError, match="alpha must not be a floating point number"):
        i.add(i, alpha=2.5)
    with pytest.raises(RuntimeError, match="alpha must not be a floating point number"):
        i.sub(i, alpha=0.5)
    assert i.add(i, alpha=2).tolist() == [3, 3]
    assert i.add(lazy.ones(2), alpha=2.5).tolist() == torch.ones(2, dtype=torch.int64).add(torch.ones(2), alpha=2.5).tolist()


@pytest.mark.parametrize("fn", [
    lambda m: (m.zeros(3, 0) * m.zeros(0)).sum(-1),
    lambda m: m.zeros(4, 0) @ m.zeros(0),
    lambda m: m.ones(2, 4, 0) @ m.ones(2, 0, 3),
    lambda m: m.zeros(3, 0, 2).permute(2, 0, 1).reshape(2, 0).sum(1),
], ids=["broadcast-sum", "matvec", "bmm", "permuted-reshape"])
def test_empty_inner_dims_reduce_to_zeros(fn):
    # a reshape of an empty tensor inside a kernel: its index is never read (0-trip loops)
    assert fn(lazy).tolist() == fn(torch).tolist()


SCALAR_ARG = {"clamp_min": 0.1, "clamp_max": 0.5, "remainder": 0.3, "floor_divide": 0.3, "logit": 0.05}


@pytest.mark.parametrize("name", INPLACE)
def test_in_place_forms_match_torch_and_write_through_views(name):
    base = torch.tensor([[-1.5, 0.2, 0.0], [2.0, 0.7, 3.25]])
    other = torch.tensor([[0.5, 2.0], [1.0, 0.25], [3.0, 0.5]])  # the shape of base.T

    def run(t, mod):
        o = lazy.tensor(other) if mod is lazy else other
        args = ((o,) if name in ("hypot", "xlogy") else (o, 0.25) if name == "lerp"
                else (SCALAR_ARG[name],) if name in SCALAR_ARG else ())
        view = t.T  # the write must reach the base
        assert getattr(view, name + "_")(*args) is view
        return t

    want = run(base.clone(), torch)
    got = run(lazy.tensor(base.clone()), lazy)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)


def test_in_place_float_ops_on_integer_tensors_raise_like_torch():
    with pytest.raises(TypeError, match="exp_: result type lazy.float32 can't be cast"):
        lazy.tensor([1, 2]).exp_()


def test_expm1_gradient_is_finite_where_exp_is():
    v = [-200.0, -100.0, -88.0, -1e-3, 0.0, 1e-8, 1e-3, 0.5, 50.0, 88.0, 100.0, NAN, -math.inf, math.inf]
    got, want = grads(lambda x: x.expm1().sum(), v)
    np.testing.assert_allclose(got, want, rtol=2e-6)
