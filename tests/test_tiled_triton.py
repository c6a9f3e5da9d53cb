"""Transposed tiles on the Triton backend (codegen/render_triton.py `transpose_plan`, the plan of
codegen/tiling.py): a pointwise kernel whose loads and stores disagree on the contiguous axis runs
[YBLOCK, XBLOCK] tiles, its strided loads read along their own contiguous axis and turned with
`tl.trans`. Pins the plan (the source a transposed kernel and a plain one print, one kernel, the
same bytes), torch's values for sizes of 1, 7, 1023, 4097 and ones no multiple of a block, 2-D to
4-D permutes, views with offsets and steps, every dtype, sizes that change, any block extents, the
knobs' checks and search space, and the ahead-of-time compile for sm_90.

Runs under TRITON_INTERPRET=1 with LAZY_BACKEND=triton (about 1 ms per program: small shapes)."""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict

import pytest
import torch
from conftest import assert_transposed_views_equal, kernels_of

import lazy
from codegen import compile_triton, knobs, render_triton
from codegen.render_triton import TritonConfig
from lazy import runtime

TURNED = "tl.trans("


@pytest.fixture(autouse=True)
def triton_backend(tmp_path, monkeypatch):
    """Every kernel source rendered inside the test, programs built afresh on the Triton backend."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when a generated module is imported
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path / "lazy-cache"))
    monkeypatch.setattr(runtime, "_programs", OrderedDict())
    monkeypatch.setattr(runtime, "_families", OrderedDict())
    monkeypatch.setattr(runtime, "_bound", {})
    seen: list[str] = []
    real = render_triton.render_triton

    def spy(k, config=None):
        src = real(k, config)
        seen.append(src)
        return src

    monkeypatch.setattr(compile_triton, "render_triton", spy)
    return seen


def rand(*shape, seed=0, dtype=torch.float32):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if dtype == torch.bool:
        return t > 0
    if dtype == torch.uint8:
        return (t * 40).abs().to(dtype)
    if not dtype.is_floating_point:
        return (t * 40).to(dtype)
    return t.to(dtype)


def one_kernel(fn):
    (k,) = kernels_of(lambda: lazy.realize(fn()))
    return k


def run(k, cfg, inputs):
    """`k` launched with `cfg` on `inputs` (in the kernel's buffer order) and a fresh output."""
    ins = iter(inputs)
    ts = [torch.zeros(b.numel) if b.output else next(ins) for b in k.buffers]
    compile_triton.load(k, cfg)(*ts)
    return ts[-1]


# -- the plan --------------------------------------------------------------------------------------
def test_transposed_add_is_one_tiled_kernel_moving_the_same_bytes(triton_backend):
    x, y = rand(64, 48), rand(48, 64, seed=1)
    with lazy.profile() as p:
        out = lazy.tensor(x).permute(1, 0) + lazy.tensor(y)
        lazy.realize(out)
    (kp,) = p.kernels
    assert kp.bytes_read == 2 * 48 * 64 * 4 and kp.bytes_written == 48 * 64 * 4
    assert torch.equal(out.torch(), x.T + y)
    assert any(TURNED in s for s in triton_backend)
    k = one_kernel(lambda: lazy.tensor(x).permute(1, 0) + lazy.tensor(y))
    plan = render_triton.transpose_plan(k, render_triton.choose_config(k))
    assert plan.kind == "pointwise" and plan.axis == 0
    assert [ld.arg[0] for ld, _ in plan.loads] == [0]  # x only: y and the output walk x1 contiguously
    cfg = render_triton.choose_config(k)
    assert (cfg.YBLOCK, cfg.XBLOCK) == (render_triton.TILE_Y, render_triton.TILE_X)
    src = render_triton.render_triton(k)
    assert src.count(TURNED) == 1 and "YBLOCK: tl.constexpr" in src and "xindex" not in src
    assert "tl.arange(0, YBLOCK)[None, :]" in src and "tl.arange(0, XBLOCK)[:, None]" in src  # read turned
    assert "GRID = (2,)" in src  # 48 / 32 tiles along x0, 64 / 64 along x1
    flat = render_triton.render_triton(k, TritonConfig(XBLOCK=1024, transpose=False))
    assert TURNED not in flat and "YBLOCK: tl.constexpr" not in flat and "xindex" in flat


def test_contiguous_kernels_keep_the_flat_block(triton_backend):
    a = lazy.tensor(rand(2, 8, 16, 32))
    for fn in (lambda: a + 1, lambda: a.permute(0, 2, 1, 3).contiguous(), lambda: a.sum(-1), lambda: a.sum(0)):
        k = one_kernel(fn)
        assert render_triton.transpose_plan(k, render_triton.choose_config(k)) is None
        src = render_triton.render_triton(k)
        assert TURNED not in src and "YBLOCK: tl.constexpr" not in src
    # the plain kernel's source is what it was before tiles: YBLOCK is no parameter of it
    assert "CONSTEXPRS = {'XBLOCK': " in triton_backend[-1] and "'YBLOCK'" not in triton_backend[-1]


@pytest.mark.parametrize("shape", [(70, 90), (20, 50)])  # rows looped over RBLOCK blocks, and one block
@pytest.mark.parametrize("axis", [0, 1])
def test_reductions_turn_the_load_contiguous_along_the_rows(axis, shape):
    # the [XBLOCK, RBLOCK] block has the reduced axis last: x.T's load walks it, y's is the turned one
    x, y = rand(*shape), rand(*shape[::-1], seed=1)
    k = one_kernel(lambda: (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(axis))
    turned = render_triton.turned_reduction_loads(k, render_triton.choose_config(k))
    assert [ld.arg[0] for _, ld in turned] == [1 if axis == 0 else 0]
    src = render_triton.render_triton(k)
    assert src.count(TURNED) == 1 and "xindex_t = " in src
    flat = dataclasses.replace(render_triton.choose_config(k), transpose=False)
    assert TURNED not in render_triton.render_triton(k, flat)
    assert render_triton.search_space(k)["transpose"] == (None, False)
    got = (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(axis).torch()
    torch.testing.assert_close(got, (x.T.double() * y.double()).sum(axis).float(), rtol=1e-5, atol=1e-5)
    # a column sum of one contiguous tensor: its axes agree with each other, nothing to turn
    kc = one_kernel(lambda: lazy.tensor(x).sum(0))
    assert not render_triton.turned_reduction_loads(kc, render_triton.choose_config(kc))


def test_nchw_to_nhwc_tiles_the_two_axes_that_disagree():
    x = rand(2, 24, 9, 11)
    k = one_kernel(lambda: lazy.tensor(x).permute(0, 2, 3, 1).contiguous())
    plan = render_triton.transpose_plan(k, render_triton.choose_config(k))
    assert plan is not None and plan.axis == len(k.loops) - 2
    src = render_triton.render_triton(k)
    assert "tile_o = tile // " in src and TURNED in src
    assert torch.equal(lazy.tensor(x).permute(0, 2, 3, 1).contiguous().torch(), x.permute(0, 2, 3, 1).contiguous())


def test_block_knobs_are_checked_and_searched():
    k = one_kernel(lambda: lazy.tensor(rand(64, 48)).permute(1, 0).contiguous())
    for bad in ({"YBLOCK": 0}, {"YBLOCK": 3}, {"YBLOCK": 8.0}, {"YBLOCK": True}, {"transpose": 1},
                {"XBLOCK": 1024, "YBLOCK": 2048}, {"YBLOCK": "32"}):
        with pytest.raises(knobs.KnobError):
            render_triton.render_triton(k, TritonConfig(**{"XBLOCK": 64, **bad}))
        with pytest.raises(knobs.KnobError):  # a row of the tuning database, or a file
            render_triton.check_config(knobs.from_dict(TritonConfig, {"XBLOCK": 64, **bad}))
    space = render_triton.search_space(k)
    assert space["transpose"] == (None, False) and "YBLOCK" in space and "RBLOCK" not in space
    assert render_triton.choose_config(k).YBLOCK in space["YBLOCK"]
    assert all(render_triton.valid_config(k, TritonConfig(XBLOCK=x, YBLOCK=y))
               for x in space["XBLOCK"] for y in space["YBLOCK"] if x * y <= 4096)
    assert "YBLOCK" not in render_triton.search_space(one_kernel(lambda: lazy.tensor(rand(64, 48)) * 2))
    # a stored config from before the tiles (no YBLOCK, no transpose) still builds: one-row tiles
    old = knobs.from_dict(TritonConfig, {"XBLOCK": 64, "RBLOCK": 1, "num_warps": 4, "num_stages": 1})
    assert TURNED in render_triton.render_triton(k, old)


@pytest.mark.parametrize("yb,xb", [(1, 64), (64, 1), (2, 16), (128, 4), (8, 256)])
def test_any_block_extent_computes_the_flat_blocks_values(yb, xb):
    x, y = rand(37, 101), rand(101, 37, seed=1)
    k = one_kernel(lambda: lazy.tensor(x).permute(1, 0) - lazy.tensor(y))
    cfg = TritonConfig(XBLOCK=xb, YBLOCK=yb, num_warps=1)
    assert render_triton.transpose_plan(k, cfg) is not None
    flat = run(k, TritonConfig(XBLOCK=4096, transpose=False), [x.reshape(-1), y.reshape(-1)])
    assert torch.equal(run(k, cfg, [x.reshape(-1), y.reshape(-1)]), flat)
    assert torch.equal(flat.reshape(101, 37), x.T - y)


# -- values ----------------------------------------------------------------------------------------
SHAPES = [(1, 7), (7, 1), (7, 1023), (1023, 7), (3, 4097), (4097, 3), (100, 77)]


@pytest.mark.parametrize("shape", SHAPES)
def test_transposed_add_and_copy_equal_torch(shape):
    x, y = rand(*shape), rand(*shape[::-1], seed=1)
    assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch(), x.T + y)
    assert torch.equal(lazy.tensor(x).permute(1, 0).contiguous().torch(), x.T.contiguous())


@pytest.mark.parametrize("shape", [(1, 7), (7, 1023), (4097, 3), (100, 77)])
@pytest.mark.parametrize("axis", [0, 1])
def test_transposed_reductions_equal_torch(shape, axis):
    x, y = rand(*shape), rand(*shape[::-1], seed=1)
    got = (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(axis).torch()
    torch.testing.assert_close(got, (x.T.double() * y.double()).sum(axis).float(), rtol=1e-5, atol=1e-5)
    assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).amax(axis).torch(), (x.T + y).amax(axis))


@pytest.mark.parametrize("perm", [(0, 2, 1), (2, 1, 0), (1, 2, 0), (0, 2, 3, 1), (0, 3, 1, 2), (0, 2, 1, 3),
                                  (3, 2, 1, 0)])
def test_permutes_of_three_and_four_dims_equal_torch(perm, triton_backend):
    x = rand(*(3, 33, 20) if len(perm) == 3 else (2, 9, 7, 19))
    y = rand(*[x.shape[p] for p in perm], seed=1)
    assert torch.equal((lazy.tensor(x).permute(*perm) * 2 + lazy.tensor(y)).torch(), x.permute(*perm) * 2 + y)
    assert torch.equal(lazy.tensor(x).permute(*perm).contiguous().torch(), x.permute(*perm).contiguous())
    if perm != (0, 2, 1, 3):  # its last axis stays contiguous: the flat block
        assert any(TURNED in s for s in triton_backend)


def test_views_with_offsets_and_steps_equal_torch(triton_backend):
    assert_transposed_views_equal(rand(150, 130), sums=False)
    assert sum(TURNED in s for s in triton_backend) >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32,
                                   torch.int64, torch.int8, torch.uint8, torch.bool])
def test_every_dtype_equals_torch(dtype, triton_backend):
    x, y = rand(70, 131, dtype=dtype), rand(131, 70, seed=1, dtype=dtype)
    lx, ly = lazy.tensor(x), lazy.tensor(y)
    assert torch.equal(lx.permute(1, 0).contiguous().torch(), x.T.contiguous())
    if dtype == torch.bool:
        assert torch.equal((lx.permute(1, 0) | ly).torch(), x.T | y)
    else:
        assert torch.equal((lx.permute(1, 0) * 2 + ly).torch(), x.T * 2 + y)
    assert sum(TURNED in s for s in triton_backend) == 2
    if dtype == torch.bool:  # a reduction that turns y's load
        assert torch.equal((lx.permute(1, 0) | ly).amax(0).torch(), (x.T | y).any(0))
    else:
        assert torch.equal((lx.permute(1, 0) + ly).amax(0).torch(), (x.T + y).amax(0))
    assert sum(TURNED in s for s in triton_backend) == 3


def test_sizes_that_change_keep_tiles_right(triton_backend):
    # the first two sizes set the hints the plan is chosen at: strides of 70 and 90 floats
    for rows, cols in [(70, 40), (130, 90), (5, 7), (1023, 3), (2, 4097), (65, 64)]:
        x, y = rand(rows, cols), rand(cols, rows, seed=1)
        assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch(), x.T + y)
        torch.testing.assert_close((lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(0).torch(),
                                   (x.T.double() * y.double()).sum(0).float(), rtol=1e-5, atol=1e-5)
    sym, red = [s for s in triton_backend if TURNED in s and "d0 = d0.to(tl.int64)" in s]
    assert "xindex_t" in red
    assert "// YBLOCK)" in sym and "triton.cdiv(" in sym  # tile counts from the sizes at launch


def test_empty_tensors():
    x, y = rand(0, 5), rand(5, 0)
    assert (lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch().shape == (5, 0)


def test_in_place_update_of_a_transposed_read_keeps_the_plan_legal():
    # the kernel writes x and reads x: tiled only where every read of x is the element it writes
    x = rand(40, 40)
    lx = lazy.tensor(x.clone())
    lx.add_(lazy.tensor(x).permute(1, 0))
    assert torch.equal(lx.torch(), x + x.T)


# -- ahead of time ---------------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("LAZY_SKIP_AOT") == "1", reason="LAZY_SKIP_AOT=1")
def test_tiled_kernels_compile_for_sm90_without_spills(triton_backend):
    ks = []
    x, y = rand(2048, 1024), rand(1024, 2048, seed=1)
    ks.append(one_kernel(lambda: lazy.tensor(x).permute(1, 0).contiguous()))
    ks.append(one_kernel(lambda: lazy.tensor(x).permute(1, 0) * 2 + lazy.tensor(y)))
    ks.append(one_kernel(lambda: lazy.tensor(x.half()).permute(1, 0).contiguous()))
    ks.append(one_kernel(lambda: lazy.tensor(x > 0).permute(1, 0) | lazy.tensor(y > 0)))
    ks.append(one_kernel(lambda: (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(0)))
    ks.append(one_kernel(lambda: (lazy.tensor(x.half()).permute(1, 0) * lazy.tensor(y.half())).sum(1)))
    ks.append(one_kernel(lambda: lazy.tensor(rand(8, 64, 56, 56)).permute(0, 2, 3, 1).contiguous()))
    for rows in (70, 130):  # the second size builds the kernel that takes its sizes
        (lazy.tensor(rand(rows, 90)).permute(1, 0) + lazy.tensor(rand(90, rows))).torch()
    ks.append(kernels_of(lambda: (lazy.tensor(rand(33, 90)).permute(1, 0) + lazy.tensor(rand(90, 33))).torch())[0])
    assert ks[-1].sizes
    results = compile_triton.aot_compile_many(ks, "sm_90")  # one subprocess, TRITON_INTERPRET unset
    for k, res in zip(ks, results):
        cfg = render_triton.choose_config(k)
        assert render_triton.transpose_plan(k, cfg) or render_triton.turned_reduction_loads(k, cfg), k.name
        assert res["target"] == "sm_90" and ".target sm_90a" in res["ptx"] and res["cubin_bytes"] > 0
        assert res["spills"] == 0 and res["local"] == 0, res["resource_usage"]
        assert res["shared"] <= compile_triton.H100_SHARED_LIMIT
        assert res["grid"][0] >= 1
