"""Extern kernels: library calls on our buffers, through strided views (never copies).

In:  an `ExternCall` and the torch tensors of its buffers. Out: the output buffer written.
GEMM goes to torch.matmul, which is the BLAS torch ships on the CPU and cuBLAS on a GPU; the
operands are `as_strided` views of the buffers, so a transposed or batched-broadcast operand
reaches the BLAS as strides and transpose flags, not as a copy. An operand read through an index
map (`GatherView`, a convolution's im2col matrix) is the one exception: the BLAS needs it as a
matrix, so it is gathered into one first (the C GEMM template reads it in place instead).

The other ops (`OPS`) are what data decides, which fused loops cannot express: a read or write at
an index held in memory (gather, scatter), a running result along an axis (cumsum), an order
(sort, topk). They run torch's kernels, on the CPU or the GPU alike, writing the output buffer
(`buffers[0]`, contiguous) from the inputs' views; `params` holds the op's own arguments. Each is
one function `(out, inputs, params)`; lazy/interpret.py runs the same table, and lazy/extern_ops.py
builds the graph nodes and their gradients. An index out of range raises torch's error when the
kernel runs.
"""

from __future__ import annotations

import torch

from codegen.kernel_ir import ExternCall, GatherView, StridedView, size_fn


def view_of(t: torch.Tensor, v: StridedView | GatherView) -> torch.Tensor:
    if isinstance(v, GatherView):
        return gathered(t, v)
    return torch.as_strided(t, v.shape, v.strides, t.storage_offset() + v.offset)


_GATHER_INDEX: dict = {}  # (view, device) -> (flat index, validity), a few per model


def gathered(t: torch.Tensor, v: GatherView) -> torch.Tensor:
    """The operand `v` describes, as a new tensor: the elements at their flat indices, 0 where a
    cond fails."""
    key = (v, t.device)
    hit = _GATHER_INDEX.get(key)
    if hit is None:
        n = len(v.sizes)
        idx = torch.full(v.sizes, v.offset, dtype=torch.int64, device=t.device)
        parts = [torch.zeros(v.sizes, dtype=torch.int64, device=t.device) for _ in v.conds]
        for d, (size, stride) in enumerate(zip(v.sizes, v.strides)):
            ar = torch.arange(size, device=t.device).reshape([size if j == d else 1 for j in range(n)])
            idx = idx + ar * stride
            for part, (coef, _, _) in zip(parts, v.conds):
                part += ar * coef[d]
        ok = torch.ones(v.sizes, dtype=torch.bool, device=t.device)
        for part, (_, const, bound) in zip(parts, v.conds):
            ok &= (part + const >= 0) & (part + const < bound)
        order = [d for g in v.dims for d in g]
        hit = (torch.where(ok, idx, 0).permute(order).reshape(v.shape), ok.permute(order).reshape(v.shape))
        if len(_GATHER_INDEX) > 64:
            _GATHER_INDEX.clear()
        _GATHER_INDEX[key] = hit
    idx, ok = hit
    flat = torch.as_strided(t, (t.numel(),), (1,), t.storage_offset())
    return torch.where(ok, flat[idx], torch.zeros((), dtype=t.dtype, device=t.device))


def _views_at(call: ExternCall, sizes) -> list[StridedView]:
    """The views of a call with size symbols at the sizes of this launch."""
    fn = call.meta.get("view_fn")
    if fn is None:
        parts = [x for v in call.views for x in (*v.shape, *v.strides, v.offset)]
        fn = call.meta["view_fn"] = size_fn(parts, call.sizes)
    flat, out, i = fn(*sizes), [], 0
    for v in call.views:
        n = len(v.shape)
        out.append(StridedView(flat[i:i + n], flat[i + n:i + 2 * n], flat[i + 2 * n]))
        i += 2 * n + 1
    return out


def _gather(out, ins, p):
    (axis,) = p
    torch.gather(ins[0], axis, ins[1], out=out)


def _scatter_add(out, ins, p):  # out = base, then src added at idx along axis; no base: zeros
    (axis,) = p
    *base, idx, src = ins
    out.copy_(base[0]) if base else out.zero_()
    out.scatter_add_(axis, idx, src)


def _scatter(out, ins, p):  # out = base, then src written at idx along axis (a repeated index: one of them)
    (axis,) = p
    base, idx, src = ins
    out.copy_(base)
    out.scatter_(axis, idx, src)


def _cumulative(fn):
    def f(out, ins, p):
        (axis,) = p
        fn(ins[0], axis, out=out)
    return f


def _cum_index(fn):  # the index of the running max/min: cummax(x).indices
    def f(out, ins, p):
        (axis,) = p
        out.copy_(fn(ins[0], axis).indices)
    return f


def _sort_index(out, ins, p):
    axis, descending, stable = p
    out.copy_(torch.sort(ins[0], dim=axis, descending=descending, stable=stable).indices)


def _topk_index(out, ins, p):
    k, axis, largest, ordered = p
    out.copy_(torch.topk(ins[0], k, dim=axis, largest=largest, sorted=ordered).indices)


def _arg_index(out, ins, p):  # the first index of the max (min) along axis, NaN first, as torch's
    axis, largest = p
    out.copy_((torch.argmax if largest else torch.argmin)(ins[0], dim=axis, keepdim=True))


OPS = {
    "gather": _gather,  # (x, idx int64) -> x's values at idx along axis; idx's shape
    "scatter_add": _scatter_add,  # ([base,] idx, src): base with src added at idx along axis
    "scatter": _scatter,  # (base, idx, src): base with src written at idx along axis
    "cumsum": _cumulative(torch.cumsum),
    "cumprod": _cumulative(torch.cumprod),
    "cummax_index": _cum_index(torch.cummax),
    "cummin_index": _cum_index(torch.cummin),
    "sort_index": _sort_index,  # params (axis, descending, stable)
    "topk_index": _topk_index,  # params (k, axis, largest, sorted)
    "arg_index": _arg_index,  # params (axis, largest): argmax/argmin of a computed float, keepdim
}


def call_op(name: str, out: torch.Tensor, inputs: list[torch.Tensor], params: tuple) -> None:
    """Run extern op `name` into `out` (the table OPS)."""
    OPS[name](out, inputs, params)


def run(call: ExternCall, tensors: list[torch.Tensor], sizes=()) -> None:
    """Run `call` on its buffers; `sizes`: the values of its size symbols (`call.sizes`)."""
    views = _views_at(call, sizes) if call.sizes else call.views
    if call.op == "matmul":
        out, a, b = (view_of(t, v) for t, v in zip(tensors, views))
        torch.matmul(a, b, out=out)
        return
    out, *ins = (view_of(t, v) for t, v in zip(tensors, views))
    call_op(call.op, out, ins, call.params)
