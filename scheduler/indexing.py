"""Index algebra: movement ops as maps from output coordinates to source coordinates.

In:  an index tuple of sympy integer expressions over loop variables whose ranges are known
     (`Ranges`: symbol -> size), and a movement node's (kind, arg, shapes).
Out: the source index tuple, plus a validity condition for PAD.

Invariants
- Every expression is an integer polynomial in loop symbols and `FloorDiv`/`ModIdx` atoms.
- `floordiv`/`mod` simplify with the variables' ranges, so merging and splitting contiguous
  axes (the common reshape) stays affine: `(x0*8 + x1) // 8 -> x0` when `0 <= x1 < 8`.
  What cannot be simplified stays an atom, printed as integer `/` and `%` by the backends
  (operands are non-negative wherever the result is used unmasked).
- Sizes that change between calls are scheduled as placeholder integers of at least `SYMBOLIC`
  (lazy/symbolic.py): huge primes that stand for any size >= 2. A rule may only use what holds for
  every such size: a range that grows with a placeholder is never "smaller than" a divisor of
  placeholder size unless the bound says so symbolically, and divisor peeling skips huge divisors.
"""

from __future__ import annotations

from functools import cache

import sympy

from codegen.index_ops import FloorDiv, ModIdx

Ranges = dict  # sympy.Symbol -> int size (values lie in [0, size))
SYMBOLIC = 1 << 62  # sizes from here up are placeholders of sizes that change (lazy/symbolic.py)
PEEL_MAX = 1 << 16  # divisors whose factors `_split_div`/`_split_mod` try (a factor search per divisor)


def _below(hi: int, d: int) -> bool:
    """`hi < d` for every size the two stand for: a placeholder divisor (>= SYMBOLIC) is only
    known to exceed bounds that grow with placeholders too (a static bound may exceed a real,
    small size)."""
    return hi < d and (d < SYMBOLIC or hi >= SYMBOLIC or hi < 2)


def _quotient(lo: int, hi: int, d: int) -> int | None:
    """The one value of `v // d` for every v in [lo, hi], or None (see `_below`)."""
    if d < SYMBOLIC:
        return lo // d if lo // d == hi // d else None
    return 0 if lo >= 0 and _below(hi, d) else None


@cache
def placeholders(count: int = 3) -> tuple[int, ...]:
    """The placeholder sizes (lazy/symbolic.py): primes of at least 2**64, each beyond the cube of
    the one before, so a polynomial of degree <= 2 per size symbol decodes from its value."""
    out, bits = [], 64
    for _ in range(count):
        out.append(int(sympy.nextprime(1 << bits)))
        bits = 3 * bits + 64
    return tuple(out)


def _divisors(d: int) -> list[int]:
    """Proper divisors of `d` above 1 worth peeling, largest first: those of its static part (a
    placeholder divisor `16 * P` peels 16: `(16*x0 + r0) // (16*P) -> x0 // P` when r0 < 16)."""
    static = d
    if d >= SYMBOLIC:
        for p in placeholders():
            while static % p == 0:
                static //= p
    if static > PEEL_MAX:
        return []
    # the static part itself is a proper divisor of a placeholder multiple
    top = static + 1 if static != d else static
    return sorted((g for g in range(2, top) if static % g == 0), reverse=True)


@cache
def symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, nonnegative=True)


def bounds(e: sympy.Expr, ranges: Ranges) -> tuple[int, int]:
    """Inclusive integer bounds of `e` (a polynomial in ranged symbols and atoms)."""
    if e.is_Integer:
        return int(e), int(e)
    if e.is_Symbol:
        return 0, max(ranges[e] - 1, 0)
    if isinstance(e, FloorDiv):
        lo, hi = bounds(e.args[0], ranges)
        d = int(e.args[1])
        return lo // d, hi // d
    if isinstance(e, ModIdx):
        lo, hi = bounds(e.args[0], ranges)
        d = int(e.args[1])
        if 0 <= lo and hi < d:
            return lo, hi
        return 0, d - 1
    if e.is_Add:
        lo = hi = 0
        for t in e.args:
            a, b = bounds(t, ranges)
            lo, hi = lo + a, hi + b
        return lo, hi
    if e.is_Mul:
        lo, hi = 1, 1
        for t in e.args:
            a, b = bounds(t, ranges)
            cands = (lo * a, lo * b, hi * a, hi * b)
            lo, hi = min(cands), max(cands)
        return lo, hi
    raise TypeError(f"cannot bound {e!r}")


def _terms(e: sympy.Expr) -> list[tuple[int, sympy.Expr]]:
    """e as [(coefficient, term)], term 1 for the constant."""
    return [(int(c), t) for t, c in e.as_coefficients_dict().items()]


def floordiv(e: sympy.Expr, d: int) -> sympy.Expr:
    return _floordiv(sympy.sympify(e), int(d))


def _floordiv(e, d, ranges=None):
    if d == 1:
        return e
    if e.is_Integer:
        return sympy.Integer(int(e) // d)
    whole, rest = sympy.Integer(0), sympy.Integer(0)
    for c, t in _terms(e):
        q, r = divmod(c, d)
        whole += q * t
        rest += r * t
    if rest == 0:
        return whole
    if isinstance(rest, FloorDiv):  # (a // b) // d == a // (b*d)
        return whole + FloorDiv(rest.args[0], rest.args[1] * d)
    return whole + FloorDiv(rest, d)


def _mod(e, d):
    if d == 1:
        return sympy.Integer(0)
    if e.is_Integer:
        return sympy.Integer(int(e) % d)
    rest = sympy.Integer(0)
    for c, t in _terms(e):
        rest += (c % d) * t
    return ModIdx(rest, d) if rest != 0 else sympy.Integer(0)


def simplify(e: sympy.Expr, ranges: Ranges) -> sympy.Expr:
    """Drop FloorDiv/ModIdx atoms whose argument's range makes them trivial."""
    if not e.has(FloorDiv, ModIdx):
        return e
    reps = {}
    for atom in sorted(e.atoms(FloorDiv, ModIdx), key=lambda a: sympy.count_ops(a)):
        a, d = atom.args
        a = simplify(a, ranges)
        d = int(d)
        lo, hi = bounds(a, ranges)
        q = _quotient(lo, hi, d)
        if isinstance(atom, FloorDiv):
            reps[atom] = sympy.Integer(q) if q is not None else _split_div(a, d, ranges)
        else:
            reps[atom] = a - d * q if q is not None else _split_mod(a, d, ranges)
    return sympy.expand(e.xreplace(reps))


def _split(a, d, ranges):
    """a == d*q + s where s collects the terms whose coefficient is not a multiple of d."""
    q, s = sympy.Integer(0), sympy.Integer(0)
    for c, t in _terms(a):
        if c % d == 0:
            q += (c // d) * t
        else:
            s += c * t
    return q, s


def _split_div(a, d, ranges):
    q, s = _split(a, d, ranges)
    lo, hi = bounds(s, ranges)
    k = _quotient(lo, hi, d)
    if k is not None:
        return q + k
    # try peeling terms with coefficients that are multiples of a divisor g of d: a//d == (a//g)//(d//g)
    for g in _divisors(d):
        q2, s2 = _split(s, g, ranges)
        lo2, hi2 = bounds(s2, ranges)
        if q2 != 0 and 0 <= lo2 and hi2 < g:
            return q + _floordiv_simplified(q2, d // g, ranges)
    return q + FloorDiv(s, d)


def _floordiv_simplified(a, d, ranges):
    lo, hi = bounds(a, ranges)
    k = _quotient(lo, hi, d)
    if k is not None:
        return sympy.Integer(k)
    return _split_div(a, d, ranges)


def _split_mod(a, d, ranges):
    _q, s = _split(a, d, ranges)
    lo, hi = bounds(s, ranges)
    if lo >= 0 and _below(hi, d):
        return s
    for g in _divisors(d):
        q2, s2 = _split(s, g, ranges)
        lo2, hi2 = bounds(s2, ranges)
        if q2 != 0 and 0 <= lo2 and hi2 < g:
            return g * _mod_simplified(q2, d // g, ranges) + s2
    return ModIdx(s, d)


def _mod_simplified(a, d, ranges):
    lo, hi = bounds(a, ranges)
    if lo >= 0 and _below(hi, d):
        return a
    return _split_mod(a, d, ranges)


def strides_of(shape: tuple[int, ...]) -> tuple[int, ...]:
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= s
    return tuple(reversed(st))


def flat_index(idx: tuple, strides: tuple[int, ...], offset: int = 0) -> sympy.Expr:
    return sympy.Integer(offset) + sum((i * s for i, s in zip(idx, strides)), sympy.Integer(0))


def reshape_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[int, int, int, int]] | None:
    """The shortest runs a[i:j], b[k:l] with equal products, in order, that cover both shapes (the
    way a reshape splits and merges dims); None when they do not line up."""
    out, i, k = [], 0, 0
    while i < len(a) or k < len(b):
        j, l, pa, pb = i, k, 1, 1
        if j < len(a):
            pa *= a[j]
            j += 1
        if l < len(b):
            pb *= b[l]
            l += 1
        while pa != pb:
            if pa < pb and j < len(a):
                pa *= a[j]
                j += 1
            elif pb < pa and l < len(b):
                pb *= b[l]
                l += 1
            else:
                return None
        out.append((i, j, k, l))
        i, k = j, l
    return out


def reshape_index(idx: tuple, new_shape: tuple[int, ...], old_shape: tuple[int, ...], ranges: Ranges) -> tuple:
    """Index into `old_shape` for index `idx` into `new_shape` (row-major relinearization)."""
    if 0 in old_shape or 0 in new_shape:  # nothing to read: the loops that would read it run 0 times
        return tuple(sympy.Integer(0) for _ in old_shape)
    blocks = reshape_blocks(tuple(old_shape), tuple(new_shape))
    if blocks is not None and len(blocks) > 1:  # each run of dims on its own: small expressions
        out: list = []
        for i, j, k, l in blocks:
            out += _reshape_block(idx[k:l], new_shape[k:l], old_shape[i:j], ranges)
        return tuple(out)
    return tuple(_reshape_block(idx, new_shape, old_shape, ranges))


def _reshape_block(idx: tuple, new_shape: tuple[int, ...], old_shape: tuple[int, ...], ranges: Ranges) -> list:
    if len(old_shape) == 1:  # dims merged into one (or one dim, or size-1 dims dropped): affine
        return [flat_index(idx, strides_of(new_shape))]
    x = sympy.sympify(idx[0]) if len(new_shape) == 1 else None
    if x is not None and x.is_Symbol and ranges.get(x) == new_shape[0]:
        # one loop over several dims: its range is their product, so no outer mod, no inner div
        st = strides_of(old_shape)
        out = []
        for k, (size, s) in enumerate(zip(old_shape, st)):
            if size == 1:
                out.append(sympy.Integer(0))
            elif k == 0:
                out.append(FloorDiv(x, s) if s != 1 else x)
            elif s == 1:
                out.append(ModIdx(x, size))
            else:
                out.append(ModIdx(FloorDiv(x, s), size))
        return out
    flat = flat_index(idx, strides_of(new_shape))
    out = []
    for size, st in zip(old_shape, strides_of(old_shape)):
        if size == 1:
            out.append(sympy.Integer(0))
            continue
        out.append(simplify(_mod(_floordiv(flat, st), size), ranges))
    return out


def movement_index(kind: str, arg, src_shape: tuple[int, ...], out_shape: tuple[int, ...], idx: tuple,
                   ranges: Ranges) -> tuple[tuple, list]:
    """(source index, validity conditions) for a movement op read at `idx`."""
    if kind == "RESHAPE":
        return reshape_index(idx, out_shape, src_shape, ranges), []
    if kind == "PERMUTE":
        src = [None] * len(arg)
        for out_axis, src_axis in enumerate(arg):
            src[src_axis] = idx[out_axis]
        return tuple(src), []
    if kind == "EXPAND":
        return tuple(sympy.Integer(0) if s == 1 and o != 1 else i for i, s, o in zip(idx, src_shape, out_shape)), []
    if kind == "SHRINK":
        return tuple(i + a for i, (a, _) in zip(idx, arg)), []
    if kind == "WINDOW":
        axis, _, st, dil = arg
        return idx[:axis] + (idx[axis] * st + idx[axis + 1] * dil,) + idx[axis + 2:], []
    if kind == "FLIP":
        return tuple((s - 1 - i) if ax in arg else i for ax, (i, s) in enumerate(zip(idx, src_shape))), []
    if kind == "PAD":
        conds = []
        src = []
        for i, (before, after), s in zip(idx, arg, src_shape):
            j = i - before
            lo, hi = bounds(j, ranges)
            if lo < 0:
                conds.append(("ge", j, 0))
            if not _below(hi, s):
                conds.append(("lt", j, s))
            src.append(j)
        return tuple(src), conds
    raise ValueError(kind)


def linear_coeffs(e: sympy.Expr) -> dict | None:
    """{symbol: coeff, 1: const} if `e` is affine in plain symbols, else None. A split index
    recombined, c*d*(a // d) + c*(a % d), is c*a (a reshape that merges two dims of a view)."""
    terms = dict(sympy.expand(e).as_coefficients_dict())
    merged = True
    while merged:  # three merged dims: 9*(a // 9) + 3*((a // 3) % 3) + a % 3 -> 3*(a // 3) + a % 3 -> a
        merged = False
        for t in [t for t in terms if isinstance(t, ModIdx)]:
            a, d = t.args
            q = FloorDiv(a, d)
            if isinstance(a, FloorDiv) and a.args[1].is_Integer and q not in terms:
                q = FloorDiv(a.args[0], a.args[1] * d)
            if t in terms and q in terms and terms[q] == terms[t] * d:
                c = terms.pop(t)
                terms.pop(q)
                for u, cu in sympy.expand(c * a).as_coefficients_dict().items():
                    terms[u] = terms.get(u, 0) + cu
                    if terms[u] == 0:
                        terms.pop(u)
                merged = True
    out = {}
    for t, c in terms.items():
        if c == 0:
            continue
        if t == 1 or t.is_Symbol:
            out[t] = out.get(t, 0) + int(c)
        else:
            return None
    return out
