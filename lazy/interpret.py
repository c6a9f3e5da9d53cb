"""Reference evaluator: the executable definition of every IR op, in torch eager ops.

In:  a list of graph nodes (any mix of roots; shared subgraphs are evaluated once per call).
Out: one torch tensor per node, with exactly the node's shape and torch dtype.

This is the oracle the compiled backend is tested against, so it states the semantics
plainly rather than quickly: where torch's default behaviour differs from the IR's contract
(sum of ints widening to int64, `dim=()` meaning "all dims", amax refusing empty axes), the
code below pins the IR's meaning explicitly.
"""

from __future__ import annotations

import math

import torch

from codegen import extern
from lazy.dtypes import to_torch
from lazy.graph import REDUCE_IDENTITY, Node, Op, toposort

_UNARY = {
    Op.NEG: torch.neg, Op.EXP: torch.exp, Op.LOG: torch.log, Op.SQRT: lambda t: _sqrt(t), Op.SIN: torch.sin,
    Op.COS: torch.cos, Op.TANH: torch.tanh, Op.ERF: torch.erf, Op.ABS: torch.abs,
    Op.RECIP: torch.reciprocal, Op.FLOOR: torch.floor, Op.CEIL: torch.ceil, Op.TRUNC: torch.trunc,
    Op.ISNAN: torch.isnan, Op.ISINF: torch.isinf,
    # logical not for bool, bitwise not for ints (torch.bitwise_not does both)
    Op.NOT: torch.bitwise_not,
    Op.DETACH: lambda t: t,
    Op.STORED: lambda t: t,
}

_BINARY = {
    Op.ADD: torch.add, Op.SUB: torch.sub, Op.MUL: torch.mul, Op.FLOORDIV: torch.floor_divide,
    Op.MOD: lambda a, b: _mod(a, b), Op.POW: torch.pow, Op.MAX: torch.maximum, Op.MIN: torch.minimum,
    Op.LT: torch.lt, Op.LE: torch.le, Op.EQ: torch.eq, Op.NE: torch.ne,
    Op.AND: torch.bitwise_and, Op.OR: torch.bitwise_or, Op.XOR: torch.bitwise_xor,
}


def _sqrt(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded, as the compiled backends' (IEEE) sqrt: in float64, then rounded (exact
    for float32 and the halves: 53 >= 2 * 24 + 2). torch's float32 sqrt is not on every CPU
    (0x1.5936b4p-3 gave 0x1.a46a70p-2, one ulp above the nearest, on a Sapphire Rapids)."""
    if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.sqrt(t.double()).to(t.dtype)
    return torch.sqrt(t)


def fmod_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C's fmod (exact at any quotient) of float tensors, broadcast, in a's dtype. torch's float fmod
    overflows a / b: in float64 for float32 and the halves (whose quotients fit), and element by
    element with Python's math.fmod where even float64's would (2147483647 % 1e-300)."""
    a, b = torch.broadcast_tensors(a, b)
    wa, wb = a.double(), b.double()
    m = torch.fmod(wa, wb)
    wild = torch.isfinite(wa) & torch.isfinite(wb) & (wb != 0) & ~torch.isfinite(wa / wb)
    if wild.any():
        m = m.clone()
        m[wild] = torch.tensor([math.fmod(x, y) for x, y in zip(wa[wild].tolist(), wb[wild].tolist())],
                               dtype=torch.float64)
    return m.to(a.dtype)


def _mod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Float remainder as the compiled backends compute it (README, "Where lazy differs"): fmod
    corrected to the divisor's sign, exact at any quotient (torch.remainder's vector loop overflows)."""
    if not a.dtype.is_floating_point:
        return torch.remainder(a, b)
    m = fmod_exact(a, b)
    return torch.where((m != 0) & ((b < 0) != (m < 0)), m + b, m)


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype.is_floating_point:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


def _reduce(n: Node, x: torch.Tensor) -> torch.Tensor:
    axes, td = n.arg, to_torch(n.dtype)
    if not axes:
        return x
    if any(x.shape[a] == 0 for a in axes):  # empty reduction: the identity (torch refuses for max)
        ident = REDUCE_IDENTITY[n.op]
        if n.op is Op.RMAX and not td.is_floating_point:
            ident = False if td == torch.bool else torch.iinfo(td).min
        return torch.full(n.shape, ident, dtype=td)
    if n.op is Op.SUM:
        if td == torch.bool:  # a bool sum stays bool: "any"
            return x.any(dim=axes, keepdim=True)
        return torch.sum(x, dim=axes, keepdim=True, dtype=td)  # dtype=: ints must not widen
    if n.op is Op.RMAX:
        return torch.amax(x, dim=axes, keepdim=True)  # propagates NaN
    for a in axes:  # torch.prod takes one dim at a time
        x = torch.prod(x, dim=a, keepdim=True, dtype=td)
    return x


def _pad(x: torch.Tensor, pads) -> torch.Tensor:
    out = torch.zeros([s + a + b for s, (a, b) in zip(x.shape, pads)], dtype=x.dtype)
    out[tuple(slice(a, a + s) for s, (a, _) in zip(x.shape, pads))] = x
    return out


def _eval(n: Node, srcs: list[torch.Tensor]) -> torch.Tensor:
    op = n.op
    if op is Op.BUFFER:
        return n.arg.data
    if op is Op.CONST:  # a float held as a double, rounded as torch rounds one (halves through float32)
        td = to_torch(n.dtype)
        if not td.is_floating_point:
            return torch.full(n.shape, n.arg, dtype=td)
        return torch.full(n.shape, n.arg, dtype=torch.float64).to(torch.float32 if td.itemsize == 2 else td).to(td)
    if op is Op.IOTA:
        return torch.arange(n.shape[0], dtype=to_torch(n.dtype))
    if op is Op.MATMUL:
        return torch.matmul(*srcs)
    if op is Op.EXTERN:  # the table the kernels run (codegen/extern.py)
        out = torch.empty(n.shape, dtype=to_torch(n.dtype))
        extern.call_op(n.arg[0], out, srcs, n.arg[1])
        return out
    if op is Op.CAST:  # float->int truncates toward zero; ->bool is x != 0 (torch's .to)
        return srcs[0].to(to_torch(n.dtype))
    if op in _UNARY:
        return _UNARY[op](srcs[0])
    if op is Op.DIV:
        return _div(*srcs)
    if op in _BINARY:
        return _BINARY[op](*srcs)
    if op is Op.WHERE:
        return torch.where(*srcs)
    if op in (Op.SUM, Op.RMAX, Op.PROD):
        return _reduce(n, srcs[0])
    x = srcs[0]
    if op is Op.RESHAPE:
        return x.reshape(n.arg)
    if op is Op.PERMUTE:
        return x.permute(n.arg)
    if op is Op.EXPAND:
        return x.expand(n.arg)
    if op is Op.PAD:
        return _pad(x, n.arg)
    if op is Op.SHRINK:
        return x[tuple(slice(a, b) for a, b in n.arg)]
    if op is Op.FLIP:
        return torch.flip(x, n.arg)
    if op is Op.WINDOW:  # windows of span (k-1)*d+1 every s, then every d-th element: [.., O, .., k]
        axis, k, st, dil = n.arg
        w = x.unfold(axis, (k - 1) * dil + 1, st)[..., ::dil]
        return w.movedim(-1, axis + 1)
    raise NotImplementedError(f"interpret: no rule for {op}")


def interpret(nodes: list[Node]) -> list[torch.Tensor]:
    """Evaluate `nodes` with torch eager ops; each result has the node's shape and dtype."""
    vals: dict[int, torch.Tensor] = {}
    for n in toposort(list(nodes)):
        out = _eval(n, [vals[id(s)] for s in n.srcs])
        assert tuple(out.shape) == n.shape and out.dtype == to_torch(n.dtype), (n, out.shape, out.dtype)
        vals[id(n)] = out
    return [vals[id(n)] for n in nodes]
