"""Fusion is a tested property: kernel counts and bytes moved per workload (deterministic)."""

import numpy as np
import pytest
import torch

import lazy


def kernels_of(*tensors):
    with lazy.profile() as p:
        lazy.realize(*tensors)
    return p.kernels


def rand(*shape, seed=0):
    return lazy.tensor(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def test_ten_op_elementwise_chain_is_one_kernel():
    x = rand(1000)
    y = ((x * 2 + 1).relu() - 0.5).sigmoid() * 3 + x
    y = y.tanh().abs() * 0.5 - x.exp()
    ks = kernels_of(y)
    assert len(ks) == 1
    # reads x once, writes y once
    assert ks[0].bytes_read == 4000 and ks[0].bytes_written == 4000
    xt = x.torch()
    ref = torch.abs(torch.tanh(torch.sigmoid(torch.relu(xt * 2 + 1) - 0.5) * 3 + xt)) * 0.5 - xt.exp()
    torch.testing.assert_close(y.torch(), ref)


def test_multiply_add_sum_is_one_kernel():
    a, b, c = rand(37, 41, seed=1), rand(37, 41, seed=2), rand(37, 41, seed=3)
    y = (a * b + c).sum()
    assert len(kernels_of(y)) == 1
    torch.testing.assert_close(y.torch(), (a.torch() * b.torch() + c.torch()).sum())


@pytest.mark.parametrize("shape", [(64, 100), (7, 1), (1, 7), (3, 4097)])
def test_softmax_is_one_kernel(shape):
    x = rand(*shape)
    y = x.softmax(-1)
    ks = kernels_of(y)
    assert len(ks) == 1
    assert ks[0].bytes_read == x.numel() * 4 and ks[0].bytes_written == x.numel() * 4
    torch.testing.assert_close(y.torch(), torch.softmax(x.torch(), -1))


def test_manual_softmax_is_one_kernel():
    x = rand(33, 65)
    m = x.max(-1, keepdim=True)
    e = (x - m).exp()
    y = e / e.sum(-1, keepdim=True)
    assert len(kernels_of(y)) == 1
    torch.testing.assert_close(y.torch(), torch.softmax(x.torch(), -1))


def test_log_softmax_and_logsumexp_are_one_kernel_each():
    x = rand(17, 129)
    y, z = x.log_softmax(-1), x.logsumexp(-1)
    assert len(kernels_of(y)) == 1
    assert len(kernels_of(z)) == 1
    torch.testing.assert_close(y.torch(), torch.log_softmax(x.torch(), -1))
    torch.testing.assert_close(z.torch(), torch.logsumexp(x.torch(), -1))


def test_layer_norm_is_one_kernel():
    x, w, b = rand(31, 257, seed=1), rand(257, seed=2), rand(257, seed=3)
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdim=True)
    y = xc / (var + 1e-5).sqrt() * w + b
    ks = kernels_of(y)
    assert len(ks) == 1
    ref = torch.nn.functional.layer_norm(x.torch(), (257,), w.torch(), b.torch(), 1e-5)
    torch.testing.assert_close(y.torch(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [0, 1])
def test_sum_of_permuted_view_is_one_kernel_without_copy(dim):
    base = rand(300, 200)
    x = base.permute(1, 0)
    y = x.sum(dim)
    ks = kernels_of(y)
    assert len(ks) == 1
    assert ks[0].bytes_read == 300 * 200 * 4  # the base buffer, read once: no copy
    torch.testing.assert_close(y.torch(), base.torch().permute(1, 0).sum(dim), rtol=1e-5, atol=1e-4)


def test_reduction_feeding_a_transposed_consumer_is_split_with_reason(capsys):
    x = rand(40, 50)
    y = x - x.mean(0)  # column means broadcast along rows: fusing would recompute per row
    with lazy.debug(2):
        ks = kernels_of(y)
    assert len(ks) == 2
    err = capsys.readouterr().err
    assert "becomes its own kernel" in err and "recomputed" in err
    torch.testing.assert_close(y.torch(), x.torch() - x.torch().mean(0))


def test_shared_reduction_is_realized_once():
    x = rand(20, 30)
    s = x.sum(1, keepdim=True)
    a, b = (x * s).sum(0), (x + s).max(0).values
    ks = kernels_of(a, b)
    assert len(ks) <= 3
    torch.testing.assert_close(a.torch(), (x.torch() * x.torch().sum(1, keepdim=True)).sum(0), rtol=1e-4, atol=1e-3)


def test_same_program_twice_reuses_schedule_and_kernels():
    from codegen import compile_c
    from lazy import runtime as R

    def prog(x):
        return (x.exp() * 2).softmax(-1).sum(0)

    prog(rand(8, 9)).realize()
    hits, misses, compiles = R.cache_stats["schedule_hits"], R.cache_stats["schedule_misses"], compile_c.stats.misses
    y = prog(rand(8, 9, seed=5))
    y.realize()
    assert R.cache_stats["schedule_hits"] == hits + 1
    assert R.cache_stats["schedule_misses"] == misses and compile_c.stats.misses == compiles
    xt = rand(8, 9, seed=5).torch()
    torch.testing.assert_close(y.torch(), torch.softmax(xt.exp() * 2, -1).sum(0))


def test_realize_many_outputs_in_one_schedule():
    x = rand(16, 16)
    a, b, c = x.sum(), x.max(), x.exp()
    with lazy.profile() as p:
        lazy.realize(a, b, c)
    # sum and max reduce the same tensor to one scalar: one kernel stores both; exp is [16, 16]
    assert p.realizes == 1 and len(p.kernels) == 2
    torch.testing.assert_close(a.torch(), x.torch().sum())
    torch.testing.assert_close(b.torch(), x.torch().max())


def test_optimizer_style_update_is_one_kernel():
    """Adam's moment, variance and parameter updates: three outputs of one pass over p, g, m, v."""
    p, g, m = rand(50, 30, seed=1), rand(50, 30, seed=2), rand(50, 30, seed=3)
    v = rand(50, 30, seed=4).abs()
    m2 = m * 0.9 + g * 0.1
    v2 = v * 0.99 + g * g * 0.01
    p2 = p - 0.01 * m2 / (v2.sqrt() + 1e-8)
    ks = kernels_of(p2, m2, v2)
    assert len(ks) == 1
    assert ks[0].bytes_read == 4 * 50 * 30 * 4 and ks[0].bytes_written == 3 * 50 * 30 * 4
    pt, gt, mt, vt = (t.torch() for t in (p, g, m, v))
    m2t, v2t = mt * 0.9 + gt * 0.1, vt * 0.99 + gt * gt * 0.01
    torch.testing.assert_close(p2.torch(), pt - 0.01 * m2t / (v2t.sqrt() + 1e-8))
    torch.testing.assert_close(m2.torch(), m2t)
    torch.testing.assert_close(v2.torch(), v2t)


def test_a_transposed_computed_operand_is_read_as_a_view_not_copied(capsys):
    # (a * 2).T @ b: the product is realized once and the GEMM reads it transposed (strided);
    # realizing the transpose itself would add a transposing copy kernel
    a, b = rand(33, 17), rand(33, 9, seed=1)
    y = (a * 2.0).T @ b
    with lazy.debug(2):
        ks = kernels_of(y)
    assert len(ks) == 2 and "feeds a GEMM or library call through a strided view" in capsys.readouterr().err
    np.testing.assert_allclose(y.numpy(), (a.numpy() * 2).T @ b.numpy(), rtol=1e-5, atol=1e-5)


def test_weight_gradient_of_x_at_w_transposed_is_computed_in_the_weights_layout():
    # d(x @ w.T)/dw = g.T @ x: one GEMM writing w's [out, in] layout, so the optimizer update
    # reads the gradient contiguously (not a transposed view of x.T @ g)
    from lazy.graph import Op, toposort

    x, w = rand(16, 24), rand(8, 24, seed=1).requires_grad_()
    (gw,) = lazy.autograd.grad((x @ w.T).square().sum(), [w])
    top = gw._node.srcs[0] if gw._node.op is Op.DETACH else gw._node
    assert top.op is Op.MATMUL and top.shape == (8, 24)
    assert not any(n.op is Op.PERMUTE and n.srcs[0].op is Op.MATMUL for n in toposort([gw._node]))
    xt, wt = torch.tensor(x.numpy()), torch.tensor(w.numpy(), requires_grad=True)
    (ref,) = torch.autograd.grad((xt @ wt.T).square().sum(), [wt])
    np.testing.assert_allclose(gw.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)


def test_a_merged_then_transposed_operand_is_a_strided_view():
    # h [4, 8, 16] reshaped to [32, 16] and transposed: the index h[v // 8, v % 8, u] is the affine
    # 16 * v + u, so the GEMM reads h in place (3 kernels would mean a transposing copy)
    from codegen.index_ops import FloorDiv, ModIdx
    from scheduler.indexing import linear_coeffs, symbol

    v, u = symbol("v0"), symbol("v1")
    assert linear_coeffs(128 * FloorDiv(v, 8) + 16 * ModIdx(v, 8) + u + 3) == {v: 16, u: 1, 1: 3}
    assert linear_coeffs(128 * FloorDiv(v, 8) + 15 * ModIdx(v, 8)) is None
    x, b = rand(4, 8, 16), rand(32, 5, seed=1)
    y = (x * 2.0).reshape(32, 16).T @ b
    assert len(kernels_of(y)) == 2
    np.testing.assert_allclose(y.numpy(), (x.numpy() * 2).reshape(32, 16).T @ b.numpy(), rtol=1e-5, atol=1e-5)
