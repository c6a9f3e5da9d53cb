"""Values fixed when created: in-place writes, the values that still read the old memory, and
pending writes.

In:  the Tensor layer's in-place writes (`Tensor._write`) and its realizations (`tensor.realize`,
     the optimizers' steps, lazy.jit's replays).
Out: for one realization, the pending values that must be computed in it (written-to tensors,
     and readers of memory about to be overwritten), and the buffers it may overwrite in place.

torch's rule is that a tensor's value is fixed when it is created. Here a pending value is a graph
that reads buffers when it is computed; if a buffer's memory were overwritten before that (an
optimizer writing its parameters in place, a running statistic updated in place), the value would
silently change. The rules:

1. Pending writes join the next realization. A base tensor written in place (`add_`, `copy_`,
   `x[i] = v`, also through views) is *dirty*; the next realization of anything computes its value
   in the same schedule, into its own buffer when it may (rule 2). So a loop that updates state in
   place (a hand-written optimizer, BatchNorm's running statistics) never grows a graph with the
   step count, and no program needs `realize()`.
2. Only memory lazy allocated (`Buffer.owned`) is overwritten, and only by the tensor that owns
   it (`Buffer.owner`; a tensor claims an unclaimed buffer it holds). The caller's torch tensors
   and numpy arrays are never written.
3. Readers are computed first. Before a realization overwrites buffer B, every live tensor whose
   pending value reads B's memory is computed in the same schedule, ahead of the write: the
   values torch eager would have computed already (a model's output held across `opt.step()`, a
   loss summed over steps). A tensor that holds B itself without owning it (a clone, a deep copy)
   has nothing to compute; reading it first would be a copy of B, so instead the new value goes
   to a fresh buffer (renaming), which costs no more than the in-place write.
4. The scheduler still orders the writes inside one schedule (`scheduler.schedule`'s in-place
   hazards): where a kernel would read B after the write, the value gets a fresh buffer.
5. Every in-place write moves the buffer to its next version (`Buffer.version`); BUFFER nodes
   read one version and `graph.structure_key` raises on a stale one, so a case these rules miss
   is an error, not a wrong value.

The one exception to "lazy never writes the caller's memory" is `lazy.from_numpy`: as in torch,
the tensor *is* the array's memory, so its buffer is owned and *pinned* (`pin`). A pinned buffer is
never renamed away from: a write to its tensor is realized at once (`written` returns True), other
tensors holding that memory (clones, `lazy.tensor(array)`) get a private copy first (rule 3's
renaming is turned around), and where the scheduler put the value in a fresh buffer it is copied
back into the array. So the array shows each write as soon as it is made, as torch's does.

Live tensors are found through a registry of weak references that `Tensor._new` appends to (one
per tensor, pruned whenever it doubles). Only realizations that overwrite memory scan it.
"""

from __future__ import annotations

import weakref

from lazy.graph import Buffer, Node, Op

# -- live tensors --------------------------------------------------------------------------------
_live: list[weakref.ref] = []  # every Tensor made since the last prune (dead ones until pruned)
_PRUNE_MIN = 4096
_prune_at = _PRUNE_MIN


def prune() -> None:
    """Drop the registry's dead references; the next prune comes when it has doubled."""
    global _prune_at
    _live[:] = [r for r in _live if r() is not None]
    _prune_at = max(_PRUNE_MIN, 2 * len(_live))


def live_tensors() -> list:
    prune()
    return [t for t in (r() for r in _live) if t is not None]


# -- ownership -------------------------------------------------------------------------------------
def held(n: Node) -> Buffer | None:
    """The buffer whose value node `n` is (None for a pending value)."""
    while n.op is Op.STORED:
        n = n.srcs[0]
    return n.arg if n.op is Op.BUFFER else None


def claim(t, buf: Buffer, force: bool = False) -> None:
    """`t` holds `buf` as its value: it becomes the owner unless a live tensor is (`force`: `t` takes
    it over, as an assignment does)."""
    if buf.owned:
        o = buf.owner
        if force or o is None or o() is None:
            buf.owner = weakref.ref(t)


def may_overwrite(t, buf: Buffer | None) -> bool:
    """Whether `t` may have its next value written into `buf`'s memory (rule 2)."""
    if buf is None or not buf.owned:
        return False
    o = buf.owner
    return o is None or o() is None or o() is t


# -- memory shared with the caller (lazy.from_numpy) ------------------------------------------------
_pinned: weakref.WeakSet = weakref.WeakSet()


def pin(buf: Buffer) -> None:
    """`buf`'s memory is the caller's array, shared on purpose: every value of its owner goes there."""
    _pinned.add(buf)


def pinned(buf: Buffer | None) -> bool:
    return buf is not None and buf in _pinned


# -- dirty tensors ---------------------------------------------------------------------------------
_dirty: dict[int, tuple[weakref.ref, Buffer | None]] = {}  # id(base tensor) -> (tensor, its own buffer)


def written(t, before: Node) -> bool:
    """Base tensor `t` was written in place; its value before was `before`. Its own buffer (where
    the new value may go) is the one it held before its first pending write. True: that buffer is
    pinned, and the write must be realized now."""
    e = _dirty.get(id(t))
    if e is not None and e[0]() is t:
        return pinned(e[1])
    b = held(before)
    home = b if may_overwrite(t, b) else None
    _dirty[id(t)] = (weakref.ref(t), home)
    return pinned(home)


def take_dirty() -> list[tuple[object, Buffer | None]]:
    """The dirty tensors whose value is still pending, with their own buffers; forgets them all."""
    out = []
    for ref, home in _dirty.values():
        t = ref()
        if t is not None and t._base is None and t._cur.op not in (Op.BUFFER, Op.STORED):
            out.append((t, home))
    _dirty.clear()
    return out


def pending_writes() -> int:
    return sum(1 for ref, _ in _dirty.values() if ref() is not None)


# -- readers of memory about to be overwritten ------------------------------------------------------
def _storage(b: Buffer) -> tuple:
    d = b.data
    return (d.device, d.untyped_storage().data_ptr())


def readers(targets: dict[int, tuple[Buffer, object]], computing: dict[int, Node],
            copies: list | None = None) -> tuple[list, set[int]]:
    """Rule 3 for one realization.

    targets: id(root node) -> (buffer it will overwrite, the tensor owning it).
    computing: id(node) -> node, the roots the realization computes.
    Returns (tensors to compute in the same realization: pending readers of a target's memory, and
    other tensors holding a root being computed, which then share its result; ids of roots whose
    target must not be overwritten: a tensor other than its owner holds that memory as its value).
    With `copies`, such a holder of a pinned target's memory is appended there instead (it is to
    get a copy of its own, and the target is written)."""
    storages: dict[tuple, list[int]] = {}
    owners: set[int] = set()
    for rid, (buf, owner) in targets.items():
        storages.setdefault(_storage(buf), []).append(rid)
        owners.add(id(owner))
    keys: dict[int, tuple] = {}

    def hit(b: Buffer) -> bool:
        k = keys.get(id(b))
        if k is None:
            k = keys[id(b)] = _storage(b)
        return k in storages

    memo: dict[int, bool] = {}
    first, renamed = [], set()
    for t in live_tensors():
        if t._base is not None or id(t) in owners:
            continue  # views read their base; the owners are what is being written
        n = t._cur
        if id(n) in computing:
            first.append(t)  # shares the result (a clone of a pending value)
            continue
        b = held(n)
        if b is not None:
            if hit(b):
                rids = storages[keys[id(b)]]
                if copies is not None and any(pinned(targets[r][0]) for r in rids):
                    copies.append(t)
                else:
                    renamed.update(rids)
            continue
        if _reads(n, hit, memo):
            first.append(t)
    return first, renamed


def _reads(n: Node, hit, memo: dict[int, bool]) -> bool:
    """Whether computing `n` reads memory that `hit(buffer)` names (iterative: graphs are deep)."""
    stack = [n]
    while stack:
        m = stack[-1]
        if id(m) in memo:
            stack.pop()
            continue
        if m.op is Op.BUFFER:
            memo[id(m)] = hit(m.arg)
            stack.pop()
            continue
        srcs = m.srcs[:1] if m.op is Op.STORED else m.srcs  # a STORED value is its buffer
        todo = [s for s in srcs if id(s) not in memo]
        if todo:
            stack.extend(todo)
            continue
        memo[id(m)] = any(memo[id(s)] for s in srcs)
        stack.pop()
    return memo[id(n)]
