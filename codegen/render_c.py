"""C backend renderer: Kernel IR -> one C function (OpenMP outer loop, vectorizable inner loops).

In:  a `Kernel`. Out: C source defining `void lazy_kernel(T* restrict b0, ...)`.

Shape of the code
- The outermost loop is `#pragma omp parallel for` when the kernel has enough work; the
  innermost loop and every reduction loop carry `#pragma omp simd` so gcc vectorizes them.
- float32 exp, log, tanh and erf are the prelude's own (`lz_expf`, ...), inlined and vectorized at
  any width with the same bits as their scalar tails; sin, cos, pow and the float64 functions call
  glibc's scalar ones (the same bits everywhere too, but a loop calling them is not vectorized).
  Compiled without `-ffast-math`, so NaN/Inf semantics stay IEEE (see codegen/compile_c.py).
- Reductions: float sums add blocks of SUM_LANE elements per SIMD lane in float at full SIMD
  width and the block sums in double (within the final float rounding of a float64 reference on
  16M elements; a double accumulator throughout halved the lanes of the L1 passes of norms and
  softmax);
  products accumulate in double; max tracks NaN with a separate flag so the loop stays a plain
  vectorizable max.
- A reduction whose rows are strided while the innermost output loop is contiguous (a column
  sum) is emitted interchanged: a block of `TILE` accumulators advanced together, one
  contiguous vector per reduction step.
- Mixed layouts: a load strided along the innermost loop but contiguous along another loop (`x.T + y`,
  `x.T.contiguous()`, NCHW -> NHWC, `(x.T * y).sum(0)`) is copied tile by tile into an L1 array
  transposed, and the vector loop reads it from there (codegen/tiling.py says when and how; the
  pointwise nest is `emit_transposed`, the reduction's blocks are in `reduction_loop`).
- float16 and bfloat16 compute in float32, converted with integer bit operations (vectorizable).
  A row kernel converts its half-precision row once (row cache) and, per thread, the vectors every
  row reads (column cache); float16 outputs leave through float L1 blocks narrowed by
  `lz_copy_f16` (F16C's vcvtps2ph where the CPU has it).
- Streaming stores: a kernel that writes more than the last-level cache holds, contiguously along
  its innermost loop, computes each block of `STREAM_BLOCK` elements into an L1 scratch array and
  copies it out with non-temporal stores (`lz_stream`). A plain store first reads the line it
  writes (write-allocate), so a read+write kernel moves 3 bytes for every 2 it needs; streamed,
  a 4096x4096 RMSNorm ran 4.2 -> 3.1 ms. gcc never emits non-temporal stores itself (it parses
  `omp simd nontemporal` and ignores it), hence the scratch block and the explicit copy.
  Fresh outputs (not read by the kernel) stream from a quarter of that when the kernel's traffic
  overflows the L3.
- Call fission: a vector store loop that calls two or more vector math functions per element
  runs as one loop per call over blocks of FISSION_BLOCK elements, through L1 scratch arrays
  (`_call_stages`): the calls of one long loop body do not overlap.
- Next-row prefetch: a row kernel that walks each row several times (softmax, norms) reads the
  row from memory once, then computes from cache; the later passes prefetch the next row into L2
  in spans of PREFETCH_SPAN elements, each a share in proportion to its estimated time, so memory
  and compute overlap (`_prefetch_plan`).

Sizes that change (`Kernel.sizes`, lazy/dynamic.py) are `int64_t` parameters after the scalars,
and every size prints as C arithmetic of them (`size_c`); what only affects speed (threads, grabs,
streaming, prefetch, row functions, interchange, tiles, the tuner's search space) reads sizes at
their hints (`kernel_ir.hint`). Nothing the code holds is sized by a size that changes: blocks keep
their fixed lengths (float sums, streamed and float16 outputs, fission, prefetch spans) and compute
their last block's end at run time, and the row and column caches, arrays of one row, are kept for
rows of at most ROW_CACHE_MAX elements, as variable-length arrays of the row (per thread, declared
once): such a kernel is two functions, with the caches and without, and the row length picks one
at run time (`_row_bound`), so no array exceeds what a row of ROW_CACHE_MAX elements needs.

Tuning: `CConfig` holds the knobs the heuristics above fix (threads, the parallel threshold,
TILE, SIMD width, unrolling, outer-loop chunks, loop order, where the reduction is split across
threads, transposed tiles and their extents); `CConfig()` renders exactly the heuristic code. `search_space(k)` lists, per knob,
the values that can change `k`'s code: what codegen/tune.py searches. Each knob's type and range
is declared with it (codegen/knobs.py); `render_c` checks the config before it renders anything
(KnobError, a ValueError naming the knob) and formats knob values only through `knobs.src`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import sympy

from codegen import knobs
from codegen.index_ops import FloorDiv, ModIdx
from codegen.kernel_ir import (
    C_TYPES,
    ITEMSIZE,
    Expr,
    Kernel,
    compute_dtype,
    hint,
    size_symbol,
    subst_expr,
)
from codegen.knobs import flag, integer, knob, one_of
from codegen.tiling import MAX_TTILE, TILE_COLS, TILE_ROWS
from codegen.tiling import plan as tile_plan

TILE = 64  # accumulators per block in interchanged (column) reductions
# float sums: elements each SIMD lane adds in float before the block's sum goes into a double. The
# block is SUM_LANE times the vector width (LZ_SUM_BLOCK: 1024 floats with AVX-512, 512 with AVX2),
# so the error stays within the final float rounding whatever the width: 1024 elements on 8 lanes
# (128 per lane) were 1.64e-7 off a 1025-element sum, 2.75 times the final rounding
SUM_LANE = 64
STREAM_MIN_BYTES = 64 << 20  # written bytes from which outputs bypass the cache: twice the L3 here, so no
# consumer could find them cached (`lazy tune` preferred plain stores for the 32 MiB weight update
# of the large MLP training step, which the next step's GEMM reads)
# ...and from which fresh outputs (buffers the kernel does not read) do, when the kernel's reads
# and writes together overflow the L3 (STREAM_TRAFFIC_MIN_BYTES). Their plain stores read every line
# from memory first and evict the inputs; streamed, 2048x2048 RMS norm and layer norm ran 13-24%
# faster and softmax 3-6%, whether their inputs came from memory or from L3. A kernel that writes
# 16 MiB from two short vectors keeps plain stores: its output stays in L3 between calls (17%)
STREAM_FRESH_MIN_BYTES = 16 << 20
STREAM_TRAFFIC_MIN_BYTES = 32 << 20
STREAM_BLOCK = 1024  # elements per streamed block: a few KiB of L1 scratch per output
STREAM_MIN_ROW_BYTES = 512  # shorter innermost rows keep plain stores (mostly unaligned edges)
PARALLEL_MIN_WORK = 1 << 15  # elements touched; below this one thread is faster than waking others
NEVER_PARALLEL = 1 << 62
# What a CConfig knob may hold (codegen/knobs.py checks every config from a file or the database,
# and every one rendered): wider than `search_space`, narrow enough that any value builds and runs.
# A tile is a stack array of accumulators per reduction (4096 doubles: 32 KiB of stack)
MAX_THREADS = 1024
MAX_TILE = 4096
MAX_CHUNK = 1 << 30
SIMDLENS = (1, 2, 4, 8, 16, 32, 64)  # lanes: powers of two up to 64 bytes of int8


@dataclass(frozen=True)
class CConfig:
    """Knobs of the generated C. The defaults are the heuristics, and render them byte for byte.

    threads: `num_threads(N)` on the parallel loop (None: OpenMP's default team).
    parallel_min_work: elements touched from which the kernel runs on several threads.
    tile: accumulators per block of an interchanged (column) reduction.
    simdlen: `simdlen(N)` on every `omp simd` loop: the vector width in lanes (8 floats: AVX2 width).
    unroll: `#pragma GCC optimize("unroll-loops")` for the kernel (gcc's unroller; `GCC unroll N`
        cannot annotate a loop that already carries `omp simd`).
    chunk: 1-D kernels: the parallel loop runs over chunks of this many elements, each chunk a
        vectorized inner loop (the plain parallel loop carries no `simd`).
    interchange: reductions: True/False forces the column-reduction tiling on or off (None: when
        the innermost output loop is contiguous and the reduction is not); 2-D pointwise kernels:
        True swaps the two loops (parallel over columns, vector over rows).
    rsplit: reductions: threads split each reduction loop (OpenMP `reduction` clauses, array
        sections for tiles) instead of the outer output loop: for few, long rows.
    row_fn: the parallel loop's body becomes a `static inline` function of one row taking the
        buffers as `restrict` parameters. gcc drops `restrict` from pointers an OpenMP region
        captures, and then cannot hoist or vectorize what it proved for the plain loop (a layer
        norm backward row ran 20x slower inside the region); inlined, the parameters keep it.
        None: for rows of up to ROW_FN_MAX elements that hold a row reduction (the norms and
        softmaxes of a training step: 7% off the tiny GPT step's kernel time).
    stream: outputs leave through an L1 block and non-temporal stores (None: `_streams`).
    prefetch: a row kernel that walks each row several times (a first pass from memory, then
        passes from cache) prefetches the next row into L2 during its later passes, each a
        share (`_prefetch_plan`), PREFETCH_SPAN elements at a time, so memory stays busy while
        they compute from cache. Over 4096x4096: softmax 12-14% faster, layer norm 5-12%, RMS norm 2-16%.
        None: on when the rows come from memory or a large L3 share (PREFETCH_MIN_BYTES).
    fission: a vector loop of stores that calls two or more vector math functions (exp, tanh...)
        runs as one loop per call over blocks of FISSION_BLOCK elements, the values a later loop
        needs kept in L1 scratch arrays (`_call_stages`). None: on when there are two such calls.
    transpose: loads strided along the vector loop but contiguous along another loop are read
        through transposed L1 tiles (codegen/tiling.py). None: wherever `tiling.plan` finds such
        loads; False: the plain nest.
    tile_rows: a transposed tile's extent along the loop its loads are contiguous along (for an
        interchanged reduction: reduction steps per copied block).
    tile_cols: a transposed tile's extent along the vector loop (pointwise kernels; an
        interchanged reduction's tile is `tile` columns).
    """

    threads: int | None = knob(None, integer(1, MAX_THREADS, none=True))
    parallel_min_work: int = knob(PARALLEL_MIN_WORK, integer(0, NEVER_PARALLEL))
    tile: int = knob(TILE, integer(1, MAX_TILE))
    simdlen: int | None = knob(None, one_of(*SIMDLENS, none=True))
    unroll: bool = knob(False, flag())
    chunk: int | None = knob(None, integer(1, MAX_CHUNK, none=True))
    interchange: bool | None = knob(None, flag(none=True))
    rsplit: bool = knob(False, flag())
    row_fn: bool | None = knob(None, flag(none=True))
    stream: bool | None = knob(None, flag(none=True))
    prefetch: bool | None = knob(None, flag(none=True))
    fission: bool | None = knob(None, flag(none=True))
    transpose: bool | None = knob(None, flag(none=True))
    tile_rows: int = knob(TILE_ROWS, integer(1, MAX_TTILE))
    tile_cols: int = knob(TILE_COLS, integer(1, MAX_TTILE))


def transpose_plan(k: Kernel, cfg: CConfig | None = None):
    """The transposed tiles `render_c(k, config=cfg)` prints (`tiling.TilePlan`), or None."""
    cfg = cfg or CConfig()
    n = len(k.loops)
    tiles = n >= 1 and any(r.depth == n and r.rvars for r in k.reduces)
    interchange = _prefers_interchange(k) if cfg.interchange is None or not tiles else cfg.interchange
    return tile_plan(k, transpose=cfg.transpose, rows=knobs.value(cfg, "tile_rows"),
                     cols=knobs.value(cfg, "tile_cols"), interchange=interchange, tile=knobs.value(cfg, "tile"))


ROW_FN_MAX = 16384  # 2048-wide softmax / layer norm / RMS norm rows: 5-7% faster as row functions
PREFETCH_MAX_ROW_BYTES = 64 << 10  # longer rows would evict their own beginning before the next pass
# elements of the second pass per burst of next-row prefetches: 16 lines of float32 per 256
# elements kept softmax's exp pass and the memory both busy (bursts of 64 lines per 1024: 5.5 ms
# against 4.5; one line per vector, the same 4.5 but it splits the vector loop)
PREFETCH_SPAN = 256
# rows read by the first pass from which they are prefetched: half the L3 here. At 2048x2048
# (16 MiB, outputs streamed) softmax ran 3-11% faster with it, layer norm 8-23%, RMS norm 0-11%,
# from memory or from L3; a softmax of 8 MiB and under 4-6% slower: the hardware keeps up there
PREFETCH_MIN_BYTES = 16 << 20
PREFETCH_L2 = 1  # __builtin_prefetch locality 1 (prefetcht2): into L2, not over the row in L1
# how the later passes share the next row's prefetch: by estimated time per element, a pass of
# arithmetic 1 and each exp/log/tanh... 4 more (one AVX2 thread: an exp pass 0.48 ns per element,
# an arithmetic pass about 0.1). A layer norm whose variance pass prefetched the whole next row
# ran at 0.256-0.263 ns per element over 4096x4096 on 2 threads, with half of it in the variance
# pass and half in the stores 0.234-0.244 (a copy: 0.190-0.199); a softmax with 5/6 in its exp
# pass and 1/6 in the stores 0.416-0.417 against 0.425-0.430 with all in the exp pass
PREFETCH_PASS_COST = 1
PREFETCH_CALL_COST = 4
# Call fission. A loop whose every element calls exp then tanh (the bench's 10-op chain: a stable
# sigmoid, then tanh) chains two library calls and a division per vector, and the core does not
# overlap one vector's tanh with the next one's exp. As one loop per call, the exp and its argument
# kept in L1 arrays between them, the chain kernel ran 17-20% faster on 64K elements from cache
# (0.033-0.038 ms against 0.041-0.046) and 12-22% on 16M (median 8.5-10.5 ms against 10.9-12.0).
# A single call gains nothing from a split (0.50 ns per element and thread either way).
FISSION_BLOCK = 1024  # elements per block of the split loops: 4 KiB per float scratch array


def _prefetch_rows(k: Kernel, r, d: int, cfg: CConfig) -> list[tuple[int, sympy.Expr, int]]:
    """(buffer, first element of the next row, elements per cache line) for each load of `r`, the
    first pass over a row at loop depth `d`, that walks its row contiguously: the row the next
    iteration of loop x{d-1} will read. Empty when prefetching is off for `k`."""
    if cfg.prefetch is False or d == 0 or len(r.rvars) != 1:
        return []
    xo = sympy.Symbol(f"x{d - 1}", integer=True, nonnegative=True)
    rv = sympy.Symbol(r.rvars[0], integer=True, nonnegative=True)
    out, seen, nbytes = [], set(), 0
    for ld in _loads(r.value):
        b, index, mask = ld.arg
        item = ITEMSIZE[k.buffers[b].dtype]
        if mask or (b, index) in seen or hint(k, r.rsizes[0]) * item > PREFETCH_MAX_ROW_BYTES:
            continue
        if rv in sympy.expand(index - rv).free_symbols:  # not unit stride along the row
            continue
        step = sympy.expand(index.subs(xo, xo + 1) - index)
        if not step.free_symbols <= _size_symbols(k) or step == 0:  # the next row is not a fixed distance away
            continue
        seen.add((b, index))
        nbytes += math.prod(hint(k, s) for s in k.loops[:d]) * hint(k, r.rsizes[0]) * item
        out.append((b, index.subs({xo: xo + 1, rv: 0}), max(64 // item, 1)))
    if cfg.prefetch is None and nbytes < PREFETCH_MIN_BYTES:
        return []
    return out


def _prefetch_plan(k: Kernel, d: int, cfg: CConfig, rows: int | None = None):
    """How the passes over a row at depth `d` prefetch the next row: ({pass: (first element of
    the next row it prefetches (a size: an int, or a `FloorDiv` of the row length), its weight,
    the total weight)}, the `_prefetch_rows` of the first
    pass). The passes are the later reductions over the row and "stores" (the store loop); each
    prefetches a share of the next row in proportion to its estimated time, PREFETCH_PASS_COST
    per element plus PREFETCH_CALL_COST per exp/log/tanh... it computes per element (one per row,
    like a norm's rsqrt, and values read from the row cache cost nothing). None: no first pass
    from memory, or no later pass over the same row. `rows`: as for `_row_cache`."""
    passes = [r for r in k.reduces if r.depth == d]
    if not passes or (loads := _prefetch_rows(k, passes[0], d, cfg)) == []:
        return None
    length = passes[0].rsizes
    last = d == len(k.loops) - 1
    cache = _row_cache(k, _work(k) >= cfg.parallel_min_work, rows) if last else {}
    reads = _row_reads(k, cache)
    later = [(r.name, [r.value], r.rvars[0], reads.get(r.name, {})) for r in passes[1:] if r.rsizes == length]
    if last and (k.loops[d],) == length and k.stores:
        later.append(("stores", [st.value for st in k.stores], f"x{d}", _row_preset(cache, len(k.loops))))
    if not later:
        return None
    weights = []
    for _, values, var, cached in later:
        memo = {id(e): True for v in values for e in _subexprs(v, set()) if e in cached}  # (count 0)
        sym = sympy.Symbol(var, integer=True, nonnegative=True)
        calls = sum(_row_transcendentals(v, sym, memo)[0] for v in values)
        weights.append(PREFETCH_PASS_COST + PREFETCH_CALL_COST * calls)
    total, before, shares = sum(weights), 0, {}
    for (name, *_), w in zip(later, weights):
        g = math.gcd(before, total)
        first = (length[0] * before // total if isinstance(length[0], int)
                 else FloorDiv(length[0] * (before // g), total // g))
        shares[name] = (first, w, total)
        before += w
    return shares, loads


def _store_span(prefetch) -> int:
    """Elements per span of a store loop that prefetches a share w / total of the next row: as
    many as bring PREFETCH_SPAN elements' lines of it, up to STREAM_BLOCK (a softmax's stores
    prefetching their sixth in spans of 256 ran 2-4% slower than in blocks of 1024). Reductions
    keep PREFETCH_SPAN: their spans are also the blocks of their float sums (SUM_LANE)."""
    _, (_, w, total) = prefetch
    return min(PREFETCH_SPAN * total // w, STREAM_BLOCK)


def _row_transcendentals(e: Expr, var: sympy.Symbol, memo: dict) -> tuple[int, bool]:
    """(exp/log/tanh... computed per element along `var`, whether `e` varies along `var`). One
    per row (a norm's rsqrt of its variance) is not counted; a node seen before (in `memo`,
    shared across the values of one kernel) counts once."""
    if id(e) in memo:
        return 0, memo[id(e)]
    if e.op == "load":
        varies = var in e.arg[1].free_symbols
        count = 0
    else:
        parts = [_row_transcendentals(s, var, memo) for s in e.srcs]
        varies = any(v for _, v in parts)
        count = sum(c for c, _ in parts) + (e.op in _EXPENSIVE and varies)
    memo[id(e)] = varies
    return count, varies


# Threads take the iterations of a parallel loop over rows that hold reductions, or over the
# chunks or elements of a 1-D kernel, a few at a time as they go (OpenMP dynamic schedule) rather
# than one static share each: a thread that starts late (a sleeping worker, a preempted vCPU)
# then takes less, and the two walk neighbouring memory. Paired A/Bs against static shares:
# 4096x4096 RMS norm and layer norm 0-32% faster, softmax the same; 2048x2048 0-4% faster; 16M
# arithmetic chain 5-8%, exp/tanh chain 2-3%; training steps and attention within +-2%. A sum
# over all elements keeps static blocks (1-10% slower dynamic), as do 2-D pointwise kernels.
GRABS = 32  # at least this many grabs per loop...
GRAB_MAX = 64  # ...of at most this many iterations (grabs of 8 rows: 1-5% slower than shares)
GRAB_ELEMENTS = 1 << 16  # 1-D vector loops grab this many elements


def _grab(iterations: int) -> int:
    return max(1, min(GRAB_MAX, iterations // GRABS))


def _grab_elements(size: int) -> int:
    """Elements per grab of a 1-D vector loop; 0 (static shares) below GRABS grabs' worth."""
    return GRAB_ELEMENTS if size >= GRABS * GRAB_ELEMENTS else 0


def _work(k: Kernel) -> int:
    """Elements a kernel touches: its outputs times the length of its longest reduction (at the hints)."""
    return max(hint(k, k.numel), 1) * max((math.prod(hint(k, s) for s in r.rsizes) for r in k.reduces), default=1)


def _prefers_row_fn(k: Kernel) -> bool:
    n = len(k.loops)
    return n >= 2 and hint(k, k.loops[-1]) <= ROW_FN_MAX and any(r.depth == n - 1 and r.rvars for r in k.reduces)


def _interchange_legal(k: Kernel) -> bool:
    """2-D pointwise kernels that read no buffer they write may run their loops in either order."""
    if k.reduces or len(k.loops) != 2:
        return False
    written = {s.buf for s in k.stores}
    return not any(e.op == "load" and e.arg[0] in written for s in k.stores for e in _loads(s.value))


def _streamable(k: Kernel) -> bool:
    """Every store walks its buffer contiguously along the innermost loop (index = x_inner + terms
    free of it), the loop nest is plain (no column tiles), and rows are long enough to stream."""
    n = len(k.loops)
    if n == 0 or not k.stores or any(r.depth == n and r.rvars for r in k.reduces):
        return False
    xin = sympy.Symbol(f"x{n - 1}", integer=True, nonnegative=True)
    for st in k.stores:
        rest = sympy.expand(st.index - xin)
        if xin in rest.free_symbols:
            return False
    row = hint(k, k.loops[-1]) * min(ITEMSIZE[st.dtype] for st in k.stores)
    return n == 1 or row >= STREAM_MIN_ROW_BYTES


def _streams(k: Kernel, cfg: CConfig) -> bool:
    if cfg.stream is False or not _streamable(k):
        return False
    if cfg.stream:
        return True
    # two or more exp/tanh/... per element make the kernel compute-bound here: the scratch
    # block's extra pass then costs more than the write-allocate reads it saves (`lazy tune`
    # chose plain stores for the 10-op bench chain, exp + tanh: 12.7 -> 11.3 ms)
    inner, memo = sympy.Symbol(f"x{len(k.loops) - 1}", integer=True, nonnegative=True), {}
    if sum(_row_transcendentals(st.value, inner, memo)[0] for st in k.stores) >= 2:
        return False
    written = hint(k, k.numel) * sum(ITEMSIZE[st.dtype] for st in k.stores)
    if written >= STREAM_MIN_BYTES:
        return True
    read = {ld.arg[0] for e in [*(r.value for r in k.reduces), *(st.value for st in k.stores)] for ld in _loads(e)}
    traffic = written + sum(hint(k, k.buffers[b].numel) * ITEMSIZE[k.buffers[b].dtype] for b in read)
    return (written >= STREAM_FRESH_MIN_BYTES and traffic >= STREAM_TRAFFIC_MIN_BYTES
            and not any(st.buf in read for st in k.stores))


def _f16_blocks(k: Kernel, cfg: CConfig) -> bool:
    """float16 outputs go through float L1 blocks (narrowed by `lz_copy_f16`) even when the kernel
    does not stream: a 2048x2048 float16 layer norm on 2 AVX2 threads ran 0.99 -> 0.80 ns per element."""
    return cfg.stream is not False and any(st.dtype == "float16" for st in k.stores) and _streamable(k)


def search_space(k: Kernel) -> dict[str, tuple]:
    """Per knob of `CConfig`, the values worth trying for `k`, in increasing order where they have
    one (a tuner walks ordered knobs step by step). Knobs that cannot change `k`'s code are left out.
    Sizes that change (size symbols) count at their hints."""
    n = len(k.loops)
    reduces = any(r.rvars for r in k.reduces)
    tiles = n >= 1 and any(r.depth == n and r.rvars for r in k.reduces)
    cpus = os.cpu_count() or 1
    space: dict[str, tuple] = {}
    if tiles:
        space["interchange"] = (None, True, False)
    elif _interchange_legal(k):
        space["interchange"] = (None, True)
    outer = hint(k, k.loops[0]) if n else 0  # iterations of the loop the threads share by default
    if tiles and _prefers_interchange(k):
        outer = -(-outer // TILE)
    if reduces and n and outer < 16 * cpus:  # few, long rows: split the reduction instead
        space["rsplit"] = (False, True)
    if n >= 2 and not any(r.depth == 0 for r in k.reduces):
        space["row_fn"] = (None, False, True)
    if _streamable(k):
        space["stream"] = (None, False, True)
    rows = _row_bound(k)
    if any(_prefetch_plan(k, d, CConfig(prefetch=True), rows) for d in range(1, n + 1)):
        space["prefetch"] = (None, False, True)
    if _fission_stages(k, CConfig(), rows):
        space["fission"] = (None, False)
    space["parallel_min_work"] = (0, PARALLEL_MIN_WORK, NEVER_PARALLEL)
    space["threads"] = (None, *[t for t in (1, 2, 4, 8, 16, 32, 64) if t < cpus])
    if n == 1 and outer > 1024 and not tiles:
        space["chunk"] = (None, *[c for c in (1024, 4096, 16384, 65536) if c < outer])
    if tiles:
        space["tile"] = (16, 32, 64, 128, 256, 512)
    tplan = transpose_plan(k)
    if tplan is not None:  # loads read through transposed tiles (codegen/tiling.py)
        space["transpose"] = (None, False)
        space["tile_rows"] = (8, 16, 32, 64, 128)
        if tplan.kind == "pointwise":
            space["tile_cols"] = (16, 32, 64, 128)
    space["simdlen"] = (None, 4, 8, 16)
    space["unroll"] = (False, True)
    return space

# The C text in front of every kernel (codegen/prelude.h: conversions, math, division rules)
PRELUDE = (Path(__file__).with_name("prelude.h")).read_text()

_UNARY_F = {"exp": "exp", "log": "log", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tanh": "tanh",
            "erf": "erf", "abs": "fabs", "floor": "floor", "ceil": "ceil", "trunc": "trunc"}


# float32 functions the prelude defines (lz_expf, ...): the same bits at every vector width
_LZ_F32 = frozenset({"exp", "log", "tanh", "erf"})
_UNSIGNED = {"int32_t": "uint32_t", "int64_t": "uint64_t"}


def _neg_int(a: str, t: str) -> str:
    """-a for a C integer type `t`, wrapping (-INT_MIN is INT_MIN, as in torch)."""
    u = _UNSIGNED.get(t)
    return f"(({t})(0u - ({u}){a}))" if u else f"(-{a})"


def _neg_abs_arg(w: Expr) -> Expr | None:
    """`a` if `w` is where(0 <= a, -a, a), else None."""
    if w.op != "where" or len(w.srcs) != 3:
        return None
    c, neg, a = w.srcs
    if neg.op != "neg" or neg.srcs[0] != a or c.op != "le" or c.srcs[1] != a:
        return None
    zero = c.srcs[0]
    return a if zero.op == "const" and zero.arg == 0 and a.dtype == w.dtype else None


def ctype(dtype: str) -> str:
    return C_TYPES[dtype][1]


def index_c(e: sympy.Expr) -> str:
    """Print an integer index expression as int64 C arithmetic."""
    if e.is_Integer:
        return f"{int(e)}LL" if abs(int(e)) > 2**31 - 1 else str(int(e))
    if e.is_Symbol:
        return e.name
    if isinstance(e, FloorDiv):
        return f"({index_c(e.args[0])} / {index_c(e.args[1])})"
    if isinstance(e, ModIdx):
        return f"({index_c(e.args[0])} % {index_c(e.args[1])})"
    if e.is_Add:
        terms = sorted(e.args, key=lambda t: (t.is_Integer, str(t)))
        return "(" + " + ".join(index_c(t) for t in terms) + ")"
    if e.is_Mul:
        return "(" + "*".join(index_c(t) for t in e.args) + ")"
    if e.is_Pow and e.exp.is_Integer and int(e.exp) > 0:  # a size symbol squared (T*T attention)
        return "(" + "*".join([index_c(e.base)] * int(e.exp)) + ")"
    raise TypeError(f"cannot print index {e!r}")


def size_c(e) -> str:
    """A size as C: an int as its digits, a polynomial in the size symbols (`Kernel.sizes`) as int64
    arithmetic of the kernel's size parameters (`size_params`). Every loop bound, block tail, mask
    bound and array extent the renderer prints goes through here (indices through `index_c`)."""
    if isinstance(e, int):
        return str(e)
    e = sympy.sympify(e)
    return str(int(e)) if e.is_Integer else index_c(e)


def size_params(names: tuple[str, ...]) -> list[str]:
    """C parameters of a kernel's size symbols (after its scalars): `const int64_t d0`, ..."""
    return [f"const int64_t {name}" for name in names]


def _symbolic(e) -> bool:
    """Whether size `e` changes between calls (a polynomial in size symbols, not a number)."""
    return not isinstance(e, int) and not sympy.sympify(e).is_Integer


def _size_symbols(k: Kernel) -> set:
    return {size_symbol(name) for name in k.sizes}


def _cap(size, limit: int) -> int:
    """The most iterations of one block when a loop over `size` runs in blocks of `limit`: the loop's
    own size when it is shorter, `limit` when the size changes (any size: the blocks' tails are
    computed at run time)."""
    return limit if _symbolic(size) else min(size, limit)


def cond_c(conds) -> str:
    parts = [f"({index_c(a)} >= {size_c(b)})" if c == "ge" else f"({index_c(a)} < {size_c(b)})" for c, a, b in conds]
    return "(" + " && ".join(parts) + ")" if parts else "1"


def literal(value, dtype: str) -> str:
    t = ctype(dtype)
    if dtype == "bool":
        return "1" if value else "0"
    if t in ("float", "double"):
        v = float(value)
        if math.isnan(v):
            return f"(({t})NAN)"
        if math.isinf(v):
            return f"(({t})INFINITY)" if v > 0 else f"(-({t})INFINITY)"
        return f"(({t}){v!r})"
    if int(value) == -2**63:  # 9223372036854775808LL does not fit: its negation is no int64 constant
        return f"(({t})(-9223372036854775807LL - 1))"
    return f"(({t}){int(value)}LL)"


class Body:
    """Emits the statements of one loop body, one C temporary per distinct expression."""

    def __init__(self, k: Kernel, lines: list[str], indent: str, acc_ref, preset: dict | None = None):
        self.k, self.lines, self.indent, self.acc_ref = k, lines, indent, acc_ref
        self.names: dict[Expr, str] = dict(preset or {})
        self.preset = frozenset(preset or ())
        self.used: set[Expr] = set()  # preset expressions this body read

    def emit(self, e: Expr) -> str:
        name = self.names.get(e)
        if name is not None:
            if e in self.preset:
                self.used.add(e)
            return name
        code = self._code(e)
        if e.op in ("const", "scalar"):
            self.names[e] = code
            return code
        name = f"t{len(self.names)}"
        self.lines.append(f"{self.indent}const {ctype(compute_dtype(e.dtype)) if e.op != 'valid' else 'int'} "
                          f"{name} = {code};")
        self.names[e] = name
        return name

    def _code(self, e: Expr) -> str:
        op, dt = e.op, e.dtype
        t = ctype(compute_dtype(dt))
        if op == "const":
            return literal(e.arg, compute_dtype(dt))
        if op == "scalar":  # an argument of the kernel, in its compute type (`scalar_params`)
            return f"s{int(e.arg)}"
        if op == "acc":  # the accumulator converted to its reduction's dtype, as a store converts
            v = self.acc_ref(e.arg)
            if dt == "bool":  # a sum of bools is their `any`
                return f"({v} != 0)"
            if dt == "float16":
                return f"round_f16((float){v})"
            if dt == "bfloat16":
                return f"round_bf16((float){v})"
            return f"(({t}){v})"
        if op == "index":
            return f"(({t}){index_c(e.arg)})"
        if op == "valid":
            return cond_c(e.arg)
        if op == "load":
            b, index, mask = e.arg
            v = f"b{b}[{index_c(index)}]"
            if dt == "bfloat16":
                v = f"bf16_to_f32({v})"
            elif dt == "float16":
                v = f"f16_to_f32({v})"
            return f"({cond_c(mask)} ? {v} : ({t})0)" if mask else v
        if op == "exp" and _neg_abs_arg(e.srcs[0]) is not None and ctype(compute_dtype(dt)) in ("float", "double"):
            # exp(where(0 <= a, -a, a)) (a stable sigmoid's exp(-|a|)) as exp(-fabs(a)): the same
            # value (the select only differs from -fabs in the sign of a zero, which exp ignores),
            # and no select under the call: gcc's jump threading duplicated the call into both
            # arms of a select on the same condition further on (two vector exps per element)
            a = self.emit(_neg_abs_arg(e.srcs[0]))
            return (f"lz_expf(-fabsf({a}))" if ctype(compute_dtype(dt)) == "float" else f"exp(-fabs({a}))")
        a = [self.emit(s) for s in e.srcs]
        src_dt = compute_dtype(e.srcs[0].dtype) if e.srcs else dt
        st = ctype(src_dt)
        isf = st in ("float", "double")
        sfx = "f" if st == "float" else ""
        if op == "cast":  # legal casts are exact, IEEE-rounded, or of floats that fit (codegen/legalize.py)
            return f"(({t}){a[0]})"
        if op == "round":
            return f"round_{'f16' if dt == 'float16' else 'bf16'}((float){a[0]})"
        if op == "wrap":  # two's complement: the low bits (gcc's conversion to a narrower signed type)
            return f"((int32_t)({C_TYPES[dt][0]}){a[0]})" if C_TYPES[dt][0] != t else f"(({t}){a[0]})"
        if op in _UNARY_F:
            if st == "float" and op in _LZ_F32:
                return f"lz_{op}f({a[0]})"
            if isf:
                return f"{_UNARY_F[op]}{sfx}({a[0]})"
            if op == "abs":
                return f"({a[0]} < 0 ? {_neg_int(a[0], st)} : {a[0]})"
            if op in ("floor", "ceil", "trunc"):
                return a[0]
            return f"{_UNARY_F[op]}((double){a[0]})"
        if op == "neg":
            return f"(-{a[0]})" if isf else _neg_int(a[0], st)
        if op == "recip":
            return f"(({st})1 / {a[0]})"
        if op == "not":
            return f"(!{a[0]})" if src_dt == "bool" else f"(~{a[0]})"
        if op == "isnan":
            return f"({a[0]} != {a[0]})" if isf else "0"
        if op == "isinf":
            return f"(fabs{sfx}({a[0]}) == ({st})INFINITY)" if isf else "0"
        if op in ("add", "sub", "mul"):
            if src_dt == "bool":
                return f"({a[0]} {'|' if op == 'add' else '&'} {a[1]})"
            sym = {'add': '+', 'sub': '-', 'mul': '*'}[op]
            if isf:
                return f"({a[0]} {sym} {a[1]})"
            u = _UNSIGNED.get(st)
            return f"(({st})(({u}){a[0]} {sym} ({u}){a[1]}))" if u else f"({a[0]} {sym} {a[1]})"
        if op == "div":
            return f"({a[0]} / {a[1]})" if isf else f"div_{st}({a[0]}, {a[1]})"
        if op == "floordiv":
            return f"floordiv_{sfx if isf else st}({a[0]}, {a[1]})"
        if op == "mod":
            return f"mod_{sfx if isf else st}({a[0]}, {a[1]})"
        if op == "pow":
            return f"pow{sfx}({a[0]}, {a[1]})" if isf else f"pow_{st}({a[0]}, {a[1]})"
        if op in ("max", "min"):
            cmp = ">" if op == "max" else "<"
            nan = f" || {a[0]} != {a[0]}" if isf else ""
            return f"(({a[0]} {cmp} {a[1]}{nan}) ? {a[0]} : {a[1]})"
        if op in ("lt", "le", "eq", "ne"):
            return f"({a[0]} { {'lt': '<', 'le': '<=', 'eq': '==', 'ne': '!='}[op]} {a[1]})"
        if op in ("and", "or", "xor"):
            return f"({a[0]} { {'and_': '&', 'or_': '|', 'xor_': '^'}[op + '_']} {a[1]})"
        if op == "where":
            return f"({a[0]} ? {a[1]} : {a[2]})"
        raise NotImplementedError(f"C backend: no rendering for op {op!r}")


def _acc_type(r) -> str:
    cd = compute_dtype(r.dtype)
    if r.op in ("sum", "prod"):
        if cd in ("float32", "float64"):
            return "double"
        if cd == "bool":
            return "int64_t"
        return ctype(cd) if cd == "int64" else "int64_t"
    return ctype(cd)


def _init(r) -> str:
    t = _acc_type(r)
    if r.op == "sum":
        return f"({t})0"
    if r.op == "prod":
        return f"({t})1"
    if t in ("float", "double"):
        return f"-({t})INFINITY"
    return {"int64_t": "INT64_MIN", "int32_t": "INT32_MIN"}.get(t, "0")


def _is_float(t: str) -> bool:
    return t in ("float", "double")


def _prefers_interchange(k: Kernel) -> bool:
    """Column reductions: the innermost output loop is contiguous and the reduction loop is not."""
    if not k.loops:
        return False
    inner = sympy.Symbol(f"x{len(k.loops) - 1}", integer=True, nonnegative=True)
    for r in k.reduces:
        if r.depth != len(k.loops) or not r.rvars:
            continue
        rin = sympy.Symbol(r.rvars[-1], integer=True, nonnegative=True)
        for e in _loads(r.value):
            # a load the reduction does not move (a row's label or scale) says nothing either way
            if _stride(k, e.arg[1], inner) == 1 and _stride(k, e.arg[1], rin) not in (0, 1):
                return True
    return False


SHORT_GATHER_ROW = 64  # innermost pointwise loops up to this long that gather are left to gcc's cost model


def _short_gathering_row(k: Kernel) -> bool:
    """A pointwise kernel whose innermost loop is short and loads with a stride other than 0 or 1 in
    it (a transposing copy into a GEMM's layout with few channels): `omp simd` there makes gcc emit
    gathers with every index's divisions in vector form, a function of tens of thousands of
    instructions that ran a (8192, 32) copy of 1.5 MB in 143 ms; without it, 0.15 ms."""
    n = len(k.loops)
    if n < 2 or k.reduces or hint(k, k.loops[-1]) > SHORT_GATHER_ROW:
        return False
    inner = sympy.Symbol(f"x{n - 1}", integer=True, nonnegative=True)
    return any(_stride(k, e.arg[1], inner) not in (0, 1) for st in k.stores for e in _loads(st.value))


def _stride(k: Kernel, index: sympy.Expr, var: sympy.Symbol) -> int:
    """The coefficient of loop variable `var` in `index`, at the hints when it is a size that
    changes; 0 when `index` is not of the form `c * var + terms free of var`."""
    c = sympy.expand(index).coeff(var)
    return hint(k, c) if c.free_symbols <= _size_symbols(k) else 0


def _sum_block(size, cfg: CConfig) -> int | str:
    """Elements per float block of a blocked sum over `size`: SUM_LANE per lane of the config's
    vector width, or of the compiler's (the LZ_SUM_BLOCK macro, 256 to 1024). A size that changes
    takes the full block (the loop computes its last block's end at run time)."""
    if cfg.simdlen:
        return _cap(size, SUM_LANE * knobs.value(cfg, "simdlen"))
    return size if not _symbolic(size) and size <= SUM_LANE * 4 else "LZ_SUM_BLOCK"


def _loads(e: Expr, seen=None):
    seen = set() if seen is None else seen
    if id(e) in seen:
        return
    seen.add(id(e))
    if e.op == "load":
        yield e
    for s in e.srcs:
        yield from _loads(s, seen)


def scalar_params(dtypes: tuple[str, ...]) -> list[str]:
    """C parameters of a kernel's scalar arguments (after its buffers): each in its dtype's compute
    type, so a float16 scalar arrives as the float it was given (legalize rounds it where a use
    needs a half). Their ctypes are codegen/compile_c.py `scalar_argtypes`."""
    return [f"const {ctype(compute_dtype(dt))} s{i}" for i, dt in enumerate(dtypes)]


def _row_bound(k: Kernel) -> int | None:
    """ROW_CACHE_MAX when the rows of `k` (its innermost loop) have a length that changes and fit
    row arrays at its hint, else None. Such a kernel is rendered for rows of at most that many
    elements, with its row and column caches in arrays of the row's length (`_row_array`), and,
    when that rendering keeps any, once more without them for longer rows (`render_c` compares the
    length with the bound at run time and calls one)."""
    if not k.loops or not _symbolic(k.loops[-1]) or hint(k, k.loops[-1]) > ROW_CACHE_MAX:
        return None
    return ROW_CACHE_MAX


# no contraction into fused multiply-adds, in every function of a kernel's file: each op rounds, as
# torch's do, and a value computed again in a later pass of a row kernel is the same value
# (x * c - max(x * c) is 0 at the max; contracted in one pass, it was 1.5e23 and softmax NaN)
NO_CONTRACT = '#pragma GCC optimize("fp-contract=off")'


def render_c(k: Kernel, fn_name: str = "lazy_kernel", threads: int | None = None,
             config: CConfig | None = None) -> str:
    """C source for `k`. `config` sets the knobs (None: the heuristics); `threads` caps the OpenMP
    team (None: the config's, else the runtime's default).

    Sizes that change (`k.sizes`) are parameters after the scalars (`size_params`) and every size is
    printed as C arithmetic of them (`size_c`); decisions of speed take their hints. What the code
    itself would size by a dimension runs in fixed blocks with a tail computed at run time (float
    sum blocks, streamed and float16 output blocks, fission and prefetch spans), and the row and
    column caches, arrays of a row, are kept for rows of up to ROW_CACHE_MAX elements: the kernel
    is then two functions, with and without them, and compares the row length at run time (so the
    variable-length row arrays of the first stay within what a row of ROW_CACHE_MAX needs)."""
    cfg = config or CConfig()
    if threads:
        cfg = replace(cfg, threads=threads)
    # every knob checked before any code is made, and each one formatted into the source through
    # knobs.src: a config read from a file or the database can put nothing but numbers there
    knobs.check(cfg)
    rows = _row_bound(k)
    short, arrays = _render(k, f"{fn_name}_rows", cfg, rows, "static ") if rows is not None else ("", False)
    if arrays:
        names = [f"b{i}" for i in range(len(k.buffers))] + [f"s{i}" for i in range(len(k.scalars))] + list(k.sizes)
        params = _params(k)
        return "\n".join([
            NO_CONTRACT, PRELUDE, short, _render(k, f"{fn_name}_long", cfg, None, "static ")[0],
            f"/* rows of up to {rows} elements keep row arrays (render_c._row_bound) */",
            f"void {fn_name}({', '.join(params)}) {{",
            f"  if ({size_c(k.loops[-1])} <= {rows}) {fn_name}_rows({', '.join(names)});",
            f"  else {fn_name}_long({', '.join(names)});",
            "}\n"])
    return "\n".join([NO_CONTRACT, PRELUDE, _render(k, fn_name, cfg, None)[0]])


def _params(k: Kernel) -> list[str]:
    """The C parameters of a kernel: its buffers, its scalars, its sizes."""
    params = []
    for i, b in enumerate(k.buffers):
        const = "" if b.output else "const "
        params.append(f"{const}{C_TYPES[b.dtype][0]}* restrict b{i}")
    return params + scalar_params(k.scalars) + size_params(k.sizes)


def _render(k: Kernel, fn_name: str, cfg: CConfig, rows: int | None, linkage: str = "") -> tuple[str, bool]:
    """(the C function of `k` without the prelude, whether it keeps row or column arrays). `rows`:
    render for rows of at most that many elements (`_row_bound`); `linkage`: before `void`."""
    tile = knobs.src(cfg, "tile")
    simd_clause = " simd" + (f" simdlen({knobs.src(cfg, 'simdlen')})" if cfg.simdlen else "")
    simd = "#pragma omp" + simd_clause
    params = _params(k)
    parallel = _work(k) >= cfg.parallel_min_work
    nt = f" num_threads({knobs.src(cfg, 'threads')})" if cfg.threads else ""
    n = len(k.loops)
    tiles = n >= 1 and any(r.depth == n and r.rvars for r in k.reduces)
    interchange = _prefers_interchange(k) if cfg.interchange is None or not tiles else cfg.interchange
    tplan = transpose_plan(k, cfg)
    tpoint = tplan is not None and tplan.kind == "pointwise"  # the whole nest is tiles (`emit_transposed`)
    swap = bool(cfg.interchange) and _interchange_legal(k) and not tpoint  # 2-D pointwise: loop x1 outside x0
    rsplit = cfg.rsplit and parallel and any(r.rvars for r in k.reduces)
    outer_parallel = parallel and not rsplit
    chunk = knobs.value(cfg, "chunk") if cfg.chunk and outer_parallel and n == 1 and not tiles else None
    stream = _streams(k, cfg) and not swap and not tpoint
    # outputs through L1 blocks: streamed ones, and float16 ones (narrowed a block at a time)
    blocks = stream or _f16_blocks(k, cfg) and not swap and not tpoint
    if blocks and n == 1:  # 1-D: each chunk is one block
        chunk = min(chunk or STREAM_BLOCK, 16 * STREAM_BLOCK)
    sblock = chunk if n == 1 else _cap(k.loops[-1], STREAM_BLOCK) if blocks else 0
    stream_at: list[str] = []  # the first element of the block being stored (a C expression)
    row_fn = (_prefers_row_fn(k) if cfg.row_fn is None else cfg.row_fn) and outer_parallel and n >= 2 \
        and not any(r.depth == 0 for r in k.reduces) and not tpoint
    row_cache = {} if interchange or tpoint else _row_cache(k, parallel, rows)
    short_gather = _short_gathering_row(k)
    cols = _column_cache(k, rows) if row_fn else []
    # row arrays of a length that changes: each thread's, declared once in the parallel region and
    # passed to the row function (a variable-length array in the row function is made per row: a
    # 4096-wide softmax on one thread ran 5% slower)
    thread_rows = [scratch for entries in row_cache.values() for _, scratch, _ in entries] \
        if row_fn and n >= 2 and _symbolic(k.loops[-1]) else []
    row_preset = {**_row_preset(row_cache, n), **{e: f"{name}[x{n - 1}]" for e, name in cols}}
    row_reads = _row_reads(k, row_cache)
    stages = [] if tpoint else _fission_stages(k, cfg, rows)
    # the split loops of a 1-D kernel: its parallel loop runs over their blocks, as many elements a
    # grab as its vector loop would take
    split_chunks = bool(stages) and n == 1 and outer_parallel and not chunk
    if split_chunks:
        chunk = FISSION_BLOCK
    lines = [f"{linkage}void {fn_name}({', '.join(params)}) {{"]
    if cfg.unroll:
        lines.insert(0, '#pragma GCC optimize("unroll-loops")')

    def prefetch_lines(indent, d, prefetch, v, body_lines):
        """Prefetch the part of the pass's share of the next row that positions [{v}b, {v}e) of
        this row cover (`prefetch`: the `_prefetch_rows`, and the pass's share in the plan)."""
        rows, (first, w, total) = prefetch
        g = math.gcd(w, total)
        w, total = w // g, total // g

        def at(pos):  # where position `pos` of this pass lands in its share of the next row
            scaled = pos if w == total else f"{pos} / {total}" if w == 1 else f"{pos} * {w} / {total}"
            return f"{size_c(first)} + {scaled}" if first != 0 else scaled

        guard = f"if (x{d - 1} + 1 < {size_c(k.loops[d - 1])}) "
        for b, start, line in rows:
            body_lines.append(f"{indent}{guard}for (int64_t p = {at(f'{v}b')}; p < {at(f'{v}e')}; p += {line}) "
                              f"__builtin_prefetch(&b{b}[{index_c(start)} + p], 0, {PREFETCH_L2});")

    def reduction_loop(r, indent, acc_ref, tiled: bool, body_lines, prefetch=None):
        """`prefetch`: the next row's loads (`_prefetch_rows`) and this pass's share of them, to
        prefetch span by span."""
        t = _acc_type(r)
        name = acc_ref(r.name)
        isf = _is_float(t)
        nan = acc_ref(f"{r.name}_nan") if (r.op == "max" and isf) else None
        if not tiled:
            body_lines.append(f"{indent}{t} {r.name} = {_init(r)};")
            if nan:
                body_lines.append(f"{indent}int {nan} = 0;")
        if not r.rvars:  # reduction over size-1 axes only: the value itself, in its own scope
            if tiled:  # beside a column reduction: one value per column of the tile
                body_lines.append(f"{indent}for (int64_t j = 0; j < nb; j++) {{")
                body_lines.append(f"{indent}  const int64_t x{n - 1} = xb + j;")
            else:
                body_lines.append(f"{indent}{{")
            inner = Body(k, body_lines, indent + "  ", acc_ref)
            v = inner.emit(r.value)
            body_lines.append(f"{indent}  {name} = {v};")
            body_lines.append(f"{indent}}}")
            return
        red_clause = ""
        opname = {"sum": "+", "prod": "*", "max": "max"}[r.op]
        if not tiled:
            red_clause = f" reduction({opname}:{r.name})" + (f" reduction(|:{nan})" if nan else "")
        top_parallel = parallel and (n == 0 and r.depth == 0 or rsplit) and not tiled
        # a float sum adds blocks of SUM_LANE elements per lane in float (full SIMD width) and the
        # block sums in double: the error of a double accumulator within a few float roundings
        # per block, at float speed (a double accumulator halves the lanes, which cost a
        # 4096-wide layer norm 15% in its L1 passes)
        blocked = r.op == "sum" and t == "double" and compute_dtype(r.dtype) != "float64" and not tiled
        part = f"{name}_p"
        prefetch = prefetch if len(r.rvars) == 1 and not tiled and not top_parallel else None
        spans = blocked or bool(prefetch)  # the row loop runs in blocks (float partial sums, prefetch)
        # loads copied a block of reduction steps at a time into transposed L1 tiles (codegen/tiling.py)
        tloads = [ld for ld, a in tplan.loads if a == r.rvars[-1]] if tiled and tplan is not None else []
        tnames: dict[Expr, str] = {}
        for j, (v, size) in enumerate(zip(r.rvars, r.rsizes)):
            last = j == len(r.rvars) - 1
            if last and tloads:
                if j == 0 and rsplit:
                    body_lines.append(f"{indent}#pragma omp parallel for{nt} reduction({opname}:{r.name}[:{tile}])"
                                      + (f" reduction(|:{r.name}_nan[:{tile}])" if nan else ""))
                trows, size = knobs.src(cfg, "tile_rows"), size_c(size)
                body_lines.append(f"{indent}for (int64_t {v}b = 0; {v}b < {size}; {v}b += {trows}) {{")
                indent += "  "
                body_lines.append(f"{indent}const int64_t {v}e = {v}b + {trows} < {size} ? {v}b + {trows} : {size};")
                at = f"({v} - {v}b) * {tile} + j"
                for i, ld in enumerate(tloads):
                    tnames[ld] = f"tt{i}[{at}]"
                    body_lines.append(f"{indent}{ctype(compute_dtype(ld.dtype))} tt{i}[{trows} * {tile}] "
                                      "__attribute__((aligned(64)));")
                body_lines.append(f"{indent}for (int64_t j = 0; j < nb; j++) {{")
                body_lines.append(f"{indent}  const int64_t x{n - 1} = xb + j;")
                body_lines.append(f"{indent}  {simd}")
                body_lines.append(f"{indent}  for (int64_t {v} = {v}b; {v} < {v}e; {v}++) {{")
                copy = Body(k, body_lines, indent + "    ", acc_ref)
                for ld in tloads:
                    val = copy.emit(ld)
                    body_lines.append(f"{indent}    {tnames[ld].split('[')[0]}[{at}] = {val};")
                body_lines.append(f"{indent}  }}")
                body_lines.append(f"{indent}}}")
                body_lines.append(f"{indent}for (int64_t {v} = {v}b; {v} < {v}e; {v}++) {{")
                indent += "  "
                continue
            if last and spans:
                block = _cap(size, PREFETCH_SPAN) if prefetch else _sum_block(size, cfg)
                size = size_c(size)
                if j == 0 and top_parallel:
                    body_lines.append(f"{indent}#pragma omp parallel for{nt}{red_clause}")
                body_lines.append(f"{indent}for (int64_t {v}b = 0; {v}b < {size}; {v}b += {block}) {{")
                indent += "  "
                body_lines.append(f"{indent}const int64_t {v}e = {v}b + {block} < {size} ? {v}b + {block} : {size};")
                if prefetch:
                    prefetch_lines(indent, r.depth, prefetch, v, body_lines)
                if blocked:
                    body_lines.append(f"{indent}float {part} = 0.0f;")
                body_lines.append(f"{indent}{simd}" + (f" reduction(+:{part})" if blocked else red_clause))
                body_lines.append(f"{indent}for (int64_t {v} = {v}b; {v} < {v}e; {v}++) {{")
                indent += "  "
                continue
            if j == 0 and top_parallel:
                # clauses after the combined construct's name: `parallel for num_threads(2) simd` is an error
                pragma = f"#pragma omp parallel for{simd_clause if last else ''}{nt}{red_clause}"
            elif j == 0 and tiled and rsplit:  # the tile's accumulators, reduced as array sections
                pragma = (f"#pragma omp parallel for{nt} reduction({opname}:{r.name}[:{tile}])"
                          + (f" reduction(|:{r.name}_nan[:{tile}])" if nan else ""))
            elif last and not tiled:
                pragma = f"{simd}{red_clause}"
            else:
                pragma = ""
            if pragma:
                body_lines.append(f"{indent}{pragma}")
            body_lines.append(f"{indent}for (int64_t {v} = 0; {v} < {size_c(size)}; {v}++) {{")
            indent += "  "
        if tiled:
            body_lines.append(f"{indent}{simd}")
            body_lines.append(f"{indent}for (int64_t j = 0; j < nb; j++) {{")
            indent += "  "
            body_lines.append(f"{indent}const int64_t x{n - 1} = xb + j;")
        inner = Body(k, body_lines, indent, acc_ref, {**(row_reads.get(r.name) or {}), **tnames})
        val = inner.emit(r.value)
        for cached, scratch, _ in row_cache.get(r.name, ()):
            body_lines.append(f"{indent}{scratch}[{r.rvars[0]}] = {inner.names[cached]};")
        if blocked:
            body_lines.append(f"{indent}{part} += {val};")
        elif r.op == "sum":
            body_lines.append(f"{indent}{name} += ({t}){val};")
        elif r.op == "prod":
            body_lines.append(f"{indent}{name} *= ({t}){val};")
        else:
            body_lines.append(f"{indent}{name} = (({t}){val} > {name}) ? ({t}){val} : {name};")
            if nan:
                body_lines.append(f"{indent}{nan} |= ({val} != {val});")
        depth = len(r.rvars) + (1 if tiled else 0)
        for i in range(depth):
            indent = indent[:-2]
            body_lines.append(f"{indent}}}")
            if tloads and i == 1:  # the block of reduction steps around the last one
                indent = indent[:-2]
                body_lines.append(f"{indent}}}")
            if spans and i == 0:
                if blocked:
                    body_lines.append(f"{indent}{name} += (double){part};")
                indent = indent[:-2]
                body_lines.append(f"{indent}}}")
        if nan and not tiled:
            body_lines.append(f"{indent}if ({nan}) {r.name} = ({t})NAN;")

    def stores(indent, acc_ref, body_lines, extra=None):
        """The stores' statements; `extra`: values to read instead of computing (split loops)."""
        body = Body(k, body_lines, indent, acc_ref, {**row_preset, **(extra or {})})
        # every value before any store: an output may overwrite an input in place (an optimizer
        # step), which the other outputs of this iteration still read
        values = [body.emit(s.value) for s in k.stores]
        for i, (s, v) in enumerate(zip(k.stores, values)):
            if s.dtype == "bool":
                v = f"({v} != 0)"
            elif s.dtype == "bfloat16":
                v = f"f32_to_bf16({v})"
            elif s.dtype == "float16":  # into an L1 block: it holds floats, narrowed as it leaves
                v = v if stream_at else f"f32_to_f16({v})"
            elif C_TYPES[s.dtype][0] != ctype(compute_dtype(s.dtype)):
                v = f"({C_TYPES[s.dtype][0]})({v})"
            target = f"sbuf{i}[x{n - 1} - {stream_at[-1]}]" if stream_at else f"b{s.buf}[{index_c(s.index)}]"
            body_lines.append(f"{indent}{target} = {v};")
        return body

    def store_loop(indent, x, start, end, bound, pragma):
        """The innermost loop, x{x} over [start, end) (at most `bound` iterations; None: a size that
        changes), storing: one loop, or with `stages` one loop per vector math call (call fission,
        FISSION_BLOCK)."""
        if not (stages and pragma):
            if pragma:
                lines.append(f"{indent}{pragma}")
            lines.append(f"{indent}for (int64_t x{x} = {start}; x{x} < {end}; x{x}++) {{")
            emit_level(n, indent + "  ")
            lines.append(f"{indent}}}")
            return
        if bound is None or bound > FISSION_BLOCK:
            lines.append(f"{indent}for (int64_t x{x}f = {start}; x{x}f < {end}; x{x}f += {FISSION_BLOCK}) {{")
            lines.append(f"{indent}  const int64_t x{x}fe = x{x}f + {FISSION_BLOCK} < {end} ? x{x}f + {FISSION_BLOCK} : {end};")
            store_loop(indent + "  ", x, f"x{x}f", f"x{x}fe", FISSION_BLOCK, pragma)
            lines.append(f"{indent}}}")
            return
        at = f"x{x} - {start}"

        def split(scratch: dict | None) -> tuple[list, dict]:
            """Each loop's statements and Body, and the loop that first computes each value; a
            later loop reads the values in `scratch` (None: all of them) from their arrays."""
            first: dict[Expr, int] = {}
            loops = []
            for j in range(len(stages) + 1):
                sl: list[str] = []
                extra = {e: f"{'fs' if scratch is None else scratch[e]}[{at}]" for e in first
                         if scratch is None or e in scratch}
                if j < len(stages):
                    body = Body(k, sl, indent + "  ", scalar_ref, {**row_preset, **extra})
                    body.emit(stages[j])
                else:
                    body = stores(indent + "  ", scalar_ref, sl, extra)
                for e in body.names:
                    if e not in body.preset and e.op not in _RECOMPUTED:
                        first.setdefault(e, j)
                loops.append((sl, body))
            return loops, first

        # first with every value kept, to learn which ones later loops read; then with those only
        loops, first = split(None)
        used = set().union(*(body.used for _, body in loops[1:]))
        scratch = {e: f"fs{i}" for i, e in enumerate(e for e in first if e in used)}
        loops, first = split(scratch)
        for e, name in scratch.items():
            lines.append(f"{indent}{ctype(compute_dtype(e.dtype))} {name}[{bound}] __attribute__((aligned(64)));")
        for j, (sl, body) in enumerate(loops):
            lines.append(f"{indent}{pragma}")
            lines.append(f"{indent}for (int64_t x{x} = {start}; x{x} < {end}; x{x}++) {{")
            lines.extend(sl)
            lines.extend(f"{indent}  {name}[{at}] = {body.names[e]};" for e, name in scratch.items() if first[e] == j)
            lines.append(f"{indent}}}")

    def block_loop(indent, var, start, end, pragma, body):
        """for var in [start, end): body() storing into L1 blocks, then each block copied out:
        streamed (`stream`), else with plain stores (float16 outputs of a kernel that does not
        stream, narrowed by `lz_copy_f16`)."""
        for i, st in enumerate(k.stores):
            t = "float" if st.dtype == "float16" else C_TYPES[st.dtype][0]
            lines.append(f"{indent}{t} sbuf{i}[{sblock}] __attribute__((aligned(64)));")
        stream_at.append(start)
        body(pragma)
        stream_at.pop()
        at = {sympy.Symbol(var, integer=True, nonnegative=True): sympy.Symbol(start, integer=True, nonnegative=True)}
        for i, st in enumerate(k.stores):
            dst = f"&b{st.buf}[{index_c(st.index.subs(at))}]"
            if st.dtype == "float16":
                lines.append(f"{indent}lz_{'stream' if stream else 'copy'}_f16({dst}, sbuf{i}, {end} - {start});")
            else:
                lines.append(f"{indent}{'lz_stream' if stream else 'memcpy'}({dst}, sbuf{i}, "
                             f"({end} - {start}) * (int64_t)sizeof(sbuf{i}[0]));")

    def parallel_open(indent, vector=False, grab=0, prologue=()):
        """The top-level parallel loop's pragma; streamed kernels fence each thread's stores.
        `vector`: the parallel loop is also the innermost one, so it carries `simd` too: inside
        the region gcc no longer sees the pointers as `restrict`, and with more than a few
        buffers it gives up on the runtime alias checks and leaves the loop scalar (an AdamW
        update over 200K elements with 4 outputs ran 375 us scalar).
        `grab`: iterations a thread takes at a time, as it goes (0: one static share each).
        `prologue`: lines each thread runs in the region before it takes iterations."""
        s = simd_clause if vector else ""
        sched = f"dynamic, {grab}" if grab else "static"
        if stream or prologue:
            lines.append(f"{indent}#pragma omp parallel{nt}")
            lines.append(f"{indent}{{")
            lines.extend(prologue)
            lines.append(f"{indent}#pragma omp for{s} schedule({sched}) nowait")
        else:
            lines.append(f"{indent}#pragma omp parallel for{s}{nt} schedule({sched})")

    def parallel_close(indent, region=False):
        if stream:
            lines.append(f"{indent}lz_stream_fence();")
        if stream or region:
            lines.append(f"{indent}}}")

    def column_prologue(indent) -> list[str]:
        """Each thread converts the column cache's loads (`_column_cache`) into its own arrays, and
        declares the row arrays of `thread_rows` (once, not per row call)."""
        out = [f"{indent}float {name}[{_row_array(k)}] __attribute__((aligned(64)));" for name in thread_rows]
        if not cols:
            return out
        xin, size = f"x{n - 1}", k.loops[-1]
        out += [f"{indent}float {name}[{_row_array(k)}] __attribute__((aligned(64)));" for _, name in cols]
        out += [f"{indent}{simd}", f"{indent}for (int64_t {xin} = 0; {xin} < {size_c(size)}; {xin}++) {{"]
        body = Body(k, out, indent + "  ", scalar_ref)
        out += [f"{indent}  {name}[{xin}] = {body.emit(e)};" for e, name in cols]
        return out + [f"{indent}}}"]

    def scalar_ref(name):
        return name

    def emit_transposed(indent):
        """A pointwise kernel in tiles of tile_rows x tile_cols over loops x{a} and x{n-1} (`tplan`),
        the other loops outside, threads over all of them; per tile the transposed loads are copied
        into L1 arrays along x{a}, then the stores run with x{n-1} innermost, reading those arrays."""
        a, v = tplan.axis, n - 1
        trows, tcols = knobs.src(cfg, "tile_rows"), knobs.src(cfg, "tile_cols")
        lines.append(f"{indent}/* {tplan.describe()} (codegen/tiling.py) */")
        if outer_parallel:
            lines.append(f"{indent}#pragma omp parallel for collapse({n}){nt} schedule(static)")
        for i in range(n):
            if i not in (a, v):
                lines.append(f"{indent}for (int64_t x{i} = 0; x{i} < {size_c(k.loops[i])}; x{i}++)")
        # the tiles along x{a} innermost: the next tile continues the strided load's rows where the
        # last one left them (4096x4096 copy of a transpose: 1.8x faster than the other order)
        for i, step in ((v, tcols), (a, trows)):
            lines.append(f"{indent}for (int64_t x{i}b = 0; x{i}b < {size_c(k.loops[i])}; x{i}b += {step})")
        lines.append(f"{indent}{{")
        ind = indent + "  "
        for i, step in ((a, trows), (v, tcols)):
            size = size_c(k.loops[i])
            lines.append(f"{ind}const int64_t x{i}e = x{i}b + {step} < {size} ? x{i}b + {step} : {size};")
        at = f"(x{a} - x{a}b) * {tcols} + (x{v} - x{v}b)"
        names = {}
        for i, (ld, _) in enumerate(tplan.loads):
            names[ld] = f"tt{i}[{at}]"
            lines.append(f"{ind}{ctype(compute_dtype(ld.dtype))} tt{i}[{trows} * {tcols}] __attribute__((aligned(64)));")
        lines.append(f"{ind}for (int64_t x{v} = x{v}b; x{v} < x{v}e; x{v}++) {{")
        lines.append(f"{ind}  {simd}")
        lines.append(f"{ind}  for (int64_t x{a} = x{a}b; x{a} < x{a}e; x{a}++) {{")
        copy = Body(k, lines, ind + "    ", scalar_ref)
        for i, (ld, _) in enumerate(tplan.loads):
            val = copy.emit(ld)
            lines.append(f"{ind}    tt{i}[{at}] = {val};")
        lines.append(f"{ind}  }}")
        lines.append(f"{ind}}}")
        lines.append(f"{ind}for (int64_t x{a} = x{a}b; x{a} < x{a}e; x{a}++) {{")
        lines.append(f"{ind}  {simd}")
        lines.append(f"{ind}  for (int64_t x{v} = x{v}b; x{v} < x{v}e; x{v}++) {{")
        stores(ind + "    ", scalar_ref, lines, names)
        lines.append(f"{ind}  }}")
        lines.append(f"{ind}}}")
        lines.append(f"{indent}}}")

    def emit_level(d, indent):
        if d == 0 and tpoint:
            emit_transposed(indent)
            return
        if d == n - 1:
            for entries in row_cache.values():
                for _, scratch, _ in entries:
                    if scratch not in thread_rows:
                        lines.append(f"{indent}float {scratch}[{_row_array(k)}];")
        plan = _prefetch_plan(k, d, cfg, rows) if not (swap or interchange or rsplit) else None
        shares = plan[0] if plan else {}
        for r in k.reduces:
            if r.depth == d:
                reduction_loop(r, indent, scalar_ref, False, lines,
                               (plan[1], shares[r.name]) if r.name in shares else None)
        store_prefetch = (plan[1], shares["stores"]) if "stores" in shares else None
        if d == n:
            stores(indent, scalar_ref, lines)
            return
        if interchange and d == n - 1:
            emit_tiled(indent)
            return
        x = n - 1 - d if swap else d
        size, at_hint = size_c(k.loops[x]), hint(k, k.loops[x])  # (C; the number decisions take)
        if chunk and d == 0:  # parallel over chunks, each one vector loop
            if outer_parallel:
                parallel_open(indent, grab=_grab_elements(at_hint) // chunk if split_chunks
                              else _grab(-(-at_hint // chunk)))
            lines.append(f"{indent}for (int64_t x{x}c = 0; x{x}c < {size}; x{x}c += {chunk}) {{")
            lines.append(f"{indent}  const int64_t x{x}e = x{x}c + {chunk} < {size} ? x{x}c + {chunk} : {size};")
            if blocks:
                block_loop(indent + "  ", f"x{x}", f"x{x}c", f"x{x}e", simd,
                              lambda p: store_loop(indent + "  ", x, f"x{x}c", f"x{x}e", chunk, p))
            else:
                store_loop(indent + "  ", x, f"x{x}c", f"x{x}e", chunk, simd)
            lines.append(f"{indent}}}")
            if outer_parallel:
                parallel_close(indent)
            return
        if row_fn and d == 0:  # the row as a function with restrict parameters, called in parallel
            start = len(lines)
            emit_level(d + 1, "  ")
            body = lines[start:]
            del lines[start:]
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{linkage}void {fn_name}("))
            row_params = (params + [f"const float* restrict {name}" for _, name in cols]
                          + [f"float* restrict {name}" for name in thread_rows])
            lines[at:at] = [f"static inline void {fn_name}_row(int64_t x{x}, {', '.join(row_params)}) {{", *body, "}"]
            args = ", ".join([f"b{i}" for i in range(len(k.buffers))] + [f"s{i}" for i in range(len(k.scalars))]
                             + list(k.sizes) + [name for _, name in cols] + thread_rows)
            prologue = column_prologue(indent)
            parallel_open(indent, grab=_grab(at_hint), prologue=prologue)
            lines.append(f"{indent}for (int64_t x{x} = 0; x{x} < {size}; x{x}++) {fn_name}_row(x{x}, {args});")
            parallel_close(indent, region=bool(prologue))
            return
        vector = d == n - 1 and not any(r.depth == n for r in k.reduces) and not short_gather
        if blocks and d == n - 1 and n >= 2:  # the innermost row in blocks
            blk = min(sblock, _store_span(store_prefetch)) if store_prefetch else sblock
            lines.append(f"{indent}for (int64_t x{x}b = 0; x{x}b < {size}; x{x}b += {blk}) {{")
            lines.append(f"{indent}  const int64_t x{x}e = x{x}b + {blk} < {size} ? x{x}b + {blk} : {size};")
            if store_prefetch:
                prefetch_lines(indent + "  ", d, store_prefetch, f"x{x}", lines)
            block_loop(indent + "  ", f"x{x}", f"x{x}b", f"x{x}e", simd if vector else "",
                          lambda p: store_loop(indent + "  ", x, f"x{x}b", f"x{x}e", blk, p))
            lines.append(f"{indent}}}")
            return
        if store_prefetch:  # the row's store loop in spans, each prefetching its part of the next row
            span = _store_span(store_prefetch)
            lines.append(f"{indent}for (int64_t x{x}b = 0; x{x}b < {size}; x{x}b += {span}) {{")
            lines.append(f"{indent}  const int64_t x{x}e = x{x}b + {span} < {size} ? x{x}b + {span} : {size};")
            prefetch_lines(indent + "  ", d, store_prefetch, f"x{x}", lines)
            store_loop(indent + "  ", x, f"x{x}b", f"x{x}e", _cap(k.loops[x], span), simd if vector else "")
            lines.append(f"{indent}}}")
            return
        top = d == 0 and outer_parallel
        if vector and not top:
            store_loop(indent, x, "0", size, None if _symbolic(k.loops[x]) else k.loops[x], simd)
            return
        if top:
            by_rows = any(r.depth >= 1 and r.rvars for r in k.reduces)
            parallel_open(indent, vector, _grab(at_hint) if by_rows else _grab_elements(at_hint) if vector and n == 1
                          else 0)
        elif vector:
            lines.append(f"{indent}{simd}")
        lines.append(f"{indent}for (int64_t x{x} = 0; x{x} < {size}; x{x}++) {{")
        emit_level(d + 1, indent + "  ")
        lines.append(f"{indent}}}")
        if top:
            parallel_close(indent)

    def emit_tiled(indent):
        size = size_c(k.loops[n - 1])
        tiled_accs = {r.name for r in k.reduces if r.depth == n}
        tiled_accs |= {f"{a}_nan" for a in tiled_accs}

        def tile_ref(name):
            return f"{name}[j]" if name in tiled_accs else name

        if n == 1 and outer_parallel:
            lines.append(f"{indent}#pragma omp parallel for{nt} schedule(static)")
        lines.append(f"{indent}for (int64_t xb = 0; xb < {size}; xb += {tile}) {{")
        ind = indent + "  "
        lines.append(f"{ind}const int64_t nb = {size} - xb < {tile} ? {size} - xb : {tile};")
        for r in k.reduces:
            if r.depth != n:
                continue
            t = _acc_type(r)
            lines.append(f"{ind}{t} {r.name}[{tile}];")
            if r.op == "max" and _is_float(t):
                lines.append(f"{ind}int {r.name}_nan[{tile}];")
                lines.append(f"{ind}for (int64_t j = 0; j < {tile}; j++) {r.name}_nan[j] = 0;")
            lines.append(f"{ind}for (int64_t j = 0; j < {tile}; j++) {r.name}[j] = {_init(r)};")
            reduction_loop(r, ind, tile_ref, True, lines)
            if r.op == "max" and _is_float(t):
                lines.append(f"{ind}for (int64_t j = 0; j < nb; j++) if ({r.name}_nan[j]) {r.name}[j] = ({t})NAN;")
        lines.append(f"{ind}{simd}")
        lines.append(f"{ind}for (int64_t j = 0; j < nb; j++) {{")
        lines.append(f"{ind}  const int64_t x{n - 1} = xb + j;")
        stores(ind + "  ", tile_ref, lines)
        lines.append(f"{ind}}}")
        lines.append(f"{indent}}}")

    emit_level(0, "  ")
    if stream:
        lines.append("  lz_stream_fence();")
    lines.append("}")
    return "\n".join(lines) + "\n", bool(row_cache or cols)


# -- row cache ---------------------------------------------------------------------------------
# softmax's store loop recomputes exp(x - max) that its sum loop already computed. When a
# reduction runs over exactly the row the following store loop walks, the expensive values the
# two share are kept in a per-thread row buffer (it stays in L1/L2) instead of being recomputed;
# later reductions over the row read it too. A float16 or bfloat16 load counts as expensive: its
# conversion is a dozen vector operations, and a float16 layer norm converted its input in each of
# its three passes (with the row converted once: 2.56 -> 1.85 ns per element on one AVX2 thread).
ROW_CACHE_MAX = 16384
_EXPENSIVE = {"exp", "log", "tanh", "erf", "sin", "cos", "pow"}
_CONVERTED = ("float16", "bfloat16")  # loads the row cache keeps as float


def _subexprs(e: Expr, out: set) -> set:
    if e not in out:
        out.add(e)
        for s in e.srcs:
            _subexprs(s, out)
    return out


def _expensive(e: Expr, memo: dict) -> bool:
    hit = memo.get(id(e))
    if hit is None:
        hit = (e.op in _EXPENSIVE or e.op == "load" and e.dtype in _CONVERTED
               or any(_expensive(s, memo) for s in e.srcs))
        memo[id(e)] = hit
    return hit


def _row_preset(row_cache: dict, n: int) -> dict:
    """What the store loop reads for each value the row cache holds."""
    return {e: f"{scratch}[x{n - 1}]" for entries in row_cache.values() for _, scratch, e in entries}


# -- column cache ------------------------------------------------------------------------------
# A norm's weight and bias are read by every row: in float16 each row converted them again, per
# element. Loads of the store loop that depend on the innermost index alone are converted once per
# thread, before it takes rows, into arrays the row function reads (a (64, 4096) float16 layer
# norm on one AVX2 thread: 1.87 -> 0.95 ns per element).
COLUMN_CACHE_MIN_ROWS = 8  # rows of the kernel from which the conversions pay for themselves
COLUMN_CACHE_MAX = 4  # arrays per thread (each of up to ROW_FN_MAX floats)


def _column_cache(k: Kernel, rows: int | None = None) -> list[tuple[Expr, str]]:
    """[(half-precision load of the store loop whose index is the innermost loop index alone,
    name of its per-thread float array)]. `rows`: as for `_row_cache`."""
    n = len(k.loops)
    if n < 2 or math.prod(hint(k, s) for s in k.loops[:-1]) < COLUMN_CACHE_MIN_ROWS \
            or not _row_fits(k, ROW_FN_MAX, rows):
        return []
    xin = sympy.Symbol(f"x{n - 1}", integer=True, nonnegative=True)
    out: list[tuple[Expr, str]] = []
    seen: set = set()
    for st in k.stores:
        for e in _loads(st.value):
            _, index, mask = e.arg
            if (e.dtype in _CONVERTED and not mask and index.free_symbols == {xin} and e not in seen
                    and len(out) < COLUMN_CACHE_MAX):
                seen.add(e)
                out.append((e, f"col{len(out)}"))
    return out


def _row_reads(k: Kernel, row_cache: dict) -> dict:
    """{reduce name: what its loop reads from the row cache instead of computing}: the values that
    an earlier reduction over the same row keeps (a float16 layer norm's variance pass reads the
    row its mean pass converted)."""
    n = len(k.loops)
    if not row_cache:
        return {}
    xin = sympy.Symbol(f"x{n - 1}", integer=True, nonnegative=True)
    out: dict = {}
    kept: list = []  # (store-loop expression, scratch) of the reductions emitted so far
    for r in k.reduces:
        if r.depth != n - 1 or len(r.rvars) != 1 or r.rsizes[0] != k.loops[-1]:
            continue
        if kept:
            rv = sympy.Symbol(r.rvars[0], integer=True, nonnegative=True)
            inside, memo = _subexprs(r.value, set()), {}
            reads = {moved: f"{scratch}[{rv}]" for e, scratch in kept
                     if (moved := subst_expr(e, {xin: rv}, memo)) in inside}
            if reads:
                out[r.name] = reads
        kept += [(e, scratch) for _, scratch, e in row_cache.get(r.name, ())]
    return out


def _row_fits(k: Kernel, limit: int, rows: int | None) -> bool:
    """Whether arrays of one row (the innermost loop) of `k` fit `limit` elements. A row length that
    changes fits when the rendering is for rows of at most `rows` elements (`_row_bound`: the
    kernel checks the length at run time) and its hint fits too."""
    length = k.loops[-1]
    if not _symbolic(length):
        return length <= limit
    return rows is not None and rows <= limit and hint(k, length) <= limit


def _row_array(k: Kernel) -> str:
    """The extent of a row array (row and column caches) in C: the row length. A length that changes
    makes it a variable-length array, in a rendering for rows of at most ROW_CACHE_MAX elements only
    (`_row_bound`: the kernel checks the length first). Arrays of ROW_CACHE_MAX elements instead ran
    a 4096-wide softmax 7-10% slower on one thread (the row's 16 KiB at the start of a 64 KiB array)."""
    return size_c(k.loops[-1])


def _row_cache(k: Kernel, parallel: bool, rows: int | None = None) -> dict:
    """{reduce name: [(expr in the reduce loop, scratch name, same expr in the store loop)]}: the
    values that reduction keeps in a row buffer for the store loop (`_row_preset`) and for later
    reductions over the same row (`_row_reads`). A row of a length that changes is kept only in a
    rendering for rows of at most `rows` elements (`_row_bound`), in arrays of its length."""
    n = len(k.loops)
    if n < 2 and parallel or n == 0 or not _row_fits(k, ROW_CACHE_MAX, rows):
        return {}
    xin = sympy.Symbol(f"x{n - 1}", integer=True, nonnegative=True)
    out: dict = {}
    taken: set = set()
    exp_memo: dict = {}
    for r in k.reduces:
        if r.depth != n - 1 or len(r.rvars) != 1 or r.rsizes[0] != k.loops[-1]:
            continue
        inside = _subexprs(r.value, set())
        rep = {xin: sympy.Symbol(r.rvars[0], integer=True, nonnegative=True)}
        memo: dict = {}
        stack = [s.value for s in k.stores]
        while stack:
            e = stack.pop()
            if e in taken or not _expensive(e, exp_memo) or e.op in ("const", "scalar", "acc"):
                continue
            moved = subst_expr(e, rep, memo)
            if moved in inside and moved.dtype in ("float32", "float16", "bfloat16"):
                scratch = f"row{len(taken)}"
                out.setdefault(r.name, []).append((moved, scratch, e))
                taken.add(e)
                continue
            stack.extend(e.srcs)
    return out


# -- call fission ------------------------------------------------------------------------------
_RECOMPUTED = {"const", "scalar", "load", "index", "valid", "acc"}  # cheaper to redo in a later loop than to keep


def _varies(e: Expr, var: sympy.Symbol, memo: dict) -> bool:
    hit = memo.get(id(e))
    if hit is None:
        if e.op == "load":
            hit = var in e.arg[1].free_symbols or any(var in a.free_symbols for _, a, _ in e.arg[2] or ())
        elif e.op == "valid":
            hit = any(var in a.free_symbols for _, a, _ in e.arg)
        elif e.op == "index":
            hit = var in e.arg.free_symbols
        else:
            hit = any(_varies(s, var, memo) for s in e.srcs)
        memo[id(e)] = hit
    return hit


def _fission_stages(k: Kernel, cfg: CConfig, rows: int | None = None) -> list[Expr]:
    """`_call_stages` of the store loop `render_c` emits for `k` under `cfg` (empty: one loop);
    `rows` as for `_row_cache`."""
    n = len(k.loops)
    if n == 0 or cfg.fission is False or any(r.depth == n for r in k.reduces):
        return []  # no vector store loop (column tiles, or a loop of reductions)
    swap = bool(cfg.interchange) and _interchange_legal(k)
    preset = _row_preset(_row_cache(k, _work(k) >= cfg.parallel_min_work, rows), n)
    return _call_stages(k, sympy.Symbol(f"x{0 if swap else n - 1}", integer=True, nonnegative=True), preset)


def _call_stages(k: Kernel, var: sympy.Symbol, preset: dict) -> list[Expr]:
    """The vector math calls (exp, tanh, log...) after which the store loop along `var` splits:
    all but the last of those that vary along `var`, in the order the loop computes them. Empty
    when the loop makes fewer than two such calls. `preset`: values the loop reads instead of
    computing (the row cache)."""
    body = Body(k, [], "", lambda name: name, preset)
    for st in k.stores:
        body.emit(st.value)
    memo: dict = {}
    calls = [e for e in body.names if e not in body.preset and e.op in _EXPENSIVE
             and compute_dtype(e.dtype) in ("float32", "float64") and _varies(e, var, memo)]
    return calls[:-1]
