"""Ops whose data decides where values go: gather and scatter, advanced indexing, cumulative ops,
sort and topk.

In:  Tensors and index tensors (torch's argument rules, checked here with torch's messages).
Out: lazy Tensors built on `Op.EXTERN` nodes (library calls of codegen/extern.py's table, each its
     own kernel) and ordinary lazy ops around them; their gradients are the VJP rules below.

Design
- A handful of extern primitives carry everything: `gather` (read at indices), `scatter_add` and
  `scatter` (write at indices), `cumsum`/`cumprod`, and the index outputs of `sort`, `topk`,
  `cummax`/`cummin`. The values of sort, topk and cummax are a `gather` at those indices, so their
  gradients are gather's (a scatter_add), as torch's are.
- Advanced indexing (`x[idx]`, `x[:, [-1]]`, `x[i, j]`, `x[mask]`) is basic indexing for the plain
  indices, then the advanced dims moved first, merged into one, and read with one `gather` of whole
  rows at the linear index (torch's placement of the result dims: where the advanced indices were
  when they are adjacent, else first). Assignment is the same path with `scatter`, written back
  through the view (`index_put_` with `accumulate=True`: `scatter_add`).
- A boolean mask as an index selects a number of elements only its data knows: it is read on the
  host (realized) and becomes integer indices (torch's nonzero). Assigning through a mask of the
  indexed dims' shape with a value that does not depend on the count (`logits[logits < v] = -inf`)
  needs no host read: it is a `where`.
- Indices are int64, as torch requires; a negative index counts from the end. An index out of range
  raises torch's error when the kernel runs (not when the op is built: the data is not known yet).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import torch

from lazy import autograd, runtime
from lazy.dtypes import DTypeError
from lazy.graph import Node, Op, bool_, const, int64, node
from lazy.tensor import (
    Tensor,
    _broadcast,
    _dim,
    _fmt,
    _operand,
    _tracked,
    return_types,
    tensor,
)

return_types.sort = namedtuple("sort", ["values", "indices"])
return_types.topk = namedtuple("topk", ["values", "indices"])


# -- graph nodes ----------------------------------------------------------------------------------
def extern(name: str, srcs: tuple[Node, ...], params: tuple, dtype, shape) -> Node:
    """An EXTERN node (codegen/extern.py's op `name`), as the Tensor layer's other ops make nodes."""
    for r in runtime._recorders:  # lazy.jit: pending values the step reads
        r.read(srcs)
    return node(Op.EXTERN, srcs, (name, tuple(params)), dtype, tuple(shape))


def _ext(name: str, srcs: tuple[Tensor, ...], params: tuple, dtype, shape) -> Tensor:
    return Tensor._new(_tracked(extern(name, tuple(t._node for t in srcs), params, dtype, shape)))


def _zeros_node(shape, dtype) -> Node:
    return const(0, dtype, shape)


# -- gradients --------------------------------------------------------------------------------------
def _gather_vjp(n: Node, g: Node):
    x, idx = n.srcs
    (axis,) = n.arg[1]
    return extern("scatter_add", (idx, g), (axis,), g.dtype, x.shape), None


def _scatter_add_vjp(n: Node, g: Node):
    *base, idx, src = n.srcs  # (no base: zeros)
    (axis,) = n.arg[1]
    dsrc = extern("gather", (g, idx), (axis,), g.dtype, idx.shape)
    return (*([g] if base else []), None, _fit(dsrc, src.shape))


def _scatter_vjp(n: Node, g: Node):
    _, idx, src = n.srcs
    (axis,) = n.arg[1]
    kept = extern("scatter", (g, idx, _zeros_node(idx.shape, g.dtype)), (axis,), g.dtype, g.shape)
    dsrc = extern("gather", (g, idx), (axis,), g.dtype, idx.shape)
    return kept, None, _fit(dsrc, src.shape)


def _fit(g: Node, shape) -> Node:
    """A gradient of an index's shape as one of `shape` (a src larger than its index: zeros beyond)."""
    if g.shape == tuple(shape):
        return g
    return node(Op.PAD, (g,), tuple((0, s - t) for s, t in zip(shape, g.shape)))


def _cumsum_vjp(n: Node, g: Node):
    (axis,) = n.arg[1]
    flipped = node(Op.FLIP, (g,), (axis,))
    return (node(Op.FLIP, (extern("cumsum", (flipped,), (axis,), g.dtype, g.shape),), (axis,)),)


def _cumprod_vjp(n: Node, g: Node):
    """sum over j >= i of g_j * out_j / x_i (torch's formula where no input is 0: README lists the
    difference at zeros)."""
    (axis,) = n.arg[1]
    x = n.srcs[0]
    prod = node(Op.MUL, (g, n))
    flipped = node(Op.FLIP, (prod,), (axis,))
    back = node(Op.FLIP, (extern("cumsum", (flipped,), (axis,), g.dtype, g.shape),), (axis,))
    return (node(Op.DIV, (back, x)),)


VJPS = {"gather": _gather_vjp, "scatter_add": _scatter_add_vjp, "scatter": _scatter_vjp,
        "cumsum": _cumsum_vjp, "cumprod": _cumprod_vjp}


def _extern_vjp(n: Node, g: Node):
    rule = VJPS.get(n.arg[0])
    return rule(n, g) if rule is not None else (None,) * len(n.srcs)  # indices: no gradient


autograd.VJP[Op.EXTERN] = _extern_vjp


# -- argument checks ----------------------------------------------------------------------------------
def _index_arg(op: str, index) -> Tensor:
    if isinstance(index, (list, tuple)):
        index = tensor(index, dtype=int64)
    index = _operand(op, index, seq=True)
    if not isinstance(index, Tensor):
        raise TypeError(f"{op}: expected index to be a tensor, got {type(index).__name__}")
    if index.dtype is not int64:
        raise RuntimeError(f"{op}(): Expected dtype int64 for index (got {index.dtype})")
    return index


def _check_index_shape(op: str, x: Tensor, dim: int, index: Tensor, src: Tensor | None = None) -> None:
    if index.ndim != x.ndim and not (index.ndim <= 1 and x.ndim <= 1):
        raise RuntimeError(f"{op}(): Index tensor must have the same number of dimensions as input tensor")
    for d, (i, s) in enumerate(zip(index.shape, x.shape)):
        if d != dim and i > s:
            raise RuntimeError(f"{op}(): Size does not match at dimension {d} expected index {_fmt(index.shape)} "
                               f"to be smaller than self {_fmt(x.shape)} apart from dimension {dim}")
        if src is not None and i > src.shape[d]:
            raise RuntimeError(f"{op}(): Expected index {_fmt(index.shape)} to be smaller than self "
                               f"{_fmt(x.shape)} apart from dimension {dim} and to be smaller size than src "
                               f"{_fmt(src.shape)}")


def _as_1d(t: Tensor) -> Tensor:
    return t.reshape(1) if t.ndim == 0 else t


# -- gather / scatter -----------------------------------------------------------------------------
def gather(self: Tensor, dim: int, index, *, sparse_grad: bool = False) -> Tensor:
    index = _index_arg("gather", index)
    d = _dim("gather", dim, max(self.ndim, 1))
    _check_index_shape("gather", self, d, index)
    if self.ndim == 0:
        return _ext("gather", (_as_1d(self), _as_1d(index)), (0,), self.dtype, (1,)).reshape(tuple(index.shape))
    return _ext("gather", (self, index), (d,), self.dtype, tuple(index.shape))


def _scatter_src(op: str, self: Tensor, index: Tensor, src) -> Tensor:
    if isinstance(src, (Tensor, torch.Tensor, np.ndarray)):
        src = _operand(op, src)
        if src.dtype is not self.dtype:
            raise RuntimeError(f"{op}(): Expected self.dtype to be equal to src.dtype")
        return src
    value = _operand(op, src)
    return Tensor._new(const(value, self.dtype, tuple(index.shape)))


def scatter(self: Tensor, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    if reduce is not None:
        if reduce != "add":
            raise NotImplementedError(f"scatter: reduce={reduce!r} is not supported (only 'add')")
        return scatter_add(self, dim, index, src if src is not None else value)
    index = _index_arg("scatter", index)
    d = _dim("scatter", dim, max(self.ndim, 1))
    src = _scatter_src("scatter", self, index, src if src is not None else value)
    _check_index_shape("scatter", self, d, index, src)
    return _ext("scatter", (self, index, src), (d,), self.dtype, tuple(self.shape))


def scatter_add(self: Tensor, dim: int, index, src) -> Tensor:
    index = _index_arg("scatter_add", index)
    d = _dim("scatter_add", dim, max(self.ndim, 1))
    src = _scatter_src("scatter_add", self, index, src)
    _check_index_shape("scatter_add", self, d, index, src)
    return _ext("scatter_add", (self, index, src), (d,), self.dtype, tuple(self.shape))


def index_select(self: Tensor, dim: int, index) -> Tensor:
    index = _index_arg("index_select", index)
    if index.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    if self.ndim == 0:
        return gather(self, 0, index.reshape(()) if index.ndim else index)
    d = _dim("index_select", dim, self.ndim)
    index = _as_1d(index)
    shape = list(self.shape)
    shape[d] = index.shape[0]
    view = [1] * self.ndim
    view[d] = index.shape[0]
    return gather(self, d, index.reshape(tuple(view)).expand(tuple(shape)))


def take_along_dim(self: Tensor, indices, dim=None) -> Tensor:
    indices = _index_arg("take_along_dim", indices)
    if dim is None:
        return gather(self.reshape(-1), 0, indices.reshape(-1))
    d = _dim("take_along_dim", dim, self.ndim)
    if self.ndim != indices.ndim:
        raise RuntimeError("take_along_dim(): input and indices should have the same number of dimensions, "
                           f"but got {self.ndim} dimensions for input, and {indices.ndim} dimensions for indices")
    shape_x = list(self.shape)
    shape_i = list(indices.shape)
    shape_x[d] = shape_i[d] = 1
    b = _broadcast("take_along_dim", tuple(shape_x), tuple(shape_i))
    x = self.expand(*(s if k != d else self.shape[d] for k, s in enumerate(b)))
    i = indices.expand(*(s if k != d else indices.shape[d] for k, s in enumerate(b)))
    return gather(x, d, i)


def index_add(self: Tensor, dim: int, index, source, *, alpha=1) -> Tensor:
    index = _index_arg("index_add", index)
    d = _dim("index_add", dim, max(self.ndim, 1))
    source = _operand("index_add", source)
    if alpha != 1:
        source = source * alpha
    src = source.to(self.dtype) if source.dtype is not self.dtype else source
    if self.ndim == 0:
        return scatter_add(self.reshape(1), 0, _as_1d(index), src.reshape(1)).reshape(())
    view = [1] * self.ndim
    view[d] = _as_1d(index).shape[0]
    return scatter_add(self, d, _as_1d(index).reshape(tuple(view)).expand(tuple(src.shape)), src)


# -- cumulative ops, sort, topk ------------------------------------------------------------------
def _cum(name: str, self: Tensor, dim, dtype) -> Tensor:
    d = _dim(name, dim, max(self.ndim, 1))
    x = self
    if dtype is not None:
        x = x.to(dtype)
    elif not x.dtype.is_float:
        x = x.to(int64)  # torch accumulates integers and bools in int64
    if x.ndim == 0:
        return _ext(name, (x.reshape(1),), (0,), x.dtype, (1,)).reshape(())
    return _ext(name, (x,), (d,), x.dtype, tuple(x.shape))


def cumsum(self: Tensor, dim, dtype=None) -> Tensor:
    return _cum("cumsum", self, dim, dtype)


def cumprod(self: Tensor, dim, dtype=None) -> Tensor:
    return _cum("cumprod", self, dim, dtype)


def _index_of(name: str, self: Tensor, d: int, params: tuple, shape) -> Tensor:
    x = self.reshape(1) if self.ndim == 0 else self
    return _ext(name, (x,), params, int64, shape if self.ndim else (1,))


def _values_and_indices(self: Tensor, idx: Tensor, d: int, result):
    if self.ndim == 0:
        return result(self.clone(), idx.reshape(()))
    return result(gather(self, d, idx), idx)


def _cumext(name: str, result):
    def f(self: Tensor, dim):
        d = _dim(name, dim, max(self.ndim, 1))
        idx = _index_of(f"{name}_index", self, d, (d if self.ndim else 0,), tuple(self.shape))
        return _values_and_indices(self, idx, d, result)
    f.__name__ = name
    return f


cummax = _cumext("cummax", return_types.max)
cummin = _cumext("cummin", return_types.min)


def sort(self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False):
    d = _dim("sort", dim, max(self.ndim, 1))
    if self.dtype is bool_:
        raise DTypeError("sort: bool tensors are not supported; convert first, e.g. x.to(lazy.uint8)")
    idx = _index_of("sort_index", self, d, (d if self.ndim else 0, bool(descending), bool(stable)),
                    tuple(self.shape))
    return _values_and_indices(self, idx, d, return_types.sort)


def argsort(self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return sort(self, dim, descending, stable).indices


def topk(self: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    d = _dim("topk", dim, max(self.ndim, 1))
    n = self.shape[d] if self.ndim else 1
    k = int(k)
    if not 0 <= k <= n:
        raise RuntimeError(f"selected index k out of range: topk({k}) of a dimension of size {n}")
    shape = list(self.shape)
    if self.ndim:
        shape[d] = k
    idx = _index_of("topk_index", self, d, (k, d if self.ndim else 0, bool(largest), bool(sorted)), tuple(shape))
    return _values_and_indices(self, idx, d, return_types.topk)


# -- advanced indexing ----------------------------------------------------------------------------------
def is_advanced(i) -> bool:
    """Whether `i` is an advanced index (a tensor, array or list of indices or of bools)."""
    if isinstance(i, (Tensor, torch.Tensor, np.ndarray)):
        return True
    return isinstance(i, (list, tuple)) and not any(j is None or j is Ellipsis or isinstance(j, slice) for j in i)


def _as_index_tensor(i) -> Tensor:
    if isinstance(i, Tensor):
        return i
    if isinstance(i, (list, tuple)):
        t = torch.tensor(_host(i))
    elif isinstance(i, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(i))
    else:
        t = i
    if t.dtype is torch.uint8:
        t = t.bool()  # torch's legacy mask dtype
    return tensor(t)


def _host(i):
    return [_host(j) for j in i] if isinstance(i, (list, tuple)) else (
        i.item() if isinstance(i, (Tensor, torch.Tensor)) else i)


def _plan(x: Tensor, idx: tuple):
    """(the view of `x` after its plain indices, [(dim of the view, int64 index tensor)...]): the
    advanced indices as full slices of the view, and the dims they index there."""
    if sum(i is Ellipsis for i in idx) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    adv = {}
    for k, i in enumerate(idx):
        if is_advanced(i):
            adv[k] = _as_index_tensor(i)
    consumed = sum(adv[k].ndim if adv[k].dtype is bool_ else 1 for k in adv) + sum(
        1 for k, i in enumerate(idx) if k not in adv and i is not None and i is not Ellipsis)
    if consumed > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim} ({consumed} given)")
    basic, where, out_dim = [], [], 0
    for k, i in enumerate(idx):
        if i is Ellipsis:
            fill = x.ndim - consumed
            basic += [slice(None)] * fill
            out_dim += fill
        elif k in adv:
            t = adv[k]
            dims = t.ndim if t.dtype is bool_ else 1
            basic += [slice(None)] * dims
            where.append((out_dim, t))
            out_dim += dims
        else:
            basic.append(i)
            if i is None or isinstance(i, slice):
                out_dim += 1
    y = x[tuple(basic)] if basic else x
    return y, where


def _int_indices(y: Tensor, where: list) -> list[tuple[int, Tensor]]:
    """Each advanced index as (dim of y, int64 index in [0, size)): masks read on the host."""
    out = []
    for d, t in where:
        if t.dtype is bool_:
            shape = tuple(y.shape[d:d + t.ndim])
            if tuple(t.shape) != shape:
                raise IndexError(f"The shape of the mask {_fmt(t.shape)} at index {d} does not match the shape of "
                                 f"the indexed tensor {_fmt(shape)}")
            for k, nz in enumerate(t.torch().nonzero(as_tuple=True)):  # a count only the data knows
                out.append((d + k, tensor(nz)))
        else:
            if t.dtype.is_float or t.dtype is bool_:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            n = y.shape[d]
            t = t.to(int64)
            out.append((d, t.where(t >= 0, t + n)))
    return out


def _layout(y: Tensor, ints: list[tuple[int, Tensor]]):
    """(y with the indexed dims first and merged: [N, rest...]; the flat index [m]; the shape of the
    broadcast indices; the rest dims; where the index dims go in the result)."""
    dims = [d for d, _ in ints]
    bshape = _broadcast("index", *[tuple(t.shape) for _, t in ints])
    rest = [d for d in range(y.ndim) if d not in dims]
    yp = y.permute(*dims, *rest)
    sizes = [y.shape[d] for d in dims]
    flat = None
    for (d, t), stride in zip(ints, [math.prod(sizes[k + 1:]) for k in range(len(sizes))]):
        term = t.expand(*bshape) * stride if stride != 1 else t.expand(*bshape)
        flat = term if flat is None else flat + term
    merged = yp.reshape(math.prod(sizes), *[y.shape[d] for d in rest])
    adjacent = dims == list(range(dims[0], dims[0] + len(dims)))
    return merged, flat.reshape(-1), bshape, rest, dims[0] if adjacent else 0


def _rows(idx: Tensor, rest_shape) -> Tensor:
    """The flat index [m] as an index of whole rows of [N, rest...]: [m, rest...]."""
    return idx.reshape(idx.shape[0], *([1] * len(rest_shape))).expand(idx.shape[0], *rest_shape)


def getitem(x: Tensor, idx: tuple) -> Tensor:
    """x[idx] with at least one advanced index (see the module docstring)."""
    y, where = _plan(x, idx)
    ints = _int_indices(y, where)
    merged, flat, bshape, rest, at = _layout(y, ints)
    rest_shape = [y.shape[d] for d in rest]
    picked = gather(merged, 0, _rows(flat, rest_shape)) if merged.ndim else merged
    out = picked.reshape(*bshape, *rest_shape)
    if at:  # adjacent advanced dims keep their place: move the index dims there
        nb = len(bshape)
        order = [*range(nb, nb + at), *range(nb), *range(nb + at, out.ndim)]
        out = out.permute(*order)
    return out


def _mask_where(x: Tensor, idx: tuple, value) -> bool:
    """`x[mask] = value` with a mask of x's leading dims and a value that does not depend on how
    many it selects: x takes where(mask, value, x), no host read. False: not that case."""
    if len(idx) != 1 or not isinstance(idx[0], (Tensor, torch.Tensor, np.ndarray)):
        return False
    mask = _as_index_tensor(idx[0])
    if mask.dtype is not bool_ or tuple(mask.shape) != tuple(x.shape[:mask.ndim]):
        return False
    v = _operand("setitem", value, seq=True)
    rest = tuple(x.shape[mask.ndim:])
    if isinstance(v, Tensor) and v.ndim and _broadcast("setitem", tuple(v.shape), rest) != rest:
        return False
    m = mask.reshape(*mask.shape, *([1] * len(rest)))
    v = v.to(x.dtype) if isinstance(v, Tensor) else v
    x.copy_(x.where(~m, v if isinstance(v, Tensor) else Tensor._new(const(v, x.dtype, ()))))
    return True


def setitem(x: Tensor, idx: tuple, value, accumulate: bool = False) -> None:
    """x[idx] = value (or +=, `accumulate`) with at least one advanced index, written through x."""
    if not accumulate and _mask_where(x, idx, value):
        return
    y, where = _plan(x, idx)
    ints = _int_indices(y, where)
    merged, flat, bshape, rest, at = _layout(y, ints)
    rest_shape = [y.shape[d] for d in rest]
    v = _operand("index_put", value, seq=True)
    v = v.to(x.dtype) if isinstance(v, Tensor) else Tensor._new(const(v, x.dtype, ()))
    result_shape = list(bshape) + rest_shape
    if at:
        nb = len(bshape)
        result_shape = rest_shape[:at] + list(bshape) + rest_shape[at:]
    v = v.expand(*result_shape)
    if at:  # back to the index dims first
        nb = len(bshape)
        v = v.permute(*range(at, at + nb), *range(at), *range(at + nb, len(result_shape)))
    v = v.reshape(flat.shape[0], *rest_shape)
    rows = _rows(flat, rest_shape)
    new = scatter_add(merged, 0, rows, v) if accumulate else scatter(merged, 0, rows, v)
    dims = [d for d, _ in ints]
    shaped = new.reshape(*[y.shape[d] for d in dims], *rest_shape)
    inverse = sorted(range(y.ndim), key=[*dims, *rest].__getitem__)
    y.copy_(shaped.permute(*inverse))


def index_put_(self: Tensor, indices, values, accumulate: bool = False) -> Tensor:
    setitem(self, tuple(indices), values, accumulate)
    return self


def index_put(self: Tensor, indices, values, accumulate: bool = False) -> Tensor:
    out = self.clone()
    setitem(out, tuple(indices), values, accumulate)
    return out


def _inplace(fn):
    def f(self, *args, **kwargs):
        return self.copy_(fn(self, *args, **kwargs))
    f.__name__ = fn.__name__ + "_"
    return f


METHODS = {"gather": gather, "scatter": scatter, "scatter_add": scatter_add, "index_select": index_select,
           "take_along_dim": take_along_dim, "index_add": index_add, "cumsum": cumsum, "cumprod": cumprod,
           "cummax": cummax, "cummin": cummin, "sort": sort, "argsort": argsort, "topk": topk,
           "index_put_": index_put_, "index_put": index_put,
           "scatter_": _inplace(scatter), "scatter_add_": _inplace(scatter_add), "index_add_": _inplace(index_add),
           "cumsum_": _inplace(cumsum), "cumprod_": _inplace(cumprod)}
for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)
FUNCTIONS = {name: METHODS[name] for name in ("gather", "scatter", "scatter_add", "index_select", "take_along_dim",
                                               "index_add", "cumsum", "cumprod", "cummax", "cummin", "sort",
                                               "argsort", "topk", "index_put")}
