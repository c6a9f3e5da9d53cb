"""The graph IR: immutable, hash-consed nodes and the dtype table.

In:  nothing (this module imports nothing else of the project).
Out: `Node` values built with `node(...)` and the op/dtype vocabulary every stage speaks.

Invariants
- A node is `(op, srcs, arg, dtype, shape)` and is hash-consed: building the same
  structure twice returns the *same object*, so equality is identity and nodes are cheap
  dict keys. `node()` is the only constructor.
- Shapes are tuples of ints (0-d is `()`); the shape rules of every op live in `node()`,
  so a node that exists is well formed.
- REDUCE keeps the reduced axes with size 1 (keepdim); the Tensor layer reshapes them away.
- BUFFER leaves point at realized memory through `arg` (a `Buffer`, compared by identity);
  `structure_key()` replaces them by their position, dtype, shape and strides, so the same
  program built twice over different data gives the same key.
- Python numbers are kernel arguments. A CONST node whose value is not a `literal` (0, 1, -1, 2,
  0.5, infinities and NaN, bools, integer limits: values whose literal form matters for speed or
  meaning) enters `structure_key()` as a scalar slot, not by value: `x * lr` with a new `lr` is the
  same program, and its kernels take the value as an argument.
- Values are fixed when created. A `Buffer` counts the in-place writes into its memory
  (`version`); a BUFFER node is made for one version (it is part of the node's key) and reads that
  version. The Tensor layer makes sure no pending node still reads a buffer when its memory is
  overwritten (lazy/inplace.py); `structure_key()` checks it, so a stale read is an error, never a
  silently wrong value.
"""

from __future__ import annotations

import enum
import math
import weakref
from dataclasses import dataclass
from typing import Any


# one instance per dtype (DTYPES): equality and hash are identity, in C (every node key hashes a dtype)
@dataclass(frozen=True, eq=False)
class DType:
    name: str
    itemsize: int
    kind: str  # "f" float, "i" signed int, "b" bool
    ctype: str  # storage type in C
    tltype: str  # Triton pointer element type, e.g. "fp32"

    def __repr__(self) -> str:
        return f"lazy.{self.name}"

    def __reduce__(self):  # copies and unpickled values are the one instance again
        return (_dtype_named, (self.name,))

    def __eq__(self, other) -> bool:
        """Identity among lazy dtypes; torch's dtype of the same name compares equal too, so code
        written for torch (`t.dtype == torch.float32`) runs unchanged. The hash stays identity (the
        way numpy's dtypes equal their names): a set or dict key of one kind misses the other."""
        if self is other:
            return True
        return not isinstance(other, DType) and type(other).__name__ == "dtype" and str(other) == f"torch.{self.name}"

    __hash__ = object.__hash__

    @property
    def is_float(self) -> bool:
        return self.kind == "f"


float32 = DType("float32", 4, "f", "float", "fp32")
float64 = DType("float64", 8, "f", "double", "fp64")
float16 = DType("float16", 2, "f", "uint16_t", "fp16")
bfloat16 = DType("bfloat16", 2, "f", "uint16_t", "bf16")
int32 = DType("int32", 4, "i", "int32_t", "i32")
int64 = DType("int64", 8, "i", "int64_t", "i64")
int8 = DType("int8", 1, "i", "int8_t", "i8")
uint8 = DType("uint8", 1, "u", "uint8_t", "u8")
bool_ = DType("bool", 1, "b", "uint8_t", "i1")


def _dtype_named(name: str) -> DType:
    return DTYPES[name]


DTYPES = {d.name: d for d in (float32, float64, float16, bfloat16, int32, int64, int8, uint8, bool_)}


class Op(enum.Enum):
    __hash__ = object.__hash__  # members are singletons compared by identity; Enum's hash is Python code
    # leaves
    BUFFER = enum.auto()  # arg: Buffer (realized memory)
    CONST = enum.auto()  # arg: python scalar, broadcast to `shape`
    IOTA = enum.auto()  # shape (n,): element i is i (arange without memory)
    # unary elementwise
    NEG = enum.auto()
    EXP = enum.auto()
    LOG = enum.auto()
    SQRT = enum.auto()
    SIN = enum.auto()
    COS = enum.auto()
    TANH = enum.auto()
    ERF = enum.auto()
    ABS = enum.auto()
    RECIP = enum.auto()
    FLOOR = enum.auto()
    CEIL = enum.auto()
    TRUNC = enum.auto()
    NOT = enum.auto()  # logical not (bool) / bitwise not (int)
    ISNAN = enum.auto()
    ISINF = enum.auto()
    CAST = enum.auto()  # arg: target DType (== dtype)
    DETACH = enum.auto()  # identity for values, a wall for gradients
    STORED = enum.auto()  # value of srcs[0] (a realized BUFFER); gradients flow to arg, the node it stores
    # binary elementwise (operands have equal shape and dtype, see node())
    ADD = enum.auto()
    SUB = enum.auto()
    MUL = enum.auto()
    DIV = enum.auto()  # true division for floats, truncating division for ints
    FLOORDIV = enum.auto()  # python/torch floor division
    MOD = enum.auto()  # python/torch remainder (sign of divisor)
    POW = enum.auto()
    MAX = enum.auto()  # NaN-propagating like torch.maximum
    MIN = enum.auto()
    LT = enum.auto()
    LE = enum.auto()
    EQ = enum.auto()
    NE = enum.auto()
    AND = enum.auto()
    OR = enum.auto()
    XOR = enum.auto()
    # ternary
    WHERE = enum.auto()  # srcs: (cond bool, a, b)
    # reduction: arg = (axes,), keepdim shape
    SUM = enum.auto()
    RMAX = enum.auto()  # NaN-propagating max
    PROD = enum.auto()
    # movement: never copies, only changes the index map
    RESHAPE = enum.auto()  # arg: new shape
    PERMUTE = enum.auto()  # arg: axis order
    EXPAND = enum.auto()  # arg: new shape (size-1 axes grow)
    PAD = enum.auto()  # arg: ((before, after), ...) ; padded positions read as 0 / False
    SHRINK = enum.auto()  # arg: ((start, stop), ...)
    FLIP = enum.auto()  # arg: tuple of axes
    # arg: (axis, k, s, d): the axis (size n) becomes two, (O, k), out[.., o, j, ..] = src[.., o*s + j*d, ..]
    # with O = (n - d*(k-1) - 1) // s + 1: the windows of a convolution or a pooling, affine in (o, j)
    WINDOW = enum.auto()
    # contraction: (a [..., M, K], b [..., K, N]) -> [..., M, N], batch dims equal; its own kernel
    MATMUL = enum.auto()
    # a library call on realized inputs (gather, scatter_add, cumsum, sort's indices...: the table in
    # codegen/extern.py); arg: (name, params); dtype and shape given by the caller; its own kernel
    EXTERN = enum.auto()


UNARY = frozenset({Op.NEG, Op.EXP, Op.LOG, Op.SQRT, Op.SIN, Op.COS, Op.TANH, Op.ERF, Op.ABS, Op.RECIP,
                   Op.FLOOR, Op.CEIL, Op.TRUNC, Op.NOT, Op.ISNAN, Op.ISINF, Op.CAST, Op.DETACH})
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.FLOORDIV, Op.MOD, Op.POW, Op.MAX, Op.MIN,
                    Op.LT, Op.LE, Op.EQ, Op.NE, Op.AND, Op.OR, Op.XOR})
COMPARE = frozenset({Op.LT, Op.LE, Op.EQ, Op.NE, Op.ISNAN, Op.ISINF})
ELEMENTWISE = UNARY | BINARY | {Op.WHERE}
REDUCE = frozenset({Op.SUM, Op.RMAX, Op.PROD})
MOVEMENT = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.PAD, Op.SHRINK, Op.FLIP, Op.WINDOW})
REDUCE_IDENTITY = {Op.SUM: 0, Op.RMAX: float("-inf"), Op.PROD: 1}


class Buffer:
    """Realized memory: a torch tensor (any strides) read by one or more BUFFER nodes.

    version: in-place writes into the memory so far (a BUFFER node reads one version).
    owned: lazy allocated the memory (a kernel's output, a private host copy), so a tensor holding
        it may have its next value written into it; memory wrapped from the caller's torch tensor or
        numpy array is never written by lazy.
    owner: a weak reference to the Tensor whose value the buffer holds and which may overwrite it
        (None: not claimed yet). Other tensors holding the buffer only read it.
    dynamic: the dims `lazy.mark_dynamic` declared to change between calls (lazy/dynamic.py)."""

    __slots__ = ("__weakref__", "_layout", "data", "dynamic", "owned", "owner", "version")

    def __init__(self, data: Any, owned: bool = False):
        self.data = data
        self.version = 0
        self.owned = owned
        self.owner = None
        self.dynamic = frozenset()
        self._layout = None

    @property
    def layout(self) -> tuple:
        """(strides, storage offset, device name) of `data`: asked by every realize that reads the
        buffer, so made once (a buffer's memory never changes its layout: lazy writes into it only
        through kernels and copies)."""
        lay = self._layout
        if lay is None:
            d = self.data
            lay = self._layout = (tuple(d.stride()), int(d.storage_offset()), str(d.device))
        return lay

    def __repr__(self) -> str:
        return f"Buffer({tuple(self.data.shape)}, {self.data.dtype}, {self.data.device})"


class Node:
    """One immutable graph node. Build with `node()`; compare with `is`."""

    __slots__ = ("__weakref__", "_key", "_static", "arg", "device", "dtype", "op", "shape", "srcs")
    op: Op
    srcs: tuple[Node, ...]
    arg: Any
    dtype: DType
    shape: tuple[int, ...]

    def __setattr__(self, k, v):  # immutability
        raise AttributeError("graph nodes are immutable")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self) -> str:
        arg = "" if self.arg is None else f", {self.arg!r}"
        return f"<{self.op.name} {self.dtype.name}{list(self.shape)}{arg}>"


# structural key -> weak reference to the one live node with that key (hash-consing). A plain
# dict of weak references whose callback drops the entry: WeakValueDictionary's KeyedRef runs
# Python code per reference and cost a third of node creation, which every op of every plain
# (non-jit) call pays.
_interned: dict[tuple, weakref.ref] = {}


def _arg_key(op: Op, arg: Any) -> Any:
    if op is Op.BUFFER:  # one node per version of the memory: a write makes later reads new nodes
        return (id(arg), arg.version)
    if op is Op.CONST:  # 1, 1.0 and True hash alike in python; keep them apart; keep NaN equal
        return (type(arg).__name__, repr(arg))
    if op is Op.STORED:  # the stored node only matters to autograd, never to values or schedules
        return None
    return arg


class _KeyedRef(weakref.ref):
    """A weak reference that knows its key in `_interned` (created and filled in C: no Python frame)."""

    __slots__ = ("key",)


def _forget(ref: _KeyedRef) -> None:  # the node died: drop its entry unless a new node took the key
    if _interned.get(ref.key) is ref:
        del _interned[ref.key]


def _make(op: Op, srcs: tuple[Node, ...], arg: Any, dtype: DType, shape: tuple[int, ...]) -> Node:
    key = (op, tuple(map(id, srcs)), _arg_key(op, arg), dtype, shape)
    ref = _interned.get(key)
    if ref is not None:
        n = ref()
        if n is not None:
            return n
    n = object.__new__(Node)
    # the device of the buffers under n, derived once here (None: constants only, they go anywhere;
    # "mixed": buffers on several devices, which the Tensor layer reports at the op)
    if op is Op.BUFFER:
        dev = str(arg.data.device)
    else:
        dev = None
        for s in srcs:
            d = s.device
            if d is not None and d != dev:
                dev = d if dev is None else "mixed"
    # slots set through their descriptors (Node.__setattr__ refuses, nodes are immutable). A
    # BUFFER's arg keeps its buffer alive as long as the node: the id() in the key stays meaningful
    _SET_OP(n, op)
    _SET_SRCS(n, srcs)
    _SET_ARG(n, arg)
    _SET_DTYPE(n, dtype)
    _SET_SHAPE(n, shape)
    _SET_KEY(n, key)
    # what structure_key records for n besides its sources (a buffer's slot and layout come later,
    # a runtime scalar's slot too: its value is not part of the structure)
    _SET_STATIC(n, (op, None if op is Op.BUFFER else SCALAR if op is Op.CONST and not literal(arg, dtype) else key[2],
                    dtype.name, shape))
    _SET_DEVICE(n, dev)
    ref = _KeyedRef(n, _forget)
    ref.key = key
    _interned[key] = ref
    return n


_SET_OP, _SET_SRCS, _SET_ARG, _SET_DTYPE, _SET_SHAPE, _SET_KEY, _SET_STATIC, _SET_DEVICE = (
    Node.__dict__[name].__set__ for name in ("op", "srcs", "arg", "dtype", "shape", "_key", "_static", "device"))


SCALAR = "scalar"  # a CONST's structure when its value is a kernel argument


def literal(value: Any, dtype: DType) -> bool:
    """Whether a constant stays in the kernel's source (see the module docstring): values whose
    literal form lets the compiler simplify (x*1, x+0, x*2, x*0.5, -x), the fills of masks (+-inf),
    NaN, bools, and the integer limits (clamps, wraps). Every other number is a kernel argument, so
    a program that changes it every step compiles once."""
    if dtype.kind == "b" or value in _LITERALS:
        return True
    if dtype.kind == "f":
        return math.isnan(value) or math.isinf(value)
    bits = 8 * dtype.itemsize
    return value in ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dtype.kind == "i" else (0, (1 << bits) - 1))


_LITERALS = frozenset({0, 1, -1, 2, -2, 0.5, -0.5})


class GraphError(ValueError):
    """A node that would be malformed. The Tensor layer checks first and gives user-level messages."""


def _shape(shape) -> tuple[int, ...]:
    return tuple(map(int, shape))


def node(op: Op, srcs: tuple[Node, ...] = (), arg: Any = None, dtype: DType | None = None,
         shape: tuple[int, ...] | None = None) -> Node:
    """Build (or find) the node; checks the shape rule of `op` and derives dtype/shape."""
    srcs = tuple(srcs)
    if op is Op.BUFFER:
        assert dtype is not None and shape is not None
        return _make(op, (), arg, dtype, _shape(shape))
    if op is Op.CONST:
        assert dtype is not None and shape is not None
        return _make(op, (), arg, dtype, _shape(shape))
    if op is Op.IOTA:
        assert dtype is not None and shape is not None and len(shape) == 1
        return _make(op, (), None, dtype, _shape(shape))
    if op is Op.EXTERN:  # the Tensor layer checked its operands against the op's rule
        assert dtype is not None and shape is not None and isinstance(arg, tuple) and isinstance(arg[0], str)
        return _make(op, srcs, arg, dtype, _shape(shape))
    if op is Op.STORED:
        (b,) = srcs
        if b.op is not Op.BUFFER or arg.shape != b.shape or arg.dtype != b.dtype:
            raise GraphError(f"STORED: {b} must be the BUFFER holding the value of {arg}")
        return _make(op, srcs, arg, b.dtype, b.shape)
    s0 = srcs[0]
    if op in UNARY:
        if op is Op.CAST:
            return _make(op, srcs, arg, arg, s0.shape)
        out = bool_ if op in COMPARE else s0.dtype
        return _make(op, srcs, None, out, s0.shape)
    if op in BINARY:
        a, b = srcs
        if a.shape != b.shape or a.dtype != b.dtype:
            raise GraphError(f"{op.name}: operands {a} and {b} must match in shape and dtype")
        return _make(op, srcs, None, bool_ if op in COMPARE else a.dtype, a.shape)
    if op is Op.WHERE:
        c, a, b = srcs
        if not (c.shape == a.shape == b.shape) or c.dtype != bool_ or a.dtype != b.dtype:
            raise GraphError(f"WHERE: {c}, {a}, {b} must share a shape, cond bool, branches one dtype")
        return _make(op, srcs, None, a.dtype, a.shape)
    if op in REDUCE:
        axes = tuple(sorted({int(a) for a in arg}))
        if any(not 0 <= a < len(s0.shape) for a in axes):
            raise GraphError(f"{op.name}: axes {axes} out of range for {s0}")
        shape = tuple(1 if i in axes else s for i, s in enumerate(s0.shape))
        return _make(op, srcs, axes, s0.dtype, shape)
    if op is Op.MATMUL:
        a, b = srcs
        if (len(a.shape) < 2 or len(a.shape) != len(b.shape) or a.shape[:-2] != b.shape[:-2]
                or a.shape[-1] != b.shape[-2] or a.dtype != b.dtype):
            raise GraphError(f"MATMUL: {a} and {b} must be [..., M, K] and [..., K, N] of one dtype")
        return _make(op, srcs, None, a.dtype, a.shape[:-1] + b.shape[-1:])
    if op is Op.RESHAPE:
        shape = _shape(arg)
        if prod(shape) != s0.numel:
            raise GraphError(f"RESHAPE: {s0.shape} -> {shape} changes the element count")
        if shape == s0.shape:
            return s0
        return _make(op, srcs, shape, s0.dtype, shape)
    if op is Op.PERMUTE:
        order = tuple(int(a) for a in arg)
        if sorted(order) != list(range(len(s0.shape))):
            raise GraphError(f"PERMUTE: {order} is not a permutation of {len(s0.shape)} axes")
        if order == tuple(range(len(order))):
            return s0
        return _make(op, srcs, order, s0.dtype, tuple(s0.shape[a] for a in order))
    if op is Op.EXPAND:
        shape = _shape(arg)
        if len(shape) != len(s0.shape) or any(a != b and a != 1 for a, b in zip(s0.shape, shape)):
            raise GraphError(f"EXPAND: {s0.shape} -> {shape}: only size-1 axes may grow")
        if shape == s0.shape:
            return s0
        return _make(op, srcs, shape, s0.dtype, shape)
    if op is Op.PAD:
        pads = tuple((int(a), int(b)) for a, b in arg)
        if len(pads) != len(s0.shape) or any(a < 0 or b < 0 for a, b in pads):
            raise GraphError(f"PAD: {pads} invalid for {s0.shape}")
        if all(a == 0 and b == 0 for a, b in pads):
            return s0
        return _make(op, srcs, pads, s0.dtype, tuple(s + a + b for s, (a, b) in zip(s0.shape, pads)))
    if op is Op.SHRINK:
        bounds = tuple((int(a), int(b)) for a, b in arg)
        if len(bounds) != len(s0.shape) or any(not 0 <= a <= b <= s for (a, b), s in zip(bounds, s0.shape)):
            raise GraphError(f"SHRINK: {bounds} invalid for {s0.shape}")
        if all(a == 0 and b == s for (a, b), s in zip(bounds, s0.shape)):
            return s0
        return _make(op, srcs, bounds, s0.dtype, tuple(b - a for a, b in bounds))
    if op is Op.FLIP:
        axes = tuple(sorted({int(a) for a in arg if s0.shape[int(a)] > 1}))
        if not axes:
            return s0
        return _make(op, srcs, axes, s0.dtype, s0.shape)
    if op is Op.WINDOW:
        axis, k, st, dil = (int(a) for a in arg)
        if not 0 <= axis < len(s0.shape) or k < 1 or st < 1 or dil < 1 or s0.shape[axis] < dil * (k - 1) + 1:
            raise GraphError(f"WINDOW: {arg} invalid for {s0.shape}")
        o = (s0.shape[axis] - dil * (k - 1) - 1) // st + 1
        return _make(op, srcs, (axis, k, st, dil), s0.dtype, s0.shape[:axis] + (o, k) + s0.shape[axis + 1:])
    raise GraphError(f"unknown op {op}")


def prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


const_hook = None  # lazy.jit while it records: called (node, expression or None, found) per const() call


def const(value: Any, dtype: DType, shape: tuple[int, ...] = ()) -> Node:
    """A constant of `dtype` broadcast to `shape` (stored as a 0-d CONST expanded, so it interns once).
    An int wraps into `dtype` (two's complement), as torch converts a Python int for an op on an
    integer tensor (`uint8 == 256` compares with 0)."""
    expr = getattr(value, "_expr", None)  # a number lazy.jit traces (lazy/symnum.py)
    if expr is not None and dtype.kind != "b" and (dtype.kind == "f" or isinstance(value._value, int)):
        value = float(value._value) if dtype.kind == "f" else value._value  # (read without a guard)
    elif expr is not None:
        expr = None
    if dtype.kind == "b":
        value = bool(value)
    elif dtype.kind in "iu":
        bits = 8 * dtype.itemsize
        wrapped = int(value) % (1 << bits)
        if dtype.kind == "i" and wrapped >> (bits - 1):
            wrapped -= 1 << bits
        if wrapped != value:
            expr = None  # a wrapped number: the kernel gets this one value
        value = wrapped
    else:
        value = float(value)
    shape = tuple(shape)
    if const_hook is not None:
        found = (Op.CONST, (), _arg_key(Op.CONST, value), dtype, _shape(shape)) in _interned
        const_hook(n := node(Op.CONST, (), value, dtype, shape), expr, found)
        return n
    return node(Op.CONST, (), value, dtype, shape)


def toposort(roots: list[Node], children=None) -> list[Node]:
    """Nodes reachable from `roots`, every node after its sources (iterative: graphs get deep).
    `children(n)` overrides which edges are followed (autograd follows gradient edges)."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            order.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        for s in reversed(n.srcs if children is None else children(n)):
            if id(s) not in seen:
                stack.append((s, False))
    return order


class StaleRead(RuntimeError):
    """A pending value reads a buffer that was overwritten after the value was built."""


def buffer_version(n: Node) -> int:
    """The version of its buffer that BUFFER node `n` reads."""
    return n._key[2][1]


def buffer_layout(buf: Buffer) -> tuple:
    return buf.layout


def structure_key(roots: list[Node]) -> tuple[tuple, list[Buffer], list[Node]]:
    """A key that is equal for structurally equal graphs, the buffers in key order, and the CONST
    nodes that are kernel arguments (scalars) in key order.

    Buffers are numbered by first appearance, so `a + b` and `a + a` differ while two
    separately built `a + b` programs over different data are equal; so are scalars: `x * 0.3`
    and `x * 0.7` share a key (`literal` says which constants are part of it instead).
    """
    # toposort's walk, recording each node as it is finished (every realize of a cached program
    # runs this: one pass, the per-node part precomputed when the node was made; nodes and
    # buffers hash by identity, so they key the dicts themselves)
    index: dict[Node, int] = {}
    buffers: list[Buffer] = []
    buf_slot: dict[Buffer, int] = {}
    scalars: list[Node] = []
    parts = []
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            if n.op is Op.BUFFER:
                b = n.arg
                if n._key[2][1] != b.version:
                    raise StaleRead(f"lazy internal error (please report): a pending value reads version "
                                    f"{n._key[2][1]} of a {list(n.shape)} buffer overwritten since (now version "
                                    f"{b.version})")
                slot = buf_slot.get(b)
                if slot is None:
                    slot = buf_slot[b] = len(buffers)
                    buffers.append(b)
                parts.append((n._static, ("buf", slot, b.layout)))
            elif n._static[1] is SCALAR:
                parts.append((n._static, len(scalars)))
                scalars.append(n)
            else:
                parts.append((n._static, tuple([index[s] for s in n.srcs])))
            index[n] = len(index)
            continue
        if n in index:
            continue
        stack.append((n, True))
        for s in reversed(n.srcs):
            if s not in index:
                stack.append((s, False))
    return (tuple(parts), tuple([index[r] for r in roots])), buffers, scalars

