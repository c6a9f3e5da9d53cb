"""Triton GEMM template (codegen/gemm_triton.py) for ExternCall(op="matmul").

Numerics run under TRITON_INTERPRET=1 on CPU tensors (~1 ms per program, so blocks are big and
grids tiny); the GPU side is proven by ahead-of-time compiles for sm_90 (wgmma in the PTX, no
spills, shared memory within the H100's 232448 bytes per block).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import lazy
from codegen import compile_triton, extern, gemm_triton
from codegen.gemm_triton import GemmConfig, GemmConfigError
from codegen.kernel_ir import BufferArg, ExternCall, StridedView
from lazy import runtime
from lazy.graph import structure_key
from scheduler import schedule

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}


@pytest.fixture(autouse=True)
def interpreter(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when a generated module is imported
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lazy-cache"))
    yield


# -- helpers -------------------------------------------------------------------------------------

class Operand:
    """A buffer (flat storage, with room for an offset) and a strided view of it."""

    def __init__(self, shape, strides, offset, dtype, seed):
        numel = offset + sum((s - 1) * st for s, st in zip(shape, strides)) + 1
        g = torch.Generator().manual_seed(seed)
        self.buf = torch.randn(max(numel, 1), generator=g).to(dtype)
        self.view = StridedView(tuple(shape), tuple(strides), offset)
        self.t = torch.as_strided(self.buf, shape, strides, offset)


def contiguous_strides(shape):
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc if s > 1 else 0)
        acc *= s
    return tuple(reversed(out))


def matrix(batch, rows, cols, dtype, seed, *, transposed=False, offset=0, broadcast=()):
    """[*batch, rows, cols]: row-major or column-major (transposed) inside, batch dims outside;
    dims listed in `broadcast` have stride 0."""
    inner = (1, rows) if transposed else (cols, 1)
    strides, acc = [], rows * cols
    for i in range(len(batch) - 1, -1, -1):
        strides.append(0 if i in broadcast else acc)
        acc *= 1 if i in broadcast else batch[i]
    shape = (*batch, rows, cols)
    return Operand(shape, (*reversed(strides), *inner), offset, dtype, seed)


def gemm_call(a: Operand, b: Operand, dtype) -> tuple[ExternCall, torch.Tensor]:
    shape = (*a.view.shape[:-2], a.view.shape[-2], b.view.shape[-1])
    out = torch.empty(shape, dtype=dtype)
    name = NAME[dtype]
    bufs = (BufferArg("b0", name, out.numel(), True), BufferArg("b1", name, a.buf.numel(), False),
            BufferArg("b2", name, b.buf.numel(), False))
    views = (StridedView(shape, contiguous_strides(shape), 0), a.view, b.view)
    return ExternCall("k0_matmul", "matmul", bufs, views), out


def run_gemm(a: Operand, b: Operand, dtype, cfg: GemmConfig | None = None):
    call, out = gemm_call(a, b, dtype)
    fn = gemm_triton.load(call, cfg)
    fn(out, a.buf, b.buf)
    return out, fn


def check(out, a: Operand, b: Operand, dtype):
    ref = torch.matmul(a.t.float(), b.t.float()).to(dtype)  # fp32 accumulation, like the kernel
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    if dtype is torch.float32:
        torch.testing.assert_close(out, torch.matmul(a.t, b.t), rtol=1e-4, atol=1e-4)


# -- numerics ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 65), (65, 7, 33), (33, 65, 7), (1, 65, 33), (64, 64, 64)])
def test_shapes_match_torch(dtype, m, n, k):
    a = matrix((), m, k, dtype, seed=1)
    b = matrix((), k, n, dtype, seed=2)
    out, _ = run_gemm(a, b, dtype)
    check(out, a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_transposed_operands_via_strides(dtype, ta, tb):
    a = matrix((), 33, 65, dtype, seed=3, transposed=ta, offset=5)
    b = matrix((), 65, 7, dtype, seed=4, transposed=tb, offset=3)
    out, _ = run_gemm(a, b, dtype)
    check(out, a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_and_broadcast_batch(dtype):
    # batch (2, 3): a broadcasts over dim 1, b over dim 0 (stride 0), b transposed, offsets
    a = matrix((2, 3), 7, 33, dtype, seed=5, broadcast=(1,), offset=2)
    b = matrix((2, 3), 33, 65, dtype, seed=6, transposed=True, broadcast=(0,))
    assert a.view.strides[1] == 0 and b.view.strides[0] == 0
    out, fn = run_gemm(a, b, dtype)
    check(out, a, b, dtype)
    mod, cfg = compile_triton.import_module(fn.path), fn.config
    tiles = -(-7 // cfg.BLOCK_M) * -(-65 // cfg.BLOCK_N)
    assert mod.GRID == (6 * tiles,)  # batch entries x tiles, all on grid axis 0


def test_batch_dims_merge_when_contiguous():
    a = matrix((2, 3, 4), 16, 16, torch.float32, seed=1)
    b = matrix((2, 3, 4), 16, 16, torch.float32, seed=2)
    call, _ = gemm_call(a, b, torch.float32)
    assert gemm_triton.problem_of(call).batch == (24,)
    b2 = matrix((2, 3, 4), 16, 16, torch.float32, seed=2, broadcast=(1,))
    call, _ = gemm_call(a, b2, torch.float32)
    assert gemm_triton.problem_of(call).batch == (2, 3, 4)


def test_multi_tile_grouped_ordering_covers_every_tile():
    # 100 x 90 with 32 x 32 tiles: 4 x 3 tiles, GROUP_M=3 leaves a partial last group; K loops 3 times
    a = matrix((), 100, 80, torch.float32, seed=7, transposed=True)
    b = matrix((), 80, 90, torch.float32, seed=8)
    cfg = GemmConfig(32, 32, 32, GROUP_M=3, num_warps=4, num_stages=2)
    out, fn = run_gemm(a, b, torch.float32, cfg)
    check(out, a, b, torch.float32)
    assert compile_triton.import_module(fn.path).GRID == (12,)


def test_tf32_config_and_float64():
    a, b = matrix((), 33, 65, torch.float32, seed=1), matrix((), 65, 17, torch.float32, seed=2)
    out, fn = run_gemm(a, b, torch.float32, GemmConfig(64, 32, 32, input_precision="tf32"))
    assert 'input_precision="tf32"' in fn.path.read_text()
    check(out, a, b, torch.float32)  # the interpreter's dot is exact fp32; a GPU rounds to tf32
    a, b = matrix((), 33, 65, torch.float64, seed=1), matrix((), 65, 17, torch.float64, seed=2)
    out, _ = run_gemm(a, b, torch.float64)
    torch.testing.assert_close(out, a.t @ b.t, rtol=1e-10, atol=1e-10)


def test_bf16_widens_only_under_the_interpreter():
    a, b = matrix((), 16, 16, torch.bfloat16, seed=1), matrix((), 16, 16, torch.bfloat16, seed=2)
    call, _ = gemm_call(a, b, torch.bfloat16)
    src = gemm_triton.render(call)
    assert "if _INTERPRET:" in src and "a = _lz_bf16_f32(a)" in src  # exact, subnormals too
    a16, b16 = matrix((), 16, 16, torch.float16, seed=1), matrix((), 16, 16, torch.float16, seed=2)
    assert "_lz_bf16_f32(a)" not in gemm_triton.render(gemm_call(a16, b16, torch.float16)[0])


def test_int64_indices_when_addresses_pass_int32():
    # views only (nothing is launched): a's batch stride puts its last matrix past 2**31 elements
    views = (StridedView((3, 16, 16), (256, 16, 1), 0), StridedView((3, 16, 16), (2**30, 16, 1), 0),
             StridedView((3, 16, 16), (0, 16, 1), 0))
    bufs = (BufferArg("b0", "float32", 768, True), BufferArg("b1", "float32", 2**31 + 256, False),
            BufferArg("b2", "float32", 256, False))
    assert "pid = tl.program_id(0).to(tl.int64)" in gemm_triton.render(ExternCall("k0_matmul", "matmul", bufs, views))
    small = (views[0], StridedView((3, 16, 16), (256, 16, 1), 0), views[2])
    assert ".to(tl.int64)" not in gemm_triton.render(ExternCall("k0_matmul", "matmul", bufs, small))


# -- configs -------------------------------------------------------------------------------------

def _square(n, dtype="float16", **kw):
    a = StridedView((n, n), (n, 1), 0)
    bufs = tuple(BufferArg(f"b{i}", dtype, n * n, i == 0) for i in range(3))
    return ExternCall("k0_matmul", "matmul", bufs, (a, a, a))


def test_default_configs_by_shape():
    big = gemm_triton.choose_config(_square(4096))
    assert (big.BLOCK_M, big.BLOCK_N, big.BLOCK_K, big.num_warps, big.num_stages) == (128, 256, 64, 8, 3)
    f32 = gemm_triton.choose_config(_square(4096, "float32"))
    assert (f32.BLOCK_M, f32.BLOCK_N, f32.BLOCK_K, f32.input_precision) == (128, 128, 32, "ieee")
    small = gemm_triton.choose_config(_square(7))
    assert (small.BLOCK_M, small.BLOCK_N, small.BLOCK_K) == (16, 16, 16)  # clamped to the problem
    mid = gemm_triton.choose_config(_square(1024))  # 4 x 4 big tiles would leave SMs idle
    assert mid.BLOCK_M * mid.BLOCK_N < 128 * 256 and (1024 // mid.BLOCK_M) * (1024 // mid.BLOCK_N) >= 64
    for dtype in ("float16", "bfloat16", "float32"):
        cands = gemm_triton.candidate_configs(_square(4096, dtype))
        assert len(cands) >= 8
        for c in cands:
            gemm_triton.check_config(c, dtype, "sm_90")
    assert {c.input_precision for c in gemm_triton.candidate_configs(_square(4096, "float32"))} == {"ieee", "tf32"}


def test_config_that_does_not_fit_shared_memory_is_rejected():
    cfg = GemmConfig(256, 256, 128, num_warps=8, num_stages=4)
    with pytest.raises(GemmConfigError, match=r"needs 524288 bytes of shared memory .* 232448 bytes per block"):
        gemm_triton.check_config(cfg, "float16", "sm_90")
    a, b = matrix((), 16, 16, torch.float16, seed=1), matrix((), 16, 16, torch.float16, seed=2)
    with pytest.raises(GemmConfigError, match="use smaller blocks or fewer stages"):
        run_gemm(a, b, torch.float16, cfg)
    with pytest.raises(GemmConfigError, match="power of two"):
        gemm_triton.check_config(GemmConfig(48, 64, 32), "float16")
    gemm_triton.check_config(GemmConfig(128, 256, 64, num_warps=8, num_stages=3), "float16", "sm_90")
    with pytest.raises(GemmConfigError):  # the same tiles in float32 need twice the bytes
        gemm_triton.check_config(GemmConfig(128, 256, 64, num_warps=8, num_stages=3), "float32", "sm_90")


# -- end to end through the Tensor API -----------------------------------------------------------

@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    # these tests are about the template: a program seen at several sizes (parametrized shapes)
    # would become one for all sizes, whose GEMM runs on BLAS (lazy/runtime.py `_compile`)
    monkeypatch.setattr(runtime, "DYNAMIC", False)
    monkeypatch.setattr(runtime, "_families", OrderedDict())

    def no_blas(*a, **k):
        raise AssertionError("codegen/extern.py ran a float GEMM under LAZY_BACKEND=triton")

    monkeypatch.setattr(extern, "run", no_blas)
    yield


def rand(*shape, seed=0, dtype=np.float32):
    return lazy.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def test_linear_relu_end_to_end(triton_backend):
    x, w, b = rand(33, 65, seed=1), rand(17, 65, seed=2), rand(17, seed=3)
    y = (x @ w.T + b).relu()
    with lazy.profile() as p:
        got = y.torch()
    assert [k.backend for k in p.kernels] == ["extern"]  # bias + relu run on the GEMM's tile: one kernel
    ref = torch.relu(x.torch() @ w.torch().T + b.torch())
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


# -- epilogue fusion: the elementwise consumer of a GEMM runs on its accumulator tile ---------------

def _fused(fn, *ts, kernels=1):
    with lazy.profile() as p:
        got = fn(*ts).torch()
    assert len(p.kernels) == kernels, [k.name for k in p.kernels]
    return got


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 33, 65), (64, 64, 64), (65, 17, 3)])
def test_gelu_linear_is_one_kernel(triton_backend, m, k, n):
    x, w, b = rand(m, k, seed=1), rand(k, n, seed=2), rand(n, seed=3)
    got = _fused(lambda x, w, b: (x @ w + b).gelu(), x, w, b)
    ref = torch.nn.functional.gelu(x.torch() @ w.torch() + b.torch())
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_epilogue_reads_a_residual_and_a_transposed_weight(triton_backend):
    x, w, r = rand(3, 9, 20, seed=1), rand(30, 20, seed=2), rand(3, 9, 30, seed=3)
    got = _fused(lambda x, w, r: ((x @ w.T) * 0.5 + r).silu(), x, w, r)
    ref = torch.nn.functional.silu((x.torch() @ w.torch().T) * 0.5 + r.torch())
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_epilogue_with_broadcast_batch_dims(triton_backend):
    # out [2, 3, 7, 5]: the epilogue's batch indices come from the flat batch id
    x, w, s = rand(2, 1, 7, 6, seed=1), rand(3, 6, 5, seed=2), rand(2, 3, 1, 1, seed=3)
    got = _fused(lambda x, w, s: (x @ w) * s - 1.0, x, w, s)
    torch.testing.assert_close(got, (x.torch() @ w.torch()) * s.torch() - 1.0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_half_precision_epilogue_rounds_the_gemm_result_first(triton_backend, dtype, tol):
    x = lazy.tensor(torch.randn(33, 40, generator=torch.Generator().manual_seed(1)).to(dtype))
    w = lazy.tensor(torch.randn(40, 17, generator=torch.Generator().manual_seed(2)).to(dtype))
    b = lazy.tensor(torch.randn(17, generator=torch.Generator().manual_seed(3)).to(dtype))
    got = _fused(lambda x, w, b: (x @ w + b).relu(), x, w, b)
    assert got.dtype == dtype
    ref = torch.relu((x.torch().float() @ w.torch().float()).to(dtype) + b.torch())
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_gemm_result_read_elsewhere_is_stored(triton_backend):
    x, w = rand(8, 16, seed=1), rand(16, 8, seed=2)
    xt, wt = x.torch(), w.torch()
    y = x @ w
    got = _fused(lambda y: y.relu() + y.T, y, kernels=2)  # the transposed read needs other tiles
    torch.testing.assert_close(got, (xt @ wt).relu() + (xt @ wt).T)
    z = x @ w
    with lazy.profile() as p:
        e, s = lazy.realize(z.exp(), z.sum(0))  # two readers in one schedule: z is stored once
    assert len(p.kernels) == 3
    torch.testing.assert_close(e.torch(), (xt @ wt).exp())
    torch.testing.assert_close(s.torch(), (xt @ wt).sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_half_precision_end_to_end(triton_backend, dtype, tol):
    x = lazy.tensor(torch.randn(2, 1, 7, 33, generator=torch.Generator().manual_seed(1)).to(dtype))
    w = lazy.tensor(torch.randn(3, 33, 17, generator=torch.Generator().manual_seed(2)).to(dtype))
    y = x @ w  # batch broadcast (2, 1) x (3,) -> (2, 3)
    got = y.torch()
    assert got.dtype == dtype and got.shape == (2, 3, 7, 17)
    ref = torch.matmul(x.torch().float(), w.torch().float()).to(dtype)
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_int_matmul_falls_back_to_extern(monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    calls = []
    real = extern.run
    monkeypatch.setattr(extern, "run", lambda call, ts, sizes=(): (calls.append(call.op), real(call, ts, sizes)))
    a, b = torch.randint(-3, 4, (9, 13)), torch.randint(-3, 4, (13, 6))
    out = (lazy.tensor(a) @ lazy.tensor(b)).torch()
    assert calls == ["matmul"] and torch.equal(out, a @ b)


_IMPORTED_FIRST = """
import json, torch
import triton  # before lazy's first Triton compile (torch imports it on its own): Triton's @jit
import lazy    # standard library is then compiled-mode, so the kernel must not call it

out = {}
for dt in (torch.float32, torch.bfloat16):
    a, b = torch.randn(7, 33).to(dt), torch.randn(33, 5).to(dt)
    got = (lazy.tensor(a) @ lazy.tensor(b)).torch()
    out[str(dt)] = (got.float() - (a.float() @ b.float()).to(dt).float()).abs().max().item()
print(json.dumps(out))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton interpreter is used on CPU only")
def test_gemm_runs_when_triton_was_imported_before_interpret_was_set(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(LAZY_BACKEND="triton", LAZY_CACHE_DIR=str(tmp_path), PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", _IMPORTED_FIRST], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errs["torch.float32"] < 1e-4 and errs["torch.bfloat16"] < 0.1, errs


# -- ahead-of-time compile for sm_90 ------------------------------------------------------------

def _nn(n, dtype, b_transposed=False):
    a = StridedView((n, n), (n, 1), 0)
    b = StridedView((n, n), (1, n) if b_transposed else (n, 1), 0)
    bufs = tuple(BufferArg(f"b{i}", dtype, n * n, i == 0) for i in range(3))
    return ExternCall("k0_matmul", "matmul", bufs, (a, a, b))


def test_fp16_bf16_gemms_compile_for_sm90_with_wgmma_and_no_spills():
    calls = [_nn(4096, "float16"), _nn(4096, "bfloat16", b_transposed=True), _nn(256, "float16")]
    cfgs = [None, None, GemmConfig(64, 64, 64, num_warps=4, num_stages=4)]
    results = gemm_triton.aot_compile_many(calls, "sm_90", cfgs)  # one subprocess, TRITON_INTERPRET unset
    for call, cfg, r in zip(calls, cfgs, results):
        dtype = call.buffers[0].dtype
        want = cfg or gemm_triton.choose_config(call)
        assert r["config"] == {**want.__dict__}
        assert r["wgmma"] and "wgmma.mma_async" in r["ptx"]
        assert (".bf16" if dtype == "bfloat16" else ".f16") in r["ptx"]
        assert r["spills"] == 0 and r["local"] == 0, r["resource_usage"]
        assert 0 < r["shared"] <= 232448 and r["shared"] <= gemm_triton.shared_bytes(want, dtype)
        assert r["registers"] <= 255
    assert results[0]["config"]["BLOCK_M"] == 128 and results[0]["config"]["BLOCK_N"] == 256


@pytest.mark.parametrize("n", [384, 4096])
def test_fused_epilogue_compiles_for_sm90_with_wgmma_and_no_spills(n):
    # at 4096 the default 128x256 tile would spill with gelu on its accumulator: the default for a
    # GEMM with an epilogue is at most 128x128
    x, w, b = (lazy.tensor(torch.randn(*s).half()) for s in ((n, 256), (256, n), (n,)))
    roots = [(x @ w + b).gelu()._node]
    _, buffers, _ = structure_key(roots)
    (call,) = schedule(roots, buffers).kernels
    assert call.epilogue is not None
    cfg = gemm_triton.choose_config(call)
    assert cfg.BLOCK_M * cfg.BLOCK_N <= gemm_triton.EPILOGUE_TILE
    (r,) = gemm_triton.aot_compile_many([call], "sm_90")
    assert r["wgmma"] and r["spills"] == 0 and r["registers"] <= 255, (r["registers"], r["spills"])
    assert "erf" in Path(r["path"]).read_text()


def test_aot_rejects_a_config_over_the_shared_memory_limit():
    # the pre-check is skipped (check=False): the compiler's own figure is checked too
    cfg = GemmConfig(128, 256, 64, num_warps=8, num_stages=5)  # 5 x 48 KiB = 245760 bytes
    with pytest.raises(GemmConfigError):
        gemm_triton.aot_compile(_nn(4096, "float16"), "sm_90", cfg)
    with pytest.raises(compile_triton.TritonCompileError, match=r"needs \d+ bytes of shared memory; sm_90 allows "
                                                                 r"232448 per block"):
        gemm_triton.aot_compile(_nn(4096, "float16"), "sm_90", cfg, check=False)
