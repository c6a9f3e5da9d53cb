"""Convolutions as implicit GEMMs (scheduler rule 6, codegen/gemm_c `_pack_a_gather`): the GEMM
packs the windows of the input through their index map, so no im2col matrix is ever written.

Pinned here: values and gradients against torch over strides, padding, dilation, groups, batch 1,
one channel, odd sizes and non-contiguous inputs (each instruction-set path of the C template:
conftest.ISA_PATHS); the schedule (no im2col kernel, the decision recorded, the bytes the kernels
move); the generated pack; blocks that cut the windows at every boundary (a small blocking
config); BLAS and LAZY_IMPLICIT_GEMM=0 giving the same values.

Tolerance: float32 sums of K = C/g*KH*KW products in a different order from torch's, so
rtol 1e-4 and atol 1e-5 * sqrt-ish K; an indexing mistake is an O(1) error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lazy
import lazy.nn.functional as F
from codegen import gemm_c
from codegen.gemm_c import GemmCConfig
from codegen.kernel_ir import ExternCall, GatherView
from lazy.graph import structure_key
from scheduler import schedule

pytestmark = pytest.mark.usefixtures("isa")

TOL = {"rtol": 1e-4, "atol": 1e-4}


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _check(x, w, b, kw, *, make_input=lambda t: t, relu=True, grad=True):
    """relu(conv2d(input)) and the gradients of sum(out * g) for input, weight and bias, against torch;
    `make_input` turns the leaf into the conv's input (a slice, a permuted view)."""
    lx, lw = lazy.tensor(x, requires_grad=grad), lazy.tensor(w, requires_grad=grad)
    tx, tw = torch.tensor(x, requires_grad=grad), torch.tensor(w, requires_grad=grad)
    lb = None if b is None else lazy.tensor(b, requires_grad=grad)
    tb = None if b is None else torch.tensor(b, requires_grad=grad)
    ly = F.conv2d(make_input(lx), lw, lb, **kw)
    ty = TF.conv2d(make_input(tx), tw, tb, **kw)
    if relu:
        ly, ty = F.relu(ly), torch.relu(ty)
    np.testing.assert_allclose(ly.numpy(), ty.detach().numpy(), **TOL)
    if not grad:
        return
    g = _rand(*ty.shape, seed=9)
    (ly * lazy.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    pairs = [(lx, tx), (lw, tw)] + ([] if b is None else [(lb, tb)])
    for lt, tt in pairs:
        np.testing.assert_allclose(lt.grad.numpy(), tt.grad.numpy(), **TOL)


CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), {"padding": 1}),
    ((1, 1, 5, 5), (2, 1, 3, 3), {}),  # batch 1, one channel
    ((2, 4, 9, 8), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1), "groups": 2}),
    ((3, 8, 11, 13), (16, 8, 1, 1), {"stride": 2}),  # 1x1, strided: NHWC rows of the input, no overlap
    ((2, 5, 13, 17), (7, 5, 5, 3), {"padding": (2, 1), "stride": 3}),
    ((1, 6, 10, 10), (6, 1, 3, 3), {"padding": 1, "groups": 6}),  # depthwise
    ((2, 16, 12, 12), (24, 16, 3, 3), {"padding": "same"}),  # rows cross image rows and images
]


@pytest.mark.parametrize("xs,ws,kw", CASES)
def test_values_and_gradients_match_torch(xs, ws, kw):
    _check(_rand(*xs), _rand(*ws, seed=1) * 0.3, _rand(ws[0], seed=2), kw)


def test_without_bias_and_activation():
    _check(_rand(2, 3, 8, 8), _rand(5, 3, 3, 3, seed=1), None, {"padding": 1}, relu=False)


def test_non_contiguous_inputs():
    # a channel slice (strided over a bigger buffer) and an NHWC buffer seen as NCHW
    _check(_rand(2, 6, 9, 9), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2), {"padding": 1},
           make_input=lambda t: t[:, 1:4])
    _check(_rand(2, 9, 7, 3), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2), {"stride": 2, "padding": 1},
           make_input=lambda t: t.permute(0, 3, 1, 2))


def test_conv1d_odd_sizes():
    x, w, b = _rand(3, 5, 29), _rand(7, 5, 4, seed=1), _rand(7, seed=2)
    lx, lw, lb = (lazy.tensor(a) for a in (x, w, b))
    np.testing.assert_allclose(F.conv1d(lx, lw, lb, stride=2, padding=3, dilation=2).numpy(),
                               TF.conv1d(*(torch.tensor(a) for a in (x, w, b)), stride=2, padding=3,
                                         dilation=2).numpy(), **TOL)


def _conv(x, w, b, **kw):
    return F.relu(F.conv2d(lazy.tensor(x), lazy.tensor(w), lazy.tensor(b), **kw))


def test_forward_is_one_gemm_reading_the_input_in_place():
    n, c, h, oc = 4, 8, 16, 16
    x, w, b = _rand(n, c, h, h), _rand(oc, c, 3, 3, seed=1), _rand(oc, seed=2)
    y = _conv(x, w, b, padding=1)
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    assert any(d.startswith("implicit: ") for d in sched.decisions), sched.decisions
    (call,) = [k for k in sched.kernels if isinstance(k, ExternCall)]
    assert isinstance(call.views[1], GatherView) and call.views[1].shape == (1, n * h * h, c * 9)
    im2col = n * h * h * c * 9 * 4
    assert all(shape != (1, n * h * h, c * 9) for shape, _ in sched.allocs)  # no buffer for the windows
    with lazy.profile() as p:
        y.realize()
    # one GEMM with the bias fused (it reads the weight in place), then the relu over NCHW
    assert [k.name.split("_", 1)[1] for k in p.kernels] == ["matmul", "where"]
    # input, weight, bias once, the output written and then read and written by the relu: less
    # than the im2col matrix alone (which was written and read back)
    moved = sum(k.bytes_read + k.bytes_written for k in p.kernels)
    assert moved == x.nbytes + w.nbytes + b.nbytes + 3 * n * oc * h * h * 4 < im2col
    src = gemm_c.render_gemm_c(call)
    assert "pack_a(ap, ga + a_base, ic, pc, mc, kc);" in src and "ko[k]" in src
    np.testing.assert_allclose(y.numpy(), torch.relu(TF.conv2d(*(torch.tensor(a) for a in (x, w, b)),
                                                              padding=1)).numpy(), **TOL)


def test_inference_under_no_grad_is_implicit_too():
    # under no_grad every movement op carries a DETACH: the windows' index map reads through them
    # (a ResNet-18's inference realized each im2col matrix as a "detach" kernel: 1012 -> 183 ms)
    n, c, h, oc = 2, 8, 12, 16
    x, w, b = _rand(n, c, h, h), _rand(oc, c, 3, 3, seed=1), _rand(oc, seed=2)
    with lazy.no_grad():
        y = _conv(x, w, b, padding=1, stride=2)
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    assert any(d.startswith("implicit: ") for d in sched.decisions), sched.decisions
    with lazy.profile() as p:
        y.realize()
    assert len(p.kernels) == 2 and p.kernels[0].name.endswith("_matmul")  # the GEMM, then the relu
    np.testing.assert_allclose(y.numpy(), torch.relu(TF.conv2d(*(torch.tensor(a) for a in (x, w, b)), padding=1,
                                                              stride=2)).numpy(), **TOL)


def test_disabled_restores_the_im2col_kernel(monkeypatch):
    monkeypatch.setenv("LAZY_IMPLICIT_GEMM", "0")
    y = _conv(_rand(2, 3, 6, 6), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2), padding=1)
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    assert not any(d.startswith("implicit: ") for d in sched.decisions)
    assert any(shape == (1, 72, 27) for shape, _ in sched.allocs)


@pytest.mark.parametrize("kw", [{"padding": 1}, {"stride": 2, "padding": (2, 0), "dilation": 2}])
def test_small_blocks_cut_the_windows_everywhere(kw):
    # MC=12, KC=16, NC=64: row blocks start inside image rows, KC panels inside a (c, kh, kw) run
    x, w, b = _rand(3, 5, 11, 10), _rand(9, 5, 3, 3, seed=1), _rand(9, seed=2)
    y = _conv(x, w, b, **kw)
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    (call,) = [k for k in sched.kernels if isinstance(k, ExternCall)]
    ref = TF.conv2d(torch.tensor(x), torch.tensor(w), **kw)  # the GEMM's output: bias and relu follow over NCHW
    slots = list(call.meta["slots"])
    assert sched.kernels[0] is call  # the weight is read in place too (a strided view): no kernel before
    inputs = [bf.data for bf in bufs]
    for cfg in (GemmCConfig(MC=12, KC=16, NC=64), GemmCConfig(MC=12, KC=16, NC=64, MR=6, NV=1, threads=3)):
        out = torch.full((call.buffers[0].numel,), float("nan"))
        gemm_c.load(call, cfg)(*[(inputs[s] if s < len(inputs) else out).data_ptr() for s in slots])
        got = out.reshape(ref.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)
        np.testing.assert_allclose(got.numpy(), ref.numpy(), **TOL)


def test_blas_gathers_the_operand(monkeypatch):
    monkeypatch.setenv("LAZY_GEMM", "blas")
    _check(_rand(2, 3, 7, 6), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2), {"padding": 1, "stride": 2})
