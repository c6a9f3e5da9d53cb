"""Transposed tiles: kernels whose loads and stores disagree on the contiguous axis.

In:  a `Kernel` and the tile knobs of a C config (codegen/render_c.py `CConfig`: `transpose`,
     `tile_rows`, `tile_cols`, and `tile`, the columns of an interchanged reduction), or of a
     Triton one (codegen/render_triton.py `TritonConfig`: `transpose`, `YBLOCK`, `XBLOCK`).
Out: `plan(...)`: a `TilePlan` naming the loads that are read through L1 tiles, the loop variable
     they are contiguous along, and the tile's extent; None where the kernel keeps its plain nest.
     render_c prints the nest the plan describes (`_render`: `emit_transposed`, and the blocked
     reduction loop of `reduction_loop`); render_triton the same tiles as [YBLOCK, XBLOCK] blocks
     whose transposed loads are read along `a` and turned with `tl.trans` (`transpose_plan`,
     `turned_reduction_loads`).

Why. `x.permute(1, 0) + y` is a loop nest whose innermost (vector) loop `v` walks `y` and the
output contiguously and `x` a whole row apart: every element of `x` costs a cache line, and rows
4096 floats apart share one L1 set, so the lines are evicted before the next `v` row would use them
(4096x4096: 3 GB/s against a 35 GB/s triad). The fix is the classic one: cut the two axes that
disagree (`a`, along which the strided load is contiguous, and `v`) into tiles of `rows x cols`
elements, and per tile
  1. copy each strided load into an L1 array `tt[ia][iv]`, walking it along `a` (contiguous
     reads, one cache line used whole), `rows * cols` elements of the compute type (float for
     float16/bfloat16: the conversion happens once, in the copy);
  2. run the kernel's own body over the tile, `v` innermost and vectorized, reading the copied
     loads from `tt` (contiguous) and every other load and store from memory as before.
Threads share the tiles: one `omp parallel for collapse` over the other loops and both tile loops,
the tiles along `a` innermost, so consecutive tiles continue the strided load's rows.

Reductions use the same copy. An interchanged (column) reduction already runs a tile of `tile`
output columns (`v`, the `j` loop) against its reduction variable `r`; a load contiguous along `r`
but strided along `v` (`(x.T * y).sum(0)`, and `sum(1)` of the same product) is copied a block of
`rows` reduction steps at a time into `tt[ir][j]`, and the accumulation reads it from there.

Which loads. A load is transposed when its index is affine in `a` and `v` with a small stride
along `a` (at most TRANSPOSE_A_BYTES apart: a line holds several consecutive elements) and a
stride of at least a cache line (LINE bytes) along `v`. Strides that are sizes that change are
judged at their hints: the tiles are right for any value, only the choice of plan takes hints.

Triton. A pointwise plan is one [YBLOCK, XBLOCK] block per program over `a` and `v` (XBLOCK along
`v`), its transposed loads read as [XBLOCK, YBLOCK] along `a` and turned with `tl.trans`; no L1
budget applies (`budget=None`: the block lives in registers and shared memory, bounded by
render_triton's config check). A reduction plan keeps Triton's [XBLOCK, RBLOCK] block, whose last
axis is the reduced one: the planned loads already walk it, and the loads turned there are the
others, contiguous along the rows (`transposed` with `a` and `v` swapped).

Not tiled (yet): a kernel whose stores are strided along its innermost loop (an assignment into a
transposed view), pointwise kernels that also reduce, loads whose index is not affine in the two
axes (a reshape of a transpose, `//` and `%`), and on Triton reductions over some loops only (rows
of a softmax over a transpose: the rows come from `xindex` with `//` and `%`). The Triton tiles
are not measured on a GPU yet: their default extents (render_triton's TILE_X, TILE_Y) are guesses
for `lazy tune` to correct.

Invariants
- Tiles keep fixed extents whatever the sizes: every tile loop computes its end at run time
  (`min(start + rows, size)`), so a size of 0, 1, or one not a multiple of the tile is right.
- Legality: a pointwise kernel is tiled only when every load of a buffer it writes reads the same
  element the kernel writes there (any loop order is then the same computation); a reduction
  only reorders its own reads.
- Plans are decided from the kernel and the knobs alone: `CConfig()` renders the same code every
  time, and `transpose=False` renders the nest that the kernel had before tiles existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from codegen.kernel_ir import ITEMSIZE, Expr, Kernel, hint, size_symbol

# default tile extents along `a` (the strided load's contiguous axis) and `v` (the vector loop):
# 8 KiB of float per copied load. 2048^2 and 4096^2 float32 `x.T + y`, `x.T.contiguous()` and
# `(x.T * y).sum(0 or 1)`, 1 and 2 threads: 32x32, 64x64, 64x16, 16x64 and 32x64 all ran within
# 1.5x of each other (on a busy machine), 32x64 and 64x64 nearest the best throughout
TILE_ROWS = 32
TILE_COLS = 64
MAX_TTILE = 256  # largest extent a knob may ask for: 256x256 doubles is 512 KiB of stack
TILE_BUF_MAX = 128 << 10  # bytes of transposed tiles one thread keeps (else: no plan)
LINE = 64  # bytes per cache line
TRANSPOSE_A_BYTES = 16  # a stride along `a` of at most this many bytes counts as contiguous


@dataclass(frozen=True)
class TilePlan:
    """kind "pointwise": loop `axis` (an index into `Kernel.loops`) is `a`, the innermost loop `v`;
    kind "reduction": each load's `a` is the last reduction variable of its reduction, `v` the
    column (`j`) of an interchanged reduction's tile. `loads`: (load, name of its `a` variable)."""

    kind: str
    axis: int
    loads: tuple[tuple[Expr, str], ...]
    rows: int
    cols: int

    def describe(self) -> str:
        names = sorted({f"b{ld.arg[0]}" for ld, _ in self.loads})
        return (f"{self.kind} tiles of {self.rows}x{self.cols}: {', '.join(names)} read through L1 tiles "
                f"along {self.loads[0][1]}")


def _var(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, nonnegative=True)


def _loads(e: Expr, seen: set) -> list[Expr]:
    out = []
    stack = [e]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.op == "load":
            out.append(e)
        stack.extend(e.srcs)
    return out


def strides(k: Kernel, index, a: sympy.Symbol, v: sympy.Symbol) -> tuple[int, int] | None:
    """(stride along a, stride along v) of `index` at the hints, or None unless it is affine in
    both (`c_a * a + c_v * v + terms free of a and v`, the coefficients sizes)."""
    idx = sympy.expand(sympy.sympify(index))
    ca, cv = idx.coeff(a), idx.coeff(v)
    sizes = {size_symbol(n) for n in k.sizes}
    if not (ca.free_symbols <= sizes and cv.free_symbols <= sizes):
        return None
    if {a, v} & (idx - ca * a - cv * v).free_symbols:
        return None
    return hint(k, ca), hint(k, cv)


def transposed(k: Kernel, ld: Expr, a: sympy.Symbol, v: sympy.Symbol) -> bool:
    """Whether load `ld` is contiguous along `a` and a cache line or more apart along `v`."""
    s = strides(k, ld.arg[1], a, v)
    if s is None:
        return False
    item = ITEMSIZE[ld.dtype]
    sa, sv = abs(s[0]), abs(s[1])
    return 0 < sa and sa * item <= TRANSPOSE_A_BYTES and sv * item >= LINE


def _buffer_bytes(loads, rows: int, cols: int) -> int:
    return sum(rows * cols * (8 if ITEMSIZE[ld.dtype] == 8 else 4) for ld, _ in loads)


def plan(k: Kernel, *, transpose: bool | None, rows: int, cols: int, interchange: bool, tile: int,
         budget: int | None = TILE_BUF_MAX) -> TilePlan | None:
    """The tiles `k` runs in (see the module docstring), or None. `interchange`: whether the
    renderer runs `k`'s reductions as column tiles of `tile` columns. `budget`: bytes of tiles one
    C thread keeps in L1 (a plan that needs more is none); None for Triton, whose blocks live in
    registers and shared memory and are bounded by its config check instead."""
    if transpose is False or not k.loops:
        return None
    n = len(k.loops)
    v = _var(f"x{n - 1}")
    if not k.reduces and n >= 2:
        return _pointwise(k, v, rows, cols, budget)
    if interchange and any(r.depth == n and r.rvars for r in k.reduces):
        loads = []
        for r in k.reduces:
            if r.depth != n or not r.rvars:
                continue
            a = _var(r.rvars[-1])
            loads += [(ld, r.rvars[-1]) for ld in _loads(r.value, set()) if transposed(k, ld, a, v)]
        if loads and (budget is None or _buffer_bytes(loads, rows, tile) <= budget):
            return TilePlan("reduction", n - 1, tuple(loads), rows, tile)
    return None


def _pointwise(k: Kernel, v: sympy.Symbol, rows: int, cols: int, budget: int | None) -> TilePlan | None:
    n = len(k.loops)
    seen: set = set()
    loads = [ld for s in k.stores for ld in _loads(s.value, seen)]
    if hint(k, k.loops[-1]) < 2:
        return None
    for st in k.stores:  # the stores walk the vector loop contiguously
        s = strides(k, st.index, _var("x0") if n > 1 else v, v)
        if s is None or s[1] != 1:
            return None
    written = {}
    for st in k.stores:
        written.setdefault(st.buf, set()).add(sympy.expand(st.index))
    for ld in loads:  # a buffer the kernel writes is read only where it is written
        if ld.arg[0] in written and sympy.expand(ld.arg[1]) not in written[ld.arg[0]]:
            return None
    best: tuple[int, int, list] | None = None
    for i in range(n - 1):
        if hint(k, k.loops[i]) < 2:
            continue
        a = _var(f"x{i}")
        picked = [ld for ld in loads if transposed(k, ld, a, v)]
        weight = sum(ITEMSIZE[ld.dtype] for ld in picked)
        if picked and (best is None or weight > best[0]):
            best = (weight, i, picked)
    if best is None:
        return None
    _, i, picked = best
    pairs = tuple((ld, f"x{i}") for ld in picked)
    if budget is not None and _buffer_bytes(pairs, rows, cols) > budget:
        return None
    return TilePlan("pointwise", i, pairs, rows, cols)
