"""Structure ops composed from movement ops and WHERE: diag, repeat_interleave, Tensor.unfold.

In:  lazy tensors; torch's arguments (a `repeats` tensor is read on the host, see below).
Out: lazy tensors, also as Tensor methods and `lazy.` functions. `unfold` returns a view (it
     aliases its input like torch's); diag and repeat_interleave return new tensors, as torch's do.

Choices
- unfold's windows are index algebra on the input, no data copied. Windows that do not overlap
  (step >= size) are a split of the dim (a shrink, a pad of the last partial group, a reshape
  and a shrink), so writes through them reach the input. Overlapping windows use tinygrad's
  trick: the dim repeated `size` times (an expand), flattened, padded by `size` and read as rows
  of n + 1, so row j starts one element later than row j - 1; every step-th column is a window.
  Writing through such a view raises (a view of an expanded tensor), like other expanded views.
- diag of a vector is WHERE(column - row == k, the vector along rows or columns, 0): one fused
  kernel, no buffer for the zeros.
- repeat_interleave with one count for all is a view of an expand, reshaped (one copy when read).
  Different counts are data: a `repeats` tensor is realized and read on the host (a sync, as in
  torch, which needs the output size), and the output picks its rows from the input by
  comparing the host-built source index with an IOTA (a one-hot WHERE and a sum, like
  embedding): O(output rows x input rows) work per remaining element.
"""

from __future__ import annotations

import numpy as np
import torch

from lazy.graph import Op, bool_, const, int64, node
from lazy.tensor import FUNCTIONS, Tensor, _dim, _int_arg, _operand, tensor, where

__all__ = ["diag", "repeat_interleave"]


# ---------------------------------------------------------------- unfold

def keep(dims) -> tuple:
    return tuple((0, s) for s in dims)


def zeros(dims) -> tuple:
    return tuple((0, 0) for _ in dims)


def unfold(self: Tensor, dimension: int, size: int, step: int) -> Tensor:
    """Tensor.unfold: the windows x[i*step : i*step + size] along `dimension`, as a new dim at
    `dimension` (the window index) and a last dim of `size` (a view; see the module docstring)."""
    size, step = _int_arg("unfold", "size", size), _int_arg("unfold", "step", step)
    nd = self.ndim
    d = _dim("unfold", dimension, max(nd, 1))
    sh = self._node.shape if nd else (1,)
    n = sh[d]
    if size > n:
        raise RuntimeError(f"maximum size for tensor at dimension {d} is {n} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    if size < 0:
        raise RuntimeError(f"size is {size} but must be >= 0")
    if nd == 0:  # torch: just the `size` (0 or 1) elements, no window dim
        return self._view([(Op.RESHAPE, (1,)), (Op.SHRINK, ((0, size),))], (1,))
    x = self
    st = x._stride
    w = (n - size) // step + 1
    lead, rest = sh[:d], sh[d + 1:]
    if step >= size:  # windows apart: split the dim into groups of `step`, keep `size` of each
        used = min(n, w * step)
        steps = [(Op.SHRINK, keep(lead) + ((0, used),) + keep(rest)),
                 (Op.PAD, zeros(lead) + ((0, w * step - used),) + zeros(rest)),
                 (Op.RESHAPE, (*lead, w, step, *rest)),
                 (Op.SHRINK, keep(lead) + ((0, w), (0, size)) + keep(rest))]
        k = len(lead)
        order = (*range(k), k, *range(k + 2, k + 2 + len(rest)), k + 1)
        steps.append((Op.PERMUTE, order))
    else:  # overlapping: rows of n + 1 over the dim repeated `size` times (tinygrad's pool)
        k = len(lead)
        steps = [(Op.RESHAPE, (*lead, 1, n, *rest)), (Op.EXPAND, (*lead, size, n, *rest)),
                 (Op.RESHAPE, (*lead, size * n, *rest)),
                 (Op.PAD, zeros(lead) + ((0, size),) + zeros(rest)),
                 (Op.RESHAPE, (*lead, size, n + 1, *rest)),
                 (Op.SHRINK, keep(lead) + ((0, size), (0, w * step)) + keep(rest)),
                 (Op.RESHAPE, (*lead, size, w, step, *rest)),
                 (Op.SHRINK, keep(lead) + ((0, size), (0, w), (0, 1)) + keep(rest)),
                 (Op.RESHAPE, (*lead, size, w, *rest))]
        order = (*range(k), k + 1, *range(k + 2, k + 2 + len(rest)), k)
        steps.append((Op.PERMUTE, order))
    strides = (*st[:d], st[d] * step, *st[d + 1:], st[d])
    return x._view(steps, strides)


# ---------------------------------------------------------------- diag

def _iota(n: int) -> Tensor:
    return Tensor._new(node(Op.IOTA, (), None, int64, (n,)))


def diag(input, diagonal: int = 0) -> Tensor:
    """torch.diag: a vector -> the square matrix with it on diagonal `diagonal` (above the main one
    for > 0); a matrix -> that diagonal, as a new tensor."""
    x = _operand("diag", input)
    if not isinstance(x, Tensor):
        raise TypeError(f"diag: expected a tensor, got {type(input).__name__}")
    k = _int_arg("diag", "diagonal", diagonal)
    if x.ndim == 2:
        return Tensor._new(x.diagonal(k)._node)  # a copy, not the view diagonal() is
    if x.ndim != 1:
        raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {x.ndim}D")
    n = x._node.shape[0]
    m = n + abs(k)
    v = x.pad((0, abs(k)))  # the vector along rows (k >= 0) or along columns (k < 0)
    v = v.reshape(m, 1) if k >= 0 else v.reshape(1, m)
    hit = (_iota(m).reshape(1, m) - _iota(m).reshape(m, 1)) == k  # column - row
    return where(hit, v.expand(m, m), _zero(x))


# ---------------------------------------------------------------- repeat_interleave

def repeat_interleave(input, repeats=None, dim: int | None = None, *, output_size: int | None = None) -> Tensor:
    """torch.repeat_interleave: each element (or slice along `dim`) repeated `repeats` times in place;
    dim=None repeats the flattened input. `repeats` is an int or a 0-d/1-d integer tensor (read on
    the host). `repeat_interleave(repeats_tensor)` alone gives the repeated indices."""
    x = _operand("repeat_interleave", input)
    if repeats is None:  # torch.repeat_interleave(repeats): the indices 0..n-1, repeated
        r = _host_counts(x, None)
        return tensor(np.repeat(np.arange(len(r), dtype=np.int64), r))
    if dim is None:
        x, d = x.reshape(-1), 0
    else:
        d = _dim("repeat_interleave", dim, max(x.ndim, 1))
        if x.ndim == 0:
            x = x.reshape(1)
    n = x._node.shape[d]
    if isinstance(repeats, (Tensor, torch.Tensor, np.ndarray)):
        counts = _host_counts(_operand("repeat_interleave", repeats), n)
    else:
        r = _int_arg("repeat_interleave", "repeats", repeats)
        if r < 0:
            raise RuntimeError("repeats can not be negative")
        counts = [r]
    total = sum(counts) if len(counts) > 1 else counts[0] * n
    if output_size is not None and output_size != total:
        raise RuntimeError(f"repeat_interleave: output_size {output_size} does not match the repeats, which make "
                           f"{total} (expected the sum of the repeats)")
    sh = x._node.shape
    if len(counts) == 1 or len(set(counts)) == 1:  # one count: a view of an expand, reshaped
        r = counts[0]
        y = x.unsqueeze(d + 1).expand(*sh[:d + 1], r, *sh[d + 1:])
        return y.reshape(*sh[:d], n * r, *sh[d + 1:])
    src = np.repeat(np.arange(n, dtype=np.int64), counts)
    return _take(x, d, src)


def _host_counts(r: Tensor, n: int | None) -> list[int]:
    """A repeats tensor as host ints, checked as torch checks it (n: the size along dim)."""
    if r.dtype.kind not in "iu":
        raise NotImplementedError(f"\"repeat_interleave_cpu\" not implemented for '{_torch_name(r)}'")
    if r.ndim > 1:
        raise RuntimeError("repeats must be 0-dim or 1-dim tensor")
    counts = [int(v) for v in np.atleast_1d(r.numpy())]
    if any(c < 0 for c in counts):
        raise RuntimeError("repeats can not be negative")
    if n is not None and len(counts) != 1 and len(counts) != n:
        raise RuntimeError(f"repeats must have the same size as input along dim, but got repeats.size(0) = "
                           f"{len(counts)} and input.size(0) = {n}")
    return counts


def _torch_name(t: Tensor) -> str:
    return {"float32": "Float", "float64": "Double", "float16": "Half", "bfloat16": "BFloat16",
            "bool": "Bool"}.get(t.dtype.name, t.dtype.name)


def _take(x: Tensor, d: int, src: np.ndarray) -> Tensor:
    """x's slices along dim d in the order `src` (host indices): out[.., j, ..] = x[.., src[j], ..],
    as a one-hot WHERE and a sum over the source dim (the IR has no gather)."""
    sh = x._node.shape
    n, m = sh[d], len(src)
    xs = x.movedim(d, -1).unsqueeze(-2)  # [..., 1, n]
    idx = tensor(src).reshape(m, 1)  # [m, 1]
    hit = idx == _iota(n).reshape(1, n)  # [m, n]
    v = xs._cast(int64) if x.dtype is bool_ else xs
    return where(hit, v, _zero(v)).sum(-1)._cast(x.dtype).movedim(-1, d)


def _zero(x: Tensor) -> Tensor:
    return Tensor._new(const(False if x.dtype is bool_ else 0, x.dtype, ()))


# ---------------------------------------------------------------- registration

for _name, _fn in [("unfold", unfold), ("diag", diag), ("repeat_interleave", repeat_interleave)]:
    setattr(Tensor, _name, _fn)
    if _name != "unfold":  # torch.unfold is not a function (F.unfold is im2col)
        FUNCTIONS[_name] = _fn
