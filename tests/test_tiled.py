"""Transposed tiles in the C backend (codegen/tiling.py): kernels whose loads and stores disagree on
the contiguous axis read the strided loads through L1 tiles. Pins the plan (which loads, along which
loop, the nest the source prints), that a kernel's count and bytes do not change, and torch's values
for sizes of 1, 7, 1023, 4097 and ones no multiple of a tile, 2-D to 4-D permutes, views with
offsets and steps, every dtype, sizes that change, and tile extents set by a config."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_transposed_views_equal, call_c, kernels_of, render_spy

import lazy
from codegen import compile_c, knobs, render_c, tiling
from codegen.render_c import CConfig

pytestmark = pytest.mark.usefixtures("isa")

TILED = "read through L1 tiles"  # the comment a tiled nest opens with (TilePlan.describe)


def rand(*shape, seed=0, dtype=torch.float32):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if dtype == torch.bool:
        return t > 0
    if not dtype.is_floating_point:
        return (t * 40).to(dtype)
    return t.to(dtype)


@pytest.fixture
def sources(monkeypatch):
    """The C source of every kernel rendered inside the test (programs are rendered afresh)."""
    seen: list[str] = []
    with render_spy(monkeypatch, lambda k, src: seen.append(src)):
        yield seen


def one_kernel(fn):
    (k,) = kernels_of(lambda: lazy.realize(fn()))
    return k


# -- the plan --------------------------------------------------------------------------------------
def test_transposed_add_is_one_tiled_kernel_moving_the_same_bytes(sources):
    x, y = rand(64, 48), rand(48, 64, seed=1)
    lx, ly = lazy.tensor(x), lazy.tensor(y)
    with lazy.profile() as p:
        out = lx.permute(1, 0) + ly
        lazy.realize(out)
    (kp,) = p.kernels
    assert kp.bytes_read == 2 * 48 * 64 * 4 and kp.bytes_written == 48 * 64 * 4
    assert torch.equal(out.torch(), x.T + y)
    k = one_kernel(lambda: lazy.tensor(x).permute(1, 0) + lazy.tensor(y))
    plan = render_c.transpose_plan(k)
    assert plan.kind == "pointwise" and plan.axis == 0
    assert [ld.arg[0] for ld, _ in plan.loads] == [0]  # x only: y and the output walk x1 contiguously
    assert (plan.rows, plan.cols) == (tiling.TILE_ROWS, tiling.TILE_COLS)
    src = render_c.render_c(k)
    assert TILED in src and "collapse" not in src  # 3K elements: one thread
    assert f"tt0[{tiling.TILE_ROWS} * {tiling.TILE_COLS}]" in src
    assert TILED not in render_c.render_c(k, config=CConfig(transpose=False))
    assert any(TILED in s for s in sources)


def test_large_tiled_kernels_share_their_tiles_among_threads():
    k = one_kernel(lambda: lazy.tensor(rand(300, 200)).permute(1, 0).contiguous())
    assert "collapse(2)" in render_c.render_c(k)


@pytest.mark.parametrize("axis", [0, 1])
def test_reductions_over_either_axis_copy_their_strided_load(axis):
    x, y = rand(70, 90), rand(90, 70, seed=1)
    k = one_kernel(lambda: (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(axis))
    plan = render_c.transpose_plan(k)
    assert plan.kind == "reduction" and plan.loads[0][1] == "r0"
    assert [ld.arg[0] for ld, _ in plan.loads] == [0 if axis == 0 else 1]  # the load strided along the output
    src = render_c.render_c(k)
    assert "r0b += " in src and "tt0[" in src
    assert render_c.transpose_plan(k, CConfig(transpose=False)) is None


def test_contiguous_kernels_keep_the_plain_nest():
    a = lazy.tensor(rand(2, 8, 16, 32))
    for fn in (lambda: a + 1, lambda: a.permute(0, 2, 1, 3).contiguous(), lambda: a.sum(-1), lambda: a.sum(0)):
        assert render_c.transpose_plan(one_kernel(fn)) is None


def test_nchw_to_nhwc_tiles_the_two_axes_that_disagree():
    x = rand(2, 24, 9, 11)
    k = one_kernel(lambda: lazy.tensor(x).permute(0, 2, 3, 1).contiguous())
    plan = render_c.transpose_plan(k)
    assert plan is not None and plan.kind == "pointwise" and plan.axis == len(k.loops) - 2


def test_tile_knobs_are_checked_and_searched():
    for bad in ({"tile_rows": 0}, {"tile_cols": tiling.MAX_TTILE + 1}, {"tile_rows": 8.0}, {"transpose": 1}):
        with pytest.raises(knobs.KnobError):
            render_c.render_c(one_kernel(lambda: lazy.tensor(rand(5, 6)) + 1), config=CConfig(**bad))
    k = one_kernel(lambda: lazy.tensor(rand(64, 48)).permute(1, 0).contiguous())
    space = render_c.search_space(k)
    assert space["transpose"] == (None, False) and "tile_rows" in space and "tile_cols" in space
    kr = one_kernel(lambda: (lazy.tensor(rand(64, 48)).permute(1, 0) * lazy.tensor(rand(48, 64))).sum(0))
    assert "tile_rows" in render_c.search_space(kr) and "tile_cols" not in render_c.search_space(kr)
    assert "tile_rows" not in render_c.search_space(one_kernel(lambda: lazy.tensor(rand(64, 48)) * 2))


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 5), (3, 64), (128, 16)])
def test_any_tile_extent_computes_the_plain_nest_values(rows, cols):
    x, y = rand(37, 101), rand(101, 37, seed=1)
    for fn in (lambda: lazy.tensor(x).permute(1, 0) - lazy.tensor(y),
               lambda: (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(0),
               lambda: (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(1)):
        k = one_kernel(fn)
        outs = []
        # (threads split the reduction's blocks with rsplit: the tile's sums as array sections)
        for cfg in (CConfig(transpose=False), CConfig(tile_rows=rows, tile_cols=cols, parallel_min_work=0),
                    CConfig(tile_rows=rows, rsplit=True, parallel_min_work=0)):
            # the same inputs for both configs, in the kernel's order, and a fresh output
            ins = iter([x.reshape(-1), y.reshape(-1)])
            ts = [torch.zeros(b.numel) if b.output else next(ins) for b in k.buffers]
            call_c(compile_c.load(render_c.render_c(k, config=cfg)), k, ts)
            outs.append(ts[-1])
        assert render_c.transpose_plan(k, cfg) is not None
        for out in outs[1:]:
            if k.reduces:  # split across threads, the partial sums are added in another order
                torch.testing.assert_close(out, outs[0], rtol=1e-6, atol=1e-6)
            else:
                assert torch.equal(out, outs[0])


# -- values ----------------------------------------------------------------------------------------
SHAPES = [(1, 7), (7, 1), (7, 1023), (1023, 7), (3, 4097), (4097, 3), (100, 77)]


@pytest.mark.parametrize("shape", SHAPES)
def test_transposed_add_and_copy_equal_torch(shape):
    x, y = rand(*shape), rand(*shape[::-1], seed=1)
    assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch(), x.T + y)
    assert torch.equal(lazy.tensor(x).permute(1, 0).contiguous().torch(), x.T.contiguous())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_transposed_reductions_equal_torch(shape, axis):
    # sums within 1e-5 of float64; max exact
    x, y = rand(*shape), rand(*shape[::-1], seed=1)
    got = (lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(axis).torch()
    ref = (x.T.double() * y.double()).sum(axis).float()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).amax(axis).torch(), (x.T + y).amax(axis))


@pytest.mark.parametrize("perm", [(0, 2, 1), (2, 1, 0), (1, 2, 0), (0, 2, 3, 1), (0, 3, 1, 2), (0, 2, 1, 3),
                                  (3, 2, 1, 0)])
def test_permutes_of_three_and_four_dims_equal_torch(perm):
    x = rand(*(3, 33, 70) if len(perm) == 3 else (2, 19, 7, 45))
    y = rand(*[x.shape[p] for p in perm], seed=1)
    assert torch.equal((lazy.tensor(x).permute(*perm) * 2 + lazy.tensor(y)).torch(), x.permute(*perm) * 2 + y)
    assert torch.equal(lazy.tensor(x).permute(*perm).contiguous().torch(), x.permute(*perm).contiguous())
    got = (lazy.tensor(x).permute(*perm) * lazy.tensor(y)).sum(-2).torch()
    torch.testing.assert_close(got, (x.permute(*perm).double() * y.double()).sum(-2).float(), rtol=1e-5, atol=1e-5)


def test_views_with_offsets_and_steps_equal_torch(sources):
    assert_transposed_views_equal(rand(300, 260))
    assert sum(TILED in s for s in sources) >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32,
                                   torch.int64, torch.int8, torch.bool])
def test_every_dtype_equals_torch(dtype, sources):
    x, y = rand(70, 131, dtype=dtype), rand(131, 70, seed=1, dtype=dtype)
    lx, ly = lazy.tensor(x), lazy.tensor(y)
    assert torch.equal(lx.permute(1, 0).contiguous().torch(), x.T.contiguous())
    if dtype == torch.bool:
        assert torch.equal((lx.permute(1, 0) | ly).torch(), x.T | y)
    else:
        assert torch.equal((lx.permute(1, 0) * 2 + ly).torch(), x.T * 2 + y)
    assert torch.equal(lx.permute(1, 0).amax(0).torch(), x.T.amax(0) if dtype != torch.bool
                       else x.T.any(0))
    assert any(TILED in s for s in sources)


def test_sizes_that_change_keep_tiles_right(sources):
    # the first two sizes set the hints the plan is chosen at: strides of 70 and 90 floats
    for rows, cols in [(70, 40), (130, 90), (5, 7), (1023, 3), (2, 4097), (65, 64)]:
        x, y = rand(rows, cols), rand(cols, rows, seed=1)
        assert torch.equal((lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch(), x.T + y)
        torch.testing.assert_close((lazy.tensor(x).permute(1, 0) * lazy.tensor(y)).sum(0).torch(),
                                   (x.T.double() * y.double()).sum(0).float(), rtol=1e-5, atol=1e-5)
    assert any(TILED in s and "const int64_t d0" in s for s in sources)


def test_empty_tensors():
    x, y = rand(0, 5), rand(5, 0)
    assert (lazy.tensor(x).permute(1, 0) + lazy.tensor(y)).torch().shape == (5, 0)


def test_knobs_of_other_passes_leave_the_tiled_nest_whole():
    # row functions, streaming, chunks and fission are passes of the plain nest: forced on, a tiled
    # kernel keeps its tiles (a forced row function once declared column arrays no loop filled)
    k = one_kernel(lambda: lazy.tensor(rand(70, 90, dtype=torch.float16)).permute(1, 0)
                   + lazy.tensor(rand(90, 70, seed=1, dtype=torch.float16)))
    for cfg in (CConfig(row_fn=True), CConfig(stream=True), CConfig(interchange=True), CConfig(chunk=64),
                CConfig(fission=True), CConfig(prefetch=True)):
        src = render_c.render_c(k, config=cfg)
        assert TILED in src
        compile_c.load(src)


def test_a_short_row_that_gathers_is_not_forced_into_simd():
    # the copy of a conv_transpose phase gradient into a GEMM's [m, oc] layout: 32 channels strided
    # 256 apart. `omp simd` there made gcc emit a huge gathering function (143 ms for 1.5 MB); the
    # loop is left to gcc's cost model. Contiguous rows, and long ones, keep the pragma.
    x, b = rand(16, 32, 256), rand(32, seed=1)
    lx, lb = lazy.tensor(x), lazy.tensor(b)
    k = one_kernel(lambda: lx.permute(0, 2, 1).reshape(4096, 32) + lb / 3)
    src = render_c.render_c(k)
    assert "omp simd" not in src.split("void lazy_kernel")[-1], src
    assert "omp simd" in render_c.render_c(one_kernel(lambda: lazy.tensor(rand(4096, 32)) + lb / 3))
    y = (lx.permute(0, 2, 1).reshape(4096, 32) + lb / 3).torch()
    torch.testing.assert_close(y, x.permute(0, 2, 1).reshape(4096, 32) + b / 3)
