"""Triton GEMM template for `ExternCall(op="matmul")`: out[b, m, n] = sum_k a[b, m, k] * b[b, k, n].

In:  an `ExternCall` (buffers: out, a, b; `views` give each operand's shape, element strides and
     offset, batch dims included, stride 0 for a broadcast batch) and a `GemmConfig`
     (`choose_config` picks one by shape; `CONFIGS` is the candidate set for an autotuner).
Out: `load(call)` gives `fn(out, a, b)` that launches the kernel on torch tensors (CUDA tensors,
     or CPU tensors under TRITON_INTERPRET=1); `aot_compile(call)` compiles it for an NVIDIA
     target without a GPU and returns PTX, registers, spills and shared memory.

Kernel (the Triton tutorial's blocked GEMM)
- One program per BLOCK_M x BLOCK_N output tile, all on grid axis 0 (no 65535 limit on the
  batch): program id -> (batch, tile); tiles are visited in groups of GROUP_M rows of tiles
  ("grouped ordering") so programs running together share A rows and B columns in L2.
- The K loop does `acc = tl.dot(a, b, acc)` with a float32 accumulator (float64 for float64);
  float32 operands use the config's `input_precision` ("ieee" by default: exact fp32, matching
  torch; "tf32" lets a GPU use tensor cores). The result is cast to the output dtype.
  Software pipelining is Triton's: `num_stages` buffers of the A/B tiles in shared memory.
- Shapes, strides and offsets are literals in the generated source (like render_triton: one
  module per call), so the compiler sees unit strides and divisibility, and emits no mask for a
  dimension that the block divides. Batch dims are merged where the three views allow it.
- Index arithmetic is int32 unless some address (padded to whole tiles) can pass 2**31-1.

Interpreter (TRITON_INTERPRET=1, read when the module is imported)
- tl.dot on bfloat16 is broken there (numpy multiplies the raw uint16 bits), so bfloat16 tiles
  are widened to float32 before the dot only under the interpreter (module constexpr
  `_INTERPRET`); compiled for a GPU the dot stays a native bf16 dot (wgmma on sm_90).
- The interpreter's float32 -> bfloat16 conversion truncates; the output cast rounds to
  nearest even by bit arithmetic there, as torch does.

Not here: epilogue fusion (bias, activation) into the GEMM (the scheduler runs the epilogue as
its own kernel), split-K / stream-K, TMA descriptors, persistent kernels, integer GEMMs (int
dtypes go to codegen/extern.py: `supports()` says which calls this template takes).

Files and errors follow codegen/compile_triton.py: the module goes to
`$LAZY_CACHE_DIR/triton/gemm-<call key>-<source hash>.py`, written atomically, imported once per
interpreter mode; bad source or a failed launch raises `TritonCompileError` naming the file.
A config whose pipelined tiles cannot fit the target's shared memory is rejected before
anything is compiled (`GemmConfigError`), and `aot_compile` checks the compiler's own figure. A
knob outside its spec (codegen/knobs.py) is rejected by every `render`, `check=False` included:
knob values reach the source only through `knobs.src`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from codegen import compile_triton, knobs, render_triton
from codegen.compile_triton import H100_SHARED_LIMIT, SHARED_LIMITS, TritonCompileError
from codegen.kernel_ir import ITEMSIZE, ExternCall, GatherView, StridedView
from codegen.knobs import REQUIRED, integer, knob, one_of
from codegen.render_triton import BF16_HELPER, epilogue_needs_int64

INT32_MAX = 2**31 - 1
DTYPES = {d: ITEMSIZE[d] for d in ("float16", "bfloat16", "float32", "float64")}  # supported dtype -> bytes
TL = {"float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64"}
SIG = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32", "float64": "*fp64"}
SM_COUNT = 132  # H100 SXM: the heuristic splits tiles until the grid covers this many programs
EPILOGUE_TILE = 128 * 128  # largest default tile (elements) of a GEMM with a fused epilogue


class GemmConfigError(ValueError):
    """A GEMM config that cannot work (bad sizes, or tiles that do not fit in shared memory)."""


# What a GemmConfig knob may hold (codegen/knobs.py); `check_config` adds the shared memory the
# blocks need. tl.dot takes power-of-two blocks of 16 and more.
MAX_BLOCK = 1024
MAX_GROUP_M = 1024
INPUT_PRECISIONS = ("ieee", "tf32", "tf32x3")


@dataclass(frozen=True)
class GemmConfig:
    BLOCK_M: int = knob(REQUIRED, integer(16, MAX_BLOCK, pow2=True))
    BLOCK_N: int = knob(REQUIRED, integer(16, MAX_BLOCK, pow2=True))
    BLOCK_K: int = knob(REQUIRED, integer(16, MAX_BLOCK, pow2=True))
    GROUP_M: int = knob(8, integer(1, MAX_GROUP_M))
    num_warps: int = knob(4, one_of(1, 2, 4, 8, 16))
    num_stages: int = knob(3, integer(1, render_triton.MAX_STAGES))
    input_precision: str = knob("ieee", one_of(*INPUT_PRECISIONS))  # float32 operands only


# Candidates for an autotuner (Triton's tutorial / Inductor's mm configs for Hopper and Ampere).
# 16-bit operands; float32 operands use `fp32_variant` (half the K block, "ieee" and "tf32").
CONFIGS: tuple[GemmConfig, ...] = (
    GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=3),
    GemmConfig(256, 128, 64, 8, num_warps=8, num_stages=3),
    GemmConfig(128, 128, 64, 8, num_warps=8, num_stages=4),
    GemmConfig(128, 128, 32, 8, num_warps=4, num_stages=4),
    GemmConfig(128, 64, 64, 8, num_warps=4, num_stages=4),
    GemmConfig(64, 128, 64, 8, num_warps=4, num_stages=4),
    GemmConfig(64, 64, 64, 8, num_warps=4, num_stages=4),
    GemmConfig(64, 64, 32, 8, num_warps=4, num_stages=5),
    GemmConfig(128, 32, 64, 8, num_warps=4, num_stages=4),
    GemmConfig(32, 64, 32, 8, num_warps=4, num_stages=5),
    GemmConfig(16, 64, 64, 8, num_warps=4, num_stages=4),
    GemmConfig(64, 16, 64, 8, num_warps=4, num_stages=4),
)
# the heuristic's starting points before clamping to the problem
DEFAULT_16BIT = GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=3)
DEFAULT_32BIT = GemmConfig(128, 128, 32, 8, num_warps=8, num_stages=3)
DEFAULT_64BIT = GemmConfig(64, 64, 16, 8, num_warps=4, num_stages=2)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- problem description -------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """An ExternCall matmul normalised: merged batch dims and per-operand strides/offsets."""

    dtype: str
    batch: tuple[int, ...]  # merged batch sizes (size-1 dims dropped)
    M: int
    N: int
    K: int
    a: tuple  # (offset, batch strides, stride_m, stride_k)
    b: tuple  # (offset, batch strides, stride_k, stride_n)
    c: tuple  # (offset, batch strides, stride_m, stride_n)
    rows_per_batch: int = 0  # > 0: the batch was folded into M (codegen/gemm_c.fold_batch)
    gather: GatherView | None = None  # A read through an index map (`a` holds its batch strides only)

    @property
    def batch_count(self) -> int:
        n = 1
        for s in self.batch:
            n *= s
        return n


def _batch_strides(v: StridedView, batch: tuple[int, ...], what: str) -> list[int]:
    """`v`'s batch strides right-aligned to `batch`; size-1 / missing dims broadcast (stride 0)."""
    nb = len(v.shape) - 2
    if nb > len(batch):
        raise ValueError(f"gemm: {what} view {v.shape} has more batch dims than the output {batch}")
    out = [0] * (len(batch) - nb)
    for size, stride, want in zip(v.shape[:nb], v.strides[:nb], batch[len(batch) - nb:]):
        if size == want:
            out.append(stride if size > 1 else 0)
        elif size == 1:
            out.append(0)
        else:
            raise ValueError(f"gemm: {what} view {v.shape} does not broadcast to batch {batch}")
    return out


def problem_of(call: ExternCall) -> Problem:
    if call.op != "matmul" or len(call.views) != 3:
        raise ValueError(f"gemm: expected a matmul ExternCall with 3 views, got {call.op!r}")
    vc, va, vb = call.views
    gather = None
    if isinstance(va, GatherView):  # its batch dims are plain strides; rows and columns are the pack's
        gather = va
        va = StridedView(va.shape, tuple(va.strides[d[0]] if d else 0 for d in va.dims[:-2]) + (0, 0), va.offset)
    if isinstance(vb, GatherView):
        raise ValueError("gemm: a B operand read through an index map")  # noqa: TRY004 (supports() catches it)
    if min(len(vc.shape), len(va.shape), len(vb.shape)) < 2:
        raise ValueError("gemm: views must be at least 2-d ([..., M, K] @ [..., K, N])")
    M, N = vc.shape[-2:]
    K = va.shape[-1]
    if va.shape[-2] != M or vb.shape[-2:] != (K, N):
        raise ValueError(f"gemm: shapes {va.shape} @ {vb.shape} -> {vc.shape} do not match")
    batch = tuple(vc.shape[:-2])
    sc = [st if s > 1 else 0 for s, st in zip(batch, vc.strides[:-2])]
    sa, sb = _batch_strides(va, batch, "a"), _batch_strides(vb, batch, "b")
    # drop size-1 batch dims, then merge neighbours that are one dim for all three operands
    dims = [(s, [sc[i], sa[i], sb[i]]) for i, s in enumerate(batch) if s != 1]
    merged: list = []
    for size, st in dims:
        if merged:
            psize, pst = merged[-1]
            if all(p == s * size for p, s in zip(pst, st)):
                merged[-1] = (psize * size, st)
                continue
        merged.append((size, st))
    bsizes = tuple(s for s, _ in merged)
    bst = [tuple(st[j] for _, st in merged) for j in range(3)]
    dtypes = {b.dtype for b in call.buffers}
    if len(dtypes) != 1:
        raise ValueError(f"gemm: operands and output must share one dtype, got {sorted(dtypes)}")
    return Problem(dtype=call.buffers[0].dtype, batch=bsizes, M=M, N=N, K=K,
                   a=(va.offset, bst[1], va.strides[-2], va.strides[-1]),
                   b=(vb.offset, bst[2], vb.strides[-2], vb.strides[-1]),
                   c=(vc.offset, bst[0], vc.strides[-2], vc.strides[-1]), gather=gather)


def epilogue_buffers(call: ExternCall) -> list[int]:
    """Indices of the epilogue kernel's buffers passed after (out, a, b): all but its output."""
    if call.epilogue is None:
        return []
    out = call.epilogue.stores[0].buf
    return [i for i in range(len(call.epilogue.buffers)) if i != out]


def epilogue_slots(call: ExternCall) -> tuple[int, ...]:
    slots = call.epilogue.meta["slots"]
    return tuple(slots[i] for i in epilogue_buffers(call))


def supports(call: ExternCall) -> bool:
    """Whether this template runs `call` (float matmuls; int dtypes stay with codegen/extern.py)."""
    return (isinstance(call, ExternCall) and call.op == "matmul" and len(call.buffers) == 3
            and len({b.dtype for b in call.buffers}) == 1 and call.buffers[0].dtype in DTYPES
            and not any(isinstance(v, GatherView) for v in call.views))  # those: BLAS on the gathered operand


# -- configs -------------------------------------------------------------------------------------

def shared_bytes(cfg: GemmConfig, dtype: str) -> int:
    """Shared memory the pipelined A and B tiles need: `num_stages` copies of a BLOCK_M x BLOCK_K
    and a BLOCK_K x BLOCK_N tile (what Triton allocates for sm_90 and sm_80 GEMMs; the epilogue's
    layout conversion reuses this space). bfloat16/float16 under the interpreter widen only in
    registers, so the figure is the same for all modes."""
    return max(1, cfg.num_stages) * (cfg.BLOCK_M * cfg.BLOCK_K + cfg.BLOCK_K * cfg.BLOCK_N) * DTYPES[dtype]


def shared_limit(target: str | None = None) -> int:
    """Per-block shared memory of `target` ("sm_90"), else of the current CUDA device, else H100's."""
    if target is None:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return SHARED_LIMITS.get(major * 10 + minor, H100_SHARED_LIMIT)
        return H100_SHARED_LIMIT
    _, cap = compile_triton.parse_target(target)
    return SHARED_LIMITS.get(cap, H100_SHARED_LIMIT)


def check_config(cfg: GemmConfig, dtype: str, target: str | None = None) -> None:
    """Raise GemmConfigError for a config that cannot compile or cannot fit the target: a knob
    outside its spec (tl.dot: power-of-two blocks of 16 and more), or tiles beyond shared memory."""
    try:
        knobs.check(cfg)
    except knobs.KnobError as e:
        raise GemmConfigError(f"gemm config: {e}") from None
    need, limit = shared_bytes(cfg, dtype), shared_limit(target)
    if need > limit:
        raise GemmConfigError(
            f"gemm config {cfg} for {dtype}: the {cfg.num_stages}-stage pipeline needs {need} bytes of shared "
            f"memory ({cfg.num_stages} x ({cfg.BLOCK_M}x{cfg.BLOCK_K} + {cfg.BLOCK_K}x{cfg.BLOCK_N}) x "
            f"{DTYPES[dtype]} B), more than the {limit} bytes per block of "
            f"{target or 'the target GPU'}; use smaller blocks or fewer stages")


def fp32_variant(cfg: GemmConfig, input_precision: str = "ieee") -> GemmConfig:
    """A 16-bit config adapted to 4-byte operands (half the K block, same shared memory)."""
    return replace(cfg, BLOCK_K=max(16, cfg.BLOCK_K // 2), input_precision=input_precision)


def candidate_configs(call: ExternCall, target: str | None = None) -> list[GemmConfig]:
    """What an autotuner would time for `call`: CONFIGS (fp32: ieee and tf32 variants) clamped to
    the problem, deduplicated, each one fitting the target."""
    p = problem_of(call)
    base = list(CONFIGS)
    if p.dtype == "float32":
        base = [fp32_variant(c, ip) for ip in ("ieee", "tf32") for c in CONFIGS]
    elif p.dtype == "float64":
        base = [replace(c, BLOCK_K=16, num_stages=2) for c in CONFIGS]
    out: list[GemmConfig] = []
    for c in base:
        c = _clamp(c, p)
        try:
            check_config(c, p.dtype, target)
        except GemmConfigError:
            continue
        if c not in out:
            out.append(c)
    return out


def search_space(call: ExternCall) -> dict[str, tuple]:
    """Per `GemmConfig` field, the values an autotuner walks for `call`, ascending (the default's
    included). `input_precision` is not searched: tf32 changes results, it is the caller's choice.
    Combinations are checked with `check_config` (shared memory) before anything is compiled."""
    p = problem_of(call)
    d = choose_config(call)

    def pow2s(hi: int, extra: int) -> tuple[int, ...]:
        out, v = {extra}, 16
        while v <= max(16, min(hi, 256)):
            out.add(v)
            v *= 2
        return tuple(sorted(out))

    return {"BLOCK_M": pow2s(next_pow2(p.M), d.BLOCK_M), "BLOCK_N": pow2s(next_pow2(p.N), d.BLOCK_N),
            "BLOCK_K": pow2s(min(128, next_pow2(p.K)), d.BLOCK_K), "GROUP_M": tuple(sorted({1, 4, 8, 16, d.GROUP_M})),
            "num_warps": tuple(sorted({2, 4, 8, d.num_warps})),
            "num_stages": tuple(sorted({1, 2, 3, 4, 5, d.num_stages}))}


def _clamp(cfg: GemmConfig, p: Problem) -> GemmConfig:
    bm = min(cfg.BLOCK_M, max(16, next_pow2(p.M)))
    bn = min(cfg.BLOCK_N, max(16, next_pow2(p.N)))
    bk = min(cfg.BLOCK_K, max(16, next_pow2(p.K)))
    warps = cfg.num_warps
    while warps > 1 and bm * bn < warps * 32 * 8:  # at least 8 accumulator values per thread
        warps //= 2
    stages = max(1, min(cfg.num_stages, _cdiv(p.K, bk) + 1))
    return replace(cfg, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)


def choose_config(call: ExternCall, *, sm_count: int = SM_COUNT) -> GemmConfig:
    """Default config by shape: the dtype's large tile (16-bit: 128x256x64, 8 warps, 3 stages;
    float32: 128x128x32 ieee), clamped to the problem (blocks never much larger than M/N/K), then
    halved (N first, never below 64) while the grid has fewer programs than `sm_count` SMs; with a
    fused epilogue at most EPILOGUE_TILE elements (the epilogue's registers come on top)."""
    p = problem_of(call)
    base = {"float32": DEFAULT_32BIT, "float64": DEFAULT_64BIT}.get(p.dtype, DEFAULT_16BIT)
    cfg = _clamp(base, p)
    bm, bn = cfg.BLOCK_M, cfg.BLOCK_N
    while p.batch_count * _cdiv(p.M, bm) * _cdiv(p.N, bn) < sm_count and max(bm, bn) > 64:
        if bn >= bm and bn > 64:
            bn //= 2
        else:
            bm //= 2
    epilogue_cap = call.epilogue is not None and bm * bn > EPILOGUE_TILE
    if epilogue_cap:
        # an epilogue (erf, exp, ...) evaluated on the whole accumulator needs registers of its own:
        # 128x256 fp32 with gelu spilled 44 registers on sm_90; 128x128 with 4 stages spills none
        while bm * bn > EPILOGUE_TILE and bn > 64:
            bn //= 2
    if (bm, bn) != (cfg.BLOCK_M, cfg.BLOCK_N):
        warps = 8 if bm * bn >= 128 * 128 else 4
        small = epilogue_cap or bm * bn <= 128 * 64  # smaller tiles leave shared memory for a 4th stage
        cfg = replace(cfg, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
                      num_stages=max(cfg.num_stages, 4) if small else cfg.num_stages)
        cfg = _clamp(cfg, p)
    return cfg


# -- rendering -----------------------------------------------------------------------------------

PRELUDE = '''\
import os

import triton
import triton.language as tl

# tl.dot on bfloat16 and float32 -> bfloat16 casts are wrong under the interpreter; the kernel
# branches on this (read when the module is imported, like @triton.jit itself).
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


''' + BF16_HELPER


def _max_offset(op: tuple, p: Problem, rows: int, cols: int) -> int:
    off, bst, s0, s1 = op
    worst = abs(off) + abs(s0) * rows + abs(s1) * cols
    worst += sum(abs(st) * (size - 1) for st, size in zip(bst, p.batch))
    return worst


def needs_int64(p: Problem, cfg: GemmConfig) -> bool:
    pm, pn, pk = (_cdiv(p.M, cfg.BLOCK_M) * cfg.BLOCK_M, _cdiv(p.N, cfg.BLOCK_N) * cfg.BLOCK_N,
                  _cdiv(p.K, cfg.BLOCK_K) * cfg.BLOCK_K)
    programs = p.batch_count * _cdiv(p.M, cfg.BLOCK_M) * _cdiv(p.N, cfg.BLOCK_N)
    tiles_m = _cdiv(p.M, cfg.BLOCK_M)
    worst = max(_max_offset(p.a, p, pm, pk), _max_offset(p.b, p, pk, pn), _max_offset(p.c, p, pm, pn),
                programs + cfg.GROUP_M * _cdiv(p.N, cfg.BLOCK_N), (tiles_m + cfg.GROUP_M) * cfg.BLOCK_M)
    return worst > INT32_MAX


def _epilogue_lines(call: ExternCall, p: Problem, mask_m: bool, mask_n: bool, i64: bool) -> list[str]:
    """Statements that replace the tile `out` by the epilogue's value: the epilogue's loop
    variables are the output dims of size > 1 (batch dims from the flat batch id, then rows
    `rm`, then columns `rn`), the GEMM result is `out` rounded to the GEMM's dtype."""
    shape = call.views[0].shape
    itype = "tl.int64" if i64 else "tl.int32"
    lines = ["    acc_out = out" + (".to(tl.float32)" if p.dtype in ("float16", "bfloat16") else "")]
    var_masks: dict = {}
    j = 0
    for d, size in enumerate(shape):
        if size == 1:
            continue
        v = f"x{j}"
        j += 1
        if d == len(shape) - 2:
            lines.append(f"    {v} = rm[:, None]")
            var_masks[v] = "m_ok" if mask_m else None
        elif d == len(shape) - 1:
            lines.append(f"    {v} = rn[None, :]")
            var_masks[v] = "n_ok" if mask_n else None
        else:
            inner = 1
            for s in shape[d + 1:-2]:
                inner *= s
            x = "batch_id" if inner == 1 else f"(batch_id // {inner})"
            lines.append(f"    {v} = tl.full([1, 1], 0, {itype}) + {x} % {size}")
            var_masks[v] = None
    body, value = render_triton.render_tile_epilogue(call.epilogue, var_masks, "acc_out", i64)
    return lines + body + [f"    out = {value}"]


def kernel_name(call: ExternCall) -> str:
    return f"gemm_{call.name}"


def render(call: ExternCall, cfg: GemmConfig | None = None, *, target: str | None = None,
           check: bool = True) -> str:
    """Python/Triton source of the GEMM module for `call` (kernel, launch(), AOT metadata)."""
    p = problem_of(call)
    if p.dtype not in DTYPES:
        raise ValueError(f"gemm: dtype {p.dtype} is not supported by the Triton template")
    cfg = cfg or choose_config(call)
    if check:
        check_config(cfg, p.dtype, target)
    else:  # the shared memory may go unchecked (the tuner checks it once per candidate), the knobs never
        knobs.check(cfg)
    name = kernel_name(call)
    epi = call.epilogue
    i64 = needs_int64(p, cfg) or (epi is not None and epilogue_needs_int64(epi))
    BM, BN, BK = (knobs.value(cfg, f) for f in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    tiles_m, tiles_n = _cdiv(p.M, BM), _cdiv(p.N, BN)
    tiles = tiles_m * tiles_n
    k_tiles = _cdiv(p.K, BK)
    grid = p.batch_count * tiles
    mask_m, mask_n, mask_k = p.M % BM != 0, p.N % BN != 0, p.K % BK != 0
    a_off, a_bst, sam, sak = p.a
    b_off, b_bst, sbk, sbn = p.b
    c_off, c_bst, scm, scn = p.c
    acc_t = "tl.float64" if p.dtype == "float64" else "tl.float32"

    L = []
    w = L.append
    w("    pid = tl.program_id(0)" + (".to(tl.int64)" if i64 else ""))
    # batch index -> per-operand base offsets
    a_base, b_base, c_base = [str(a_off)], [str(b_off)], [str(c_off)]
    if p.batch:
        w(f"    bid = pid // {tiles}")
        if epi is not None:
            w("    batch_id = bid")
        w(f"    pid = pid % {tiles}")
        for d in range(len(p.batch) - 1, -1, -1):
            size = p.batch[d]
            idx = f"i{d}"
            if d == 0:
                w(f"    {idx} = bid")
            else:
                w(f"    {idx} = bid % {size}")
                w(f"    bid = bid // {size}")
            for base, bst in ((a_base, a_bst), (b_base, b_bst), (c_base, c_bst)):
                if bst[d]:
                    base.append(f"{idx} * {bst[d]}")
    # grouped ordering: GROUP_M rows of tiles at a time, column-major inside the group
    w(f"    num_pid_in_group = GROUP_M * {tiles_n}")
    w("    group_id = pid // num_pid_in_group")
    w("    first_pid_m = group_id * GROUP_M")
    w(f"    group_size_m = tl.minimum({tiles_m} - first_pid_m, GROUP_M)")
    w("    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)")
    w("    pid_n = (pid % num_pid_in_group) // group_size_m")
    w("    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    w("    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    w("    rk = tl.arange(0, BLOCK_K)" + (".to(tl.int64)" if i64 else ""))

    def term(var: str, stride: int) -> str:
        # a zero stride (size-1 or broadcast dim) still multiplies: the pointer block keeps its shape
        return var if stride == 1 else f"{var} * {stride}"

    def base(parts: list[str]) -> str:
        parts = [q for q in parts if q != "0"]
        return f"({' + '.join(parts)}) + " if parts else ""

    w(f"    a_ptrs = a_ptr + {base(a_base)}{term('rm[:, None]', sam)} + {term('rk[None, :]', sak)}")
    w(f"    b_ptrs = b_ptr + {base(b_base)}{term('rk[:, None]', sbk)} + {term('rn[None, :]', sbn)}")
    # tl.full, not tl.zeros: tl.zeros is a @triton.jit function of Triton's standard library, which
    # the interpreter cannot call when triton was imported before TRITON_INTERPRET was set
    w(f"    acc = tl.full((BLOCK_M, BLOCK_N), 0, dtype={acc_t})")
    if mask_m:
        w(f"    m_ok = rm[:, None] < {p.M}")
    if mask_n:
        w(f"    n_ok = rn[None, :] < {p.N}")
    w(f"    for kt in range(0, {k_tiles}):")
    if mask_k:
        w(f"        k_left = {p.K} - kt * BLOCK_K")
    a_mask = ([] if not mask_m else ["m_ok"]) + ([] if not mask_k else ["(rk[None, :] < k_left)"])
    b_mask = ([] if not mask_k else ["(rk[:, None] < k_left)"]) + ([] if not mask_n else ["n_ok"])
    w("        a = tl.load(a_ptrs" + (f", mask={' & '.join(a_mask)}, other=0.0)" if a_mask else ")"))
    w("        b = tl.load(b_ptrs" + (f", mask={' & '.join(b_mask)}, other=0.0)" if b_mask else ")"))
    if p.dtype == "bfloat16":
        w("        if _INTERPRET:  # the interpreter's bf16 tl.dot multiplies raw bits")
        w("            a = _lz_bf16_f32(a)")  # and its own widening loses subnormals
        w("            b = _lz_bf16_f32(b)")
    if p.dtype == "float32":
        w(f'        acc = tl.dot(a, b, acc, input_precision="{knobs.src(cfg, "input_precision")}")')
    else:
        w("        acc = tl.dot(a, b, acc)")
    if k_tiles > 1 and sak:
        w(f"        a_ptrs += {term('BLOCK_K', sak)}")
    if k_tiles > 1 and sbk:
        w(f"        b_ptrs += {term('BLOCK_K', sbk)}")
    if p.dtype == "bfloat16":
        w("    out = _lz_bf16(acc)")
    elif p.dtype in ("float16",):
        w(f"    out = acc.to({TL[p.dtype]})")
    else:
        w("    out = acc")
    c_mask = ([] if not mask_m else ["m_ok"]) + ([] if not mask_n else ["n_ok"])
    if epi is not None:
        L.extend(_epilogue_lines(call, p, mask_m, mask_n, i64))
    w(f"    c_ptrs = c_ptr + {base(c_base)}{term('rm[:, None]', scm)} + {term('rn[None, :]', scn)}")
    w("    tl.store(c_ptrs, out" + (f", mask={' & '.join(c_mask)})" if c_mask else ")"))

    consts = {"BLOCK_M": BM, "BLOCK_N": BN, "BLOCK_K": BK, "GROUP_M": knobs.value(cfg, "GROUP_M")}
    sig = {"c_ptr": SIG[p.dtype], "a_ptr": SIG[p.dtype], "b_ptr": SIG[p.dtype]}
    extras = [f"b{i}" for i in epilogue_buffers(call)]
    sig.update({e: render_triton.SIG[epi.buffers[i].dtype] for e, i in zip(extras, epilogue_buffers(call))})
    scalars = render_triton.scalar_signature(epi.scalars) if epi is not None else {}
    sig.update(scalars)
    typed = "".join(f"{p}: {t!r}, " for p, t in scalars.items())  # the epilogue's scalar arguments
    sig.update({k: "constexpr" for k in consts})
    shape_doc = (f"batch {list(p.batch)} x [{p.M}, {p.K}] @ [{p.K}, {p.N}] {p.dtype}; a strides "
                 f"{list(a_bst)}+({sam}, {sak}) @{a_off}, b {list(b_bst)}+({sbk}, {sbn}) @{b_off}, "
                 f"c {list(c_bst)}+({scm}, {scn}) @{c_off}")
    out = [f'"""Generated by lazy-triton (codegen/gemm_triton.py): {call.name}, key {call.key()}.',
           f"{shape_doc}" + ("" if epi is None else f", epilogue {epi.name} fused") + ".",
           f"config {knobs.describe(cfg)}" + (", int64 indices" if i64 else "") + '."""', "",
           PRELUDE if epi is None else render_triton.PRELUDE, "",
           "@triton.jit",
           (f"def {name}(c_ptr, a_ptr, b_ptr, {''.join(e + ', ' for e in extras)}{typed}BLOCK_M: tl.constexpr, "
            "BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):")]
    out += L
    out += ["", "",
            f"KERNEL = {name}",
            f"SIGNATURE = {sig!r}",
            f"CONSTEXPRS = {consts!r}",
            ("ATTRS = {(0,): [['tt.divisibility', 16]], (1,): [['tt.divisibility', 16]], "
             "(2,): [['tt.divisibility', 16]]}  # what the JIT sees for CUDA allocations"),
            f"NUM_WARPS = {knobs.src(cfg, 'num_warps')}",
            f"NUM_STAGES = {knobs.src(cfg, 'num_stages')}",
            f"GRID = ({grid},)",
            f"CONFIG = {knobs.py_dict(cfg)}",
            "",
            "",
            f"def launch(c, a, b{''.join(', ' + e for e in [*extras, *scalars])}):",
            f'    """Run {call.name} on torch tensors (out, a, b, epilogue inputs; offsets count from data_ptr())."""',
            "    if GRID[0] == 0:",
            "        return",
            (f"    {name}[GRID](c, a, b, {''.join(e + ', ' for e in [*extras, *scalars])}BLOCK_M={BM}, BLOCK_N={BN}, "
             f"BLOCK_K={BK}, GROUP_M={consts['GROUP_M']}, num_warps=NUM_WARPS, num_stages=NUM_STAGES)"),
            ""]
    return "\n".join(out)


# -- files, loading ------------------------------------------------------------------------------

def write_source(call: ExternCall, cfg: GemmConfig | None = None, *, target: str | None = None,
                 check: bool = True) -> Path:
    source = render(call, cfg, target=target, check=check)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return compile_triton.cached_source(f"gemm-{call.key()}-{digest}.py", source)


def load(call: ExternCall, cfg: GemmConfig | None = None):
    """A launcher `fn(out, a, b)` for `call` (buffers in `call.buffers` order; torch tensors on
    the GPU, or CPU tensors under TRITON_INTERPRET=1). Errors name the generated file."""
    path = write_source(call, cfg)
    mod = compile_triton.import_module(path)
    launch = mod.launch
    errors = compile_triton._launch_errors()
    interp = compile_triton.interpreting()

    nbuf = 3 + len(epilogue_buffers(call)) + (len(call.epilogue.scalars) if call.epilogue is not None else 0)

    def fn(*tensors):
        if len(tensors) != nbuf:
            raise TypeError(f"{call.name}: expected {nbuf} arguments (out, a, b, epilogue inputs, epilogue scalars), "
                            f"got {len(tensors)}")
        try:
            if interp:
                import numpy as np

                with np.errstate(all="ignore"):
                    return launch(*tensors)
            return launch(*tensors)
        except errors as e:
            raise TritonCompileError(path, compile_triton._short(e)) from e

    fn.path = path
    fn.kernel = call
    fn.config = GemmConfig(**mod.CONFIG)
    return fn


# -- ahead-of-time compile -----------------------------------------------------------------------

def aot_compile_file(path: Path | str, target: str = "sm_90") -> dict:
    """Compile a generated GEMM module for `target` in this process (TRITON_INTERPRET unset).
    Pointers are declared 16-byte aligned, as the JIT specializes them for CUDA allocations."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if compile_triton.interpreting():
        raise RuntimeError("gemm_triton.aot_compile_file needs TRITON_INTERPRET unset; use aot_compile()")
    import triton
    from triton.backends.compiler import GPUTarget

    path = Path(path)
    backend, cap = compile_triton.parse_target(target)
    mod = compile_triton.import_module(path)
    t0 = time.perf_counter()
    try:
        src = triton.compiler.ASTSource(fn=mod.KERNEL, signature=dict(mod.SIGNATURE),
                                        constexprs=dict(mod.CONSTEXPRS), attrs=dict(mod.ATTRS))
        ck = triton.compile(src, target=GPUTarget(backend, cap, 32),
                            options={"num_warps": mod.NUM_WARPS, "num_stages": mod.NUM_STAGES})
    except Exception as e:
        raise TritonCompileError(path, compile_triton._short(e)) from e
    shared = int(ck.metadata.shared)
    ptx = ck.asm["ptx"]
    out = {"path": str(path), "target": f"sm_{cap}", "kernel": ck.metadata.name, "config": dict(mod.CONFIG),
           "num_warps": mod.NUM_WARPS, "num_stages": mod.NUM_STAGES, "grid": list(mod.GRID), "shared": shared,
           "shared_limit": SHARED_LIMITS.get(cap, H100_SHARED_LIMIT), "ptx": ptx,
           "wgmma": "wgmma.mma_async" in ptx, "cubin_bytes": len(ck.asm["cubin"]),
           "compile_seconds": time.perf_counter() - t0}
    out.update(compile_triton.resource_usage(ck.asm["cubin"]))
    out["spills"] = out["spill_stores"] + out["spill_loads"]
    if shared > out["shared_limit"]:
        raise TritonCompileError(path, f"needs {shared} bytes of shared memory; sm_{cap} allows "
                                       f"{out['shared_limit']} per block")
    return out


def aot_compile_many(calls: list[ExternCall], target: str = "sm_90",
                     configs: list[GemmConfig | None] | None = None, *, check: bool = True) -> list[dict]:
    """Compile GEMM calls ahead of time for `target` (no GPU needed). Each result has `ptx`,
    `wgmma` (bool), `registers`, `spills`, `local`, `shared` (checked against `shared_limit`),
    `config`, `path`. Configs are checked before rendering (GemmConfigError) unless check=False;
    under TRITON_INTERPRET=1 the compiles run in one subprocess with the variable unset."""
    configs = configs or [None] * len(calls)
    paths = [write_source(c, cfg, target=target, check=check) for c, cfg in zip(calls, configs)]
    if not compile_triton.interpreting():
        return [aot_compile_file(p, target) for p in paths]
    return compile_triton.aot_in_subprocess("codegen.gemm_triton", paths, target)


def aot_compile(call: ExternCall, target: str = "sm_90", config: GemmConfig | None = None, *,
                check: bool = True) -> dict:
    return aot_compile_many([call], target, [config], check=check)[0]


def _main(argv: list[str]) -> int:
    return compile_triton.aot_cli(argv, aot_compile_file, "codegen.gemm_triton")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
