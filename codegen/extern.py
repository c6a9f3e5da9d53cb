"""Extern kernels: vendor library calls on our buffers, through strided views (never copies).

In:  an `ExternCall` and the torch tensors of its buffers. Out: the output buffer written.
GEMM goes to torch.matmul, which is the BLAS torch ships on the CPU and cuBLAS on a GPU; the
operands are `as_strided` views of the buffers, so a transposed or batched-broadcast operand
reaches the BLAS as strides and transpose flags, not as a copy.
"""

from __future__ import annotations

import torch

from codegen.kernel_ir import ExternCall, StridedView


def view_of(t: torch.Tensor, v: StridedView) -> torch.Tensor:
    return torch.as_strided(t, v.shape, v.strides, t.storage_offset() + v.offset)


def run(call: ExternCall, tensors: list[torch.Tensor]) -> None:
    if call.op == "matmul":
        out, a, b = (view_of(t, v) for t, v in zip(tensors, call.views))
        torch.matmul(a, b, out=out)
        return
    raise NotImplementedError(f"extern kernel {call.op!r}")
