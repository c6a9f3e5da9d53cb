"""Matmul: one MATMUL node, run as a BLAS call on strided views, with its epilogue fused."""

import numpy as np
import pytest
import torch

import lazy
from lazy.graph import structure_key
from scheduler import schedule


def rand(*shape, seed=0, dtype=np.float32):
    return lazy.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def kernels_of(*ts):
    with lazy.profile() as p:
        lazy.realize(*ts)
    return p.kernels


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((1, 7), (7, 1)), ((7,), (7, 3)), ((5, 7), (7,)), ((7,), (7,)),
                                   ((2, 5, 7), (7, 3)), ((2, 1, 5, 7), (3, 7, 4)), ((4, 33, 65), (4, 65, 17))])
def test_matmul_shapes_match_torch(sa, sb):
    a, b = rand(*sa, seed=1), rand(*sb, seed=2)
    torch.testing.assert_close((a @ b).torch(), a.torch() @ b.torch(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2), (torch.float64, 1e-10),
                                       (torch.int64, 0)])
def test_matmul_dtypes(dtype, tol):
    a = torch.randint(-3, 4, (9, 13)).to(dtype)
    b = torch.randint(-3, 4, (13, 6)).to(dtype)
    out = (lazy.tensor(a) @ lazy.tensor(b)).torch()
    assert out.dtype == dtype
    torch.testing.assert_close(out, a @ b, rtol=tol, atol=tol)


def test_transposed_operand_is_read_in_place():
    x, w = rand(64, 32, seed=1), rand(48, 32, seed=2)
    (k,) = kernels_of(x @ w.T)
    assert "matmul" in k.name and k.bytes_read == (64 * 32 + 48 * 32) * 4  # no copy of w.T (BLAS or C GEMM)
    torch.testing.assert_close((x @ w.T).torch(), x.torch() @ w.torch().T)


def test_gelu_linear_is_gemm_plus_one_epilogue_kernel(monkeypatch):
    monkeypatch.setenv("LAZY_GEMM", "blas")  # the BLAS path; the C GEMM fuses it (tests/test_gemm_c.py)
    x, w, b = rand(32, 64, seed=1), rand(64, 48, seed=2), rand(48, seed=3)
    y = (x @ w + b).gelu()
    ks = kernels_of(y)
    assert [k.backend == "extern" for k in ks] == [True, False]  # GEMM, then one generated kernel
    ref = torch.nn.functional.gelu(x.torch() @ w.torch() + b.torch())
    torch.testing.assert_close(y.torch(), ref, rtol=1e-5, atol=1e-5)


def test_gemm_writes_into_the_epilogue_output_no_temporary(monkeypatch):
    monkeypatch.setenv("LAZY_GEMM", "blas")
    # the GEMM's result is never a buffer of its own: BLAS writes the output, the epilogue
    # rewrites it in place (reading bias and residual), so one allocation serves both
    x, w, b, r = rand(32, 64, seed=1), rand(48, 64, seed=2), rand(48, seed=3), rand(32, 48, seed=4)
    y = ((x @ w.T + b).relu() + r) * 0.5
    _, buffers, _ = structure_key([y._node])
    sched = schedule([y._node], buffers)
    assert len(sched.allocs) == 1 and sched.kernels[0].epilogue is not None
    ks = kernels_of(y)
    assert [k.backend for k in ks] == ["extern", "c"]
    assert ks[1].bytes_read == (32 * 48 + 48 + 32 * 48) * 4  # GEMM result, bias, residual
    ref = ((x.torch() @ w.torch().T + b.torch()).relu() + r.torch()) * 0.5
    torch.testing.assert_close(y.torch(), ref, rtol=1e-5, atol=1e-5)


def test_epilogue_of_another_dtype_or_index_is_not_fused():
    x, w = rand(16, 8, seed=1), rand(8, 16, seed=2)
    xt, wt = x.torch(), w.torch()
    for y, ref in [((x @ w).to(lazy.float16) * 2, (xt @ wt).half() * 2),
                   ((x @ w).T + (x @ w), (xt @ wt).T + xt @ wt)]:
        _, buffers, _ = structure_key([y._node])
        sched = schedule([y._node], buffers)
        assert sched.kernels[0].epilogue is None and len(sched.allocs) == 2
        assert any(d.startswith("no epilogue fusion") for d in sched.decisions)
        torch.testing.assert_close(y.torch(), ref, rtol=1e-3, atol=1e-3)


def test_attention_is_at_most_three_kernels():
    q, k, v = rand(2, 16, 32, seed=1), rand(2, 16, 32, seed=2), rand(2, 16, 32, seed=3)
    y = ((q @ k.transpose(-2, -1)) / 32 ** 0.5).softmax(-1) @ v
    ks = kernels_of(y)
    assert len(ks) <= 3
    qt, kt, vt = q.torch(), k.torch(), v.torch()
    torch.testing.assert_close(y.torch(), torch.softmax(qt @ kt.transpose(-2, -1) / 32 ** 0.5, -1) @ vt,
                               rtol=1e-5, atol=1e-5)


def test_computed_operand_is_realized_first():
    x, w = rand(8, 16, seed=1), rand(16, 4, seed=2)
    with lazy.debug(2):
        ks = kernels_of(x.relu() @ w)
    assert ["matmul" in k.name for k in ks] == [False, True]
    torch.testing.assert_close((x.relu() @ w).torch(), x.torch().relu() @ w.torch())


def test_matmul_gradients_match_torch():
    a = rand(3, 5, 7, seed=1).requires_grad_()
    b = rand(7, 4, seed=2).requires_grad_()
    ((a @ b).tanh() * 2).sum().backward()
    at, bt = a.torch().clone().requires_grad_(), b.torch().clone().requires_grad_()
    ((at @ bt).tanh() * 2).sum().backward()
    torch.testing.assert_close(a.grad.torch(), at.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad.torch(), bt.grad, rtol=1e-5, atol=1e-5)


def test_shape_errors_name_both_operands():
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(3, 4\) and \(5, 6\) cannot be multiplied"):
        rand(3, 4) @ rand(5, 6)
    with pytest.raises(RuntimeError, match="matmul: .*cannot broadcast"):
        rand(2, 3, 4) @ rand(3, 4, 5)
    with pytest.raises(RuntimeError, match="matmul: both arguments need at least 1 dimension"):
        lazy.tensor(2.0) @ rand(3)


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 8), (2, 3, 6, 8)]), ("i,i->", [(7,), (7,)]), ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]), ("i,j->ij", [(3,), (4,)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]), ("bij,jk->bik", [(2, 3, 4), (4, 5)]), ("ijk,ik->j", [(2, 3, 4), (2, 4)]),
])
def test_einsum_matches_torch(eq, shapes):
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(s, generator=g) for s in shapes]
    out = lazy.einsum(eq, *[lazy.tensor(t) for t in ts])
    torch.testing.assert_close(out.torch(), torch.einsum(eq, *ts), rtol=1e-5, atol=1e-5)


def test_einsum_contraction_is_one_gemm():
    q, k = rand(2, 3, 5, 8, seed=1), rand(2, 3, 6, 8, seed=2)
    ks = kernels_of(lazy.einsum("bhqd,bhkd->bhqk", q, k))
    assert ["matmul" in k.name for k in ks] == [True]


def test_mm_bmm_and_errors():
    a, b = rand(3, 4, seed=1), rand(4, 5, seed=2)
    torch.testing.assert_close(a.mm(b).torch(), a.torch().mm(b.torch()))
    x, y = rand(2, 3, 4, seed=3), rand(2, 4, 5, seed=4)
    torch.testing.assert_close(lazy.bmm(x, y).torch(), torch.bmm(x.torch(), y.torch()))
    with pytest.raises(RuntimeError, match=r"mm: expected two 2-d tensors, got \(2, 3, 4\)"):
        x.mm(b)
    with pytest.raises(RuntimeError, match=r"bmm: expected two 3-d tensors with the same batch size"):
        x.bmm(rand(3, 4, 5))
    with pytest.raises(RuntimeError, match=r"einsum: term 'ijk' does not fit an operand of shape \(3, 4\)"):
        lazy.einsum("ijk,jk->i", a, b)


def test_under_no_grad_gemm_operands_are_strided_views_of_computed_values():
    # no_grad puts a DETACH on every result: a GEMM reading a view of one (heads split off a
    # projection, transposed) reads it as a strided view of the computed value, as with grad, not
    # through a gathered copy of it
    x, w, b = rand(1, 6, 8, seed=1), rand(8, 24, seed=2), rand(24, seed=3)
    with lazy.no_grad():
        q, k, v = (y.view(1, 6, 2, 4).transpose(1, 2) for y in (x @ w + b).split(8, dim=2))
        y = ((q @ k.transpose(-2, -1)) * 0.5).softmax(-1) @ v
    _, buffers, _ = structure_key([y._node])
    sched = schedule([y._node], buffers)
    assert not any(d.startswith("implicit: ") for d in sched.decisions), sched.decisions
    assert any("through a strided view" in d for d in sched.decisions), sched.decisions
    xt, wt, bt = x.torch(), w.torch(), b.torch()
    qt, kt, vt = ((xt @ wt + bt).split(8, dim=2)[i].view(1, 6, 2, 4).transpose(1, 2) for i in range(3))
    torch.testing.assert_close(y.torch(), torch.softmax(qt @ kt.transpose(-2, -1) * 0.5, -1) @ vt,
                               rtol=1e-5, atol=1e-5)
