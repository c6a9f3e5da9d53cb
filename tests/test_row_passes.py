"""How the C backend's reduction passes are rendered: float sums in blocks (float inside a block,
double across blocks) and the next row prefetched by multi-pass row kernels (into L2, during a pass
that runs from cache: the one computing exp/log/... per element if there is one).

Accuracy is checked against a float64 reference, not against torch: the claim is "as accurate as a
double accumulator up to the final float rounding", which is stricter than torch's own float sums.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import call_c, render_spy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazy
from codegen import render_c
from codegen.kernel_ir import Kernel
from lazy import runtime

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")


@pytest.fixture
def kernels(monkeypatch):
    """The Kernel IR of every kernel compiled in the test; programs compiled earlier are forgotten."""
    seen: list[Kernel] = []
    with render_spy(monkeypatch, lambda k, src: seen.append(k)):
        yield seen


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-30)))


# one float32 rounding of the result is 2**-24 (6e-8) relative; a float accumulator over a few
# million elements, even 16 lanes wide, is off by 1e-5 and more on these inputs
FINAL_ROUNDING = 2.0 ** -23


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 3 * 1024 + 17, 1 << 22])
def test_full_float_sum_is_as_accurate_as_a_double_accumulator(n):
    x = np.random.default_rng(n).random(n, dtype=np.float32)
    assert rel_err(lazy.tensor(x).sum().item(), x.astype(np.float64).sum()) <= FINAL_ROUNDING


def test_row_sums_and_means_over_many_blocks():
    x = np.random.default_rng(1).standard_normal((6, 100_003), dtype=np.float32) + 10.0
    ref = x.astype(np.float64)
    assert rel_err(lazy.tensor(x).sum(-1).numpy(), ref.sum(-1)) <= FINAL_ROUNDING
    assert rel_err(lazy.tensor(x).mean(-1).numpy(), ref.mean(-1)) <= FINAL_ROUNDING
    # the variance of data far from zero: the centred second pass sums in blocks too
    assert rel_err(lazy.tensor(x).var(-1).numpy(), ref.var(-1, ddof=1)) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sums_accumulate_like_float32(dtype):
    x = torch.rand(3, 5000, generator=torch.Generator().manual_seed(0)).to(dtype)
    ref = x.double().sum(-1)
    got = lazy.tensor(x).sum(-1).torch().double()
    # one rounding to the 8 / 11-bit mantissa of the result
    tol = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10
    assert rel_err(got, ref) <= tol


def test_float_sums_render_float_blocks_into_a_double(kernels):
    lazy.tensor(np.ones((4, 3000), np.float32)).sum(-1).numpy()
    src = render_c.render_c(kernels[-1])
    assert "float acc0_p = 0.0f;" in src and "acc0 += (double)acc0_p;" in src
    assert "r0b += LZ_SUM_BLOCK" in src  # SUM_LANE elements per lane of the compiler's vector width
    narrow = render_c.render_c(kernels[-1], config=render_c.CConfig(simdlen=4))
    assert f"r0b += {4 * render_c.SUM_LANE}" in narrow


def test_double_sums_and_products_keep_one_double_accumulator(kernels):
    lazy.tensor(np.ones((4, 3000), np.float64)).sum(-1).numpy()
    lazy.tensor(np.ones((4, 3000), np.float32)).prod(-1).numpy()
    for k in list(kernels):  # (rendering again appends to `kernels`)
        assert "_p = 0.0f" not in render_c.render_c(k)


def test_parallel_full_sum_splits_blocks_across_threads(kernels):
    x = np.random.default_rng(2).random(1 << 20, dtype=np.float32)
    lazy.tensor(x).sum().numpy()
    src = render_c.render_c(kernels[-1])
    assert "#pragma omp parallel for reduction(+:acc0)" in src


# -- row cache of converted half-precision rows -------------------------------------------------
HALF_ROWS = {
    "layer_norm": lambda x, w, b: lazy.nn.functional.layer_norm(x, (x.shape[-1],), w, b),
    "softmax": lambda x, w, b: x.softmax(-1),
    "rms_norm": lambda x, w, b: x * (x * x).mean(-1, keepdim=True).rsqrt() * w,
    "log_softmax": lambda x, w, b: x.log_softmax(-1),
}


@pytest.mark.parametrize("name", HALF_ROWS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rows_are_converted_once_and_later_passes_read_floats(kernels, monkeypatch, dtype, name):
    g = torch.Generator().manual_seed(4)
    rows = render_c.COLUMN_CACHE_MIN_ROWS + 1
    x, w, b = (torch.randn(shape, generator=g) * 3 + 1 for shape in ((rows, 1001), (1001,), (1001,)))
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    fn = HALF_ROWS[name]
    got = fn(*map(lazy.tensor, (x, w, b))).torch()
    src = render_c.render_c(kernels[-1])
    convert = "f16_to_f32" if dtype == torch.float16 else "bf16_to_f32"
    # the row's first pass converts it and keeps the floats; every later pass reads them
    assert src.count(f"{convert}(b0[") == 1, src
    assert "row0[r0] = " in src and ("row0[r1]" in src or "row0[x1]" in src)
    # the weight and bias: converted once per thread, before it takes rows; the rows read floats
    columns = {"layer_norm": 2, "rms_norm": 1}.get(name, 0)
    for i in range(columns):
        assert src.count(f"{convert}(b{i + 1}[") == 1 and f"col{i}[x1]" in src
    assert f"col{columns}" not in src
    # what the kernel gives when every pass converts the row itself, within one ulp of the dtype
    # here and there. Not bit for bit: gcc vectorizes a loop that reads 16-bit halves with twice
    # the lanes of one that reads the cached floats (32 and 16 with AVX-512, 16 and 8 with AVX2),
    # so a later pass's float sum adds the same values in another order (the exp itself is the
    # same bits at every width: render_c's lz_expf). That can change the sum's last float bit,
    # which moves an output that lies at a
    # rounding boundary of the dtype by one ulp (1 of the 9009 bfloat16 softmax outputs with
    # AVX-512). Fixing the lanes (simdlen) gives the same bits, but a float16 row's first pass
    # then ran on 256-bit vectors: 25% slower over a row in L1, a 2048x2048 float16 layer norm 13%.
    monkeypatch.setattr(render_c, "_CONVERTED", ())
    runtime._programs.clear()
    again = fn(*map(lazy.tensor, (x, w, b))).torch()
    assert "row0[r1]" not in render_c.render_c(kernels[-1]) or name.endswith("softmax")  # (exp is kept)
    ulps = (got.view(torch.int16).int() - again.view(torch.int16).int()).abs()
    assert int(ulps.max()) <= 1 and int((ulps > 0).sum()) <= got.numel() // 1000, ulps.nonzero()
    # and torch's values, computed in float32 and rounded once, within a few of the dtype's ulps
    want = fn(x.float(), w.float(), b.float()) if name == "rms_norm" else {
        "layer_norm": lambda: torch.nn.functional.layer_norm(x.float(), (1001,), w.float(), b.float()),
        "softmax": lambda: x.float().softmax(-1), "log_softmax": lambda: x.float().log_softmax(-1)}[name]()
    tol = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(got.float(), want.to(dtype).float(), rtol=tol, atol=tol)


def test_few_rows_and_float32_columns_keep_their_loads(kernels):
    for rows, dtype in ((render_c.COLUMN_CACHE_MIN_ROWS - 1, torch.float16), (64, torch.float32)):
        x, w = torch.randn(rows, 300).to(dtype), torch.randn(300).to(dtype)
        lx = lazy.tensor(x)
        got = (lx * (lx * lx).mean(-1, keepdim=True).rsqrt() * lazy.tensor(w)).torch()
        ref = (x.float() * (x.float() ** 2).mean(-1, keepdim=True).rsqrt() * w.float()).to(dtype)
        tol = 4 * torch.finfo(dtype).eps
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
        assert "col0" not in render_c.render_c(kernels[-1])


def test_float32_rows_are_read_again_not_cached(kernels):
    x = lazy.tensor(np.ones((4, 3000), np.float32))
    (x - x.mean(-1, keepdim=True)).numpy()
    assert "row0" not in render_c.render_c(kernels[-1])


# -- prefetch of the next row ------------------------------------------------------------------
def softmax_kernel(kernels, shape) -> Kernel:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    got = lazy.tensor(x).softmax(-1).numpy()
    np.testing.assert_allclose(got, torch.softmax(x, -1).numpy(), rtol=1e-5, atol=1e-7)
    return kernels[-1]


def test_prefetch_names_the_next_row_and_stops_at_the_last(kernels):
    src = render_c.render_c(softmax_kernel(kernels, (5, 300)), config=render_c.CConfig(prefetch=True))
    assert "__builtin_prefetch(&b0[((300*x0) + 300) + p]" in src
    assert "if (x0 + 1 < 5)" in src  # never past the last row


def test_prefetch_is_off_for_rows_that_come_from_cache(kernels):
    k = softmax_kernel(kernels, (5, 300))
    assert "__builtin_prefetch" not in render_c.render_c(k)
    assert render_c.search_space(k)["prefetch"] == (None, False, True)


def big_rows_kernel(kernels, fn, width=4096) -> Kernel:
    """The kernel of `fn` over float32 rows that hold PREFETCH_MIN_BYTES between them."""
    rows = render_c.PREFETCH_MIN_BYTES // (4 * width)
    fn(lazy.randn(rows, width).realize()).realize()
    return kernels[-1]


def test_prefetch_shares_go_mostly_to_a_later_pass_that_computes_a_transcendental(kernels):
    k = big_rows_kernel(kernels, lambda x: x.softmax(-1))
    src = render_c.render_c(k)
    # the exp pass (weight 1 + 4) prefetches the first 5/6 of the next row, span by span, into L2;
    # the stores (weight 1: they read exp from the row cache) the last sixth; the max pass nothing
    cost = render_c.PREFETCH_PASS_COST + render_c.PREFETCH_CALL_COST
    assert render_c._prefetch_plan(k, 1, render_c.CConfig())[0] == {"acc1": (0, cost, cost + 1),
                                                                    "stores": (4096 * cost // (cost + 1), 1, cost + 1)}
    assert src.count("__builtin_prefetch(") == 2
    exp_pass = src[src.index("for (int64_t r1b = 0;"):src.index("acc1 += (double)acc1_p;")]
    assert f"r1b += {render_c.PREFETCH_SPAN}" in exp_pass and "expf(" in exp_pass
    assert (f"for (int64_t p = r1b * 5 / 6; p < r1e * 5 / 6; p += 16) "
            f"__builtin_prefetch(&b0[((4096*x0) + 4096) + p], 0, {render_c.PREFETCH_L2})") in exp_pass
    stores = src[src.index("for (int64_t x1b = 0;"):]
    assert "for (int64_t p = 3413 + x1b / 6; p < 3413 + x1e / 6; p += 16)" in stores
    assert "x1b += 1024" in stores  # a sixth of the lines per span: longer spans (_store_span)


def test_norms_prefetch_in_their_first_pass_from_cache(kernels):
    def layer_norm(x):
        return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, correction=0) + 1e-5).sqrt()

    src = render_c.render_c(big_rows_kernel(kernels, layer_norm))
    # the variance pass and the stores: half of the next row each
    var_pass = src[src.index("for (int64_t r1b = 0;"):src.index("acc1 += (double)acc1_p;")]
    stores = src[src.index("for (int64_t x1b = 0;"):]
    assert src.count("__builtin_prefetch(") == 2
    assert "for (int64_t p = r1b / 2; p < r1e / 2; p += 16) __builtin_prefetch(" in var_pass
    assert "for (int64_t p = 2048 + x1b / 2; p < 2048 + x1e / 2; p += 16) __builtin_prefetch(" in stores
    src = render_c.render_c(big_rows_kernel(kernels, lambda x: x * (x * x).mean(-1, keepdim=True).rsqrt()))
    stores = src[src.index("for (int64_t x1b = 0;"):]
    assert src.count("__builtin_prefetch(") == 1 and "__builtin_prefetch(" in stores
    assert f"x1b += {render_c.PREFETCH_SPAN}" in stores


@pytest.mark.parametrize("shape", [(2, 7), (3, 2), (7, 1023), (2, 4097)])
def test_forced_prefetch_keeps_results(kernels, shape):
    k = softmax_kernel(kernels, shape)
    cfg = render_c.CConfig(prefetch=True)
    src = render_c.render_c(k, config=cfg)
    assert "__builtin_prefetch" in src
    assert "prefetch" in render_c.search_space(k)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    out = torch.empty_like(x)
    import ctypes

    from codegen import compile_c
    fn = compile_c.load(src)
    fn.argtypes = [ctypes.c_void_p] * 2
    fn(x.data_ptr(), out.data_ptr())
    np.testing.assert_allclose(out.numpy(), torch.softmax(x, -1).numpy(), rtol=1e-5, atol=1e-7)


def test_prefetch_is_off_for_strided_rows(kernels):
    x = lazy.tensor(np.ones((300, 5), np.float32))
    x.T.softmax(-1).numpy()  # each row of the view is a column in memory
    assert not render_c._prefetch_rows(kernels[-1], kernels[-1].reduces[0], kernels[-1].reduces[0].depth,
                                       render_c.CConfig(prefetch=True))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("shape", [(3, 7), (5, 300), (4, 1000)])
def test_forced_prefetch_in_the_store_pass_keeps_results(kernels, shape, stream):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    ref = ((x - x.mean(-1, keepdim=True)) * 2.0).numpy()
    t = lazy.tensor(x)
    np.testing.assert_allclose(((t - t.mean(-1, keepdim=True)) * 2.0).numpy(), ref, rtol=1e-5, atol=1e-6)
    k = kernels[-1]
    assert [b.output for b in k.buffers] == [False, True]
    assert render_c._prefetch_plan(k, 1, render_c.CConfig(prefetch=True))[0] == {"stores": (0, 1, 1)}
    src = render_c.render_c(k, config=render_c.CConfig(prefetch=True, stream=stream))
    assert "__builtin_prefetch" in src and ("lz_stream(&" in src) == (stream and shape[1] * 4 >= 512)
    from codegen import compile_c
    fn = compile_c.load(src)
    out = torch.empty_like(x)
    call_c(fn, k, [x, out])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


# -- rows as restrict functions ------------------------------------------------------------------
@pytest.mark.parametrize("width, as_function", [(7, True), (2048, True), (render_c.ROW_FN_MAX + 1, False)])
def test_rows_with_a_reduction_become_row_functions_up_to_row_fn_max(kernels, width, as_function):
    k = softmax_kernel(kernels, (max(3, 40_000 // width), width))  # enough work to run in parallel
    assert ("static inline void lazy_kernel_row(" in render_c.render_c(k)) == as_function


# -- random row kernels with every pass feature forced on ------------------------------------------
ROW_FNS = {
    "softmax": lambda t: t.softmax(-1),
    "log_softmax": lambda t: t.log_softmax(-1),
    "logsumexp": lambda t: t.logsumexp(-1, keepdim=True) * t,
    "layer_norm": lambda t: (t - t.mean(-1, keepdim=True)) * (t.var(-1, keepdim=True, correction=0) + 1e-5).rsqrt(),
    "rms_norm": lambda t: t * ((t * t).mean(-1, keepdim=True) + 1e-6).rsqrt(),
    "centred": lambda t: (t - t.amax(-1, keepdim=True)).exp() + t.std(-1, keepdim=True),
    # the first row weighs every row: a column cache when half precision and the rows are many
    "weighted": lambda t: t * ((t * t).mean(-1, keepdim=True) + 1e-6).rsqrt() * t[..., :1, :],
}


@st.composite
def row_programs(draw):
    rows, width = draw(st.integers(1, 9)), draw(st.integers(1, 700))
    view = draw(st.sampled_from(["plain", "transposed", "sliced", "batched"]))
    return draw(st.sampled_from(sorted(ROW_FNS))), rows, width, view, draw(st.sampled_from(["float32", "bfloat16", "float16"]))


@pytest.mark.filterwarnings(r"ignore:std\(\)")  # width 1: degrees of freedom <= 0, nan as in torch
@settings(max_examples=int(os.environ.get("LAZY_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(row_programs())
def test_random_row_kernels_with_prefetch_and_streaming_forced(monkeypatch, prog):
    """The next-row prefetch and streamed stores (thresholds at 0) over odd widths, views whose rows
    are strided or offset, bfloat16 and float16: the same values as torch."""
    check_row_program(monkeypatch, prog)


@pytest.mark.parametrize("view", ["plain", "transposed", "sliced", "batched"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_column_cache_with_prefetch_and_streaming_forced(monkeypatch, kernels, view, dtype):
    check_row_program(monkeypatch, ("weighted", 12, 701, view, dtype))
    assert any("col0[x" in render_c.render_c(k) for k in list(kernels)) == (view != "batched")


def check_row_program(monkeypatch, prog):
    name, rows, width, view, dtype = prog
    monkeypatch.setattr(render_c, "PREFETCH_MIN_BYTES", 0)
    monkeypatch.setattr(render_c, "STREAM_FRESH_MIN_BYTES", 0)
    monkeypatch.setattr(render_c, "STREAM_TRAFFIC_MIN_BYTES", 0)
    runtime._programs.clear()  # (programs compiled under other thresholds)
    g = torch.Generator().manual_seed(rows * 1000 + width)
    base = torch.randn(rows + 1, width + 3, generator=g).to(getattr(torch, dtype))
    x = {"plain": base[:rows, :width].contiguous(), "transposed": base[:rows, :width].t().contiguous().t(),
         "sliced": base[1:, 2:width + 2], "batched": base[:rows, :width].expand(2, rows, width)}[view]
    fn = ROW_FNS[name]
    got = fn(lazy.tensor(x)).torch().float()
    # torch in the same dtype: bfloat16 rounds each op's result, and a layer norm of two close
    # values loses most of its bits to that in (t - mean), in torch as in lazy
    ref = fn(x).float()
    tol = {"bfloat16": 2e-2, "float16": 4e-3}.get(dtype, 2e-5)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=tol, atol=tol)


# -- how threads share rows ----------------------------------------------------------------------
@pytest.mark.parametrize("rows, chunk", [(4096, render_c.GRAB_MAX), (640, 20), (3, 1)])
def test_rows_with_reductions_are_taken_in_chunks(kernels, rows, chunk):
    k = softmax_kernel(kernels, (rows, max(16, 40_000 // rows)))  # enough work to run in parallel
    assert f"schedule(dynamic, {chunk})" in render_c.render_c(k)


def test_long_vectors_are_grabbed_in_chunks_short_ones_split_in_halves(kernels):
    big = render_c.GRABS * render_c.GRAB_ELEMENTS
    for n, grab in ((big, render_c.GRAB_ELEMENTS), (big // 2, 0)):
        x = lazy.randn(n).realize()
        (x.exp() * 2.0).tanh().numpy()  # two transcendentals: plain stores
        src = render_c.render_c(kernels[-1], config=render_c.CConfig(fission=False))  # one vector loop
        assert (f"schedule(dynamic, {grab})" if grab else "schedule(static)") in src
        # split in two loops per block of FISSION_BLOCK elements: the same elements per grab
        src = render_c.render_c(kernels[-1])
        blocks = grab // render_c.FISSION_BLOCK
        assert (f"schedule(dynamic, {blocks})" if grab else "schedule(static)") in src


def test_pointwise_and_column_kernels_keep_static_halves(kernels):
    x = lazy.tensor(np.ones((300, 200), np.float32))
    (x * 2.0).numpy()
    x.sum(0).numpy()
    for k in list(kernels):  # (rendering again appends to `kernels`)
        src = render_c.render_c(k)
        assert "dynamic" not in src and "schedule(static)" in src


def test_per_row_transcendentals_do_not_weigh_in_the_prefetch_shares(kernels):
    # exp and log of each row's sums are computed once per row: the stores that use them weigh as
    # much as the sum of squares, and each prefetches half of the next row
    def fn(x):
        s, q = x.sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True)
        return x * s.exp() * (q + 1.0).log()

    k = big_rows_kernel(kernels, fn)
    assert len([r for r in k.reduces if r.depth == 1]) == 2
    plan = render_c._prefetch_plan(k, 1, render_c.CConfig())
    assert plan is not None and plan[0] == {"acc1": (0, 1, 2), "stores": (2048, 1, 2)}
    # per element, two of them make the stores the compute-bound pass (and keep them unstreamed)
    k = big_rows_kernel(kernels, lambda x: (x - x.sum(-1, keepdim=True)).exp().tanh())
    assert render_c._prefetch_plan(k, 1, render_c.CConfig())[0] == {"stores": (0, 9, 9)}  # 1 + 2 * 4
    assert not render_c._streams(k, render_c.CConfig())
    # and the stores of two exps weigh 1 + 2 * 4 against a plain later pass's 1
    k = big_rows_kernel(kernels, lambda x: (x - x.var(-1, keepdim=True)).exp() + (x * 2).exp())
    shares = render_c._prefetch_plan(k, 1, render_c.CConfig())[0]
    assert {name: share[1:] for name, share in shares.items()} == {"acc1": (1, 10), "stores": (9, 10)}


def test_a_value_recomputed_in_a_later_pass_is_the_same_value(kernels):
    # a row kernel computes 1e30 * x again in softmax's exp pass; contracted into a fused
    # multiply-add there, x * c - max(x * c) was 1.5e23 at the max and the softmax NaN (perf/fuzz.py
    # seed 300 case 2152): kernels compile without contraction, as torch rounds each op
    t = torch.tensor([[-8, -3], [10, 1], [6, 9]])
    x = lazy.tensor(t)
    torch.testing.assert_close(lazy.softmax(1e30 * x, 1).torch(), torch.softmax(1e30 * t, 1))
    torch.testing.assert_close(lazy.log_softmax(3.3 * x, 1).torch(), torch.log_softmax(3.3 * t, 1))
    ks = list(kernels)  # (rendering again adds to `kernels`)
    assert ks and all(render_c.render_c(k).startswith('#pragma GCC optimize("fp-contract=off")') for k in ks)
