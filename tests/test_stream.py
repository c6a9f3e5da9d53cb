"""Streaming (non-temporal) stores in the C backend: the same values as plain stores, for every
shape of block and edge the scratch-block copy has to get right.

Kernels stream by default only when they write >= 64 MiB (codegen/render_c.STREAM_MIN_BYTES), or
>= 16 MiB into buffers they do not read while reading and writing more than the L3 holds
(STREAM_FRESH_MIN_BYTES, STREAM_TRAFFIC_MIN_BYTES); the fixture lowers the thresholds to 0 so
small, fast cases take the streaming path, and checks that they really did (the generated source
calls `lz_stream`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import kernels_of, render_spy

import lazy
from codegen import render_c
from lazy import nn, optim


@pytest.fixture
def streaming(monkeypatch):
    """Every streamable kernel streams; programs compiled earlier (plain stores) are forgotten."""
    monkeypatch.setattr(render_c, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(render_c, "STREAM_FRESH_MIN_BYTES", 0)
    sources: list[str] = []
    with render_spy(monkeypatch, lambda k, src: sources.append(src)):
        yield sources


def rand(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def streamed(sources) -> bool:
    """Some kernel streams an output: `lz_stream`, or `lz_stream_f16` for float16 (floats in the block)."""
    return any("lz_stream(&b" in s or "lz_stream_f16(&b" in s for s in sources)


@pytest.mark.parametrize("n", [1, 7, 1023, 1024, 1025, 4097, 70_001])
def test_1d_elementwise_blocks_and_tails(streaming, n):
    x = rand(n)
    got = (lazy.tensor(x) * 2.0 + 1.0).sigmoid().numpy()
    np.testing.assert_allclose(got, torch.sigmoid(x * 2.0 + 1.0).numpy(), rtol=1e-6, atol=1e-7)
    assert streamed(streaming) == (n > 1)  # one element is a kernel without loops


@pytest.mark.parametrize("shape", [(3, 129), (5, 1000), (2, 3001), (4, 2048)])
def test_rows_with_unaligned_starts(streaming, shape):
    # rows of 129 or 1000 floats start at addresses that are not 64-byte aligned: head and tail
    # of every row take plain stores, the middle streams
    x, w = rand(*shape), rand(shape[-1], seed=1)
    got = (lazy.tensor(x) * lazy.tensor(w) - 0.5).numpy()
    np.testing.assert_allclose(got, (x * w - 0.5).numpy(), rtol=1e-6, atol=1e-7)
    assert streamed(streaming)


def test_softmax_and_layer_norm_rows_stream_with_the_row_cache(streaming):
    x = rand(6, 1500)
    np.testing.assert_allclose(lazy.tensor(x).softmax(-1).numpy(), torch.softmax(x, -1).numpy(), rtol=1e-5, atol=1e-7)
    ln = torch.nn.functional.layer_norm(x, (1500,))
    xl = lazy.tensor(x)
    mean = xl.mean(-1, keepdim=True)
    var = ((xl - mean) ** 2).mean(-1, keepdim=True)
    np.testing.assert_allclose(((xl - mean) * (var + 1e-5).rsqrt()).numpy(), ln.numpy(), rtol=1e-4, atol=1e-5)
    assert streamed(streaming)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.int32])
def test_narrow_and_wide_element_types(streaming, dtype):
    x = rand(3, 1111).mul(100).to(dtype)
    got = (lazy.tensor(x) * 3).torch()
    assert got.dtype == dtype and torch.equal(got, x * 3)
    assert streamed(streaming)


def test_bool_output_rows(streaming):
    x = rand(4, 777)
    got = (lazy.tensor(x) > 0.25).torch()
    assert got.dtype == torch.bool and torch.equal(got, x > 0.25)
    assert streamed(streaming)


def test_several_outputs_of_one_kernel(streaming):
    x = rand(5, 900)
    a, b = lazy.tensor(x).exp(), lazy.tensor(x) * 2.0
    lazy.realize(a, b)
    np.testing.assert_allclose(a.numpy(), x.exp().numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), (x * 2.0).numpy(), rtol=0)
    assert streamed(streaming)


def test_in_place_optimizer_update_streams_into_the_parameter(streaming):
    # SGD with momentum writes parameter and momentum buffer in place: each value is read before
    # its own block is stored, so streaming the block afterwards is safe
    torch.manual_seed(0)
    ref = torch.nn.Linear(300, 200)
    model = nn.Linear(300, 200)
    model.load_state_dict(ref.state_dict())
    opt, ropt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x = rand(16, 300)
    for _ in range(3):
        opt.zero_grad(), ropt.zero_grad()
        model(lazy.tensor(x)).square().mean().backward()
        ref(x).square().mean().backward()
        opt.step(), ropt.step()
    np.testing.assert_allclose(model.weight.numpy(), ref.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert streamed(streaming)


def test_short_rows_and_column_reductions_keep_plain_stores():
    # rows under STREAM_MIN_ROW_BYTES, and interchanged (column) reductions, never stream
    x = lazy.tensor(rand(64, 20))[:, :16]  # 2-D loops (the view does not merge): rows of 64 bytes
    ks = kernels_of(lambda: ((x * 2.0).realize(), lazy.tensor(rand(300, 200)).sum(0).realize()))
    assert ks and not any(render_c._streamable(k) for k in ks)


def test_the_default_threshold_streams_only_large_outputs():
    x = lazy.tensor(rand(1 << 10))
    (k,) = kernels_of(lambda: (x * 2.0).realize())
    assert render_c._streamable(k) and "lz_stream(&b" not in render_c.render_c(k)
    assert "lz_stream(&b" in render_c.render_c(k, config=render_c.CConfig(stream=True))


def test_fresh_outputs_stream_from_a_quarter_of_the_large_threshold():
    n = render_c.STREAM_FRESH_MIN_BYTES // 4  # float32 elements
    x = lazy.randn(n).realize()
    (k,) = kernels_of(lambda: (x * 2.0).realize())  # reads and writes 2 x 16 MiB: more than the L3
    assert render_c._streams(k, render_c.CConfig())
    # the same kernel writing into the buffer it reads (an optimizer's update) keeps plain stores
    # until STREAM_MIN_BYTES: the next step reads those lines, some of them still cached
    inplace = dataclasses.replace(k, stores=tuple(dataclasses.replace(st, buf=0) for st in k.stores))
    assert not render_c._streams(inplace, render_c.CConfig())
    # 16 MiB written from two short vectors: the output is all the traffic, and stays in L3
    a, b = lazy.randn(n // 1024).realize(), lazy.randn(1024).realize()
    (k,) = kernels_of(lambda: (a[:, None] - b[None, :]).abs().realize())
    assert not render_c._streams(k, render_c.CConfig())
    assert render_c._streams(k, render_c.CConfig(stream=True))


def test_compute_bound_kernels_keep_plain_stores(streaming):
    # two transcendentals per element (exp and tanh): the kernel is compute-bound and streaming's
    # extra pass through the scratch block does not pay; a tuner can still ask for it
    x = rand(5000)
    got = (lazy.tensor(x).exp() + 1.0).tanh().numpy()
    np.testing.assert_allclose(got, torch.tanh(x.exp() + 1.0).numpy(), rtol=1e-6)
    assert not streamed(streaming)
    ks = kernels_of(lambda: (lazy.tensor(x).exp() + 2.0).tanh().realize())
    assert "lz_stream(&b" in render_c.render_c(ks[0], config=render_c.CConfig(stream=True))
