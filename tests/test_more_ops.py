"""The ops beyond the core API against torch: closeness and equality, more elementwise math
(sinh, cosh, frac, signbit, nan_to_num, logit, hypot, logaddexp, xlogy), reductions (count_nonzero,
aminmax, var_mean, std_mean, norm), structure (diagonal, tensor_split, tril, triu, roll, tile) and
vector products (outer, dot, mv).

Values, dtypes and shapes match torch over odd sizes, 0-d, empty and non-contiguous inputs,
broadcasting and negative dims; gradients match torch autograd (edge points included); views
alias their base like torch's and copies do not; the elementwise ones fuse into one kernel; bad
input raises at the call, naming the op.

Every test runs on the compiled C backend and on the reference interpreter; test_triton_backend
runs a few on the Triton backend (its interpreter on CPU, which is slow).
"""

import math
import os

import pytest
import torch
from conftest import kernels_of
from torch.testing import assert_close

import lazy

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # see tests/test_autograd.py: set before triton is imported

INF, NAN = math.inf, math.nan


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        triton = metafunc.function.__name__ == "test_triton_backend"
        metafunc.parametrize("backend", ["triton"] if triton else ["c", "interp"], indirect=True)


@pytest.fixture(autouse=True)
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    _g.manual_seed(0)  # each test's data does not depend on which tests ran before it
    return request.param


_g = torch.Generator().manual_seed(0)


def rnd(*shape, lo=-3.0, hi=3.0, dtype=torch.float32):
    x = torch.rand(shape, generator=_g, dtype=torch.float64) * (hi - lo) + lo
    if dtype == torch.bool:
        return x > 0
    return (x if dtype.is_floating_point else x.round()).to(dtype)


def same(lz, ref, **kw):
    """lazy result == torch result: value (NaN where torch has NaN), shape and dtype."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(lz, (tuple, list)) and len(lz) == len(ref), (lz, ref)
        assert type(lz).__name__ == type(ref).__name__, (type(lz), type(ref))
        for a, b in zip(lz, ref):
            same(a, b, **kw)
        return
    if not isinstance(ref, torch.Tensor):
        assert type(lz) is type(ref) and lz == ref, (lz, ref)
        return
    assert isinstance(lz, lazy.Tensor), type(lz)
    assert lz.dtype is lazy.dtypes.as_dtype(ref.dtype), (lz.dtype, ref.dtype)
    assert tuple(lz.shape) == tuple(ref.shape), (tuple(lz.shape), tuple(ref.shape))
    assert_close(lz.torch(), ref, equal_nan=True, **kw)


def lib(x):
    return torch if isinstance(x, torch.Tensor) else lazy


def check_grad(fn, *inputs, atol=1e-5, rtol=1e-4, wrt=None):
    """`fn` builds the same program from torch and from lazy tensors; its outputs and the gradients
    of <outputs, random cotangents> for the float inputs (or `wrt`) match torch's."""
    wrt = [i for i, t in enumerate(inputs) if t.is_floating_point()] if wrt is None else list(wrt)
    tx = [t.detach().clone().requires_grad_(i in wrt) for i, t in enumerate(inputs)]
    touts = fn(*tx)
    touts = touts if isinstance(touts, (tuple, list)) else (touts,)
    cots = [rnd(*o.shape, dtype=o.dtype) for o in touts]
    tg = torch.autograd.grad(touts, [tx[i] for i in wrt], cots, allow_unused=True)
    lx = [lazy.tensor(t.detach()) for t in inputs]
    for i in wrt:
        lx[i].requires_grad_()
    louts = fn(*lx)
    louts = louts if isinstance(louts, (tuple, list)) else (louts,)
    lg = lazy.autograd.grad(louts, [lx[i] for i in wrt], [lazy.tensor(c) for c in cots], allow_unused=True)
    for lo, to in zip(louts, touts):
        same(lo, to.detach(), atol=atol, rtol=rtol)
    for k, (a, b) in enumerate(zip(lg, tg)):
        assert (a is None) == (b is None), (k, a, b)
        if b is not None:
            same(a, b, atol=atol, rtol=rtol)


SHAPES = [(), (1,), (7,), (1023,), (3, 5), (0,), (4, 0)]


# ---------------------------------------------------------------- elementwise, one operand

UNARY = {  # name: (torch function, input range)
    "sinh": (torch.sinh, (-5, 5)),
    "cosh": (torch.cosh, (-5, 5)),
    "frac": (torch.frac, (-5, 5)),
    "signbit": (torch.signbit, (-2, 2)),
    "nan_to_num": (torch.nan_to_num, (-2, 2)),
    "logit": (torch.logit, (0, 1)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float32_shapes(name):
    fn, (lo, hi) = UNARY[name]
    for shape in SHAPES:
        t = rnd(*shape, lo=lo, hi=hi)
        same(getattr(lazy.tensor(t), name)(), fn(t))
        same(getattr(lazy, name)(lazy.tensor(t)), fn(t))
    t = rnd(9, 5, lo=lo, hi=hi).T  # a transposed (non-contiguous) input
    same(getattr(lazy.tensor(t), name)(), fn(t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64,
                                   torch.uint8, torch.bool])
def test_unary_dtypes(dtype):
    for name, (fn, (lo, hi)) in UNARY.items():
        t = rnd(33, lo=lo if dtype != torch.uint8 else 0, hi=hi, dtype=dtype)
        if name == "frac" and not dtype.is_floating_point:
            with pytest.raises(TypeError, match=r"frac: expected a floating point tensor, got lazy\."):
                lazy.tensor(t).frac()
            continue
        if dtype in (torch.float16, torch.bfloat16) and name in ("sinh", "cosh", "logit"):
            # lazy rounds a fused half computation once (README); torch's logit rounds x / (1 - x)
            # to the half type before the log, 2% off near 0.5
            same(getattr(lazy.tensor(t), name)(), fn(t.float()).to(dtype))
        else:
            same(getattr(lazy.tensor(t), name)(), fn(t))


def test_sinh_cosh_accuracy():
    """Relative error of a few float32 ulps near 0 (no e^x - e^-x cancellation) and up to the
    overflow edge, where e^x alone overflows before sinh and cosh do."""
    t = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-8, -3e-6, 1e-4, 0.01, -0.3, 1.0, 5.0, 19.9, 20.1, -50.0,
                      88.0, 89.0, 89.4, -89.4, 89.5, 1e4, INF, -INF, NAN])
    x = lazy.tensor(t)
    for name in ("sinh", "cosh"):
        want = getattr(t.double(), name)().float()  # correctly rounded, nearly
        got = getattr(x, name)()
        same(got, want, rtol=3e-7, atol=0)
        # and torch's, where torch is right: its AVX2 kernels form e^x / 2, so they overflow to inf
        # at 89.0 (sinh 2.2e38); those inputs are held to the float64 reference above
        ref = getattr(t, name)()
        good = torch.isclose(ref, want, rtol=3e-7, atol=0, equal_nan=True)
        assert good.sum() >= len(t) - 3, ref
        same(getattr(lazy.tensor(t[good]), name)(), ref[good], rtol=3e-7, atol=0)
    assert x.sinh().torch()[1].signbit() and not x.sinh().torch()[0].signbit()  # sinh(-0.0) = -0.0
    h = torch.tensor([1e-3, -2.0, 11.0, 11.1], dtype=torch.float16)  # 11.1: sinh overflows float16
    same(lazy.tensor(h).sinh(), h.sinh())
    same(lazy.tensor(h).cosh(), h.cosh())


def test_nan_to_num_values():
    t = torch.tensor([NAN, INF, -INF, 0.0, -1.5, 3e38])
    x = lazy.tensor(t)
    for kw in ({}, {"nan": 2.0}, {"posinf": 1.0, "neginf": -1.0}, {"nan": -1, "posinf": 1e300, "neginf": 7},
               {"posinf": 0.0}):
        same(x.nan_to_num(**kw), t.nan_to_num(**kw))
        same(lazy.nan_to_num(x, **kw), torch.nan_to_num(t, **kw))
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        h = t.to(dt)
        same(lazy.tensor(h).nan_to_num(), h.nan_to_num())  # the dtype's own max and lowest
        same(lazy.tensor(h).nan_to_num(1e6, 1e10, -1e10), h.nan_to_num(1e6, 1e10, -1e10))  # rounded to dtype
    i = torch.tensor([1, -2, 3])
    y = lazy.tensor(i).nan_to_num(nan=5.0)
    same(y, i.nan_to_num(nan=5.0))
    y += 1  # a copy, not an alias
    same(lazy.tensor(i), i)


def test_signbit_frac_special_values():
    t = torch.tensor([-0.0, 0.0, -1e-45, 1e-45, -INF, INF, -2.5, 2.5, -1.0, 7.0])
    same(lazy.tensor(t).signbit(), t.signbit())
    same(lazy.tensor(t.half()).signbit(), t.half().signbit())
    same(lazy.tensor(t[1:].to(torch.int32)).signbit(), t[1:].to(torch.int32).signbit())
    same(lazy.tensor(torch.tensor([NAN])).signbit(), torch.tensor([False]))  # NaN's sign bit: see signbit
    f = torch.tensor([-1.5, 2.25, -0.0, 1e8 + 0.5, -7.75, INF, -INF, NAN, 0.3])
    same(lazy.tensor(f).frac(), f.frac())
    same(lazy.tensor(f.double()).frac(), f.double().frac())


def test_logit_eps_and_edges():
    t = torch.tensor([0.0, 1e-7, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0, -0.1, 1.1, NAN])
    x = lazy.tensor(t)
    for eps in (None, 0.0, 0.1, 1e-6, 0.6, -0.1):
        same(x.logit(eps), t.logit(eps))
        same(lazy.logit(x, eps=eps), torch.logit(t, eps=eps))
    for dt in (torch.float16, torch.bfloat16):
        same(lazy.tensor(t.to(dt)).logit(0.1), t.to(dt).logit(0.1))
    i = torch.tensor([0, 1])
    same(lazy.tensor(i).logit(), i.logit())


# ---------------------------------------------------------------- elementwise, two operands

BINARY = {"hypot": torch.hypot, "logaddexp": torch.logaddexp, "xlogy": torch.xlogy}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast_and_shapes(name):
    fn = BINARY[name]
    for sa, sb in [((), ()), ((1,), (1,)), ((7,), (7,)), ((1023,), ()), ((3, 1), (1, 4)), ((7,), (2, 1, 7)),
                   ((0, 3), (1, 3)), ((2, 1, 3), (4, 1))]:
        a, b = rnd(*sa, lo=-20, hi=20), rnd(*sb, lo=0.01 if name == "xlogy" else -20, hi=20)
        same(getattr(lazy.tensor(a), name)(lazy.tensor(b)), fn(a, b))
        same(getattr(lazy, name)(lazy.tensor(a), lazy.tensor(b)), fn(a, b))
    a, b = rnd(9, 5), rnd(5, 9, lo=0.5).T  # transposed inputs
    same(getattr(lazy.tensor(a.T), name)(lazy.tensor(b.T)), fn(a.T, b.T))
    same(getattr(lazy.tensor(a), name)(lazy.tensor(b)), fn(a, b))


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("da,db", [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                                   (torch.float64, torch.float32), (torch.int64, torch.float32),
                                   (torch.float16, torch.float32), (torch.int32, torch.int32),
                                   (torch.bool, torch.bool)])
def test_binary_dtypes(name, da, db):
    fn = BINARY[name]
    a, b = rnd(33, lo=0, hi=5, dtype=da), rnd(33, lo=0.5, hi=5, dtype=db)
    if name != "xlogy" and not (da.is_floating_point or db.is_floating_point):
        with pytest.raises(TypeError, match=f"{name}: expected floating point tensors, got lazy"):
            getattr(lazy.tensor(a), name)(lazy.tensor(b))
        return
    same(getattr(lazy.tensor(a), name)(lazy.tensor(b)), fn(a, b))


def test_binary_special_values():
    a = torch.tensor([0.0, 0.0, -0.0, 3.0, 1e30, 1e-30, -1e-30, 1e-45, INF, INF, -INF, NAN, NAN, 2.0, 65504.0])
    b = torch.tensor([0.0, 2.0, 0.0, -4.0, 1e30, 1e-30, 2e-30, 1e-45, NAN, INF, 1.0, INF, 1.0, 1e-20, 65504.0])
    same(lazy.tensor(a).hypot(lazy.tensor(b)), a.hypot(b), rtol=2.5e-7, atol=0)  # ~2 ulp of C's hypot
    same(lazy.tensor(a.half()).hypot(lazy.tensor(b.half())), a.half().hypot(b.half()))  # 65504: no overflow
    same(lazy.tensor(a).logaddexp(lazy.tensor(b)), a.logaddexp(b))
    c = torch.tensor([INF, -INF, INF, -INF, 1.0, -INF, 1e4, -1e4, 0.0])
    d = torch.tensor([INF, -INF, -INF, INF, NAN, 1.0, 1e4 + 1, -1e4, -100.0])
    same(lazy.tensor(c).logaddexp(lazy.tensor(d)), c.logaddexp(d))
    x = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, -3.0, 1.0, 5.0])
    y = torch.tensor([0.0, NAN, INF, -1.0, 0.0, -1.0, 3.0, INF, NAN, 1e-30])
    same(lazy.tensor(x).xlogy(lazy.tensor(y)), x.xlogy(y))


def test_xlogy_python_numbers():
    t = rnd(6, lo=0, hi=3)
    x = lazy.tensor(t)
    same(lazy.xlogy(2, x), torch.xlogy(2, t))
    same(lazy.xlogy(x, 3.0), torch.xlogy(t, 3.0))
    same(lazy.xlogy(0, x - 1), torch.xlogy(0, t - 1))
    same(x.xlogy(2), t.xlogy(2))
    i = torch.tensor([0, 1, 2])
    same(lazy.tensor(i).xlogy(3), i.xlogy(3))
    same(lazy.xlogy(lazy.tensor(i), 2.5), torch.xlogy(i, 2.5))
    same(lazy.xlogy(lazy.tensor(t.half()), 2.0), torch.xlogy(t.half(), 2.0))
    same(lazy.xlogy(2, t), torch.xlogy(2, t))  # a torch tensor operand is wrapped, like elsewhere


# ---------------------------------------------------------------- closeness and equality

@pytest.mark.parametrize("kw", [{}, {"rtol": 0.1}, {"atol": 0.5}, {"rtol": 0, "atol": 0}, {"equal_nan": True},
                                {"rtol": 1e-3, "atol": 1e-3, "equal_nan": True}], ids=str)
def test_isclose_allclose(kw):
    a = torch.tensor([1.0, 1.0, 100.0, 0.0, INF, INF, -INF, NAN, NAN, 1e-9, 2.0, 1e-6])
    b = torch.tensor([1.0 + 1e-6, 1.1, 100.001, 1e-9, INF, -INF, -INF, NAN, 1.0, 0.0, 2.4, 2e-6])
    same(lazy.tensor(a).isclose(lazy.tensor(b), **kw), a.isclose(b, **kw))
    same(lazy.isclose(lazy.tensor(b), lazy.tensor(a), **kw), torch.isclose(b, a, **kw))
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        same(lazy.tensor(a.to(dt)).isclose(lazy.tensor(b.to(dt)), **kw), a.to(dt).isclose(b.to(dt), **kw))
    for dt in (torch.int64, torch.uint8, torch.bool) if "atol" in kw else (torch.int32,):
        i, j = torch.tensor([0, 1, 100, 200, 3, 7]).to(dt), torch.tensor([0, 2, 101, 199, 3, 9]).to(dt)
        same(lazy.tensor(i).isclose(lazy.tensor(j), **kw), i.isclose(j, **kw))
    ref = torch.allclose(a[:4], b[:4], **kw)
    assert lazy.tensor(a[:4]).allclose(lazy.tensor(b[:4]), **kw) is ref
    assert lazy.allclose(lazy.tensor(a[:4]), lazy.tensor(b[:4]), **kw) is ref


def test_isclose_shapes_and_views():
    for sa, sb in [((), ()), ((3, 1), (1, 4)), ((7,), (2, 1, 7)), ((0, 3), (1, 3)), ((1023,), (1023,))]:
        a = rnd(*sa)
        b = a + rnd(*sb, lo=-1e-5, hi=1e-5)
        same(lazy.tensor(a).isclose(lazy.tensor(b)), a.isclose(b))
        assert lazy.tensor(a).allclose(lazy.tensor(b)) is torch.allclose(a, b)
    a = rnd(5, 9)
    same(lazy.tensor(a.T).isclose(lazy.tensor(a.T * 1.00001)), a.T.isclose(a.T * 1.00001))
    assert lazy.tensor(a).allclose(lazy.tensor(a), rtol=0, atol=0) is True
    assert lazy.ones(0).allclose(lazy.ones(0)) is True


def test_equal():
    t = rnd(4, 5)
    x = lazy.tensor(t)
    cases = [(x, x * 1, t, t * 1), (x, x + 1e-6, t, t + 1e-6), (x, x[:3], t, t[:3]),
             (x, x.reshape(5, 4), t, t.reshape(5, 4)), (x.T, x.T.contiguous(), t.T, t.T.contiguous())]
    for a, b, ta, tb in cases:
        assert a.equal(b) is torch.equal(ta, tb)
        assert lazy.equal(a, b) is torch.equal(ta, tb)
    pairs = [(torch.tensor([1.0]), torch.tensor([1])), (torch.tensor([1]), torch.tensor([True])),
             (torch.tensor([2]), torch.tensor([True])), (torch.tensor([0.1]), torch.tensor([0.1], dtype=torch.float64)),
             (torch.tensor([NAN]), torch.tensor([NAN])), (torch.zeros(0, 3), torch.zeros(0, 3)),
             (torch.tensor(1.0), torch.tensor([1.0])), (torch.tensor([1, 2], dtype=torch.int32), torch.tensor([1, 2]))]
    for ta, tb in pairs:
        assert lazy.tensor(ta).equal(lazy.tensor(tb)) is torch.equal(ta, tb), (ta, tb)


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("dim", [None, 0, -1, (0, 2), [1], ()], ids=str)
def test_count_nonzero(dim):
    t = rnd(3, 5, 7, lo=-1, hi=1)
    t[t.abs() < 0.5] = 0
    t[0, 0, 0], t[1, 1, 1] = NAN, -0.0
    for x in (t, t > 0) if dim is not None else (t, t.to(torch.int32), t > 0, t.half()):
        same(lazy.tensor(x).count_nonzero(dim), x.count_nonzero(dim))
        same(lazy.count_nonzero(lazy.tensor(x), dim=dim), torch.count_nonzero(x, dim=dim))
    same(lazy.tensor(t).permute(2, 0, 1).count_nonzero(dim), t.permute(2, 0, 1).count_nonzero(dim))
    if dim is None:
        for e in (torch.zeros(0, 3), torch.tensor(2.0), torch.tensor(0)):
            same(lazy.tensor(e).count_nonzero(), e.count_nonzero())


def test_aminmax():
    t = rnd(4, 7)
    t[2, 3] = NAN
    x = lazy.tensor(t)
    for kw in ({}, {"dim": 1}, {"dim": -2}, {"dim": 0, "keepdim": True}, {"keepdim": True}, {"dim": None}):
        same(x.aminmax(**kw), t.aminmax(**kw))
        same(lazy.aminmax(x, **kw), torch.aminmax(t, **kw))
    same(x.T.aminmax(dim=1), t.T.aminmax(dim=1))
    for dt in (torch.int32, torch.uint8, torch.bool, torch.bfloat16):
        i = rnd(5, 1023, lo=0, hi=100, dtype=dt)
        same(lazy.tensor(i).aminmax(), i.aminmax())
        same(lazy.tensor(i).aminmax(dim=-1), i.aminmax(dim=-1))
    s = torch.tensor(2.5)
    for kw in ({}, {"dim": 0}, {"dim": -1, "keepdim": True}):
        same(lazy.tensor(s).aminmax(**kw), s.aminmax(**kw))
    e = torch.zeros(0, 3)
    same(lazy.tensor(e).aminmax(dim=1), e.aminmax(dim=1))
    r = x.aminmax(dim=1)
    assert r._fields == ("min", "max") and r.min is r[0] and r.max is r[1] and repr(r).startswith("aminmax(min=")


@pytest.mark.filterwarnings("ignore:var_mean.*degrees of freedom:UserWarning",
                            "ignore:std_mean.*degrees of freedom:UserWarning")
def test_var_mean_std_mean():
    t = rnd(4, 6, 3)
    x = lazy.tensor(t)
    for name in ("var_mean", "std_mean"):
        lf, tf = getattr(lazy, name), getattr(torch, name)
        for args, kw in [((), {}), ((1,), {}), ((1, True), {}), ((True,), {}), ((-1, False, True), {}),
                         ((), {"dim": (0, 2), "correction": 0, "keepdim": True}), ((), {"dim": 1, "correction": 2}),
                         ((), {"dim": [0], "unbiased": False}), ((), {"dim": None, "keepdim": True})]:
            same(lf(x, *args, **kw), tf(t, *args, **kw))
        same(lf(x.permute(2, 0, 1), 0), tf(t.permute(2, 0, 1), 0))
        for dt in (torch.bfloat16, torch.float64):
            same(lf(lazy.tensor(t.to(dt)), 1), tf(t.to(dt), 1))
        same(lf(lazy.tensor(torch.tensor(1.5))), tf(torch.tensor(1.5)))  # N - correction = 0: NaN
        same(lf(lazy.tensor(torch.zeros(0, 3)), 0), tf(torch.zeros(0, 3), 0))
        assert type(lf(x)) is tuple


NORMS = ["fro", 1, INF, -INF, 0, 3, 0.5, -1]  # p=None and p=2 build the same graph as 'fro'


@pytest.mark.parametrize("p", NORMS, ids=str)
def test_norm(p):
    t = rnd(3, 5, 7)
    t[1, 2, :] = 0.0
    t[0, 0, 0] = 0.0
    x = lazy.tensor(t)
    dims = [None, -1, (0, 2), [1, 2]] if p != "fro" else [None, 1, (-1, 0)]
    for k, dim in enumerate(dims):
        same(x.norm(p, dim, k % 2 == 1), t.norm(p, dim, k % 2 == 1))
    same(lazy.norm(x, p=p, dim=1), torch.norm(t, p=p, dim=1))
    if p == "fro":
        same(x.norm(None, 1), t.norm(None, 1))
        same(x.norm(2, 1), t.norm(2, 1))
    same(x.transpose(0, 2).norm(p, dim=0), t.transpose(0, 2).norm(p, dim=0))
    s = rnd(1023)
    same(lazy.tensor(s).norm(p), s.norm(p))
    same(lazy.tensor(s[0]).norm(p), s[0].norm(p))  # 0-d
    h = t.to(torch.float16 if p in (1, 3, 0, INF) else torch.bfloat16)
    same(lazy.tensor(h).norm(p, -1), h.norm(p, -1))
    e = torch.zeros(0, 3)
    if p not in (INF, -INF, -1):  # no identity: an error (test_error_messages)
        same(lazy.tensor(e).norm(p, dim=0), e.norm(p, dim=0))
    same(lazy.tensor(e).norm(p, dim=1), e.norm(p, dim=1))


def test_norm_dtype_and_range():
    t = rnd(4, 5)
    same(lazy.tensor(t).norm(dtype=lazy.float64), t.norm(dtype=torch.float64))
    same(lazy.tensor(t.half()).norm(dim=1, dtype=torch.float32), t.half().norm(dim=1, dtype=torch.float32))
    big = torch.tensor([1e20, 1e20, 3.0])  # squares overflow in torch too: no rescaling
    same(lazy.tensor(big).norm(), big.norm())
    same(lazy.tensor(big).norm(1), big.norm(1))
    tiny = torch.tensor([1e-30, 1e-30])
    same(lazy.tensor(tiny).norm(), tiny.norm())


# ---------------------------------------------------------------- structure: views

def test_diagonal():
    t = rnd(3, 4, 5)
    x = lazy.tensor(t)
    views = ((x, t), (x.transpose(0, 2), t.transpose(0, 2)), (x[:, 1:, ::2], t[:, 1:, ::2]))
    for k, args in enumerate([(), (1,), (-2,), (9,), (-9,), (0, 1, 2), (1, -1, 0), (-2, 2, 1), (0, -1, -2)]):
        a, b = views[k % 3]
        same(a.diagonal(*args), b.diagonal(*args))
        assert a.diagonal(*args).stride() == b.diagonal(*args).stride()
    same(lazy.diagonal(x, offset=1, dim1=2, dim2=0), torch.diagonal(t, offset=1, dim1=2, dim2=0))
    for shape in [(1, 1), (7, 1), (1, 7), (0, 3), (3, 0), (33, 33)]:
        s = rnd(*shape)
        same(lazy.tensor(s).diagonal(), s.diagonal())
        same(lazy.tensor(s).diagonal(-1), s.diagonal(-1))
    b = rnd(3, 3, dtype=torch.bool)
    same(lazy.tensor(b).diagonal(), b.diagonal())


def test_diagonal_is_a_view():
    t = torch.arange(20.0).reshape(4, 5)
    x = lazy.tensor(t.clone())
    d, td = x.diagonal(1), t.diagonal(1)
    d.mul_(-1)  # writes through to the base
    td.mul_(-1)
    same(x, t)
    x[1:, :] += 100  # and base writes show in the view
    t[1:, :] += 100
    same(d, td)
    e, te = x.T.diagonal(-2), t.T.diagonal(-2)
    e[0] = 0.5
    te[0] = 0.5
    same(x, t)
    assert d._base is x and e._base is x


def test_tensor_split():
    t = torch.arange(7 * 4.0).reshape(7, 4)
    x = lazy.tensor(t)
    for args in [(3,), (10,), ([1, 5],), ([5, 1],), ([-2, 10],), ((-10, 3),), ([],), (2, 1), ([1], -1), (3, 0),
                 (torch.tensor([1, 3]),), (torch.tensor(3),), (lazy.tensor([2, 5]),)]:
        targs = tuple(a.torch() if isinstance(a, lazy.Tensor) else a for a in args)
        got, want = x.tensor_split(*args), t.tensor_split(*targs)
        assert isinstance(got, tuple)
        same(list(got), list(want))
        for a, b in zip(got, want):
            assert a.stride() == b.stride()
    same(list(lazy.tensor_split(x, 3, dim=1)), list(torch.tensor_split(t, 3, dim=1)))
    same(list(x.T.tensor_split(3)), list(t.T.tensor_split(3)))
    e = torch.zeros(0, 2)
    same(list(lazy.tensor(e).tensor_split(3)), list(e.tensor_split(3)))
    v = torch.arange(1023)
    same(list(lazy.tensor(v).tensor_split(5)), list(v.tensor_split(5)))


def test_tensor_split_pieces_are_views():
    t = torch.arange(12.0).reshape(3, 4)
    x = lazy.tensor(t.clone())
    pieces, tp = x.tensor_split([1, 3], dim=1), t.tensor_split([1, 3], dim=1)
    pieces[1].add_(10)
    tp[1].add_(10)
    pieces[2][0] = -1.0
    tp[2][0] = -1.0
    same(x, t)
    x.mul_(2)
    t.mul_(2)
    same(list(pieces), list(tp))
    assert all(p._base is x for p in pieces)


# ---------------------------------------------------------------- structure: copies

def test_tril_triu():
    t = rnd(3, 4, 5)
    t[0, 0, 4] = NAN
    x = lazy.tensor(t)
    for k in (0, 1, -3, 10, -10):
        for name in ("tril", "triu"):
            same(getattr(x, name)(k), getattr(t, name)(k))
    for name in ("tril", "triu"):
        same(getattr(x.transpose(1, 2), name)(-1), getattr(t.transpose(1, 2), name)(-1))
        same(getattr(lazy, name)(x, diagonal=2), getattr(torch, name)(t, diagonal=2))
    for shape in [(1, 1), (7, 1), (1, 1023), (0, 3), (2, 0, 0), (33, 31)]:
        s = rnd(*shape)
        same(lazy.tensor(s).tril(), s.tril())
    for dt in (torch.bool, torch.int32, torch.uint8, torch.float16, torch.bfloat16):
        s = rnd(4, 4, lo=0, hi=9, dtype=dt)
        same(lazy.tensor(s).triu(-1), s.triu(-1))


def test_roll():
    t = torch.arange(3 * 4 * 5.0).reshape(3, 4, 5)
    x = lazy.tensor(t)
    for args in [(1,), (-1,), (61,), (0,), (2, 1), (-7, -1), ((1, 2), (0, 2)), ([3, -1, 2], [2, 1, 0]),
                 ((1, 1), (0, 0)), (4, 1), (13, 0)]:
        same(x.roll(*args), t.roll(*args))
        same(x.transpose(0, 2).roll(*args), t.transpose(0, 2).roll(*args))
    same(lazy.roll(x, shifts=2, dims=-2), torch.roll(t, shifts=2, dims=-2))
    for s in (torch.tensor(1.5), torch.zeros(0, 3), torch.arange(1023), torch.arange(7).bool()):
        same(lazy.tensor(s).roll(3), s.roll(3))
    same(lazy.tensor(torch.zeros(0, 3)).roll(1, 0), torch.zeros(0, 3).roll(1, 0))


def test_tile():
    t = rnd(3, 4)
    x = lazy.tensor(t)
    for reps in [(2,), (2, 1), (1, 3), (2, 1, 3), (0, 2), (), (1, 1, 1, 1)]:
        same(x.tile(reps), t.tile(reps))
        same(x.T.tile(reps), t.T.tile(reps))
        same(lazy.tile(x, reps), torch.tile(t, reps))
    same(x.tile(2, 3), t.tile(2, 3))
    same(x.tile(dims=(2,)), t.tile(dims=(2,)))
    s = torch.tensor(1.5)
    same(lazy.tensor(s).tile(()), s.tile(()))
    same(lazy.tensor(s).tile((3,)), s.tile((3,)))
    b = rnd(5, dtype=torch.bool)
    same(lazy.tensor(b).tile((2, 2)), b.tile((2, 2)))


def test_copies_do_not_alias():
    t = torch.arange(12.0).reshape(3, 4)
    x = lazy.tensor(t.clone())
    outs = [x.tril(), x.triu(1), x.roll(1, 0), x.roll(0), x.tile((1,)), x.tile((2, 1)), x.nan_to_num(),
            x[0].outer(x[1])]
    for o in outs:
        o += 1000
        assert o._base is None
    same(x, t)


# ---------------------------------------------------------------- vector products

def test_outer_dot_mv():
    for n, m in [(1, 1), (7, 1023), (5, 3), (0, 4)]:
        a, b, mat = rnd(n), rnd(m), rnd(m, n)
        la, lb, lm = lazy.tensor(a), lazy.tensor(b), lazy.tensor(mat)
        same(la.outer(lb), a.outer(b))
        same(lazy.outer(la, lb), torch.outer(a, b))
        same(lazy.ger(la, lb), torch.ger(a, b))
        same(la.dot(la), a.dot(a), rtol=1e-5, atol=1e-4)
        same(lazy.dot(lb, lb), torch.dot(b, b), rtol=1e-5, atol=1e-4)
        same(lm.mv(la), mat.mv(a), rtol=1e-5, atol=1e-4)
        same(lazy.mv(lm.T.contiguous().T, la), torch.mv(mat, a), rtol=1e-5, atol=1e-4)
    mat, v = rnd(6, 5), rnd(6)
    same(lazy.tensor(mat).T.mv(lazy.tensor(v)), mat.T.mv(v), rtol=1e-5, atol=1e-5)  # a transposed matrix
    same(lazy.tensor(mat)[:, 1].dot(lazy.tensor(v)), mat[:, 1].dot(v))  # a strided vector
    for da, db in [(torch.int64, torch.float32), (torch.bool, torch.bool), (torch.int32, torch.int32),
                   (torch.float16, torch.float16)]:
        a, b = rnd(4, lo=-5, hi=5, dtype=da), rnd(3, lo=-5, hi=5, dtype=db)
        same(lazy.tensor(a).outer(lazy.tensor(b)), a.outer(b))
    for dt in (torch.int64, torch.int32, torch.float16, torch.float64):
        a, mat = rnd(9, lo=-5, hi=5, dtype=dt), rnd(3, 9, lo=-5, hi=5, dtype=dt)
        same(lazy.tensor(a).dot(lazy.tensor(a)), a.dot(a))
        same(lazy.tensor(mat).mv(lazy.tensor(a)), mat.mv(a))


# ---------------------------------------------------------------- gradients

GRADS = {  # name: (fn, input generators)
    "sinh": (lambda x: x.sinh(), [lambda: rnd(3, 7, lo=-25, hi=25)]),
    "cosh": (lambda x: x.cosh(), [lambda: rnd(3, 7, lo=-25, hi=25)]),
    "sinh_cosh_small": (lambda x: x.sinh() + x.cosh() * 3,
                        [lambda: torch.tensor([0.0, -0.0, 1e-30, 1e-8, -3e-6, 1e-3, 0.5, 20.0, -87.9, 88.0])]),
    "sinh_cosh_0d": (lambda x: x.sinh() * x.cosh(), [lambda: torch.tensor(0.7)]),
    "frac": (lambda x: x.frac() * x, [lambda: rnd(3, 7, lo=-4, hi=4)]),
    "nan_to_num": (lambda x: (x * 2).nan_to_num(1.0, 2.0, -3.0), [lambda: torch.tensor([NAN, INF, -INF, 1.5, -2.0])]),
    "logit": (lambda x: x.logit(), [lambda: torch.tensor([0.0, 1e-6, 0.2, 0.5, 0.9, 1.0])]),
    "logit_eps": (lambda x: x.logit(0.1) + x.logit(0.6), [lambda: torch.tensor([0.0, 0.05, 0.1, 0.5, 0.9, 0.95, 1.0])]),
    "hypot": (lambda a, b: a.hypot(b), [lambda: rnd(3, 1, lo=-1e3, hi=1e3), lambda: rnd(1, 4)]),
    "hypot_edges": (lambda a, b: a.hypot(b), [lambda: torch.tensor([0.0, 0.0, 3.0, 1e-30, 1e30, -2.0]),
                                              lambda: torch.tensor([0.0, 2.0, -4.0, -1e-30, 1e30, 0.0])]),
    "hypot_transposed": (lambda a, b: a.T.hypot(b), [lambda: rnd(4, 3), lambda: rnd(3, 4)]),
    "logaddexp": (lambda a, b: a.logaddexp(b), [lambda: rnd(3, 5, lo=-30, hi=30), lambda: rnd(5, lo=-30, hi=30)]),
    "logaddexp_edges": (lambda a, b: a.logaddexp(b), [lambda: torch.tensor([1.0, 0.0, INF, -INF, -1e4, 50.0]),
                                                      lambda: torch.tensor([1.0, 50.0, INF, -INF, 3.0, -INF])]),
    "xlogy": (lambda a, b: a.xlogy(b), [lambda: rnd(3, 4), lambda: rnd(4, lo=0.1, hi=5)]),
    "xlogy_edges": (lambda a, b: a.xlogy(b), [lambda: torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 2.0, 0.0, 3.0]),
                                              lambda: torch.tensor([2.0, 0.5, NAN, 3.0, -1.0, NAN, 0.0, 1e-30, -2.0])]),
    "aminmax": (lambda x: tuple(x.aminmax(dim=1)), [lambda: torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])]),
    "aminmax_all": (lambda x: tuple(x.aminmax(keepdim=True)), [lambda: torch.tensor([[1.0, 3.0], [0.0, 3.0]])]),
    "var_mean": (lambda x: lib(x).var_mean(x, 1), [lambda: rnd(3, 7)]),
    "std_mean": (lambda x: lib(x).std_mean(x, (0, 2), correction=0, keepdim=True),
                 [lambda: torch.cat([rnd(2, 3, 4), torch.ones(2, 1, 4)], 1)]),
    "diagonal": (lambda x: x.diagonal(1, -1, 0) * 2, [lambda: rnd(4, 3, 5)]),
    "tensor_split": (lambda x: tuple(p * (i + 1) for i, p in enumerate(x.tensor_split([1, 3], 1))),
                     [lambda: rnd(3, 7)]),
    "tril_triu": (lambda x: x.tril(1) * 2 + x.triu(-1).exp(), [lambda: rnd(2, 4, 5)]),
    "tril_transposed": (lambda x: x.mT.tril(-1), [lambda: rnd(2, 5, 4)]),
    "roll": (lambda x: x.roll((2, -1), (0, 1)) * x, [lambda: rnd(4, 5)]),
    "roll_flat": (lambda x: x.roll(5), [lambda: rnd(3, 4)]),
    "tile": (lambda x: x.tile((2, 1, 3)), [lambda: rnd(3, 2)]),
    "outer": (lambda a, b: a.outer(b), [lambda: rnd(5), lambda: rnd(7)]),
    "dot": (lambda a, b: a.dot(b), [lambda: rnd(33), lambda: rnd(33)]),
    "mv": (lambda m, v: m.mv(v), [lambda: rnd(6, 5), lambda: rnd(5)]),
    "mv_empty": (lambda m, v: m.mv(v), [lambda: rnd(4, 0), lambda: rnd(0)]),  # zeros, empty gradients
}


@pytest.mark.parametrize("name", sorted(GRADS))
def test_gradients(name):
    fn, gens = GRADS[name]
    check_grad(fn, *[g() for g in gens])


@pytest.mark.parametrize("p", NORMS, ids=str)
def test_norm_gradients(p):
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, -4.0, 0.5], [0.0, 2.0, 0.0], [2.0, 2.0, -2.0]])
    check_grad(lambda t: t.norm(p, dim=1), x)
    check_grad(lambda t: t.norm(p, dim=(0, 1), keepdim=True), x)
    check_grad(lambda t: t.norm(p), rnd(2, 3, 4))


def test_non_differentiable_results():
    """count_nonzero and norm(p=0) have no gradient in torch; autograd finds none here either."""
    x = lazy.tensor(torch.tensor([0.0, 1.5, -2.0])).requires_grad_()
    (g,) = lazy.autograd.grad([x.norm(0) + x.sum() * 0], [x], allow_unused=True)
    same(g, torch.zeros(3))
    check_grad(lambda t: t.norm(0, dim=0), torch.tensor([[0.0, 1.5], [-2.0, 0.0]]))
    assert x.count_nonzero().dtype is lazy.int64 and not x.count_nonzero().requires_grad
    assert not x.isclose(x).requires_grad and not x.signbit().requires_grad


# ---------------------------------------------------------------- fusion

def test_elementwise_ops_fuse_into_one_kernel(backend):
    if backend == "interp":
        pytest.skip("the interpreter runs the graph without kernels")
    a, b = lazy.tensor(rnd(33, 65)), lazy.tensor(rnd(33, 65, lo=0.1))
    for fn in (lambda: a.isclose(b), lambda: a.tril(1), lambda: a.triu(-2).exp(), lambda: a.sinh() * b.cosh(),
               lambda: a.hypot(b), lambda: a.logaddexp(b) + a.xlogy(b), lambda: a.roll((3, -2), (0, 1)) + 1,
               lambda: b.logit(0.01).nan_to_num(), lambda: a.frac() + a.signbit().float(),
               lambda: a.diagonal().exp(), lambda: a.tile((2, 1)) * 2, lambda: a.T.tril()):
        y = fn() * 1  # a fresh node: nothing realized yet
        assert len(kernels_of(y.realize)) == 1


def test_reductions_fuse(backend):
    if backend == "interp":
        pytest.skip("the interpreter runs the graph without kernels")
    a = lazy.tensor(rnd(17, 129))
    assert len(kernels_of(a.norm(dim=1).realize)) == 1
    assert len(kernels_of(a.count_nonzero(1).realize)) == 1
    assert len(kernels_of((a[0] * 2).dot(a[1] + 1).realize)) == 1


# ---------------------------------------------------------------- errors

def test_error_messages():
    x, v, i = lazy.ones(3, 4), lazy.ones(3), lazy.ones(3, dtype=lazy.int64)
    cases = [
        (TypeError, r"isclose: expected both tensors to have the same dtype, got lazy.float32 and lazy.float64",
         lambda: x.isclose(x.double())),
        (TypeError, r"isclose: expected other to be a tensor, got float", lambda: x.isclose(1.0)),
        (RuntimeError, r"isclose: rtol and atol must be >= 0, got rtol=-1", lambda: x.isclose(x, rtol=-1)),
        (RuntimeError, r"isclose: shapes \(3, 4\) and \(3,\) cannot broadcast: dim -1 has sizes 4 and 3",
         lambda: x.isclose(v)),
        (TypeError, r"allclose: expected both|isclose: expected both", lambda: x.allclose(x.half())),
        (TypeError, r"frac: expected a floating point tensor, got lazy.int64", lambda: i.frac()),
        (TypeError, r"hypot: expected floating point tensors, got lazy.int64 and lazy.int64", lambda: i.hypot(i)),
        (TypeError, r"logaddexp: expected other to be a tensor, got float", lambda: x.logaddexp(1.0)),
        (RuntimeError, r"hypot: shapes \(3, 4\) and \(3,\) cannot broadcast", lambda: x.hypot(v)),
        (TypeError, r"xlogy: expected at least one tensor, got int and float", lambda: lazy.xlogy(1, 2.0)),
        (TypeError, r"nan_to_num: posinf must be a Python number or None, got str", lambda: x.nan_to_num(posinf="a")),
        (TypeError, r"logit: eps must be a float or None, got str", lambda: x.logit("a")),
        (IndexError, r"count_nonzero: dim 2 out of range for a 2-d tensor \(expected -2..1\)",
         lambda: x.count_nonzero(2)),
        (RuntimeError, r"count_nonzero: dim \(0, 0\) names a dim more than once", lambda: x.count_nonzero((0, 0))),
        (TypeError, r"aminmax: dim must be an int, got tuple", lambda: x.aminmax(dim=(0, 1))),
        (RuntimeError, r"aminmax: cannot take the min and max of an empty tensor of shape \(0, 3\)",
         lambda: lazy.zeros(0, 3).aminmax()),
        (IndexError, r"aminmax: cannot reduce over dim 0 of size 0 in a tensor of shape \(0, 3\)",
         lambda: lazy.zeros(0, 3).aminmax(dim=0)),
        (TypeError, r"var_mean: expected a floating point tensor, got lazy.int64", lambda: lazy.var_mean(i)),
        (IndexError, r"std_mean: dim 5 out of range", lambda: lazy.std_mean(x, 5)),
        (TypeError, r"norm: expected a floating point tensor, got lazy.int64", lambda: i.norm()),
        (RuntimeError, r"norm: p='nuc' \(the nuclear norm\) needs a singular value decomposition",
         lambda: x.norm("nuc")),
        (RuntimeError, r"norm: p='abc' is not supported", lambda: x.norm("abc")),
        (RuntimeError, r"norm: p='fro' takes at most 2 dims, got dim=\(0, 1, 2\)",
         lambda: lazy.ones(2, 3, 4).norm("fro", (0, 1, 2))),
        (TypeError, r"norm: p must be a number or a string, got list", lambda: x.norm([1])),
        (RuntimeError, r"norm: cannot take the inf norm over an empty dim of shape \(0, 3\)",
         lambda: lazy.zeros(0, 3).norm(INF, 0)),
        (TypeError, r"norm: dtype lazy.float16 cannot hold lazy.float32 values without narrowing",
         lambda: x.norm(dtype=lazy.float16)),
        (RuntimeError, r"diagonal: expected a tensor with at least 2 dims, got shape \(3,\)", lambda: v.diagonal()),
        (RuntimeError, r"diagonal: dim1 and dim2 are both dim 1 \(expected two different dims\)",
         lambda: x.diagonal(0, 1, -1)),
        (IndexError, r"diagonal: dim 2 out of range for a 2-d tensor", lambda: x.diagonal(0, 0, 2)),
        (TypeError, r"diagonal: offset must be an int, got bool", lambda: x.diagonal(True)),
        (RuntimeError, r"tensor_split: expected a tensor with at least 1 dim, got a 0-d tensor",
         lambda: lazy.tensor(1.0).tensor_split(2)),
        (RuntimeError, r"tensor_split: the number of sections must be greater than 0, got 0",
         lambda: v.tensor_split(0)),
        (TypeError, r"tensor_split: sections must be an int, got float", lambda: v.tensor_split(2.0)),
        (RuntimeError, r"tensor_split: expected indices_or_sections as a 0-d or 1-d int64 tensor, got shape \(1, 1\)",
         lambda: v.tensor_split(torch.tensor([[1]]))),
        (RuntimeError, r"tensor_split: .*dtype lazy.float32", lambda: v.tensor_split(torch.tensor([1.0]))),
        (IndexError, r"tensor_split: dim 2 out of range", lambda: x.tensor_split(2, dim=2)),
        (RuntimeError, r"tril: expected a tensor with at least 2 dims, got shape \(3,\)", lambda: v.tril()),
        (TypeError, r"triu: diagonal must be an int, got float", lambda: x.triu(1.0)),
        (RuntimeError, r"roll: 2 shifts given without dims", lambda: x.roll((1, 2))),
        (RuntimeError, r"roll: 1 shifts and 2 dims given \(expected one shift per dim", lambda: x.roll(1, (0, 1))),
        (RuntimeError, r"roll: 0 shifts and 0 dims given", lambda: x.roll([], [])),
        (IndexError, r"roll: dim 2 out of range for a 2-d tensor", lambda: x.roll(1, 2)),
        (IndexError, r"roll: dims 0 given for a 0-d tensor", lambda: lazy.tensor(1.0).roll(1, 0)),
        (TypeError, r"roll: shifts must be an int, got float", lambda: x.roll(1.0)),
        (RuntimeError, r"tile: repeat counts \(2, -1\) must be >= 0", lambda: x.tile((2, -1))),
        (RuntimeError, r"outer: expected two 1-d tensors, got shapes \(3, 4\) and \(3,\)", lambda: x.outer(v)),
        (TypeError, r"outer: expected vec2 to be a tensor, got list", lambda: v.outer([1, 2])),
        (RuntimeError, r"dot: expected two 1-d tensors, got shapes \(3, 4\) and \(3, 4\)", lambda: x.dot(x)),
        (TypeError, r"dot: expected both vectors to have the same dtype, got lazy.float32 and lazy.int64",
         lambda: v.dot(i)),
        (RuntimeError, r"dot: vectors of 3 and 4 elements \(expected the same number\)", lambda: v.dot(x[0])),
        (TypeError, r"dot: bool vectors are not supported", lambda: v.bool().dot(v.bool())),
        (RuntimeError, r"mv: expected a 2-d matrix and a 1-d vector, got shapes \(3,\) and \(3,\)", lambda: v.mv(v)),
        (RuntimeError, r"mv: shapes \(3, 4\) and \(3,\) cannot be multiplied \(4 != 3\)", lambda: x.mv(v)),
        (TypeError, r"mv: expected the matrix and the vector to have the same dtype, got lazy.float32 and lazy.int64",
         lambda: x.mv(lazy.ones(4, dtype=lazy.int64))),
    ]
    for exc, msg, fn in cases:
        with pytest.raises(exc, match=msg):
            fn()


# ---------------------------------------------------------------- the Triton backend

def test_triton_backend():
    """A few of the composites through Triton (its interpreter without a GPU): values and one kernel."""
    a, b = rnd(5, 33), rnd(5, 33, lo=0.1)
    x, y = lazy.tensor(a), lazy.tensor(b)
    same(x.isclose(x * 1.000001), a.isclose(a * 1.000001))
    same(x.sinh() + y.logit(0.01) + x.hypot(y), a.sinh() + b.logit(0.01) + a.hypot(b))
    same(x.logaddexp(y) * x.xlogy(y), a.logaddexp(b) * a.xlogy(b))
    same(x.tril(1) + x.roll(2, 1), a.tril(1) + a.roll(2, 1))
    same(x.norm(dim=1), a.norm(dim=1))
    same(x.diagonal(2), a.diagonal(2))
    assert len(kernels_of((x.triu() * y.signbit()).realize)) == 1
