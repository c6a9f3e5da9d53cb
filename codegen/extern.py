"""Extern kernels: vendor library calls on our buffers, through strided views (never copies).

In:  an `ExternCall` and the torch tensors of its buffers. Out: the output buffer written.
GEMM goes to torch.matmul, which is the BLAS torch ships on the CPU and cuBLAS on a GPU; the
operands are `as_strided` views of the buffers, so a transposed or batched-broadcast operand
reaches the BLAS as strides and transpose flags, not as a copy.
"""

from __future__ import annotations

import torch

from codegen.kernel_ir import ExternCall, StridedView, size_fn


def view_of(t: torch.Tensor, v: StridedView) -> torch.Tensor:
    return torch.as_strided(t, v.shape, v.strides, t.storage_offset() + v.offset)


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


def run(call: ExternCall, tensors: list[torch.Tensor], sizes=()) -> None:
    """Run `call` on its buffers; `sizes`: the values of its size symbols (`call.sizes`)."""
    views = _views_at(call, sizes) if call.sizes else call.views
    if call.op == "matmul":
        out, a, b = (view_of(t, v) for t, v in zip(tensors, views))
        torch.matmul(a, b, out=out)
        return
    raise NotImplementedError(f"extern kernel {call.op!r}")
