"""Ops where data decides where values go (lazy/indexed.py) against torch: advanced indexing and
assignment (tensors, lists, masks, mixed with slices, ints, None and ...; negative indices;
accumulate), gather/scatter/scatter_add/index_select/take_along_dim/index_add, cumsum/cumprod/
cummax/cummin, sort/argsort/topk; values, dtypes and shapes, and gradients.

Every test runs on the compiled C backend and on the reference interpreter; the Triton backend
runs a few (its interpreter on CPU is slow)."""

import os

import numpy as np
import pytest
import torch
from conftest import kernels_of

import lazy

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        name = metafunc.function.__name__
        backends = ["triton"] if name.endswith("_triton") else ["c"] if name.endswith("_kernels") else ["c", "interp"]
        metafunc.parametrize("backend", backends, indirect=True)


_g = torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    _g.manual_seed(0)
    return request.param


def rnd(*shape, dtype=torch.float32):
    x = torch.randn(shape, generator=_g, dtype=torch.float64) * 3
    return x.to(dtype) if dtype.is_floating_point else x.round().to(dtype)


def same(lz, ref):
    assert isinstance(lz, lazy.Tensor), type(lz)
    assert lz.dtype == ref.dtype, (lz.dtype, ref.dtype)
    assert tuple(lz.shape) == tuple(ref.shape), (tuple(lz.shape), tuple(ref.shape))
    torch.testing.assert_close(lz.torch(), ref, equal_nan=True, rtol=0, atol=0)


X = rnd(4, 5, 6)
I2 = torch.tensor([[0, 3], [2, -1]])
M = X > 0.5
GET = [
    (slice(None), [-1], slice(None)),  # a GPT's last position, kept as a dim
    I2,  # rows by an index tensor
    (slice(None), I2),
    (I2, slice(None), [1, -2]),  # advanced indices apart: their dims go first
    (1, I2, slice(2, 4)),
    ([0, 1], [1, 2]),  # adjacent: in place
    (Ellipsis, [0, 5]),
    (None, [3, 0], None, slice(None, None, 2)),
    M,  # a mask of every dim: the selected values, in order
    M[:, :, 0],  # a mask of the leading dims
    (slice(1, 3), M[0, :, 0]),
    (torch.tensor([True, False, True, True]),),
    np.array([2, 0]),
    ([[1], [2]], [[0, 1, 4]]),  # broadcast index tensors
    (torch.tensor(3),),  # a 0-d index tensor
    (torch.tensor([], dtype=torch.int64),),  # nothing
]


@pytest.mark.parametrize("k", range(len(GET)))
def test_getitem_matches_torch(k):
    idx = GET[k]
    same(lazy.tensor(X)[idx], X[idx])


@pytest.mark.parametrize("k", range(len(GET)))
def test_getitem_of_a_noncontiguous_view(k):
    base = rnd(6, 4, 5).permute(1, 2, 0)  # (4, 5, 6), strides not row-major
    lz = lazy.tensor(base)

    def fresh(i):  # a mask of its own, of the mask's shape
        return torch.rand(i.shape, generator=_g) > 0.5 if isinstance(i, torch.Tensor) and i.dtype is torch.bool else i

    idx = tuple(map(fresh, GET[k])) if isinstance(GET[k], tuple) else fresh(GET[k])
    same(lz[idx], base[idx])


def test_index_tensors_of_each_int_dtype_and_lazy_ones():
    for dt in (torch.int32, torch.int64, torch.uint8 if False else torch.int8):
        i = torch.tensor([3, -1, 0]).to(dt)
        same(lazy.tensor(X)[lazy.tensor(i)], X[i.long()])
    same(lazy.tensor(X)[lazy.tensor(M)], X[M])


def test_float_index_is_refused():
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        lazy.tensor(X)[lazy.tensor([0.0, 1.0])]


SET = [
    ((slice(None), [1, 3]), 7.0),
    ((I2, 0), "row"),
    ((M,), float("-inf")),
    ((M[:, :, 0],), "vec"),  # a mask of leading dims, a value for the remaining dims
    (([0, 0, 2], [1, 1, 4]), "k"),  # a repeated index: torch keeps one of the writes
    ((slice(None), slice(None), [0, -1]), "full"),
]


def _value(kind, shape):
    if kind == "row":
        return rnd(*shape)
    if kind == "vec":
        return rnd(shape[-1])
    if kind == "k":
        return torch.tensor(5.0)
    if kind == "full":
        return rnd(*shape)
    return kind


@pytest.mark.parametrize("k", range(len(SET)))
def test_setitem_matches_torch(k):
    idx, kind = SET[k]
    t = X.clone()
    shape = t[idx].shape
    v = _value(kind, shape)
    l = lazy.tensor(X.clone())
    t[idx] = v
    l[idx] = v if not isinstance(v, torch.Tensor) else lazy.tensor(v)
    same(l, t)


def test_setitem_through_a_view_reaches_its_base_and_index_put_accumulates():
    t, l = X.clone(), lazy.tensor(X.clone())
    tv, lv = t[1:], l[1:]
    tv[[0, 2], 3] = 9.0
    lv[[0, 2], 3] = 9.0
    same(l, t)
    idx = (torch.tensor([0, 0, 3]), torch.tensor([1, 1, 2]))
    v = torch.tensor([1.0, 2.0, 4.0])
    t.index_put_(idx, v.unsqueeze(-1).expand(3, 6), accumulate=True)
    l.index_put_(tuple(lazy.tensor(i) for i in idx), lazy.tensor(v).unsqueeze(-1).expand(3, 6), accumulate=True)
    same(l, t)


def test_masked_assignment_with_a_scalar_reads_nothing_on_the_host():
    """`logits[logits < v[:, [-1]]] = -inf` (top-k sampling) is a where: no realization to find
    the count of the mask."""
    logits = lazy.tensor(rnd(3, 10))
    v = logits.topk(4).values
    before = lazy.runtime.cache_stats["schedule_misses"] + lazy.runtime.cache_stats["schedule_hits"]
    logits[logits < v[:, [-1]]] = float("-inf")
    after = lazy.runtime.cache_stats["schedule_misses"] + lazy.runtime.cache_stats["schedule_hits"]
    assert after == before  # nothing ran yet
    t = logits.torch()
    assert (t.isinf().sum(1) == 6).all()


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather_scatter_scatter_add(dim):
    x = rnd(4, 5, 3)
    shape = list(x.shape)
    shape[dim] = 2
    idx = torch.randint(0, x.shape[dim], shape, generator=_g)
    src = rnd(*shape)
    lx, li, ls = lazy.tensor(x), lazy.tensor(idx), lazy.tensor(src)
    same(lx.gather(dim, li), x.gather(dim, idx))
    same(lazy.gather(lx, dim, li), torch.gather(x, dim, idx))
    same(lx.scatter_add(dim, li, ls), x.scatter_add(dim, idx, src))
    uniq = torch.argsort(torch.rand(x.shape, generator=_g), dim=dim).narrow(dim, 0, 2)  # no repeats
    same(lx.scatter(dim, lazy.tensor(uniq), ls), x.scatter(dim, uniq, src))
    same(lx.scatter(dim, lazy.tensor(uniq), value=2.5), x.scatter(dim, uniq, 2.5))
    y = lx.clone()
    y.scatter_add_(dim, li, ls)
    same(y, x.scatter_add(dim, idx, src))


def test_index_select_take_along_dim_index_add():
    x = rnd(5, 4)
    i = torch.tensor([4, 0, 0, 2])
    lx, li = lazy.tensor(x), lazy.tensor(i)
    same(lx.index_select(0, li), x.index_select(0, i))
    same(lx.index_select(1, lazy.tensor([3, 1])), x.index_select(1, torch.tensor([3, 1])))
    a = torch.argsort(x, dim=1)
    same(lx.take_along_dim(lazy.tensor(a), 1), torch.take_along_dim(x, a, 1))
    same(lazy.take_along_dim(lx, lazy.tensor(a[:, :1]), 1), torch.take_along_dim(x, a[:, :1], 1))
    same(lx.take_along_dim(lazy.tensor(a)), torch.take_along_dim(x, a))
    src = rnd(4, 4)
    same(lx.index_add(0, li, lazy.tensor(src), alpha=2), x.index_add(0, i, src, alpha=2))


def test_index_checks_raise_torch_messages():
    x = lazy.tensor(X)
    with pytest.raises(RuntimeError, match="Expected dtype int64 for index"):
        x.gather(0, lazy.tensor([[[0]]], dtype=lazy.int32))
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        x.gather(0, lazy.tensor([0]))
    with pytest.raises(IndexError, match="supposed to be a vector"):
        x.index_select(0, lazy.tensor([[0]]))


def test_an_index_out_of_range_raises_when_it_runs():
    y = lazy.tensor(X)[lazy.tensor([7])]
    with pytest.raises((IndexError, RuntimeError)):
        y.torch()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int32, torch.int64,
                                   torch.bool])
def test_cumulative_ops(dtype):
    x = rnd(3, 7, dtype=dtype) if dtype is not torch.bool else rnd(3, 7) > 0
    lx = lazy.tensor(x)
    for dim in (0, 1, -1):
        same(lx.cumsum(dim), x.cumsum(dim))
        if dtype is not torch.bool:
            same(lx.cumprod(dim), x.cumprod(dim)) if dtype.is_floating_point else None
            v, i = lx.cummax(dim)
            tv, ti = x.cummax(dim)
            same(v, tv)
            same(i, ti)
            same(lx.cummin(dim).values, x.cummin(dim).values)
    same(lx.cumsum(0, dtype=lazy.float64), x.cumsum(0, dtype=torch.float64))
    same(lazy.tensor(x[0, 0]).cumsum(0), x[0, 0].cumsum(0))  # 0-d


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.int64])
def test_sort_argsort_topk(dtype):
    x = rnd(4, 9, dtype=dtype)
    if dtype.is_floating_point:
        x[1, 2] = float("nan")
        x[2, 3] = x[2, 4]  # a tie
    lx = lazy.tensor(x)
    for dim in (0, 1):
        for descending in (False, True):
            v, i = lx.sort(dim=dim, descending=descending, stable=True)
            tv, ti = x.sort(dim=dim, descending=descending, stable=True)
            same(v, tv)
            same(i, ti)
            same(lx.argsort(dim=dim, descending=descending, stable=True),
                 x.argsort(dim=dim, descending=descending, stable=True))
    for k in (0, 1, 4):
        for largest in (True, False):
            v, i = lx.topk(k, largest=largest)
            tv, ti = x.topk(k, largest=largest)
            same(v, tv)
            if not dtype.is_floating_point:
                same(i, ti)
    with pytest.raises(RuntimeError, match="out of range"):
        lx.topk(10)


def _grads(fn, *inputs):
    tx = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    fn(torch, *tx).backward()
    lx = [lazy.tensor(t.detach()) for t in inputs]
    for t in lx:
        if t.dtype.is_float:
            t.requires_grad_()
    fn(lazy, *lx).backward()
    for a, b in zip(lx, tx):
        if b.is_floating_point():
            assert (a.grad is None) == (b.grad is None)
            if b.grad is not None:
                torch.testing.assert_close(a.grad.torch(), b.grad, rtol=1e-5, atol=1e-5)


def test_gradients_match_torch():
    x, w = rnd(5, 6), rnd(5, 6)
    idx = torch.tensor([[0, 4, 4], [1, 1, 2]])
    _grads(lambda lib, a, b: (a[idx if lib is torch else lazy.tensor(idx)] * b[0]).sum(), x, w)
    _grads(lambda lib, a, b: (a[:, [5, 0, 5]] * b[:, :3]).sum(), x, w)
    _grads(lambda lib, a, b: (a.gather(1, idx if lib is torch else lazy.tensor(idx)) ** 2).sum(), x, w)
    _grads(lambda lib, a, b: (a.scatter_add(1, idx if lib is torch else lazy.tensor(idx), b[:2, :3]) ** 2).sum(),
           x, w)
    u = torch.tensor([[0, 4, 2], [1, 3, 5]])
    _grads(lambda lib, a, b: (a.scatter(1, u if lib is torch else lazy.tensor(u), b[:2, :3]) ** 2).sum(), x, w)
    _grads(lambda lib, a, b: (a.sort(1).values * b).sum(), x, w)
    _grads(lambda lib, a, b: (a.topk(2, 0).values ** 2).sum(), x, w)
    _grads(lambda lib, a, b: (a.cumsum(1) * b).sum(), x, w)
    _grads(lambda lib, a, b: (a.cummax(0).values * b).sum(), x, w)
    pos = rnd(4, 5).abs() + 0.5
    _grads(lambda lib, a: (a.cumprod(1) ** 2).sum(), pos)


def test_embedding_is_a_gather_with_the_padding_rows_gradient_zero():
    w = rnd(50, 8)
    idx = torch.tensor([[1, 0, 49], [0, 0, 3]])
    tw = w.clone().requires_grad_()
    lw = lazy.tensor(w).requires_grad_()
    t = torch.nn.functional.embedding(idx, tw, padding_idx=0)
    l = lazy.nn.functional.embedding(lazy.tensor(idx), lw, padding_idx=0)
    same(l.detach(), t.detach())
    (t * t).sum().backward()
    (l * l).sum().backward()
    torch.testing.assert_close(lw.grad.torch(), tw.grad)


def test_indexed_ops_triton(backend):
    x = rnd(4, 6)
    lx = lazy.tensor(x)
    same(lx[:, [-1, 0]], x[:, [-1, 0]])
    same(lx.sort(1).values, x.sort(1).values)
    same(lx.cumsum(0), x.cumsum(0))
    same((lx * 2)[lx > 0], (x * 2)[x > 0])


def test_a_gather_runs_between_fused_kernels():
    x = lazy.tensor(rnd(8, 16))
    idx = lazy.tensor(torch.tensor([3, 1, 7]))
    ks = kernels_of(lambda: ((x * 2 + 1)[idx].exp() + 1).realize())
    # x*2+1 (the gathered input is computed first), the index counted from the end where negative,
    # the gather, exp+1 over its result
    assert [getattr(k, "op", "kernel") for k in ks] == ["kernel", "kernel", "gather", "kernel"]


def test_cumprod_gradient_divides_by_the_input_a_listed_difference():
    """README: where an input of cumprod is 0 its gradient is not finite here (torch's is)."""
    x = lazy.tensor([2.0, 0.0, 3.0]).requires_grad_()
    x.cumprod(0).sum().backward()
    g = x.grad.torch()
    assert torch.isfinite(g[0]) and not torch.isfinite(g[1:]).all()
    t = torch.tensor([2.0, 0.0, 3.0], requires_grad=True)
    t.cumprod(0).sum().backward()
    assert torch.isfinite(t.grad).all()
