"""Triton backend renderer: Kernel IR -> one Python module with a `@triton.jit` kernel and a launcher.

In:  a `Kernel` and a `TritonConfig` (block sizes, warps; `choose_config` picks one; checked by
     `check_config` before anything is rendered, its values formatted only through `knobs.src`).
Out: Python source defining the kernel (named after `Kernel.name`), `launch(b0, b1, ..., s0, ...,
     d0, ...)` that launches it on torch tensors in `Kernel.buffers` order, then its scalars and its
     sizes, and the metadata an ahead-of-time compile needs (`KERNEL`, `SIGNATURE`, `CONSTEXPRS`,
     `NUM_WARPS`, `NUM_STAGES`, `GRID`; for a kernel with sizes also `SIZES`, `HINTS`, `grid(d0, ...)`,
     and `VARIANTS` when it has two forms, see below).

Mapping (Inductor's `(numel, rnumel)` model)
- Pointwise kernels (no reductions): the loops flatten into one `xindex` of XBLOCK elements per
  program, with a tail mask; `x_i` are recovered from `xindex` with `//` and `%`.
- Pointwise kernels whose loads and stores disagree on the contiguous axis (`x.T + y`, a permute
  copied out; codegen/tiling.py's plan, `transpose_plan`): the flat block would read a strided load
  a row apart per lane. Instead a program is a [YBLOCK, XBLOCK] tile of loops x{a} (the strided
  loads' contiguous loop) and x{v} (the last, the stores'), the other loops one value each; the
  strided loads are read as [XBLOCK, YBLOCK] blocks over the variables turned over (`x{a}t` along
  the block), so each walks its own contiguous axis, and turned with `tl.trans` (through shared
  memory on the GPU) before they meet the stores' layout. Tiles along x{a} are neighbouring programs.
- Kernels with reductions: the loops outside the deepest reduction (`x0..x{D-1}`,
  D = max depth) form `xindex` ([XBLOCK, 1], one row per lane); the program then runs every
  stage one after another: each reduction over its own `rindex` ([1, RBLOCK]), and finally the
  stores, which loop over the remaining loops `x{D}..` in RBLOCK blocks when D < len(loops).
  A stage whose size fits in RBLOCK is one block ("persistent": no loop); persistent stages of
  the same shape share their index variables, so softmax's max, sum and output read the row
  from memory once (the loads are common subexpressions). Larger stages loop with a tail mask.
  Reductions shallower than D are recomputed per row of the program (correct, rarely emitted).
  A reduction over every loop whose reduced axis disagrees with the rows' contiguous one
  (`(x.T * y).sum(0)`, where tiling.py tiles the C kernel) reads the loads contiguous along the
  rows as [RBLOCK, XBLOCK] blocks and turns them (`turned_reduction_loads`): every load then walks
  the block's last axis.
- Loads are masked by the IR's conditions and the tail masks of the variables they use,
  `other=0`; reductions replace masked lanes by the identity.
- Index arithmetic is int32 unless some index (or a subterm) can exceed 2**31-1; then `xindex`
  and `rindex` are int64 and everything derived from them is too.

Sizes that change (`Kernel.sizes`, codegen/kernel_ir.py: sizes are polynomials in `d0, d1, ...`)
- The kernel takes `d0, d1, ...` after its scalars, annotated `i64` (products of sizes do not
  overflow) and listed in `do_not_specialize`: Triton 3.9 otherwise keys its binaries on an int
  argument being 1 (a constexpr), divisible by 16, or past int32, so sizes would recompile; with
  both, every size has the same key and one binary serves all (at the price of the divisibility
  hint, as Inductor's dynamic kernels). The body starts with `d0 = d0.to(tl.int64)`: a no-op on the
  GPU, and int64 under the interpreter, which ignores annotations.
- Every size is printed as an expression of them: loop bounds, `//` and `%` of the index
  variables, coefficients, masks. A tail mask is left out only where the block divides the size
  for every value (every coefficient of the polynomial). A condition on sizes alone is dropped or
  found false when it holds or fails for every size >= 2 (`nonnegative`), else evaluated at run
  time. Indices are int64 in every kernel that uses a size symbol (no bound is known).
- `GRID` is `triton.cdiv(numel, XBLOCK)` from the sizes at launch (`grid`; no program when there
  is nothing to compute; Triton launches nothing for an empty grid).
- The config (`choose_config`, `search_space`, `valid_config`) reads sizes at their hints; the
  code is right for every size. Reduced dims that change: a row that is one block at the hints is
  rendered twice in one kernel, under the constexpr `LOOPED` that `launch` sets when a symbolic
  stage is longer than RBLOCK: `LOOPED=False` keeps such stages one block (persistent: softmax
  still reads its row once), `LOOPED=True` loops over them in RBLOCK blocks. Each form compiles
  the first time a size needs it (two binaries at most); static stages are the same in both. A
  row longer than RBLOCK at the hints has only the looped form.

Semantics mirror codegen/render_c.py
- Every dtype decision is in the Kernel IR (codegen/legalize.py): narrow dtypes compute in
  `compute_dtype` (float16/bfloat16 load as float32, int8/uint8 as int32), `round` and `wrap`
  nodes narrow values where the IR says; stores and reduction results convert to their dtype.
- max/min propagate NaN; floor division and remainder follow torch for floats and ints; integer
  division by zero gives 0; float32 division and sqrt are IEEE-rounded (`div_rn`, `sqrt_rn`).
- float sums/products in looped reductions accumulate in float64 (per-lane partial sums over many
  iterations: the cheap place to lose accuracy); one-block reductions are a tree in float32.
- tanh, float pow and fmod call libdevice on the GPU. The interpreter cannot call libdevice and
  has its own flaws (float32->bfloat16 truncates; custom reductions run element by element), so
  a few jitted helpers branch on the module-level constexpr `_INTERPRET`: tanh/pow in float64
  from exp/log, bfloat16 rounding by bit arithmetic, max-reduction as a max plus a NaN count,
  and row sums/maxes through the builtin `tl.reduce` with Triton's combine functions rather than
  `tl.sum`/`tl.max` (@triton.jit functions themselves, compiled-mode if triton was imported before
  TRITON_INTERPRET was set), so generated code runs whenever triton was first imported.
  Constants and loads at a fixed index (0-d and size-1 operands) are one-element blocks rather
  than 0-d tensors: the interpreter types a 0-d comparison as its operands' dtype and broadcasts
  it as a float array, so `(a > b) | (a != a)` in `_lz_max` fails. On the GPU the one-element
  block lowers to the same scalar load (identical PTX).
- Index 0 of a buffer is the launcher argument's `data_ptr()` (the view's first element).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import sympy

from codegen import knobs, tiling
from codegen.index_ops import FloorDiv, ModIdx
from codegen.kernel_ir import (
    Expr,
    Kernel,
    Reduce,
    Store,
    compute_dtype,
    hint,
    index_exprs,
    kernel_exprs,
    subst_expr,
    walk_exprs,
)
from codegen.knobs import REQUIRED, flag, integer, knob

INT32_MAX = 2**31 - 1

TL = {"float32": "tl.float32", "float64": "tl.float64", "float16": "tl.float16", "bfloat16": "tl.bfloat16",
      "int32": "tl.int32", "int64": "tl.int64", "int8": "tl.int8", "uint8": "tl.uint8", "bool": "tl.int1"}
# scalar argument types (a kernel's `scalars`, in their compute dtype) for signatures and annotations
SCALAR_SIG = {"float32": "fp32", "float64": "fp64", "float16": "fp32", "bfloat16": "fp32", "int32": "i32",
              "int64": "i64", "int8": "i32", "uint8": "i32", "bool": "i1"}


def scalar_signature(dtypes: tuple[str, ...]) -> dict[str, str]:
    """{parameter: Triton type} of a kernel's scalar arguments: `s0, s1, ...` after its buffers."""
    return {f"s{i}": SCALAR_SIG[dt] for i, dt in enumerate(dtypes)}


# pointer element types for triton.compile signatures
SIG = {"float32": "*fp32", "float64": "*fp64", "float16": "*fp16", "bfloat16": "*bf16", "int32": "*i32",
       "int64": "*i64", "int8": "*i8", "uint8": "*u8", "bool": "*i1"}
FLOATS = ("float32", "float64")
INT_MIN = {"int32": -2**31, "int64": -2**63, "int8": -128, "uint8": 0, "bool": 0}
_BINOP = {"add": "+", "sub": "-", "mul": "*", "lt": "<", "le": "<=", "eq": "==", "ne": "!=", "and": "&", "or": "|",
          "xor": "^"}


# What a TritonConfig knob may hold (codegen/knobs.py): blocks are `tl.arange` sizes (powers of
# two; one block at most MAX_TENSOR_NUMEL elements, triton.language's TRITON_MAX_TENSOR_NUMEL),
# a program at most 32 warps (1024 threads)
MAX_TENSOR_NUMEL = 1 << 20
MAX_WARPS = 32
MAX_STAGES = 8


@dataclass(frozen=True)
class TritonConfig:
    """Launch/loop parameters. The structure (which stages loop) follows from these at render time.
    Each knob's type and range is declared with it; `check_config` adds what spans knobs."""

    XBLOCK: int = knob(REQUIRED, integer(1, MAX_TENSOR_NUMEL, pow2=True))
    RBLOCK: int = knob(1, integer(1, MAX_TENSOR_NUMEL, pow2=True))
    num_warps: int = knob(4, integer(1, MAX_WARPS, pow2=True))
    num_stages: int = knob(1, integer(1, MAX_STAGES))
    # transposed tiles (`transpose_plan`): None where codegen/tiling.py finds loads that disagree
    # with the stores on the contiguous axis, False for the flat block; YBLOCK is the tile's extent
    # along the loop those loads are contiguous along (XBLOCK: along the stores' contiguous loop)
    transpose: bool | None = knob(None, flag(none=True))
    YBLOCK: int = knob(1, integer(1, MAX_TENSOR_NUMEL, pow2=True))


def check_config(cfg: TritonConfig) -> None:
    """Raise KnobError (a ValueError) unless `cfg` can be rendered: every knob within its spec and
    the XBLOCK x RBLOCK and YBLOCK x XBLOCK blocks within Triton's limit."""
    knobs.check(cfg)
    for other in ("RBLOCK", "YBLOCK"):
        if cfg.XBLOCK * getattr(cfg, other) > MAX_TENSOR_NUMEL:
            raise knobs.KnobError(f"TritonConfig XBLOCK={cfg.XBLOCK} x {other}={getattr(cfg, other)}: a block "
                                  f"holds at most {MAX_TENSOR_NUMEL} elements")


# default transposed tile: XBLOCK along the stores' contiguous loop, at least YBLOCK along the
# transposed loads' one, TILE_NUMEL elements where a short loop leaves room (Inductor's transposes
# run 32x32 to 64x64 tiles; these are not measured on a GPU yet)
TILE_X = 64
TILE_Y = 32
TILE_NUMEL = 2048


def transpose_plan(k: Kernel, cfg: TritonConfig | None = None) -> tiling.TilePlan | None:
    """The transposed tiles `render_triton(k, cfg)` prints: codegen/tiling.py's plan (the same
    loads and loops as the C backend's) with Triton's block extents, or None for the flat block.
    Pointwise kernels only: a reduction's [XBLOCK, RBLOCK] block already holds both axes, the
    reduced one last, so loads contiguous along it are read along it (see the module docstring)."""
    if k.reduces:
        return None
    if cfg is None:
        return tiling.plan(k, transpose=None, rows=1, cols=1, interchange=False, tile=1, budget=None)
    return tiling.plan(k, transpose=knobs.value(cfg, "transpose"), rows=knobs.value(cfg, "YBLOCK"),
                       cols=knobs.value(cfg, "XBLOCK"), interchange=False, tile=1, budget=None)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _prod(xs) -> int | sympy.Expr:
    """The product of sizes: an int when all are, else a polynomial in the size symbols."""
    out = 1
    for x in xs:
        x = sympy.sympify(x)
        out = out * int(x) if x.is_Integer else sympy.expand(out * x)
    return out if isinstance(out, int) else (int(out) if out.is_Integer else out)


def is_static(n) -> bool:
    """A size that is a number (no size symbol)."""
    return isinstance(n, int) or sympy.sympify(n).is_Integer


def divides(block: int, n) -> bool:
    """`block` divides size `n` for every value of its size symbols (every coefficient does)."""
    if is_static(n):
        return int(n) % block == 0
    n = sympy.sympify(n)
    return all(int(c) % block == 0 for c in sympy.Poly(n, *sorted(n.free_symbols, key=str)).coeffs())


def nonnegative(n) -> bool:
    """`n` (a polynomial in size symbols) is >= 0 for every size >= 2, provably: with each symbol
    written as 2 + t (t >= 0), no coefficient is negative. False means "not proved"."""
    n = sympy.sympify(n)
    if n.is_Integer:
        return int(n) >= 0
    syms = sorted(n.free_symbols, key=str)
    t = [sympy.Dummy(f"t{i}", integer=True, nonnegative=True) for i in range(len(syms))]
    shifted = sympy.expand(n.xreplace({s: 2 + u for s, u in zip(syms, t)}))
    try:
        return all(c >= 0 for c in sympy.Poly(shifted, *t).coeffs())
    except sympy.PolynomialError:  # FloorDiv/ModIdx of sizes: not a polynomial
        return False


def row_depth(k: Kernel) -> int:
    """D: how many outer loops form `xindex` (all of them for pointwise kernels)."""
    return max((r.depth for r in k.reduces), default=len(k.loops))


def stage_sizes(k: Kernel) -> list[int | sympy.Expr]:
    """Element counts of the per-row stages: each reduction's rnumel, then the inner store space."""
    d = row_depth(k)
    sizes = [_prod(r.rsizes) for r in k.reduces if r.rvars]
    if k.reduces and d < len(k.loops):
        sizes.append(_prod(k.loops[d:]))
    return sizes


def _is_outer_reduction(k: Kernel) -> bool:
    """The innermost row variable is contiguous in memory and the reduction variable is not
    (a column sum): blocks of many rows keep the loads coalesced."""
    d = row_depth(k)
    if d == 0:
        return False
    inner = sympy.Symbol(f"x{d - 1}", integer=True, nonnegative=True)
    for r in k.reduces:
        if not r.rvars:
            continue
        rin = sympy.Symbol(r.rvars[-1], integer=True, nonnegative=True)
        for e in walk_exprs([r.value]):
            if e.op == "load":
                c = e.arg[1].as_coefficients_dict()
                if c.get(inner, 0) == 1 and c.get(rin, 0) != 1:
                    return True
    return False


def choose_config(k: Kernel, *, xblock_max: int = 1024, persistent_max: int = 8192, loop_rblock: int = 2048,
                  row_block_elems: int = 1024) -> TritonConfig:
    """Default launch parameters (what an autotuner starts from).

    Pointwise: XBLOCK up to `xblock_max`. Reductions: rows up to `persistent_max` elements stay in
    registers (one block); longer rows loop in `loop_rblock` blocks; short rows are packed
    several per program up to `row_block_elems` elements; column reductions use 64x64 tiles.
    Symbolic sizes count at their hints (`kernel_ir.hint`): only speed depends on the choice, the
    kernel is right for every size (a row longer than RBLOCK loops, see `_Renderer.render`).
    """
    if not k.reduces:
        tplan = transpose_plan(k)
        if tplan is not None:
            xb = min(TILE_X, next_pow2(hint(k, k.loops[-1])))
            yb = min(next_pow2(hint(k, k.loops[tplan.axis])), max(TILE_Y, TILE_NUMEL // xb))
            return TritonConfig(XBLOCK=xb, RBLOCK=1, num_warps=max(1, min(8, xb * yb // 512)), num_stages=1,
                                YBLOCK=yb)
        xb = min(next_pow2(hint(k, k.numel)), next_pow2(xblock_max))
        return TritonConfig(XBLOCK=xb, RBLOCK=1, num_warps=max(1, min(8, xb // 256)), num_stages=1)
    rows = hint(k, _prod(k.loops[:row_depth(k)]))
    maxr = max((hint(k, s) for s in stage_sizes(k)), default=1)
    if _is_outer_reduction(k):
        xb = min(next_pow2(rows), 64)
        rb = min(next_pow2(maxr), max(1, 4096 // xb))
    elif next_pow2(maxr) <= persistent_max:
        rb = next_pow2(maxr)
        xb = min(next_pow2(rows), max(1, row_block_elems // rb))
    else:
        rb, xb = next_pow2(loop_rblock), 1
    warps = max(1, min(16, (xb * rb) // 512))
    return TritonConfig(XBLOCK=xb, RBLOCK=rb, num_warps=warps, num_stages=1)


MAX_BLOCK_NUMEL = 1 << 16  # elements of one XBLOCK x RBLOCK block worth trying: more spills registers


def _pow2s(lo: int, hi: int) -> tuple[int, ...]:
    out, v = [], 1
    while v <= hi:
        if v >= lo:
            out.append(v)
        v *= 2
    return tuple(out)


def search_space(k: Kernel) -> dict[str, tuple]:
    """Per `TritonConfig` field, the values an autotuner tries for `k`, ascending (the default
    config's values included; symbolic sizes at their hints). `valid_config` says which
    combinations are worth compiling."""
    d = choose_config(k)
    warps = (1, 2, 4, 8, 16)
    tplan = transpose_plan(k)
    if tplan is not None:
        xs = _pow2s(16, max(16, min(next_pow2(hint(k, k.loops[-1])), 256)))
        ys = _pow2s(8, max(8, min(next_pow2(hint(k, k.loops[tplan.axis])), 256)))
        return {"XBLOCK": tuple(sorted(set(xs) | {d.XBLOCK})), "YBLOCK": tuple(sorted(set(ys) | {d.YBLOCK})),
                "num_warps": warps, "transpose": (None, False)}
    if not k.reduces:
        top = max(64, min(next_pow2(hint(k, k.numel)), 4096))
        return {"XBLOCK": tuple(sorted(set(_pow2s(64, top)) | {d.XBLOCK})), "num_warps": warps}
    rows = hint(k, _prod(k.loops[:row_depth(k)]))
    maxr = max((hint(k, s) for s in stage_sizes(k)), default=1)
    xs = set(_pow2s(1, max(1, min(next_pow2(rows), 256)))) | {d.XBLOCK}
    rs = set(_pow2s(min(16, next_pow2(maxr)), max(1, min(next_pow2(maxr), 16384)))) | {d.RBLOCK}
    space = {"XBLOCK": tuple(sorted(xs)), "RBLOCK": tuple(sorted(rs)), "num_warps": warps, "num_stages": (1, 2, 3)}
    if turned_reduction_loads(k, d):
        space["transpose"] = (None, False)
    return space


def valid_config(k: Kernel, cfg: TritonConfig) -> bool:
    """Blocks that fit: at most MAX_BLOCK_NUMEL elements (or the default's), one element per thread or more."""
    d = choose_config(k)
    numel = block_numel(k, cfg)
    return numel <= max(MAX_BLOCK_NUMEL, block_numel(k, d)) and cfg.num_warps * 32 <= max(numel, 32)


def turned_reduction_loads(k: Kernel, cfg: TritonConfig) -> list[tuple[Reduce, Expr]]:
    """(reduction, load) pairs read turned over in a reduction over all loops whose reduced axis
    disagrees with the rows' contiguous one, where codegen/tiling.py plans tiles for it. The
    [XBLOCK, RBLOCK] block has the reduced axis last, so the loads to turn are the ones contiguous
    along the rows and a cache line or more apart along the reduction (`tiling.transposed` with the
    plan's two axes in this block's order): read as [RBLOCK, XBLOCK], the rows last, then turned."""
    n = len(k.loops)
    if not k.reduces or row_depth(k) != n or n == 0:
        return []
    if tiling.plan(k, transpose=knobs.value(cfg, "transpose"), rows=cfg.RBLOCK, cols=1, interchange=True,
                   tile=cfg.XBLOCK, budget=None) is None:
        return []
    row, out = _sym(f"x{n - 1}"), []
    for r in k.reduces:
        if r.depth == n and r.rvars:
            out += [(r, ld) for ld in walk_exprs([r.value])
                    if ld.op == "load" and tiling.transposed(k, ld, row, _sym(r.rvars[-1]))]
    return out


def block_numel(k: Kernel, cfg: TritonConfig) -> int:
    """Elements of one program's block: YBLOCK x XBLOCK for transposed tiles, else XBLOCK x RBLOCK."""
    return cfg.XBLOCK * (cfg.YBLOCK if transpose_plan(k, cfg) is not None else cfg.RBLOCK)


def _sym(name: str) -> sympy.Symbol:
    """Loop variable `name` as the scheduler writes it in index expressions."""
    return sympy.Symbol(name, integer=True, nonnegative=True)


def _cond_syms(conds) -> set:
    out: set = set()
    for _, a, _ in conds:
        out |= sympy.sympify(a).free_symbols
    return out


# -- index printing ----------------------------------------------------------------------------

def index_py(e) -> str:
    """An integer index expression as Triton integer arithmetic (`//`, `%` on non-negative operands)."""
    e = sympy.sympify(e)
    if e.is_Integer:
        return str(int(e))
    if e.is_Symbol:
        return e.name
    if isinstance(e, FloorDiv):
        return f"({index_py(e.args[0])} // {index_py(e.args[1])})"
    if isinstance(e, ModIdx):
        return f"({index_py(e.args[0])} % {index_py(e.args[1])})"
    if e.is_Add:
        terms = sorted(e.args, key=lambda t: (t.is_Integer, str(t)))
        return "(" + " + ".join(index_py(t) for t in terms) + ")"
    if e.is_Mul:
        return "(" + "*".join(index_py(t) for t in e.args) + ")"
    if e.is_Pow and e.exp.is_Integer and int(e.exp) > 0:  # d0**2 of a size polynomial
        return "(" + "*".join([index_py(e.base)] * int(e.exp)) + ")"
    raise TypeError(f"cannot print index {e!r}")


def _max_abs(e, ranges: dict) -> int:
    """Largest |value| of `e` or of any of its subterms, for symbols in [0, ranges[s])."""
    worst = 0

    def rec(x) -> tuple[int, int]:
        nonlocal worst
        if x.is_Integer:
            lo = hi = int(x)
        elif x.is_Symbol:
            lo, hi = 0, max(int(ranges.get(x.name, 1)) - 1, 0)
        elif isinstance(x, (FloorDiv, ModIdx)):
            a_lo, a_hi = rec(x.args[0])
            d = max(int(x.args[1]), 1)
            lo, hi = (a_lo // d, a_hi // d) if isinstance(x, FloorDiv) else (0, d - 1)
        elif x.is_Add:
            lo = hi = 0
            for t in x.args:
                a, b = rec(t)
                lo, hi = lo + a, hi + b
        elif x.is_Mul:
            lo = hi = 1
            for t in x.args:
                a, b = rec(t)
                c = (lo * a, lo * b, hi * a, hi * b)
                lo, hi = min(c), max(c)
        else:
            raise TypeError(f"cannot bound {x!r}")
        worst = max(worst, abs(lo), abs(hi))
        return lo, hi

    rec(sympy.sympify(e))
    return worst


def uses_sizes(k: Kernel) -> bool:
    """Whether a size symbol occurs in `k` (a loop, a reduction, an index, a mask bound)."""
    if not k.sizes:
        return False
    if not all(is_static(s) for s in (*k.loops, *(n for r in k.reduces for n in r.rsizes))):
        return True
    names = set(k.sizes)
    addresses, conditions = index_exprs(k)
    bounds = [v for e in kernel_exprs(k) if e.op in ("load", "valid")
              for _, _, v in (e.arg[2] if e.op == "load" else e.arg)]
    return any(names & {x.name for x in sympy.sympify(a).free_symbols} for a in addresses + conditions + bounds)


def needs_int64(k: Kernel, cfg: TritonConfig) -> bool:
    """Whether any index, subterm, or block index can exceed int32. Conservative for a kernel
    that uses size symbols: they have no upper bound, so its indices are int64 (its size
    arguments are int64 already, so index terms with a size in them are anyway)."""
    if uses_sizes(k):
        return True
    ranges = {f"x{i}": s for i, s in enumerate(k.loops)}
    for r in k.reduces:
        ranges.update(zip(r.rvars, r.rsizes))
    d = row_depth(k)
    if _prod(k.loops[:d]) + max(cfg.XBLOCK, cfg.YBLOCK) > INT32_MAX or k.numel > INT32_MAX:
        return True
    if any(s + cfg.RBLOCK > INT32_MAX for s in stage_sizes(k)):
        return True
    addresses, conditions = index_exprs(k)
    return any(_max_abs(x, ranges) > INT32_MAX for x in addresses + conditions)


# -- literals ------------------------------------------------------------------------------------

def _lit(value, dtype: str) -> str:
    if dtype == "bool":
        return "True" if value else "False"
    if dtype in FLOATS:
        v = float(value)
        if math.isnan(v):
            return "float('nan')"
        if math.isinf(v):
            return "float('inf')" if v > 0 else "float('-inf')"
        return repr(v)
    return str(int(value))


# source of the bfloat16 rounding helper; the GEMM template (gemm_triton.py) includes it too
BF16_HELPER = '''\
@triton.jit
def _lz_bf16(x):
    # float32 -> bfloat16, round to nearest even. The interpreter's own conversion truncates.
    if _INTERPRET:
        u = x.to(tl.uint32, bitcast=True)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        r = tl.where(x != x, 0x7FC0, r)
        return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def _lz_bf16_f32(x):
    # bfloat16 -> float32, exactly. The interpreter's own conversion loses subnormals.
    if _INTERPRET:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)
'''

PRELUDE = '''\
import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

# libdevice cannot run under the interpreter; the jitted helpers below pick a numpy-friendly
# formula there (read when this module is imported, like @triton.jit itself).
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def _lz_max(a, b):
    # NaN-propagating maximum (torch.maximum / amax)
    return tl.where((a > b) | (a != a), a, b)


@triton.jit
def _lz_min(a, b):
    return tl.where((a < b) | (a != a), a, b)


# Row reductions under the interpreter call the builtin tl.reduce with Triton's own combine
# functions (run there as one numpy call) instead of tl.sum / tl.max: those are themselves
# @triton.jit functions, interpreted only if TRITON_INTERPRET was set when triton was first
# imported (torch imports it on its own), else "Cannot call @triton.jit'd outside of the scope
# of a kernel". On the GPU they are tl.sum / tl.max.
@triton.jit
def _lz_rowsum(x):
    if _INTERPRET:
        return tl.reduce(x, 1, tl.standard._sum_combine, keep_dims=True)
    else:
        return tl.sum(x, 1, keep_dims=True)


@triton.jit
def _lz_rowmax_i(x):
    if _INTERPRET:
        return tl.reduce(x, 1, tl.standard._elementwise_max, keep_dims=True)
    else:
        return tl.max(x, 1, keep_dims=True)


@triton.jit
def _lz_rowmax(x):
    # NaN-propagating max over axis 1. The interpreter runs custom combines element by element
    # in Python, so there it is a (NaN-ignoring) max plus a NaN count.
    if _INTERPRET:
        m = tl.reduce(x, 1, tl.standard._elementwise_max, keep_dims=True)
        nan = tl.reduce((x != x).to(tl.int32), 1, tl.standard._sum_combine, keep_dims=True) > 0
        return tl.where(nan, float('nan'), m).to(x.dtype)
    else:
        return tl.reduce(x, 1, _lz_max, keep_dims=True)


@triton.jit
def _lz_mul(a, b):
    return a * b


@triton.jit
def _lz_trunc(x):
    return tl.where(x < 0, tl.ceil(x), tl.floor(x))


''' + BF16_HELPER + '''

@triton.jit
def _lz_fdiv(a, b):
    # IEEE-rounded division (Triton's `/` on float32 is approximate)
    if a.dtype == tl.float32:
        return tl.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _lz_tanh(x):
    if _INTERPRET:
        d = x.to(tl.float64)
        t = tl.exp(-2.0 * tl.abs(d))
        y = (1.0 - t) / (1.0 + t)
        return tl.where(d < 0, -y, y).to(x.dtype)
    else:
        return libdevice.tanh(x)


@triton.jit
def _lz_powf(a, b):
    if _INTERPRET:
        ad = a.to(tl.float64)
        bd = b.to(tl.float64)
        r = tl.exp(bd * tl.log(tl.abs(ad)))
        isint = tl.floor(bd) == bd
        odd = isint & ((bd % 2.0) != 0.0)
        r = tl.where(ad < 0, tl.where(isint, tl.where(odd, -r, r), float('nan')), r)
        r = tl.where((bd == 0.0) | (ad == 1.0) | ((ad == -1.0) & (tl.abs(bd) == float('inf'))), 1.0, r)
        return r.to(a.dtype)
    else:
        return libdevice.pow(a, b)


@triton.jit
def _lz_fmod(a, b):
    # C fmod. On the GPU `%` on floats is x - y*trunc(x/y), inexact for large quotients.
    if _INTERPRET:
        return a % b
    else:
        return libdevice.fmod(a, b)


@triton.jit
def _lz_floordiv_f(a, b):
    # torch's div_floor_floating
    mod = _lz_fmod(a, b)
    div = _lz_fdiv(a - mod, b)
    div = tl.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1.0, div)
    fl = tl.floor(div)
    fl = tl.where(div - fl > 0.5, fl + 1.0, fl)
    q = _lz_fdiv(a, b)
    if q.dtype == tl.float64:
        neg = q.to(tl.int64, bitcast=True) < 0
    else:
        neg = q.to(tl.int32, bitcast=True) < 0
    zero = tl.where(neg, -0.0, 0.0).to(q.dtype)
    return tl.where(b == 0, q, tl.where(div != 0, fl, zero))


@triton.jit
def _lz_mod_f(a, b):
    m = _lz_fmod(a, b)
    return tl.where((m != 0) & ((b < 0) != (m < 0)), m + b, m)


@triton.jit
def _lz_div_i(a, b):
    # truncating division, 0 when dividing by 0 (as the C backend)
    nz = b != 0
    bs = tl.where(nz, b, 1)
    return tl.where(nz, a // bs, 0)


@triton.jit
def _lz_floordiv_i(a, b):
    nz = b != 0
    bs = tl.where(nz, b, 1)
    q = a // bs
    r = a % bs
    q = tl.where((r != 0) & ((r < 0) != (bs < 0)), q - 1, q)
    return tl.where(nz, q, 0)


@triton.jit
def _lz_mod_i(a, b):
    nz = b != 0
    bs = tl.where(nz, b, 1)
    r = a % bs
    r = tl.where((r != 0) & ((r < 0) != (bs < 0)), r + bs, r)
    return tl.where(nz, r, 0)


@triton.jit
def _lz_pow_i(a, b):
    base = a + b * 0
    e = b + a * 0
    r = base * 0 + 1
    for _ in range(64):
        r = tl.where((e & 1) != 0, r * base, r)
        base = base * base
        e = e >> 1
    special = tl.where(a == 1, 1, tl.where(a == -1, tl.where((b & 1) != 0, -1, 1), 0))
    return tl.where(b < 0, special.to(r.dtype), r)

'''


def kernel_name(k: Kernel) -> str:
    name = re.sub(r"\W", "_", k.name) or "kernel"
    if name[0].isdigit() or name.startswith("_lz_"):
        name = "k_" + name
    return name


class _Scope:
    """A list of statements at one indentation; `loop_vars` are defined inside it (a loop body)."""

    def __init__(self, lines: list[str], indent: str, parent: _Scope | None = None, loop_vars=frozenset()):
        self.lines, self.indent, self.parent, self.loop_vars = lines, indent, parent, frozenset(loop_vars)
        self.names: dict[Expr, str] = {}

    def add(self, line: str) -> None:
        self.lines.append(self.indent + line)


def symbolic_stages(k: Kernel) -> list:
    """The per-row stage sizes (`stage_sizes`) that are polynomials in size symbols."""
    return [s for s in stage_sizes(k) if not is_static(s)]


def looped_at_hints(k: Kernel, cfg: TritonConfig) -> bool:
    """Whether a symbolic stage is longer than RBLOCK at the hints: then the kernel only has its
    looped form (see `_Renderer.render`)."""
    return any(hint(k, s) > cfg.RBLOCK for s in symbolic_stages(k))


class _Renderer:
    def __init__(self, k: Kernel, cfg: TritonConfig, sym_looped: bool | None = None):
        # checked before anything is rendered; knob values reach the source only through knobs.src
        check_config(cfg)
        self.k, self.cfg = k, cfg
        self.size_names = frozenset(k.sizes)
        # stages whose size is symbolic loop in RBLOCK blocks (True) or are one block (False)
        self.sym_looped = looped_at_hints(k, cfg) if sym_looped is None else sym_looped
        self.masks_named: dict = {}  # size -> its persistent mask's name
        self.pointwise = not k.reduces
        self.tplan = transpose_plan(k, cfg)
        # each transposed load with x{a}, x{v} replaced by x{a}t, x{v}t: the variables of the tile
        # turned over, so the load walks its contiguous axis along the block's last one
        self.turned: dict[Expr, Expr] = {}
        if self.tplan is not None:
            a, v = f"x{self.tplan.axis}", f"x{len(k.loops) - 1}"
            swap = {_sym(a): _sym(a + "t"), _sym(v): _sym(v + "t")}
            memo: dict = {}
            self.turned = {ld: subst_expr(ld, swap, memo) for ld, _ in self.tplan.loads}
        self.turned_vars: set[str] = set()  # reduction variables some turned load uses
        self.D = row_depth(k)
        self.i64 = needs_int64(k, cfg)
        self.itype = "tl.int64" if self.i64 else "tl.int32"
        self.outer = {f"x{i}" for i in range(self.D)}  # variables derived from xindex
        self.var_mask: dict[str, str | None] = {}
        self.deps_memo: dict[int, frozenset] = {}
        self.ntmp = 0
        self.acc_names: dict[str, str] = {}
        # constants are one-element blocks, not 0-d tensors: the interpreter gives a broadcast 0-d
        # comparison result the dtype of its operands (0-d (1.5 == 0.0) | block fails)
        self.unit = "[1]" if self.pointwise and self.tplan is None else "[1, 1]"
        self.xmask: str | None = None
        self.rindex_defined = False  # the shared `rindex` of one-block stages
        self.masks_defined: set = set()

    # -- dependencies ----------------------------------------------------------------------
    def deps(self, e: Expr) -> frozenset:
        hit = self.deps_memo.get(id(e))
        if hit is not None:
            return hit
        out: set = set()
        if e.op == "load":
            out |= self.loop_vars(e.arg[1]) | {s.name for s in _cond_syms(e.arg[2])}
        elif e.op == "index":
            out |= self.loop_vars(e.arg)
        elif e.op == "valid":
            out |= {s.name for s in _cond_syms(e.arg)}
        for s in e.srcs:
            out |= self.deps(s)
        out -= self.size_names
        res = frozenset(out)
        self.deps_memo[id(e)] = res
        return res

    def loop_vars(self, e) -> set:
        """Names of the loop variables in index expression `e` (size symbols are arguments)."""
        return {s.name for s in sympy.sympify(e).free_symbols} - self.size_names

    def fits(self, numel) -> bool:
        """Whether a stage of `numel` elements is one block (no loop)."""
        return int(numel) <= self.cfg.RBLOCK if is_static(numel) else not self.sym_looped

    def shape_of(self, names) -> str:
        """The block shape of a value that depends on `names`."""
        if not names:
            return "[]"
        if self.tplan is not None:
            return "[YBLOCK, XBLOCK]"
        if self.pointwise:
            return "[XBLOCK]"
        xs = any(n in self.outer for n in names)
        rs = any(n not in self.outer for n in names)
        return f"[{'XBLOCK' if xs else 1}, {'RBLOCK' if rs else 1}]"

    def masks_for(self, names) -> list[str]:
        out = []
        for n in sorted(names):
            m = self.var_mask.get(n)
            if m and m not in out:
                out.append(m)
        return out

    # -- conditions ------------------------------------------------------------------------
    def conds(self, conds) -> list[str] | None:
        """Printed conditions; None when one is statically false. Statically true ones drop out;
        so do conditions on sizes alone that hold (or fail) for every size >= 2."""
        out = []
        for c, a, b in conds:
            a, b = sympy.sympify(a), sympy.sympify(b)
            if not self.loop_vars(a):
                slack = a - b if c == "ge" else b - 1 - a  # >= 0 iff the condition holds
                if nonnegative(slack):
                    continue
                if nonnegative(-1 - slack):
                    return None
                # depends on the sizes: a block, never a 0-d comparison (see `unit`)
                a = f"tl.full({self.unit}, {index_py(a)}, {self.itype})"
            else:
                a = index_py(a)
            out.append(f"({a} >= {index_py(b)})" if c == "ge" else f"({a} < {index_py(b)})")
        return out

    # -- expressions -----------------------------------------------------------------------
    def emit(self, e: Expr, scope: _Scope) -> str:
        if e.op == "acc":  # reduction results are program-level names already
            return self.acc_names[e.arg]
        while scope.parent is not None and not (self.deps(e) & scope.loop_vars):
            name = scope.names.get(e)
            if name is not None:
                return name
            scope = scope.parent  # loop-invariant: compute it once, before the loop
        name = scope.names.get(e)
        if name is not None:
            return name
        code = self.code(e, scope)
        name = f"tmp{self.ntmp}"
        self.ntmp += 1
        scope.add(f"{name} = {code}")
        scope.names[e] = name
        return name

    def code(self, e: Expr, scope: _Scope) -> str:
        op, dt = e.op, e.dtype
        cd = compute_dtype(dt)
        if op == "const":
            return f"tl.full({self.unit}, {_lit(e.arg, cd)}, {TL[cd]})"
        if op == "scalar":  # a kernel argument, typed by its annotation (`scalar_params`)
            return f"tl.full({self.unit}, s{int(e.arg)}, {TL[cd]})"
        if op == "acc":
            return self.acc_names[e.arg]
        if op == "index":
            idx = sympy.sympify(e.arg)
            if not self.loop_vars(idx):
                return f"tl.full({self.unit}, {index_py(idx)}, {TL[cd]})"
            return f"({index_py(idx)}).to({TL[cd]})"
        if op == "valid":
            cs = self.conds(e.arg)
            if cs is None:
                return f"tl.full({self.unit}, False, tl.int1)"
            return " & ".join(cs) if cs else f"tl.full({self.unit}, True, tl.int1)"
        if op == "load":
            return self.load(e)
        a = [self.emit(s, scope) for s in e.srcs]
        sd = compute_dtype(e.srcs[0].dtype) if e.srcs else cd
        isf = sd in FLOATS
        if op == "cast":  # legal casts are exact, IEEE-rounded, or of floats that fit (codegen/legalize.py)
            return f"{a[0]}.to({TL[cd]})"
        if op == "round":
            if dt == "float16":
                return f"{a[0]}.to(tl.float16).to(tl.float32)"
            return f"_lz_bf16_f32(_lz_bf16({a[0]}))"
        if op == "wrap":  # the low bits
            return f"{a[0]}.to({TL[dt]})" + (f".to({TL[cd]})" if cd != dt else "")
        if op in ("exp", "log", "sin", "cos", "erf", "sqrt", "tanh"):
            x = a[0] if isf else f"{a[0]}.to(tl.float64)"
            fdt = sd if isf else "float64"
            if op == "sqrt":
                f = f"tl.sqrt_rn({x})" if fdt == "float32" else f"tl.sqrt({x})"
            elif op == "tanh":
                f = f"_lz_tanh({x})"
            else:
                f = f"tl.{op}({x})"
            return f if isf else f"{f}.to({TL[cd]})"
        if op == "abs":
            return f"tl.abs({a[0]})"
        if op in ("floor", "ceil", "trunc"):
            if not isf:
                return a[0]
            return f"_lz_trunc({a[0]})" if op == "trunc" else f"tl.{op}({a[0]})"
        if op == "neg":
            return f"-{a[0]}"
        if op == "recip":
            one = f"tl.full({self.unit}, 1, {TL[sd]})"
            return f"_lz_fdiv({one}, {a[0]})" if isf else f"_lz_div_i({one}, {a[0]})"
        if op == "not":
            return f"{a[0]} == 0" if sd == "bool" else f"~{a[0]}"
        if op == "isnan":
            return f"{a[0]} != {a[0]}"
        if op == "isinf":
            return f"tl.abs({a[0]}) == float('inf')" if isf else f"{a[0]} != {a[0]}"
        if op in ("add", "sub", "mul"):
            if sd == "bool":
                return f"{a[0]} {'|' if op == 'add' else '&'} {a[1]}"
            return f"{a[0]} {_BINOP[op]} {a[1]}"
        if op == "div":
            return f"_lz_fdiv({a[0]}, {a[1]})" if isf else f"_lz_div_i({a[0]}, {a[1]})"
        if op == "floordiv":
            return f"_lz_floordiv_{'f' if isf else 'i'}({a[0]}, {a[1]})"
        if op == "mod":
            return f"_lz_mod_{'f' if isf else 'i'}({a[0]}, {a[1]})"
        if op == "pow":
            return f"_lz_powf({a[0]}, {a[1]})" if isf else f"_lz_pow_i({a[0]}, {a[1]})"
        if op in ("max", "min"):
            if isf:
                return f"_lz_{op}({a[0]}, {a[1]})"
            if sd == "bool":
                return f"{a[0]} {'|' if op == 'max' else '&'} {a[1]}"
            return f"tl.{op}imum({a[0]}, {a[1]})"
        if op in ("lt", "le", "eq", "ne"):
            return f"{a[0]} {_BINOP[op]} {a[1]}"
        if op in ("and", "or", "xor"):
            return f"{a[0]} {_BINOP[op]} {a[1]}"
        if op == "where":
            return f"tl.where({a[0]}, {a[1]}, {a[2]})"
        raise NotImplementedError(f"Triton backend: no rendering for op {op!r}")

    def load(self, e: Expr) -> str:
        turned = self.turned.get(e)
        if turned is not None:
            e = turned
        b, index, conds = e.arg
        index = sympy.sympify(index)
        cd = compute_dtype(e.dtype)
        cs = self.conds(conds)
        if cs is None:  # never valid: reads 0 without touching memory
            return f"tl.full({self.unit}, {_lit(0, cd)}, {TL[cd]})"
        names = self.deps(e)
        mask = cs + self.masks_for(names)
        off = index_py(index)
        if not self.loop_vars(index):
            # a fixed element: the pointer gets a block shape (one element when nothing else sets
            # it), never 0-d, for the same reason constants are one-element blocks
            shape = self.shape_of(names) if names else self.unit
            off = f"tl.full({shape}, {off}, {self.itype})"
        code = f"tl.load(b{b} + {off}" + (f", mask={' & '.join(mask)}, other=0)" if mask else ")")
        if turned is not None:  # read with its contiguous axis last, then turned to the block's shape
            code = f"tl.trans({code})"
        if e.dtype == "bfloat16":
            return f"_lz_bf16_f32({code})"
        if cd != e.dtype:  # narrow dtypes compute wider
            code += f".to({TL[cd]})"
        return code

    def stores(self, scope: _Scope) -> None:
        """Every value before any store: an output may overwrite an input in place (an optimizer
        step), which the other outputs still read."""
        values = [self.emit(s.value, scope) for s in self.k.stores]
        for s, v in zip(self.k.stores, values):
            self.store(s, scope, v)

    def store(self, s: Store, scope: _Scope, v: str) -> None:
        if s.dtype == "bfloat16":
            v = f"_lz_bf16({v})"
        elif s.dtype != compute_dtype(s.dtype):
            v = f"{v}.to({TL[s.dtype]})"
        index = sympy.sympify(s.index)
        names = self.loop_vars(index)
        off = index_py(index)
        mask = self.masks_for(names)
        if not names:  # a single output element: give the pointer the block shape of the program
            off = f"tl.full({'[XBLOCK]' if self.pointwise else '[XBLOCK, 1]'}, {off}, {self.itype})"
            mask = [self.xmask] if self.xmask else []
        scope.add(f"tl.store(b{s.buf} + {off}, {v}" + (f", mask={' & '.join(mask)})" if mask else ")"))

    # -- index variables -------------------------------------------------------------------
    def define_vars(self, scope: _Scope, index: str, names, sizes, mask: str | None) -> None:
        """v_i = (index // stride_i) % size_i, row-major over `sizes`."""
        for i, (n, s) in enumerate(zip(names, sizes)):
            stride = _prod(sizes[i + 1:])
            x = index if stride == 1 else f"({index} // {index_py(stride)})"
            if i > 0:
                x = f"{x} % {index_py(s)}"
            scope.add(f"{n} = {x}")
            self.var_mask[n] = mask

    # -- reductions -----------------------------------------------------------------------
    @staticmethod
    def acc_dtype(r: Reduce, looped: bool) -> str:
        cd = compute_dtype(r.dtype)
        if cd in ("bool", "int8", "uint8"):
            return "int32"
        if cd == "float32" and looped and r.op in ("sum", "prod"):
            return "float64"
        return cd

    @staticmethod
    def identity(r: Reduce) -> str:
        cd = compute_dtype(r.dtype)
        if r.op == "sum":
            return "0.0" if cd in FLOATS else "0"
        if r.op == "prod":
            return "1.0" if cd in FLOATS else "1"
        return "float('-inf')" if cd in FLOATS else str(INT_MIN[cd])

    def finish(self, r: Reduce, scope: _Scope, value: str, accdt: str) -> None:
        cd = compute_dtype(r.dtype)
        if r.dtype == "bool":
            value = f"{value} != 0"
        elif r.dtype == "float16":
            value = f"{value}.to(tl.float32).to(tl.float16).to(tl.float32)"
        elif r.dtype == "bfloat16":
            value = f"_lz_bf16_f32(_lz_bf16({value}.to(tl.float32)))"
        elif accdt != cd:
            value = f"{value}.to({TL[cd]})"
        scope.add(f"{r.name} = {value}")
        self.acc_names[r.name] = r.name

    def combine_block(self, r: Reduce, block: str) -> str:
        """[XBLOCK, RBLOCK] -> [XBLOCK, 1]."""
        cd = compute_dtype(r.dtype)
        if r.op == "sum":
            return f"_lz_rowsum({block})"
        if r.op == "prod":
            return f"tl.reduce({block}, 1, _lz_mul, keep_dims=True)"
        if cd in FLOATS:
            return f"_lz_rowmax({block})"
        return f"_lz_rowmax_i({block})"

    def step(self, r: Reduce, acc: str, v: str) -> str:
        cd = compute_dtype(r.dtype)
        if r.op == "sum":
            return f"{acc} + {v}"
        if r.op == "prod":
            return f"{acc} * {v}"
        return f"_lz_max({acc}, {v})" if cd in FLOATS else f"tl.maximum({acc}, {v})"

    def reduce_stage(self, r: Reduce, top: _Scope, si: int) -> None:
        numel = _prod(r.rsizes)
        ident = self.identity(r)
        if not r.rvars:  # reduction over size-1 axes only: the value itself
            v = self.emit(r.value, top)
            self.finish(r, top, v, compute_dtype(r.dtype))
            return
        if numel == 0:
            accdt = self.acc_dtype(r, False)
            self.finish(r, top, f"tl.full([XBLOCK, 1], {ident}, {TL[accdt]})", accdt)
            return
        looped = not self.fits(numel)
        accdt = self.acc_dtype(r, looped)
        if not looped:
            mask = self.persistent_vars(top, r.rvars, r.rsizes)
            v = self.emit(r.value, top)
            w = f"{v}.to({TL[accdt]})" if accdt != compute_dtype(r.value.dtype) else v
            w = f"tl.where({mask}, {w}, {ident})" if mask else f"tl.broadcast_to({w}, [XBLOCK, RBLOCK])"
            self.finish(r, top, self.combine_block(r, w), accdt)
            return
        blk = f"_{r.name}_blk"
        top.add(f"{blk} = tl.full([XBLOCK, RBLOCK], {ident}, {TL[accdt]})")
        body = self.loop(top, si, numel, r.rvars, r.rsizes)
        mask = self.var_mask[r.rvars[0]]
        v = self.emit(r.value, body)
        w = f"{v}.to({TL[accdt]})" if accdt != compute_dtype(r.value.dtype) else v
        if mask:
            w = f"tl.where({mask}, {w}, {ident})"
        body.add(f"{blk} = {self.step(r, blk, w)}")
        top.lines.extend(body.lines)
        self.finish(r, top, self.combine_block(r, blk), accdt)

    def loop(self, top: _Scope, si: int, numel, names, sizes) -> _Scope:
        """Open `for roffset in range(numel)` (returned body is appended by the caller)."""
        body = _Scope([], top.indent + "    ", top, loop_vars=set(names))
        body.lines.append(f"{top.indent}for roffset in range(0, {index_py(numel)}, RBLOCK):")
        arange = "tl.arange(0, RBLOCK)[None, :]" + (".to(tl.int64)" if self.i64 else "")
        idx, mask = f"rindex{si}", None
        body.add(f"{idx} = roffset + {arange}")
        if not divides(self.cfg.RBLOCK, numel):
            mask = f"rmask{si}"
            body.add(f"{mask} = {idx} < {index_py(numel)}")
        self.define_vars(body, idx, names, sizes, mask)
        if self.turned_vars & set(names):  # across the block, for the turned loads
            body.add(f"{idx}t = roffset + tl.arange(0, RBLOCK)[:, None]" + (".to(tl.int64)" if self.i64 else ""))
            if mask:
                body.add(f"{mask}t = {idx}t < {index_py(numel)}")
            self.define_vars(body, f"{idx}t", [nm + "t" for nm in names], sizes, mask and f"{mask}t")
        return body

    def persistent_vars(self, top: _Scope, names, sizes) -> str | None:
        """Define a one-block stage's variables at program level (once); returns its mask."""
        numel = _prod(sizes)
        mask = None
        if not is_static(numel):  # at most RBLOCK here (`fits`), and rarely equal
            mask = self.masks_named.setdefault(numel, f"rmask_s{len(self.masks_named)}")
        elif numel < self.cfg.RBLOCK:
            mask = f"rmask_{numel}"
        if not self.rindex_defined:
            arange = "tl.arange(0, RBLOCK)[None, :]" + (".to(tl.int64)" if self.i64 else "")
            top.add(f"rindex = {arange}")
            self.rindex_defined = True
        if mask and mask not in self.masks_defined:
            top.add(f"{mask} = rindex < {index_py(numel)}")
            self.masks_defined.add(mask)
        if names[0] not in self.var_mask:
            self.define_vars(top, "rindex", names, sizes, mask)
            if self.turned_vars & set(names):  # across the block, for the turned loads
                if "rindex_t" not in self.masks_defined:
                    arange = "tl.arange(0, RBLOCK)[:, None]" + (".to(tl.int64)" if self.i64 else "")
                    top.add(f"rindex_t = {arange}")
                    self.masks_defined.add("rindex_t")
                if mask and f"{mask}_t" not in self.masks_defined:
                    top.add(f"{mask}_t = rindex_t < {index_py(numel)}")
                    self.masks_defined.add(f"{mask}_t")
                self.define_vars(top, "rindex_t", [nm + "t" for nm in names], sizes, mask and f"{mask}_t")
        return mask

    # -- sharing variables between one-block stages -------------------------------------------
    def share_persistent(self) -> Kernel:
        """Give persistent stages of the same shape the same variables, so their loads are CSE'd."""
        k, d, n = self.k, self.D, len(self.k.loops)
        store_sizes = tuple(k.loops[d:]) if d < n else None
        store_vars = tuple(f"x{i}" for i in range(d, n))
        rep = {}
        canon: dict[tuple, tuple] = {}
        if store_sizes and self.fits(_prod(store_sizes)):
            canon[store_sizes] = store_vars
        new_meta = []
        for r in k.reduces:
            rv = r.rvars
            if r.rvars and r.depth == d and _prod(r.rsizes) != 0 and self.fits(_prod(r.rsizes)):
                key = tuple(r.rsizes)
                if key in canon:
                    rv = canon[key]
                    for a, b in zip(r.rvars, rv):
                        rep[sympy.Symbol(a, integer=True, nonnegative=True)] = sympy.Symbol(b, integer=True,
                                                                                           nonnegative=True)
                else:
                    canon[key] = r.rvars
            new_meta.append(rv)
        if not rep:
            return k
        memo: dict = {}
        reduces = tuple(Reduce(r.name, r.op, subst_expr(r.value, rep, memo), r.dtype, r.rsizes, rv, r.depth)
                        for r, rv in zip(k.reduces, new_meta))
        stores = tuple(Store(s.buf, s.index, subst_expr(s.value, rep, memo), s.dtype) for s in k.stores)
        return Kernel(k.name, k.buffers, k.loops, reduces, stores, dict(k.meta), k.scalars, k.sizes)

    # -- the kernel -----------------------------------------------------------------------
    def body(self) -> list[str]:
        k, cfg = self.k, self.cfg
        lines: list[str] = []
        top = _Scope(lines, "    ")
        pid = "tl.program_id(0).to(tl.int64)" if self.i64 else "tl.program_id(0)"
        if self.tplan is not None:
            self.tiles(top, pid)
            self.stores(top)
            return lines
        if self.pointwise:
            xnumel = k.numel
            top.add(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)")
        else:
            self.k = k = self.share_persistent()
            self.turn_reductions()
            xnumel = _prod(k.loops[:self.D])
            top.add(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
        xmask = None
        if not divides(cfg.XBLOCK, xnumel):
            xmask = "xmask"
            top.add(f"xmask = xindex < {index_py(xnumel)}")
        self.xmask = xmask
        d = len(k.loops) if self.pointwise else self.D
        self.define_vars(top, "xindex", [f"x{i}" for i in range(d)], k.loops[:d], xmask)
        if self.pointwise:
            self.stores(top)
            return lines
        if self.turned:  # the rows along the block for the turned loads, `xindex` across it
            top.add(f"xindex_t = {pid} * XBLOCK + tl.arange(0, XBLOCK)[None, :]")
            if xmask:
                top.add(f"xmask_t = xindex_t < {index_py(xnumel)}")
            self.define_vars(top, "xindex_t", [f"x{i}t" for i in range(d)], k.loops[:d], xmask and "xmask_t")
        for si, r in enumerate(k.reduces):
            self.reduce_stage(r, top, si)
        n = len(k.loops)
        if self.D == n:
            self.stores(top)
            return lines
        names, sizes = [f"x{i}" for i in range(self.D, n)], k.loops[self.D:]
        numel = _prod(sizes)
        if self.fits(numel):
            self.persistent_vars(top, names, sizes)
            self.stores(top)
            return lines
        body = self.loop(top, len(k.reduces), numel, names, sizes)
        self.stores(body)
        top.lines.extend(body.lines)
        return lines

    def turn_reductions(self) -> None:
        """Fill `turned` with the loads `turned_reduction_loads` names, each over the turned-over
        variables of its reduction and of the rows."""
        n = len(self.k.loops)
        for r, ld in turned_reduction_loads(self.k, self.cfg):
            swap = {_sym(x): _sym(x + "t") for x in [*(f"x{i}" for i in range(n)), *r.rvars]}
            self.turned[ld] = subst_expr(ld, swap)
            self.turned_vars |= set(r.rvars)

    def tiles(self, top: _Scope, pid: str) -> None:
        """Program -> (tile along x{a}, tile along x{v}, other loops); the tile's variables twice:
        x{a} down the block and x{v} along it (the stores'), and turned over, x{a}t along the block
        and x{v}t down it (the `turned` loads')."""
        k, p = self.k, self.tplan
        n = len(k.loops)
        a, v = p.axis, n - 1
        top.add(f"# {p.describe().replace('read through L1 tiles', 'read turned over (tl.trans)')} "
                "(codegen/tiling.py)")
        # a [1, 1] block, never 0-d: what derives from it broadcasts as a block (see `unit`)
        top.add(f"tile = tl.full([1, 1], {pid}, {self.itype})")
        # the tiles along x{a} first: neighbouring programs continue the turned loads' rows
        ny, nx = self.tiles_py(k.loops[a], "YBLOCK"), self.tiles_py(k.loops[v], "XBLOCK")
        top.add(f"tile_y = tile % {ny}")
        top.add(f"tile_x = (tile // {ny}) % {nx}")
        if n > 2:
            top.add(f"tile_o = tile // ({ny} * {nx})")
            rest = [i for i in range(n - 1) if i != a]
            self.define_vars(top, "tile_o", [f"x{i}" for i in rest], [k.loops[i] for i in rest], None)
        ar = ".to(tl.int64)" if self.i64 else ""
        for var, start, blk, size, down in ((f"x{a}", "tile_y", "YBLOCK", k.loops[a], True),
                                             (f"x{v}", "tile_x", "XBLOCK", k.loops[v], False)):
            exact = divides(getattr(self.cfg, blk), size)
            for name, col in ((var, down), (var + "t", not down)):
                top.add(f"{name} = {start} * {blk} + tl.arange(0, {blk}){'[:, None]' if col else '[None, :]'}{ar}")
                self.var_mask[name] = None if exact else f"{name}_mask"
                if not exact:
                    top.add(f"{name}_mask = {name} < {index_py(size)}")

    def tiles_py(self, size, blk: str) -> str:
        """In the kernel: how many blocks of constexpr `blk` cover `size`."""
        if is_static(size):
            return str(-(-int(size) // getattr(self.cfg, blk)))
        return f"(({index_py(size)} + {blk} - 1) // {blk})"

    def programs_py(self) -> str:
        """On the host: how many programs the kernel launches, an expression of the sizes: the
        rows of `xindex` in XBLOCK blocks, or the tiles (`tiles`)."""
        k, cfg = self.k, self.cfg
        xb = knobs.src(cfg, "XBLOCK")
        if self.tplan is None:
            xnumel = k.numel if self.pointwise else _prod(k.loops[:self.D])
            return f"triton.cdiv({index_py(xnumel)}, {xb})"
        others = _prod(s for i, s in enumerate(k.loops[:-1]) if i != self.tplan.axis)
        terms = [f"triton.cdiv({index_py(k.loops[self.tplan.axis])}, {knobs.src(cfg, 'YBLOCK')})",
                 f"triton.cdiv({index_py(k.loops[-1])}, {xb})"]
        return " * ".join(terms + ([index_py(others)] if others != 1 else []))

    def programs(self) -> int | None:
        """`programs_py` as a number, at least 1 (a program that masks everything); None where it
        depends on the sizes."""
        k, cfg = self.k, self.cfg
        if self.tplan is None:
            counts = [(k.numel if self.pointwise else _prod(k.loops[:self.D]), cfg.XBLOCK)]
        else:
            others = _prod(s for i, s in enumerate(k.loops[:-1]) if i != self.tplan.axis)
            counts = [(others, 1), (k.loops[self.tplan.axis], cfg.YBLOCK), (k.loops[-1], cfg.XBLOCK)]
        if not all(is_static(n) for n, _ in counts):
            return None
        return max(1, math.prod(-(-int(n) // blk) for n, blk in counts))

    def render(self) -> str:
        k, cfg = self.k, self.cfg
        name = kernel_name(k)
        xblock, rblock = knobs.src(cfg, "XBLOCK"), knobs.src(cfg, "RBLOCK")
        sym = symbolic_stages(k)
        # a symbolic stage that is one block at the hints: the kernel also has a looped form for
        # sizes where it is longer than RBLOCK, and the launch picks one with the constexpr LOOPED
        variants = bool(sym) and not self.sym_looped
        if variants:
            body = ["    if LOOPED:"] + ["    " + ln for ln in _Renderer(k, cfg, sym_looped=True).body()]
            body += ["    else:"] + ["    " + ln for ln in self.body()]
        else:
            body = self.body()
        params = [f"b{i}" for i in range(len(k.buffers))]
        sig = {p: SIG[b.dtype] for p, b in zip(params, k.buffers)}
        scalars = scalar_signature(k.scalars)
        sizes = {d: "i64" for d in k.sizes}
        sig.update(scalars)
        sig.update(sizes)
        constexprs = ["XBLOCK", "RBLOCK"] + (["LOOPED"] if variants else []) + (["YBLOCK"] if self.tplan else [])
        sig.update({c: "constexpr" for c in constexprs})
        typed = params + [f"{p}: {t!r}" for p, t in {**scalars, **sizes}.items()]
        params = params + list(scalars) + list(sizes)
        values = {"XBLOCK": xblock, "RBLOCK": rblock}
        if self.tplan:
            values["YBLOCK"] = knobs.src(cfg, "YBLOCK")
        if variants:
            looped = " or ".join(f"({index_py(n)} > {rblock})" for n in dict.fromkeys(sym))
            values["LOOPED"] = looped
        jit = "@triton.jit"
        if k.sizes:  # one binary for every size: no recompiles for sizes divisible by 16 (or equal to 1)
            jit = f"@triton.jit(do_not_specialize={list(k.sizes)!r})"
        out = [f'"""Generated by lazy-triton (codegen/render_triton.py): kernel {k.name}, key {k.key()}.',
               f"loops {list(k.loops)}, {len(k.reduces)} reduction stage(s), config {knobs.describe(cfg)}"
               + (", int64 indices" if self.i64 else "") + (f", sizes {', '.join(k.sizes)}" if k.sizes else "")
               + '."""', "", PRELUDE, "",
               jit,
               f"def {name}({', '.join(typed + [f'{c}: tl.constexpr' for c in constexprs])}):"]
        if k.sizes:
            # int64 whatever the value (the annotation does it on the GPU; the interpreter ignores it)
            out += [f"    {d} = {d}.to(tl.int64)" for d in k.sizes]
        out += body
        out += ["", "",
                f"KERNEL = {name}",
                f"SIGNATURE = {sig!r}"]
        if variants:
            at_hints = {"XBLOCK": cfg.XBLOCK, "RBLOCK": cfg.RBLOCK, "LOOPED": False}
            out += [f"CONSTEXPRS = {at_hints!r}",
                    "# every set of constexprs a launch may pass (an ahead-of-time compile builds each)",
                    "VARIANTS = [CONSTEXPRS, {**CONSTEXPRS, 'LOOPED': True}]"]
        else:
            out.append("CONSTEXPRS = {" + ", ".join(f"{c!r}: {values[c]}" for c in constexprs) + "}")
        out += [f"NUM_WARPS = {knobs.src(cfg, 'num_warps')}",
                f"NUM_STAGES = {knobs.src(cfg, 'num_stages')}"]
        kwargs = "".join(f"{c}={values[c]}, " for c in constexprs) + "num_warps=NUM_WARPS, num_stages=NUM_STAGES"
        if not k.sizes:
            out += [f"GRID = ({self.programs()},)",
                    "",
                    "",
                    f"def launch({', '.join(params)}):",
                    f'    """Run {k.name} on torch tensors (Kernel.buffers order; indices count from data_ptr())."""',
                    f"    {name}[GRID]({', '.join(params)}, {kwargs})",
                    ""]
            return "\n".join(out)
        hints = {d: int(k.meta.get("hints", {}).get(d, 2)) for d in k.sizes}
        grid = (self.programs(),) if self.programs() is not None else None
        out += [f"SIZES = {tuple(k.sizes)!r}",
                f"HINTS = {hints!r}  # typical sizes (the config was chosen for them)",
                f"GRID = {grid!r}  # None: it depends on the sizes (`grid`)",
                "",
                "",
                f"def grid({', '.join(k.sizes)}):",
                '    """The launch grid at these sizes (no programs when there is nothing to compute)."""',
                f"    return ({self.programs_py()},)",
                "",
                "",
                f"def launch({', '.join(params)}):",
                f'    """Run {k.name} on torch tensors (Kernel.buffers order; indices count from data_ptr()), then '
                + 'its scalars and sizes."""',
                f"    {name}[grid({', '.join(k.sizes)})]({', '.join(params)}, {kwargs})",
                ""]
        return "\n".join(out)


class _TileRenderer(_Renderer):
    """A pointwise kernel's single store value, evaluated on a [BLOCK_M, BLOCK_N] tile (a GEMM
    epilogue): the caller defines every loop variable as a [BLOCK_M, 1], [1, BLOCK_N] or [1, 1]
    block, with its tail mask; the GEMM result is the block named `acc`."""

    def __init__(self, k: Kernel, var_masks: dict, acc: str, i64: bool):
        super().__init__(k, TritonConfig(XBLOCK=1, RBLOCK=1, num_warps=1, num_stages=1))
        self.pointwise, self.tplan, self.turned = False, None, {}
        self.i64, self.itype = i64, "tl.int64" if i64 else "tl.int32"
        self.unit = "[1, 1]"
        self.var_mask = dict(var_masks)
        self.acc_names = {"gemm": acc}

    def shape_of(self, names) -> str:
        return "[BLOCK_M, BLOCK_N]" if names else "[1, 1]"


def render_tile_epilogue(k: Kernel, var_masks: dict, acc: str, i64: bool, indent: str = "    ") -> tuple[list[str], str]:
    """(lines, name): statements computing `k`'s one store value on a GEMM tile, converted to the
    store's dtype (see `_TileRenderer`). Loads name buffer i `b{i}`."""
    if k.reduces or len(k.stores) != 1:
        raise ValueError(f"{k.name}: a GEMM epilogue is one store with no reductions")
    r = _TileRenderer(k, var_masks, acc, i64)
    lines: list[str] = []
    (s,) = k.stores
    v = r.emit(s.value, _Scope(lines, indent))
    if s.dtype == "bfloat16":
        v = f"_lz_bf16({v})"
    elif s.dtype != compute_dtype(s.dtype) or s.dtype == "bool":
        v = f"{v}.to({TL[s.dtype]})"
    return lines, v


def epilogue_needs_int64(k: Kernel) -> bool:
    """Whether an epilogue's (unmerged) index arithmetic can pass int32."""
    ranges = {f"x{i}": s for i, s in enumerate(k.loops)}
    addresses, conditions = index_exprs(k)
    return any(_max_abs(x, ranges) > INT32_MAX for x in addresses + conditions)


def render_triton(k: Kernel, config: TritonConfig | None = None) -> str:
    """Python/Triton source for `k` (see the module docstring for what it defines)."""
    return _Renderer(k, config or choose_config(k)).render()
