"""diag, repeat_interleave and Tensor.unfold against torch: values, shapes, strides, dtypes, odd and
empty sizes, 0-d inputs, gradients, aliasing (unfold is a view), and torch's error messages.

Every test runs on the compiled C backend and on the reference interpreter.
"""

import pytest
import torch
from torch.testing import assert_close

import lazy


@pytest.fixture(autouse=True, params=["c", "interp"])
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    return request.param


def sample(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    return x.round().to(dtype) if not dtype.is_floating_point and dtype != torch.bool else \
        (x > 0 if dtype == torch.bool else x.to(dtype))


def same(got, want):
    assert got.dtype is lazy.dtypes.as_dtype(want.dtype) and tuple(got.shape) == tuple(want.shape)
    assert_close(got.torch(), want, equal_nan=True)


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool]


# ---------------------------------------------------------------- unfold

UNFOLD = [((7,), 0, 3, 1), ((7,), 0, 3, 2), ((7,), 0, 2, 3), ((7,), 0, 7, 1), ((7,), 0, 1, 1), ((7,), 0, 0, 1),
          ((3, 5, 4), 1, 2, 1), ((3, 5, 4), -1, 4, 4), ((3, 5, 4), 0, 2, 5), ((3, 5, 4), 2, 3, 2), ((2, 0, 3), 2, 2, 1),
          ((), 0, 1, 1), ((), 0, 1, 3)]


@pytest.mark.parametrize("shape,dim,size,step", UNFOLD)
def test_unfold_values_shapes_strides(shape, dim, size, step):
    for dtype in (torch.float32, torch.int64, torch.bfloat16):
        t = sample(*shape, dtype=dtype)
        got, want = lazy.tensor(t).unfold(dim, size, step), t.unfold(dim, size, step)
        same(got, want)
        assert got.stride() == want.stride()


def test_unfold_of_a_view_and_of_a_transposed_tensor():
    t = sample(6, 8)
    x = lazy.tensor(t)
    same(x.T.unfold(1, 3, 2), t.T.unfold(1, 3, 2))
    same(x[1:, ::2].unfold(0, 2, 1), t[1:, ::2].unfold(0, 2, 1))
    same(x.unfold(1, 4, 2).unfold(0, 3, 3), t.unfold(1, 4, 2).unfold(0, 3, 3))


def test_unfold_is_a_view():
    t = torch.arange(10.0)
    x = lazy.tensor(t).clone()
    w = x.unfold(0, 3, 3)  # windows apart: writes reach the base
    w[1] = -1
    t.unfold(0, 3, 3)[1] = -1
    same(x, t)
    x.add_(1)
    t.add_(1)
    same(w, t.unfold(0, 3, 3))  # and it sees writes to the base
    o = x.unfold(0, 3, 1)  # overlapping windows read through an expand
    x.mul_(2)
    t.mul_(2)
    same(o, t.unfold(0, 3, 1))
    with pytest.raises(RuntimeError, match="expanded tensor"):
        o[0] = 0


def test_unfold_gradient():
    t = sample(3, 9, dtype=torch.float64)
    x, tx = lazy.tensor(t).requires_grad_(), t.clone().requires_grad_()
    wt = sample(3, 4, 3, seed=1, dtype=torch.float64)
    (x.unfold(1, 3, 2) * lazy.tensor(wt)).sum().backward()
    (tx.unfold(1, 3, 2) * wt).sum().backward()
    same(x.grad, tx.grad)


def test_unfold_errors():
    x = lazy.arange(5.0)
    with pytest.raises(RuntimeError, match="maximum size for tensor at dimension 0 is 5 but size is 6"):
        x.unfold(0, 6, 1)
    with pytest.raises(RuntimeError, match="step is 0 but must be > 0"):
        x.unfold(0, 2, 0)
    with pytest.raises(RuntimeError, match="maximum size for tensor at dimension 0 is 1 but size is 2"):
        lazy.tensor(3.0).unfold(0, 2, 1)


# ---------------------------------------------------------------- diag

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 1, 2, -1, -3, 7])
def test_diag_of_vector_and_matrix(dtype, k):
    v, m = sample(5, dtype=dtype), sample(4, 6, dtype=dtype)
    same(lazy.diag(lazy.tensor(v), k), torch.diag(v, k))
    same(lazy.tensor(m).diag(k), m.diag(k))
    same(lazy.diag(lazy.tensor(m[:0]), k), torch.diag(m[:0], k))
    same(lazy.diag(lazy.tensor(v[:1]), k), torch.diag(v[:1], k))


def test_diag_copies_and_differentiates():
    m = lazy.arange(9.0).reshape(3, 3)
    d = m.diag()
    m.add_(1)
    same(d, torch.tensor([0.0, 4.0, 8.0]))  # a copy, as torch's (diagonal() is the view)
    for shape, k in (((4,), 1), ((3, 5), -1)):
        t = sample(*shape, dtype=torch.float64)
        x, tx = lazy.tensor(t).requires_grad_(), t.clone().requires_grad_()
        out = torch.diag(tx, k)
        wt = sample(*out.shape, seed=2, dtype=torch.float64)
        (lazy.diag(x, k) * lazy.tensor(wt)).sum().backward()
        (out * wt).sum().backward()
        same(x.grad, tx.grad)


def test_diag_errors():
    for bad, n in ((lazy.zeros(2, 2, 2), 3), (lazy.tensor(1.0), 0)):
        with pytest.raises(RuntimeError, match=f"diag\\(\\): Supports 1D or 2D tensors. Got {n}D"):
            lazy.diag(bad)


# ---------------------------------------------------------------- repeat_interleave

@pytest.mark.parametrize("dtype", DTYPES)
def test_repeat_interleave_int_and_tensor_repeats(dtype):
    t = sample(3, 4, dtype=dtype)
    x = lazy.tensor(t)
    for args, kw in [((2,), {}), ((3,), {"dim": 1}), ((1,), {"dim": 0}), ((0,), {"dim": -1}),
                     ((torch.tensor([1, 0, 2]),), {"dim": 0}), ((torch.tensor([2, 2, 2, 2]),), {"dim": 1}),
                     ((torch.tensor([3]),), {"dim": 1}), ((torch.tensor(2),), {}),
                     ((torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 1, 1]),), {})]:
        largs = tuple(lazy.tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        same(x.repeat_interleave(*largs, **kw), t.repeat_interleave(*args, **kw))
        same(lazy.repeat_interleave(x, *largs, **kw), torch.repeat_interleave(t, *args, **kw))


def test_repeat_interleave_edges_and_indices():
    same(lazy.repeat_interleave(lazy.tensor([2, 0, 1])), torch.repeat_interleave(torch.tensor([2, 0, 1])))
    same(lazy.tensor(5).repeat_interleave(3), torch.tensor(5).repeat_interleave(3))
    same(lazy.zeros(0, 3).repeat_interleave(2, dim=0), torch.zeros(0, 3).repeat_interleave(2, dim=0))
    same(lazy.tensor([[1.0, 2.0]]).repeat_interleave(lazy.tensor([2, 1]), dim=1, output_size=3),
         torch.tensor([[1.0, 2.0]]).repeat_interleave(torch.tensor([2, 1]), dim=1, output_size=3))
    t = torch.tensor([-0.0, float("nan"), float("inf"), 1.5])
    same(lazy.tensor(t).repeat_interleave(lazy.tensor([1, 2, 1, 3])), t.repeat_interleave(torch.tensor([1, 2, 1, 3])))


def test_repeat_interleave_gradient():
    t = sample(3, 4, dtype=torch.float64)
    for reps in (2, torch.tensor([2, 0, 3])):
        x, tx = lazy.tensor(t).requires_grad_(), t.clone().requires_grad_()
        out = tx.repeat_interleave(reps, dim=0)
        wt = sample(*out.shape, seed=3, dtype=torch.float64)
        lr = lazy.tensor(reps) if isinstance(reps, torch.Tensor) else reps
        (x.repeat_interleave(lr, dim=0) * lazy.tensor(wt)).sum().backward()
        (out * wt).sum().backward()
        same(x.grad, tx.grad)


def test_repeat_interleave_errors_are_torchs():
    x = lazy.tensor([[1, 2], [3, 4]])
    for bad, msg in [([1, -1], "repeats can not be negative"),
                     ([1, 2, 3], "repeats must have the same size as input along dim, but got repeats.size\\(0\\) = 3"),
                     ([[1, 2]], "repeats must be 0-dim or 1-dim tensor")]:
        with pytest.raises(RuntimeError, match=msg):
            x.repeat_interleave(lazy.tensor(bad), dim=0)
    with pytest.raises(NotImplementedError, match="not implemented for 'Float'"):
        x.repeat_interleave(lazy.tensor([1.0, 2.0]), dim=0)
    with pytest.raises(RuntimeError, match="repeats can not be negative"):
        x.repeat_interleave(-1)
