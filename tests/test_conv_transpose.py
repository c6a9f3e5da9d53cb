"""conv_transpose2d as the sub-pixel decomposition (lazy/nn/conv_transpose.py): one stride-1 conv2d
per output phase over the undilated input, interleaved; the zero-dilated input only for dilation > 1.

Pinned here: values and gradients (input, weight, bias) against torch over strides 1-3, kernels
1-5 (kernel < stride: phases without taps), every padding < kernel and output_padding < stride,
groups 1 and 2, odd sizes down to 1 (all of them on the reference interpreter, a sample compiled),
batch 1, unbatched input, non-contiguous inputs, float64, ConvTranspose2d's output_size and the
dilated fallback; the schedule of a DCGAN layer (every phase an implicit GEMM reading the input in
place: no im2col matrix, and a third of its bytes moved in all).

Tolerance: float32 sums of up to C/g*kH*kW products in a different order from torch's, so rtol
1e-4 and atol 1e-4 as the other convolution tests; float64 1e-10. A tap or pad off by one is an
O(1) error.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lazy
import lazy.nn.functional as F
from codegen.kernel_ir import ExternCall, GatherView
from lazy import nn
from lazy.graph import structure_key
from scheduler import schedule

TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _check(xs, ws, kw, *, bias=True, dtype=torch.float32, make_input=lambda t: t):
    """conv_transpose2d(make_input(x), w, b, **kw) and the gradients of sum(out * g) for x, w and b,
    against torch; `make_input` turns the leaf into the input (a slice, a permuted view)."""
    arrays = [_rand(*xs), _rand(*ws, seed=1) * 0.3] + ([_rand(ws[1] * kw.get("groups", 1), seed=2)] if bias else [])
    lts = [lazy.tensor(torch.tensor(a, dtype=dtype), requires_grad=True) for a in arrays]
    tts = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    ly = F.conv_transpose2d(make_input(lts[0]), *lts[1:], **kw)
    ty = TF.conv_transpose2d(make_input(tts[0]), *tts[1:], **kw)
    assert tuple(ly.shape) == tuple(ty.shape) and ly.dtype is lazy.dtypes.as_dtype(dtype)
    np.testing.assert_allclose(ly.numpy(), ty.detach().numpy(), **TOL[dtype])
    g = _rand(*ty.shape, seed=9)
    (ly * lazy.tensor(torch.tensor(g, dtype=dtype))).sum().backward()
    (ty * torch.tensor(g, dtype=dtype)).sum().backward()
    for lt, tt in zip(lts, tts):
        np.testing.assert_allclose(lt.grad.numpy(), tt.grad.numpy(), **TOL[dtype])


# every padding < kernel and output_padding < stride, for strides 1-3 and kernels 1-5; groups,
# heights and widths (odd ones, 1) vary along the list
SWEEP = [(s, k, p, op) for s in (1, 2, 3) for k in range(1, 6) for p in range(k) for op in range(s)]


def _sweep_case(s, k, p, op):
    i = SWEEP.index((s, k, p, op))
    g, h, w = 1 + i % 2, (1, 3, 4, 5)[i % 4], (5, 2, 1)[i % 3]
    h = max(h, -(-(2 * p - k - op + 1) // s) + 1)  # an output of at least one row
    _check((2, 2 * g, h, w), (2 * g, 3, k, max(1, k - 1)), {"stride": s, "padding": (p, 0), "output_padding": op,
                                                         "groups": g})


@pytest.mark.parametrize("s,k,p,op", SWEEP)
def test_every_phase_layout_matches_torch(s, k, p, op, monkeypatch):
    # the reference interpreter: the decomposition's taps, pads and crops, a fraction of a second a
    # case (the C backend compiles each case's dozens of kernels: seconds)
    monkeypatch.setenv("LAZY_BACKEND", "interp")
    _sweep_case(s, k, p, op)


# compiled: stride 1, DCGAN's layer, kernels below the stride, crops of the input on both sides
@pytest.mark.parametrize("s,k,p,op", [(1, 3, 1, 0), (2, 4, 1, 0), (2, 1, 0, 1), (2, 5, 3, 1), (3, 2, 0, 2),
                                      (3, 5, 4, 2)])
def test_compiled_matches_torch(s, k, p, op):
    _sweep_case(s, k, p, op)


@pytest.mark.parametrize("kw", [{"stride": (2, 3), "padding": (1, 2), "output_padding": (1, 2)},
                                {"stride": (3, 1), "padding": (0, 1)}, {"stride": (1, 2), "output_padding": (0, 1)}])
def test_different_strides_per_dim(kw):
    _check((1, 3, 5, 4), (3, 2, 4, 3), kw)


def test_batch_one_and_unbatched_without_bias():
    _check((1, 4, 3, 3), (4, 5, 3, 3), {"stride": 2, "padding": 1}, bias=False)
    _check((4, 3, 5), (4, 2, 4, 2), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2})


def test_non_contiguous_inputs():
    # a channel slice (strided over a bigger buffer) and an NHWC buffer seen as NCHW
    _check((2, 6, 5, 5), (3, 4, 4, 4), {"stride": 2, "padding": 1}, make_input=lambda t: t[:, 1:4])
    _check((2, 5, 4, 3), (3, 2, 3, 3), {"stride": 3, "padding": 1, "output_padding": 2},
           make_input=lambda t: t.permute(0, 3, 1, 2))


@pytest.mark.parametrize("kw", [{"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}, {"stride": 3}])
def test_float64(kw):
    _check((2, 4, 3, 5), (4, 3, 5, 2), kw, dtype=torch.float64)


@pytest.mark.parametrize("kw", [{"stride": 2, "dilation": 2, "padding": 1, "output_padding": 1},
                                {"stride": (3, 1), "dilation": (1, 2), "padding": (2, 1), "groups": 2}])
def test_dilation_falls_back_to_the_dilated_input(kw):
    _check((2, 4, 4, 3), (4, 3, 3, 3), kw)


def test_an_empty_output_is_an_error():
    x, w = lazy.tensor(_rand(1, 2, 1, 3).astype(np.float32)), lazy.tensor(_rand(2, 3, 4, 1).astype(np.float32))
    with pytest.raises(RuntimeError, match=r"Calculated output size per channel: \(0 x 3\). Output size is too small"):
        F.conv_transpose2d(x, w, padding=(2, 0))


def test_module_output_size():
    lm, tm = nn.ConvTranspose2d(4, 3, 3, stride=3, padding=1), torch.nn.ConvTranspose2d(4, 3, 3, stride=3, padding=1)
    lm.load_state_dict(tm.state_dict())
    x = _rand(2, 4, 3, 5).astype(np.float32)
    for size in [(7, 13), (8, 14), (9, 15), (2, 4, 9, 13)]:
        np.testing.assert_allclose(lm(lazy.tensor(x), output_size=size).numpy(),
                                   tm(torch.tensor(x), output_size=size).detach().numpy(), **TOL[torch.float32])


def _dcgan_layer():
    """A DCGAN generator layer (ConvTranspose2d(64, 32, 4, 2, 1), no bias) on (2, 64, 8, 8), and the
    bytes of the im2col matrix the dilated formulation wrote: (2*16*16) x (64*4*4) floats."""
    lazy.manual_seed(0)
    layer = nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False)
    return layer, lazy.tensor(_rand(2, 64, 8, 8).astype(np.float32)), 2 * 16 * 16 * 64 * 16 * 4


@pytest.mark.parametrize("grad", [True, False])
def test_dcgan_layer_is_four_implicit_gemms(grad, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "c")
    layer, x, im2col = _dcgan_layer()
    with contextlib.nullcontext() if grad else lazy.no_grad():  # (under no_grad the views carry DETACHes)
        y = layer(x)
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    assert sum(d.startswith("implicit: ") for d in sched.decisions) == 4, sched.decisions
    calls = [k for k in sched.kernels if isinstance(k, ExternCall)]
    # each phase: a 2x2 sub-kernel over the 8x8 input, K = 64 * 4 (the dilated input: 64 * 16)
    assert len(calls) == 4 and all(isinstance(c.views[1], GatherView) and c.views[1].shape == (1, 128, 256)
                                   for c in calls)
    assert all(math.prod(shape) * 4 < im2col // 8 for shape, _ in sched.allocs)  # nothing near an im2col
    with lazy.profile() as prof:
        y.realize()
    # the weight flipped and transposed once (read, written), the input and a quarter of the weight
    # read by each GEMM, the phases written, then read and written interleaved: a third of the bytes
    # of the im2col matrix alone, which the dilated formulation wrote and read back
    w, xs, out = layer.weight.numel() * 4, x.numel() * 4, y.numel() * 4
    assert sum(k.bytes_read + k.bytes_written for k in prof.kernels) == 3 * w + 4 * xs + 3 * out < im2col // 2
    ref = TF.conv_transpose2d(torch.tensor(x.numpy()), torch.tensor(layer.weight.numpy()), stride=2, padding=1)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), **TOL[torch.float32])
