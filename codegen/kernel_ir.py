"""Kernel IR: the backend-neutral description of one kernel.

In:  built by the scheduler (which knows the graph); consumed by the renderers (C, Triton).
Out: frozen, hashable values; `Kernel.key()` is a stable content hash used for caches.

A kernel is a loop nest over output variables `x0..x{k-1}` (sizes `Kernel.loops`,
outermost first). Inside it:
- `Reduce` stages: an accumulator over its own reduction variables `r{j}` (sizes `rsizes`),
  placed at `depth` = how many outer loops it sits in (it depends only on `x0..x{depth-1}`).
  Later expressions refer to it with `Expr("acc", arg=name)`. Several reductions over the same
  rows that feed each other (softmax: max, then sum of exp) are several stages of one kernel:
  the row stays in cache, memory is read once.
- `Store` stages: write `value` at `index` of buffer `buf`, inside all `len(loops)` loops.
Index expressions are sympy integer expressions over the loop symbols (and `FloorDiv`/`ModIdx`
atoms of codegen/index_ops.py, which the renderers print as integer `/` and `%`). This module
imports sympy only in the functions that compute with such expressions: a process that loads
kernels from the program cache (lazy/program_cache.py) and only launches them never imports it.

Sizes may be symbolic (a dimension that changes between calls, lazy/dynamic.py). Then
`Kernel.sizes` names size symbols `d0, d1, ...` (`size_symbol`), each an int64 argument of the kernel
after its buffers and its scalars, and wherever a size appears (`Kernel.loops`, `Reduce.rsizes`,
`BufferArg.numel`, the coefficients of index expressions, the divisors of `FloorDiv`/`ModIdx`, mask
bounds, `StridedView` shapes, strides and offsets) it may be a sympy polynomial in them with
integer coefficients instead of an int. Every size symbol is at least 2. `Kernel.meta["hints"]`
gives a typical value of each (`{"d0": 18}`) for decisions that only affect speed (threads,
vector blocks, streaming, tiles): a kernel must compute the right values for every size, and
`hint(k, e)` evaluates a size at the hints. Kernels without size symbols hold plain ints, as
before.

Dtypes are names ("float32", "bfloat16", ...). Every `Expr` carries the dtype of the graph value
it computes; narrow dtypes compute in a wider one (`compute_dtype`: float16/bfloat16 in float32,
int8/uint8 in int32), so an arithmetic result of a narrow dtype may lie outside it (not rounded
to half, not wrapped into 8 bits). Where such a value must become a value of its dtype is decided
once, by codegen/legalize.py (`legalize`, run by the lowering): it inserts the explicit narrowing
nodes `round` and `wrap`, spells casts out (to bool as `ne(x, 0)`, float to int with its
out-of-range rule) and `verify` checks the result. The renderers only print it, from an op table
per language; a `Reduce` or `Store` converts to its own dtype as it finishes (like a store to
memory, the one narrowing the renderers do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sympy


# dtype name -> (C storage type, C compute type)
C_TYPES = {
    "float32": ("float", "float"),
    "float64": ("double", "double"),
    "float16": ("uint16_t", "float"),
    "bfloat16": ("uint16_t", "float"),
    "int32": ("int32_t", "int32_t"),
    "int64": ("int64_t", "int64_t"),
    "int8": ("int8_t", "int32_t"),
    "uint8": ("uint8_t", "int32_t"),
    "bool": ("uint8_t", "int"),  # computed as int: the width of float lanes, so masks vectorize
}
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8,
            "int8": 1, "uint8": 1, "bool": 1}  # bytes per element in memory, per dtype of C_TYPES
FLOATS = {"float32", "float64", "float16", "bfloat16"}


NARROW_INTS = {"int8", "uint8"}
HALFS = {"float16", "bfloat16"}
_COMPUTE = {"float16": "float32", "bfloat16": "float32", "int8": "int32", "uint8": "int32"}


def compute_dtype(name: str) -> str:
    """The dtype arithmetic happens in: 16-bit floats widen to float32, 8-bit ints to int32."""
    return _COMPUTE.get(name, name)


@dataclass(frozen=True)
class Expr:
    """One value in a kernel's expression DAG.

    op: "load" (arg = (buf, index, mask)), "const" (arg = value), "scalar" (arg = k: the kernel's
        k-th scalar argument, a Python number bound at launch), "index" (arg = sympy int expr),
        "acc" (arg = reduce name), "cast" (arg = target dtype), the narrowing nodes "round"
        (to float16/bfloat16) and "wrap" (to int8/uint8/int32), or an elementwise op name
        ("add", "exp", "where", ...; the graph's op names in lower case).
    dtype: the value's dtype; loads of 16-bit floats produce their storage dtype and are
        widened by the renderer, so `dtype` always says what is in memory / what torch sees.
        Arithmetic of a narrow dtype computes in `compute_dtype` (see the module docstring).
    mask: for loads, a tuple of conditions ("ge"|"lt", expr, bound) that must all hold,
        else the load reads 0 and must not touch memory.
    """

    op: str
    srcs: tuple[Expr, ...] = ()
    arg: Any = None
    dtype: str = "float32"

    def __hash__(self) -> int:  # cached: expression DAGs are deep and hashed often
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.op, self.srcs, repr(self.arg) if self.op == "const" else self.arg, self.dtype))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:  # a str's hash differs between processes: a pickle holds no `_hash`
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __eq__(self, other) -> bool:
        """Structural equality in time linear in the DAGs (constants compare as the hash does, by
        repr): each pair of nodes is compared once, where the generated field-by-field comparison
        walked a shared expression once per path to it (sinh of sinh, then a softmax: minutes)."""
        if self is other:
            return True
        if type(other) is not Expr:
            return NotImplemented
        same: set[tuple[int, int]] = set()
        stack = [(self, other)]
        while stack:
            a, b = stack.pop()
            if a is b or (id(a), id(b)) in same:
                continue
            if (a.op != b.op or a.dtype != b.dtype or len(a.srcs) != len(b.srcs) or hash(a) != hash(b)
                    or ((repr(a.arg) != repr(b.arg)) if a.op == "const" else (a.arg != b.arg))):
                return False
            same.add((id(a), id(b)))
            stack.extend(zip(a.srcs, b.srcs))
        return True


@dataclass(frozen=True)
class Reduce:
    name: str
    op: str  # "sum" | "max" | "prod"
    value: Expr
    dtype: str  # accumulator result dtype (the reduced node's dtype)
    rsizes: tuple[int | sympy.Expr, ...]
    rvars: tuple[str, ...]
    depth: int


@dataclass(frozen=True)
class Store:
    buf: int
    index: sympy.Expr
    value: Expr
    dtype: str


@dataclass(frozen=True)
class BufferArg:
    name: str
    dtype: str
    numel: int | sympy.Expr  # elements the kernel may address (bounds for the renderers / sanity checks)
    output: bool


@dataclass(frozen=True)
class Kernel:
    name: str
    buffers: tuple[BufferArg, ...]
    loops: tuple[int, ...]
    reduces: tuple[Reduce, ...]
    stores: tuple[Store, ...]
    meta: dict = field(default_factory=dict, compare=False, hash=False)  # bytes, flops, fusion notes
    # dtypes of the scalar arguments after the buffers (Expr "scalar" k reads the k-th); their values
    # are the program's scalar slots `meta["scalar_slots"]`, bound at each launch
    scalars: tuple[str, ...] = ()
    # names of the size symbols (int64 arguments after the scalars; see the module docstring)
    sizes: tuple[str, ...] = ()

    def key(self) -> str:
        """Content hash, independent of the kernel's name: of the kernel's repr while its expression
        trees are small (so the keys of kernels tuned before stay), else of its DAG written with each
        distinct expression once. A repr writes a shared expression once per use: sinh of sinh then
        a softmax, or an atan2's gradient, made trees of millions of nodes, and the repr ran for
        minutes. Computed once per Kernel value (printing its sympy indices is most of a new kernel's
        cost)."""
        key = self.__dict__.get("_key")
        if key is None:
            key = self._key()
            object.__setattr__(self, "_key", key)
        return key

    def _key(self) -> str:
        parts = (self.buffers, self.loops, self.reduces, self.stores) + ((self.scalars,) if self.scalars else ()) \
            + ((self.sizes,) if self.sizes else ())
        if _tree_size([r.value for r in self.reduces] + [s.value for s in self.stores]) <= REPR_KEY_NODES:
            text = repr(parts)
        else:
            text = _dag_text(self)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def numel(self) -> int | sympy.Expr:
        n = 1
        for s in self.loops:
            n *= s
        return n

    def __getattr__(self, name: str):
        """`reduces` and `stores` of a kernel made by `deferred_stages`, loaded when first read
        (Python calls this only for an attribute the kernel does not have)."""
        d = self.__dict__
        load = d.get("_stages")
        if load is not None and name in ("reduces", "stores"):
            d["reduces"], d["stores"] = load()
            d.pop("_stages", None)  # after the stages are set: another thread reading them meanwhile finds them
        if name in d:
            return d[name]
        raise AttributeError(f"'Kernel' object has no attribute {name!r}")


def deferred_stages(fields: dict, load) -> Kernel:
    """A kernel with the attributes `fields` (all of a Kernel's but `reduces` and `stores`) whose
    stages `load()` gives, as (reduces, stores), when first read. The program cache
    (lazy/program_cache.py) loads kernels so: launching a stored kernel reads its buffers, scalars,
    sizes and meta only, and unpickling its stages' index expressions would import sympy."""
    k = object.__new__(Kernel)
    k.__dict__.update(fields, _stages=load)
    return k


def size_symbol(name: str) -> sympy.Symbol:
    """The size symbol `name` ("d0", ...): a positive integer."""
    import sympy

    return sympy.Symbol(name, integer=True, positive=True)


def size_fn(exprs, names: tuple[str, ...]):
    """A function of the size values (in `names` order) giving the tuple of `exprs` (ints or
    polynomials in the size symbols) as ints: how a launch computes shapes, strides and offsets."""
    import sympy

    flat = [sympy.sympify(e) for e in exprs]
    if all(e.is_Integer for e in flat):
        values = tuple(int(e) for e in flat)
        return lambda *_: values
    gens = [size_symbol(n) for n in names]
    # each size as its terms (coefficient, exponent per symbol): evaluated without building code
    polys = [[(int(c), m) for m, c in sympy.Poly(e, *gens).terms()] for e in flat]

    def fn(*values):
        out = []
        for terms in polys:
            total = 0
            for c, exps in terms:
                for v, k in zip(values, exps):
                    if k:
                        c *= v ** k
                total += c
            out.append(total)
        return tuple(out)
    return fn


def hint(k: Kernel | ExternCall, e) -> int:
    """Size expression `e` of kernel `k` at its hints (`meta["hints"]`): an int for decisions of speed."""
    if isinstance(e, int):
        return e
    import sympy

    e = sympy.sympify(e)
    if e.is_Integer:
        return int(e)
    hints = k.meta.get("hints", {})
    return int(e.xreplace({size_symbol(n): v for n, v in hints.items()}))


@dataclass(frozen=True)
class StridedView:
    """How an extern kernel sees one buffer: element strides and offset from the buffer's start."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class GatherView:
    """How a GEMM reads an operand that is no strided view of its buffer but is affine in finer
    coordinates: each operand dim merges sub-dims (row-major), each sub-dim has its own element
    stride, and reads outside the buffer's padding bounds are zero. The windows of a convolution as
    an im2col matrix are one: rows (image, oh, ow), columns (channel, kh, kw), element
    x[n, c, oh*s + kh*d - p, ow*s + kw*d - p] or 0, read in place instead of copied out.

    `dims[i]`: the sub-dims operand dim i merges, outer first (indices into `sizes`; none for a
    dim of size 1). Element = buffer[offset + sum(coord * stride)] when every cond
    (coefficient per sub-dim, constant, bound) has 0 <= sum(coord * coefficient) + constant < bound,
    else 0. Batch dims (all but the last two) have at most one sub-dim and no cond."""

    shape: tuple[int, ...]
    dims: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    conds: tuple[tuple[tuple[int, ...], int, int], ...] = ()


@dataclass(frozen=True)
class ExternCall:
    """A library call on strided views of buffers: a contraction (a GEMM, or a GEMM template), or
    one of the ops of codegen/extern.py (gather, scatter_add, cumsum, sort...).

    `buffers[0]` is the output (contiguous); the others are inputs seen through `views`.
    `epilogue`, when set, is the elementwise kernel that consumes the GEMM result: its loops are
    the output's dims of size > 1 (batch dims, then M, then N; never merged), its one store writes
    `buffers[0]`'s slot at the output index, and `Expr("acc", arg="gemm")` (with the GEMM's dtype)
    stands for the GEMM result at that index. The GEMM result itself is never stored: a backend
    either evaluates the epilogue on the accumulator tile (one kernel) or runs the GEMM into the
    output buffer and then `epilogue_in_place(call)` over it. `meta["slots"]` lists the slots of
    out, a, b; the epilogue's own buffers are `epilogue.meta["slots"]`."""

    name: str
    op: str  # "matmul", or a name of codegen/extern.py OPS
    buffers: tuple[BufferArg, ...]
    views: tuple[StridedView | GatherView, ...]  # GatherView: a GEMM operand read through its index map
    epilogue: Kernel | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    sizes: tuple[str, ...] = ()  # size symbols its views use, bound at launch (see the module docstring)
    params: tuple = ()  # the op's own arguments (an axis, k of topk, descending...): ints, bools, strings

    def key(self) -> str:
        epi = self.epilogue.key() if self.epilogue is not None else None
        return hashlib.sha256(repr((self.op, self.buffers, self.views, epi)
                                   + ((self.sizes,) if self.sizes else ())
                                   + ((self.params,) if self.params else ())).encode()).hexdigest()[:24]

    def without_epilogue(self) -> ExternCall:
        """The bare GEMM, writing its result into `buffers[0]`."""
        if self.epilogue is None:
            return self
        meta = dict(self.meta)
        meta["bytes_read"] = meta["gemm_bytes_read"]
        return ExternCall(self.name, self.op, self.buffers, self.views, None, meta, self.sizes, self.params)


def epilogue_in_place(call: ExternCall) -> Kernel:
    """`call.epilogue` as a kernel of its own that reads the GEMM result from the output buffer
    and overwrites it (each element is read before it is written, at the same index)."""
    k = call.epilogue
    (store,) = k.stores
    result = Expr("load", (), (store.buf, store.index, ()), call.buffers[0].dtype)
    memo: dict = {}

    def swap(e: Expr) -> Expr:
        hit = memo.get(id(e))
        if hit is None:
            hit = result if e.op == "acc" and e.arg == "gemm" else Expr(e.op, tuple(swap(s) for s in e.srcs),
                                                                          e.arg, e.dtype)
            memo[id(e)] = hit
        return hit

    meta = dict(k.meta)
    meta["bytes_read"] = k.meta["bytes_read"] + k.meta["bytes_written"]
    return Kernel(f"{k.name}_epilogue", k.buffers, k.loops, k.reduces,
                  (Store(store.buf, store.index, swap(store.value), store.dtype),), meta, k.scalars, k.sizes)


def subst_expr(e: Expr, rep: dict, memo: dict | None = None) -> Expr:
    """`e` with index symbols replaced in every load index, mask, `index` and `valid` argument.
    `memo` (by id) keeps shared sub-expressions shared; pass one dict for one substitution."""
    import sympy

    memo = {} if memo is None else memo
    hit = memo.get(id(e))
    if hit is not None:
        return hit
    srcs = tuple(subst_expr(s, rep, memo) for s in e.srcs)
    arg = e.arg
    if e.op == "load":
        b, index, mask = arg
        arg = (b, sympy.expand(sympy.sympify(index).xreplace(rep)),
               tuple((c, sympy.sympify(a).xreplace(rep), v) for c, a, v in mask))
    elif e.op == "index":
        arg = sympy.expand(sympy.sympify(arg).xreplace(rep))
    elif e.op == "valid":
        arg = tuple((c, sympy.sympify(a).xreplace(rep), v) for c, a, v in arg)
    out = Expr(e.op, srcs, arg, e.dtype)
    memo[id(e)] = out
    return out


REPR_KEY_NODES = 20_000  # expression trees up to this many nodes (uses counted apart) key by repr


def _postorder(roots) -> list[Expr]:
    """Every distinct expression under `roots`, each after its sources."""
    seen, out, stack = set(), [], [(r, False) for r in reversed(roots)]
    while stack:
        e, done = stack.pop()
        if done:
            out.append(e)
        elif id(e) not in seen:
            seen.add(id(e))
            stack.append((e, True))
            stack.extend((s, False) for s in reversed(e.srcs))
    return out


def _tree_size(roots) -> int:
    """How many nodes the expressions under `roots` have as trees (a shared one counted per use)."""
    size: dict[int, int] = {}
    for e in _postorder(roots):
        size[id(e)] = 1 + sum(size[id(s)] for s in e.srcs)
    return sum(size[id(r)] for r in roots)


def _dag_text(k: Kernel) -> str:
    """The kernel as text with each distinct expression once, its sources named by number."""
    number: dict[int, int] = {}
    lines = ["dag", repr((k.buffers, k.loops))]
    for e in _postorder([r.value for r in k.reduces] + [s.value for s in k.stores]):
        number[id(e)] = len(number)
        lines.append(f"{number[id(e)]}: {e.op} {e.dtype} {e.arg!r} {[number[id(s)] for s in e.srcs]}")
    lines += [repr((r.name, r.op, number[id(r.value)], r.dtype, r.rsizes, r.rvars, r.depth)) for r in k.reduces]
    lines += [repr((s.buf, s.index, number[id(s.value)], s.dtype)) for s in k.stores]
    lines.append(repr((k.scalars, k.sizes)))
    return "\n".join(lines)


def walk_exprs(roots) -> list[Expr]:
    """Every distinct expression under `roots` (by identity), each once."""
    seen, out, stack = set(), [], list(roots)
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        stack.extend(e.srcs)
    return out


def kernel_exprs(k: Kernel) -> list[Expr]:
    return walk_exprs([r.value for r in k.reduces] + [s.value for s in k.stores])


def index_exprs(k: Kernel) -> tuple[list, list]:
    """(addresses: store and load indices, conditions: masks, `valid` bounds and `index` values):
    every integer expression of a kernel, split by whether it only computes an address."""
    addresses, conditions = [s.index for s in k.stores], []
    for e in kernel_exprs(k):
        if e.op == "load":
            addresses.append(e.arg[1])
            conditions += [a for _, a, _ in e.arg[2]]
        elif e.op == "index":
            conditions.append(e.arg)
        elif e.op == "valid":
            conditions += [a for _, a, _ in e.arg]
    return addresses, conditions
