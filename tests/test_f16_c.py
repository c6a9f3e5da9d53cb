"""float16 in the C backend: storage is uint16_t, converted to and from float32 with integer bit
operations (codegen/render_c.PRELUDE `f16_to_f32`, `f32_to_f16`), and casts inside a kernel rounded
in float arithmetic (`round_f16`), so that float16 loops vectorize. Checked bit for bit against
numpy's conversions: every float16 value, and float32 inputs spaced evenly over all bit patterns
(every binade, subnormals, the overflow edge, inf, NaN). A one-off run over all 2^32 float32 inputs
(6 minutes) found no difference in either `f32_to_f16` or `round_f16`."""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
import torch
from conftest import disassembly, kernel_body, native_macro, render_spy

import lazy
from codegen import compile_c, render_c

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")


def test_every_float16_widens_exactly():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got = lazy.tensor(torch.from_numpy(h.copy())).to(lazy.float32).numpy()
    want = h.astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])  # signed zeros too
    assert np.isnan(got[nan]).all()


# float32 inputs every 997th bit pattern (4.3M), and the edges of float16's range
EDGES = np.array([0.0, -0.0, 65504, 65519.99, 65520, -65520, np.inf, -np.inf, np.nan,
                  2.0 ** -25, -2.0 ** -25, 2.0 ** -24, 3 * 2.0 ** -25, -1e-40], np.float32)
FLOAT32_SWEEP = np.concatenate([np.arange(0, 1 << 32, 997, dtype=np.uint64).astype(np.uint32).view(np.float32), EDGES])


def test_float32_narrows_like_numpy():
    x = FLOAT32_SWEEP
    got = lazy.tensor(x).to(lazy.float16).torch().numpy()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(got[nan]).all()


@pytest.mark.parametrize("f16c", [True, False])
@pytest.mark.parametrize("stream", [True, None])
@pytest.mark.parametrize("shape", [FLOAT32_SWEEP.shape, (1029,), (3, 1031)])
def test_float16_stores_narrow_blocks_like_numpy(monkeypatch, shape, stream, f16c):
    """float16 outputs keep floats in an L1 block and narrow as the block leaves (`lz_copy_f16`,
    or `lz_stream_f16` when streamed: vcvtps2ph with F16C, f32_to_f16 for the tail and without
    it): the same bits."""
    x = np.resize(FLOAT32_SWEEP, shape)
    seen = []
    with render_spy(monkeypatch, lambda k, src: seen.append(k)):
        lazy.tensor(x).to(lazy.float16).realize()
    src = render_c.render_c(seen[-1], config=render_c.CConfig(stream=stream))
    assert ("lz_stream_f16(" if stream else "lz_copy_f16(") in kernel_body(src)
    assert "f32_to_f16(t" not in kernel_body(src)
    fn = compile_c.load(src, flags=compile_c.cflags() + (() if f16c else ("-mno-f16c",)))
    fn.argtypes = [ctypes.c_void_p] * 2
    got = np.full(shape, 7, np.float16)
    fn(x.ctypes.data, got.ctypes.data)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(got[nan]).all()
    if f16c and native_macro("__F16C__") and shutil.which("objdump"):
        assert "vcvtps2ph" in disassembly(src)


def test_plain_float16_stores_when_tuned_off(monkeypatch):
    seen = []
    with render_spy(monkeypatch, lambda k, src: seen.append(k)):
        lazy.tensor(np.resize(FLOAT32_SWEEP, (3, 1031))).to(lazy.float16).realize()
    body = kernel_body(render_c.render_c(seen[-1], config=render_c.CConfig(stream=False)))
    assert "f32_to_f16(t" in body and "lz_copy_f16(" not in body and "sbuf" not in body


def test_ties_round_to_even_and_edges():
    # halfway between float16 neighbours (normal and subnormal), the largest finite value and the
    # first that rounds to inf, the smallest subnormal and half of it
    h = np.array([1.0, 2.0, 1024.0, 2.0 ** -14, 2.0 ** -24, 3 * 2.0 ** -24], np.float64)
    ulp = np.spacing(h.astype(np.float16)).astype(np.float64)
    cases = np.concatenate([h + ulp / 2, h + 1.5 * ulp, -(h + ulp / 2),
                            [65504.0, 65519.99, 65520.0, 1e6, 2.0 ** -25, 2.0 ** -25 * 1.0001, 0.0, -0.0]])
    x = cases.astype(np.float32)
    got = lazy.tensor(x).to(lazy.float16).torch().numpy()
    np.testing.assert_array_equal(got.view(np.uint16), x.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("op", ["add", "softmax", "sum"])
def test_float16_arithmetic_matches_torch(op):
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(37, 129, generator=g) * 10).half()
    b = (torch.randn(129, generator=g)).half()
    la, lb = lazy.tensor(a), lazy.tensor(b)
    got, want = {
        "add": lambda: ((la + lb) * lb, (a + b) * b),
        "softmax": lambda: (la.softmax(-1), a.float().softmax(-1).half()),
        "sum": lambda: (la.sum(-1), a.float().sum(-1).half()),
    }[op]()
    got = got.torch()
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


SOFT_FLOAT16 = ("__extendhfsf2", "__truncsfhf2", "__eqhf2", "__nehf2")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_float16_kernels_call_no_soft_float_helpers(monkeypatch):
    # gcc lowers a scalar _Float16 conversion or compare to libgcc calls, which also keep the loop
    # from vectorizing; the bit-level conversions need none
    sources: list[str] = []
    x = lazy.tensor(torch.randn(64, 1000).half())
    with render_spy(monkeypatch, lambda k, src: sources.append(src)):
        (x.softmax(-1) * 2 + x.float().mean(-1, keepdim=True).half()).realize()
    assert sources
    for src in sources:
        code = disassembly(src)
        assert not [f for f in SOFT_FLOAT16 if f in code], kernel_body(src)


def test_casts_inside_a_kernel_round_like_numpy():
    # x.half().float() fuses into one kernel: round_f16, float arithmetic, not the f16_t round trip
    x = FLOAT32_SWEEP
    got = lazy.tensor(x).to(lazy.float16).to(lazy.float32).numpy()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])  # signed zeros too
    assert np.isnan(got[nan]).all()
