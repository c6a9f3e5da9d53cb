"""Scheduling has a bounded cost: deep chains of windows and their gradients (pooling of pooling, a
strided and dilated convolution's backward) lower to Kernel IR whose size grows with the graph,
not exponentially. Pinned by sizes (expressions, index operations, reduction stages), not time.

Two rules keep them bounded: a reshape's index is built per run of dims it splits or merges
(scheduler/indexing.py `reshape_index`, no relinearization through // and % of the whole shape),
and a reduction read at several positions in one kernel (a gradient spread back over windows) is
computed once as a kernel of its own (scheduler/lower.py)."""

import sympy
from conftest import kernels_of

import lazy
from codegen.kernel_ir import Kernel, index_exprs, kernel_exprs
from lazy.graph import toposort

F = lazy.nn.functional


def ir_size(kernels) -> tuple[int, int]:
    """(expressions plus index operations over all kernels, most reduction stages in one kernel)."""
    total, stages = 0, 0
    for k in kernels:
        if isinstance(k, Kernel):
            addresses, conditions = index_exprs(k)
            total += len(kernel_exprs(k)) + sum(sympy.count_ops(a) for a in addresses + conditions)
            stages = max(stages, len(k.reduces))
    return total, stages


def lowered(roots):
    n = len(toposort([r._node for r in roots]))
    return n, kernels_of(lambda: lazy.realize(*roots))


def test_pooling_of_pooling_and_its_gradient():
    x = lazy.randn(2, 3, 32, 32, requires_grad=True)
    y = F.max_pool2d(F.max_pool2d(x, 3, 1, padding=1), 3, 2, padding=1, ceil_mode=True)
    y.sum().backward()
    n, ks = lowered([y, x.grad])
    size, stages = ir_size(ks)
    assert size <= 100 * n and stages <= 4, (n, size, stages)


def test_a_wide_pooling_window_and_its_gradient():
    x = lazy.randn(3, 2, 17, 14, requires_grad=True)
    y = F.max_pool2d(x, kernel_size=5, stride=1)
    y.sum().backward()
    n, ks = lowered([y, x.grad])
    size, stages = ir_size(ks)
    assert size <= 100 * n and stages <= 4, (n, size, stages)


def test_strided_and_dilated_convolutions_and_their_gradients():
    x = lazy.randn(2, 3, 16, 16, requires_grad=True)
    w = lazy.randn(4, 3, 3, 3, requires_grad=True)
    y = F.conv2d(F.conv2d(x, w, stride=2, padding=1), lazy.randn(5, 4, 3, 3), padding=2, dilation=2)
    (y * y).sum().backward()
    n, ks = lowered([y, x.grad, w.grad])
    size, stages = ir_size(ks)
    assert size <= 100 * n and stages <= 4, (n, size, stages)
    assert sum(getattr(k, "op", None) == "matmul" for k in ks) >= 4  # forward and gradients are GEMMs
