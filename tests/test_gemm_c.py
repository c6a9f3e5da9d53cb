"""C GEMM template (codegen/gemm_c.py): numerics against torch, the fused epilogue, the choice
between it and BLAS, and the generated C compiling for narrower x86 targets.

Tolerance (float32): both sides accumulate K products in float32, in different orders (and we
use fused multiply-adds), so results differ by a random walk of K roundings of partial sums
whose size is about sqrt(K) for standard-normal inputs: about u * K with u = 6e-8. We allow
rtol 1e-4 and atol 1e-6 * K (about 16 u K), far below any indexing mistake (an O(1) error).
Small blocking configs (MC=12, KC=16, NC=64) make small shapes cross every block boundary: many
KC panels (partial sums in the output), several NC panels, edge micro-tiles in M and N.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

import lazy
from codegen import compile_c, gemm_c, gemm_c_runtime
from codegen.gemm_c import GemmCConfig
from codegen.gemm_triton import epilogue_buffers
from codegen.kernel_ir import BufferArg, ExternCall, StridedView
from lazy.graph import structure_key
from scheduler import schedule

SMALL = GemmCConfig(MC=12, KC=16, NC=64)
THREADS3 = GemmCConfig(MC=12, KC=16, NC=64, threads=3)  # small problems alone would run on one thread


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lazy-cache"))
    monkeypatch.delenv("LAZY_GEMM", raising=False)


def close(out, ref, k: int, dtype=torch.float32):
    if dtype is torch.float64:
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12 * max(k, 1))
    else:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6 * max(k, 1))


def operand(shape, strides, offset, dtype, seed):
    """(flat buffer, view, torch view): a strided view into a buffer with room for the offset."""
    numel = offset + sum((s - 1) * st for s, st in zip(shape, strides)) + 1
    buf = torch.randn(max(numel, 1), generator=torch.Generator().manual_seed(seed)).to(dtype)
    return buf, StridedView(tuple(shape), tuple(strides), offset), torch.as_strided(buf, shape, strides, offset)


def matrix(batch, rows, cols, dtype=torch.float32, seed=0, *, transposed=False, offset=0, broadcast=()):
    """[*batch, rows, cols], row-major (or column-major inside), batch dims in `broadcast` stride 0."""
    inner = (1, rows) if transposed else (cols, 1)
    strides, acc = [], rows * cols
    for i in range(len(batch) - 1, -1, -1):
        strides.append(0 if i in broadcast else acc)
        acc *= 1 if i in broadcast else batch[i]
    return operand((*batch, rows, cols), (*reversed(strides), *inner), offset, dtype, seed)


def run_plain(a, b, dtype=torch.float32, cfg=None):
    """out = a @ b through a hand-made ExternCall (no epilogue); returns (out, reference)."""
    (abuf, av, at), (bbuf, bv, bt) = a, b
    shape = (*at.shape[:-2], at.shape[-2], bt.shape[-1])
    out = torch.full(shape, float("nan"), dtype=dtype)  # every element must be written
    name = str(dtype).split(".")[1]
    strides = tuple(out.stride())
    call = ExternCall("k0_matmul", "matmul",
                      (BufferArg("b0", name, out.numel(), True), BufferArg("b1", name, abuf.numel(), False),
                       BufferArg("b2", name, bbuf.numel(), False)),
                      (StridedView(shape, strides, 0), av, bv))
    fn = gemm_c.load(call, cfg)
    fn(out.data_ptr(), abuf.data_ptr(), bbuf.data_ptr())
    return out, torch.matmul(at, bt)


def scheduled_call(y):
    """The (one) GEMM call of `y`'s schedule and the tensors of its input slots."""
    _, bufs, _ = structure_key([y._node])
    sched = schedule([y._node], bufs)
    (call,) = [k for k in sched.kernels if isinstance(k, ExternCall)]
    return call, [b.data for b in bufs]


def run_scheduled(y, cfg=None):
    """Run `y`'s GEMM (+ fused epilogue) with the C template and config `cfg`."""
    call, inputs = scheduled_call(y)
    out = torch.full((call.buffers[0].numel,), float("nan"), dtype=torch.float32)

    def tensor(slot):
        return inputs[slot] if slot < len(inputs) else out

    slots = list(call.meta["slots"])
    if call.epilogue is not None:
        eslots = call.epilogue.meta["slots"]
        slots += [eslots[i] for i in epilogue_buffers(call)]
    fn = gemm_c.load(call, cfg)
    fn(*[tensor(s).data_ptr() for s in slots])
    return out.view(call.views[0].shape), call


def kernels_of(y):
    with lazy.profile() as p:
        y.realize()
    return p.kernels


# -- plain GEMM numerics -------------------------------------------------------------------------

@pytest.mark.parametrize("m,k,n,cfg", [(1, 1, 1, None), (1, 7, 33, THREADS3), (7, 1, 5, THREADS3),
                                       (33, 65, 130, THREADS3), (33, 65, 130, None), (65, 130, 7, THREADS3),
                                       (13, 17, 65, None), (130, 600, 70, None)])
def test_odd_shapes_match_torch(m, k, n, cfg):
    # THREADS3: blocks of 12 x 16 x 64 on 3 threads, so every edge and block boundary is crossed;
    # None: the default blocking (130 x 600: two KC panels of 512 and a row of edge tiles)
    out, ref = run_plain(matrix((), m, k, seed=1), matrix((), k, n, seed=2), cfg=cfg)
    close(out, ref, k)


@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_transposed_operands_and_offsets(ta, tb):
    a = matrix((), 33, 65, seed=3, transposed=ta, offset=5)
    b = matrix((), 65, 70, seed=4, transposed=tb, offset=3)
    for cfg in (THREADS3, None):
        out, ref = run_plain(a, b, cfg=cfg)
        close(out, ref, 65)


def test_few_rows_split_columns_across_threads():
    # 7 rows for three threads: each one takes a third of the columns
    out, ref = run_plain(matrix((), 7, 40, seed=1), matrix((), 40, 300, seed=2), cfg=THREADS3)
    close(out, ref, 40)


def test_general_strides():
    # neither operand has a unit stride (every other row and column of a bigger matrix)
    abuf, _, afull = matrix((), 40, 60, seed=5)
    bbuf, _, bfull = matrix((), 60, 50, seed=6)
    a = (abuf, StridedView((20, 30), (120, 2), 61), afull[1::2, 1::2])
    b = (bbuf, StridedView((30, 25), (100, 2), 0), bfull[::2, ::2])
    out, ref = run_plain(a, b, cfg=SMALL)
    close(out, ref, 30)


def test_batched_and_broadcast_batch():
    # batch (2, 3): a broadcasts over dim 1, b over dim 0 (stride 0), b transposed, offsets.
    # 3 threads on 6 GEMMs: each thread runs whole GEMMs; 4 threads: 12 units of half a GEMM
    a = matrix((2, 3), 7, 33, seed=5, broadcast=(1,), offset=2)
    b = matrix((2, 3), 33, 65, seed=6, transposed=True, broadcast=(0,))
    assert a[1].strides[1] == 0 and b[1].strides[0] == 0
    for cfg in (THREADS3, GemmCConfig(MC=12, KC=16, NC=64, threads=4), None):
        out, ref = run_plain(a, b, cfg=cfg)
        close(out, ref, 33)


def test_float64():
    a, b = matrix((2,), 13, 40, torch.float64, seed=7), matrix((2,), 40, 21, torch.float64, seed=8)
    for cfg in (SMALL, None):
        out, ref = run_plain(a, b, torch.float64, cfg=cfg)
        close(out, ref, 40, torch.float64)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_precision_sums_in_float32(dtype, rtol):
    # converted while packing, summed in float32 over all of K (600: two KC panels of the
    # default blocking), rounded once: within an ulp of torch's float32 product rounded
    a, b = matrix((2,), 33, 600, dtype, seed=1), matrix((), 600, 70, dtype, seed=2, transposed=True)
    for cfg in (THREADS3, None):
        out, _ = run_plain(a, b, dtype, cfg=cfg)
        ref = (a[2].float() @ b[2].float()).to(dtype)
        torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_epilogue(monkeypatch, dtype, tol):
    monkeypatch.setenv("LAZY_GEMM", "c")
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g).to(dtype) for s in ((37, 45), (45, 70), (70,)))
    y = (lazy.tensor(x) @ lazy.tensor(w) + lazy.tensor(b)).gelu()
    assert [k.backend for k in kernels_of(y)] == ["c"]
    torch.testing.assert_close(y.torch(), torch.nn.functional.gelu(x @ w + b), rtol=tol, atol=tol)


def test_empty_reduction_is_zero():
    out, _ = run_plain(matrix((), 5, 0, seed=1), matrix((), 0, 7, seed=2))
    assert torch.equal(out, torch.zeros(5, 7))


# -- fused epilogues -----------------------------------------------------------------------------

def rand(*shape, seed=0):
    return lazy.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def epilogue_cases():
    x, w, b = rand(37, 45, seed=1), rand(45, 70, seed=2), rand(70, seed=3)
    r, wt = rand(37, 70, seed=4), rand(70, 45, seed=5)
    xb, wb = rand(3, 37, 45, seed=6), rand(3, 45, 70, seed=7)
    t = {k: v.torch() for k, v in {"x": x, "w": w, "b": b, "r": r, "wt": wt, "xb": xb, "wb": wb}.items()}
    gelu = torch.nn.functional.gelu
    return {
        "bias+gelu": ((x @ w + b).gelu(), gelu(t["x"] @ t["w"] + t["b"])),
        "residual": (x @ w + r, t["x"] @ t["w"] + t["r"]),
        "bias+relu+residual*scale": (((x @ wt.T + b).relu() + r) * 0.5, ((t["x"] @ t["wt"].T + t["b"]).relu() + t["r"]) * 0.5),
        "batched+bias+tanh": ((xb @ wb + b).tanh(), (t["xb"] @ t["wb"] + t["b"]).tanh()),
        "sliced": ((x[1:, 2:] @ w[2:, 3:] + b[3:]).gelu(), gelu(t["x"][1:, 2:] @ t["w"][2:, 3:] + t["b"][3:])),
        # one weight for the whole batch: folded into one GEMM of 3 x 37 rows (see the next test)
        "shared weight+residual": ((xb @ w + b).gelu() + xb @ w, gelu(t["xb"] @ t["w"] + t["b"]) + t["xb"] @ t["w"]),
        "shared weight, 2 batch dims": ((xb.reshape(3, 1, 37, 45).expand(3, 2, 37, 45) @ w).tanh(),
                                        (t["xb"].reshape(3, 1, 37, 45).expand(3, 2, 37, 45) @ t["w"]).tanh()),
    }


def test_a_batch_sharing_one_weight_is_one_gemm_over_all_rows():
    xb, w, b, r = rand(3, 37, 45, seed=6), rand(45, 70, seed=2), rand(70, seed=3), rand(3, 37, 70, seed=4)
    y = (xb @ w + b).relu() * r  # the epilogue finds its batch index from the folded row
    out, call = run_scheduled(y, THREADS3)
    p = gemm_c.problem_of(call)
    assert (p.batch, p.M, p.rows_per_batch) == ((), 3 * 37, 37) and call.epilogue is not None
    close(out, ((xb.torch() @ w.torch() + b.torch()).relu()) * r.torch(), 45)
    # a broadcast A (stride 0 over the batch) cannot fold: its rows do not continue
    call, _ = scheduled_call(rand(1, 37, 45, seed=1).expand(3, 37, 45) @ rand(3, 45, 70, seed=2))
    assert gemm_c.problem_of(call).batch == (3,)


@pytest.mark.parametrize("case", list(epilogue_cases()))
def test_fused_epilogue_matches_torch(case):
    y, ref = epilogue_cases()[case]
    for cfg in (THREADS3, None):  # K=45 over KC=16: the epilogue adds partial sums from the output
        out, call = run_scheduled(y, cfg)
        assert call.epilogue is not None
        close(out, ref, 45)


def test_epilogue_vector_matrix():
    # M == 1 and N == 1: the epilogue's loops drop size-1 dims
    v, w, b = rand(1, 45, seed=1), rand(45, 70, seed=2), rand(70, seed=3)
    c = rand(45, 1, seed=4)
    for y, ref in [((v @ w + b).relu(), (v.torch() @ w.torch() + b.torch()).relu()),
                   ((w.T @ c) * 2.0, (w.torch().T @ c.torch()) * 2.0)]:
        out, _ = run_scheduled(y, SMALL)
        close(out, ref, 45)


# -- runtime: one launch, BLAS or C --------------------------------------------------------------

def test_lazy_gemm_c_is_one_kernel_and_blas_two(monkeypatch, capsys):
    x, w, b = rand(40, 64, seed=1), rand(64, 48, seed=2), rand(48, seed=3)
    ref = torch.nn.functional.gelu(x.torch() @ w.torch() + b.torch())
    for mode, backends, says in (("c", ["c"], "C GEMM template"), ("blas", ["extern", "c"], "BLAS")):
        monkeypatch.setenv("LAZY_GEMM", mode)
        y = (x @ w + b).gelu()
        with lazy.debug(2):
            ks = kernels_of(y)
        assert [k.backend for k in ks] == backends, mode
        assert f"matmul_mul: {says}" in capsys.readouterr().err
        close(y.torch(), ref, 64)
    assert ks[0].bytes_read == (40 * 64 + 64 * 48) * 4 and ks[1].bytes_read == (40 * 48 + 48) * 4


def test_lazy_gemm_c_end_to_end_shapes(monkeypatch):
    monkeypatch.setenv("LAZY_GEMM", "c")
    a, b = rand(2, 1, 5, 7, seed=1), rand(3, 7, 4, seed=2)
    torch.testing.assert_close((a @ b).torch(), a.torch() @ b.torch(), rtol=1e-5, atol=1e-5)
    v = rand(7, seed=3)
    torch.testing.assert_close((v @ b).torch(), v.torch() @ b.torch(), rtol=1e-5, atol=1e-5)


def test_lazy_gemm_int_stays_on_blas(monkeypatch):
    monkeypatch.setenv("LAZY_GEMM", "c")
    a = lazy.tensor(torch.arange(12).reshape(3, 4))
    y = a @ a.T
    assert [k.backend for k in kernels_of(y)] == ["extern"]
    assert torch.equal(y.torch(), torch.arange(12).reshape(3, 4) @ torch.arange(12).reshape(3, 4).T)


def test_choose_impl(monkeypatch):
    def call(m, k, n, batch=(), epilogue=True):
        x, w = rand(*batch, m, k, seed=1), rand(k, n, seed=2)
        y = (x @ w + rand(n, seed=3)).relu() if epilogue else x @ w
        return scheduled_call(y)[0]

    small, square = call(64, 64, 64), call(512, 512, 512)
    assert gemm_c.choose_impl(small) == "c"  # one fused launch beats BLAS call + epilogue kernel
    assert gemm_c.choose_impl(square) == "c" and gemm_c.choose_impl(call(4, 1024, 1024)) == "c"
    assert gemm_c.choose_impl(call(1, 1024, 1024)) == "blas"  # matrix-vector: BLAS streams the matrix
    assert gemm_c.choose_impl(call(1024, 1024, 1, epilogue=False)) == "blas"
    assert gemm_c.choose_impl(call(1, 64, 64)) == "c"  # tiny: launch cost dominates

    def call16(n, dtype):
        x = lazy.tensor(torch.ones(n, n, dtype=dtype))
        return scheduled_call(x @ x)[0]

    assert gemm_c.choose_impl(call16(512, torch.float16)) == "c"  # torch's float16 CPU matmul is slow
    assert gemm_c.choose_impl(call16(512, torch.bfloat16)) == "blas"  # oneDNN's bf16 dot products
    assert gemm_c.choose_impl(call16(64, torch.bfloat16)) == "c"
    monkeypatch.setenv("LAZY_GEMM", "blas")
    assert gemm_c.choose_impl(small) == "blas"
    monkeypatch.setenv("LAZY_GEMM", "c")
    assert gemm_c.choose_impl(square) == "c"
    monkeypatch.setenv("LAZY_GEMM", "fastest")
    with pytest.raises(ValueError, match="LAZY_GEMM"):
        gemm_c.choose_impl(small)


# -- compiling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("march", ["x86-64-v3", "x86-64"])  # AVX2 (6x16 tiles) and SSE2 (4x8) branches
def test_fallback_targets_compile_and_match(march):
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 targets")
    x, w, b = rand(37, 45, seed=1), rand(45, 70, seed=2), rand(70, seed=3)
    call, inputs = scheduled_call((x @ w + b).gelu())
    src = gemm_c.render_gemm_c(call, SMALL)
    flags = tuple(f"-march={march}" if f == "-march=native" else f for f in compile_c.BASE_FLAGS)
    gemm_c_runtime.ensure_runtime()  # the packing workspace every GEMM kernel links against
    fn = compile_c.load(src, flags=flags)
    fn.argtypes, fn.restype = [ctypes.c_void_p] * 4, ctypes.c_int
    out = torch.full((37, 70), float("nan"))
    slots = list(call.meta["slots"][1:]) + [call.epilogue.meta["slots"][i] for i in epilogue_buffers(call)]
    assert fn(out.data_ptr(), *[inputs[s].data_ptr() for s in slots]) == 0
    close(out, torch.nn.functional.gelu(x.torch() @ w.torch() + b.torch()), 45)


def test_tuner_searches_the_c_gemm_blocking(monkeypatch, tmp_path):
    from codegen import tune
    from lazy import runtime

    monkeypatch.setenv("LAZY_TUNE_DB", str(tmp_path / "tuning.sqlite"))
    tune.forget()
    x, w, b = rand(37, 300, seed=1), rand(300, 70, seed=2), rand(70, seed=3)
    call, inputs = scheduled_call((x @ w + b).gelu())
    assert tune.kind_of(call, "c") == "cgemm"
    space, d = gemm_c.search_space(call), gemm_c.choose_config(call)
    assert all(getattr(d, f) in v for f, v in space.items()) and space["MC"] == (24, d.MC)  # 37 rows
    slots = list(call.meta["slots"][1:]) + [call.epilogue.meta["slots"][i] for i in epilogue_buffers(call)]
    tensors = [torch.empty(37 * 70)] + [inputs[s] for s in slots]
    try:
        # a synthetic cost with its optimum at KC=128, MR=6: every candidate still runs and must
        # match the default's output
        res = tune.tune_kernel(call, "c", tensors, bench=lambda _k, cfg: 1 + abs(cfg.KC - 128) / 128 + (cfg.MR != 6),
                               max_configs=4, store=False)
        assert res.kind == "cgemm" and res.rejected == [] and res.best.KC < d.KC
        tune.remember(call, "cgemm", res.best)
        (ln,) = runtime._compile(call, "c")  # the runtime builds the kernel with the tuned blocking
        assert ln.config == res.best and f"KC={res.best.KC}" in ln.source
    finally:
        tune.forget()


def test_search_space_is_declared():
    assert len(gemm_c.CONFIGS) >= 8 and all(gemm_c.valid_config(c) for c in gemm_c.CONFIGS)
    assert not gemm_c.valid_config(GemmCConfig(MR=16, NV=2))  # 32 accumulators leave no room for B
