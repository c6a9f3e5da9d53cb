"""Scheduling: cut a graph into kernels, order them, plan their buffers.

In:  root nodes to realize and the input `Buffer`s in `graph.structure_key` order.
Out: a `Schedule`: kernels (Kernel IR, in dependency order), the buffer slots each reads and
     writes, the allocations to make, and which slot holds each root. A schedule refers to
     inputs only by slot, so it is cached by the graph's structure key and replayed over new data.

The fusion rules (README, "How it works") and where they live:
1. Elementwise ops and views are inlined into their consumer: nothing but realized nodes and
   BUFFERs is ever loaded (scheduler.lower).
2-3. A reduction is inlined into its consumer's kernel (prologue, epilogue, and several
   reductions over the same rows) unless lowering rejects it (`_lower_group` tries it;
   the rejection carries the reason); rejected reductions become kernels of their own.
4. A node inlined into several kernels is realized once when recomputing it costs more than
   reading it back (`should_realize`): it holds a reduction, or reads two or more buffers.
6. A GEMM's A operand that is no strided view but is affine in finer coordinates (the windows of
   a convolution as an im2col matrix) is read through its index map (`gather_view`), never
   realized: the GEMM packs it straight from the input.
Every decision is recorded in `Schedule.decisions` (printed at LAZY_DEBUG>=2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import sympy

from codegen.kernel_ir import BufferArg, Expr, ExternCall, GatherView, Kernel, StridedView, walk_exprs
from lazy.graph import ELEMENTWISE, MOVEMENT, REDUCE, Buffer, Node, Op, buffer_layout, toposort
from scheduler.indexing import SYMBOLIC, flat_index, linear_coeffs, movement_index, reshape_blocks, strides_of, symbol
from scheduler.lower import REDUCE_NAMES, Lowerer, NotFusable

_OWN_KERNEL = (Op.MATMUL, Op.EXTERN)  # rule 5: kernels of their own, never fused into others


def implicit_gemm() -> bool:
    """Rule 6 on (the default); LAZY_IMPLICIT_GEMM=0 realizes im2col matrices as before (read when a
    graph is scheduled: programs already built keep their schedule)."""
    return os.environ.get("LAZY_IMPLICIT_GEMM", "1") != "0"


@dataclass
class Schedule:
    kernels: list[Kernel | ExternCall]
    n_inputs: int
    allocs: list[tuple[tuple[int, ...], str]]  # slot n_inputs + i: (shape, dtype name)
    outputs: list[int]
    decisions: list[str] = field(default_factory=list)
    written: tuple[int, ...] = ()  # input slots a kernel overwrites in place (the `into` requests honoured)


def _describe(n: Node) -> str:
    name = REDUCE_NAMES.get(n.op, n.op.name.lower())
    return f"{name}{list(n.shape)}"


def _inlined_nodes(root: Node, realized: set[int]) -> list[Node]:
    """Nodes computed inside the kernel that stores `root` (stops at realized nodes/buffers)."""
    out, seen, stack = [], set(), [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        for s in n.srcs:
            if s.op is not Op.BUFFER and id(s) not in realized:
                stack.append(s)
    return out


def should_realize(n: Node, realized: set[int]) -> tuple[bool, str]:
    """Profitability of materializing a node that several kernels would otherwise recompute."""
    inner = _inlined_nodes(n, realized)
    if any(m.op in REDUCE for m in inner):
        return True, "holds a reduction; recomputing it would repeat the whole reduction"
    loads = {id(s) for m in inner for s in m.srcs if s.op is Op.BUFFER or id(s) in realized}
    if len(loads) >= 2:
        return True, f"reads {len(loads)} buffers; one write + reads beats {len(loads)} reads per consumer"
    return False, "cheap to recompute (one buffer read)"


def schedule(roots: list[Node], buffers: list[Buffer], into: tuple[int | None, ...] | None = None,
             max_rounds: int = 10_000, scalars: list[Node] = ()) -> Schedule:
    """`into[i]`, when given, is the input slot root i should be written into in place (an optimizer
    step overwriting a parameter); honoured where no later read sees it (`_in_place`), else the
    root gets a buffer of its own, as without `into`. `scalars`: the CONST nodes that are kernel
    arguments, in `graph.structure_key` order (a kernel reads slot i as its argument; others are
    literals)."""
    slot_of: dict = {id(b): i for i, b in enumerate(buffers)}
    slot_of.update({("scalar", id(c)): i for i, c in enumerate(scalars)})
    decisions: list[str] = []
    realized: set[int] = {id(r) for r in roots if r.op is not Op.BUFFER}
    order = toposort(roots)
    for n in order:  # rule 5: a contraction (or a library call) is its own kernel, reading strided views
        if n.op in _OWN_KERNEL:
            realized.add(id(n))
    for n in order:
        if n.op in _OWN_KERNEL:
            for i, s in enumerate(n.srcs):
                if strided_view(s, realized) is not None:
                    continue
                base = s
                while (base.op in MOVEMENT or base.op is Op.DETACH) and id(base) not in realized:
                    base = base.srcs[0]
                strided_below = (base is not s and base.op is not Op.BUFFER
                                 and strided_view(s, realized | {id(base)}) is not None)
                # rule 6: a GEMM reads its A operand through an index map
                if n.op is Op.MATMUL and i == 0 and not strided_below and implicit_gemm():
                    gv = _implicit_operand(s, realized)
                    if gv is not None:
                        base, why = gv
                        if base is not None:
                            decisions.append(f"realize: {_describe(base)} feeds a GEMM through an index map")
                            realized.add(id(base))
                        decisions.append(f"implicit: {_describe(s)} is read by the GEMM through its index map, "
                                         f"not realized ({why})")
                        continue
                # realize what the movement ops stand on, when the GEMM can then read the moved
                # operand as a strided view of it (a transposed gradient: no transposing copy)
                if strided_below:
                    decisions.append(f"realize: {_describe(base)} feeds a GEMM or library call through a strided view")
                    realized.add(id(base))
                else:
                    decisions.append(f"realize: {_describe(s)} feeds a GEMM or library call and is not a strided view "
                                     "of a buffer")
                    realized.add(id(s))

    for _ in range(max_rounds):
        kernels_of: dict[int, list[int]] = {}
        plan = [n for n in order if id(n) in realized]
        for ki, n in enumerate(plan):
            for m in _inlined_nodes(n, realized):
                kernels_of.setdefault(id(m), []).append(ki)
        grew = False
        for n in order:
            if id(n) in realized or n.op is Op.BUFFER or n.op not in ELEMENTWISE | REDUCE:
                continue
            if len(set(kernels_of.get(id(n), ()))) >= 2:
                yes, why = should_realize(n, realized)
                decisions.append(f"{'realize' if yes else 'recompute'} {_describe(n)} used by "
                                 f"{len(set(kernels_of[id(n)]))} kernels: {why}")
                if yes:
                    realized.add(id(n))
                    grew = True
                    break
        if grew:
            continue
        try:
            return _lower_in_place(plan, roots, buffers, slot_of, realized, decisions, into)
        except NotFusable as e:
            if id(e.node) in realized:
                raise RuntimeError(f"scheduler: {_describe(e.node)} cannot be lowered even on its own: "
                                   f"{e.reason}") from e
            decisions.append(f"split: {_describe(e.node)} becomes its own kernel: {e.reason}")
            realized.add(id(e.node))
    raise RuntimeError("scheduler did not converge")


def _group_outputs(plan: list[Node], realized: set[int]) -> list[list[Node]]:
    """Horizontal fusion: realized nodes of one shape share a kernel (an optimizer's parameter,
    moment and variance updates; several reductions of one tensor), which reads their common
    inputs once. A member that reads another member computes it inline (at the same index that
    is CSE'd with the other's store), so `p - lr * m / sqrt(v)` stores p, m and v in one pass.
    A node joins the latest group of its shape that comes after everything else it reads."""
    group_of: dict[int, int] = {}
    groups: list[list[Node]] = []
    for n in plan:
        deps = {id(s) for m in _inlined_nodes(n, realized - {id(n)}) for s in m.srcs
                if id(s) in realized and s is not n}
        target = None
        for gi in range(len(groups) - 1, -1, -1):
            members = {id(m) for m in groups[gi]}
            if max((group_of[d] for d in deps - members if d in group_of), default=-1) >= gi:
                break  # n reads something computed in this group's position or later
            if (groups[gi][0].shape == n.shape and n.numel > 0 and n.op not in _OWN_KERNEL
                    and groups[gi][0].op not in _OWN_KERNEL):
                target = gi
                break
        if target is None:
            groups.append([n])
            target = len(groups) - 1
        else:
            groups[target].append(n)
        group_of[id(n)] = target
    return groups


def gemm_epilogues(plan: list[Node], groups: list[list[Node]], roots: list[Node], realized: set[int],
                   decisions: list[str]) -> dict[int, Node]:
    """Epilogue fusion (rule 5): {id(E): M} for each GEMM M whose only reader is the realized node E,
    an elementwise kernel of M's shape and dtype that reads M at the output index. Then M is never
    stored: the GEMM kernel computes E (a contraction is a kernel boundary with a
    fusible epilogue)."""
    readers: dict[int, list[Node]] = {}
    for n in plan:
        for m in _inlined_nodes(n, realized - {id(n)}):
            for s in m.srcs:
                if s.op is Op.MATMUL and id(s) in realized and s is not n:
                    lst = readers.setdefault(id(s), [])
                    if n not in lst:
                        lst.append(n)
    alone = {id(g[0]) for g in groups if len(g) == 1}
    root_ids = {id(r) for r in roots}
    out: dict[int, Node] = {}
    for m in plan:
        if m.op is not Op.MATMUL or id(m) in root_ids or m.numel == 0:
            continue
        users = readers.get(id(m), [])
        if len(users) != 1:
            continue
        e = users[0]
        why = None
        if e.op in _OWN_KERNEL:
            why = "its reader is another GEMM or a library call"
        elif (e.shape, e.dtype) != (m.shape, m.dtype):
            why = f"its reader is {_describe(e)} {e.dtype.name}, not {_describe(m)} {m.dtype.name}"
        elif id(e) not in alone:
            why = f"{_describe(e)} shares a kernel with other outputs"
        elif any(x.op in REDUCE for x in _inlined_nodes(e, realized - {id(e)})):
            why = f"{_describe(e)} holds a reduction"
        else:
            try:
                _EpilogueLowerer(m, "probe", _AnySlot(), realized - {id(e)}).lower([e], [0], merge=False)
            except NotFusable as err:
                why = err.reason
        if why is None:
            out[id(e)] = m
            decisions.append(f"fuse: {_describe(e)} is the epilogue of GEMM {_describe(m)}")
        else:
            decisions.append(f"no epilogue fusion for GEMM {_describe(m)}: {why}")
    return out


class _AnySlot(dict):
    def __missing__(self, key):
        return 0


class _EpilogueLowerer(Lowerer):
    """Lowers an epilogue: the GEMM node `gemm` becomes the accumulator, readable only at the
    output index (anything else would need other tiles' results)."""

    def __init__(self, gemm: Node, *args):
        super().__init__(*args)
        self.gemm = gemm

    def _load(self, n: Node, idx: tuple, mask: tuple) -> Expr:
        if n is not self.gemm:
            return super()._load(n, idx, mask)
        if mask or tuple(idx) != self.root_index:
            raise NotFusable(n, "the epilogue reads the GEMM result at another index (a view of it)")
        return Expr("acc", arg="gemm", dtype=n.dtype.name)


def _lower_in_place(plan, roots, buffers, slot_of, realized, decisions, into) -> Schedule:
    """Lower with the requested in-place outputs; drop each one that turns out unsafe and retry."""
    aliased: dict[int, int] = {}
    for i, r in enumerate(roots):
        j = into[i] if into else None
        if j is None or r.op is Op.BUFFER:
            continue
        strides, offset, _ = buffer_layout(buffers[j])
        why = None
        if r.op in _OWN_KERNEL:
            why = "a GEMM or library call writes through its own view"
        elif (buffers[j].data.shape, buffers[j].data.dtype.itemsize) != (r.shape, r.dtype.itemsize) or \
                str(buffers[j].data.dtype).split(".")[-1] != r.dtype.name:
            why = f"the target {tuple(buffers[j].data.shape)} {buffers[j].data.dtype} does not match"
        elif strides != strides_of(r.shape) or offset != 0:
            why = "the target is not a contiguous buffer of its own"
        elif id(r) in aliased or j in aliased.values():
            why = "the output or the target appears twice"
        if why:
            decisions.append(f"in-place: {_describe(r)} gets a new buffer: {why}")
        else:
            aliased[id(r)] = j
    while True:
        sched = _lower_all(plan, roots, buffers, slot_of, realized, decisions, aliased)
        bad = _in_place_hazards(sched, roots, aliased)
        if not bad:
            for r in roots:
                if id(r) in aliased:
                    decisions.append(f"in-place: {_describe(r)} overwrites input slot {aliased[id(r)]}")
            sched.written = tuple(sorted(set(aliased.values())))
            return sched
        for rid, why in bad.items():
            r = next(x for x in roots if id(x) == rid)
            decisions.append(f"in-place: {_describe(r)} gets a new buffer: {why}")
            del aliased[rid]


def _in_place_hazards(sched: Schedule, roots, aliased: dict[int, int]) -> dict[int, str]:
    """{id(root): reason} for in-place outputs whose target is read after it is written: by a later
    kernel, or in its own kernel at another element than the one being written (or in a reduction,
    which reads a whole row before the row is written, but across rows in any order)."""
    bad: dict[int, str] = {}
    for r in roots:
        j = aliased.get(id(r))
        if j is None:
            continue
        for ki, k in enumerate(sched.kernels):
            slots = k.meta["slots"]
            if isinstance(k, Kernel) and any(k.meta["slots"][s.buf] == j for s in k.stores):
                break
        else:
            bad[id(r)] = "no kernel stores it"
            continue
        b = slots.index(j)
        (index,) = {s.index for s in k.stores if s.buf == b}
        for e in walk_exprs([red.value for red in k.reduces]):
            if e.op == "load" and e.arg[0] == b:
                bad[id(r)] = "a reduction in its kernel reads the old value"
        for e in walk_exprs([s.value for s in k.stores]):
            if e.op == "load" and e.arg[0] == b and (e.arg[1] != index or e.arg[2]):
                bad[id(r)] = "its kernel reads the old value at other elements"
        for later in sched.kernels[ki + 1:]:
            ls = later.meta["slots"] + (() if not isinstance(later, ExternCall) or later.epilogue is None
                                        else later.epilogue.meta["slots"])
            if j in ls:
                bad[id(r)] = f"{later.name} reads the old value after it is written"
    return bad


def _lower_all(plan, roots, buffers, slot_of, realized, decisions, aliased=None) -> Schedule:
    aliased = aliased or {}
    groups = _group_outputs(plan, realized)
    epilogues = gemm_epilogues(plan, groups, roots, realized, decisions)
    fused = {id(m) for m in epilogues.values()}
    slots = dict(slot_of)
    allocs = []
    for n in plan:
        if id(n) in aliased:
            slots[id(n)] = aliased[id(n)]
        elif id(n) not in fused:  # a fused GEMM's result lives only in registers / the output
            slots[id(n)] = len(buffers) + len(allocs)
            allocs.append((n.shape, n.dtype.name))
    kernels = []
    for group in groups:
        if group[0].numel == 0 or id(group[0]) in fused:
            continue  # nothing to compute (the allocation alone is the result), or done with its epilogue
        if id(group[0]) in epilogues:
            e = group[0]
            kernels.append(_extern_matmul(epilogues[id(e)], len(kernels), slots, realized, epilogue=e))
            continue
        try:
            parts = [_lower_group(group, len(kernels), slots, realized, decisions)]
        except NotFusable:
            if len(group) == 1:
                raise
            decisions.append(f"ungroup: {', '.join(map(_describe, group))} lower as separate kernels")
            parts = [_lower_group([n], len(kernels) + i, slots, realized, decisions) for i, n in enumerate(group)]
        kernels.extend(parts)
    outputs = [slot_of[id(r.arg)] if r.op is Op.BUFFER else slots[id(r)] for r in roots]
    return Schedule(kernels, len(buffers), allocs, outputs, decisions)


def _lower_group(group: list[Node], index: int, slots, realized, decisions) -> Kernel | ExternCall:
    if group[0].op is Op.MATMUL:
        return _extern_matmul(group[0], index, slots, realized)
    if group[0].op is Op.EXTERN:
        return _extern_op(group[0], index, slots, realized)
    ids = {id(n) for n in group}
    lw = Lowerer(f"k{index}_{_describe(group[0]).split('[')[0]}", slots, realized - ids)
    k = lw.lower(group, [slots[id(n)] for n in group])
    if len(group) > 1:
        decisions.append(f"group: {', '.join(map(_describe, group))} share one kernel "
                         "(one iteration space, independent outputs)")
    for n in group:
        fused = [_describe(r) for r in _inlined_nodes(n, realized - ids) if r.op in REDUCE and r is not n]
        if fused:
            decisions.append(f"fuse: {', '.join(fused)} into the kernel of {_describe(n)} "
                             f"({len(k.reduces)} reduction stage(s), loops {list(k.loops)})")
    return k


def strided_view(n: Node, realized: set[int]) -> tuple[Node, tuple[int, ...], int] | None:
    """(base, strides, offset) when `n` is movement ops over a BUFFER or realized node whose index
    map is affine (permute, expand, shrink, flip, reshapes that split/merge cleanly); else None."""
    chain = []
    base = n
    while base.op is not Op.BUFFER and id(base) not in realized:
        if base.op is Op.DETACH:  # (values pass through: what no_grad puts on every result)
            base = base.srcs[0]
            continue
        if base.op not in MOVEMENT:
            return None
        chain.append(base)
        base = base.srcs[0]
    ranges = {}
    idx = []
    for i, size in enumerate(n.shape):
        x = symbol(f"v{i}")
        ranges[x] = size
        idx.append(x if size > 1 else sympy.Integer(0))
    idx = tuple(idx)
    for m in chain:
        idx, conds = movement_index(m.op.name, m.arg, m.srcs[0].shape, m.shape, idx, ranges)
        if conds:
            return None  # padding has no stride
    if base.op is Op.BUFFER:
        strides = buffer_layout(base.arg)[0]
    else:
        strides = strides_of(base.shape)
    flat = flat_index(tuple(i if s > 1 else 0 for i, s in zip(idx, base.shape)), strides)
    coeffs = linear_coeffs(flat)
    if coeffs is None or any(c < 0 for k, c in coeffs.items() if k != 1):
        return None  # not affine, or flipped (BLAS takes no negative strides)
    out = tuple(coeffs.get(symbol(f"v{i}"), 0) if size > 1 else 0 for i, size in enumerate(n.shape))
    return base, out, coeffs.get(1, 0)


def _implicit_operand(s: Node, realized: set[int]) -> tuple[Node | None, str] | None:
    """Whether GEMM operand `s` should be read through its index map (`gather_view`) instead of
    being realized: when it has more elements than what it reads (the overlapping windows of a
    convolution) or is a gathered view of a buffer at all (a 1x1 convolution's NHWC rows). Returns
    (the node to realize below it, or None when it stands on a buffer or realized node; the reason),
    or None."""
    base = s
    while (base.op in MOVEMENT or base.op is Op.DETACH) and id(base) not in realized:
        base = base.srcs[0]
    if base is s or not s.dtype.is_float:
        return None
    if any(d >= SYMBOLIC for d in s.shape):  # an index map's sub-dims and bounds are literals: a
        return None  # program for sizes that change (lazy/dynamic.py) realizes the operand instead
    below = None if base.op is Op.BUFFER or id(base) in realized else base
    if gather_view(s, realized if below is None else realized | {id(below)}) is None:
        return None
    return below, f"{s.numel} elements over {base.numel}: no im2col copy"


def gather_view(n: Node, realized: set[int]) -> tuple[Node, GatherView] | None:
    """(base, view) when `n` is merging reshapes and permutes over movement ops whose index map
    (with padding's bounds) is affine in the dims under them: the im2col matrix of a convolution,
    [N*OH*OW, C*KH*KW] over the windows of the padded input. None otherwise, or when a batch dim
    (all but the last two) would need more than a stride."""
    if any(not isinstance(d, int) for d in n.shape):
        return None
    groups: list[list[int]] = [[i] for i in range(len(n.shape))]  # n's dims as dims of `top`
    top = n
    while top.op in (Op.PERMUTE, Op.RESHAPE, Op.DETACH) and id(top) not in realized:
        src = top.srcs[0]
        if top.op is Op.DETACH:  # (values pass unchanged: movement ops under no_grad carry one)
            pass
        elif top.op is Op.PERMUTE:
            groups = [[top.arg[d] for d in g] for g in groups]
        else:
            blocks = reshape_blocks(tuple(src.shape), tuple(top.shape))
            if blocks is None or any(k_hi - k_lo > 1 for _, _, k_lo, k_hi in blocks):
                break  # a split (or no clean runs): the index map of `top` itself is what we want
            into = {}
            for i_lo, i_hi, k_lo, k_hi in blocks:
                for k in range(k_lo, k_hi):
                    into[k] = list(range(i_lo, i_hi))
            groups = [[s for d in g for s in into[d]] for g in groups]
        top = src
    chain, base = [], top
    while base.op is not Op.BUFFER and id(base) not in realized:
        if base.op is Op.DETACH:
            base = base.srcs[0]
            continue
        if base.op not in MOVEMENT or any(not isinstance(d, int) for d in base.shape):
            return None
        chain.append(base)
        base = base.srcs[0]
    ranges, idx = {}, []
    for i, size in enumerate(top.shape):
        x = symbol(f"v{i}")
        ranges[x] = size
        idx.append(x if size > 1 else sympy.Integer(0))
    idx, conds = tuple(idx), []
    for m in chain:
        idx, c = movement_index(m.op.name, m.arg, m.srcs[0].shape, m.shape, idx, ranges)
        conds += c
    strides = buffer_layout(base.arg)[0] if base.op is Op.BUFFER else strides_of(base.shape)
    coeffs = linear_coeffs(flat_index(tuple(i if s > 1 else 0 for i, s in zip(idx, base.shape)), strides))
    if coeffs is None:
        return None
    sub = [d for d in range(len(top.shape)) if top.shape[d] > 1]
    pos = {d: j for j, d in enumerate(sub)}
    bounds: dict = {}  # affine expression -> its upper bound (padding checks both sides of one index)
    for kind, e, bound in conds:
        c = linear_coeffs(e)
        if c is None:
            return None
        key = (tuple(c.get(symbol(f"v{d}"), 0) for d in sub), c.get(1, 0))
        hi = bounds.setdefault(key, 1 << 62)
        if kind == "lt":
            bounds[key] = min(hi, bound)
    dims = tuple(tuple(pos[d] for d in g if top.shape[d] > 1) for g in groups)
    if any(len(d) > 1 or (d and any(k[0][d[0]] for k in bounds)) for d in dims[:-2]):
        return None
    view = GatherView(tuple(n.shape), dims, tuple(top.shape[d] for d in sub),
                      tuple(coeffs.get(symbol(f"v{d}"), 0) for d in sub), coeffs.get(1, 0),
                      tuple((c, k, b) for (c, k), b in bounds.items()))
    return base, view


def _extern_op(n: Node, index: int, slots, realized) -> ExternCall:
    """An EXTERN node as a call of codegen/extern.py's table on strided views of its inputs."""
    name, params = n.arg
    bufs, views = [BufferArg("b0", n.dtype.name, n.numel, True)], [StridedView(n.shape, strides_of(n.shape), 0)]
    slot_list = [slots[id(n)]]
    read = 0
    for i, s in enumerate(n.srcs):
        base, strides, offset = strided_view(s, realized)
        slot_list.append(slots[id(base.arg)] if base.op is Op.BUFFER else slots[id(base)])
        bufs.append(BufferArg(f"b{i + 1}", s.dtype.name, base.numel, False))
        views.append(StridedView(s.shape, strides, offset))
        read += s.numel * s.dtype.itemsize
    call = ExternCall(f"k{index}_{name}", name, tuple(bufs), tuple(views), params=tuple(params))
    call.meta.update(slots=tuple(slot_list), bytes_read=read, bytes_written=n.numel * n.dtype.itemsize)
    return call


def _extern_matmul(n: Node, index: int, slots, realized, epilogue: Node | None = None) -> ExternCall:
    out = n if epilogue is None else epilogue
    bufs, views = [BufferArg("b0", n.dtype.name, n.numel, True)], [StridedView(n.shape, strides_of(n.shape), 0)]
    slot_list = [slots[id(out)]]
    read = 0
    for i, s in enumerate(n.srcs):
        sv = strided_view(s, realized)
        if sv is None:  # rule 6: read through its index map
            base, view = gather_view(s, realized)
        else:
            base, view = sv[0], StridedView(s.shape, sv[1], sv[2])
        slot = slots[id(base.arg)] if base.op is Op.BUFFER else slots[id(base)]
        bufs.append(BufferArg(f"b{i + 1}", s.dtype.name, base.numel, False))
        views.append(view)
        slot_list.append(slot)
        read += base.numel * base.dtype.itemsize
    a, b = n.srcs
    batch = 1
    for d in n.shape[:-2]:
        batch *= d
    epi = None
    if epilogue is not None:
        name = f"k{index}_{_describe(epilogue).split('[')[0]}"
        epi = _EpilogueLowerer(n, name, slots, realized - {id(epilogue)}).lower([epilogue], [slots[id(epilogue)]],
                                                                                 merge=False)
    call = ExternCall(f"k{index}_matmul" + ("" if epi is None else "_" + epi.name.split("_", 1)[1]), "matmul",
                      tuple(bufs), tuple(views), epi)
    call.meta.update(slots=tuple(slot_list), bytes_read=read, gemm_bytes_read=read,
                     bytes_written=n.numel * n.dtype.itemsize,
                     flops=2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1])
    if epi is not None:
        call.meta["bytes_read"] = read + epi.meta["bytes_read"]
    return call
