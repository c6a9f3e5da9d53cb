"""Building a program for all sizes of a dynamic template (lazy/dynamic.py fits the template).

In:  a graph, its input buffers, a `dynamic.Template` and the sizes of one call.
Out: `placeholder_graph`: the graph with each size symbol at a placeholder, to schedule as any
     graph; `symbolic_kernel`/`decode_shape`: the schedule's Kernel IR and allocation shapes with
     every size as a polynomial in the size symbols `d0, d1, ...`; `NotSymbolic` when a number
     does not decode (the program is then built for the call's sizes).

How the symbolic program is built: the graph is rebuilt with each symbol replaced by a placeholder,
a prime of at least 2**64 (one per symbol, of increasing magnitudes), and scheduled and lowered as
any graph: every size in its Kernel IR is then an integer polynomial in the placeholders, which
`decode` reads back as one in the symbols (balanced digits in the placeholders' base). The index
algebra only draws conclusions that hold for every size a placeholder stands for
(scheduler/indexing.py `SYMBOLIC`), and a number that does not decode into whole coefficients
(a conclusion that held for the prime only) abandons the symbolic build: correct, specialized.

This module imports sympy and the scheduler's index algebra; lazy/runtime.py imports it only when
it builds a program for all sizes.
"""

from __future__ import annotations

import sympy

from codegen.kernel_ir import BufferArg, Expr, ExternCall, GatherView, Kernel, Reduce, Store, StridedView, size_symbol
from lazy.dynamic import MAX_SYMBOLS, SIZED_ARGS, Template, nodes_in_key_order
from lazy.graph import Buffer, Node, Op, node
from scheduler import indexing
from scheduler.indexing import SYMBOLIC

COEFF_LIMIT = 1 << 60  # |coefficients| a decoded number may have


# -- placeholders and decoding ----------------------------------------------------------------------
def placeholders() -> tuple[int, ...]:
    return indexing.placeholders(MAX_SYMBOLS)


class NotSymbolic(Exception):
    """A number of the placeholder schedule that is no polynomial in the symbols."""


def decode(n: int, nsyms: int) -> sympy.Expr:
    """The polynomial in d0..d{nsyms-1} whose value at the placeholders is `n` (small numbers are
    themselves)."""
    n = int(n)
    if abs(n) < SYMBOLIC:
        return sympy.Integer(n)
    return _decode(n, nsyms)


def _decode(n: int, k: int) -> sympy.Expr:
    if k == 0:
        if abs(n) >= COEFF_LIMIT:
            raise NotSymbolic(n)
        return sympy.Integer(n)
    p = placeholders()[k - 1]
    digits = []
    for _ in range(3):  # degree <= 2 in each placeholder
        r = n % p
        if r > p // 2:
            r -= p
        digits.append(r)
        n = (n - r) // p
    if n:
        raise NotSymbolic(n)
    sym = size_symbol(f"d{k - 1}")
    return sum((_decode(r, k - 1) * sym ** i for i, r in enumerate(digits)), sympy.Integer(0))


def _decode_expr(e, nsyms: int):
    """A sympy index expression with every big integer decoded."""
    e = sympy.sympify(e)
    big = [a for a in e.atoms(sympy.Integer) if abs(int(a)) >= SYMBOLIC]
    if not big:
        return e
    return sympy.expand(e.xreplace({a: decode(int(a), nsyms) for a in big}))


def _check_whole(e) -> None:
    """Decoded coefficients are whole: a fraction is a conclusion that held for the prime only."""
    for a in sympy.sympify(e).atoms(sympy.Rational):
        if not a.is_Integer:
            raise NotSymbolic(a)


class _Decoder:
    def __init__(self, nsyms: int):
        self.nsyms = nsyms
        self.memo: dict[int, Expr] = {}

    def size(self, v):
        out = decode(v, self.nsyms) if isinstance(v, int) else _decode_expr(v, self.nsyms)
        _check_whole(out)
        return int(out) if out.is_Integer else out

    def index(self, e):
        out = _decode_expr(e, self.nsyms)
        _check_whole(out)
        return out

    def expr(self, e: Expr) -> Expr:
        hit = self.memo.get(id(e))
        if hit is not None:
            return hit
        srcs = tuple(self.expr(s) for s in e.srcs)
        arg = e.arg
        if e.op == "load":
            b, index, mask = arg
            arg = (b, self.index(index), tuple((c, self.index(a), self.size(v)) for c, a, v in mask))
        elif e.op == "index":
            arg = self.index(arg)
        elif e.op == "valid":
            arg = tuple((c, self.index(a), self.size(v)) for c, a, v in arg)
        out = Expr(e.op, srcs, arg, e.dtype)
        self.memo[id(e)] = out
        return out

    def meta(self, m: dict) -> dict:
        out = dict(m)
        for key in ("bytes_read", "bytes_written", "flops", "gemm_bytes_read"):
            if key in out:
                out[key] = self.size(out[key])
        return out

    def kernel(self, k: Kernel | ExternCall, names: tuple[str, ...], hints: dict):
        if isinstance(k, ExternCall):
            if any(isinstance(v, GatherView) for v in k.views):  # sized at compile time: the pack's
                raise NotSymbolic(k.name)  # sub-dims and bounds are literals, so the program is specialized
            views = tuple(StridedView(tuple(self.size(s) for s in v.shape), tuple(self.size(s) for s in v.strides),
                                      self.size(v.offset)) for v in k.views)
            epi = None if k.epilogue is None else self.kernel(k.epilogue, names, hints)
            meta = self.meta(k.meta)
            meta["hints"] = hints
            return ExternCall(k.name, k.op, self._buffers(k.buffers), views, epi, meta, names, k.params)
        reduces = tuple(Reduce(r.name, r.op, self.expr(r.value), r.dtype, tuple(self.size(s) for s in r.rsizes),
                               r.rvars, r.depth) for r in k.reduces)
        stores = tuple(Store(s.buf, self.index(s.index), self.expr(s.value), s.dtype) for s in k.stores)
        meta = self.meta(k.meta)
        meta["hints"] = hints
        return Kernel(k.name, self._buffers(k.buffers), tuple(self.size(s) for s in k.loops), reduces, stores,
                      meta, k.scalars, names)

    def _buffers(self, bufs) -> tuple[BufferArg, ...]:
        return tuple(BufferArg(b.name, b.dtype, self.size(b.numel), b.output) for b in bufs)


def symbolic_kernel(k: Kernel | ExternCall, nsyms: int, hints: list[int]) -> Kernel | ExternCall:
    """Kernel IR scheduled with placeholders, with every size as a polynomial in d0..d{nsyms-1}
    (NotSymbolic when a number does not decode). The kernel takes every symbol of the program."""
    names = tuple(f"d{i}" for i in range(nsyms))
    return _Decoder(nsyms).kernel(k, names, {f"d{i}": v for i, v in enumerate(hints)})


def decode_shape(shape, nsyms: int) -> tuple:
    return tuple(_Decoder(nsyms).size(s) for s in shape)


# -- the graph at placeholder sizes -----------------------------------------------------------------
class _Sized:
    """What the scheduler reads of an input buffer's memory, at placeholder sizes (no storage)."""

    def __init__(self, shape, strides, offset, dtype, device):
        self.shape, self._strides, self._offset = tuple(shape), tuple(strides), offset
        self.dtype, self.device = dtype, device

    def stride(self):
        return self._strides

    def storage_offset(self):
        return self._offset


def _take(it, shape_like):
    if isinstance(shape_like, tuple):
        return tuple(_take(it, x) for x in shape_like)
    return next(it)


def placeholder_graph(roots: list[Node], buffers: list[Buffer], template: Template, ints: list[int]
                      ) -> tuple[list[Node], list[Buffer], list[Node]]:
    """The graph of `roots` with each symbol at its placeholder: (roots, input buffers in key order,
    scalar CONST nodes in key order), ready for `scheduler.schedule`."""
    ph = placeholders()
    syms = [ph[k] for k in range(len(template.symbols))]
    sizes = iter([rule(syms) if rule is not None else ph[template.symbols.index(p)]
                  for p, rule in enumerate(template.rules)])
    new: dict[int, Node] = {}
    fake: dict[int, Buffer] = {}
    fakes: list[Buffer] = []
    scalars: list[Node] = []
    for n in nodes_in_key_order(roots):
        shape = tuple(next(sizes) for _ in n.shape)
        arg = _take(sizes, n.arg) if n.op in SIZED_ARGS else n.arg
        srcs = tuple(new[id(s)] for s in n.srcs)
        if n.op is Op.BUFFER:
            d = n.arg.data
            strides = tuple(next(sizes) for _ in d.stride())
            offset = next(sizes)
            b = fake.get(id(n.arg))
            if b is None:
                b = fake[id(n.arg)] = Buffer(_Sized(shape, strides, offset, d.dtype, d.device))
                fakes.append(b)
            m = node(Op.BUFFER, (), b, n.dtype, shape)
        elif n.op in (Op.CONST, Op.IOTA):
            m = node(n.op, (), n.arg, n.dtype, shape)
            if n.op is Op.CONST and n._static[1] == "scalar":
                scalars.append(m)
        elif n.op is Op.STORED:  # the value is its buffer's (the stored graph only serves autograd)
            m = srcs[0]
        elif n.op is Op.EXTERN:  # (its shape is its own: a library call's result)
            m = node(n.op, srcs, n.arg, n.dtype, shape)
        else:
            m = node(n.op, srcs, arg)
        new[id(n)] = m
    return [new[id(r)] for r in roots], fakes, scalars
