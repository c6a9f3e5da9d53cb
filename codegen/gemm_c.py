"""C GEMM template for `ExternCall(op="matmul")` on the CPU: out = epilogue(a @ b), one launch.

In:  an `ExternCall` (buffers out, a, b; `views` give each operand's shape, element strides and
     offset, batch dims included, stride 0 for a broadcast batch) and a `GemmCConfig`
     (`choose_config` picks one; `search_space` is what codegen/tune.py searches, `CONFIGS`
     whole points of it; `check_config` says whether a config renders a GEMM that runs).
Out: `render_gemm_c(call, cfg)` is C source defining `int lazy_kernel(out, a, b, e0, e1, ...)`
     (pointers, like every C kernel; e* are the epilogue's other buffers, in
     `gemm_triton.epilogue_buffers` order; it returns 1 only when it cannot allocate its packing
     buffers); `load(call)` compiles it through codegen/compile_c and raises on that 1.

Structure (GotoBLAS / BLIS)
- Work is cut into units: whole GEMMs of the batch, or (too few of them) blocks of rows and/or
  columns of one GEMM, tm x tn per GEMM, so that there is a multiple of the thread count. The cut
  is the one that packs the least (a block packs its own rows of A and columns of B: tn copies of
  A and tm of B in all), e.g. rows for a tall output, columns for a wide one.
- A unit is a single-threaded GotoBLAS loop nest over its block, outermost first: jc (NC columns
  of B), pc (KC of the reduction; the KC x NC panel of B is packed), ic (MC rows of A; the
  MC x KC block of A is packed, it stays in L2), jr (an NR-wide micro-panel of B, in L1), ir
  (an MR-tall micro-panel of A): one MR x NR micro-tile.
- Packing copies into NR-wide (B) and MR-tall (A) micro-panels, k-major, zero-padded at the edges.
  It is the only copy; it reads each operand through its strides, so transposed, sliced and
  batch-broadcast operands cost nothing extra (the loop order of a pack follows the unit stride;
  a row-major A goes through 16-column blocks so both its reads and the writes are contiguous).
- Micro-kernel: MR x (NV vectors) accumulators in registers (GCC vector extensions, so the same
  source is AVX-512 zmm, AVX2 ymm or SSE/NEON 128-bit; the branch is chosen by the compiler's
  target macros, each with its own MR/NV so accumulators fit the register file). Per k it loads
  NV vectors of B and multiplies them by broadcast elements of A (fused multiply-add). The packed
  buffers live in one workspace per calling thread, shared by all GEMM kernels
  (codegen/gemm_c_runtime.py, which also loads a rendered GEMM).
- Threads: one `omp parallel for` over the units, static, each thread with its own packing
  buffers and no barrier. Sharing one packed B panel between threads would pack less, but every
  barrier then waits for the slowest thread: on a machine where another process holds a core
  for a few milliseconds, each barrier costs that much (measured: 16x4096x4096 went from 10 ms
  to 128 ms with one busy neighbour; without barriers it stays at 10 ms). Problems under
  `MIN_FLOPS_PER_THREAD` per thread (`_PASSIVE` when idle workers sleep) use fewer threads.
- Epilogue: partial sums of earlier KC panels live in the output buffer (it has the GEMM's dtype:
  the scheduler only fuses epilogues of the GEMM's shape and dtype; full tiles of a row-major
  output are read and written by the micro-kernel itself). On the last KC panel each
  micro-tile goes to an L1 tile buffer, and the epilogue (render_c's expression emitter, with the
  accumulator as `Expr("acc", "gemm")`) reads it with the tile's other inputs (bias, residual) at
  the tile's indices and writes the final value: the output is written once more, never re-read.

Dtypes: float32 and float64 accumulate in their own type, like the BLAS. float16/bfloat16 are
converted to float32 while packing, summed in float32 over all of K and rounded once when stored
(`_render_16bit`: their partial sums cannot wait in a 16-bit output, so the loop nest keeps them
in a float32 block instead). Both convert with render_c.PRELUDE's bit-level functions, which
vectorize.

`choose_impl(call)` says whether the CPU runs this template ("c") or BLAS + an in-place epilogue
kernel ("blas"), from measurements on the development machine (see its docstring);
LAZY_GEMM=blas|c|auto overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import replace as _replace

from codegen import knobs, render_c
from codegen.gemm_c_runtime import from_source
from codegen.gemm_triton import Problem, epilogue_buffers
from codegen.gemm_triton import problem_of as _problem_of
from codegen.kernel_ir import C_TYPES, ExternCall
from codegen.knobs import integer, knob
from codegen.render_c import Body, index_c

DTYPES = ("float32", "float64", "float16", "bfloat16")
_LOADS = {"bfloat16": "bf16_to_f32(x)", "float16": "f16_to_f32(x)"}  # storage -> compute type


# What a GemmCConfig knob may hold (codegen/knobs.py); `check_config` adds what spans knobs. A
# block of 16384 floats a side is 1 GiB of packed panel: larger is no blocking at all.
MAX_BLOCK = 1 << 14
ZMM_REGISTERS = 32


@dataclass(frozen=True)
class GemmCConfig:
    """Blocking of the C GEMM. MR x NV is the AVX-512 micro-tile (rows x vectors of 64 bytes);
    narrower targets use their own (see `ISA_TILES`). MC/NC are rounded down to multiples of
    MR/NR in the C source. `threads` None: the OpenMP default (OMP_NUM_THREADS / the cores),
    fewer for small problems. The default was the fastest (or within 2% of it) on 512^3,
    2048^3 and 4096x1024x4096 on one Zen 4 core: 106-108 GFLOP/s against 92-101 for torch.mm."""

    MC: int = knob(96, integer(1, MAX_BLOCK))
    KC: int = knob(512, integer(1, MAX_BLOCK))
    NC: int = knob(4096, integer(1, MAX_BLOCK))
    MR: int = knob(8, integer(1, ZMM_REGISTERS - 2))
    NV: int = knob(2, integer(1, (ZMM_REGISTERS - 2) // 2))
    threads: int | None = knob(None, integer(1, render_c.MAX_THREADS, none=True))


# Vector bytes -> (MR, NV) for the fallback targets: 12 accumulators + NV loads + 1 broadcast
# within AVX2's 16 ymm registers; 8 within SSE's 16 xmm.
ISA_TILES = {32: (6, 2), 16: (4, 2)}

# The declared search space for an autotuner (the micro-tile must fit 32 zmm registers:
# MR * NV accumulators + NV + 1).
CONFIGS: tuple[GemmCConfig, ...] = tuple(
    GemmCConfig(MC=mc, KC=kc, NC=nc, MR=mr, NV=nv)
    for mr, nv in ((8, 2), (6, 2), (12, 2), (14, 1))
    for mc, kc, nc in ((96, 512, 4096), (48, 512, 4096), (144, 256, 4096), (192, 384, 4096), (96, 768, 2048),
                       (48, 256, 1024)))


def supports(call: ExternCall) -> bool:
    """Floating-point matmuls (float32/64, float16/bfloat16) whose operands and output share one dtype."""
    if not (isinstance(call, ExternCall) and call.op == "matmul" and len(call.buffers) == 3
            and len({b.dtype for b in call.buffers}) == 1 and call.buffers[0].dtype in DTYPES
            and (call.epilogue is None or not call.epilogue.reduces)):
        return False
    try:
        problem_of(call)
    except ValueError:
        return False
    return True


def check_config(cfg: GemmCConfig) -> None:
    """Raise KnobError (a ValueError) unless `cfg` renders a GEMM that runs: every knob within its
    spec, the micro-tile's accumulators, its B vectors and a broadcast within AVX-512's 32
    registers, and MC and NC at least one micro-tile of every target (MC / MR * MR and NC / NR * NR
    are the loop steps: 0 would never end)."""
    knobs.check(cfg)
    if cfg.MR * cfg.NV + cfg.NV + 1 > ZMM_REGISTERS:
        raise knobs.KnobError(f"GemmCConfig MR={cfg.MR}, NV={cfg.NV}: {cfg.MR} x {cfg.NV} accumulators, {cfg.NV} "
                              f"B vectors and a broadcast need more than {ZMM_REGISTERS} registers")
    mr = max(cfg.MR, *(m for m, _ in ISA_TILES.values()))
    if cfg.MC < mr:
        raise knobs.KnobError(f"GemmCConfig MC={cfg.MC}: less than one micro-tile of {mr} rows")
    nr = max(cfg.NV * 64, *(nv * vb for vb, (_, nv) in ISA_TILES.items())) // 4  # float32 lanes: the widest NR
    if cfg.NC < nr:
        raise knobs.KnobError(f"GemmCConfig NC={cfg.NC}: less than one micro-panel of {nr} columns")


def valid_config(cfg: GemmCConfig) -> bool:
    """Whether `check_config` accepts `cfg`."""
    try:
        check_config(cfg)
        return True
    except ValueError:
        return False


def search_space(call: ExternCall) -> dict[str, tuple]:
    """Per `GemmCConfig` field, the values codegen/tune.py walks for `call`, ascending, the default
    included (`CONFIGS` are whole points of the same space). Blocks larger than the problem are
    left out (they render other source for the same loops); `threads` is not searched (a busy
    machine would teach the tuner to use fewer cores)."""
    p = problem_of(call)
    d = choose_config(call)

    def upto(values: tuple[int, ...], limit: int, default: int) -> tuple[int, ...]:
        return tuple(sorted({v for v in values if v <= max(limit, values[0])} | {default}))

    return {"MC": upto((24, 48, 96, 144, 192), p.M, d.MC), "KC": upto((128, 256, 384, 512, 768), p.K, d.KC),
            "NC": upto((512, 1024, 2048, 4096), p.N, d.NC), "MR": (4, 6, 8, 12, 14), "NV": (1, 2)}


def choose_config(call: ExternCall) -> GemmCConfig:
    """The default blocking for every shape: MC/KC/NC only cap the blocks (small problems get
    smaller ones) and the thread count follows the work; an autotuner picks from `CONFIGS`. The
    one exception: an output at most one AVX-512 vector wide (a convolution with 16 output
    channels) gets one vector per micro-tile row, where two would compute a column of zeros as
    wide as the output: ResNet's first 3x3 convolution, [32768, 144] @ [144, 16], 2.1 ms -> 1.4 ms."""
    p = problem_of(call)
    if p.N <= 64 // (8 if p.dtype == "float64" else 4):
        return GemmCConfig(NV=1)
    return GemmCConfig()


# -- rendering -----------------------------------------------------------------------------------

def _lit(n: int) -> str:
    return f"{int(n)}LL" if abs(int(n)) > 2**31 - 1 else str(int(n))


def _ukernel(t: str, mr: int, nv: int) -> str:
    """The MR x (NV vectors) micro-kernel, fully unrolled: C[0:MR, 0:NR] (+)= A_panel @ B_panel,
    A packed MR per k, B packed NR per k; C has row stride ldc and unit column stride."""
    L = [("static inline __attribute__((always_inline)) void ukernel(int64_t kc, const T* restrict A, "
          "const T* restrict B, T* restrict C, int64_t ldc, int beta) {")]
    accs = [[f"c{r}_{v}" for v in range(nv)] for r in range(mr)]
    L.append("  vt " + ", ".join(f"{c} = {{0}}" for row in accs for c in row) + ";")
    L.append("  for (int64_t k = 0; k < kc; k++) {")
    for v in range(nv):
        L.append(f"    const vt b{v} = *(const vt*)(B + {v} * VL);")
    for r in range(mr):
        L.append(f"    {{ const T a = A[{r}]; " + " ".join(f"{accs[r][v]} += a * b{v};" for v in range(nv)) + " }")
    L.append("    A += MR; B += NR;")
    L.append("  }")
    L.append("  if (beta) {")
    for r in range(mr):
        L.append("    " + " ".join(f"{accs[r][v]} += *(const vtu*)(C + {r} * ldc + {v} * VL);" for v in range(nv)))
    L.append("  }")
    for r in range(mr):
        L.append("  " + " ".join(f"*(vtu*)(C + {r} * ldc + {v} * VL) = {accs[r][v]};" for v in range(nv)))
    L.append("}")
    return "\n".join(L)


def _isa_block(t: str, cfg: GemmCConfig) -> str:
    parts = []
    branches = [("defined(__AVX512F__)", 64, (knobs.value(cfg, "MR"), knobs.value(cfg, "NV"))),
                ("defined(__AVX__)", 32, ISA_TILES[32]), (None, 16, ISA_TILES[16])]
    for i, (cond, vb, (mr, nv)) in enumerate(branches):
        head = "#if" if i == 0 else "#elif" if cond else "#else"
        parts.append(f"{head} {cond or ''}".rstrip())
        parts.append(f"#define VB {vb}\n#define MR {mr}\n#define NV {nv}")
        parts.append(f"typedef {t} vt __attribute__((vector_size(VB)));")
        parts.append(f"typedef {t} vtu __attribute__((vector_size(VB), aligned(sizeof({t}))));")
        parts.append("#define VL ((int64_t)(VB / sizeof(T)))\n#define NR (NV * VL)")
        parts.append(_ukernel(t, mr, nv))
    parts.append("#endif")
    return "\n".join(parts)


HEADER = r"""
#include <stdlib.h>
#include <omp.h>
#include <sys/mman.h>
#define CDIV(a, b) (((a) + (b) - 1) / (b))
#define RUP(a, b) (CDIV(a, b) * (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
static inline int64_t gcd64(int64_t a, int64_t b) { while (b) { int64_t t = a % b; a = b; b = t; } return a; }
/* whether idle OpenMP workers sleep (OMP_WAIT_POLICY=PASSIVE): waking them costs a futex round trip */
static int omp_passive(void) {
  static int passive = -1;
  if (passive < 0) {
    const char* e = getenv("OMP_WAIT_POLICY");
    passive = e != NULL && (e[0] == 'p' || e[0] == 'P');
  }
  return passive;
}

/* Packing buffers come from the process-wide workspace library (WORKSPACE_SRC): one buffer per
   calling thread shared by every GEMM kernel, grown on demand and kept. */
void* lazy_gemm_workspace(size_t bytes);
static T* workspace(size_t n) { return (T*)lazy_gemm_workspace(n * sizeof(T)); }
"""


def _pack_b(p: Problem) -> list[str]:
    """Copy the micro-panels of B[pc:pc+kc, jc:jc+nc] (from `bsrc` = B[pc, jc]) into `bp`:
    panel jr at bp + jr*NR*kc, kc rows of NR, zero beyond nc. The loop order follows B's unit
    stride: a row-major B is read along its rows (16 rows at a time), a transposed one along its
    columns."""
    _, _, sbk, sbn = p.b
    L = ["static inline void pack_b(T* restrict bp, const S* restrict bsrc, int64_t kc, int64_t nc) {",
         "  const int64_t n_jr = CDIV(nc, NR);"]
    if sbn == 1 or sbk != 1:
        # 16 rows at a time: 16 read streams, and 16 * NR contiguous values written per panel (one
        # row at a time across all panels would write at a stride of NR * kc: cache-set conflicts)
        L += ["  for (int64_t k0 = 0; k0 < kc; k0 += 16) {",
              "    const int64_t kn = MIN(16, kc - k0);",
              "    for (int64_t jr = 0; jr < n_jr; jr++) {",
              "      const int64_t c0 = jr * NR, nr = MIN(NR, nc - c0);",
              "      for (int64_t k = k0; k < k0 + kn; k++) {",
              "        T* restrict dst = bp + jr * NR * kc + k * NR;",
              f"        const S* restrict row = bsrc + k * {_lit(sbk)} + c0 * {_lit(sbn)};",
              "        if (nr == NR) {",
              "          #pragma omp simd",
              f"          for (int64_t c = 0; c < NR; c++) dst[c] = LD(row[c * {_lit(sbn)}]);",
              "        } else {",
              f"          for (int64_t c = 0; c < NR; c++) dst[c] = c < nr ? LD(row[c * {_lit(sbn)}]) : (T)0;",
              "        }",
              "      }",
              "    }",
              "  }"]
    else:  # B transposed (columns contiguous, x @ w.T): read along k, 16 k at a time through an
        # NR x 16 block written k-major (column by column it wrote at a stride of NR: x @ w.T at
        # [256,512]x[512,128] ran 210 us against 161 for a row-major B)
        L += ["  for (int64_t jr = 0; jr < n_jr; jr++) {",
              "    T* restrict dst = bp + jr * NR * kc;",
              "    const int64_t c0 = jr * NR, nr = MIN(NR, nc - c0);",
              "    int64_t k0 = 0;",
              "    if (nr == NR)",
              "      for (; k0 + 16 <= kc; k0 += 16) {",
              "        T blk[NR][16];",
              "        for (int64_t c = 0; c < NR; c++) {",
              f"          const S* restrict col = bsrc + (c0 + c) * {_lit(sbn)} + k0;",
              "          #pragma omp simd",
              "          for (int64_t kk = 0; kk < 16; kk++) blk[c][kk] = LD(col[kk]);",
              "        }",
              "        for (int64_t kk = 0; kk < 16; kk++)",
              "          #pragma omp simd",
              "          for (int64_t c = 0; c < NR; c++) dst[(k0 + kk) * NR + c] = blk[c][kk];",
              "      }",
              "    for (int64_t c = 0; c < NR; c++) {",
              f"      const S* restrict col = bsrc + (c0 + c) * {_lit(sbn)};",
              "      if (c < nr)",
              "        for (int64_t k = k0; k < kc; k++) dst[k * NR + c] = LD(col[k]);",
              "      else",
              "        for (int64_t k = k0; k < kc; k++) dst[k * NR + c] = (T)0;",
              "    }",
              "  }"]
    L.append("}")
    return L


def _decompose(var: str, subdims: tuple[int, ...], g, conds_const: bool) -> tuple[list[str], str, list[str]]:
    """C statements splitting the index `var` of one operand dim into its sub-dims' coordinates
    (x0.. outermost first), the offset they add and each cond's part (its constant included when
    `conds_const`)."""
    L, q = [f"int64_t q = {var};"], "q"
    names = [f"x{j}" for j in range(len(subdims))]
    for j in range(len(subdims) - 1, 0, -1):
        L.append(f"const int64_t {names[j]} = {q} % {_lit(g.sizes[subdims[j]])}; {q} /= {_lit(g.sizes[subdims[j]])};")
    if subdims:
        L.append(f"const int64_t {names[0]} = {q};")
    off = " + ".join(f"{x} * {_lit(g.strides[d])}" for x, d in zip(names, subdims) if g.strides[d]) or "0"
    parts = []
    for coef, const, _ in g.conds:
        terms = [f"{x} * {_lit(coef[d])}" for x, d in zip(names, subdims) if coef[d]]
        if conds_const and const:
            terms.append(_lit(const))
        parts.append(" + ".join(terms) or "0")
    return L, off, parts


def _pack_a_gather(p: Problem) -> list[str]:
    """Pack A[i0:i0+mc, p0:p0+kc] of an operand read through its index map (`GatherView`, a
    convolution's windows: implicit im2col). Each column k and each row r of a micro-panel has
    its offset and its part of every padding cond worked out once; element (r, k) is
    asrc[row + col] where each cond holds, else 0. Rows of a panel that are neighbours in their
    innermost sub-dim (MR output pixels of one image row) are read as one strided run, e.g. one
    vector load for a stride-1 convolution, wherever the panel's first and last row are inside the
    padding (a cond affine in the row holds between them). Rows beyond mc repeat the last one: the
    micro-kernel's results for them are never stored."""
    g = p.gather
    rows, cols = g.dims[-2], g.dims[-1]
    nc = len(g.conds)

    def ok(r: str, k: str) -> str:
        return " && ".join(f"(uint64_t)(rq{j}[{r}] + kq{j}[{k}]) < (uint64_t){_lit(b)}"
                           for j, (_, _, b) in enumerate(g.conds)) or "1"

    L = [("static inline void pack_a(T* restrict ap, const S* restrict asrc, int64_t i0, int64_t p0, int64_t mc, "
          "int64_t kc) {"),
         "  const int64_t kn = kc > 0 ? kc : 1;",
         "  int64_t ko[kn];"]
    L += [f"  int64_t kq{j}[kn];" for j in range(nc)]
    dec, off, parts = _decompose("p0 + k", cols, g, True)
    L += ["  for (int64_t k = 0; k < kc; k++) {", *("    " + x for x in dec), f"    ko[k] = {off};"]
    L += [f"    kq{j}[k] = {e};" for j, e in enumerate(parts)]
    L.append("  }")
    dec, off, parts = _decompose("i0 + MIN(ir + r, mc - 1)", rows, g, False)
    L += ["  for (int64_t ir = 0; ir < mc; ir += MR) {",
          "    T* restrict dst = ap + ir * kc;",
          "    int64_t ro[MR];"]
    L += [f"    int64_t rq{j}[MR];" for j in range(nc)]
    L += ["    for (int64_t r = 0; r < MR; r++) {", *("      " + x for x in dec), f"      ro[r] = {off};"]
    L += [f"      rq{j}[r] = {e};" for j, e in enumerate(parts)]
    L.append("    }")
    if rows:  # the panel's rows are one run when the innermost sub-dim does not wrap inside it
        inner = rows[-1]
        L.append(f"    const int run = ir + MR <= mc && (i0 + ir) % {_lit(g.sizes[inner])} + MR <= "
                 f"{_lit(g.sizes[inner])};")
        step = _lit(g.strides[inner])
    else:
        L.append("    const int run = 0;")
        step = "0"
    L += ["    for (int64_t k = 0; k < kc; k++) {",
          "      T* restrict d = dst + k * MR;",
          f"      if (run && {ok('0', 'k')} && {ok('MR - 1', 'k')}) {{",
          "        const S* restrict src = asrc + ro[0] + ko[k];",
          "        #pragma omp simd",
          f"        for (int64_t r = 0; r < MR; r++) d[r] = LD(src[r * {step}]);",
          "      } else {",
          "        #pragma omp simd",
          f"        for (int64_t r = 0; r < MR; r++) d[r] = ({ok('r', 'k')}) ? LD(asrc[ro[r] + ko[k]]) : (T)0;",
          "      }",
          "    }",
          "  }",
          "}"]
    return L


def _pack_a_call(p: Problem, ic: str, pc: str) -> str:
    """The pack_a call for the block at rows `ic`, reduction index `pc`."""
    if p.gather is not None:
        return f"pack_a(ap, ga + a_base, {ic}, {pc}, mc, kc);"
    return f"pack_a(ap, ga + a_base + {ic} * {_lit(p.a[2])} + {pc} * {_lit(p.a[3])}, mc, kc);"


def _pack_a(p: Problem) -> list[str]:
    """Copy A[i:i+mc, pc:pc+kc] (from `asrc`) into MR-tall micro-panels at `ap` (each kc x MR,
    rows beyond mc zero)."""
    if p.gather is not None:
        return _pack_a_gather(p)
    _, _, sam, sak = p.a
    if sam == 1 and sak != 1:
        # column-major A (a transposed operand: the weight gradient's g^T): walk it k row by k
        # row, each row contiguous over m, filling every panel's slot k. Panel by panel it read
        # 8 floats from each of kc rows, then the next 8 from the same rows: g^T @ x at
        # [128, 256] x [256, 512] took 308 us (105 GFLOP/s), now 165 us (torch: 212-248)
        return ["static inline void pack_a(T* restrict ap, const S* restrict asrc, int64_t mc, int64_t kc) {",
                "  const int64_t full = mc / MR * MR;",
                "  for (int64_t k = 0; k < kc; k++) {",
                f"    const S* restrict row = asrc + k * {_lit(sak)};",
                "    for (int64_t ir = 0; ir < full; ir += MR) {",
                "      T* restrict dst = ap + ir * kc + k * MR;",
                "      #pragma omp simd",
                "      for (int64_t r = 0; r < MR; r++) dst[r] = LD(row[ir + r]);",
                "    }",
                "    if (full < mc) {",
                "      T* restrict dst = ap + full * kc + k * MR;",
                "      for (int64_t r = 0; r < MR; r++) dst[r] = full + r < mc ? LD(row[full + r]) : (T)0;",
                "    }",
                "  }",
                "}"]
    L = ["static inline void pack_a(T* restrict ap, const S* restrict asrc, int64_t mc, int64_t kc) {",
         "  for (int64_t ir = 0; ir < mc; ir += MR) {",
         "    T* restrict dst = ap + ir * kc;",
         "    const int64_t mr = MIN(MR, mc - ir);",
         "    if (mr == MR) {"]
    if sak == 1 and sam != 1:  # row-major A: 16 k at a time, read as MR rows, written k-major
        L += ["      int64_t k0 = 0;",
              "      for (; k0 + 16 <= kc; k0 += 16) {",
              "        T blk[MR][16];",
              "        for (int64_t r = 0; r < MR; r++)",
              "          #pragma omp simd",
              "          for (int64_t kk = 0; kk < 16; kk++)",
              f"            blk[r][kk] = LD(asrc[(ir + r) * {_lit(sam)} + k0 + kk]);",
              "        #pragma GCC unroll 16",
              "        for (int64_t kk = 0; kk < 16; kk++)",
              "          #pragma GCC unroll 16",
              "          for (int64_t r = 0; r < MR; r++)",
              "            dst[(k0 + kk) * MR + r] = blk[r][kk];",
              "      }",
              "      for (int64_t k = k0; k < kc; k++)",
              "        for (int64_t r = 0; r < MR; r++)",
              f"          dst[k * MR + r] = LD(asrc[(ir + r) * {_lit(sam)} + k]);"]
    else:
        L += ["      for (int64_t k = 0; k < kc; k++)",
              "        #pragma omp simd",
              "        for (int64_t r = 0; r < MR; r++)",
              f"          dst[k * MR + r] = LD(asrc[(ir + r) * {_lit(sam)} + k * {_lit(sak)}]);"]
    L += ["    } else {",
          "      for (int64_t k = 0; k < kc; k++)",
          "        for (int64_t r = 0; r < MR; r++)",
          f"          dst[k * MR + r] = r < mr ? LD(asrc[(ir + r) * {_lit(sam)} + k * {_lit(sak)}]) : (T)0;",
          "    }",
          "  }",
          "}"]
    return L


def problem_of(call: ExternCall) -> Problem:
    return fold_batch(_problem_of(call))


def fold_batch(p: Problem) -> Problem:
    """A batch of GEMMs sharing one B (batch stride 0: a weight applied to [batch, seq, features])
    whose A and C rows continue from one batch entry to the next is one GEMM with batch x M rows:
    B is packed once instead of once per entry, and the row blocks share the threads: in the
    GPT example's backward, 8 x [32, 512] @ [512, 128] took 0.57 ms as a batch and 0.29 ms as
    one [256, 512] @ [512, 128]. Folds one (merged) batch dim whose A and C strides are M rows."""
    if not p.batch or any(p.b[1]) or len(p.batch) != 1 or p.gather is not None:
        return p
    (sa,), (sc,) = p.a[1], p.c[1]
    if sa != p.M * p.a[2] or sc != p.M * p.c[2]:
        return p
    return _replace(p, batch=(), M=p.batch[0] * p.M, a=(p.a[0], (), p.a[2], p.a[3]), b=(p.b[0], (), p.b[2], p.b[3]),
                    c=(p.c[0], (), p.c[2], p.c[3]), rows_per_batch=p.M)


def _batch_bases(p: Problem) -> list[str]:
    """Statements giving a_base/b_base/c_base for the (merged) batch index `bat`."""
    offs = {"a": [str(p.a[0])], "b": [str(p.b[0])], "c": [str(p.c[0])]}
    L = []
    if p.batch:
        L.append("  int64_t brem = bat;")
        for d in range(len(p.batch) - 1, -1, -1):
            L.append(f"  const int64_t bi{d} = brem % {p.batch[d]}; brem /= {p.batch[d]};")
            for name, op in (("a", p.a), ("b", p.b), ("c", p.c)):
                if op[1][d]:
                    offs[name].append(f"bi{d} * {_lit(op[1][d])}")
    for name in ("a", "b", "c"):
        L.append(f"  const int64_t {name}_base = {' + '.join(offs[name])};")
    return L


def _store_c(dtype: str, v: str) -> str:
    """A float32/float64 value `v` converted for storing as `dtype` (16-bit: rounded to nearest)."""
    if dtype == "bfloat16":
        return f"f32_to_bf16({v})"
    if dtype == "float16":
        return f"f32_to_f16({v})"
    return v if C_TYPES[dtype][0] == render_c.ctype(dtype) else f"({C_TYPES[dtype][0]})({v})"


def _epilogue_block(call: ExternCall, p: Problem, indent: str, ld: str = "NR", partial: bool = True) -> list[str]:
    """The last-panel store of a micro-tile `tile` (mr x nr valid, row stride `ld`) at rows i..,
    columns j..: value = epilogue(partial sum in the output + tile), written by the epilogue's
    own store (`partial` False: the tile holds the whole sum). The epilogue's loop variables are
    the output dims of size > 1 (batch dims from the flat batch index `bat`, then rows, then
    columns)."""
    k = call.epilogue
    (store,) = k.stores
    shape = call.views[0].shape
    _, _, scm, scn = p.c
    L = []
    var = {}
    j = 0
    for d, size in enumerate(shape):
        if size == 1:
            continue
        var[d] = f"x{j}"
        j += 1
    # the flat batch index: `bat`, or (batch folded into the rows) the row over rows-per-entry
    flat, batch_vars = ("bat", L) if not p.rows_per_batch else (f"((i + r) / {_lit(p.rows_per_batch)})", [])
    for d, size in enumerate(shape[:-2]):
        if d in var:
            inner = 1
            for s in shape[d + 1:-2]:
                inner *= s
            x = flat if inner == 1 else f"({flat} / {_lit(inner)})"
            batch_vars.append(f"const int64_t {var[d]} = {x} % {_lit(size)};" if batch_vars is not L
                              else f"{indent}const int64_t {var[d]} = {x} % {_lit(size)};")
    row, col = len(shape) - 2, len(shape) - 1
    if partial:  # partial sums of earlier KC panels join the tile first: the epilogue reads one array
        L.append(f"{indent}if (!first)")
        L.append(f"{indent}  for (int64_t r = 0; r < mr; r++)")
        L.append(f"{indent}    for (int64_t cc = 0; cc < nr; cc++)")
        L.append(f"{indent}      tile[r * NR + cc] += gc[c_base + (i + r) * {_lit(scm)} + (j + cc) * {_lit(scn)}];")
    # full tiles get constant trip counts: whole vectors, no tail code
    for k_rows, k_cols, head in (("MR", "NR", "if (mr == MR && nr == NR) {"), ("mr", "nr", "} else {")):
        L.append(f"{indent}{head}")
        ind = indent + "  "
        L.append(f"{ind}for (int64_t r = 0; r < {k_rows}; r++) {{")
        ind1 = ind + "  "
        if p.rows_per_batch:
            L += [ind1 + line for line in batch_vars]
            if row in var:
                L.append(f"{ind1}const int64_t {var[row]} = (i + r) % {_lit(p.rows_per_batch)};")
        elif row in var:
            L.append(f"{ind1}const int64_t {var[row]} = i + r;")
        L.append(f"{ind1}#pragma omp simd")
        L.append(f"{ind1}for (int64_t cc = 0; cc < {k_cols}; cc++) {{")
        ind2 = ind1 + "  "
        if col in var:
            L.append(f"{ind2}const int64_t {var[col]} = j + cc;")
        L.append(f"{ind2}const T g_acc = tile[r * {ld} + cc];")
        body = Body(k, L, ind2, lambda name: "g_acc")
        v = _store_c(store.dtype, body.emit(store.value))
        L.append(f"{ind2}b{store.buf}[{index_c(store.index)}] = {v};")
        L.append(f"{ind1}}}")
        L.append(f"{ind}}}")
    L.append(f"{indent}}}")
    return L


# Work per thread below which fewer threads are faster. Spinning OpenMP workers (OMP_WAIT_POLICY
# unset or ACTIVE) start at once: a second thread already paid off at 32^3 (65K flops), not at
# 16^3 (`import lazy` sets a short spin, see lazy/__init__.py). Sleeping ones (OMP_WAIT_POLICY=
# PASSIVE) take a futex wake-up, ~50 us on the development VM: 32^3 went from 4 to 52 us and
# 128^3 from 36 to 89 us on 2 threads (42 us on one), so a second thread needs ~100 us of work
# (256^3: 267 us on 2 threads, ~335 on one).
MIN_FLOPS_PER_THREAD = 1 << 15
MIN_FLOPS_PER_THREAD_PASSIVE = 1 << 22


def render_gemm_c(call: ExternCall, cfg: GemmCConfig | None = None, fn_name: str = "lazy_kernel") -> str:
    """C source of `call` as one function `fn_name(out, a, b, epilogue inputs...)`."""
    if not supports(call):
        raise ValueError(f"gemm_c: {call.name} is not a floating-point matmul with one dtype")
    p = problem_of(call)
    cfg = cfg or choose_config(call)
    # checked before anything is rendered (a block smaller than a micro-tile would loop forever);
    # knob values reach the source only through knobs.src
    check_config(cfg)
    t, ct = C_TYPES[p.dtype]  # storage type, compute type (16-bit floats compute in float32)
    epi = call.epilogue
    M, N, K = p.M, p.N, p.K
    _, _, scm, scn = p.c
    direct = scn == 1  # full tiles of a row-major output are written by the micro-kernel itself
    params = [f"{t}* restrict gc", f"const {t}* restrict ga", f"const {t}* restrict gb"]
    args = ["gc", "ga", "gb"]
    if epi is not None:
        for i in epilogue_buffers(call):
            params.append(f"const {C_TYPES[epi.buffers[i].dtype][0]}* restrict b{i}")
            args.append(f"b{i}")
        params += render_c.scalar_params(epi.scalars)  # the epilogue's scalar arguments come last
        args += [f"s{i}" for i in range(len(epi.scalars))]
    flops = 2 * p.batch_count * M * N * K
    spin, passive = (_lit(min(max(1, flops // m), 1 << 16)) for m in (MIN_FLOPS_PER_THREAD, MIN_FLOPS_PER_THREAD_PASSIVE))
    threads = (knobs.src(cfg, "threads") if cfg.threads
               else f"MIN(omp_get_max_threads(), omp_passive() ? {passive} : {spin})")
    src = [f"/* {call.name}: batch {list(p.batch)} x [{M}, {K}] @ [{K}, {N}] {p.dtype}; a {p.a}, b {p.b}, c {p.c}"
           + ("" if epi is None else f"; epilogue {epi.name} fused") + f"; {knobs.describe(cfg)} */",
           render_c.PRELUDE,
           f"typedef {ct} T;\ntypedef {t} S;\n#define LD(x) {_LOADS.get(p.dtype, '((T)(x))')}",
           _isa_block(ct, cfg),
           HEADER,
           (f"#define MCB ({knobs.src(cfg, 'MC')} / MR * MR)\n#define KCB {knobs.src(cfg, 'KC')}\n"
            f"#define NCB ({knobs.src(cfg, 'NC')} / NR * NR)"),
           f"#define M {_lit(M)}\n#define N {_lit(N)}\n#define K {_lit(K)}"]
    src += _pack_b(p) + _pack_a(p)
    if t != ct:
        return "\n".join(src + _render_16bit(call, p, params, args, threads, fn_name)) + "\n"

    # one block [m0, m1) x [n0, n1) of one GEMM of the batch, by one thread with its own buffers
    L = [(f"static void gemm_block({', '.join(params)}, int64_t bat, int64_t m0, int64_t m1, int64_t n0, "
          "int64_t n1, T* restrict bp, T* restrict ap) {")]
    w = L.append
    if epi is not None:
        w(f"  {t}* const b{epi.stores[0].buf} = gc;")
    w("  T tile[MR * NR] __attribute__((aligned(64)));")
    L += _batch_bases(p)
    w("  for (int64_t jc = n0; jc < n1; jc += NCB) {")
    w("    const int64_t nc = MIN(NCB, n1 - jc), n_jr = CDIV(nc, NR);")
    if K == 0:  # empty reduction: the GEMM is zero, the epilogue still runs
        w("    for (int64_t pc = 0; pc < 1; pc++) {")
        w("      const int64_t kc = 0;")
    else:
        w("    for (int64_t pc = 0; pc < K; pc += KCB) {")
        w("      const int64_t kc = MIN(KCB, K - pc);")
    w("      const int first = pc == 0, last = pc + kc >= K;")
    w(f"      pack_b(bp, gb + b_base + pc * {_lit(p.b[2])} + jc * {_lit(p.b[3])}, kc, nc);")
    w("      for (int64_t ic = m0; ic < m1; ic += MCB) {")
    w("        const int64_t mc = MIN(MCB, m1 - ic);")
    w(f"        {_pack_a_call(p, 'ic', 'pc')}")
    w("        for (int64_t jr = 0; jr < n_jr; jr++) {")
    w("          const int64_t j = jc + jr * NR, nr = MIN(NR, jc + nc - j);")
    w("          const T* const bpp = bp + jr * NR * kc;")
    w("          for (int64_t ir = 0; ir < mc; ir += MR) {")
    w("            const int64_t i = ic + ir, mr = MIN(MR, mc - ir);")
    w("            const T* const app = ap + ir * kc;")
    ind = "            "
    if epi is not None:
        w(f"{ind}if (last) {{")
        w(f"{ind}  ukernel(kc, app, bpp, tile, NR, 0);")
        L += _epilogue_block(call, p, ind + "  ")
        w(f"{ind}  continue;")
        w(f"{ind}}}")
    if direct:
        w(f"{ind}if (mr == MR && nr == NR) {{")
        w(f"{ind}  ukernel(kc, app, bpp, gc + c_base + i * {_lit(scm)} + j, {_lit(scm)}, !first);")
        w(f"{ind}  continue;")
        w(f"{ind}}}")
    w(f"{ind}ukernel(kc, app, bpp, tile, NR, 0);")
    w(f"{ind}for (int64_t r = 0; r < mr; r++)")
    w(f"{ind}  for (int64_t cc = 0; cc < nr; cc++) {{")
    w(f"{ind}    T* const dst = gc + c_base + (i + r) * {_lit(scm)} + (j + cc) * {_lit(scn)};")
    w(f"{ind}    *dst = (first ? (T)0 : *dst) + tile[r * NR + cc];")
    w(f"{ind}  }}")
    w("          }")
    w("        }")
    w("      }")
    w("    }")
    w("  }")
    w("}")

    L += _driver_c(fn_name, params, threads, p.batch_count,
                   [("  const int64_t kce = MIN(KCB, K), nce = MIN(NCB, RUP(CDIV(N, tn), NR) + NR), "
                     "mce = MIN(MCB, RUP(M, MR));"),
                    "  const size_t per_thread = RUP((size_t)kce * nce, 64) + RUP((size_t)mce * kce, 64);"],
                   f"gemm_block({', '.join(args)}, bat, m0, m1, n0, n1, bp, bp + RUP((size_t)kce * nce, 64))")
    return "\n".join(src + L) + "\n"


def _driver_c(fn_name: str, params: list[str], threads: str, B: int, sizing: list[str], block_call: str) -> list[str]:
    """The exported function: choose the units of work, take one workspace of `per_thread`
    elements per thread (`sizing` defines it), run the units in parallel, each calling
    `block_call` with its bounds and `bp`, the thread's workspace."""
    return [f"int {fn_name}({', '.join(params)}) {{  /* 0, or 1: no memory for the packing buffers */",
            "  if (M == 0 || N == 0) return 0;",
            f"  const int nth = {threads};",
            *_units_c(B),
            *sizing,
            "  T* const ws = workspace(nth * per_thread + 64);",
            "  if (!ws) return 1;",
            "  #pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)",
            "  for (int64_t u = 0; u < units; u++) {",
            "    T* const bp = ws + omp_get_thread_num() * per_thread;",
            *_unit_bounds_c(),
            f"    if (m0 < m1 && n0 < n1) {block_call};",
            "  }",
            "  return 0;",
            "}"]


NC16_BYTES = 8 << 20  # 16-bit operands: the packed B block (all of K) per thread
CS16_BYTES = 512 << 10  # 16-bit operands: the float32 sums of one MC x NC block (stays in L2)


def _render_16bit(call: ExternCall, p: Problem, params: list[str], args: list[str], threads: str,
                  fn_name: str) -> list[str]:
    """float16/bfloat16 operands: converted to float32 while packing, summed in float32 over the
    whole K, rounded once when stored. The sums cannot wait in the 16-bit output between KC panels,
    so the pc loop moves inside ic: the B block [all K, NC columns] is packed once per jc, and an
    MC x NC float32 block `cs` holds the sums until its last panel; then the epilogue (or the
    rounding store) runs over it tile by tile. NC is cut so that the B block fits NC16_BYTES and
    `cs` CS16_BYTES."""
    epi = call.epilogue
    K = p.K
    _, _, scm, scn = p.c
    L = [f"#define NC16 MIN(NCB, MAX(NR, MIN({NC16_BYTES} / (4 * MAX(K, 1)), {CS16_BYTES} / (4 * MCB)) / NR * NR))",
         (f"static void gemm_block({', '.join(params)}, int64_t bat, int64_t m0, int64_t m1, int64_t n0, "
          "int64_t n1, T* restrict bp, T* restrict ap, T* restrict cs) {")]
    w = L.append
    if epi is not None:
        w(f"  S* const b{epi.stores[0].buf} = gc;")
    L += _batch_bases(p)
    w("  for (int64_t jc = n0; jc < n1; jc += NC16) {")
    w("    const int64_t nc = MIN(NC16, n1 - jc), n_jr = CDIV(nc, NR), ncp = n_jr * NR;")
    w("    for (int64_t pc = 0; pc < K; pc += KCB)")
    w(f"      pack_b(bp + pc * ncp, gb + b_base + pc * {_lit(p.b[2])} + jc * {_lit(p.b[3])}, MIN(KCB, K - pc), nc);")
    w("    for (int64_t ic = m0; ic < m1; ic += MCB) {")
    w("      const int64_t mc = MIN(MCB, m1 - ic);")
    w(f"      for (int64_t pc = 0; pc < {'1' if K == 0 else 'K'}; pc += KCB) {{")
    w("        const int64_t kc = MIN(KCB, K - pc);")
    w(f"        {_pack_a_call(p, 'ic', 'pc')}")
    w("        for (int64_t jr = 0; jr < n_jr; jr++)")
    w("          for (int64_t ir = 0; ir < mc; ir += MR)")
    w("            ukernel(kc, ap + ir * kc, bp + pc * ncp + jr * NR * kc, cs + ir * ncp + jr * NR, ncp, pc > 0);")
    w("      }")
    w("      for (int64_t jr = 0; jr < n_jr; jr++) {")
    w("        const int64_t j = jc + jr * NR, nr = MIN(NR, jc + nc - j);")
    w("        for (int64_t ir = 0; ir < mc; ir += MR) {")
    w("          const int64_t i = ic + ir, mr = MIN(MR, mc - ir);")
    w("          const T* const tile = cs + ir * ncp + jr * NR;")
    if epi is not None:
        L += _epilogue_block(call, p, "          ", ld="ncp", partial=False)
    else:
        w("          for (int64_t r = 0; r < mr; r++)")
        w("            for (int64_t cc = 0; cc < nr; cc++)")
        w(f"              gc[c_base + (i + r) * {_lit(scm)} + (j + cc) * {_lit(scn)}] = "
          f"{_store_c(p.dtype, 'tile[r * ncp + cc]')};")
    w("        }")
    w("      }")
    w("    }")
    w("  }")
    w("}")
    L += _driver_c(fn_name, params, threads, p.batch_count,
                   ["  const int64_t nce = MIN(NC16, RUP(CDIV(N, tn), NR) + NR), mce = MIN(MCB, RUP(M, MR));",
                    ("  const size_t bsz = RUP((size_t)MAX(K, 1) * nce, 64), "
                     "asz = RUP((size_t)mce * MIN(KCB, MAX(K, 1)), 64);"),
                    "  const size_t per_thread = bsz + asz + RUP((size_t)mce * nce, 64);"],
                   f"gemm_block({', '.join(args)}, bat, m0, m1, n0, n1, bp, bp + bsz, bp + bsz + asz)")
    return L


def _units_c(B: int) -> list[str]:
    """C statements choosing the units of work: tm x tn blocks per GEMM of the batch (see the
    module docstring), `units` in all."""
    return [
        "  /* Units of work: whole GEMMs of the batch, each cut into tm x tn blocks so that there are",
        "     a multiple of nth units. A thread runs its units alone, packing into its own buffers: no",
        "     barriers, so a thread that the OS preempts delays only its own share. A block of a",
        "     tm x tn cut packs its rows of A and its columns of B: the cut minimises tn*M + tm*N. */",
        f"  const int64_t parts = nth / gcd64({B}, nth);",
        "  int64_t tm = 1, tn = 1, cost = -1;",
        "  for (int64_t d = 1; d <= parts; d++) {",
        "    if (parts % d || d > CDIV(M, MR) || parts / d > CDIV(N, NR)) continue;",
        "    const int64_t c = (parts / d) * M + d * N;",
        "    if (cost < 0 || c < cost) { cost = c; tm = d; tn = parts / d; }",
        "  }",
        "  if (cost < 0) { tm = MIN(parts, CDIV(M, MR)); tn = 1; }  /* a tiny GEMM: fewer units than threads */",
        f"  const int64_t units = {B} * tm * tn, tiles_m = CDIV(M, MR), tiles_n = CDIV(N, NR);"]


def _unit_bounds_c() -> list[str]:
    return ["    const int64_t bat = u / (tm * tn), mi = u / tn % tm, ni = u % tn;",
            "    const int64_t m0 = mi * tiles_m / tm * MR, m1 = MIN(M, (mi + 1) * tiles_m / tm * MR);",
            "    const int64_t n0 = ni * tiles_n / tn * NR, n1 = MIN(N, (ni + 1) * tiles_n / tn * NR);"]


# -- loading -------------------------------------------------------------------------------------

def load(call: ExternCall, cfg: GemmCConfig | None = None):
    """The compiled kernel: `fn(out_ptr, a_ptr, b_ptr, *epilogue_ptrs)` (data pointers of the
    buffers; views' offsets count from them). `fn.source` is the C source."""
    return from_source(call, render_gemm_c(call, cfg))


# -- BLAS or C, per shape ------------------------------------------------------------------------

GEMV_BLAS_MIN = 1 << 14  # K * max(M, N) of a matrix-vector product from which BLAS is faster
BF16_C_MAX_FLOPS = 1 << 23  # bfloat16 GEMMs up to ~160^3 are faster here than oneDNN's


def choose_impl(call: ExternCall) -> str:
    """"c" (this template, epilogue fused: one launch) or "blas" (torch's BLAS, then the epilogue
    in place: two launches). LAZY_GEMM=blas|c forces one (c only where `supports()`); auto, the
    default, applies the rule below.

    The rule, from `python -m perf.gemm_c_vs_blas --grid` on the development machine (2 Zen 4
    cores, torch 2.13: MKL for float32/64, oneDNN for bfloat16; kernel times of both lazy paths,
    with and without a bias + gelu epilogue):
    - float32/float64: the C GEMM was as fast or faster on every shape but one kind. Square
      32..4096: 1.05-4.7x (small ones gain most: one launch, no separate epilogue pass); the
      issue's shapes and transposed weights 1.06-1.2x; batched (32x1024x64x1024, 256x64x64x64)
      1.04-1.2x; M or N of 2..128: 1.05-3.4x (MKL is slow at M = 4..8). The exception is a
      matrix-vector product (M or N == 1): BLAS streams the matrix once while the template packs
      it and fills one row (or column) of each micro-tile: 1x4096x4096 0.73x, 1x1024x1024
      0.6-0.7x, 4096x4096x1 0.15x; those go to BLAS unless tiny (1x64x64: 3x faster in C).
      float64 alike (512^3 1.37x, 2048^3 1.12x, 1x1024x1024 0.58x).
    - float16: always C. torch's CPU float16 matmul is a reference loop here (0.4-3 GFLOP/s);
      the template converts while packing and runs at float32 speed (2048^3: 134 GFLOP/s, 330x).
    - bfloat16: oneDNN uses the AVX512-BF16 dot products, twice the float32 peak (365 GFLOP/s at
      2048^3 against 184 for the template), so BLAS unless small: 64^3 3.8x, 128^3 2.0x, 160^3
      1.6x, 192^3 0.98x and 8x1024x1024 0.9x (with epilogue) for the template."""
    mode = os.environ.get("LAZY_GEMM", "auto") or "auto"
    if mode not in ("auto", "blas", "c"):
        raise ValueError(f"LAZY_GEMM={mode!r}: expected blas, c or auto")
    if not supports(call):
        return "blas"
    if mode != "auto":
        return mode
    p = problem_of(call)
    if p.dtype == "float16" or p.gather is not None:  # BLAS would need the gathered operand copied out
        return "c"
    if p.dtype == "bfloat16":
        return "c" if 2 * p.batch_count * p.M * p.N * p.K < BF16_C_MAX_FLOPS else "blas"
    if min(p.M, p.N) == 1 and p.K * max(p.M, p.N) >= GEMV_BLAS_MIN:
        return "blas"
    return "c"
