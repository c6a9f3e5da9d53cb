"""The user-facing lazy Tensor: PyTorch names and semantics over the immutable graph IR.

In:  Python scalars/lists, numpy arrays, torch tensors (wrapped zero-copy as BUFFER leaves).
Out: `Tensor` values that only build graph nodes; `_realize` runs a graph when a value is
     needed (`.numpy() .item() .tolist() .torch() repr bool .realize() lazy.realize(...)`).

Invariants
- A Tensor is a mutable handle on an immutable node. Every op builds nodes through four
  internal constructors (`_ew` elementwise, `_mv` movement copy, `_red` reduce, `_view`),
  so autograd can later hook in at a few places.
- Argument checking happens here, with messages naming the op, shapes/dtypes and the
  expectation; `GraphError` from the IR never reaches the user.
- Aliasing follows torch. A view keeps its root `_base`, the IR movement steps that rebuild its
  node from the base node, and torch-style strides (only to decide, like torch, whether
  `reshape` is a view or a copy and when `view` must fail). In-place writes are functional: a
  write to a view rebuilds the base as `where(mask, scatter(value), base)` from the inverse
  steps (movement ops only) and bumps the base's version; views rebuild lazily on a version
  change. Readers that captured an older node keep the old value: nodes are immutable.
- After realization a tensor's node is replaced by a BUFFER node of the result.
- A written tensor's value is computed with the next realization of anything, and memory is
  overwritten in place only when no pending value still reads it (lazy/inplace.py).
"""

from __future__ import annotations

import functools
import math
import operator
import os
import sys
import warnings
import weakref
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import torch

from lazy import amp, autograd, inplace, runtime
from lazy.dtypes import DTypeError, as_dtype, can_cast, get_default_dtype, result_type, to_torch, torch_default
from lazy.graph import (
    MOVEMENT,
    Buffer,
    DType,
    GraphError,
    Node,
    Op,
    bfloat16,
    bool_,
    buffer_version,
    const,
    float16,
    float32,
    float64,
    int8,
    int32,
    int64,
    node,
    prod,
    uint8,
)
from lazy.symnum import SymFloat, SymInt

__all__ = ["Tensor", "arange", "cat", "concat", "default_device", "einsum", "empty", "empty_like", "eye", "from_numpy",
           "full",
           "full_like", "linspace", "manual_seed", "ones", "ones_like", "rand", "rand_like", "randint",
           "randn", "randn_like", "realize", "return_types", "stack", "std_mean", "tensor", "var_mean", "where",
           "xlogy", "zeros", "zeros_like"]


# ---------------------------------------------------------------- argument normalization, once

def _fmt(shape) -> str:
    return str(tuple(shape))


def _dim(op: str, d, ndim: int, new: int = 0) -> int:
    """Normalize one dim; 0-d tensors accept dim 0 and -1 like torch; `new` dims may be inserted."""
    try:
        d = operator.index(d)
    except TypeError:
        raise TypeError(f"{op}: dim must be an int, got {type(d).__name__}") from None
    n = max(ndim + new, 1)
    if not -n <= d < n:
        raise IndexError(f"{op}: dim {d} out of range for a {ndim}-d tensor (expected {-n}..{n - 1})")
    return d % n


def _dims(op: str, dim, ndim: int) -> tuple[int, ...]:
    """dim=None/()/[] means all dims (torch); else an int or a sequence; sorted, no repeats."""
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    ds = [_dim(op, d, ndim) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
    if len(set(ds)) != len(ds):
        raise RuntimeError(f"{op}: dim {dim} names a dim more than once")
    return tuple(sorted(ds)) if ndim else ()


def _sizes(op: str, size) -> tuple[int, ...]:
    """Shape given as varargs or as one tuple/list/torch.Size, like torch."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = size[0]
    try:
        return tuple(operator.index(s) for s in size)
    except TypeError:
        raise TypeError(f"{op}: sizes must be ints, got {tuple(size)!r}") from None


def _new_shape(op: str, size) -> tuple[int, ...]:
    shape = _sizes(op, size)
    if any(s < 0 for s in shape):
        raise RuntimeError(f"{op}: negative dimension in size {shape}")
    return shape


def _broadcast(op: str, *shapes) -> tuple[int, ...]:
    """NumPy broadcasting of all `shapes`; the error names every shape and the first bad dim."""
    out: tuple[int, ...] = shapes[0] if shapes and type(shapes[0]) is tuple else ()
    for s in shapes:
        if s == out:  # the common case: operands of one shape
            continue
        n = max(len(out), len(s))
        a, b = (1,) * (n - len(out)) + out, (1,) * (n - len(s)) + tuple(s)
        merged = []
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y and x != 1 and y != 1:
                raise RuntimeError(f"{op}: shapes {' and '.join(_fmt(t) for t in shapes)} cannot broadcast: "
                                   f"dim {i - n} has sizes {x} and {y} (expected equal sizes or 1)")
            merged.append(y if x == 1 else x)
        out = tuple(merged)
    return out


def default_device() -> str:
    """'cuda' when torch sees a GPU (kernels are Triton), else 'cpu' (kernels are C)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device(op: str, device) -> str:
    """A validated device name ('cpu' or 'cuda[:n]'); None means the default device."""
    if device is None:
        return default_device()
    try:
        d = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:  # torch does not know the name either
        d = None
    if d is not None and d.type == "cpu":
        return "cpu"
    if d is not None and d.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device {str(device)!r} requested, but torch sees no CUDA GPU "
                               "(torch.cuda.is_available() is False); expected 'cpu' on this machine")
        return str(d) if d.index is not None else "cuda"
    raise RuntimeError(f"{op}: device {str(device)!r} is not supported (expected 'cpu' or 'cuda')")


def node_device(n: Node) -> str | None:
    """The device of the buffers under `n` (None for graphs of constants only, which go anywhere)."""
    return n.device


def _same_device(op: str, *ts) -> None:
    devs = {t._node.device for t in ts if isinstance(t, Tensor)} - {None}
    if len(devs) > 1:
        raise RuntimeError(f"{op}: expected all tensors on one device, got {', '.join(sorted(devs))} "
                           "(move them with .to(device) first)")


_contig_cache: dict[tuple, tuple[int, ...]] = {}


def _contig(shape) -> tuple[int, ...]:
    """Contiguous strides of `shape` (every new tensor asks: cached per shape)."""
    hit = _contig_cache.get(shape)
    if hit is not None:
        return hit
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= max(s, 1)
    out = tuple(reversed(st))
    if isinstance(shape, tuple) and len(_contig_cache) < 4096:
        _contig_cache[shape] = out
    return out


def _view_strides(old, stride, new):
    """torch's computeStride: strides of `new` as a view of (old, stride), or None if it must copy."""
    if not old:
        return (1,) * len(new)
    if prod(old) == 0:
        return tuple(stride) if tuple(old) == tuple(new) else _contig(new)
    out, view_d = [0] * len(new), len(new) - 1
    chunk, tnum, vnum = stride[-1], 1, 1
    for td in range(len(old) - 1, -1, -1):
        tnum *= old[td]
        if td == 0 or (old[td - 1] != 1 and stride[td - 1] != tnum * chunk):
            while view_d >= 0 and (vnum < tnum or new[view_d] == 1):
                out[view_d] = vnum * chunk
                vnum *= new[view_d]
                view_d -= 1
            if vnum != tnum:
                return None
            if td > 0:
                chunk, tnum, vnum = stride[td - 1], 1, 1
    return tuple(out) if view_d == -1 else None


def leaf_node_ids(t) -> list[int]:
    """Ids of the nodes that stand for leaf `t` in graphs: its node, and the node it had just before
    it was last realized (a leaf written under no_grad and then read, e.g. printed, before
    backward: graphs built in between hold that node). Only nodes alive now, so no id is stale."""
    ids = [id(t._node)]
    b = t._before() if t._before is not None else None
    if b is not None:
        ids.append(id(b))
    return ids


class _IdentityWeakSet:
    """A weak set compared by identity (WeakSet compares with ==, which is elementwise for tensors)."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def add(self, x) -> None:
        key = id(x)
        self._refs[key] = weakref.ref(x, lambda _, k=key: self._refs.pop(k, None))

    def discard(self, x) -> None:
        r = self._refs.get(id(x))
        if r is not None and r() is x:
            del self._refs[id(x)]

    def __contains__(self, x) -> bool:
        r = self._refs.get(id(x))
        return r is not None and r() is x

    def __iter__(self):
        return iter([x for x in (r() for r in list(self._refs.values())) if x is not None])

    def __len__(self) -> int:
        return len(self._refs)


_leaf_tensors = _IdentityWeakSet()  # tensors with requires_grad=True that are leaves
_leaf_owner: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # leaf node -> the tensor it was made for
_REALIZED = (Op.BUFFER, Op.STORED)


def _tracked(n: Node) -> Node:
    """Under no_grad, results carry a DETACH so no gradient flows through them later."""
    return n if autograd.grad_enabled() else _mk(Op.DETACH, (n,))


def _mk(op: Op, srcs: tuple[Node, ...], arg=None) -> Node:
    for r in runtime._recorders:  # lazy.jit: pending values a step reads (even if folded away here)
        r.read(srcs)
    try:
        return node(op, srcs, arg)
    except GraphError as e:  # a missed check here is our bug, still reported as a RuntimeError
        raise RuntimeError(f"lazy internal error (please report): {e}") from e


def _int64(v: int) -> int:
    """A Python int as torch takes one for a scalar: 64 bits (signed, or unsigned above int64's
    range), else torch's OverflowError."""
    if v >= 2**64:
        raise OverflowError(f"int too big to convert: {v} (a Python int in a tensor op must fit in 64 bits)")
    if v < -2**63:
        raise OverflowError(f"can't convert negative int to unsigned: {v} (a Python int in a tensor op must "
                            "be at least -2**63)")
    return v


def _pyscalar(x):
    """A Python bool/int/float for scalar-like inputs (numpy scalars included; a number lazy.jit
    traces stays itself: lazy/symnum.py), else None."""
    if type(x) in (SymFloat, SymInt):
        return x
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return _int64(int(x))
    if isinstance(x, (float, np.floating)):
        return float(x)
    return None


def _operand(op: str, x, seq: bool = False):
    """Tensor or Python scalar for an op input; torch/numpy arrays (and lists if seq) become Tensors."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (return_types.max, return_types.min)):
        # a (values, indices) result stands for its values in arithmetic, so the natural
        # `x - x.max(-1, keepdim=True)` works (torch raises a TypeError there)
        return x.values
    if isinstance(x, (torch.Tensor, np.ndarray)) or (seq and isinstance(x, (list, tuple))):
        return tensor(x)
    s = _pyscalar(x)
    if s is None:
        raise TypeError(f"{op}: expected a tensor or a Python number, got {type(x).__name__}")
    return s


def _key(x):
    if isinstance(x, Tensor):
        return ("tensor" if x._node.shape else "0d", x.dtype)
    t = type(x)
    if t is SymInt or t is SymFloat:  # lazy.jit's traced numbers (lazy/symnum.py)
        return ("scalar", int if t is SymInt else float)
    return ("scalar", t)


def _promote(op: str, *xs, dtype: DType | None = None, shapes=()) -> list[Tensor]:
    """Operands -> Tensors of one dtype (torch promotion, or `dtype`) and one broadcast shape."""
    if dtype is None:
        # tensors of one dtype on one device (`xc * xc`, `x - mean`): promotion is a no-op, only
        # the broadcast remains (most binary ops of a model take this path; a plain loop, as every
        # op of every call runs it)
        dt = dev = None
        tshapes = []
        for x in xs:
            if type(x) is not Tensor:
                break
            n = x._node
            if dt is None:
                dt = n.dtype
            elif n.dtype is not dt:
                break
            if n.device is not None:
                if dev is None:
                    dev = n.device
                elif n.device != dev:
                    break
            tshapes.append(n.shape)
        else:
            shape = _broadcast(op, *tshapes, *shapes)
            return [x._expand_to(shape) for x in xs]
    ops = [_operand(op, x) for x in xs]
    _same_device(op, *ops)
    tdts = [o.dtype for o in ops if isinstance(o, Tensor)]
    if dtype is None and tdts and all(d is bool_ for d in tdts) and any(type(o) is int and o >= 2**63 for o in ops):
        # torch takes an int from 2**63 as uint64, which bool does not promote with
        raise DTypeError(f"{op}: promoting bool and {max(o for o in ops if type(o) is int)} (a uint64 in torch) "
                         "is not supported")
    dt = dtype or result_type(*map(_key, ops), op=op)
    shape = _broadcast(op, *[o._node.shape for o in ops if isinstance(o, Tensor)], *shapes)
    return [o._cast(dt)._expand_to(shape) if isinstance(o, Tensor) else Tensor._new(const(o, dt, shape))
            for o in ops]


def _rounded(v, dt: DType) -> float:
    """The Python number `v` rounded to `dt`, as C's conversion from double does (overflow gives inf)."""
    return float(torch.tensor(float(v), dtype=torch.float64).to(to_torch(dt)))


def _tensor_arg(op: str, name: str, x) -> Tensor:
    """A tensor argument where torch takes tensors only (torch and numpy arrays are wrapped)."""
    if not isinstance(x, (Tensor, torch.Tensor, np.ndarray)):
        raise TypeError(f"{op}: expected {name} to be a tensor, got {type(x).__name__}")
    return _operand(op, x)


def _int_arg(op: str, name: str, v) -> int:
    """An int argument (numpy ints and 0-d int tensors too; not bools or floats, as in torch)."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int, got bool")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}") from None


def _root(t: Tensor) -> Tensor:
    return t if t._base is None else t._base


def _undetached(n: Node) -> Node:
    while n.op is Op.DETACH:
        n = n.srcs[0]
    return n


def _no_bool(op: str, t: Tensor) -> None:
    if t.dtype is bool_:
        raise DTypeError(f"{op}: bool tensors are not supported (like torch); cast it first")


def _need(op: str, kinds: str, *ts: Tensor, what: str) -> None:
    bad = [t.dtype for t in ts if t.dtype.kind not in kinds]
    if bad:
        raise DTypeError(f"{op}: expected {what}, got {', '.join(str(t.dtype) for t in ts)}")


return_types = SimpleNamespace(max=namedtuple("max", ["values", "indices"]),
                               min=namedtuple("min", ["values", "indices"]),
                               aminmax=namedtuple("aminmax", ["min", "max"]))


def _computed(n: Node) -> bool:
    """Whether `n` computes its values (not only moves a realized tensor's)."""
    while n.op in MOVEMENT:
        n = n.srcs[0]
    return n.op not in _REALIZED


# ---------------------------------------------------------------- realization

_realizations = 0  # schedules run so far (`cat` tells values carried from an earlier step by it)


def _realize(nodes: list[Node], into: list[Buffer | None] | None = None, packs=None, on_ready=None
             ) -> list[Buffer]:
    """Run `nodes`; one Buffer per node with exactly its shape and dtype (`into`: see realize;
    `packs`, `on_ready`: see runtime.realize_nodes, whose extra results follow)."""
    global _realizations
    _realizations += 1
    if os.environ.get("LAZY_BACKEND") == "interp":
        from lazy.interpret import interpret
        # clone: results must not alias the inputs' memory (interpret returns views of buffers)
        outs = [Buffer(t.clone(memory_format=torch.contiguous_format), owned=True) for t in interpret(nodes)]
        return outs + _interp_packs(nodes, outs, packs, on_ready) if packs else outs
    from lazy.runtime import realize_nodes
    return realize_nodes(nodes, into=into, packs=packs, on_ready=on_ready)


def _interp_packs(nodes, outs: list[Buffer], packs, on_ready) -> list[Buffer]:
    """The reference backend's packs: each flat made on the host from the results (copies)."""
    flats, views = [], []
    for f, pack in enumerate(packs):
        flat = torch.cat([outs[i].data.reshape(-1) for i in pack]) if pack else torch.empty(0)
        off = 0
        for i in pack:
            n = nodes[i].numel
            views.append(Buffer(flat[off:off + n].view(nodes[i].shape), owned=True))
            off += n
        flats.append(Buffer(flat, owned=True))
        if on_ready is not None:
            on_ready(f, flat)
    if on_ready is not None:
        on_ready(-1, None)
    return flats + views


def realize_packed(tensors: list[Tensor], packs: list[list[Node]], on_ready=None
                   ) -> tuple[list[Buffer], list[Buffer]]:
    """Realize `tensors` (and pending writes) in one schedule with `packs`: per pack, nodes stored
    back to back in one flat buffer by the kernels that compute them (data-parallel gradient buckets:
    lazy/packing.py). Returns (the flats, every packed node's view of its flat, in pack order);
    `on_ready(i, flat)` runs as soon as flat i is complete, while the rest of the schedule runs."""
    return _realize_all(tensors, None, packs, on_ready)


def realize(*tensors: Tensor, _into: dict | None = None):
    """Realize several tensors in one schedule (e.g. all parameters after an optimizer step).

    Pending in-place writes join it (lazy/inplace.py rule 1), each into its tensor's own buffer
    when nothing still reads the old value. `_into` (for optimizers): {id(value tensor): the tensor
    whose buffer the value may overwrite (a parameter, a state tensor)}; the value then *is* that
    buffer, its owner's to take."""
    _realize_all(tensors, _into)
    return tensors[0] if len(tensors) == 1 else tensors


def _realize_all(tensors, _into: dict | None, packs: list[list[Node]] | None = None, on_ready=None):
    ts = list(tensors)
    owner_of: dict[int, Tensor] = {}  # id(tensor) -> the tensor whose own buffer its value may overwrite
    home_of: dict[int, Buffer] = {}  # id(dirty tensor) -> the buffer it held before it was written
    for t, home in inplace.take_dirty():
        ts.append(t)
        if home is not None:
            owner_of[id(t)], home_of[id(t)] = t, home
    if _into:
        for t in ts:
            o = _into.get(id(t))
            if o is not None:
                owner_of[id(t)] = o
    todo: dict[int, Node] = {}
    packed: set[int] = set()
    for pack in packs or ():  # first: the schedule computes roots in this order (buckets complete early)
        for n in pack:
            todo.setdefault(id(n), n)
            packed.add(id(n))
    for t in ts:
        if t._node.op not in _REALIZED:
            todo.setdefault(id(t._node), t._node)
    if not todo:
        return ([], []) if packs is not None else None
    targets: dict[int, tuple[Buffer, Tensor]] = {}  # id(root) -> (buffer it overwrites, owner)
    for t in ts:
        o = owner_of.get(id(t))
        if o is not None and t._node.op not in _REALIZED and id(t._node) not in packed:
            b = home_of.get(id(t)) if o is t else _held(o._cur)
            if b is not None and inplace.may_overwrite(o, b) and id(t._node) not in targets:
                targets[id(t._node)] = (b, o)
    if targets:
        copies: list[Tensor] = []
        first, renamed = inplace.readers(targets, todo, copies)
        for rid in renamed:
            del targets[rid]
        for t in copies:  # they hold memory shared with the caller that is about to be written
            _private_copy(t)
        seen = {id(t) for t in ts}
        first = [t for t in first if id(t) not in seen]
        if first:  # computed first: their kernels come before the writes (roots in order)
            todo = {**{id(t._node): t._node for t in first}, **todo}
            ts = first + ts
    into = [targets[k][0] if k in targets else None for k in todo] if targets else None
    index = {k: i for i, k in enumerate(todo)}
    outs = _realize(list(todo.values()), into, [tuple(index[id(n)] for n in p) for p in packs] if packs else None,
                    on_ready)
    bufs = dict(zip(todo, outs))
    leaves = {i for t in _leaf_tensors for i in leaf_node_ids(t)}
    live = autograd.differentiable_nodes(list(todo.values()), leaves)[1] if leaves else set()
    done: set[int] = set()
    # nodes read before any binding (binding a base moves its views on); bases bind first, so a view
    # that took a buffer of its own holds the value of its base's new version
    for t, n in sorted([(t, t._node) for t in ts], key=lambda tn: tn[0]._base is not None):
        if id(n) in bufs and id(t) not in done:
            done.add(id(t))
            b = bufs[id(n)]
            home = targets[id(n)][0] if id(n) in targets else None
            if home is not b and inplace.pinned(home):  # the value went elsewhere: into the array it is
                home.data.copy_(b.data)
                home.version += 1
                b = bufs[id(n)] = home
            bn = node(Op.BUFFER, (), b, n.dtype, n.shape)
            before = None
            if t in _leaf_tensors:  # a leaf's new value (an optimizer step) starts a new history
                _leaf_owner[bn] = t
                before = weakref.ref(n)  # ...but graphs built on the value before it was realized
            elif id(n) in live:
                bn = node(Op.STORED, (bn,), n)  # the value is stored; gradients still reach the graph
            t._set_realized(bn)
            t._before = before
            for r in runtime._recorders:  # lazy.jit: a replay gives this tensor its new buffer
                r.bound(t, b)
    # a view whose value was a buffer already (a realized tensor copied into it) computed nothing,
    # and its base's new buffer rebuilds it: its value is computed now, from that buffer
    late = [t for t in tensors if t._node.op not in _REALIZED]
    if late:
        realize(*late)
    if packs:
        extra = outs[len(todo):]
        return extra[:len(packs)], extra[len(packs):]
    return None


_held = inplace.held


def _private_copy(t: Tensor) -> None:
    """t holds a buffer whose memory is about to be overwritten by its owner (lazy.from_numpy's
    array): t takes a host copy of its own, as torch's clone would have."""
    n = t._cur
    bn = n.srcs[0] if n.op is Op.STORED else n
    c = node(Op.BUFFER, (), Buffer(bn.arg.data.clone(), owned=True), bn.dtype, bn.shape)
    if t in _leaf_tensors:
        _leaf_owner[c] = t
    t._cur = c if n.op is Op.BUFFER else node(Op.STORED, (c,), n.arg)
    t._version += 1
    inplace.claim(t, c.arg, force=True)


def overwritten(buf: Buffer) -> None:
    """`buf`'s memory was overwritten outside a realization (a lazy.jit replay, a host copy) and its
    version bumped: its owner now holds the new version (a leaf stays the same leaf)."""
    o = buf.owner() if buf.owner is not None else None
    if o is None or o._base is not None or _held(o._cur) is not buf:
        return
    old = o._cur
    bn = node(Op.BUFFER, (), buf, old.dtype, old.shape)
    if o in _leaf_tensors:
        _leaf_owner[bn] = o
    o._cur = bn
    o._version += 1  # its views rebuild on the new node


def holds_alone(buf: Buffer) -> bool:
    """Whether nothing but its owner refers to `buf`'s current value (no pending node reads it, no
    other tensor holds it): then its memory may be overwritten without computing anything first.
    A cheap check by reference count (lazy.jit runs it before each replay); False may be wrong,
    True is not."""
    o = buf.owner() if buf.owner is not None else None
    if o is None or o._base is not None:
        return False
    n = o._cur
    if n.op is not Op.BUFFER or n.arg is not buf or buffer_version(n) != buf.version:
        return False
    return sys.getrefcount(n) <= 3  # o._cur, `n` here and getrefcount's argument


def _leave(t: Tensor, old: Node, new: Node, written: bool = False) -> None:
    """t's value moves from node `old` to `new` (`written`: by an in-place write, not by realizing
    it): tell the lazy.jit plans that read old's buffer or compute old's pending value."""
    b = _held(old)
    if b is not None:
        if b is not _held(new):
            runtime.buffer_left(t, b)
    elif written and runtime._watched_nodes and not any(id(t) in r.created for r in runtime._recorders):
        # (a tensor the recorded function made itself, `label = full(...)` then `label.fill_(0)`,
        # holds an interned node an earlier recording read, but that recording computes its own)
        runtime.node_left(old)


_TORCH_WRITES = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                 "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"}


# ---------------------------------------------------------------- the Tensor

def _float_op(op: Op, doc: str):
    def f(self: Tensor) -> Tensor:
        return self._floating()._ew(op)
    f.__doc__ = doc
    return f


def _composite(fn):
    """A float op composed of several nodes: ints compute in float32, halves in float32 with one
    rounding at the end (torch's kernels upcast halves internally too)."""
    @functools.wraps(fn)
    def g(self, *args, **kw):
        x, out = self._floating()._acc(None)
        return fn(x, *args, **kw)._cast(out)
    return g


_BOOL_SUB = "sub: subtraction, the `-` operator, with a bool tensor is not supported; for masks use `^` or logical_xor()"


def _wide_scalar(dt: DType, other) -> bool:
    """Whether torch computes `x * other` or `x / other` (a float16/bfloat16 result) with `other` a
    0-d tensor of another dtype taken as its own value in float32 (its CPU kernels' opmath scalar),
    not converted to the half dtype first: `h * torch.tensor(70000)` is 70 for h = 1e-3 (+ and -
    convert it: inf + torch.tensor(-2**63) is NaN)."""
    return dt in (float16, bfloat16) and isinstance(other, Tensor) and not other.ndim and other.dtype is not dt


def _opmath(name: str, op: Op, x: Tensor, y: Tensor, dt: DType) -> Tensor:
    a, b = _promote(name, x._cast(dt)._cast(float32), y._cast(float32))
    return a._ew(op, b)._cast(dt)


def _binary(op: Op, name: str, reverse: bool = False, kinds: str = "", what: str = "", no_bool: bool = False):
    """A torch binary op: promotion, broadcasting, then one IR node (GT/GE come from swapping)."""
    def f(self, other):
        if type(other) in (float, int) and not kinds and self.dtype.is_float:
            # the common `x * 2.0`: torch keeps a float tensor's dtype for a Python number, so
            # promotion, broadcasting and device checks have nothing to do (same nodes as _promote)
            c = Tensor._new(const(other if type(other) is float else _int64(other), self.dtype, self._node.shape))
            return c._ew(op, self) if reverse else self._ew(op, c)
        if no_bool and (self.dtype is bool_ or isinstance(other, (bool, np.bool_)) or
                        (isinstance(other, Tensor) and other.dtype is bool_)):
            raise DTypeError(_BOOL_SUB)
        if kinds:  # the operands' own dtypes, before promotion (bool | float names float32 and bool)
            _need(name, kinds, *[x for x in (self, other) if isinstance(x, Tensor)], what=what)
        a, b = _promote(name, other, self) if reverse else _promote(name, self, other)
        if op is Op.MUL and not reverse and _wide_scalar(a.dtype, other):
            return _opmath(name, op, self, other, a.dtype)
        if kinds:
            _need(name, kinds, a, b, what=what)
        if op in (Op.FLOORDIV, Op.MOD, Op.POW) and a.dtype is bool_:
            _no_bool(name, a)
        return a._ew(op, b)
    f.__name__ = name
    return f


def _inplace_op(name: str, method: str):
    """x.op_(...): compute x.op(...), check torch's in-place cast rule, write the result into x."""
    def f(self, *args, **kw):
        if self.dtype in (int8, uint8) and any(isinstance(a, Tensor) and a.dtype in (int8, uint8) and
                                               a.dtype is not self.dtype for a in (*args, *kw.values())):
            # torch computes int8 with uint8 in int16, which lazy lacks, and stores the result back into
            # self's dtype: int32 arithmetic has the same low 8 bits (and no quotient overflows either)
            args = tuple(a._cast(int32) if isinstance(a, Tensor) and a.dtype in (int8, uint8) else a for a in args)
            kw = {k: v._cast(int32) if isinstance(v, Tensor) and v.dtype in (int8, uint8) else v
                  for k, v in kw.items()}
            return self._inplace(name, getattr(self._cast(int32), method)(*args, **kw))
        return self._inplace(name, getattr(self, method)(*args, **kw))
    f.__name__ = name
    return f


def _to(dt: DType):
    def f(self) -> Tensor:
        return self.to(dt)
    f.__name__ = dt.name
    return f


def _dunder(f):
    """Operator form of `f`: NotImplemented for operand types we do not know (so == None is False)."""
    def g(self, other):
        return f(self, other) if _is_operand(other) else NotImplemented
    return g


_INTS = "biu"  # bool and integer kinds: what bitwise ops accept


class Tensor:
    """A lazy tensor. Build with `lazy.tensor`, `lazy.zeros`, ...; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_base",
        "_before",
        "_cur",
        "_grad",
        "_graph_freed",
        "_seen",
        "_steps",
        "_stride",
        "_version",
    )
    __array_ufunc__ = None  # numpy defers `ndarray + Tensor` to our reflected operators
    __hash__ = object.__hash__  # identity, like torch (== is elementwise)

    def __init__(self, data, dtype=None, device=None):
        """`lazy.Tensor(data)`: like torch.Tensor(data), float32 unless `dtype` says otherwise."""
        src = tensor(data, dtype=dtype or get_default_dtype(), device=device)
        for s in Tensor.__slots__:
            if s != "__weakref__":
                object.__setattr__(self, s, getattr(src, s))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch defers too: `torch_tensor + Tensor` runs our reflected operator (lazily); torch
        functions on lazy tensors raise TypeError instead of silently reading them element by element.
        The exception: writing a lazy value into a torch tensor (`t.copy_(x)`, `t[i] = x`, `t += x`,
        as `torch_model.load_state_dict(lazy_model.state_dict())` does) realizes it and writes."""
        name = getattr(func, "__name__", "")
        writes = name in _TORCH_WRITES or (name.endswith("_") and not name.startswith("_"))
        if writes and args and isinstance(args[0], torch.Tensor):
            def host(a):
                return a.torch() if isinstance(a, Tensor) else a
            return func(*map(host, args), **{k: host(v) for k, v in (kwargs or {}).items()})
        return NotImplemented

    def __dlpack__(self, *args, **kwargs):
        """DLPack export (`torch.as_tensor`, `torch.from_dlpack`, `np.from_dlpack`): the realized
        buffer, shared like `.torch()`'s."""
        return self.torch().__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.torch().__dlpack_device__()

    def __deepcopy__(self, memo) -> Tensor:
        return Tensor._new(self._node, self._stride)  # nodes are immutable: sharing them is a copy

    def __reduce__(self):
        return tensor, (self.torch().clone(),)

    # ---- the four internal constructors (all ops go through these)
    @staticmethod
    def _new(n: Node, stride=None) -> Tensor:
        t = object.__new__(Tensor)
        t._cur, t._base, t._steps, t._seen, t._version = n, None, (), 0, 0
        t._grad, t._graph_freed, t._before = None, False, None
        t._stride = _contig(n.shape) if stride is None else tuple(stride)
        live = inplace._live  # the registry of live tensors (lazy/inplace.py): one weak reference each
        live.append(weakref.ref(t))
        for r in runtime._recorders:  # lazy.jit: tensors made inside a recorded call
            r.created.add(id(t))
        if len(live) > inplace._prune_at:
            inplace.prune()
        if n.op is Op.BUFFER and n.arg.owned and n.arg.owner is None:
            n.arg.owner = weakref.ref(t)
        return t

    def _ew(self, op: Op, *others: Tensor, arg=None) -> Tensor:
        return Tensor._new(_tracked(_mk(op, (self._node, *(o._node for o in others)), arg)))

    def _mv(self, op: Op, arg) -> Tensor:
        """A movement op with copy semantics: the result does not alias self."""
        return Tensor._new(_tracked(_mk(op, (self._node,), arg)))

    def _red(self, op: Op, axes) -> Tensor:
        """Reduce `axes`, keeping them with size 1 (no axes: self, never an empty REDUCE node)."""
        # no axes: a new tensor of the same value (a reduction's result never aliases its input)
        return Tensor._new(_tracked(_mk(op, (self._node,), tuple(axes)))) if axes else Tensor._new(self._node)

    def _view(self, steps, stride) -> Tensor:
        """A view of self's root base: the IR `steps` rebuild it from self's node."""
        base = self if self._base is None else self._base
        n, rec = self._node, []
        for op, arg in steps:
            new = _mk(op, (n,), arg)
            if new is not n:
                rec.append((op, new.arg, n.shape))
                n = new
        t = Tensor._new(n, stride)
        t._base, t._steps, t._seen = base, self._steps + tuple(rec), base._version
        return t

    @property
    def _node(self) -> Node:
        b = self._base
        if b is not None and self._seen != b._version:  # the base was written: rebuild lazily
            n = b._node
            for op, arg, _ in self._steps:
                n = _mk(op, (n,), arg)
            self._cur, self._seen = n, b._version
        return self._cur

    def _set_realized(self, bn: Node, assigned: bool = False) -> None:
        """self's value is now buffer node `bn`: its pending value realized, or (`assigned`) a new value."""
        if runtime._watched or runtime._watched_nodes:
            _leave(self, self._cur, bn, written=assigned)
        self._cur, self._before = bn, None
        if self._base is None:
            self._version += 1  # views rebuild on top of the buffer
            b = _held(bn)
            if b is not None:
                inplace.claim(self, b, force=assigned)
        else:
            self._seen = self._base._version  # its buffer holds the value of the base as it is now

    def _cast(self, dt: DType) -> Tensor:
        return self if self.dtype is dt else self._ew(Op.CAST, arg=dt)

    def _expand_to(self, shape) -> Tensor:
        n = self._node
        if n.shape == tuple(shape):
            return self
        if len(shape) != len(n.shape):  # leading size-1 axes first
            n = _mk(Op.RESHAPE, (n,), (1,) * (len(shape) - len(n.shape)) + n.shape)
        return Tensor._new(_mk(Op.EXPAND, (n,), tuple(shape)))

    def _const(self, value, dtype: DType | None = None) -> Tensor:
        return Tensor._new(const(value, dtype or self.dtype, self._node.shape))

    def _floating(self) -> Tensor:
        """Float ops on int/bool inputs compute in the default float dtype, like torch."""
        return self if self.dtype.is_float else self._cast(get_default_dtype())

    # ---- metadata
    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._node.shape)

    @property
    def dtype(self) -> DType:
        return self._cur.dtype  # a view's dtype never changes: no rebuild needed

    @property
    def ndim(self) -> int:
        return len(self._cur.shape)

    @property
    def device(self) -> torch.device:
        return torch.device(node_device(self._node) or "cpu")

    def size(self, dim=None):
        return self.shape if dim is None else self._cur.shape[_dim("size", dim, self.ndim)]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return self._cur.numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    def stride(self, dim=None):
        """torch's strides for this tensor (what torch would report; buffers may differ)."""
        return self._stride if dim is None else self._stride[_dim("stride", dim, self.ndim)]

    def is_contiguous(self) -> bool:
        if self.numel() == 0:
            return True
        return all(a == b for a, b, s in zip(self._stride, _contig(self._cur.shape), self._cur.shape) if s != 1)

    def __len__(self) -> int:
        if not self.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self._cur.shape[0]

    # ---- realization and interop
    def realize(self) -> Tensor:
        return realize(self)

    def torch(self) -> torch.Tensor:
        """The realized value as a torch tensor. Shares memory with lazy's buffer: do not write to it."""
        self.realize()
        if runtime._recorders:
            runtime.record_host_read(f"a {tuple(self.shape)} tensor was read on the host")
        n = self._node
        b = (n.srcs[0] if n.op is Op.STORED else n).arg
        if runtime._in_flight:  # a collective writes it (lazy.distributed, async_op=True)
            runtime.settle([b])
        return b.data

    def numpy(self) -> np.ndarray:
        if self.dtype is bfloat16:
            raise DTypeError("numpy: bfloat16 has no numpy dtype; convert first, e.g. x.float().numpy()")
        return self.torch().numpy()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def tolist(self):
        return self.torch().tolist()

    def _one(self, what: str):
        n = self.numel()
        if n != 1:
            raise RuntimeError(f"{what}: a tensor with {n} elements cannot be converted to a scalar "
                               "(expected exactly one element)")
        return self.torch().item()

    def item(self):
        return self._one("item")

    def __bool__(self) -> bool:
        if self.numel() != 1:
            what = "no values" if not self.numel() else "more than one value"
            raise RuntimeError(f"Boolean value of Tensor with {what} is ambiguous")
        return bool(self.torch().item())

    def __float__(self) -> float:
        return float(self._one("float"))

    def __int__(self) -> int:
        return int(self._one("int"))

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._one("index"))

    def __iter__(self):
        if not self.ndim:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._cur.shape[0]))

    def __contains__(self, value) -> bool:
        return bool((self == value).any())

    def __repr__(self) -> str:
        return repr(self.torch()).replace("torch.", "lazy.")

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if self.ndim == 0 and spec else str(self)

    # ---- dtype / device conversion
    def to(self, *args, dtype=None, device=None, non_blocking: bool = False, copy: bool = False,
           memory_format=None) -> Tensor:
        """to(dtype) / to(device) / to(device, dtype) / to(other), then torch's optional positional
        non_blocking and copy flags: same object if nothing changes. non_blocking changes nothing
        (a copy between devices is made when the value is realized)."""
        flags = []
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif isinstance(a, bool):
                flags.append(a)
            elif isinstance(a, (str, torch.device)):
                device = a
            elif isinstance(a, int):
                device = torch.device(a)  # an index: torch's cuda:<index>
            else:
                dtype = a
        if len(flags) > 1:
            copy = flags[1]
        out = self if dtype is None else self._cast(as_dtype(dtype, "to"))
        if device is not None:
            dev = _device("to", device)
            if torch.device(dev) != self.device:  # a real copy between devices, as in torch
                return _from_torch(out.torch().to(dev), owned=True)
        return Tensor._new(out._node) if copy and out is self else out

    def type(self, dtype=None):
        return str(self.dtype) if dtype is None else self.to(dtype)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device=None, non_blocking: bool = False, memory_format=None) -> Tensor:
        """To the GPU; without one, torch's own error (on a CPU build: AssertionError, "Torch not
        compiled with CUDA enabled")."""
        from lazy import cuda

        cuda.require()
        return self.to("cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device)

    def clone(self) -> Tensor:
        return Tensor._new(self._node)

    def detach(self) -> Tensor:
        return self._view([(Op.DETACH, None)], self._stride)  # an alias, like torch, with no gradient

    def detach_(self) -> Tensor:
        if self._base is None:
            _leaf_tensors.discard(self)
        self._cur = _mk(Op.DETACH, (self._node,))
        return self

    # ---- autograd (rules in lazy/autograd.py)
    @property
    def requires_grad(self) -> bool:
        if self in _leaf_tensors:
            return True
        leaves = {i for t in _leaf_tensors for i in leaf_node_ids(t)}
        return bool(leaves) and id(self._node) in autograd.differentiable_nodes(self._node, leaves)[1]

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not requires_grad:
            if self not in _leaf_tensors and self.requires_grad:
                raise RuntimeError("requires_grad_: you can only change requires_grad flags of leaf variables; "
                                   "use detach() to get a tensor without gradient")
            _leaf_tensors.discard(self)
            return self
        if not self.dtype.is_float:
            raise RuntimeError(f"requires_grad_: only tensors of floating point dtype can require gradients, "
                               f"got {self.dtype}")
        if self not in _leaf_tensors and self.requires_grad:
            return self  # already tracked through its graph, like a torch non-leaf
        if self._node.op is not Op.BUFFER or self._base is not None:
            self.realize() if self._base is None else self._set_realized(self.clone().realize()._node)
        n = self._node
        if self._base is None and _leaf_owner.get(n) is not self:
            # a node of its own (a new Buffer over the same memory), so a clone sharing the old node
            # does not become a leaf with it; kept across requires_grad toggles
            was = n.arg
            self._cur = n = node(Op.BUFFER, (), Buffer(was.data, owned=was.owned), n.dtype, n.shape)
            if inplace.pinned(was):  # from_numpy's array stays this tensor's memory
                inplace.pin(n.arg)
            inplace.claim(self, n.arg)
            _leaf_owner[n] = self
        _leaf_tensors.add(self)
        return self

    @property
    def data(self) -> Tensor:
        """torch's `.data`: this tensor's value without its gradient history, an alias (writes
        through it, `init.normal_(m.weight.data)`, change this tensor, and autograd does not see them)."""
        return self.detach()

    @data.setter
    def data(self, value) -> None:
        value = _operand("data", value)
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(self.shape) or value.dtype != self.dtype:
            got = f"{_fmt(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            raise RuntimeError(f"data: assigning a value of another shape or dtype is not supported: "
                               f"expected {_fmt(self.shape)} {self.dtype}, got {got}")
        self.detach().copy_(value)

    @property
    def is_leaf(self) -> bool:
        return self in _leaf_tensors or not self.requires_grad

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"grad: expected a lazy Tensor or None, got {type(value).__name__}")
        if value is not None and tuple(value.shape) != tuple(self.shape):
            raise RuntimeError(f"grad: assigned grad has shape {_fmt(value.shape)}, expected {_fmt(self.shape)}")
        self._grad = value

    def backward(self, gradient=None, retain_graph: bool | None = None, create_graph: bool = False,
                 inputs=None) -> None:
        """Accumulate d self / d leaf into each leaf's `.grad`, as lazy graph (nothing runs yet)."""
        from lazy.transforms import accumulate_backward

        accumulate_backward(self, gradient, retain_graph, create_graph, inputs)

    # ---- elementwise: arithmetic
    _add = _binary(Op.ADD, "add")
    _sub = _binary(Op.SUB, "sub", no_bool=True)
    mul = multiply = _binary(Op.MUL, "mul")
    floor_divide = _binary(Op.FLOORDIV, "floor_divide")
    remainder = _binary(Op.MOD, "remainder")
    _maximum = _binary(Op.MAX, "maximum")
    _minimum = _binary(Op.MIN, "minimum")

    def maximum(self, other) -> Tensor:
        """The elementwise max of two tensors (NaN propagates); like torch, `other` is a tensor."""
        return self._maximum(_tensor_arg("maximum", "other", other))

    def minimum(self, other) -> Tensor:
        return self._minimum(_tensor_arg("minimum", "other", other))
    __add__, __sub__, __mul__ = _dunder(_add), _dunder(_sub), _dunder(mul)
    __floordiv__, __mod__ = _dunder(floor_divide), _dunder(remainder)
    __radd__ = _dunder(_binary(Op.ADD, "add", reverse=True))
    __rsub__ = rsub = _dunder(_binary(Op.SUB, "sub", reverse=True, no_bool=True))
    __rmul__ = _dunder(_binary(Op.MUL, "mul", reverse=True))
    __rfloordiv__ = _dunder(_binary(Op.FLOORDIV, "floor_divide", reverse=True))
    __rmod__ = _dunder(_binary(Op.MOD, "remainder", reverse=True))

    def add(self, other, alpha=1) -> Tensor:
        return self._add(other) if type(alpha) is int and alpha == 1 else self._axpy("add", other, alpha)

    def sub(self, other, alpha=1) -> Tensor:
        return self._sub(other) if type(alpha) is int and alpha == 1 else self._axpy("sub", other, alpha)

    def _axpy(self, op: str, other, alpha) -> Tensor:
        """self + alpha * other (sub: -alpha), as torch computes it: alpha converted to the promoted
        dtype, with torch's checks (no float alpha for integer results, a bool alpha only for bool ones,
        no overflow), and the product and sum in that dtype (a bool alpha is True or False)."""
        if op == "sub" and (self.dtype is bool_ or isinstance(other, (bool, np.bool_)) or
                            (isinstance(other, Tensor) and other.dtype is bool_)):
            raise DTypeError(_BOOL_SUB)
        a, b = _promote(op, self, other)
        dt = a.dtype
        al = _pyscalar(alpha.item() if isinstance(alpha, (Tensor, torch.Tensor)) and alpha.numel() == 1 else alpha)
        if al is None:
            raise TypeError(f"{op}: alpha must be a number, got {type(alpha).__name__}")
        if isinstance(al, float) and not dt.is_float:
            raise RuntimeError(f"{op}: for integral input tensors, argument alpha must not be a floating point "
                               f"number (got alpha={alpha})")
        if isinstance(al, bool) and dt is not bool_:
            raise RuntimeError(f"{op}: a bool alpha is only supported for bool results (got alpha={alpha} for "
                               f"{dt})")
        al = -al if op == "sub" else al
        scaled = b._ew(Op.MUL, Tensor._new(const(_fits(op, al, dt, halves=True) if dt is not bool_ else bool(al), dt,
                                                  b._node.shape)))
        return a._ew(Op.ADD, scaled)

    subtract = sub

    def div(self, other, rounding_mode: str | None = None) -> Tensor:
        """True division (ints give floats, like torch); rounding_mode 'trunc' or 'floor'."""
        return _divide(self, other, rounding_mode)

    divide = true_divide = div
    __truediv__ = _dunder(div)
    __rtruediv__ = _dunder(lambda self, other: _divide(other, self, None))

    def pow(self, exponent) -> Tensor:
        e = _pyscalar(exponent)
        if isinstance(e, bool) and self.dtype is bool_:  # torch: a copy, or ones; no other bool power
            return self.clone() if e else self._const(True)
        if e is not None and not isinstance(e, bool):
            dt = result_type(_key(self), _key(e))
            if dt.kind in "iu" and e < 0:
                raise RuntimeError("pow: integers to negative integer powers are not allowed")
            _fits("pow", e, dt, halves=True)
            x = self._cast(dt)
            if dt in (float16, bfloat16):
                e = _rounded(e, dt)  # torch rounds the exponent to a half dtype (bfloat16: 257 is 256)
            if dt.is_float and float(e).is_integer() and abs(e) > 2**24:
                # a float32 constant would round the exponent (2**31 - 1 to 2**31, even); torch's is a
                # double. |x| ** e is 0, 1 or inf either way: the double's parity gives the sign
                mag = x.abs()._ew(Op.POW, x._const(float(e)))
                return where(x.signbit(), -mag, mag) if int(float(e)) % 2 else mag
            if e == 2:  # torch special-cases these too (exact x*x, sqrt)
                return x._ew(Op.MUL, x)
            if e == 0.5 and dt.is_float:
                return x._ew(Op.SQRT)
        a, b = _promote("pow", self, exponent if e is None or isinstance(e, bool) else e)
        _no_bool("pow", a)
        return a._ew(Op.POW, b)

    __pow__ = _dunder(pow)
    __rpow__ = _dunder(_binary(Op.POW, "pow", reverse=True))

    def __neg__(self) -> Tensor:
        if self.dtype is bool_:
            raise DTypeError("neg: negation, the `-` operator, on a bool tensor is not supported; "
                             "to invert a mask use `~` or logical_not()")
        return self._ew(Op.NEG)

    neg = negative = __neg__

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        _no_bool("abs", self)
        return self.clone() if self.dtype.kind in "bu" else self._ew(Op.ABS)

    abs = absolute = __abs__

    # ---- elementwise: comparisons (the IR has LT/LE only: gt/ge swap the operands)
    lt = less = _binary(Op.LT, "lt")
    le = less_equal = _binary(Op.LE, "le")
    gt = greater = _binary(Op.LT, "gt", reverse=True)
    ge = greater_equal = _binary(Op.LE, "ge", reverse=True)
    eq = _binary(Op.EQ, "eq")
    ne = not_equal = _binary(Op.NE, "ne")
    __lt__, __le__, __gt__, __ge__ = _dunder(lt), _dunder(le), _dunder(gt), _dunder(ge)
    __eq__, __ne__ = _dunder(eq), _dunder(ne)

    # ---- elementwise: bitwise and logical
    bitwise_and = _binary(Op.AND, "bitwise_and", kinds=_INTS, what="integer or bool tensors")
    bitwise_or = _binary(Op.OR, "bitwise_or", kinds=_INTS, what="integer or bool tensors")
    bitwise_xor = _binary(Op.XOR, "bitwise_xor", kinds=_INTS, what="integer or bool tensors")
    __and__, __or__, __xor__ = _dunder(bitwise_and), _dunder(bitwise_or), _dunder(bitwise_xor)
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__  # commutative

    def bitwise_not(self) -> Tensor:
        _need("bitwise_not", _INTS, self, what="an integer or bool tensor")
        return self._ew(Op.NOT)

    __invert__ = bitwise_not

    def _logical(self, op: Op, other) -> Tensor:
        name = "logical_" + op.name.lower()
        a, b = _promote(name, self, _tensor_arg(name, "other", other), dtype=bool_)
        return a._ew(op, b)

    def logical_and(self, other) -> Tensor:
        return self._logical(Op.AND, other)

    def logical_or(self, other) -> Tensor:
        return self._logical(Op.OR, other)

    def logical_xor(self, other) -> Tensor:
        return self._logical(Op.XOR, other)

    def logical_not(self) -> Tensor:
        return self._cast(bool_)._ew(Op.NOT)

    # ---- elementwise: math
    exp = _float_op(Op.EXP, "e**x")
    log = _float_op(Op.LOG, "natural logarithm")
    sqrt = _float_op(Op.SQRT, "square root")
    sin = _float_op(Op.SIN, "sine")
    cos = _float_op(Op.COS, "cosine")
    tanh = _float_op(Op.TANH, "hyperbolic tangent")
    erf = _float_op(Op.ERF, "error function")
    reciprocal = _float_op(Op.RECIP, "1 / x")

    @_composite
    def rsqrt(self) -> Tensor:
        return self.sqrt()._ew(Op.RECIP)

    @_composite
    def tan(self) -> Tensor:
        return self.sin() / self.cos()

    def exp2(self) -> Tensor:
        x = self._floating()
        return x._const(2.0)._ew(Op.POW, x)

    @_composite
    def log2(self) -> Tensor:
        return self.log() * (1 / math.log(2))

    @_composite
    def log10(self) -> Tensor:
        return self.log() * (1 / math.log(10))

    @_composite
    def log1p(self) -> Tensor:
        """log(1+x) without cancellation for small x (Goldberg: log(u) * x / (u - 1), u = 1 + x)."""
        u = self + 1
        small = (u == 1) | (u == math.inf)  # log1p(inf) = inf; log1p(-inf) is NaN, from the log
        # the unselected branch must stay finite: its gradient is multiplied by 0, and 0 * inf is NaN
        return where(small, self, u.log() * (self / where(small, self._const(1), u - 1)))

    @_composite
    def expm1(self) -> Tensor:
        """exp(x)-1 without cancellation for small x (Kahan: (u - 1) * x / log(u), u = exp(x))."""
        u = self.exp()
        one, tiny = u == 1, u - 1 == -1  # tiny: u (0, or denormal with an inexact log) rounds to -1
        # where the quotient is not used, it runs on finite stand-ins, so its gradient is 0 there
        # rather than 0 * inf (at u = 0 or inf)
        unused = one | tiny | u.isinf()
        us, xs = where(unused, 2.0, u), where(unused, 0.0, self)
        r = (us - 1) * (xs / us.log())
        return where(u.isinf(), u, where(tiny, -1.0, where(one, self, r)))

    @_composite
    def sigmoid(self) -> Tensor:
        # exp(-|x|) never overflows, so neither the value nor the gradient of either branch is inf;
        # -|x| is written as a WHERE (not abs) so that x = 0 keeps its one-sided derivative
        pos = self >= 0
        e = where(pos, -self, self).exp()
        r = (e + 1)._ew(Op.RECIP)
        return where(pos, r, e * r)  # one division for both branches

    def relu(self) -> Tensor:
        _no_bool("relu", self)
        return where(self <= 0, self._const(0), self)  # NaN stays NaN; relu'(0) = 0 as in torch

    def silu(self) -> Tensor:
        _need("silu", "f", self, what="a floating point tensor")
        return self._silu()

    @_composite
    def _silu(self) -> Tensor:
        return self * self.sigmoid()

    def gelu(self, approximate: str = "none") -> Tensor:
        _need("gelu", "f", self, what="a floating point tensor")
        return self._gelu(approximate)

    @_composite
    def _gelu(self, approximate: str = "none") -> Tensor:
        x = self
        if approximate == "tanh":
            return x * 0.5 * ((x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)).tanh().add(1)
        if approximate != "none":
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return x * 0.5 * (x * (1 / math.sqrt(2))).erf().add(1)

    def square(self) -> Tensor:
        return self.pow(2) if self.dtype is not bool_ else self._cast(int64).pow(2)

    def _int_identity(self, op: Op) -> Tensor:
        _no_bool(op.name.lower(), self)
        return self.clone() if self.dtype.kind in _INTS else self._ew(op)

    def floor(self) -> Tensor:
        return self._int_identity(Op.FLOOR)

    def ceil(self) -> Tensor:
        return self._int_identity(Op.CEIL)

    def trunc(self) -> Tensor:
        return self._int_identity(Op.TRUNC)

    fix = trunc

    def round(self) -> Tensor:
        """Round half to even, like torch (decimals= not supported)."""
        _no_bool("round", self)
        if self.dtype.kind in _INTS:
            return self.clone()
        f = self.floor()
        d = self - f
        return where(d > 0.5, f + 1, where(d == 0.5, f + f.remainder(2), f))

    def isnan(self) -> Tensor:
        return self._ew(Op.ISNAN) if self.dtype.is_float else self._const(False, bool_)

    def isinf(self) -> Tensor:
        return self._ew(Op.ISINF) if self.dtype.is_float else self._const(False, bool_)

    def isfinite(self) -> Tensor:
        return (self.isnan() | self.isinf()).logical_not() if self.dtype.is_float else self._const(True, bool_)

    def sign(self) -> Tensor:
        if self.dtype is bool_:
            return self.clone()
        s = (self > 0)._cast(self.dtype) - (self < 0)._cast(self.dtype)
        if self.dtype.is_float and self.requires_grad and autograd.grad_enabled():
            # a zero gradient, as in torch (comparisons alone carry none): a WHERE whose condition
            # is never true routes g * 0 to self and leaves the value untouched
            s = where(self._const(False, bool_), self, s)
        return s

    sgn = sign

    def clamp(self, min=None, max=None) -> Tensor:
        """min(max(x, min), max), torch promotion; NaN in x propagates; min > max gives max."""
        if min is None and max is None:
            raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
        arrays = (Tensor, torch.Tensor, np.ndarray)
        if len({isinstance(b, arrays) for b in (min, max) if b is not None}) > 1:
            if any(isinstance(b, arrays) and b.ndim for b in (min, max)):
                raise TypeError("clamp: min and max must be both numbers or both tensors, like torch's")
            # torch's overload for numbers takes a 0-d tensor as its number
            min, max = (b.item() if isinstance(b, arrays) else b for b in (min, max))
        bounds = [b for b in (min, max) if b is not None]
        if not any(isinstance(b, arrays) for b in bounds):
            dt = result_type(_key(self), *[_key(_operand("clamp", b)) for b in bounds], op="clamp")
            # torch fills NaN when one of two number bounds is NaN, without converting either number
            if not (len(bounds) == 2 and any(b != b for b in bounds)):  # noqa: PLR0124 (NaN test)
                for b in bounds:
                    _fits("clamp", _operand("clamp", b), dt, halves=True)
        x, *bs = _promote("clamp", self, *bounds)
        if x.dtype is bool_ and not (len(bounds) == 1 and isinstance(bounds[0], arrays)):
            raise DTypeError("clamp: bools are not supported (like torch), but for one tensor bound")
        if x.requires_grad and autograd.grad_enabled() and x.dtype.is_float:
            x = where(x.isnan(), x.detach(), x)  # the same values; torch's gradient is 0 at NaN
        # where() rather than maximum/minimum: at x == bound the gradient flows to x, like torch
        if min is not None:
            lo = bs.pop(0)
            x = where((x < lo) | lo.isnan(), lo, x)
        if max is not None:
            hi = bs.pop(0)
            x = where((x > hi) | hi.isnan(), hi, x)
        return x

    clip = clamp

    def clamp_min(self, min) -> Tensor:
        return self.clamp(min=min)

    def clamp_max(self, max) -> Tensor:
        return self.clamp(max=max)

    def where(self, condition, other) -> Tensor:
        return where(condition, self, other)

    def masked_fill(self, mask, value) -> Tensor:
        v = _pyscalar(value)
        if v is not None:
            _fits("masked_fill", v, self.dtype, halves=True)
        return where(mask, _promote("masked_fill", value, dtype=self.dtype)[0], self)

    def lerp(self, end, weight) -> Tensor:
        """torch's two-sided formula: exact at both ends. As in torch: `end` a tensor of self's dtype,
        `weight` a number, a 0-d tensor, or a tensor of self's dtype; computed in the promoted dtype
        (an int self with a 0-d float weight gives floats), which must be a float."""
        end = _tensor_arg("lerp", "end", end)
        w = _operand("lerp", weight)
        for name, t in (("end", end), ("weight", w)):
            if isinstance(t, Tensor) and t.dtype is not self.dtype and (name == "end" or t.ndim):
                raise DTypeError(f"lerp: expected dtype {self.dtype} for `{name}` but got dtype {t.dtype}")
        dt = result_type(_key(self), _key(w)) if isinstance(w, Tensor) else self.dtype
        if not dt.is_float:
            raise DTypeError(f"lerp: expected a floating point tensor, got {self.dtype}")
        x, end = self._cast(dt), end._cast(dt)
        if dt in (float16, bfloat16):  # torch computes halves in float32 (a weight tensor in the dtype first)
            w = w._cast(dt)._cast(float32) if isinstance(w, Tensor) else w
            return x._cast(float32).lerp(end._cast(float32), w)._cast(dt)
        d = end - x  # torch's test of a small weight is |w| < 0.5 (w = -1 takes the end's side)

        def far(w):
            # end - d (1 - w), which torch forms in one fused multiply-add: d (1 - w) may overflow
            # where the result does not (lerp(0, -3e38, -0.71) is 2.1e38), so for |d| > 1 it is
            # computed halved (exact scalings: the same roundings), and doubled back
            return where(d.abs() > 1, (end * 0.5 - (d * 0.5) * (1 - w)) * 2, end - d * (1 - w))

        if not isinstance(w, Tensor):
            return x + d * w if abs(w) < 0.5 else far(w)
        return where(w.abs() < 0.5, x + d * w, far(w))

    # ---- elementwise: more math (composites; halves compute in float32, rounded once)
    @_composite
    def sinh(self) -> Tensor:
        """(e^x - e^-x) / 2 without cancellation near 0: with E = expm1(|x|), sinh|x| = (E + E/(E+1)) / 2,
        a sum of positive terms, finite while E is (|x| <= 88). Beyond, (e^(|x|/2) / 2) * e^(|x|/2) stays
        finite up to the largest finite sinh (e^|x| alone overflows a little before it); there the
        gradient is formed as g * e^|x| before the halving, so it is inf where g * cosh(x) is within a
        factor of 2 of the dtype's largest value (torch's is still finite)."""
        neg = self < 0
        a = where(neg, -self, self)  # not abs(): its derivative at 0 is 0, and sinh'(0) = 1
        big = a > 88
        e = where(big, 0.0, a).expm1()  # the unselected branch stays finite, so do its gradients
        h = (a * 0.5).exp()
        s = where(big, (h * 0.5) * h, (e + e / (e + 1)) * 0.5)
        return where(neg, -s, s)

    @_composite
    def cosh(self) -> Tensor:
        """1 + (E / 2) * (E / (E + 1)) with E = expm1(|x|): that is (e^x + e^-x) / 2 with no cancellation in
        the value or in its gradient (sinh) near 0, and no overflow in E^2; beyond |x| = 88 as sinh."""
        a = self.abs()
        big = a > 88
        e = where(big, 0.0, a).expm1()
        h = (a * 0.5).exp()
        return where(big, (h * 0.5) * h, (e * 0.5) * (e / (e + 1)) + 1)

    def frac(self) -> Tensor:
        """x - trunc(x): keeps x's sign (frac(-1.5) = -0.5); floats only, like torch."""
        _need("frac", "f", self, what="a floating point tensor")
        return self - self.trunc()

    def signbit(self) -> Tensor:
        """True where the sign bit is set: negative values and -0.0 (found as 1 / -0.0 = -inf).
        The IR has no bitcast, so a NaN's sign bit cannot be read: NaNs give False (torch reads it)."""
        if self.dtype.kind in "bu":
            return self._const(False, bool_)
        neg = self < 0
        if self.dtype.is_float:
            neg = neg | ((self == 0) & (self._ew(Op.RECIP) < 0))
        return neg

    def nan_to_num(self, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Tensor:
        """NaN -> `nan`, inf -> `posinf`, -inf -> `neginf` (by default the dtype's largest and lowest finite
        values). Each replacement is first rounded to the dtype, as torch does (1e10 in float16 is inf).
        Ints and bools have nothing to replace: a copy."""
        vals = [_pyscalar(v) for v in (nan, posinf, neginf)]
        for v, given, name in zip(vals, (nan, posinf, neginf), ("nan", "posinf", "neginf")):
            if v is None and given is not None:
                raise TypeError(f"nan_to_num: {name} must be a Python number or None, got {type(given).__name__}")
        if not self.dtype.is_float:
            return self.clone()
        fi = torch.finfo(to_torch(self.dtype))
        nan_v, pos_v, neg_v = (_rounded(d if v is None else v, self.dtype) for v, d in zip(vals, (0.0, fi.max, fi.min)))
        x = where(self.isnan(), nan_v, self)
        x = where(self == math.inf, pos_v, x)
        return where(self == -math.inf, neg_v, x)

    def logit(self, eps: float | None = None) -> Tensor:
        """log(z / (1 - z)), z = x clamped to [eps, 1 - eps] when eps >= 0 is given (torch's order of the
        bounds, so eps > 0.5 gives torch's values; the gradient is 0 outside them). Without eps, x
        outside [0, 1] gives NaN (its gradient is finite here, NaN in torch). At z = 0 or 1 (-inf, inf)
        the value comes from log(z) - log(1 - z), whose gradient is inf there as torch's is (the
        quotient's would be NaN)."""
        e = _pyscalar(eps)
        if eps is not None and (e is None or isinstance(e, bool)):
            raise TypeError(f"logit: eps must be a float or None, got {type(eps).__name__}")
        z, out = self._floating()._acc(None)
        if e is not None and e >= 0:
            lo = _rounded(e, out)  # torch clamps with eps rounded to the input's dtype
            hi = _rounded(1 - lo, out)
            z = where(z < lo, lo, where(z > hi, hi, z))
        edge = (z == 0) | (z == 1)
        inner = where(edge, 0.5, z)  # both branches stay finite where they are not selected
        outer = where(edge, z, 0.5)
        return where(edge, outer.log() - (1 - outer).log(), (inner / (1 - inner)).log())._cast(out)

    def _float_pair(self, name: str, other) -> tuple[Tensor, Tensor, DType]:
        """The operands of a float-only binary op: a tensor `other` (as in torch), promoted and
        broadcast, halves widened to float32 for computing; and the result dtype."""
        o = _tensor_arg(name, "other", other)
        a, b = _promote(name, self, o)
        if not a.dtype.is_float:
            raise DTypeError(f"{name}: expected floating point tensors, got {self.dtype} and {o.dtype}")
        (x, out), (y, _) = a._acc(None), b._acc(None)
        return x, y, out

    def hypot(self, other) -> Tensor:
        """sqrt(x^2 + y^2) without overflow or underflow in the squares: m * sqrt(1 + (n/m)^2), with m
        the larger magnitude. inf if either side is inf, even with a NaN (C's hypot). At (0, 0) the
        value is 0 and the gradient NaN, as torch's x / hypot(x, y) is there."""
        x, y, out = self._float_pair("hypot", other)
        ax, ay = x.abs(), y.abs()
        swap = ax < ay
        m, n = where(swap, ay, ax), where(swap, ax, ay)
        zero = m == 0
        r = n / where(zero, 1.0, m)
        h = m * (r * r + 1).sqrt()
        # at (0, 0) the plain formula, whose gradient is torch's 0/0; 1 elsewhere keeps it finite
        h = where(zero, where(zero, x * x + y * y, 1.0).sqrt(), h)
        return where(ax.isinf() | ay.isinf(), math.inf, h)._cast(out)

    def logaddexp(self, other) -> Tensor:
        """log(e^x + e^y) as max(x, y) + log1p(e^-|x - y|); two equal infinities give that infinity
        (their difference is NaN), like torch."""
        x, y, out = self._float_pair("logaddexp", other)
        r = x.maximum(y) + (-(x - y).abs()).exp().log1p()
        return where(x.isinf() & (x == y), x, r)._cast(out)

    def xlogy(self, other) -> Tensor:
        return xlogy(self, other)

    def isclose(self, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Tensor:
        """x == y, or |x - y| <= atol + rtol * |y| where |x - y| is finite; NaNs match when equal_nan.
        torch's steps and dtypes: both tensors of one dtype; ints and bools compare in the default
        float dtype; halves round after each step, as torch's kernels do."""
        o = _tensor_arg("isclose", "other", other)
        if o.dtype is not self.dtype:
            raise DTypeError(f"isclose: expected both tensors to have the same dtype, got {self.dtype} and {o.dtype}")
        if not rtol >= 0 or not atol >= 0:
            raise RuntimeError(f"isclose: rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
        a, b = _promote("isclose", self, o)
        close = a == b
        if equal_nan and a.dtype.is_float:
            close = close | (a.isnan() & b.isnan())
        if rtol == 0 and atol == 0:
            return close
        dt = a.dtype if a.dtype.is_float else get_default_dtype()
        wide = dt if dt not in (float16, bfloat16) else float32
        a, b = a._cast(wide), b._cast(wide)
        allowed = ((b * rtol)._cast(dt).abs()._cast(wide) + atol)._cast(dt)
        actual = (a - b)._cast(dt).abs()
        return close | (actual.isfinite() & (actual <= allowed))

    def allclose(self, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
        """isclose everywhere, as a Python bool (this realizes)."""
        return bool(self.isclose(other, rtol, atol, equal_nan).all())

    def equal(self, other) -> bool:
        """Same shape and equal values, as a Python bool (this realizes). The dtypes may differ: values
        compare after promotion, as in torch; NaN is never equal to anything."""
        o = _tensor_arg("equal", "other", other)
        _same_device("equal", self, o)
        if self._node.shape != o._node.shape:
            return False
        return bool((self == o).all())

    # ---- in-place (functional underneath: see the module docstring)
    def _write(self, value: Tensor, op: str, fill: bool = False) -> Tensor:
        """Store `value` (broadcast to self, cast to self.dtype) into self, through views. `fill`: the
        value is one number, which may fill a whole expanded tensor (torch writes its shared elements)."""
        shape = self._node.shape
        if _broadcast(op, shape, value._node.shape) != shape:
            raise RuntimeError(f"{op}: output with shape {_fmt(shape)} doesn't match the broadcast shape "
                               f"{_fmt(_broadcast(op, shape, value._node.shape))}")
        base = self._base
        if self._node.numel and any(st == 0 and s > 1 for st, s in zip(self._stride, shape)) \
                and not (fill and not self._steps):  # an empty tensor has no element to overlap
            if op == "masked_fill_":  # torch writes the shared elements (deprecated): README
                raise RuntimeError(f"{op}: writing into an expanded tensor is not supported; clone() it first")
            if fill:  # torch fills the elements a view of an expanded tensor shares: README
                raise RuntimeError(f"{op}: writing through a view of an expanded tensor is not supported; "
                                   "clone() it first")
            raise RuntimeError(f"{op}: more than one element of the written-to tensor refers to a single "
                               "memory location (an expanded tensor); clone() it first")
        detached = any(op_ is Op.DETACH for op_, _, _ in self._steps)  # x.detach().add_(1) is allowed
        if autograd.grad_enabled() and not detached and (self if base is None else base) in _leaf_tensors:
            raise RuntimeError(f"{op}: a leaf tensor that requires grad is being used in an in-place operation "
                               "(wrap it in `with lazy.no_grad():`)")
        v = v0 = _tracked(value._cast(self.dtype)._expand_to(shape)._node)
        if base is None or not self._steps:  # a base, or a full alias of one (detach, x[...])
            target = self if base is None else base
            if runtime._watched or runtime._watched_nodes:
                _leave(target, target._cur, v, written=True)
            now = inplace.written(target, target._cur)
            target._cur, target._version, target._before = v, target._version + 1, None
            if now:  # memory shared with the caller (from_numpy): it shows the write at once, as in torch
                realize(target)
            return self
        if not self._node.numel:
            return self
        if any(op_ is Op.EXPAND for op_, _, _ in self._steps) or any(
                st == 0 and s > 1 for st, s in zip(base._stride, base._node.shape)):
            # torch writes the element the expanded positions share, so all of them change; the
            # functional write here would change only the positions of the view (README)
            raise RuntimeError(f"{op}: writing through a view of an expanded tensor is not supported; "
                               "clone() it first")
        m = const(True, bool_, shape)
        for sop, arg, in_shape in reversed(self._steps):  # invert each movement step
            if sop is Op.DETACH:
                continue
            if sop is Op.RESHAPE:
                inv = (Op.RESHAPE, in_shape)
            elif sop is Op.PERMUTE:
                inv = (Op.PERMUTE, tuple(sorted(range(len(arg)), key=arg.__getitem__)))
            elif sop is Op.SHRINK:
                inv = (Op.PAD, tuple((a, s - b) for (a, b), s in zip(arg, in_shape)))
            else:  # PAD (strided slicing pads a partial last group): keep the original extent
                inv = (Op.SHRINK, tuple((a, a + s) for (a, _), s in zip(arg, in_shape)))
            v, m = _mk(inv[0], (v,), inv[1]), _mk(inv[0], (m,), inv[1])
        if runtime._watched or runtime._watched_nodes:
            _leave(base, base._cur, v, written=True)
        now = inplace.written(base, base._cur)
        base._cur, base._version = _mk(Op.WHERE, (m, v, base._node)), base._version + 1
        self._cur, self._seen = v0, base._version
        if now:
            realize(base)
        return self

    def _inplace(self, op: str, result: Tensor) -> Tensor:
        if not can_cast(result.dtype, self.dtype):
            raise DTypeError(f"{op}: result type {result.dtype} can't be cast to the desired output "
                             f"type {self.dtype}")
        return self._write(result, op)

    add_ = _inplace_op("add_", "add")
    sub_ = _inplace_op("sub_", "sub")
    mul_ = _inplace_op("mul_", "mul")
    div_ = _inplace_op("div_", "div")
    pow_ = _inplace_op("pow_", "pow")
    clamp_ = clip_ = _inplace_op("clamp_", "clamp")
    masked_fill_ = _inplace_op("masked_fill_", "masked_fill")
    __iadd__, __isub__, __imul__, __itruediv__, __ipow__ = add_, sub_, mul_, div_, pow_
    __ifloordiv__ = _inplace_op("floor_divide_", "floor_divide")
    __imod__ = _inplace_op("remainder_", "remainder")
    __iand__ = _inplace_op("bitwise_and_", "bitwise_and")
    __ior__ = _inplace_op("bitwise_or_", "bitwise_or")
    __ixor__ = _inplace_op("bitwise_xor_", "bitwise_xor")

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value) -> Tensor:
        v = _operand("fill_", value)
        if isinstance(v, Tensor):
            return self._write(v, "fill_")
        # torch checks a half's overflow only above one element (its one-element path rounds to inf)
        return self._write(self._const(_fits("fill_", v, self.dtype, halves=self.numel() > 1)), "fill_", fill=True)

    def copy_(self, src) -> Tensor:
        """Copy `src` into self, converted to self's dtype. A number converts as a tensor of it does (a
        float as a double, an int as an int64, or a uint64 from 2**63): 1e5 into int8 is -96, as in
        torch, where fill_ and `x[i] = v` raise."""
        v = _operand("copy_", src, seq=True)
        if v is self or isinstance(v, Tensor) and v.dtype is self.dtype and _root(v) is _root(self) and \
                _undetached(v._node) is _undetached(self._node):
            return self  # the same data, as torch sees it: it returns at once (an expanded tensor too)
        if not isinstance(v, Tensor):
            big = type(v) is int and v >= 2**63  # torch's uint64: positive in a float
            dt = float64 if isinstance(v, float) or (big and self.dtype.is_float) else int64 if type(v) is int else bool_
            v = Tensor._new(const(float(v) if dt is float64 else v, dt, ()))
        return self._write(v, "copy_")

    # ---- reductions
    def _reduce(self, op: Op, name: str, dim, keepdim: bool) -> Tensor:
        axes = _dims(name, dim, self.ndim)
        return self._red(op, axes)._drop(axes, keepdim)

    def _drop(self, axes, keepdim: bool) -> Tensor:
        """Remove the (size-1) reduced `axes` unless keepdim."""
        if keepdim:
            return self
        return self._mv(Op.RESHAPE, tuple(s for i, s in enumerate(self._node.shape) if i not in axes))

    def _acc(self, dtype) -> tuple[Tensor, DType]:
        """(input cast for accumulation, result dtype): ints sum as int64; halves accumulate in fp32;
        int8/uint8 (dtype=) in int64 too, wrapped once at the end (the sum or product mod 2^8 is the same)."""
        x = self._cast(as_dtype(dtype, "sum")) if dtype is not None else self
        if dtype is None and x.dtype.kind in _INTS:
            x = x._cast(int64)
        out = x.dtype
        if out in (int8, uint8):
            return x._cast(int64), out
        return (x._cast(get_default_dtype()) if out in (float16, bfloat16) else x), out

    def sum(self, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
        x, out = self._acc(dtype)
        return x._reduce(Op.SUM, "sum", dim, keepdim)._cast(out)

    def prod(self, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
        src = amp.cast_inputs(amp.FP32, self)[0] if amp._active[0] else self  # a float32 op under autocast
        x, out = src._acc(dtype)
        return x._reduce(Op.PROD, "prod", dim, keepdim)._cast(out)

    def mean(self, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
        if not (self.dtype if dtype is None else as_dtype(dtype, "mean")).is_float:
            raise DTypeError(f"mean: expected a floating point tensor (or a floating point dtype=), got {self.dtype}"
                             + (f" and dtype={dtype}" if dtype is not None else ""))
        x, out = self._acc(dtype)
        return (x._reduce(Op.SUM, "mean", dim, keepdim) / self._count("mean", dim))._cast(out)

    def _count(self, name: str, dim) -> int:
        return prod(self._node.shape[a] for a in _dims(name, dim, self.ndim))

    def _moment(self, name: str, dim, unbiased, keepdim: bool, correction, root: bool, with_mean: bool = False):
        """var or std; with_mean: (that, the mean) from the same nodes (var_mean, std_mean)."""
        if isinstance(dim, bool):  # legacy torch: var(unbiased)
            dim, unbiased = None, dim
        if not self.dtype.is_float:
            raise DTypeError(f"{name}: expected a floating point tensor, got {self.dtype}")
        axes = _dims(name, dim, self.ndim)  # checked here, so a bad dim is reported under this name
        c = correction if correction is not None else (1 if unbiased in (None, True) else 0)
        x, out = self._acc(None)
        # float32 (README: torch's CPU kernels accumulate in float64, a double accumulator halves the
        # vector lanes of a norm's passes)
        m = x.mean(dim, keepdim=True)
        d = x - m
        v = (d * d)._reduce(Op.SUM, name, dim, keepdim) / max(0, self._count(name, dim) - c)
        if root:  # torch's gradient is 0 where std is 0 (not 0 / 0): sqrt of 1 there, then 0
            zero = v == 0
            v = where(zero, 0.0, where(zero, 1.0, v).sqrt())
        if with_mean:
            return v._cast(out), m._drop(axes, keepdim)._cast(out)
        return v._cast(out)

    def var(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
        """Variance with `correction` (default 1) or `unbiased`; divides by max(0, N - correction)."""
        return self._moment("var", dim, unbiased, keepdim, correction, root=False)

    def std(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
        return self._moment("std", dim, unbiased, keepdim, correction, root=True)

    def count_nonzero(self, dim=None) -> Tensor:
        """The number of nonzero elements (NaN counts) over `dim` (int, tuple, or None: all), as int64."""
        return self._cast(bool_)._cast(int64)._reduce(Op.SUM, "count_nonzero", dim, False)

    def aminmax(self, *, dim=None, keepdim: bool = False):
        """(min, max) as torch's named tuple, over one dim or (None) all of them; NaN propagates."""
        if dim is None:
            if self.numel() == 0:
                raise RuntimeError(f"aminmax: cannot take the min and max of an empty tensor of shape "
                                   f"{_fmt(self._node.shape)} (expected a non-empty tensor, or dim=)")
            mn, mx = self.amin(), self.amax()
            if keepdim:
                mn, mx = mn._mv(Op.RESHAPE, (1,) * self.ndim), mx._mv(Op.RESHAPE, (1,) * self.ndim)
        else:
            d = _dim("aminmax", _int_arg("aminmax", "dim", dim), self.ndim)
            axes = (d,) if self.ndim else ()
            self._nonempty("aminmax", axes)
            mn, mx = self.amin(axes, keepdim), self.amax(axes, keepdim)
        return return_types.aminmax(mn, mx)

    def norm(self, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
        """torch.norm as vector norms over `dim` (int, tuple, or None: all dims): p = 'fro' or 2, 1,
        inf (max |x|), -inf (min |x|), 0 (the count of nonzeros), other numbers (sum |x|^p)^(1/p).
        Matrix norms ('nuc', 'fro' over more than 2 dims) are not supported. The sums are not
        rescaled, as in torch: squares beyond the dtype's range give inf. Gradients follow torch's:
        0 where the norm is 0, and from elements that are 0 (no inf * 0)."""
        if p is None:
            p = 2
        if isinstance(p, str):
            if p == "nuc":
                raise RuntimeError("norm: p='nuc' (the nuclear norm) needs a singular value decomposition, "
                                   "which lazy does not have")
            if p != "fro":
                raise RuntimeError(f"norm: p={p!r} is not supported (expected 'fro', 'nuc' or a number)")
            if isinstance(dim, (tuple, list)) and len(dim) > 2:
                raise RuntimeError(f"norm: p='fro' takes at most 2 dims, got dim={dim!r}")
            p = 2
        elif _pyscalar(p) is None:
            raise TypeError(f"norm: p must be a number or a string, got {type(p).__name__}")
        if not self.dtype.is_float:
            raise DTypeError(f"norm: expected a floating point tensor, got {self.dtype}")
        x = self
        if dtype is not None:
            dt = as_dtype(dtype, "norm")
            if not dt.is_float or torch.promote_types(to_torch(self.dtype), to_torch(dt)) != to_torch(dt):
                raise DTypeError(f"norm: dtype {dt} cannot hold {self.dtype} values without narrowing "
                                 "(expected a floating point dtype at least as wide)")
            x = x._cast(dt)
        axes = _dims("norm", dim, self.ndim)
        x, out = x._acc(None)
        p = float(p)
        if (p < 0 or math.isinf(p)) and any(self._node.shape[a] == 0 for a in axes):
            raise RuntimeError(f"norm: cannot take the {p} norm over an empty dim of shape "
                               f"{_fmt(self._node.shape)} (it has no identity)")
        if p != 0 and prod(self._node.shape[a] for a in axes) == 1:
            r = x.abs()  # one element: torch gives |x| (no power that could overflow)
        elif math.isinf(p):
            a = x.abs()
            r = a._red(Op.RMAX, axes) if p > 0 else -((-a)._red(Op.RMAX, axes))
        elif p == 0:
            r = x._cast(bool_)._cast(x.dtype)._red(Op.SUM, axes)  # comparisons carry no gradient, as in torch
        elif p == 1:
            r = x.abs()._red(Op.SUM, axes)
        else:
            if p == 2:
                s = (x * x)._red(Op.SUM, axes)
            else:
                # |0|^p is 0 (or inf for p < 0) with gradient 0: the pow sees 1 there, so no inf * 0
                zero = x == 0
                s = where(zero, math.inf if p < 0 else 0.0, where(zero, 1.0, x.abs()) ** p)._red(Op.SUM, axes)
            done = s == 0  # the root of 0 is 0 with gradient 0 (torch masks it): the root sees 1 there
            safe = where(done, 1.0, s)
            r = where(done, 0.0, safe.sqrt() if p == 2 else safe ** (1 / p))
        return r._drop(axes, keepdim)._cast(out)

    def _nonempty(self, name: str, axes) -> None:
        for a in axes:
            if self._node.shape[a] == 0:
                raise IndexError(f"{name}: cannot reduce over dim {a} of size 0 in a tensor of shape "
                                 f"{_fmt(self._node.shape)} (expected a non-empty dim)")

    def _no_empty_all(self, name: str, dim) -> None:
        if self.numel() == 0 and (dim is None or isinstance(dim, (tuple, list)) and not dim):
            raise RuntimeError(f"{name}: cannot reduce all dims of an empty tensor of shape {_fmt(self._node.shape)} "
                               "(expected a dim, as in torch)")

    def amax(self, dim=(), keepdim: bool = False) -> Tensor:
        self._no_empty_all("amax", dim)
        self._nonempty("amax", _dims("amax", dim, self.ndim))
        return self._reduce(Op.RMAX, "amax", dim, keepdim)

    def amin(self, dim=(), keepdim: bool = False) -> Tensor:
        self._no_empty_all("amin", dim)
        self._nonempty("amin", _dims("amin", dim, self.ndim))
        if self.dtype.is_float:
            return -((-self)._reduce(Op.RMAX, "amin", dim, keepdim))
        # ~x = -x-1 reverses the order of ints (and bools) without overflow
        return self._ew(Op.NOT)._reduce(Op.RMAX, "amin", dim, keepdim)._ew(Op.NOT)

    def _maxmin(self, name: str, dim, keepdim: bool):
        if isinstance(dim, (Tensor, torch.Tensor, np.ndarray)):
            return self.maximum(dim) if name == "max" else self.minimum(dim)
        if isinstance(dim, (tuple, list)):
            raise TypeError(f"{name}: dim must be one int, got {dim!r} (a{name} reduces over several dims)")
        if dim is None:
            if self.numel() == 0:
                raise RuntimeError(f"{name}: cannot take the {name} of an empty tensor of shape "
                                   f"{_fmt(self._node.shape)}; specify dim=")
            return self.amax() if name == "max" else self.amin()
        indices = self._arg("argmax" if name == "max" else "argmin", dim, keepdim)
        if self.ndim and self.dtype.is_float and self.requires_grad and autograd.grad_enabled():
            # torch sends the gradient to the returned index only, not shared among ties as amax
            # does: read the value at that index (every other element masked by -inf / +inf)
            d = _dim(name, dim, self.ndim)
            shape = [1] * self.ndim
            shape[d] = self._node.shape[d]
            iota = Tensor._new(node(Op.IOTA, (), None, int64, (shape[d],)))._mv(Op.RESHAPE, tuple(shape))
            pick = iota == (indices if keepdim else indices.unsqueeze(d))
            masked = where(pick, self, float("-inf") if name == "max" else float("inf"))
            values = masked.amax(d, keepdim) if name == "max" else masked.amin(d, keepdim)
        else:
            values = self.amax(dim, keepdim) if name == "max" else self.amin(dim, keepdim)
        return getattr(return_types, name)(values, indices)

    def max(self, dim=None, keepdim: bool = False):
        """max() -> 0-d max; max(dim) -> (values, indices); max(other) -> maximum."""
        return self._maxmin("max", dim, keepdim)

    def min(self, dim=None, keepdim: bool = False):
        return self._maxmin("min", dim, keepdim)

    def _arg(self, name: str, dim, keepdim: bool) -> Tensor:
        """First index of the max/min along dim, composed from IOTA, EQ, WHERE and RMAX."""
        x = self.reshape(-1) if dim is None else self
        if x.ndim == 0:
            return Tensor._new(const(0, int64, ()))
        d = _dim(name, dim if dim is not None else 0, x.ndim)
        n = x._node.shape[d]
        if n == 0:
            raise IndexError(f"{name}: cannot reduce over dim {d} of size 0 in a tensor of shape "
                             f"{_fmt(self._node.shape)} (expected a non-empty dim)")
        if x.dtype.is_float and _computed(x._node):
            # a computed float is read once, by torch's argmax: the composite below computes it in
            # two passes, and where the compiler vectorizes them apart (another width, another exp)
            # no element equals the max and the index came out n
            from lazy.indexed import _ext

            kept = tuple(1 if i == d else s for i, s in enumerate(x._node.shape))
            first = _ext("arg_index", (x,), (d, name == "argmax"), int64, kept)
            if not keepdim:
                first = first._mv(Op.RESHAPE, tuple(s for i, s in enumerate(kept) if i != d))
            if dim is None and keepdim:
                return first._mv(Op.RESHAPE, (1,) * self.ndim)
            return first
        m = x.amax(d, keepdim=True) if name == "argmax" else x.amin(d, keepdim=True)
        hit = x == m
        if x.dtype.is_float:  # NaN wins like in torch: the first NaN if the row has one
            hit = where(m.isnan(), x.isnan(), hit)
        shape = [1] * x.ndim
        shape[d] = n
        idx = Tensor._new(node(Op.IOTA, (), None, int64, (n,)))._mv(Op.RESHAPE, tuple(shape))
        first = n - where(hit, n - idx, 0)._reduce(Op.RMAX, name, d, keepdim)
        if dim is None and keepdim:
            return first._mv(Op.RESHAPE, (1,) * self.ndim)
        return first

    def argmax(self, dim=None, keepdim: bool = False) -> Tensor:
        _no_bool("argmax", self)  # torch refuses bools here (max(dim) takes them)
        return self._arg("argmax", dim, keepdim)

    def argmin(self, dim=None, keepdim: bool = False) -> Tensor:
        _no_bool("argmin", self)
        return self._arg("argmin", dim, keepdim)

    def any(self, dim=None, keepdim: bool = False) -> Tensor:
        out = self._cast(bool_)._cast(int64).sum(dim, keepdim) > 0
        return out._cast(uint8) if self.dtype is uint8 else out  # torch keeps uint8 here

    def all(self, dim=None, keepdim: bool = False) -> Tensor:
        out = self.logical_not().any(dim, keepdim).logical_not()
        return out._cast(uint8) if self.dtype is uint8 else out

    def logsumexp(self, dim=None, keepdim: bool = False) -> Tensor:
        """log(sum(exp(x))) around the max; rows of -inf (or empty) give -inf, +inf gives +inf."""
        x, out = self._floating()._acc(None)
        axes = _dims("logsumexp", dim, x.ndim)
        # the max only keeps exp() in range: the result does not depend on it (d/dm = 0 exactly),
        # so its gradient path is cut, as in torch's logsumexp backward (g * exp(x - result))
        m = x._red(Op.RMAX, axes).detach()
        m = where(m.isinf(), 0.0, m)  # an infinite max would turn x - m into NaN
        return ((x - m).exp()._red(Op.SUM, axes).log() + m)._drop(axes, keepdim)._cast(out)

    def _shifted(self, name: str, dim, dtype):
        """(x - rowmax, axes, result dtype) for softmax and log_softmax; halves compute in fp32."""
        x = self if dtype is None else self.to(dtype)
        _need(name, "f", x, what="a floating point tensor (or a floating point dtype=)")
        x, out = x._acc(None)
        axes = (_dim(name, dim, x.ndim),) if x.ndim else ()
        # softmax(x - c) is the same for every c: the max's gradient is exactly zero, so it is not
        # built (torch's softmax backward is y * (g - sum(g * y)) alike): no tie counting per row
        return x - x._red(Op.RMAX, axes).detach(), axes, out

    def softmax(self, dim, dtype=None) -> Tensor:
        s, axes, out = self._shifted("softmax", dim, dtype)
        e = s.exp()
        # times the reciprocal of the row sum, as torch's CPU kernel does: one division per row
        # instead of one per element (a 4096-wide softmax 3-6% faster)
        return (e * e._red(Op.SUM, axes).reciprocal())._cast(out)

    def log_softmax(self, dim, dtype=None) -> Tensor:
        s, axes, out = self._shifted("log_softmax", dim, dtype)
        return (s - s.exp()._red(Op.SUM, axes).log())._cast(out)

    def matmul(self, other) -> Tensor:
        """Batched matmul with torch's 1-d and batch-broadcasting rules: one MATMUL node, which the
        scheduler hands to a GEMM (BLAS on the CPU) with strided views of its operands. Inside an
        autocast region the operands take its dtype (lazy/amp.py)."""
        if amp._active[0]:
            return Tensor._matmul(*amp.cast_inputs(amp.LOWER, self, _operand("matmul", other)))
        return self._matmul(other)

    def _matmul(self, other) -> Tensor:
        b = _operand("matmul", other)
        if not isinstance(b, Tensor) or not self.ndim or not b.ndim:
            raise RuntimeError("matmul: both arguments need at least 1 dimension")
        if self.dtype is not b.dtype:
            raise DTypeError(f"matmul: expected both operands to have the same dtype, got {self.dtype} and {b.dtype}")
        x = self.unsqueeze(0) if self.ndim == 1 else self
        y = b.unsqueeze(-1) if b.ndim == 1 else b
        if x._node.shape[-1] != y._node.shape[-2]:
            raise RuntimeError(f"matmul: shapes {_fmt(self._node.shape)} and {_fmt(b._node.shape)} cannot be "
                               f"multiplied ({x._node.shape[-1]} != {y._node.shape[-2]})")
        if self.dtype is bool_:
            raise DTypeError("matmul: bool operands are not supported (like torch); cast them first")
        _same_device("matmul", x, y)
        try:
            batch = _broadcast("matmul", x._node.shape[:-2], y._node.shape[:-2])
        except RuntimeError as e:
            raise RuntimeError(f"matmul: shapes {_fmt(self._node.shape)} and {_fmt(b._node.shape)}: the batch "
                               f"dims {_fmt(x._node.shape[:-2])} and {_fmt(y._node.shape[:-2])} cannot broadcast "
                               f"(expected equal sizes or 1 in each)") from e
        x = x._expand_to(batch + x._node.shape[-2:])
        y = y._expand_to(batch + y._node.shape[-2:])
        out = x._ew(Op.MATMUL, y)
        if self.ndim == 1:
            out = out.squeeze(-2)
        return out.squeeze(-1) if b.ndim == 1 else out

    __matmul__ = _dunder(matmul)

    def mm(self, other) -> Tensor:
        b = _operand("mm", other)
        if self.ndim != 2 or not isinstance(b, Tensor) or b.ndim != 2:
            raise RuntimeError(f"mm: expected two 2-d tensors, got {_fmt(self.shape)} and "
                               f"{_fmt(b.shape) if isinstance(b, Tensor) else type(b).__name__}")
        return self.matmul(b)

    def bmm(self, other) -> Tensor:
        b = _operand("bmm", other)
        if self.ndim != 3 or not isinstance(b, Tensor) or b.ndim != 3 or self.shape[0] != b.shape[0]:
            raise RuntimeError(f"bmm: expected two 3-d tensors with the same batch size, got {_fmt(self.shape)} "
                               f"and {_fmt(b.shape) if isinstance(b, Tensor) else type(b).__name__}")
        return self.matmul(b)

    def outer(self, vec2) -> Tensor:
        """x[:, None] * y[None, :] of two 1-d tensors (torch promotion; bools give a bool AND)."""
        v = _tensor_arg("outer", "vec2", vec2)
        if self.ndim != 1 or v.ndim != 1:
            raise RuntimeError(f"outer: expected two 1-d tensors, got shapes {_fmt(self._node.shape)} and "
                               f"{_fmt(v._node.shape)}")
        return self._mv(Op.RESHAPE, (self._node.shape[0], 1)) * v

    ger = outer

    def dot(self, other) -> Tensor:
        """The inner product of two 1-d tensors of one dtype, as one fused multiply-and-sum kernel
        (halves accumulate in float32, ints wrap like torch's)."""
        o = _tensor_arg("dot", "other", other)
        if self.ndim != 1 or o.ndim != 1:
            raise RuntimeError(f"dot: expected two 1-d tensors, got shapes {_fmt(self._node.shape)} and "
                               f"{_fmt(o._node.shape)}")
        if self.dtype is not o.dtype:
            raise DTypeError(f"dot: expected both vectors to have the same dtype, got {self.dtype} and {o.dtype}")
        if self.dtype is bool_:
            raise DTypeError("dot: bool vectors are not supported (like torch); cast them first")
        if self._node.shape != o._node.shape:
            raise RuntimeError(f"dot: vectors of {self._node.shape[0]} and {o._node.shape[0]} elements "
                               "(expected the same number)")
        return (self * o).sum()._cast(self.dtype)

    def mv(self, vec) -> Tensor:
        """Matrix (n, m) times vector (m,): one MATMUL node, like matmul."""
        v = _tensor_arg("mv", "vec", vec)
        if self.ndim != 2 or v.ndim != 1:
            raise RuntimeError(f"mv: expected a 2-d matrix and a 1-d vector, got shapes {_fmt(self._node.shape)} "
                               f"and {_fmt(v._node.shape)}")
        if self._node.shape[1] != v._node.shape[0]:
            raise RuntimeError(f"mv: shapes {_fmt(self._node.shape)} and {_fmt(v._node.shape)} cannot be "
                               f"multiplied ({self._node.shape[1]} != {v._node.shape[0]})")
        if self.dtype is not v.dtype:
            raise DTypeError(f"mv: expected the matrix and the vector to have the same dtype, got {self.dtype} "
                             f"and {v.dtype}")
        return self._matmul(v)  # torch's autocast leaves mv alone

    def __rmatmul__(self, other):
        return tensor(other).matmul(self) if isinstance(other, (torch.Tensor, np.ndarray)) else NotImplemented

    # ---- movement: views
    def _reshape(self, name: str, shape, view_only: bool = False) -> Tensor:
        old, numel = self._node.shape, self._node.numel
        neg = [i for i, s in enumerate(shape) if s == -1]
        if len(neg) > 1 or any(s < -1 for s in shape):
            raise RuntimeError(f"{name}: invalid shape {_fmt(shape)} (sizes must be >= 0, at most one -1)")
        known = prod(s for s in shape if s != -1)
        if neg:
            if known == 0:
                raise RuntimeError(f"{name}: cannot reshape a tensor of {numel} elements into shape {_fmt(shape)}: "
                                   "the -1 dim is ambiguous")
            shape = tuple(numel // known if s == -1 else s for s in shape)
        if prod(shape) != numel:
            raise RuntimeError(f"{name}: cannot reshape a tensor of shape {_fmt(old)} ({numel} elements) "
                               f"into shape {_fmt(shape)} ({prod(shape)} elements)")
        st = _view_strides(old, self._stride, shape)
        if st is None:
            if view_only:
                raise RuntimeError(f"{name}: view size {_fmt(shape)} is not compatible with the size "
                                   f"{_fmt(old)} and stride {self._stride} of the input (a dim spans two "
                                   "non-contiguous subspaces); use .reshape(...) instead")
            return self._mv(Op.RESHAPE, shape)
        return self._view([(Op.RESHAPE, shape)], st)

    def reshape(self, *shape) -> Tensor:
        """A view when torch would make one (see `stride`), else a copy."""
        return self._reshape("reshape", _sizes("reshape", shape))

    def view(self, *shape) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], (tuple, list, torch.Size, int, np.integer)):
            raise TypeError(f"view: reinterpreting as dtype {shape[0]!r} is not supported")
        return self._reshape("view", _sizes("view", shape), view_only=True)

    def view_as(self, other: Tensor) -> Tensor:
        return self.view(other.shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _dim("flatten", start_dim, self.ndim), _dim("flatten", end_dim, self.ndim)
        if s > e:
            raise RuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        sh = self._node.shape
        return self._reshape("flatten", sh[:s] + (prod(sh[s:e + 1]),) + sh[e + 1:])

    def unflatten(self, dim: int, sizes) -> Tensor:
        """As torch's: a -1 among `sizes` is inferred from dim `dim`'s own size (so an empty dim
        unflattens to (1, -1)), and the sizes must multiply to it."""
        d, sh = _dim("unflatten", dim, self.ndim), self._node.shape
        sizes = list(_sizes("unflatten", (sizes,)))
        if sizes.count(-1) > 1:
            raise RuntimeError(f"unflatten: only one dimension can be inferred, got sizes {sizes}")
        rest = prod(s for s in sizes if s != -1)
        if -1 in sizes and rest == 0:
            raise RuntimeError(f"unflatten: cannot infer the -1 of sizes {sizes} for dim {d} of size {sh[d]}: "
                               f"the other sizes multiply to 0, so it could be any value")
        if (-1 in sizes and sh[d] % rest) or (-1 not in sizes and rest != sh[d]):
            raise RuntimeError(f"unflatten: Provided sizes {sizes} don't multiply up to the size of dim {d} "
                               f"({sh[d]}) in the input tensor")
        sizes = [sh[d] // rest if s == -1 else s for s in sizes]
        return self._reshape("unflatten", sh[:d] + tuple(sizes) + sh[d + 1:])

    def squeeze(self, dim=None) -> Tensor:
        sh = self._node.shape
        drop = _dims("squeeze", dim, self.ndim) if dim is not None else range(self.ndim)
        return self._reshape("squeeze", tuple(s for i, s in enumerate(sh) if not (i in drop and s == 1)))

    def unsqueeze(self, dim: int) -> Tensor:
        d, sh = _dim("unsqueeze", dim, self.ndim, new=1), self._node.shape
        return self._reshape("unsqueeze", sh[:d] + (1,) + sh[d:])

    def permute(self, *dims) -> Tensor:
        dims = _sizes("permute", dims)
        if len(dims) != self.ndim:
            raise RuntimeError(f"permute: dims {dims} has {len(dims)} entries for a {self.ndim}-d tensor of "
                               f"shape {_fmt(self._node.shape)} (expected a permutation of {self.ndim} dims)")
        order = tuple(_dim("permute", d, self.ndim) for d in dims) if self.ndim else ()
        if len(set(order)) != len(order):
            raise RuntimeError(f"permute: dims {dims} repeat a dim (expected a permutation of {self.ndim} dims)")
        return self._view([(Op.PERMUTE, order)], tuple(self._stride[d] for d in order))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        order = list(range(self.ndim))
        a, b = _dim("transpose", dim0, self.ndim), _dim("transpose", dim1, self.ndim)
        if self.ndim:
            order[a], order[b] = order[b], order[a]
        return self.permute(order)

    swapaxes = swapdims = transpose

    def movedim(self, source, destination) -> Tensor:
        src = [_dim("movedim", d, self.ndim) for d in (source if isinstance(source, (tuple, list)) else [source])]
        dst = [_dim("movedim", d, self.ndim) for d in
               (destination if isinstance(destination, (tuple, list)) else [destination])]
        if len(src) != len(dst):
            raise RuntimeError(f"movedim: source {source} and destination {destination} differ in length")
        rest = iter(d for d in range(self.ndim) if d not in src)
        where_ = dict(zip(dst, src))
        return self.permute([where_[i] if i in where_ else next(rest) for i in range(self.ndim)])

    moveaxis = movedim

    @property
    def T(self) -> Tensor:
        return self.permute(tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        if self.ndim < 2:
            raise RuntimeError(f"mT: expected a tensor with at least 2 dims, got shape {_fmt(self._node.shape)}")
        return self.transpose(-2, -1)

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(f"t: expected a tensor with <= 2 dims, got shape {_fmt(self._node.shape)}")
        return self.T

    def expand(self, *sizes) -> Tensor:
        sizes, sh = _sizes("expand", sizes), self._node.shape
        lead = len(sizes) - len(sh)
        if lead < 0:
            raise RuntimeError(f"expand: {len(sizes)} sizes given for a {len(sh)}-d tensor "
                               f"(expected at least {len(sh)})")
        new, st = [], []
        for i, s in enumerate(sizes):
            old = sh[i - lead] if i >= lead else None
            if s == -1 and old is not None:
                s = old
            if s < 0 or (old is not None and old != 1 and s != old):
                raise RuntimeError(f"expand: cannot expand shape {_fmt(sh)} to {_fmt(sizes)}: size {s} at dim {i} "
                                   "(expected the existing size, or any size where it is 1)")
            new.append(s)
            st.append(self._stride[i - lead] if old is not None and old == s else 0)
        return self._view([(Op.RESHAPE, (1,) * lead + sh), (Op.EXPAND, tuple(new))], st)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def contiguous(self) -> Tensor:
        """self if already contiguous (an alias, like torch), else a non-aliasing copy."""
        return self if self.is_contiguous() else Tensor._new(self._node)

    def __getitem__(self, idx) -> Tensor:
        """Basic indexing (ints, slices with step > 0, None, ...) as a view built from movement ops;
        tensors, lists and masks as indices: lazy/indexed.py."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, (Tensor, torch.Tensor, np.ndarray, list)) for i in idx):
            from lazy.indexed import getitem, is_advanced

            if any(is_advanced(i) for i in idx):
                return getitem(self, idx)
        sh, nd = self._node.shape, self.ndim
        if sum(i is Ellipsis for i in idx) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(i is not None and i is not Ellipsis for i in idx)
        if used > nd:
            raise IndexError(f"too many indices for tensor of dimension {nd}: {used} given")
        k = idx.index(Ellipsis) if Ellipsis in idx else len(idx)
        idx = idx[:k] + (slice(None),) * (nd - used) + idx[k + 1:]
        bounds, out, st, split, pick, pads = [], [], [], [], [], []
        d = 0
        for i in idx:
            if i is None:
                out.append(1)
                st.append(sh[d] * self._stride[d] if d < nd else 1)
                continue
            n, stride = sh[d], self._stride[d]
            if isinstance(i, slice):
                step = 1 if i.step is None else operator.index(i.step)
                if step <= 0:
                    raise ValueError("step must be greater than zero")
                start, _, _ = i.indices(n)
                m = len(range(*i.indices(n)))
                start = start if m else 0
                # every step-th: shrink to m*step elements (pad the last group if short), split
                # into (m, step) and keep column 0; a plain slice is just the shrink
                end = min(start + m * step, n) if step > 1 and m > 1 else start + m
                bounds.append((start, end))
                out.append(m)
                st.append(stride * step)
                if m > 1 and step > 1:
                    pads.append((0, m * step - (end - start)))
                    split += [m, step]
                    pick += [(0, m), (0, 1)]
                else:
                    pads.append((0, 0))
                    split.append(end - start)
                    pick.append((0, end - start))
            else:
                try:
                    if isinstance(i, (bool, np.bool_)):
                        raise TypeError
                    j = operator.index(i)
                except TypeError:
                    raise IndexError(f"index: only ints, slices, None and ... are supported as indices, got "
                                     f"{type(i).__name__} (tensor/list/bool indexing is not supported yet)") from None
                if not -n <= j < n:
                    raise IndexError(f"index {j} is out of bounds for dimension {d} with size {n}")
                j %= n
                bounds.append((j, j + 1))
                pads.append((0, 0))
                split.append(1)
                pick.append((0, 1))
            d += 1
        steps = [(Op.SHRINK, tuple(bounds)), (Op.PAD, tuple(pads)), (Op.RESHAPE, tuple(split)),
                 (Op.SHRINK, tuple(pick)), (Op.RESHAPE, tuple(out))]
        return self._view(steps, st)

    def __setitem__(self, idx, value) -> None:
        key = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, (Tensor, torch.Tensor, np.ndarray, list)) for i in key):
            from lazy.indexed import is_advanced, setitem

            if any(is_advanced(i) for i in key):
                return setitem(self, key, value)
        view = self[idx]
        if isinstance(value, Tensor) and value._base is view._base and value._steps == view._steps:
            return  # `x[i] += 1` already wrote through the view; Python stores it back here
        if isinstance(value, (Tensor, torch.Tensor, np.ndarray)) and value.ndim > view.ndim:
            lead = value.ndim - view.ndim  # torch drops leading size-1 dims of the value
            if all(s == 1 for s in value.shape[:lead]):
                value = value.reshape(tuple(value.shape[lead:]))
        v = _pyscalar(value)
        if v is not None:  # a number must fit self's dtype, as for fill_ (copy_ converts it instead)
            view._write(view._const(_fits("setitem", v, self.dtype)), "copy_")
        else:
            view.copy_(value)

    def select(self, dim: int, index: int) -> Tensor:
        d = _dim("select", dim, self.ndim)
        return self[(slice(None),) * d + (index,)]

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        d = _dim("narrow", dim, self.ndim)
        n = self._node.shape[d]
        s = start + n if start < 0 else start
        if not 0 <= s <= n or length < 0 or s + length > n:
            raise RuntimeError(f"narrow: start {start} + length {length} exceeds dim {d} of size {n}")
        return self[(slice(None),) * d + (slice(s, s + length),)]

    def split(self, split_size, dim: int = 0) -> tuple[Tensor, ...]:
        d = _dim("split", dim, self.ndim)
        n = self._node.shape[d]
        if isinstance(split_size, (list, tuple)):
            if sum(split_size) != n:
                raise RuntimeError(f"split: sizes {list(split_size)} must sum to {n}, the size of dim {d}")
            sizes = list(split_size)
        else:
            if split_size <= 0 and n:
                raise RuntimeError(f"split: split_size must be positive, got {split_size}")
            sizes = [min(split_size, n - i) for i in range(0, n, split_size)] if n else [0]
        offs = [sum(sizes[:i]) for i in range(len(sizes))]
        return tuple(self.narrow(d, o, s) for o, s in zip(offs, sizes))

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        if chunks <= 0:
            raise RuntimeError(f"chunk: chunks must be greater than 0, got {chunks}")
        n = self._node.shape[_dim("chunk", dim, self.ndim)]
        if n == 0:
            return tuple(self.narrow(dim, 0, 0) for _ in range(chunks))
        return self.split(-(-n // chunks), dim)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        d = _dim("unbind", dim, self.ndim)
        return tuple(self.select(d, i) for i in range(self._node.shape[d]))

    def tensor_split(self, indices_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
        """Views along `dim`: n sections (the first size % n of them one longer), or cuts before each
        index, by Python's slice rules (negative indices count from the end, indices past the end
        clamp, a cut before the previous one gives an empty piece). A 0-d or 1-d int64 tensor gives
        the sections or the indices, as in torch."""
        if self.ndim == 0:
            raise RuntimeError("tensor_split: expected a tensor with at least 1 dim, got a 0-d tensor")
        d = _dim("tensor_split", dim, self.ndim)
        ios = indices_or_sections
        if isinstance(ios, (Tensor, torch.Tensor, np.ndarray)):
            t = ios if isinstance(ios, Tensor) else tensor(ios)
            if t.ndim > 1 or t.dtype is not int64:
                raise RuntimeError(f"tensor_split: expected indices_or_sections as a 0-d or 1-d int64 tensor, got "
                                   f"shape {_fmt(t.shape)} and dtype {t.dtype}")
            ios = t.tolist()
        if isinstance(ios, (list, tuple)):
            cuts = [_int_arg("tensor_split", "indices", i) for i in ios]
            pre = (slice(None),) * d
            return tuple(self[pre + (slice(a, b),)] for a, b in zip([None, *cuts], [*cuts, None]))
        k = _int_arg("tensor_split", "sections", ios)
        if k <= 0:
            raise RuntimeError(f"tensor_split: the number of sections must be greater than 0, got {k}")
        q, r = divmod(self._node.shape[d], k)
        sizes = [q + 1] * r + [q] * (k - r)
        return tuple(self.narrow(d, sum(sizes[:i]), n) for i, n in enumerate(sizes))

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        """A view of the `offset` diagonal of the (dim1, dim2) planes, as a new last dim (torch's
        layout). The two dims move last and the diagonal's L x L square is cut out; flattened and
        padded to rows of L + 1, the diagonal is column 0."""
        offset = _int_arg("diagonal", "offset", offset)
        nd, sh = self.ndim, self._node.shape
        if nd < 2:
            raise RuntimeError(f"diagonal: expected a tensor with at least 2 dims, got shape {_fmt(sh)}")
        d1, d2 = _dim("diagonal", dim1, nd), _dim("diagonal", dim2, nd)
        if d1 == d2:
            raise RuntimeError(f"diagonal: dim1 and dim2 are both dim {d1} (expected two different dims)")
        rest = [i for i in range(nd) if i not in (d1, d2)]
        lead = tuple(sh[i] for i in rest)
        r0, c0 = min(max(-offset, 0), sh[d1]), min(max(offset, 0), sh[d2])
        n = min(sh[d1] - r0, sh[d2] - c0)
        keep = tuple((0, s) for s in lead)
        steps = [(Op.PERMUTE, (*rest, d1, d2)), (Op.SHRINK, (*keep, (r0, r0 + n), (c0, c0 + n))),
                 (Op.RESHAPE, (*lead, n * n)), (Op.PAD, (*((0, 0) for _ in lead), (0, n))),
                 (Op.RESHAPE, (*lead, n, n + 1)), (Op.SHRINK, (*keep, (0, n), (0, 1))), (Op.RESHAPE, (*lead, n))]
        st = self._stride
        return self._view(steps, tuple(st[i] for i in rest) + (st[d1] + st[d2],))

    # ---- movement: copies (torch copies for these too)
    def flip(self, *dims) -> Tensor:
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return self._mv(Op.FLIP, _dims("flip", list(dims), self.ndim) if dims else ())

    def pad(self, pad, value=0) -> Tensor:
        """torch.nn.functional.pad (constant mode): `pad` pairs from the last dim backwards;
        negative amounts crop."""
        pad, sh = list(pad), self._node.shape
        if len(pad) % 2 or len(pad) > 2 * self.ndim:
            raise RuntimeError(f"pad: {pad} must have an even length of at most {2 * self.ndim} for shape {_fmt(sh)}")
        pairs = [(0, 0)] * (self.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in range(len(pad) - 2, -1, -2)]
        if any(s + a + b < 0 for s, (a, b) in zip(sh, pairs)):
            raise RuntimeError(f"pad: {pad} would give a negative size for shape {_fmt(sh)}")
        x = self._mv(Op.SHRINK, tuple((-min(a, 0), s + min(b, 0)) for s, (a, b) in zip(sh, pairs)))
        grow = tuple((max(a, 0), max(b, 0)) for a, b in pairs)
        out = x._mv(Op.PAD, grow)
        if not any(a or b for a, b in grow):
            return out  # nothing padded: the value is neither checked nor used, as in torch
        v = _pyscalar(value)
        if v is not None:  # torch fills its output first: fill_'s checks (NaN for ints, a half's overflow)
            _fits("pad", float(v), self.dtype, halves=prod(s + a + b for s, (a, b) in zip(sh, pairs)) > 1)
        if value != 0:
            mask = x._const(True, bool_)._mv(Op.PAD, grow)
            out = where(mask, out, _promote("pad", value, dtype=self.dtype)[0])
        return out

    def repeat(self, *sizes) -> Tensor:
        reps, sh = _sizes("repeat", sizes), self._node.shape
        if len(reps) < len(sh):
            raise RuntimeError(f"repeat: {len(reps)} repeat counts for a {len(sh)}-d tensor "
                               f"(expected at least {len(sh)})")
        sh = (1,) * (len(reps) - len(sh)) + sh
        x = self._mv(Op.RESHAPE, tuple(v for s in sh for v in (1, s)))
        x = x._mv(Op.EXPAND, tuple(v for r, s in zip(reps, sh) for v in (r, s)))
        return x._mv(Op.RESHAPE, tuple(r * s for r, s in zip(reps, sh)))

    def tile(self, *sizes, dims=None) -> Tensor:
        """repeat(), with missing leading repeat counts taken as 1 (tile((2,)) on a 2-d tensor repeats
        the last dim). The counts come as varargs, one sequence, or `dims=` (torch's name)."""
        reps = _sizes("tile", sizes if dims is None else (dims,))
        if any(r < 0 for r in reps):
            raise RuntimeError(f"tile: repeat counts {reps} must be >= 0")
        reps = (1,) * (self.ndim - len(reps)) + reps
        return self.repeat(*reps) if reps else self.clone()

    def roll(self, shifts, dims=None) -> Tensor:
        """Elements shifted along `dims`, wrapping around (a copy, like torch); dims=None rolls the
        flattened tensor. Each dim is read from two copies of itself side by side (an expand, no
        data copied) starting at size - shift."""
        sh = list(shifts) if isinstance(shifts, (tuple, list)) else [shifts]
        sh = [_int_arg("roll", "shifts", s) for s in sh]
        if dims is None:
            if len(sh) != 1:
                raise RuntimeError(f"roll: {len(sh)} shifts given without dims (expected one shift, which rolls "
                                   "the flattened tensor, or one dim per shift)")
            flat = self._mv(Op.RESHAPE, (self.numel(),))._roll(sh[0], 0)
            return flat._mv(Op.RESHAPE, self._node.shape)
        ds = list(dims) if isinstance(dims, (tuple, list)) else [dims]
        if len(ds) != len(sh) or not sh:
            raise RuntimeError(f"roll: {len(sh)} shifts and {len(ds)} dims given (expected one shift per dim, "
                               "at least one)")
        if self.ndim == 0:
            raise IndexError(f"roll: dims {dims} given for a 0-d tensor (it has no dims to roll)")
        x = self
        for s, d in zip(sh, ds):
            x = x._roll(s, _dim("roll", d, self.ndim))
        return x if x is not self else self.clone()

    def _roll(self, shift: int, d: int) -> Tensor:
        sh = self._node.shape
        n = sh[d]
        if n == 0 or shift % n == 0:
            return self
        k = n - shift % n
        x = self._mv(Op.RESHAPE, (*sh[:d], 1, *sh[d:]))._mv(Op.EXPAND, (*sh[:d], 2, *sh[d:]))
        x = x._mv(Op.RESHAPE, (*sh[:d], 2 * n, *sh[d + 1:]))
        return x._mv(Op.SHRINK, tuple((k, k + n) if i == d else (0, s) for i, s in enumerate(sh)))

    def _triangle(self, name: str, diagonal, lower: bool) -> Tensor:
        k = _int_arg(name, "diagonal", diagonal)
        if self.ndim < 2:
            raise RuntimeError(f"{name}: expected a tensor with at least 2 dims, got shape {_fmt(self._node.shape)}")
        r, c = self._node.shape[-2:]
        rows = Tensor._new(node(Op.IOTA, (), None, int64, (r,)))._mv(Op.RESHAPE, (r, 1))
        cols = Tensor._new(node(Op.IOTA, (), None, int64, (c,)))._mv(Op.RESHAPE, (1, c))
        off = cols - rows  # column - row: 0 on the main diagonal, k on diagonal k
        return where(off <= k if lower else off >= k, self, self._const(0))

    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dims (column - row <= diagonal), zeros elsewhere: one
        WHERE on an index comparison, fused with its producer and consumer."""
        return self._triangle("tril", diagonal, lower=True)

    def triu(self, diagonal: int = 0) -> Tensor:
        """The upper triangle of the last two dims (column - row >= diagonal), zeros elsewhere."""
        return self._triangle("triu", diagonal, lower=False)

    # ---- dtype shortcuts
    float, double, half, bfloat16 = _to(float32), _to(float64), _to(float16), _to(bfloat16)
    int, long, bool, byte, char = _to(int32), _to(int64), _to(bool_), _to(uint8), _to(int8)

    def is_floating_point(self) -> bool:
        return self.dtype.is_float

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)


def _is_operand(x) -> bool:
    return (isinstance(x, (Tensor, torch.Tensor, np.ndarray, return_types.max, return_types.min))
            or _pyscalar(x) is not None)


# ---------------------------------------------------------------- module-level ops

def _divide(x, y, rounding_mode: str | None) -> Tensor:
    if rounding_mode is None:  # ints divide as floats, like torch: a Python int converts, unwrapped
        ops = [_operand("div", v) for v in (x, y)]
        if isinstance(ops[0], Tensor) and ops[0].dtype is bool_ and type(ops[1]) is int and ops[1] >= 2**63:
            # torch promotes these (a uint64); `number / bool_tensor` is a reciprocal times it there
            raise DTypeError(f"div: promoting bool and {ops[1]} (a uint64 in torch) is not supported")
        dt = result_type(*map(_key, ops), op="div")
        if isinstance(ops[0], Tensor) and _wide_scalar(dt, ops[1]):
            return _opmath("div", Op.DIV, ops[0], ops[1], dt)
        a, b = _promote("div", x, y, dtype=None if dt.is_float else get_default_dtype())
        return a._ew(Op.DIV, b)
    a, b = _promote("div", x, y)
    _no_bool(f"div (rounding_mode={rounding_mode!r})", a)
    if rounding_mode == "floor":
        return a._ew(Op.FLOORDIV, b)
    if rounding_mode == "trunc":
        return a._ew(Op.DIV, b) if not a.dtype.is_float else a._ew(Op.DIV, b).trunc()
    raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")


def where(condition, input, other) -> Tensor:
    """torch.where(condition, input, other): condition must be bool; input/other promote."""
    c = _operand("where", condition)
    if not isinstance(c, Tensor) or c.dtype is not bool_:
        raise DTypeError(f"where: expected a bool condition tensor, got "
                         f"{c.dtype if isinstance(c, Tensor) else type(c).__name__}")
    a, b = _promote("where", input, other, shapes=[c._node.shape])
    for v in (input, other):
        if _pyscalar(v) is not None:
            _fits("where", _pyscalar(v), a.dtype)  # a number must fit the result, as in torch
    _same_device("where", c, a, b)
    return c._expand_to(a._node.shape)._ew(Op.WHERE, a, b)


def xlogy(input, other) -> Tensor:
    """input * log(other): 0 where input is 0 and other is not NaN (0 * log(0) and 0 * log(inf) too),
    NaN where other is NaN. Either side may be a Python number; ints and bools compute in the default
    float dtype. Gradients are torch's: for input, log(other), but 0 where input is 0 and other <= 0;
    for other, input / other. Two corners differ: at input = other = 0 the gradient for other is 0
    here (torch: 0/0 = NaN), and at input = 0, other = inf the one for input is NaN (torch: inf)."""
    a, b = _operand("xlogy", input), _operand("xlogy", other)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"xlogy: expected at least one tensor, got {type(input).__name__} and {type(other).__name__}")
    x, y = (t._floating() for t in _promote("xlogy", a, b))
    (x, out), (y, _) = x._acc(None), y._acc(None)
    # where torch's gradient for x is 0 (x = 0, y <= 0) the log sees 1: no 0 * -inf, and a value of 0
    masked = (x == 0) & (y <= 0)
    r = x * where(masked, 1.0, y).log()
    r = where((x == 0) & y.isinf(), 0.0, r)  # 0 * log(inf) would be NaN
    return where(y.isnan(), math.nan, r)._cast(out)


def var_mean(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    """(var, mean) like torch.var_mean, from shared nodes (the mean is computed once)."""
    x = _tensor_arg("var_mean", "input", input)
    return x._moment("var_mean", dim, unbiased, keepdim, correction, root=False, with_mean=True)


def std_mean(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    """(std, mean) like torch.std_mean."""
    x = _tensor_arg("std_mean", "input", input)
    return x._moment("std_mean", dim, unbiased, keepdim, correction, root=True, with_mean=True)


def einsum(equation: str, *operands) -> Tensor:
    """torch.einsum for explicit or implicit output, any number of operands, without `...` or
    repeated labels within one operand. Each pairwise contraction is one MATMUL on permuted and
    reshaped views (batch labels, free labels, contracted labels)."""
    ops = list(operands[0]) if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else list(operands)
    ops = [_operand("einsum", o) for o in ops]
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if "." in eq or len(terms) != len(ops) or not all(isinstance(o, Tensor) for o in ops):
        raise RuntimeError(f"einsum: equation {equation!r} does not fit {len(ops)} tensor operand(s) "
                           "(ellipsis is not supported)")
    for t, o in zip(terms, ops):
        if len(t) != o.ndim or len(set(t)) != len(t) or not t.isalpha() and t:
            raise RuntimeError(f"einsum: term {t!r} does not fit an operand of shape {_fmt(o.shape)} "
                               "(one letter per dim, no repeats)")
    if not arrow:
        counts = {c: lhs.count(c) for c in set(lhs) if c.isalpha()}
        out = "".join(sorted(c for c, k in counts.items() if k == 1))
    sizes: dict[str, int] = {}
    for t, o in zip(terms, ops):
        for c, n in zip(t, o.shape):
            if sizes.setdefault(c, n) != n and n != 1 and sizes[c] != 1:
                raise RuntimeError(f"einsum: label {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = max(sizes[c], n)
    acc, acc_t = ops[0], terms[0]
    for i in range(1, len(ops)):
        later = set(out) | set("".join(terms[i + 1:]))
        acc, acc_t = _contract(acc, acc_t, ops[i], terms[i], later, sizes)
    keep = [c for c in acc_t if c in out]
    dropped = [k for k, c in enumerate(acc_t) if c not in out]
    if dropped:
        acc = acc.sum(tuple(dropped))
    return acc.permute(*[keep.index(c) for c in out]) if keep else acc


def _contract(a: Tensor, ta: str, b: Tensor, tb: str, later: set, sizes: dict) -> tuple[Tensor, str]:
    # labels only one side has and nobody needs later are summed away first
    for side in (0, 1):
        t, other = (ta, tb) if side == 0 else (tb, ta)
        gone = [k for k, c in enumerate(t) if c not in other and c not in later]
        if gone:
            x = (a if side == 0 else b).sum(tuple(gone))
            t = "".join(c for c in t if c not in [t[k] for k in gone])
            a, ta = (x, t) if side == 0 else (a, ta)
            b, tb = (b, tb) if side == 0 else (x, t)
    batch = [c for c in ta if c in tb and c in later]
    con = [c for c in ta if c in tb and c not in later]
    fa = [c for c in ta if c not in tb]
    fb = [c for c in tb if c not in ta]
    a = a.permute(*[ta.index(c) for c in batch + fa + con])
    b = b.permute(*[tb.index(c) for c in batch + con + fb])
    bs = [sizes[c] for c in batch]
    a = a.expand(*bs, *a.shape[len(bs):]) if bs else a
    b = b.expand(*bs, *b.shape[len(bs):]) if bs else b
    m, k, n = prod(sizes[c] for c in fa), prod(sizes[c] for c in con), prod(sizes[c] for c in fb)
    if k == 1:  # nothing to sum: a product, as torch's einsum does it (bools and mixed dtypes promote)
        y = a.reshape(*bs, m, 1) * b.reshape(*bs, 1, n)
    else:
        y = a.reshape(*bs, m, k) @ b.reshape(*bs, k, n)
    return y.reshape(*bs, *[sizes[c] for c in fa], *[sizes[c] for c in fb]), "".join(batch + fa + fb)


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along `dim` (torch promotion); each input is padded into place and selected
    with WHERE, so the result never copies eagerly."""
    ts = [_operand("cat", t) for t in tensors]
    if not ts or not all(isinstance(t, Tensor) for t in ts):
        raise ValueError("cat: expected a non-empty list of tensors")
    _same_device("cat", *ts)
    dt = result_type(*map(_key, ts))  # the skipped empties promote too, as in torch
    ts = [t for t in ts if t._node.shape != (0,)] or ts[:1]  # torch skips legacy 1-d empties
    ref = ts[0]
    if ref.ndim == 0:
        raise RuntimeError("cat: zero-dimensional tensors cannot be concatenated")
    d = _dim("cat", dim, ref.ndim)
    for i, t in enumerate(ts):
        sh = t._node.shape
        if len(sh) != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(sh, ref._node.shape)) if j != d):
            raise RuntimeError(f"cat: shapes {' and '.join(_fmt(t._node.shape) for t in ts)} must match except in "
                               f"dim {d}; tensor {i} has shape {_fmt(sh)}")
    # a pending result of a cat made before the last realization is computed first: a sequence
    # grown by one cat per step (generate's `idx = cat((idx, next))`, a KV cache) would otherwise
    # nest every step's cat in the next step's graph, a new structure (and a new program) per step;
    # realized, it is a buffer of a new size, which dynamic shapes absorb. (Cats nested in one
    # expression stay one fused kernel.)
    grown = [t for t in ts if _concatenated.get(id(t), (None, _realizations))[1] < _realizations
             and _concatenated[id(t)][0]() is t and t._node.op not in _REALIZED]
    if grown:
        realize(*grown)
    total = sum(t._node.shape[d] for t in ts)
    out, off = None, 0
    for t in ts:
        k = t._node.shape[d]
        pads = tuple((off, total - off - k) if j == d else (0, 0) for j in range(ref.ndim))
        piece = t._cast(dt)._mv(Op.PAD, pads)
        out = piece if out is None else where(t._const(True, bool_)._mv(Op.PAD, pads), piece, out)
        off += k
    if len(ts) > 1:
        key = id(out)
        _concatenated[key] = (weakref.ref(out, lambda _: _concatenated.pop(key, None)), _realizations)
    return out


_concatenated: dict[int, tuple] = {}  # id(tensor made by cat) -> (weak reference, _realizations then)
concat = cat


def stack(tensors, dim: int = 0) -> Tensor:
    ts = [_operand("stack", t) for t in tensors]
    if not ts or not all(isinstance(t, Tensor) for t in ts):
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(ts):
        if t._node.shape != ts[0]._node.shape:
            raise RuntimeError(f"stack: expects each tensor to be equal size, but got {_fmt(ts[0]._node.shape)} "
                               f"at entry 0 and {_fmt(t._node.shape)} at entry {i}")
    d = _dim("stack", dim, ts[0].ndim, new=1)
    return cat([t.unsqueeze(d) for t in ts], d)


# ---------------------------------------------------------------- creation

def _from_torch(t: torch.Tensor, owned: bool = False) -> Tensor:
    """Zero-copy: the torch tensor becomes a BUFFER leaf (reads share its memory). `owned`: the memory
    is a private copy lazy made, which the tensor's later values may overwrite; else lazy never writes it."""
    t = t.detach()
    if t.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"tensor: torch tensors on {t.device} are not supported (expected cpu or cuda)")
    dt = as_dtype(t.dtype, "tensor")
    return Tensor._new(node(Op.BUFFER, (), Buffer(t, owned=owned), dt, tuple(t.shape)), t.stride())


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """torch.from_numpy: a tensor that *is* the array's memory. Unlike `lazy.tensor(array)` (which
    lazy never writes), in-place writes to it (`add_`, `x[i] = v`, an optimizer step) go into the
    array at once, and the array's own later changes show in it; see lazy/inplace.py's exception
    for shared memory. The array's dtype must be one lazy has (torch's errors otherwise)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    t = torch.from_numpy(ndarray)
    out = _from_torch(t, owned=True)
    inplace.pin(out._node.arg)
    return out


def owned_tensor(host: torch.Tensor) -> Tensor:
    """A tensor over `host`, a torch tensor nobody else holds (drawn, copied, allocated by lazy):
    its later values may be written into that memory (lazy/inplace.py)."""
    return _from_torch(host, owned=True)


def tensor(data, dtype=None, device=None) -> Tensor:
    """From Python scalars/lists, numpy arrays (zero-copy when possible), torch tensors (zero-copy)
    or lazy tensors (a new tensor with the same value). `dtype` casts lazily.

    Zero-copy means shared memory, as with torch.from_numpy: in-place changes the caller makes to
    the torch tensor or array show up until this tensor is realized; lazy never writes to it."""
    dt = None if dtype is None else as_dtype(dtype, "tensor")
    if isinstance(data, Tensor):
        n = data._node  # a new tensor with the same value and no gradient history, like torch.tensor(t)
        out = Tensor._new(n if n.op is Op.BUFFER and not data.requires_grad else _mk(Op.DETACH, (n,)))
    elif isinstance(data, torch.Tensor):
        out = _from_torch(data)
    elif isinstance(data, np.ndarray):
        try:
            with warnings.catch_warnings():  # read-only arrays are fine: lazy never writes its inputs
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(data)
        except (TypeError, ValueError):  # negative strides, odd byte order: one host copy
            t = torch.tensor(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("=")))
        out = _from_torch(t)
    else:
        try:
            with torch_default():  # Python floats take lazy's default dtype
                t = torch.tensor(_host(data), dtype=None if dt is None else to_torch(dt))
        except (TypeError, ValueError, RuntimeError) as e:
            if isinstance(e, OverflowError) or "Overflow" in str(e):  # a Python int past 64 bits: torch's error
                raise type(e)(f"tensor: {e}") from None
            raise TypeError(f"tensor: cannot build a tensor from {type(data).__name__}: {e}") from None
        out = _from_torch(t, owned=True)  # torch.tensor made a copy of its own
    return out if dt is None else out._cast(dt)


def _host(data):
    """Nested lists may hold lazy tensors (like torch's lists of 0-d tensors): realize them."""
    if isinstance(data, (list, tuple)):
        return [_host(d) for d in data]
    return data.torch() if isinstance(data, Tensor) else data


def _full(op: str, size, value, dtype, device) -> Tensor:
    """A lazy constant: no memory until realized. The dtype defaults from the value, like torch."""
    v = _pyscalar(value)
    if v is None:
        raise TypeError(f"{op}: fill_value must be a Python number, got {type(value).__name__}")
    dt = as_dtype(dtype, op) if dtype is not None else result_type(_key(v))
    return Tensor._new(const(_fits(op, v, dt), dt, _new_shape(op, size)))


_INT_RANGE = {"int8": (-2**7, 2**7 - 1), "uint8": (-255, 255), "int32": (-2**31, 2**31 - 1),
              "int64": (-2**63, 2**63 - 1)}  # uint8 takes -255..-1 as torch does (wrapping them)


def _fits(op: str, v, dt: DType, halves: bool = False):
    """`v`, a Python number stored into `dt`, or torch's error where it cannot be without overflow:
    an int outside the dtype (uint8 takes -255..255, wrapping), a float outside an int dtype (before
    truncation: 127.9 does not fit int8, -0.5 does not fit uint8) or a finite float beyond float32's
    largest; `halves`: beyond float16's and bfloat16's too (masked_fill, alpha; elsewhere torch rounds
    those to inf)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        _int64(v)
    if dt.is_float:
        if math.isfinite(v) and (dt is float32 or halves and dt in (float16, bfloat16)) \
                and abs(v) > torch.finfo(to_torch(dt)).max:
            raise RuntimeError(f"{op}: value {v!r} cannot be converted to {dt} without overflow")
        return v
    lo_hi = _INT_RANGE.get(dt.name)
    if lo_hi is None:
        return v
    lo, hi = lo_hi
    if isinstance(v, float):
        lo = max(lo, 0) if dt is uint8 else lo
    if not (lo <= v <= hi):  # False for NaN
        raise RuntimeError(f"{op}: value {v!r} cannot be converted to {dt} without overflow "
                           f"(expected {lo} to {hi})")
    return v


def full(size, fill_value, *, dtype=None, device=None) -> Tensor:
    return _full("full", (size,), fill_value, dtype, device)


def zeros(*size, dtype=None, device=None) -> Tensor:
    return _full("zeros", size, 0, dtype or get_default_dtype(), device)


def ones(*size, dtype=None, device=None) -> Tensor:
    return _full("ones", size, 1, dtype or get_default_dtype(), device)


def empty(*size, dtype=None, device=None) -> Tensor:
    """Like torch.empty, but the contents are zeros (a lazy constant costs nothing)."""
    return zeros(*size, dtype=dtype, device=device)


def zeros_like(t: Tensor, *, dtype=None, device=None) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device)


def ones_like(t: Tensor, *, dtype=None, device=None) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device)


def empty_like(t: Tensor, *, dtype=None, device=None) -> Tensor:
    return zeros_like(t, dtype=dtype, device=device)


def full_like(t: Tensor, fill_value, *, dtype=None, device=None) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device)


def arange(start, end=None, step=1, *, dtype=None, device=None) -> Tensor:
    """Lazy IOTA * step + start, length ceil((end - start) / step). Ints give int64; floats are
    computed in float64 and cast, which is what torch's CPU kernel does."""
    if end is None:
        start, end = 0, start
    vals = [_pyscalar(v) for v in (start, end, step)]
    if any(v is None for v in vals):
        raise TypeError(f"arange: start, end and step must be numbers, got {(start, end, step)}")
    start, end, step = vals
    is_int = all(isinstance(v, int) for v in vals)
    for v in vals:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 2**63:  # torch computes in int64
            raise RuntimeError(f"arange: value {v} cannot be converted to int64 without overflow")
    dt = as_dtype(dtype, "arange") if dtype is not None else (int64 if is_int else get_default_dtype())
    if dt.kind in "iu" and not is_int:  # torch computes an integer arange in int64 from the start
        start, end, step = (math.trunc(v) for v in (start, end, step))
        is_int = True
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    n = math.ceil((end - start) / step)
    if n < 0:
        raise RuntimeError(f"arange: upper bound {end} and lower bound {start} inconsistent with step sign {step}")
    x = Tensor._new(node(Op.IOTA, (), None, int64 if is_int and dt.kind in "iu" else float64, (n,)))
    if step != 1:
        x = x * step
    if start != 0:
        x = x + start
    return x._cast(dt)


def linspace(start, end, steps: int, *, dtype=None, device=None) -> Tensor:
    """torch's CPU formula: start + i*step for the first half, end - (steps-1-i)*step after."""
    if steps < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    dt = as_dtype(dtype, "linspace") if dtype is not None else get_default_dtype()
    if steps <= 1:
        return full((steps,), start, dtype=dt)
    cdt = dt if dt.is_float and dt.itemsize >= 4 else (float64 if not dt.is_float else get_default_dtype())
    i = Tensor._new(node(Op.IOTA, (), None, cdt, (steps,)))
    step = (float(end) - float(start)) / (steps - 1)
    lo, hi = i * step + float(start), float(end) - (steps - 1 - i) * step
    return where(i < steps // 2, lo, hi)._cast(dt)


def eye(n: int, m: int | None = None, *, dtype=None, device=None) -> Tensor:
    """Lazy identity: IOTA(n)[:, None] == IOTA(m)[None, :], cast."""
    m = n if m is None else m
    if n < 0 or m < 0:
        raise RuntimeError(f"eye: n and m must be non-negative, got {n}, {m}")
    r = Tensor._new(node(Op.IOTA, (), None, int64, (n,)))._mv(Op.RESHAPE, (n, 1))._expand_to((n, m))
    c = Tensor._new(node(Op.IOTA, (), None, int64, (m,)))._mv(Op.RESHAPE, (1, m))._expand_to((n, m))
    return (r == c)._cast(as_dtype(dtype, "eye") if dtype is not None else get_default_dtype())


# random data: generated eagerly on the host by one torch.Generator, then wrapped as a BUFFER
_gen = torch.Generator()  # torch's default seed until manual_seed


def manual_seed(seed: int) -> torch.Generator:
    """Seed lazy's generator. The same seed gives the same numbers as torch.manual_seed + torch.rand."""
    return _gen.manual_seed(seed)


def _random(name: str, fn, size, dtype, device, generator, *args) -> Tensor:
    dt = as_dtype(dtype, name) if dtype is not None else get_default_dtype()
    if name in ("rand", "randn") and not dt.is_float:
        raise DTypeError(f"{name}: expected a floating point dtype, got {dt}")
    shape, g, tdt = _new_shape(name, size), generator or _gen, to_torch(dt)
    out = _from_torch(fn(*args, shape, generator=g, dtype=tdt), owned=True)
    if runtime._recorders:  # lazy.jit: a replay draws anew
        runtime.record_draw(_held(out._node), lambda: fn(*args, shape, generator=g, dtype=tdt), (name, shape, dt.name))
    return out


def rand(*size, dtype=None, device=None, generator=None) -> Tensor:
    """Uniform [0, 1): generated eagerly on the host by lazy's torch.Generator (see manual_seed),
    or by `generator`, and wrapped as a BUFFER."""
    return _random("rand", torch.rand, size, dtype, device, generator)


def randn(*size, dtype=None, device=None, generator=None) -> Tensor:
    """Standard normal: generated eagerly on the host, like `rand`."""
    return _random("randn", torch.randn, size, dtype, device, generator)


def randint(*args, size=None, dtype=None, device=None, generator=None) -> Tensor:
    """randint([low=0,] high, size): generated eagerly on the host, like `rand`."""
    if size is None:
        *args, size = args
    low, high = (0, args[0]) if len(args) == 1 else args
    return _random("randint", torch.randint, (size,), dtype or int64, device, generator, low, high)


def rand_like(t: Tensor, *, dtype=None, device=None) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, device=device)


def randn_like(t: Tensor, *, dtype=None, device=None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=device)


def _placed(fn):
    """Creation on a device: build lazily on the host graph, then move when the device is not the CPU.
    `lazy.tensor(torch_tensor)` keeps the data where it is unless `device=` says otherwise."""
    keep_data_device = fn.__name__ == "tensor"

    @functools.wraps(fn)
    def create(*args, device=None, requires_grad: bool = False, **kw):
        if keep_data_device and device is None:
            t = fn(*args, **kw)
        else:
            dev = _device(fn.__name__, device)
            t = fn(*args, **kw)
            t = t if torch.device(dev) == t.device else t.to(dev)
        return t.requires_grad_() if requires_grad else t
    return create


for _name in ("tensor", "full", "zeros", "ones", "empty", "zeros_like", "ones_like", "empty_like", "full_like",
              "arange", "linspace", "eye", "rand", "randn", "randint", "rand_like", "randn_like"):
    globals()[_name] = _placed(globals()[_name])


# torch-style functions mirroring methods (lazy.exp(x), lazy.sum(x, 1), ...). Collected in a dict
# for lazy/__init__.py: defining `max`, `sum`, ... here would shadow builtins in this module.
# torch's in-place forms of the unary and binary methods: compute, check torch's cast rule, write
# into self (and through views to their base)
INPLACE = ("abs", "neg", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos",
           "tanh", "sigmoid", "relu", "erf", "sinh", "cosh", "sign", "reciprocal", "square", "floor", "ceil",
           "trunc", "round", "frac", "nan_to_num", "logit", "clamp_min", "clamp_max", "remainder", "floor_divide",
           "lerp", "hypot", "xlogy", "tril", "triu")
for _name in INPLACE:
    setattr(Tensor, _name + "_", _inplace_op(_name + "_", _name))
_nan_to_num_in_place = Tensor.nan_to_num_


def _nan_to_num_(self, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Tensor:
    """In place. Ints and bools have nothing to replace, so nothing is written: torch returns self
    as it is, an expanded tensor it could not write into included."""
    if not self.dtype.is_float:
        self.nan_to_num(nan, posinf, neginf)  # (its argument checks)
        return self
    return _nan_to_num_in_place(self, nan, posinf, neginf)


Tensor.nan_to_num_ = _nan_to_num_

FUNCTIONS = {name: getattr(Tensor, name) for name in (
    "add", "sub", "mul", "div", "true_divide", "floor_divide", "remainder", "pow", "maximum", "minimum",
    "neg", "abs", "exp", "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
    "tan", "tanh", "sigmoid", "relu", "gelu", "silu", "erf", "clamp", "clip", "isnan", "isinf", "isfinite",
    "sign", "reciprocal", "square", "floor", "ceil", "trunc", "round", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_not", "sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "var", "std",
    "logsumexp", "softmax", "log_softmax", "any", "all", "matmul", "reshape", "permute", "transpose",
    "swapaxes", "squeeze", "unsqueeze", "flatten", "unflatten", "flip", "narrow", "split", "chunk", "unbind",
    "movedim", "masked_fill", "lerp", "clone", "pad", "mm", "bmm", "isclose", "allclose", "equal", "nan_to_num",
    "frac", "signbit", "sinh", "cosh", "hypot", "logaddexp", "logit", "count_nonzero", "aminmax", "norm",
    "diagonal", "tensor_split", "tril", "triu", "roll", "tile", "outer", "ger", "dot", "mv",
)}
