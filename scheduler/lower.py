"""Lowering: one kernel's graph region -> Kernel IR, by evaluating nodes at symbolic indices.

In:  a root node to store, and the nodes that are realized elsewhere (read from buffers).
Out: a `codegen.kernel_ir.Kernel`, or `NotFusable(node, reason)` when a reduction met on the
     way cannot live in this kernel (the planner then realizes it on its own and retries).

How: the root is "read" at the loop index `(x0, x1, ...)` of its shape. Elementwise nodes read
their sources at the same index; movement nodes map the index (scheduler.indexing); a BUFFER or
realized node becomes a load at `offset + sum(index * stride)`. A reduction read at some
index becomes an accumulator over fresh reduction variables; it is placed at the depth of the
outermost loops it depends on, so softmax's max and sum are computed once per row, before the
row's output loop. That placement is only legal when a reduction depends on a prefix
`x0..x{d-1}` of the loops (otherwise it would be recomputed for every value of a skipped loop);
other reductions are rejected with a reason.
After lowering, adjacent loops whose every index is affine with matching strides are merged
(`[4096, 4096]` contiguous becomes one loop of 16M), which the backends vectorize and split
across threads best, and the kernel is legalized (codegen/legalize.py: every rounding, wrap and
cast made explicit), so every Kernel this module returns is legal.
"""

from __future__ import annotations

import sympy

from codegen.kernel_ir import BufferArg, Expr, Kernel, Reduce, Store, index_exprs, subst_expr
from codegen.legalize import legalize
from lazy.graph import BINARY, MOVEMENT, REDUCE, UNARY, Node, Op, buffer_layout
from scheduler.indexing import flat_index, movement_index, strides_of, symbol

REDUCE_NAMES = {Op.SUM: "sum", Op.RMAX: "max", Op.PROD: "prod"}


class NotFusable(Exception):
    def __init__(self, node: Node, reason: str):
        super().__init__(reason)
        self.node, self.reason = node, reason


def _zero(dtype) -> Expr:
    return Expr("const", arg=False if dtype.kind == "b" else (0 if dtype.kind in "iu" else 0.0), dtype=dtype.name)


class Lowerer:
    def __init__(self, name: str, slot_of: dict[int, int], realized: set[int]):
        """slot_of: id(node or Buffer) -> schedule slot for everything this kernel may load."""
        self.name = name
        self.slot_of = slot_of
        self.realized = realized
        self.ranges: dict = {}
        self.reduces: list[Reduce] = []
        self.memo: dict = {}
        self.reduced_at: dict[int, tuple] = {}  # id(reduction) -> the index it is computed at
        self.buf_args: dict[int, int] = {}  # schedule slot -> kernel buffer index
        self.buf_list: list[tuple[int, BufferArg]] = []
        self.loads: dict[int, int] = {}  # kernel buffer index -> bytes read (whole buffer once)
        self.nrvars = 0
        self.scope_rvars: list[set] = []  # reduction variables of the reductions being built
        self.scalar_args: dict[int, int] = {}  # program scalar slot -> the kernel's scalar argument
        self.scalar_types: list[str] = []  # dtype of each scalar argument
        self.scalar_values: list = []  # its value in the graph lowered (launches pass their own)

    # -- buffers -------------------------------------------------------------------------
    def _buf(self, slot: int, dtype: str, numel: int, output: bool) -> int:
        if slot not in self.buf_args:
            self.buf_args[slot] = len(self.buf_list)
            self.buf_list.append((slot, BufferArg(f"b{len(self.buf_list)}", dtype, numel, output)))
        elif output:  # an input overwritten in place (an optimizer step): read, then written
            i = self.buf_args[slot]
            old = self.buf_list[i][1]
            self.buf_list[i] = (slot, BufferArg(old.name, old.dtype, max(old.numel, numel), True))
        return self.buf_args[slot]

    def _load(self, n: Node, idx: tuple, mask: tuple) -> Expr:
        if n.op is Op.BUFFER:
            strides, _, _ = buffer_layout(n.arg)
            offset = 0  # the launcher passes data_ptr(), which already points at the view's first element
            slot = self.slot_of[id(n.arg)]
            extent = sum((s - 1) * st for s, st in zip(n.shape, strides)) + 1 if n.numel else 0
            b = self._buf(slot, n.dtype.name, extent, False)
        else:
            strides, offset = strides_of(n.shape), 0
            b = self._buf(self.slot_of[id(n)], n.dtype.name, n.numel, False)
        self.loads[b] = n.numel * n.dtype.itemsize
        index = flat_index(tuple(0 if s == 1 else i for i, s in zip(idx, n.shape)), strides, offset)
        return Expr("load", (), (b, sympy.expand(index), mask), n.dtype.name)

    # -- evaluation at a symbolic index ----------------------------------------------------
    def render(self, n: Node, idx: tuple, mask: tuple) -> Expr:
        key = (id(n), idx, mask)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        out = self._render(n, idx, mask)
        self.memo[key] = out
        return out

    def _render(self, n: Node, idx: tuple, mask: tuple) -> Expr:
        if n.op is Op.BUFFER or id(n) in self.realized:
            return self._load(n, idx, mask)
        if n.op is Op.CONST:
            slot = self.slot_of.get(("scalar", id(n)))
            if slot is not None:  # a kernel argument (graph.literal)
                if slot not in self.scalar_args:
                    self.scalar_args[slot] = len(self.scalar_args)
                    self.scalar_types.append(n.dtype.name)
                    self.scalar_values.append(n.arg)
                return Expr("scalar", arg=self.scalar_args[slot], dtype=n.dtype.name)
            return Expr("const", arg=n.arg, dtype=n.dtype.name)
        if n.op is Op.IOTA:
            return Expr("index", arg=idx[0], dtype=n.dtype.name)
        if n.op in (Op.DETACH, Op.STORED):
            return self.render(n.srcs[0], idx, mask)
        if n.op is Op.CAST:
            return Expr("cast", (self.render(n.srcs[0], idx, mask),), n.dtype.name, n.dtype.name)
        if n.op in UNARY or n.op in BINARY or n.op is Op.WHERE:
            srcs = tuple(self.render(s, idx, mask) for s in n.srcs)
            return Expr(n.op.name.lower(), srcs, None, n.dtype.name)
        if n.op in MOVEMENT:
            src = n.srcs[0]
            sidx, conds = movement_index(n.op.name, n.arg, src.shape, n.shape, idx, self.ranges)
            if not conds:
                return self.render(src, sidx, mask)
            conds = tuple(conds)
            inner = self.render(src, sidx, mask + conds)
            valid = Expr("valid", arg=conds, dtype="bool")
            return Expr("where", (valid, inner, _zero(n.dtype)), None, n.dtype.name)
        if n.op in REDUCE:
            return self._reduce(n, idx, mask)
        raise NotImplementedError(f"cannot lower {n}")

    def _reduce(self, n: Node, idx: tuple, mask: tuple) -> Expr:
        seen = self.reduced_at.setdefault(id(n), idx)
        if seen != idx:  # read at another position too (a gradient spread back over windows)
            raise NotFusable(n, f"{REDUCE_NAMES[n.op]}{list(n.srcs[0].shape)}->{list(n.shape)} is read at several "
                                "positions: computed once, not once per position")
        src = n.srcs[0]
        rvars, rsizes, sidx = [], [], list(idx)
        for ax in n.arg:
            if src.shape[ax] == 1:
                sidx[ax] = sympy.Integer(0)
                continue
            r = symbol(f"r{self.nrvars}")
            self.nrvars += 1
            self.ranges[r] = src.shape[ax]
            rvars.append(r)
            rsizes.append(src.shape[ax])
            sidx[ax] = r
        self.scope_rvars.append(set(rvars))
        value = self.render(src, tuple(sidx), mask)
        self.scope_rvars.pop()
        deps = self.deps(value) - set(rvars)
        outer_r = {d for d in deps if d.name.startswith("r")}
        if outer_r:
            raise NotFusable(n, f"{REDUCE_NAMES[n.op]}{list(src.shape)}->{list(n.shape)} sits inside another "
                                f"reduction's loop (depends on {sorted(map(str, outer_r))})")
        name = f"acc{len(self.reduces)}"
        depth = self._depth(n, deps)
        self.reduces.append(Reduce(name, REDUCE_NAMES[n.op], value, n.dtype.name, tuple(rsizes),
                                   tuple(str(r) for r in rvars), depth))
        self.acc_deps[name] = deps
        return Expr("acc", arg=name, dtype=n.dtype.name)

    def _depth(self, n: Node, deps: set) -> int:
        xs = sorted(int(d.name[1:]) for d in deps if d.name.startswith("x"))
        depth = xs[-1] + 1 if xs else 0
        missing = [f"x{i}" for i in range(depth) if i not in xs and self.loop_sizes[i] > 1]
        if missing and id(n) not in self.roots:  # the kernel's own output is computed where it is stored
            raise NotFusable(n, f"{REDUCE_NAMES[n.op]}{list(n.srcs[0].shape)}->{list(n.shape)} would be "
                                f"recomputed for every {', '.join(missing)} of the consumer's loops")
        return depth

    def deps(self, e: Expr) -> set:
        hit = self.dep_memo.get(id(e))
        if hit is not None:
            return hit
        out: set = set()
        if e.op == "load":
            _, index, mask = e.arg
            out |= index.free_symbols
            for _, a, _ in mask:
                out |= a.free_symbols
        elif e.op == "index":
            out |= e.arg.free_symbols
        elif e.op == "valid":
            for _, a, _ in e.arg:
                out |= a.free_symbols
        elif e.op == "acc":
            out |= self.acc_deps[e.arg]
        for s in e.srcs:
            out |= self.deps(s)
        self.dep_memo[id(e)] = out
        return out

    # -- driver ----------------------------------------------------------------------------
    def lower(self, roots: list[Node], out_slots: list[int], merge: bool = True) -> Kernel:
        """One kernel storing every root (all of one shape) at the same loop index; `merge=False`
        keeps one loop per dim of size > 1 (a GEMM epilogue maps them onto its tile)."""
        written = roots
        if merge and len(roots) == 1:
            # a reshape keeps the row-major order of its source: storing the source, iterated over its
            # own shape, writes the same memory, and reads it without the // and % a reshaped index
            # needs (an im2col matrix from a convolution's windows)
            r = roots[0]
            while r.op is Op.RESHAPE and r.srcs[0].op is not Op.BUFFER and id(r.srcs[0]) not in self.realized:
                r = r.srcs[0]
            roots = [r]
        self.roots = {id(r) for r in roots}
        self.dep_memo: dict = {}
        self.acc_deps: dict = {}
        shape = roots[0].shape
        assert all(r.shape == shape for r in roots), "a kernel's outputs share one iteration space"
        idx = []
        self.loop_sizes = []
        for s in shape:
            if s == 1:
                idx.append(sympy.Integer(0))
                continue
            x = symbol(f"x{len(self.loop_sizes)}")
            self.ranges[x] = s
            self.loop_sizes.append(s)
            idx.append(x)
        self.root_index = tuple(idx)
        out_index = sympy.expand(flat_index(tuple(idx), strides_of(shape)))
        stores = []
        for root, slot in zip(roots, out_slots):
            value = self.render(root, tuple(idx), ())
            ob = self._buf(slot, root.dtype.name, root.numel, True)
            stores.append(Store(ob, out_index, value, root.dtype.name))
        k = Kernel(self.name, tuple(b for _, b in self.buf_list), tuple(self.loop_sizes), tuple(self.reduces),
                   tuple(stores), scalars=tuple(self.scalar_types))
        if merge:
            k = merge_loops(k, self.ranges)
        k = legalize(k)
        k.meta["bytes_read"] = sum(self.loads.values())
        k.meta["bytes_written"] = sum(r.numel * r.dtype.itemsize for r in written)
        k.meta["slots"] = tuple(slot for slot, _ in self.buf_list)
        k.meta["scalar_slots"] = tuple(self.scalar_args)
        k.meta["scalar_values"] = tuple(self.scalar_values)  # for reading the source (debug output, tests)
        return k


# -- loop merging --------------------------------------------------------------------------

def _can_merge(a: sympy.Symbol, b: sympy.Symbol, size_b: int, affine, rigid) -> bool:
    for e in rigid:
        if a in e.free_symbols or b in e.free_symbols:
            return False
    for e in affine:
        d = e.as_coefficients_dict()
        for t in d:
            if t != 1 and not t.is_Symbol and (a in t.free_symbols or b in t.free_symbols):
                return False
        if int(d.get(a, 0)) != int(d.get(b, 0)) * size_b:
            return False
    return True


def _rebuild(k: Kernel, rep: dict, loops, reduces_meta) -> Kernel:
    memo: dict = {}
    reduces = tuple(Reduce(r.name, r.op, subst_expr(r.value, rep, memo), r.dtype, rs, rv, d)
                    for r, (rs, rv, d) in zip(k.reduces, reduces_meta))
    stores = tuple(Store(s.buf, sympy.expand(s.index.xreplace(rep)), subst_expr(s.value, rep, memo), s.dtype)
                   for s in k.stores)
    return Kernel(k.name, k.buffers, tuple(loops), reduces, stores, dict(k.meta), k.scalars, k.sizes)


def merge_loops(k: Kernel, ranges: dict) -> Kernel:
    """Merge adjacent output loops, and adjacent reduction loops of each reduction, where legal."""
    changed = True
    while changed:
        changed = False
        affine, rigid = index_exprs(k)
        n = len(k.loops)
        for i in range(n - 1):
            if any(r.depth == i + 1 for r in k.reduces):
                continue  # a reduction sits between the two loops
            a, b = symbol(f"x{i}"), symbol(f"x{i + 1}")
            if not _can_merge(a, b, k.loops[i + 1], affine, rigid):
                continue
            loops = list(k.loops)
            loops[i: i + 2] = [k.loops[i] * k.loops[i + 1]]
            rep = {a: sympy.Integer(0), b: a}
            for j in range(i + 2, n):  # renumber the inner loops
                rep[symbol(f"x{j}")] = symbol(f"x{j - 1}")
            meta = [(r.rsizes, r.rvars, r.depth - 1 if r.depth > i + 1 else r.depth) for r in k.reduces]
            k = _rebuild(k, rep, loops, meta)
            changed = True
            break
        if changed:
            continue
        for ri, r in enumerate(k.reduces):
            for j in range(len(r.rvars) - 1):
                a, b = symbol(r.rvars[j]), symbol(r.rvars[j + 1])
                if not _can_merge(a, b, r.rsizes[j + 1], affine, rigid):
                    continue
                rs = list(r.rsizes)
                rs[j: j + 2] = [r.rsizes[j] * r.rsizes[j + 1]]
                rv = list(r.rvars)
                del rv[j + 1]
                meta = [(x.rsizes, x.rvars, x.depth) for x in k.reduces]
                meta[ri] = (tuple(rs), tuple(rv), r.depth)
                k = _rebuild(k, {a: sympy.Integer(0), b: a}, k.loops, meta)
                changed = True
                break
            if changed:
                break
    return k
