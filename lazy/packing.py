"""Packed outputs: the roots of a pack stored back to back in one flat buffer (a data-parallel
gradient bucket, which a collective then reduces as one message).

In:  a compiled `runtime.Program` (its schedule's allocations, outputs and launches) and the packs:
     tuples of root indices, one dtype each.
Out: the same program with its packing filled in (`flats`, `placed`, `copies`, `events`), and at run
     time its allocations (`allocations`) and what happens between two launches (`at`).

Invariants
- No copy kernel: a root the program computes into an allocation of its own is computed into its
  place in the flat (the allocation is a view of the flat; kernels index from a buffer's data
  pointer, so none of them changes). A root that has no allocation of its own (an input, a root
  packed twice) is copied into place on the host right after its value is complete.
- Flat i is complete after the last launch that reads or writes one of its views (a later kernel
  may still read a gradient) and after the copies into it; `on_ready(i, flat)` runs then, while the
  remaining launches run, so a collective started there overlaps them.
- The program's outputs continue with the flats, then every packed root's view in pack order.
"""

from __future__ import annotations

import math

from codegen.kernel_ir import ExternCall
from lazy.graph import Node


def pack(prog, nodes: list[Node], packs: tuple):
    """Fill in `prog`'s packing (see the module docstring); `events[p]`: the copies to make and the
    flats complete before launch p (p = len(launches): after the last)."""
    n_in, n_alloc = prog.n_inputs, len(prog.allocs)
    placed: list = [None] * n_alloc
    flats, copies, members, where = [], [], [], []  # where: per flat, the slots it is made of
    for f, pack in enumerate(packs):
        off, dtypes, parts = 0, {nodes[i].dtype for i in pack}, []
        if len(dtypes) != 1:
            raise ValueError(f"realize: a pack holds one dtype, got {sorted(d.name for d in dtypes)}")
        for i in pack:
            r, s = nodes[i], prog.outputs[i]
            if s >= n_in and placed[s - n_in] is None:
                placed[s - n_in] = (f, off)
                members.append(s)
            else:
                copies.append((s, f, off, r.shape))
                members.append(n_in + n_alloc + len(packs) + len(copies) - 1)
            parts.append(members[-1])
            off += r.numel
        flats.append((off, dtypes.pop().name))
        where.append(parts)
    last: dict[int, int] = {}  # slot -> the position after the last launch that uses it
    for li, ln in enumerate(prog.launches):
        for s in _slots_used(ln):
            last[s] = li + 1
    events: list = [([], []) for _ in range(len(prog.launches) + 1)]
    copy_at = []
    for j, (src, f, _, _) in enumerate(copies):
        copy_at.append(last.get(src, 0))
        events[copy_at[-1]][0].append(j)
    copy_dst = {n_in + n_alloc + len(packs) + j: copy_at[j] for j in range(len(copies))}
    for f, parts in enumerate(where):
        events[max([copy_dst.get(s, last.get(s, 0)) for s in parts], default=0)][1].append(f)
    prog.flats, prog.placed, prog.copies = tuple(flats), tuple(placed), tuple(copies)
    prog.events = tuple((tuple(c), tuple(fl)) if c or fl else None for c, fl in events)
    prog.outputs = list(prog.outputs) + [n_in + n_alloc + f for f in range(len(packs))] + members
    return prog


def _slots_used(ln) -> set[int]:
    """The program slots one launch reads or writes (a GEMM's fused epilogue included)."""
    k = ln.kernel
    used = set(ln.slots)
    if isinstance(k, ExternCall) and k.epilogue is not None:
        used |= set(k.epilogue.meta.get("slots", ()))
    return used


def allocations(prog, alloc) -> list:
    """The slots after the inputs of a packed program: its allocations (views of the flats where
    roots are placed), the flats, the copies' views. `alloc(shape, dtype name)` allocates."""
    flats = [alloc((n,), dt) for n, dt in prog.flats]
    out = []
    for (shape, dt), place in zip(prog.allocs, prog.placed):
        if place is None:
            out.append(alloc(shape, dt))
        else:
            f, off = place
            out.append(flats[f][off:off + math.prod(shape)].view(shape))
    out += flats
    out += [flats[f][off:off + math.prod(shape)].view(shape) for _, f, off, shape in prog.copies]
    return out


def at(prog, event, slots: list, on_ready) -> None:
    """What happens between two launches of a packed program: copies into place, complete flats."""
    if event is None:
        return
    copies, ready = event
    base = prog.n_inputs + len(prog.allocs)
    for j in copies:
        src = prog.copies[j][0]
        slots[base + len(prog.flats) + j].copy_(slots[src])
    if on_ready is not None:
        for f in ready:
            on_ready(f, slots[base + f])
