"""Legalization: every dtype decision of a kernel made explicit in its Kernel IR, and checked.

In:  a `Kernel` as the lowering builds it: each `Expr` carries its graph dtype, and a value of a
     narrow dtype (float16, bfloat16, int8, uint8) computed by arithmetic lives in the wider
     `compute_dtype` (codegen/kernel_ir.py), not yet rounded or wrapped.
Out: `legalize(k)`: the same kernel with the narrowing nodes inserted where a value's dtype must
     hold; `verify(k)`: raises `IllegalKernel`, naming the expression, when a rule is broken.

The rules (torch's semantics, decided here once for every backend):
- A narrow value computed by arithmetic is *inexact*: the other values are exact (loads,
  accumulators, in-range constants, `round`/`wrap` results, wide arithmetic, compares, casts).
- int8/uint8: an inexact value is `wrap`ped before any use but a store of its own dtype (torch
  wraps after every op: `u ** u`, `~u`, `-128 // -1`).
- float16/bfloat16: ops fused into one kernel compute in float32 and do not round in between
  (torch.compile's default; README, "Where lazy differs from torch"); an inexact value is
  `round`ed where it leaves half arithmetic: a cast (`(h * 1000).float()` is inf), a comparison
  or isnan/isinf (argmax compares a row with its max, which the reduction rounds). Sums, products
  and maxima take inexact values (a max commutes with the rounding of its result).
- Casts: to bool is `ne(x, 0)`; to float16/bfloat16 a `round` (through float32, as torch rounds
  a double); to int8/uint8 a `wrap`; int64 to int32 a `wrap`; float to int truncates, and NaN or a
  value whose truncation does not fit gives the target's minimum, as torch's CPU kernels do on
  x86 (int8 converts through int32 and uint8 through int64 first, as torch does). The conversion
  itself only ever sees values that fit (`where(fits, x, 0)`): out of range it is undefined in C
  and saturates on GPUs. What remains a `cast` is exact or IEEE-rounded (int/float to
  float32/float64), a widening, or from bool.
- Constants hold values of their dtype where that is exact (ints wrap when the graph builds them);
  a half constant may hold a wider value where torch's kernel keeps a Python number in float32
  (its opmath: `x * 1.001` and `x / 1.001`) and is rounded, in Python, everywhere else: + and -
  (torch's add kernel converts the number to the half dtype: float16 2048 + 1.0003 is 2048, not
  2050), a comparison (`x == 1.001`), a select, `//`, `%`, pow, max and min (`-1e19 // x` divides
  -inf). Scalar arguments (`scalar`, a constant bound at
  launch) follow the same rules; a half one is rounded by a `round` node instead.
- An accumulator (`acc`) and a store convert to their dtype as they finish: that is the
  renderers' one narrowing, the meaning of `Reduce.dtype` and `Store.dtype`.

Invariants: `legalize` is idempotent, returns `k` itself when nothing changes (float32 kernels
render byte for byte as before), and its output passes `verify`.
"""

from __future__ import annotations

import functools
import math

from codegen.kernel_ir import HALFS, NARROW_INTS, Expr, Kernel, Reduce, Store

INT_RANGE = {"int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "int32": (-2**31, 2**31 - 1),
             "int64": (-2**63, 2**63 - 1)}
INTS = set(INT_RANGE)
WIDE_FLOATS = {"float32", "float64"}
FLOATS = WIDE_FLOATS | HALFS
DTYPES = FLOATS | INTS | {"bool"}
COMPARE = {"lt", "le", "eq", "ne"}
TESTS = {"isnan", "isinf"}
UNARY = {"neg", "exp", "log", "sqrt", "sin", "cos", "tanh", "erf", "abs", "recip", "floor", "ceil", "trunc", "not"}
BINARY = {"add", "sub", "mul", "div", "floordiv", "mod", "pow", "max", "min", "and", "or", "xor"}
# arithmetic whose result is exact whenever its operands are: no rounding, no overflow
KEEPS_EXACT = {"max", "min", "and", "or", "xor", "floor", "ceil", "trunc"}
KEEPS_EXACT_HALF = KEEPS_EXACT | {"neg", "abs"}
LEAVES = {"load", "const", "scalar", "index", "valid", "acc"}
OPMATH = {"mul", "div"}  # half ops that take a wider constant (torch's opmath scalars)
# float -> int: the truncations that fit, per (source, target): (op, bound) pairs
_FITS = {("float32", "int32"): (("ge", -2.0**31), ("lt", 2.0**31)),
         ("float64", "int32"): (("gt", -2.0**31 - 1), ("lt", 2.0**31)),
         ("float32", "int64"): (("ge", -2.0**63), ("lt", 2.0**63)),
         ("float64", "int64"): (("ge", -2.0**63), ("lt", 2.0**63))}
_VIA = {"int8": "int32", "uint8": "int64"}  # torch's float -> 8-bit conversions go through these


class IllegalKernel(Exception):
    """A kernel that breaks a rule of the Kernel IR; the message names the expression."""


def describe(e: Expr, depth: int = 2) -> str:
    """`op:dtype(srcs...)`, a few levels deep: how messages name an expression."""
    if e.op == "load":
        head = f"load:{e.dtype} b{e.arg[0]}[{e.arg[1]}]"
    elif e.op in ("const", "acc", "index"):
        head = f"{e.op}:{e.dtype} {e.arg}"
    else:
        head = f"{e.op}:{e.dtype}"
    if not e.srcs:
        return head
    inner = ", ".join(describe(s, depth - 1) for s in e.srcs) if depth > 0 else "..."
    return f"{head}({inner})"


@functools.lru_cache(maxsize=4096)
def half_value(v: float, dtype: str) -> float:
    """The Python float `v` rounded to float16/bfloat16 as torch rounds a double: through float32."""
    import torch

    return float(torch.tensor(v, dtype=torch.float64).to(torch.float32).to(getattr(torch, dtype)))


def wrap_value(v: int, dtype: str) -> int:
    lo, hi = INT_RANGE[dtype]
    return (int(v) - lo) % (hi - lo + 1) + lo


def const_exact(e: Expr) -> bool:
    """Whether a constant's value is one of its dtype's values."""
    if e.dtype in INT_RANGE:
        lo, hi = INT_RANGE[e.dtype]
        return isinstance(e.arg, int) and lo <= e.arg <= hi
    if e.dtype in HALFS:
        v = float(e.arg)
        return math.isnan(v) or half_value(v, e.dtype) == v
    return True


def _const(value, dtype: str) -> Expr:
    return Expr("const", arg=value, dtype=dtype)


def _zero(dtype: str) -> Expr:
    return _const(False if dtype == "bool" else 0 if dtype in INTS else 0.0, dtype)


def fits(x: Expr, target: str) -> Expr:
    """bool: the truncation of float `x` (float32 or float64) fits int32/int64 `target`."""
    (lo_op, lo), (hi_op, hi) = _FITS[(x.dtype, target)]
    lo_e = Expr("lt" if lo_op == "gt" else "le", (_const(lo, x.dtype), x), None, "bool")
    return Expr("and", (lo_e, Expr(hi_op, (x, _const(hi, x.dtype)), None, "bool")), None, "bool")


class _Legalizer:
    def __init__(self):
        self.memo: dict[int, tuple[Expr, bool]] = {}  # id(expr) -> (legal expr, exact)
        self.keep: list[Expr] = []  # keeps memo's ids alive

    def exact(self, e: Expr) -> Expr:
        v, ok = self.value(e)
        return v if ok else narrow(v)

    def value(self, e: Expr) -> tuple[Expr, bool]:
        hit = self.memo.get(id(e))
        if hit is None:
            hit = self._value(e)
            self.memo[id(e)] = hit
            self.keep.append(e)
        return hit

    def _value(self, e: Expr) -> tuple[Expr, bool]:
        op, dt = e.op, e.dtype
        if op in LEAVES:
            return e, exact_leaf(e)
        if op == "cast":
            if legal_cast(e):  # already legal (idempotence)
                return _same(e, (self.exact(e.srcs[0]),)), True
            return self.cast(e.srcs[0], e.arg), True
        if op in ("round", "wrap"):  # already legal (idempotence)
            return _same(e, (self.value(e.srcs[0])[0],)), True
        if op in COMPARE or op in TESTS:
            return _same(e, tuple(self.exact(s) for s in e.srcs)), True
        if op == "where":
            if dt in NARROW_INTS:  # a use like any other: the branches are wrapped first
                return _same(e, tuple(self.exact(s) for s in e.srcs)), True
            (c, _), (a, a_ok), (b, b_ok) = (self.half_operand(e, s) for s in e.srcs)
            return _same(e, (c, a, b)), a_ok and b_ok  # halves select float32-held values
        if dt in HALFS:  # half arithmetic takes inexact halves: float32 throughout
            parts = [self.half_operand(e, s) for s in e.srcs]
            out = _same(e, tuple(v for v, _ in parts))
            return out, op in KEEPS_EXACT_HALF and all(ok for _, ok in parts)
        out = _same(e, tuple(self.exact(s) for s in e.srcs))
        return out, dt not in NARROW_INTS or op in KEEPS_EXACT

    def half_operand(self, e: Expr, s: Expr) -> tuple[Expr, bool]:
        """Source `s` of half op `e`: a constant or scalar argument is rounded to its dtype unless `e`
        takes it wide."""
        if s.op in ("const", "scalar") and s.dtype in HALFS and e.op not in OPMATH:
            return self.exact(s), True
        return self.value(s)

    def cast(self, x: Expr, to: str) -> Expr:
        frm = x.dtype
        if frm == to:
            return self.exact(x)
        if frm == "bool":
            return Expr("cast", (x,), to, to)  # 0 or 1: exact in every dtype
        if to == "bool":
            return Expr("ne", (self.exact(x), _zero(frm)), None, "bool")
        if to in HALFS:
            if frm in HALFS or frm == "float32":  # a half that is not `to` is rounded to its own dtype first
                return narrow(self.exact(x), to)
            return narrow(Expr("cast", (self.exact(x),), "float32", "float32"), to)
        if to in NARROW_INTS:
            if frm in INTS:
                return narrow(self.value(x)[0], to)  # wrapping twice is wrapping once: 2^8 divides 2^32
            return narrow(self.cast(x, _VIA[to]), to)
        if to in INTS and frm in FLOATS:
            return self.float_to_int(self.exact(x), to)
        if to == "int32" and frm == "int64":
            return narrow(self.exact(x), to)
        return Expr("cast", (self.exact(x),), to, to)

    def float_to_int(self, x: Expr, to: str) -> Expr:
        if x.dtype in HALFS:
            x = Expr("cast", (x,), "float32", "float32")
        ok = fits(x, to)
        safe = Expr("where", (ok, x, _zero(x.dtype)), None, x.dtype)
        return Expr("where", (ok, Expr("cast", (safe,), to, to), _const(INT_RANGE[to][0], to)), None, to)


def exact_leaf(e: Expr) -> bool:
    if e.op == "const":
        return const_exact(e)
    if e.op == "scalar":  # ints arrive wrapped into their dtype (graph.const); a half one as a float
        return e.dtype not in HALFS
    return e.op != "index" or (e.dtype not in NARROW_INTS and e.dtype not in HALFS)


def narrow(v: Expr, to: str | None = None) -> Expr:
    """`v` as a value of `to` (default: its own dtype): a `round` or `wrap` node, folded into a
    constant."""
    to = to or v.dtype
    if v.op == "const" and v.dtype in FLOATS | INTS:
        return _const(half_value(float(v.arg), to) if to in HALFS else wrap_value(v.arg, to), to)
    return Expr("round" if to in HALFS else "wrap", (v,), None, to)


def _same(e: Expr, srcs: tuple[Expr, ...]) -> Expr:
    """`e` with sources `srcs`: `e` itself when they are its own (nothing changed below)."""
    if len(srcs) == len(e.srcs) and all(a is b for a, b in zip(srcs, e.srcs)):
        return e
    return Expr(e.op, srcs, e.arg, e.dtype)


def legalize(k: Kernel) -> Kernel:
    """`k` with every narrowing explicit (see the module docstring); `k` itself if it has none."""
    lz = _Legalizer()
    reduces = []
    for r in k.reduces:
        v = lz.exact(r.value) if r.dtype in NARROW_INTS else lz.value(r.value)[0]
        reduces.append(r if v is r.value else Reduce(r.name, r.op, v, r.dtype, r.rsizes, r.rvars, r.depth))
    stores = []
    for s in k.stores:
        v = lz.value(s.value)[0]
        stores.append(s if v is s.value else Store(s.buf, s.index, v, s.dtype))
    if all(a is b for a, b in zip(reduces, k.reduces)) and all(a is b for a, b in zip(stores, k.stores)):
        return k
    return Kernel(k.name, k.buffers, k.loops, tuple(reduces), tuple(stores), dict(k.meta), k.scalars, k.sizes)


# -- the verifier ------------------------------------------------------------------------------

def _cast_ok(frm: str, to: str) -> bool:
    """The casts a legal kernel keeps: exact, IEEE-rounded, or float -> int on values that fit."""
    if frm == to:
        return False
    if frm == "bool":
        return True
    if to in WIDE_FLOATS:
        return True
    if to == "int64":
        return frm in WIDE_FLOATS or frm in INTS
    if to == "int32":
        return frm in NARROW_INTS or frm in WIDE_FLOATS
    return False


def legal_cast(e: Expr) -> bool:
    """A cast `legalize` keeps: `_cast_ok`, and a float -> int one sees only values that fit."""
    (x,) = e.srcs
    if not _cast_ok(x.dtype, e.dtype):
        return False
    if x.dtype in FLOATS and e.dtype in INTS:
        return x.op == "where" and x.srcs[0] == fits(x.srcs[1], e.dtype) and x.srcs[2] == _zero(x.dtype)
    return True


def verify(k: Kernel) -> None:
    """Raise `IllegalKernel` unless `k` follows the Kernel IR's dtype rules (module docstring)."""
    reduce_dtype: dict[str, str] = {}
    exact: dict[int, bool] = {}

    def bad(e: Expr, why: str):
        raise IllegalKernel(f"{k.name}: {why}: {describe(e)}")

    def is_exact(e: Expr) -> bool:
        hit = exact.get(id(e))
        if hit is not None:
            return hit
        if e.op in LEAVES:
            hit = exact_leaf(e)
        elif e.op == "where":
            hit = is_exact(e.srcs[1]) and is_exact(e.srcs[2])
        elif e.dtype in HALFS and e.op not in ("round", "cast"):
            hit = e.op in KEEPS_EXACT_HALF and all(is_exact(s) for s in e.srcs)
        elif e.dtype in NARROW_INTS and e.op not in ("wrap", "cast"):
            hit = e.op in KEEPS_EXACT
        else:
            hit = True
        exact[id(e)] = hit
        return hit

    def check(e: Expr) -> None:
        op, dt, srcs = e.op, e.dtype, e.srcs
        sd = [s.dtype for s in srcs]
        if dt not in DTYPES:
            bad(e, f"unknown dtype {dt!r}")
        if op == "load":
            if k.buffers[e.arg[0]].dtype != dt:
                bad(e, f"a load of a {k.buffers[e.arg[0]].dtype} buffer has dtype {dt}")
        elif op == "acc":
            if e.arg != "gemm" and reduce_dtype.get(e.arg) != dt:
                bad(e, f"reads accumulator {e.arg} ({reduce_dtype.get(e.arg, 'not computed before it')}) as {dt}")
        elif op == "const":
            if dt in INT_RANGE and not const_exact(e):
                bad(e, f"constant out of the range of {dt}")
        elif op == "scalar":
            if not isinstance(e.arg, int) or not 0 <= e.arg < len(k.scalars) or k.scalars[e.arg] != dt:
                bad(e, f"reads scalar argument {e.arg}, but the kernel's are {list(k.scalars)}")
        elif op == "valid":
            if dt != "bool":
                bad(e, "a validity test is not bool")
        elif op == "index":
            pass
        elif op == "cast":
            if e.arg != dt or len(srcs) != 1 or not _cast_ok(sd[0], dt):
                bad(e, f"cast {sd[0]} -> {e.arg} is a narrowing (round, wrap, ne) or no conversion")
            if not legal_cast(e):
                bad(e, "float -> int conversion of a value that may not fit (legalize guards it)")
        elif op == "round":
            if dt not in HALFS or len(srcs) != 1 or sd[0] not in ("float32", *HALFS):
                bad(e, f"round {sd} -> {dt}: rounds a float32-held value to float16/bfloat16")
            if sd[0] in HALFS and sd[0] != dt and not is_exact(srcs[0]):
                bad(e, f"rounds an unrounded {sd[0]} value to {dt} (round it to {sd[0]} first)")
        elif op == "wrap":
            if dt not in ("int8", "uint8", "int32") or len(srcs) != 1 or sd[0] not in INTS:
                bad(e, f"wrap {sd} -> {dt}: wraps an int into int8/uint8/int32")
        elif op in COMPARE:
            if len(srcs) != 2 or sd[0] != sd[1] or dt != "bool":
                bad(e, "a comparison takes two operands of one dtype and gives bool")
        elif op in TESTS:
            if len(srcs) != 1 or dt != "bool":
                bad(e, f"{op} takes one operand and gives bool")
        elif op == "where":
            if len(srcs) != 3 or sd[0] != "bool" or sd[1] != dt or sd[2] != dt:
                bad(e, "where takes a bool condition and two branches of its dtype")
        elif op in UNARY or op in BINARY:
            if len(srcs) != (1 if op in UNARY else 2) or any(d != dt for d in sd):
                bad(e, f"{op} takes operands of its own dtype {dt}")
        else:
            bad(e, f"unknown op {op!r}")
        for s in srcs:  # where may an inexact value go?
            if is_exact(s):
                continue
            if s.dtype in NARROW_INTS and op != "wrap":
                bad(e, f"uses an int value outside {s.dtype} (wrap it first)")
            if s.dtype in HALFS and not (op == "round" or (op in UNARY or op in BINARY or op == "where")
                                         and dt == s.dtype):
                bad(e, f"uses an unrounded {s.dtype} value outside {s.dtype} arithmetic (round it first)")

    seen: set[int] = set()

    def walk(root: Expr) -> None:
        order, stack = [], [(root, False)]
        while stack:
            e, done = stack.pop()
            if done:
                order.append(e)
                continue
            if id(e) in seen:
                continue
            seen.add(id(e))
            stack.append((e, True))
            stack.extend((s, False) for s in e.srcs)
        for e in order:
            check(e)

    for r in k.reduces:
        walk(r.value)
        if r.op not in ("sum", "max", "prod") or r.value.dtype != r.dtype:
            bad(r.value, f"reduction {r.name} ({r.op}, {r.dtype}) of a {r.value.dtype} value")
        if r.dtype in NARROW_INTS and (r.op != "max" or not is_exact(r.value)):
            bad(r.value, f"reduction {r.name}: a {r.op} over {r.dtype} needs wrapped values and a max")
        reduce_dtype[r.name] = r.dtype
    for s in k.stores:
        walk(s.value)
        if not (s.dtype == s.value.dtype == k.buffers[s.buf].dtype):
            bad(s.value, f"store of a {s.value.dtype} value as {s.dtype} into a {k.buffers[s.buf].dtype} buffer")
