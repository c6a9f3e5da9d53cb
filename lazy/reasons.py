"""Why a program was built: the nearest program seen before and what differs from it.

In:  the full cache key of a program the runtime did not have (`runtime.program_for`: the graph's
     `structure_key` plus backend, device, in-place targets and GEMM choice).
Out: one line for `LAZY_DEBUG=1` ("new structure", "a size changed: ... 17 -> 18", "a dtype
     changed", "a literal constant changed", "another backend or device", ...).

How: the structure key is erased in steps (sizes, then dtypes, then literal constants) and each
erased key remembers the last full key that had it. The first step at which the new key meets an
old one names the change, and the two keys' sizes (or dtypes, or constants) say where. Bounded:
the tables keep the `MAX_KEYS` keys seen last.
"""

from __future__ import annotations

from collections import OrderedDict

from lazy.graph import Op

MAX_KEYS = 1024
_MOVES_WITH_SIZES = (Op.RESHAPE, Op.EXPAND, Op.PAD, Op.SHRINK)

_seen: list[OrderedDict] = [OrderedDict() for _ in range(4)]  # per erasure level: erased key -> full key


def _erase(full_key: tuple, level: int) -> tuple[tuple, list]:
    """(the key with sizes erased; and from level 2 dtypes, from level 3 literal values too; the
    erased items in order, each (level, node position, what, value))."""
    (parts, roots), *rest = full_key
    out, items = [], []
    for i, ((op, arg, dtype, shape), src) in enumerate(parts):
        items.append((1, i, f"{op.name.lower()} shape", shape))
        shape = len(shape)
        if op in _MOVES_WITH_SIZES:
            items.append((1, i, f"{op.name.lower()} argument", arg))
            arg = None
        if isinstance(src, tuple) and src and src[0] == "buf":
            items.append((1, i, "buffer layout", src[2][:2]))
            src = ("buf", src[1], src[2][2])
        if level >= 2:
            items.append((2, i, f"{op.name.lower()} dtype", dtype))
            dtype = None
        if level >= 3 and op is Op.CONST:
            items.append((3, i, "constant", "a kernel argument" if arg == "scalar" else arg[1]))
            arg, src = None, ()
        out.append(((op, arg, dtype, shape), src))
    return (tuple(out), roots, *rest), items


def note(full_key: tuple) -> str:
    """Remember `full_key` and say why it is new (call once per program built)."""
    why = None
    for level in (1, 2, 3):
        erased, items = _erase(full_key, level)
        table = _seen[level]
        old = table.get(erased)
        if why is None and old is not None:
            why = _diff(level, items, _erase(old, level)[1])
        table[erased] = full_key
        table.move_to_end(erased)
        while len(table) > MAX_KEYS:
            table.popitem(last=False)
    if why is None:
        for old in reversed(_seen[0].values()):
            if old[0] == full_key[0]:
                why = "the same graph on another backend, device, in-place target or GEMM choice"
                break
    table = _seen[0]
    table[full_key] = full_key
    while len(table) > MAX_KEYS:
        table.popitem(last=False)
    return why or "new structure"


def _diff(level: int, new: list, old: list) -> str:
    kind = {1: "a size changed", 2: "a dtype changed", 3: "a literal constant changed"}[level]
    for (lv, i, what, a), (_, _, _, b) in zip(new, old):
        if lv == level and a != b:
            return f"{kind}: {what} of node {i}, {b} -> {a}"
    return kind
