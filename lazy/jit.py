"""`lazy.jit`: record a step function's kernels once, then replay them without running its Python.

In:  a function of lazy Tensors (a training step: forward, `backward()`, `opt.step()`).
Out: a callable with the same results, whose later calls launch the recorded programs directly.

Why: a step rebuilds the same graph every call. Python builds the forward nodes, autograd the
backward, the optimizer its update, and the runtime hashes the graph to find the compiled program.
For small models that host work costs more than the kernels. tinygrad's TinyJit and jax.jit
answer the same way: trace once, replay.

How
- Per argument signature (shapes, dtypes, devices of the Tensor arguments; other arguments by
  value) the first call runs `fn` as is (it compiles, and creates optimizer state). The second
  and third calls run `fn` under a `Capture`, which sees every realization the runtime performs
  (the program, and where each of its input buffers came from: an argument, an earlier
  realization in the same call, or a buffer that outlives the call: parameters, optimizer state,
  constants), every tensor a realization hands a buffer to (`.grad`, the loss), and the host
  effects of the step (`runtime.record_host_effect`: the optimizer's step count and its
  learning-rate numbers).
- When the two recordings agree (same programs, same sources, the same long-lived buffers), the
  following calls replay: host effects, then each program over the new argument buffers; the
  tensors the recording saw receive their new buffers (so `p.grad` reads the new gradient), and
  the results are new Tensors. Parameters and optimizer state are written in place by the
  programs themselves (lazy.optim), which is what lets one recording serve every step.
- When they disagree, `fn` keeps running as is and a `JitWarning` says what differed (for
  example a buffer that `fn` creates anew every call: its new contents would not be replayed).

Contract (as for TinyJit and jax.jit): Python side effects inside `fn` (printing, appending to a
list, reading `.item()`) happen only in the calls that run it; `fn` returns a Tensor, a tuple or
list of Tensors, or None. Results of a replay are fresh buffers; tensors that `fn` stored
elsewhere (`p.grad`) are rebound to the newest values.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from dataclasses import dataclass, field

from lazy import runtime
from lazy.dtypes import as_dtype
from lazy.graph import Buffer, Op, node
from lazy.tensor import Tensor, realize

__all__ = ["Jit", "JitWarning", "jit"]


class JitWarning(UserWarning):
    """A function given to lazy.jit cannot be replayed; it keeps running as plain Python."""


@dataclass
class _Realization:
    prog: object  # runtime.Program
    inputs: list  # per input buffer: ("arg", i) | ("out", realization, output) | ("keep", Buffer)
    dev: str
    n_outputs: int


@dataclass
class Capture:
    """One call's realizations, host effects and rebound tensors (see the module docstring)."""

    arg_buffers: list[Buffer]
    realizations: list[_Realization] = field(default_factory=list)
    effects: list = field(default_factory=list)
    rebind: list = field(default_factory=list)  # (weakref to Tensor, realization, output)
    results: tuple = (None, [])  # ("tensor" | tuple | list | None, a source per returned tensor)
    _outs: dict = field(default_factory=dict)  # id(Buffer) -> (realization, output)
    _alive: list = field(default_factory=list)  # output buffers, kept while ids are looked up

    def source(self, b: Buffer) -> tuple:
        for i, a in enumerate(self.arg_buffers):
            if a is b:
                return ("arg", i)
        hit = self._outs.get(id(b))
        return ("out", *hit) if hit is not None else ("keep", b)

    # -- runtime hooks
    def realized(self, prog, buffers: list[Buffer], outs: list[Buffer], dev: str) -> None:
        r = len(self.realizations)
        self.realizations.append(_Realization(prog, [self.source(b) for b in buffers], dev, len(outs)))
        for o, b in enumerate(outs):
            if not any(b is x for x in buffers):  # not written in place into a buffer that stays
                self._outs.setdefault(id(b), (r, o))
                self._alive.append(b)

    def bound(self, t: Tensor, b: Buffer) -> None:
        hit = self._outs.get(id(b))
        if hit is not None:
            self.rebind.append((weakref.ref(t), *hit))

    def host_effect(self, fn) -> None:
        self.effects.append(fn)

    # -- comparison of two recordings
    def differs_from(self, other: Capture) -> str | None:
        if len(self.realizations) != len(other.realizations):
            return f"{len(self.realizations)} realizations, then {len(other.realizations)}"
        for i, (a, b) in enumerate(zip(self.realizations, other.realizations)):
            if a.prog is not b.prog:
                return f"realization {i} ran a different program"
            for j, (x, y) in enumerate(zip(a.inputs, b.inputs)):
                if x[0] != y[0] or (x[0] == "keep" and x[1] is not y[1]) or (x[0] != "keep" and x != y):
                    what = ("a new buffer each call" if x[0] == y[0] == "keep" else f"{x[0]}, then {y[0]}")
                    return (f"realization {i} input {j} ({tuple(y[1].data.shape) if y[0] == 'keep' else y[1:]}) "
                            f"is {what}: its contents would not be replayed")
        if len(self.effects) != len(other.effects):
            return "a different number of host effects (optimizer steps)"
        if [(r, o) for _, r, o in self.rebind] != [(r, o) for _, r, o in other.rebind]:
            return "different tensors received the results"
        if _shape_of(self.results) != _shape_of(other.results):
            return "the results came from different places"
        return None


def _shape_of(results):
    kind, leaves = results
    return kind, [None if x is None else (x[0], id(x[1])) if x[0] == "keep" else x for x in leaves]


def _flatten(out, what: str):
    if out is None:
        return None
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (list, tuple)) and all(isinstance(x, Tensor) or x is None for x in out):
        return type(out)(out)
    raise TypeError(f"lazy.jit: {what} must return a Tensor, a tuple or list of Tensors, or None; "
                    f"got {type(out).__name__}")


def _tensors(tree) -> list[Tensor]:
    if tree is None:
        return []
    return [tree] if isinstance(tree, Tensor) else [t for t in tree if t is not None]


def _buffer_of(t: Tensor) -> Buffer:
    n = t._node
    while n.op is Op.STORED:
        n = n.srcs[0]
    return n.arg


class Jit:
    """See the module docstring. `Jit.stats`: per signature, 'running', 'capturing', 'replaying'
    or 'failed: <why>'."""

    def __init__(self, fn):
        self.fn = fn
        self.plans: dict = {}  # signature -> {"calls": n, "captures": [...], "plan": Capture | None, "failed": str}
        functools.update_wrapper(self, fn)
        _instances.add(self)

    @property
    def stats(self) -> dict:
        out = {}
        for sig, st in self.plans.items():
            out[sig] = ("replaying" if st["plan"] is not None else f"failed: {st['failed']}" if st["failed"]
                        else "capturing" if st["calls"] >= 1 else "running")
        return out

    def reset(self) -> None:
        self.plans.clear()

    def __call__(self, *args, **kwargs):
        tensors = [a for a in args if isinstance(a, Tensor)]
        realize(*tensors) if tensors else None
        for t in tensors:
            if t._node.op not in (Op.BUFFER, Op.STORED):  # a view: give it memory of its own
                t._set_realized(node(Op.BUFFER, (), Buffer(t.torch().clone()), t.dtype, tuple(t.shape)))
        # from the nodes directly: `.shape` and `.device` build torch objects, which after a large
        # kernel has flushed the caches cost 60 us of a 350 us replay
        sig = (tuple((a._node.shape, a.dtype, a._node.device or "cpu") if isinstance(a, Tensor) else ("value", a)
                     for a in args), tuple(sorted(kwargs.items())))
        st = self.plans.setdefault(sig, {"calls": 0, "captures": [], "plan": None, "failed": None})
        st["calls"] += 1
        if st["plan"] is not None:
            return self._replay(st["plan"], tensors)
        if st["failed"] or st["calls"] == 1:
            return self.fn(*args, **kwargs)
        cap = Capture([_buffer_of(t) for t in tensors])
        runtime._recorders.append(cap)
        try:
            out = _flatten(self.fn(*args, **kwargs), getattr(self.fn, "__name__", "the function"))
            results = _tensors(out)
            if results:
                realize(*results)
            # the returned tensors are the caller's: a replay returns new ones instead of rebinding these
            mine = {id(t) for t in results}
            cap.rebind = [e for e in cap.rebind if id(e[0]()) not in mine]
            items = [out] if isinstance(out, Tensor) else [] if out is None else list(out)
            kind = "tensor" if isinstance(out, Tensor) else None if out is None else type(out)
            cap.results = (kind, [None if t is None else cap.source(_buffer_of(t)) for t in items])
        finally:
            runtime._recorders.remove(cap)
        cap._outs, cap._alive = {}, []
        st["captures"].append(cap)
        if len(st["captures"]) == 2:
            first, second = st["captures"]
            why = first.differs_from(second)
            if why is None and not second.realizations:
                why = "it realizes nothing"
            if why is None:
                st["plan"] = second
            else:
                st["failed"] = why
                warnings.warn(f"lazy.jit({getattr(self.fn, '__name__', 'fn')}): cannot replay, running it as "
                              f"Python: {why}", JitWarning, stacklevel=2)
            st["captures"] = []
        return out

    def _replay(self, plan: Capture, tensors: list[Tensor]):
        for effect in plan.effects:
            effect()
        args = [_buffer_of(t) for t in tensors]
        outs: list[list[Buffer]] = []

        def resolve(src):
            if src[0] == "arg":
                return args[src[1]]
            if src[0] == "out":
                return outs[src[1]][src[2]]
            return src[1]

        for r in plan.realizations:
            outs.append(runtime.run_program(r.prog, [resolve(s) for s in r.inputs], r.dev))
        for ref, ri, oi in plan.rebind:
            t = ref()
            if t is not None:
                b = outs[ri][oi]
                t._set_realized(node(Op.BUFFER, (), b, t.dtype, tuple(b.data.shape)))

        def fresh(src):
            b = resolve(src)
            return Tensor._new(node(Op.BUFFER, (), b, as_dtype(b.data.dtype), tuple(b.data.shape)))

        kind, leaves = plan.results
        items = [None if x is None else fresh(x) for x in leaves]
        return None if kind is None else items[0] if kind == "tensor" else kind(items)


_instances: weakref.WeakSet = weakref.WeakSet()


def reset_all() -> None:
    """Forget every recording (after dropping compiled programs: replays would bypass recompiling)."""
    for j in list(_instances):
        j.reset()


def jit(fn=None):
    """Decorator: `step = lazy.jit(step)` or `@lazy.jit`. See the module docstring."""
    if fn is None:
        return jit
    return Jit(fn)
