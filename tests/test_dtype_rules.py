"""A value's dtype holds where it is used, not only where it is stored (codegen/legalize.py).

Inside one kernel, narrow dtypes compute wider (float16/bfloat16 in float32, int8/uint8 in int32);
legalization makes each narrowing explicit (`round`, `wrap`, casts spelled out) and `verify`
checks every kernel the tests build (conftest sets LAZY_VERIFY). Each case here is compared with
torch on the C backend and on the Triton backend (under Triton's interpreter), with the value used
again in the kernel that computes it: by a cast, a comparison, a reduction or more arithmetic.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
import sympy
import torch
from conftest import kernels_of

import lazy
from codegen.kernel_ir import BufferArg, Expr, Kernel, Reduce, Store
from codegen.legalize import IllegalKernel, legalize, verify


@pytest.fixture(params=["c", "triton"])
def backend(request, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    if request.param == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lazy-cache"))
    return request.param


def same(got, want):
    """Equal values (NaN where torch has NaN, signed zeros aside) and the same dtype."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    torch.testing.assert_close(got.torch(), want, rtol=0, atol=0, equal_nan=True)


def pair(values, dtype: str):
    t = torch.tensor(values, dtype=torch.float64).to(getattr(torch, dtype)) if dtype != "bool" else \
        torch.tensor(values, dtype=torch.bool)
    return lazy.tensor(t.clone()), t


# -- the reported cases ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_argmax_of_a_fused_half_expression_is_an_index(backend, dtype):
    x, tx = pair([0.5, 3.0, 1.0], dtype)
    assert (x * 1.001).argmax().item() == (tx * 1.001).argmax().item() == 1
    assert (x * 1.001).argmin().item() == (tx * 1.001).argmin().item() == 0
    v, i = (x * 1.001).max(0)
    tv, ti = (tx * 1.001).max(0)
    same(v, tv)
    same(i, ti)


def test_argmax_of_scaled_float16_logits(backend):
    rows, classes = (64, 1000) if backend == "c" else (8, 200)
    t = torch.randn(rows, classes, generator=torch.Generator().manual_seed(0)).half()
    got = (lazy.tensor(t) / 0.7).argmax(-1)
    same(got, (t / 0.7).argmax(-1))


def test_float_to_uint8_used_in_the_kernel(backend):
    x, tx = pair([-1.0, 300.0, 200.0, 1e10], "float32")
    same(x.to(lazy.uint8).float(), tx.to(torch.uint8).float())
    assert x.to(lazy.uint8).float().tolist() == [255, 44, 200, 0]
    same(x.to(lazy.uint8).sum(), tx.to(torch.uint8).sum())
    assert x.to(lazy.uint8).sum().item() == 499


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64"])
def test_float_to_int_used_in_the_kernel(backend, dtype):
    vals = [-1.5, 300.7, 200.0, 1e10, -1e10, math.nan, math.inf, -math.inf, 2.0 ** 31, -129.5, 255.9, 3e9]
    for src in ("float32", "float64", "float16", "bfloat16"):
        x, tx = pair(vals, src)
        td = getattr(torch, dtype)
        same(x.to(getattr(lazy, dtype)).double(), tx.to(td).double())
        same(x.to(getattr(lazy, dtype)).sum(), tx.to(td).sum())
        same((x * 2).to(getattr(lazy, dtype)) == 0, (tx * 2).to(td) == 0)


def test_uint8_pow_and_not_wrap_before_use(backend):
    u, tu = pair([4, 3], "uint8")
    assert (u ** u).float().tolist() == (tu ** tu).float().tolist() == [0, 27]
    assert (~u).float().tolist() == (~tu).float().tolist() == [251, 252]


def test_int8_floor_division_by_minus_one_wraps(backend):
    a, ta = pair([-128, 3], "int8")
    assert (a // -1).float().tolist() == (ta // -1).float().tolist() == [-128, -3]


def test_half_values_round_before_a_cast_up(backend):
    h, th = pair([100.0], "float16")
    same((h * 1000).float(), (th * 1000).float())
    assert (h * 1000).float().item() == math.inf
    b, tb = pair([1.0], "bfloat16")
    same((b / 3).double(), (tb / 3).double())
    assert (b / 3).double().item() == 0.333984375


# -- every int dtype x op, used again in the kernel ---------------------------------------------

INT_VALUES = {
    "int8": ([-128, 127, 100, -3, 0, 5, -100, 64], [-1, 2, 100, 7, 3, -2, -100, 2]),
    "uint8": ([0, 255, 200, 3, 1, 17, 128, 16], [1, 2, 100, 7, 3, 255, 2, 16]),
    "int32": ([-2**31, 2**31 - 1, 2**30, -3, 0, 5, -7, 65536], [-1, 2, 4, 7, 3, -2, 2, 65536]),
    "int64": ([-2**63, 2**63 - 1, 2**62, -3, 0, 5, -7, 2**32], [-1, 2, 4, 7, 3, -2, 2, 2**32]),
}
INT_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "floordiv": lambda a, b: a // b,
    "remainder": lambda a, b: a % b,
    "trunc div": lambda a, b: type(a).div(a, b % 4 - 5, rounding_mode="trunc"),  # no 0, no -1 (torch traps)
    "pow": lambda a, b: a ** (b.abs() % 8),
    "neg": lambda a, b: -a,
    "abs": lambda a, b: a.abs(),
    "not": lambda a, b: ~a,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "maximum": lambda a, b: type(a).maximum(a, b) if isinstance(a, torch.Tensor) else lazy.maximum(a, b),
}
INT_USES = {"double": lambda r: r.double(), "> 0": lambda r: r > 0, "amax": lambda r: r.amax(),
            "* 3 // 2": lambda r: r * 3 // 2, "where": lambda r: r.where(_alternate(r), 7)}


def _alternate(r):
    """True, False, True, ... in r's shape, from r's own library: a condition that is not r."""
    lib = torch if isinstance(r, torch.Tensor) else lazy
    return lib.arange(r.numel()).reshape(r.shape) % 2 == 0


@pytest.mark.parametrize("use", list(INT_USES))
@pytest.mark.parametrize("op", list(INT_OPS))
@pytest.mark.parametrize("dtype", list(INT_VALUES))
def test_int_ops_wrap_before_their_value_is_used(backend, dtype, op, use):
    av, bv = INT_VALUES[dtype]
    td = getattr(torch, dtype)
    ta, tb = torch.tensor(av, dtype=td), torch.tensor(bv, dtype=td)
    a, b = lazy.tensor(ta.clone()), lazy.tensor(tb.clone())
    same(INT_USES[use](INT_OPS[op](a, b)), INT_USES[use](INT_OPS[op](ta, tb)))


@pytest.mark.parametrize("dtype,scale", [("uint8", 18), ("int8", -128)])
def test_int8_write_through_a_view_wraps_the_written_value(backend, dtype, scale):
    # an in-place write through a view selects between the new and the old values: a `where` that
    # must take the wrapped product (perf/fuzz.py seed 0 case 96: uint8 x.t().mul_(y) failed verify)
    td = getattr(torch, dtype)
    t = torch.tensor([[1], [6], [7]], dtype=td)
    x = lazy.tensor(t.clone())
    x.t().mul_(scale)
    t.t().mul_(scale)
    same(x, t)


@pytest.mark.parametrize("red", ["sum", "prod"])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("src", ["float16", "int8", "int32", "bool"])
def test_reductions_to_a_narrow_int_dtype(backend, red, dtype, src):
    # sum(dtype=int8) accumulates in int64 and wraps once (perf/fuzz.py seed 1: a sum over int8 of a
    # float16 failed verify)
    x, tx = pair([100.7, 100.0, -3.2, 77.0, 5.5] if src == "float16" else [100, 100, 3, 77, 5], src)
    same(getattr(x, red)(dtype=getattr(lazy, dtype)), getattr(tx, red)(dtype=getattr(torch, dtype)))
    same(getattr(x, red)(0, keepdim=True, dtype=getattr(lazy, dtype)),
         getattr(tx, red)(0, keepdim=True, dtype=getattr(torch, dtype)))


def test_mean_to_an_int_dtype_raises_like_torch():
    t = torch.tensor([1.5, 2.0])
    with pytest.raises(RuntimeError):
        t.mean(dtype=torch.int32)
    with pytest.raises(RuntimeError, match="mean: expected a floating point tensor"):
        lazy.tensor(t).mean(dtype=lazy.int32)


@pytest.mark.parametrize("n", [6, 18, 35, 67])
def test_float64_cast_to_float32_rounds_in_every_position(backend, n):
    # gcc 12 at -O3 turned (double)(float)x into x in the unrolled tail of a loop of a constant trip
    # count (perf/fuzz.py seed 20240601 case 541: 2 of 35 elements); the C renderer turns the SLP
    # vectorizer off in such kernels
    t = torch.linspace(0.1, 3.7, n, dtype=torch.float64)
    x = lazy.tensor(t)
    same(x.to(lazy.float32) / x, t.to(torch.float32) / t)
    same(x.to(lazy.float32).to(lazy.float64), t.to(torch.float32).to(torch.float64))


def test_bfloat16_subnormals_and_pow_edges(backend):
    # the Triton interpreter widened subnormal bfloat16 values wrongly (2**-133 * 13 read as 2**-127)
    # and its pow gave NaN for (-1) ** inf; perf/fuzz.py seed 200 cases 106 and 706
    x, tx = pair([-1.1768e-39, 3e-40, 1e-38, 1.0], "bfloat16")
    same(x * 1.0, tx * 1.0)
    same(x / x[3], tx / tx[3])
    same(x.float(), tx.float())
    same((x * 2).sum(), (tx * 2).sum())
    same(x.float().to(lazy.bfloat16) / 3, tx.float().to(torch.bfloat16) / 3)
    m, tm = pair([[1e-39, 2.0], [3e-40, -1.0]], "bfloat16")
    same(m @ m, tm @ tm)
    for dtype in ("float32", "float16", "bfloat16"):
        b, tb = pair([-1.0, -1.0, 0.5, 2.0, -2.0], dtype)
        e, te = pair([math.inf, -math.inf, math.inf, -math.inf, 3.0], dtype)
        same(b ** e, tb ** te)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_python_numbers_in_half_ops_round_where_torch_rounds_them(backend, dtype):
    # torch keeps a number wide in * and / (opmath) and converts it to the half dtype elsewhere:
    # -2**63 // x divides -inf, giving NaN (perf/fuzz.py seed 200 case 3155)
    x, tx = pair([132.375, -2.5, 0.75], dtype)
    c, tc = pair([True, False, True], "bool")
    big = 1e39 if dtype == "bfloat16" else 70000.0
    for f in (lambda m, v, k: -9223372036854775808 // v, lambda m, v, k: big % v, lambda m, v, k: v // big,
              lambda m, v, k: v % 0.0999, lambda m, v, k: m.where(k, v, big) / 1000,
              lambda m, v, k: m.where(k, 0.0999, v) * 1000):
        same(f(lazy, x, c), f(torch, tx, tc))
    same(x * big / 1e5, (tx.float() * big / 1e5).to(tx.dtype))  # wide in opmath ops, rounded once


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_python_numbers_in_half_add_and_sub_are_rounded(backend, dtype):
    # torch's add kernel converts the number to the half dtype (its * and / keep it in float32):
    # float16 2048 + 1.0003 is 2048 + 1, a tie that rounds to 2048; kept wide it was 2050
    x, tx = pair([2048.0, 256.0, -2048.0, 3.0], dtype)
    s = 1.0003 if dtype == "float16" else 1.003
    for f in (lambda v: v + s, lambda v: v - s, lambda v: s + v, lambda v: s - v, lambda v: v.add(s),
              lambda v: v.sub(-s), lambda v: v.clone().add_(s), lambda v: v * 1.0004):
        same(f(x), f(tx))


def test_promotion_of_three_operands_is_torch_n_ary_rule():
    # dimensioned tensors, 0-d tensors and numbers promote apart, then combine by category: a bool
    # tensor clamped by a 0-d int32 and an int8 tensor is int8 (perf/fuzz.py seed 400 case 2586:
    # folding pairs gave int32); every triple torch's clamp takes, against lazy.dtypes.result_type
    import itertools

    from lazy.dtypes import DTypeError, result_type, to_torch
    from lazy.graph import DTYPES

    keys = [(kind, d) for kind in ("tensor", "0d") for d in DTYPES.values()]
    for a, b, c in itertools.product(keys, repeat=3):
        args = [torch.zeros((1,) if k == "tensor" else (), dtype=to_torch(d)) for k, d in (a, b, c)]
        try:
            want = torch.clamp(*args).dtype
        except (RuntimeError, TypeError):
            continue
        try:
            assert to_torch(result_type(a, b, c)) == want, (a, b, c)
        except DTypeError:
            assert want not in (to_torch(d) for d in DTYPES.values()), (a, b, c)
    x, t = pair([True, False, True], "bool")
    lo, tlo = lazy.tensor(torch.tensor(0, dtype=torch.int32)), torch.tensor(0, dtype=torch.int32)
    hi, thi = pair([1, 0, 1], "int8")
    same(x.clamp(lo, hi), t.clamp(tlo, thi))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_0d_tensor_after_a_half_one_is_taken_wide(backend, dtype):
    # torch's * and / take a 0-d tensor of another dtype in the second place as its own value in
    # float32 (opmath), not rounded to the half dtype: inf / int64 minimum is -inf, not NaN
    # (perf/fuzz.py seed 300 case 2115); in the first place, and in + and -, it converts
    x, tx = pair([1e-3, 2.0, math.inf, -3.5], dtype)
    for s in (torch.tensor(70000), torch.tensor(-9223372036854775808), torch.tensor(1e39, dtype=torch.float64),
              torch.tensor(70000.0), torch.tensor(1.001, dtype=torch.float16)):
        ls = lazy.tensor(s)
        for f in (lambda a, b: a * b, lambda a, b: a / b, lambda a, b: a + b, lambda a, b: a - b,
                  lambda a, b: b * a, lambda a, b: b / a, lambda a, b: a.div(b)):
            same(f(x, ls), f(tx, s))
        y, ty = lazy.tensor(tx.clone()), tx.clone()
        same(y.mul_(ls), ty.mul_(s))


INT16_OPS = {"add_": lambda a, b: a.add_(b), "sub_": lambda a, b: a.sub_(b, alpha=3), "mul_": lambda a, b: a.mul_(b),
             "floor_divide_": lambda a, b: a.floor_divide_(b), "remainder_": lambda a, b: a.remainder_(b),
             "&=": lambda a, b: a.__iand__(b), "^=": lambda a, b: a.__ixor__(b), "pow_": lambda a, b: a.pow_(b)}


@pytest.mark.parametrize("op", list(INT16_OPS))
@pytest.mark.parametrize("dst,src", [("int8", "uint8"), ("uint8", "int8")])
def test_int8_with_uint8_in_place_stores_what_torch_int16_result_gives(backend, op, dst, src):
    # torch computes int8 with uint8 in int16 and stores it back; lazy has no int16 and computes in
    # int32 (perf/fuzz.py seed 0 case 57); out of place, an int16 result raises (README)
    a = torch.tensor([-128, 127, 100, -7, 0, 55], dtype=torch.int8).to(getattr(torch, dst))
    b = torch.tensor([-1, 3, 200, 9, 17, 255], dtype=torch.int16).to(getattr(torch, src))
    if op in ("floor_divide_", "remainder_"):
        b = b.masked_fill(b == 0, 1)  # torch raises ZeroDivisionError; lazy gives 0 (README)
    if op == "pow_":
        b = b % 5
    x = lazy.tensor(a.clone())
    same(INT16_OPS[op](x, lazy.tensor(b)), INT16_OPS[op](a.clone(), b))
    with pytest.raises(TypeError, match="gives torch.int16, which lazy does not support"):
        getattr(lazy.tensor(a), op.rstrip("_=").replace("&", "__and__").replace("^", "__xor__"))(lazy.tensor(b))


# -- float16/bfloat16 argmax, argmin and max(dim) over fused expressions ------------------------

HALF_EXPRS = {"* 0.001": lambda x: x * 0.001, "/ 0.7": lambda x: x / 0.7, "- 0.25": lambda x: x - 0.25,
              "exp": lambda x: x.exp()}


def _half_rows(dtype):
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 2048, (6, 37), generator=g).double()  # many distinct values that round to ties
    t[1, 5] = t[1, 9] = 2047  # an exact tie
    t[2, 7], t[2, 20] = math.nan, math.nan  # the first NaN wins
    t[3, :] = 5.0  # all equal
    t[4, 3] = -math.inf
    t[5, 30] = math.inf
    return t.to(getattr(torch, dtype))


@pytest.mark.parametrize("expr", list(HALF_EXPRS))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_arg_reductions_over_fused_expressions(backend, dtype, expr):
    t = _half_rows(dtype)
    x, f = lazy.tensor(t.clone()), HALF_EXPRS[expr]
    same(f(x).argmax(-1), f(t).argmax(-1))
    same(f(x).argmin(-1), f(t).argmin(-1))
    for got, want in zip(f(x).max(-1), f(t).max(-1)):
        same(got, want)
    for got, want in zip(f(x).min(0), f(t).min(0)):
        same(got, want)


def test_arg_reduction_of_a_computed_row_is_an_index_of_it(backend):
    """The index of the max of a softmax (perf/fuzz.py seed 777 case 4252): computed in two passes,
    one vectorized 8 lanes wide (glibc's vector exp) and one not (its scalar exp), no element equaled
    the max and the index was the row's length. A computed float is read once, by torch's argmax."""
    t = torch.tensor([4, 5, 0, 1, 20, 13, 5, 14, 7, 19, 9, 16, 6, 5, 18, 16, 5, 15, 4, 11, 11, 7, 13, 13],
                     dtype=torch.uint8).reshape(3, 1, 8)
    for lib, x in ((lazy, lazy.tensor(t)), (torch, t)):
        y = x.softmax(2, dtype=lib.float32).unflatten(1, (1, 1)).neg()
        if lib is lazy:
            got = (y.max(3).indices, y.argmin(3, keepdim=True), y.argmax())
        else:
            want = (y.max(3).indices, y.argmin(3, keepdim=True), y.argmax())
    for g, w in zip(got, want):
        same(g, w)


# -- casts between every pair of dtypes, followed by arithmetic, in one kernel -------------------

DTYPES = ["float32", "float64", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool"]
SRC_VALUES = {
    "float": [-1.5, 0.0, -0.0, 1.0, 2.7, 300.5, -129.2, 255.9, 65504.0, 70000.0, 1e10, -1e10, 1e-8,
              math.nan, math.inf, -math.inf, 2.0 ** 31, 3e9, 2.0 ** 40 + 7, 1.0 + 2 ** -11 + 2 ** -40],
    "int8": [-128, 127, -1, 0, 1, 100, -100, 42],
    "uint8": [0, 255, 128, 1, 100, 200, 7, 42],
    "int32": [-2**31, 2**31 - 1, -1, 0, 1, 300, -129, 2**24 + 1],
    "int64": [-2**63, 2**63 - 1, -1, 0, 2**40 + 7, 300, -129, 2**53 + 1],
    "bool": [True, False, True, True, False],
}


def _source(dtype):
    vals = SRC_VALUES.get(dtype, SRC_VALUES["float"])
    td = getattr(torch, dtype)
    t = torch.tensor(vals, dtype=torch.float64).to(td) if dtype in ("float32", "float64", "float16", "bfloat16") \
        else torch.tensor(vals, dtype=td)
    return lazy.tensor(t.clone()), t


@pytest.mark.parametrize("dst", DTYPES)
@pytest.mark.parametrize("src", DTYPES)
def test_cast_then_arithmetic_in_one_kernel(backend, src, dst):
    x, tx = _source(src)
    ld, td = getattr(lazy, dst), getattr(torch, dst)
    y, ty = x.to(ld), tx.to(td)
    same((y + y).to(lazy.float64), (ty + ty).to(torch.float64))  # the cast's result, then arithmetic on it
    same((x + x).to(ld).to(lazy.float64), (tx + tx).to(td).to(torch.float64))  # arithmetic, then the cast


# -- Python ints past 64 bits ------------------------------------------------------------------

OVERFLOW_FORMS = {
    "add": lambda m, t, v: t + v, "radd": lambda m, t, v: v + t, "mul": lambda m, t, v: t * v,
    "floordiv": lambda m, t, v: t // v, "eq": lambda m, t, v: t == v, "lt": lambda m, t, v: t < v,
    "gt": lambda m, t, v: t > v, "where": lambda m, t, v: m.where(t > 0, t, v),
    "full": lambda m, t, v: m.full((2,), v, dtype=t.dtype), "fill_": lambda m, t, v: t.clone().fill_(v),
}


def _outcome(f):
    try:
        return f().tolist()
    except Exception as e:  # noqa: BLE001 (the error's type is what is compared)
        return type(e)


@pytest.mark.parametrize("value", [2**64, 2**70, -2**63 - 1])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32", "uint8", "bool"])
@pytest.mark.parametrize("form", list(OVERFLOW_FORMS))
def test_python_ints_past_64_bits_raise_overflow_error_like_torch(dtype, form, value):
    f = OVERFLOW_FORMS[form]
    got = _outcome(lambda: f(lazy, lazy.zeros(3, dtype=getattr(lazy, dtype)), value))
    want = _outcome(lambda: f(torch, torch.zeros(3, dtype=getattr(torch, dtype)), value))
    assert want is OverflowError and got is OverflowError


@pytest.mark.parametrize("make", [
    lambda m: m.arange(2**64, 2**64 + 2), lambda m: m.arange(0, 2**64, 2**62), lambda m: m.arange(-2**63 - 1, 0, 2**62),
    lambda m: m.arange(0, 3, 2**64), lambda m: m.arange(2**63, 2**63 + 2), lambda m: m.tensor([2**64]),
    lambda m: m.tensor(2**64), lambda m: m.tensor([-2**63 - 1]), lambda m: m.tensor([2**64], dtype=m.float32),
    lambda m: m.full((2,), 2**64, dtype=m.float32), lambda m: m.full((2,), 2**63),
    lambda m: m.full((2,), 2**63, dtype=m.float32), lambda m: m.arange(0.0, 2**64 + 5.0, 2.0**62)])
def test_constructors_with_python_ints_past_int64_like_torch(make):
    got, want = _outcome(lambda: make(lazy)), _outcome(lambda: make(torch))
    if isinstance(want, type):
        assert isinstance(got, type) and issubclass(got, want), (got, want)
    else:
        assert got == want


@pytest.mark.parametrize("case", [
    lambda m: m.zeros(3, dtype=m.int64) + 2**63, lambda m: m.zeros(3, dtype=m.int64) == 2**63,
    lambda m: m.zeros(3, dtype=m.int32) == 2**32, lambda m: m.zeros(3, dtype=m.int32) == 2**63,
    lambda m: m.zeros(2, dtype=m.uint8) == 256, lambda m: m.zeros(2, dtype=m.uint8) + 256,
    lambda m: m.ones(2, dtype=m.int8) * 2**63, lambda m: m.zeros(3) + 2**63, lambda m: m.zeros(3) - (2**64 - 1),
    lambda m: m.zeros(3, dtype=m.bool) + 2**63, lambda m: m.zeros(3, dtype=m.bool) == 2**63])
def test_python_ints_convert_to_the_op_dtype_like_torch(backend, case):
    """torch takes an int from 2**63 to 2**64 - 1 as uint64, and converts an int scalar to an int
    tensor's dtype by wrapping (`uint8 == 256` compares with 0); bool tensors refuse uint64."""
    got, want = _outcome(lambda: case(lazy)), _outcome(lambda: case(torch))
    if isinstance(want, type):
        assert isinstance(got, type) and issubclass(got, want), (got, want)
    else:
        assert got == want


# -- the verifier ------------------------------------------------------------------------------

X0 = sympy.Symbol("x0", integer=True, nonnegative=True)


def _load(b, dtype):
    return Expr("load", (), (b, X0, ()), dtype)


def _kernel(value, out, ins):
    bufs = tuple(BufferArg(f"b{i}", d, 4, False) for i, d in enumerate(ins)) + (BufferArg("out", out, 4, True),)
    return Kernel("k_bad", bufs, (4,), (), (Store(len(ins), X0, value, out),))


def _cast(x, to):
    return Expr("cast", (x,), to, to)


I8_SUM = Expr("add", (_load(0, "int8"), _load(1, "int8")), None, "int8")
H_PROD = Expr("mul", (_load(0, "float16"), Expr("const", arg=1.001, dtype="float16")), None, "float16")
BAD = {  # kernel, words of the message, whether legalize repairs it
    "int8 sum cast before its wrap": (_kernel(_cast(I8_SUM, "float32"), "float32", ("int8", "int8")),
                                      "int value outside int8 (wrap it first): cast:float32(add:int8(", True),
    "float16 product compared unrounded": (
        _kernel(Expr("eq", (H_PROD, _load(1, "float16")), None, "bool"), "bool", ("float16", "float16")),
        "unrounded float16 value outside float16 arithmetic (round it first): eq:bool(mul:float16(", True),
    "cast to int8": (_kernel(_cast(_load(0, "float32"), "int8"), "int8", ("float32",)),
                     "cast float32 -> int8 is a narrowing", True),
    "cast to bool": (_kernel(_cast(_load(0, "int32"), "bool"), "bool", ("int32",)), "cast int32 -> bool", True),
    "cast to float16": (_kernel(_cast(_load(0, "float32"), "float16"), "float16", ("float32",)),
                        "cast float32 -> float16", True),
    "float to int unguarded": (_kernel(_cast(_load(0, "float32"), "int32"), "int32", ("float32",)),
                               "may not fit (legalize guards it): cast:int32(load:float32", True),
    "int8 max over unwrapped values": (
        Kernel("k_bad", (BufferArg("b0", "int8", 4, False), BufferArg("out", "int8", 1, True)), (), (
            Reduce("acc0", "max", Expr("neg", (_load(0, "int8"),), None, "int8"), "int8", (4,), ("x0",), 0),),
            (Store(1, sympy.Integer(0), Expr("acc", arg="acc0", dtype="int8"), "int8"),)),
        "reduction acc0: a max over int8 needs wrapped values", True),
    "operands of two dtypes": (
        _kernel(Expr("add", (_load(0, "float32"), _load(1, "float64")), None, "float32"), "float32",
                ("float32", "float64")), "add takes operands of its own dtype float32: add:float32(", False),
    "compare not bool": (
        _kernel(Expr("lt", (_load(0, "float32"), _load(0, "float32")), None, "float32"), "float32", ("float32",)),
        "a comparison takes two operands of one dtype and gives bool: lt:float32", False),
    "store of another dtype": (_kernel(_load(0, "float32"), "float64", ("float32",)),
                               "store of a float32 value as float64", False),
    "load of another dtype": (_kernel(_load(0, "float64"), "float64", ("float32",)),
                              "a load of a float32 buffer has dtype float64", False),
    "accumulator read as another dtype": (
        Kernel("k_bad", (BufferArg("b0", "float32", 4, False), BufferArg("out", "float64", 1, True)), (), (
            Reduce("acc0", "sum", _load(0, "float32"), "float32", (4,), ("x0",), 0),),
            (Store(1, sympy.Integer(0), Expr("acc", arg="acc0", dtype="float64"), "float64"),)),
        "reads accumulator acc0 (float32) as float64", False),
}


@pytest.mark.parametrize("name", list(BAD))
def test_verifier_rejects_a_bad_kernel_naming_the_expression(name):
    k, words, repairable = BAD[name]
    with pytest.raises(IllegalKernel) as err:
        verify(k)
    assert str(err.value).startswith("k_bad: ") and words in str(err.value), str(err.value)
    if repairable:
        fixed = legalize(k)
        verify(fixed)
        assert legalize(fixed) is fixed  # idempotent


def test_legalized_kernels_render_and_run():
    """The repaired kernels of BAD give torch's values (C backend, compiled directly)."""
    from codegen import compile_c, render_c

    k = legalize(BAD["int8 sum cast before its wrap"][0])
    fn = compile_c.load(render_c.render_c(k))
    a, b = torch.tensor([100, -128, 5, 127], dtype=torch.int8), torch.tensor([100, -1, 5, 1], dtype=torch.int8)
    out = torch.empty(4)
    fn.argtypes = [ctypes.c_void_p] * 3
    fn(a.data_ptr(), b.data_ptr(), out.data_ptr())
    assert out.tolist() == (a + b).float().tolist()


def test_float32_kernels_need_no_legalization(monkeypatch):
    """Legalization leaves float32 kernels as they are (the same object), so they render byte for
    byte as before: the common path pays nothing."""
    from lazy import runtime
    from perf.workloads import SUITE
    from scheduler import lower

    raw = []
    monkeypatch.setattr(lower, "legalize", lambda k: raw.append(k) or k)
    monkeypatch.setattr(runtime, "_programs", {})  # lower every program again
    for name in ("elementwise_chain", "elementwise_arith", "softmax", "layernorm", "rmsnorm", "sum_outer",
                 "broadcast_outer", "gelu_linear"):
        w = SUITE[name]
        kernels_of(lambda w=w: lazy.realize(w.lazy(*[lazy.tensor(a) for a in w.make_inputs(1 << 12)])))
    x = lazy.tensor(np.random.default_rng(0).standard_normal((8, 33), dtype=np.float32))
    kernels_of(lambda: lazy.realize(lazy.where(x > 0.5, x, x * 2) + (x == 1.0).float() + x.isnan().float()))
    assert len(raw) >= 9
    for k in raw:
        assert {b.dtype for b in k.buffers} == {"float32"}
        assert legalize(k) is k, k.name


def test_every_kernel_of_a_mixed_program_is_legal():
    """What the lowering returns passes the verifier (conftest also turns it on for every test)."""
    h, _ = pair([0.5, 3.0, 1.0, -2.0], "float16")
    u, _ = pair([4, 3, 250, 0], "uint8")
    ks = kernels_of(lambda: lazy.realize((h * 1.001).argmax(), (u ** u).float() + h.float(),
                                         (h * 3).to(lazy.int8) // -1, (u.to(lazy.bool) | (h > 0)).sum()))
    ks = [k for k in ks if isinstance(k, Kernel)]  # (the argmax of a computed value is torch's: an extern call)
    assert ks
    for k in ks:
        verify(k)
        assert legalize(k) is k


# -- the differences README.md lists -------------------------------------------------------------

def test_fused_half_arithmetic_rounds_once(backend):
    """README: float16/bfloat16 ops fused into one kernel compute in float32 and round where a value
    leaves the kernel, is cast or compared; eager torch rounds after every op."""
    x, tx = pair([1.0], "bfloat16")
    d = 3 * 2**-10  # under half of bfloat16's step at 1 (2**-7): each add alone rounds back to 1
    got = (x + d) + d
    assert (tx + d) + d == 1.0
    assert got.item() == (tx.float() + d + d).bfloat16().item() == 1.0078125
    assert ((x + d) + d > 1).item()  # compared as the bfloat16 the store would hold


def test_float_to_int_out_of_range_is_torch_cpu_on_every_backend(backend):
    """README: NaN and values whose truncation does not fit give the integer minimum (int8 through
    int32, uint8 through int64), torch's x86 CPU results, on every backend (GPUs saturate)."""
    x, _ = pair([math.nan, math.inf, -math.inf, 1e10, 2.0 ** 40 + 7], "float64")
    assert x.to(lazy.int32).tolist() == [-2**31] * 5
    assert x.to(lazy.int64).tolist() == [-2**63] * 3 + [10**10, 2**40 + 7]
    assert x.to(lazy.int8).tolist() == [0] * 5
    assert x.to(lazy.uint8).tolist() == [0, 0, 0, 0, 7]
