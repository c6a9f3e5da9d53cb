"""`lazy.jit`: record a step function's kernels once, then replay them without running its Python.

In:  a function of lazy Tensors (a training step: forward, `backward()`, `opt.step()`).
Out: a callable with the same results, whose later calls launch the recorded programs directly.

Why: a step rebuilds the same graph every call. Python builds the forward nodes, autograd the
backward, the optimizer its update, and the runtime hashes the graph to find the compiled program.
For small models that host work costs more than the kernels. tinygrad's TinyJit and jax.jit
answer the same way: trace once, replay.

How
- Arguments are flattened like jax pytrees: Tensors anywhere in lists, tuples and dicts
  (positional or keyword) are the inputs; everything else is part of the signature by value.
  Per signature (the structure, each Tensor's shape, dtype and device, the other values) the first
  call runs `fn` as is (it compiles, and creates optimizer state). The second and third calls run
  `fn` under a `Capture`, which sees every realization the runtime performs (the program, and
  where each of its input buffers came from: an argument, an earlier realization in the same
  call, or a buffer that outlives the call: parameters, optimizer state, constants), every tensor
  a realization hands a buffer to (`.grad`, the loss, an argument changed in place), the host
  effects of the step (`runtime.record_host_effect`: the optimizer's step count and its
  learning-rate numbers, `Module.train()`), the collectives it runs between realizations
  (`runtime.record_collective`: lazy.distributed, gradient buckets reduced by
  DistributedDataParallel while its program runs), each module it calls (its mode and parameters)
  and every value read on the host.
- When the two recordings agree (same programs, same sources, the same long-lived buffers), the
  following calls replay: host effects, then each program (and each collective, in its place)
  over the new argument buffers; the
  tensors the recording saw receive their new buffers (so `p.grad` reads the new gradient, and an
  argument changed in place is changed), and the results are new Tensors. Parameters and
  optimizer state are written in place by the programs themselves (lazy.optim), which is what
  lets one recording serve every step.
- Guards, checked before each replay: a module the step called has the mode and the Parameter
  objects it had (unless the step set the mode itself), and no tensor holding a long-lived input
  has moved to another value (`load_state_dict`, `fill_` under no_grad, `w += 1`: the tensor
  tells `runtime.buffer_left`). A failed guard drops the plan and the next two calls record
  again, so a replay never reads a stale value.
- Python numbers among the arguments (floats and ints, not bools) are arguments of the replay too:
  the recordings run `fn` with stand-ins that trace them (lazy/symnum.py), so a number the step puts
  into the graph (`x * lr`, `lr * min(1.0, it / warmup)`) is computed from the new arguments at
  each replay, and each comparison Python made on them (`it < warmup`) is a guard: a replay whose
  numbers would answer one differently records again. A number used as itself (an index, `range`,
  `math.cos`) must keep its value for the replay.
- Random draws (`lazy.randn`, `rand`, the fills dropout and `normal_` make, on lazy's generator or
  a given one) are sources of the replay too: a replay draws each anew, in the call's order, with the
  same sampler on the same generator, so the generator advances as running `fn` would advance it
  and a seed gives the numbers eager calls would get. A fill of a tensor made outside `fn` swaps
  that tensor's buffer without a kernel and is not replayed (a `JitWarning` says so).
- When the two recordings disagree, or `fn` reads a value on the host (`.item()`, `bool(t)`:
  Python may branch on it) or returns something other than Tensors and None in lists, tuples and
  dicts, `fn` keeps running as is and a `JitWarning` says why.

Contract (as for TinyJit and jax.jit): Python side effects inside `fn` (printing, appending to a
list) happen only in the calls that run it. Results of a replay are fresh buffers; tensors that
`fn` stored elsewhere (`p.grad`) are rebound to the newest values. Rebinding a global name that
`fn` reads (`w = lazy.zeros(3)`, as opposed to changing `w` in place) is not seen: call `reset()`.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from dataclasses import dataclass, field

from lazy import graph, inplace, runtime, symnum
from lazy.dtypes import as_dtype
from lazy.graph import Buffer, Node, Op, node
from lazy.tensor import Tensor, _held, holds_alone, overwritten, realize

__all__ = ["Jit", "JitWarning", "jit"]


class JitWarning(UserWarning):
    """A function given to lazy.jit cannot be replayed; it keeps running as plain Python."""


_UNSAFE = object()  # a replay's answer when it must not run (see Jit._replay)


class _NotReplayable(Exception):
    """An argument or result lazy.jit cannot record (the message says which)."""


@dataclass
class _Realization:
    prog: object  # runtime.Program; None: a collective (lazy/distributed.py) run between programs
    inputs: list  # per input buffer: ("arg", i) | ("out", realization, output) | ("keep", Buffer)
    dev: str
    n_outputs: int
    scalars: list = field(default_factory=list)  # its scalar arguments: expressions of the call's numbers
    sizes: tuple = ()  # the values of its program's size symbols
    on_ready: object = None  # the program's pack hook (gradient buckets: runtime.realize_nodes)
    collective: object = None  # (key, fn): a collective, replayed as fn(its input buffers)


@dataclass(eq=False)  # compared by identity (the watch lists hold weakrefs to plans)
class Capture:
    """One call's realizations, host effects and rebound tensors (see the module docstring)."""

    arg_buffers: list[Buffer]
    arg_tensors: list[Tensor] = field(default_factory=list)
    realizations: list[_Realization] = field(default_factory=list)
    effects: list = field(default_factory=list)
    rebind: list = field(default_factory=list)  # (("arg", i) | weakref to Tensor, realization, output)
    results: tuple = (None, [])  # (tree of the returned structure, a source per returned tensor)
    guards: list = field(default_factory=list)  # (weakref to Module, training, its Parameters)
    reads: list[str] = field(default_factory=list)  # values read on the host
    suspects: list = field(default_factory=list)  # (weakref to Tensor, Buffer): a holder of a kept buffer moved
    nodes: list = field(default_factory=list)  # weakrefs to the pending nodes it read (op inputs, realized roots)
    _outs: dict = field(default_factory=dict)  # id(Buffer) -> (realization, output)
    _alive: list = field(default_factory=list)  # output buffers, kept while ids are looked up
    _seen: set = field(default_factory=set)  # ids of the modules guarded or whose mode fn set
    epoch: int = -1  # runtime.module_epoch when the guards last held
    handed: list = field(default_factory=list)  # output buffers rebound to tensors (see _capture)
    checks: list = field(default_factory=list)  # (expression, answer): what Python asked of the numbers
    traced: dict = field(default_factory=dict)  # id(CONST node) -> (weakref, expression | _AMBIGUOUS)
    blocked: list[str] = field(default_factory=list)  # what it did that a replay cannot redo
    created: set = field(default_factory=set)  # ids of the Tensors made while it records (tensor.Tensor._new)
    draws: list = field(default_factory=list)  # per random draw: (its key, the function that draws it anew)
    _drawn: dict = field(default_factory=dict)  # id(Buffer of a draw) -> its index in `draws`

    def source(self, b: Buffer) -> tuple:
        for i, a in enumerate(self.arg_buffers):
            if a is b:
                return ("arg", i)
        d = self._drawn.get(id(b))
        if d is not None:
            return ("draw", d)
        hit = self._outs.get(id(b))
        return ("out", *hit) if hit is not None else ("keep", b)

    def kept(self) -> list[Buffer]:
        srcs = [x for r in self.realizations for x in r.inputs] + [x for x in self.results[1] if x is not None]
        return list({id(x[1]): x[1] for x in srcs if x[0] == "keep"}.values())

    # -- runtime hooks
    def realized(self, prog, buffers: list[Buffer], outs: list[Buffer], dev: str, nodes, scalars=(),
                 sizes=(), on_ready=None) -> None:
        r = len(self.realizations)
        self.read(nodes)  # a pending tensor realized as it is (no op read it); what is inside its graph
        # stays as it was when a tensor is written later (nodes are immutable), so roots suffice
        self.realizations.append(_Realization(prog, [self.source(b) for b in buffers], dev, len(outs),
                                              [self.scalar_expr(c) for c in scalars], tuple(sizes), on_ready))
        for o, b in enumerate(outs):
            if not any(b is x for x in buffers):  # not written in place into a buffer that stays
                self._outs.setdefault(id(b), (r, o))
                self._alive.append(b)

    def drawn(self, b: Buffer, redraw, key: tuple) -> None:
        self._drawn[id(b)] = len(self.draws)
        self.draws.append((key, redraw))
        self._alive.append(b)  # (its id stays its own while the call runs)

    def bound(self, t: Tensor, b: Buffer) -> None:
        hit = self._outs.get(id(b))
        if hit is not None:
            i = next((i for i, a in enumerate(self.arg_tensors) if a is t), None)
            self.rebind.append((("arg", i) if i is not None else weakref.ref(t), *hit))

    def read(self, srcs) -> None:
        self.nodes += [weakref.ref(n) for n in srcs if n.op not in (Op.BUFFER, Op.STORED)]

    def scalar_expr(self, c) -> tuple:
        """A scalar argument as an expression of the call's numbers (a constant when untraced; a
        literal of the graph that its program takes as an argument is a constant too)."""
        if not isinstance(c, Node):
            return ("num", c)
        hit = self.traced.get(id(c))
        if hit is not None and hit[0]() is c and isinstance(hit[1], tuple):
            return hit[1]
        return ("num", c.arg)

    def const_seen(self, n, expr, found: bool) -> None:
        """graph.const made (or found) CONST node `n` for a number traced as `expr` (None: untraced).
        A node that also stands for another number (an equal constant outside the traced ones) would
        get one value for both at a replay: it is marked ambiguous."""
        hit = self.traced.get(id(n))
        prev = hit[1] if hit is not None and hit[0]() is n else ("untraced" if found else None)
        if prev is None or prev == expr or (expr is None and prev == "untraced"):
            self.traced[id(n)] = (weakref.ref(n), expr if expr is not None else prev or "untraced")
        else:
            self.traced[id(n)] = (weakref.ref(n), _AMBIGUOUS)

    def guard(self, expr, answer) -> None:
        self.checks.append((expr, answer))

    def host_effect(self, fn) -> None:
        self.effects.append(fn)

    def collective(self, key: tuple, fn, buffers: list[Buffer]) -> None:
        """A collective between two realizations: a replay runs `fn(buffers)` at its place, over the
        replay's buffers (it writes some of them in place)."""
        self.realizations.append(_Realization(None, [self.source(b) for b in buffers], "", 0,
                                              collective=(key, fn)))

    def unreplayable(self, why: str) -> None:
        self.blocked.append(why)

    def host_read(self, what: str) -> None:
        self.reads.append(what)

    def module_called(self, m) -> None:
        if id(m) not in self._seen:
            self._seen.add(id(m))
            self.guards.append((weakref.ref(m), m.training, tuple(m._parameters.values())))

    def mode_set(self, m, mode: bool) -> None:
        self._seen.update(id(x) for x in m.modules())
        self.effects.append(functools.partial(m.train, mode))

    def suspect(self, owner: Tensor | None, buf: Buffer | None) -> None:
        """A holder of kept buffer `buf` moved (None: a tensor whose pending value it computes was written)."""
        self.suspects.append((None if owner is None else weakref.ref(owner), buf))

    # -- comparison of two recordings, and the guards of a replay
    def differs_from(self, other: Capture) -> str | None:
        if len(self.realizations) != len(other.realizations):
            return f"{len(self.realizations)} realizations, then {len(other.realizations)}"
        for i, (a, b) in enumerate(zip(self.realizations, other.realizations)):
            if a.prog is not b.prog:
                return f"realization {i} ran a different program"
            if (a.collective and a.collective[0]) != (b.collective and b.collective[0]):
                return f"step {i} ran another collective"
            if a.scalars != b.scalars:
                return (f"realization {i} used other Python numbers ({_numbers(a.scalars, b.scalars)}): a number "
                        "computed inside the function changes between calls, other than from its number "
                        "arguments")
            if any(e is _AMBIGUOUS for e in a.scalars):
                return (f"realization {i} used a number that is both an argument's and a constant of its own: "
                        "a replay could not tell them apart")
            for j, (x, y) in enumerate(zip(a.inputs, b.inputs)):
                if x[0] != y[0] or (x[0] == "keep" and x[1] is not y[1]) or (x[0] != "keep" and x != y):
                    where = f"realization {i} input {j} ({tuple(y[1].data.shape) if y[0] == 'keep' else y[1:]})"
                    if y[0] == "keep" and any(y[1] is b for b in self.handed):
                        return (f"{where} is a result of the call before, read again (a gradient accumulated "
                                "without zero_grad(), or a tensor the function replaces instead of updating in "
                                "place): a replay would not carry it from call to call")
                    what = ("a new buffer each call" if x[0] == y[0] == "keep" else f"{x[0]}, then {y[0]}")
                    return f"{where} is {what}: its contents would not be replayed"
        if [k for k, _ in self.draws] != [k for k, _ in other.draws]:
            return "it drew different random numbers (other shapes, or in another order)"
        if self.checks != other.checks:
            return "Python compared its number arguments differently (it branched on them)"
        if len(self.effects) != len(other.effects):
            return "a different number of host effects (optimizer steps, train()/eval())"
        if [_rebound(e) for e in self.rebind] != [_rebound(e) for e in other.rebind]:
            return "different tensors received the results"
        if _shape_of(self.results) != _shape_of(other.results):
            return "the results came from different places"
        return None

    def stale(self) -> str | None:
        """Why replaying would not do what running fn would now (None: it would)."""
        if self.suspects:
            why = self._moved()
            if why:
                return why
        if self.epoch == runtime.module_epoch:
            return None
        for ref, mode, params in self.guards:
            m = ref()
            if m is None:
                return "a module it called is gone"
            if m.training is not mode:
                return f"{type(m).__name__}.training is {m.training}, recorded with {mode}"
            now = tuple(m._parameters.values())
            if len(now) != len(params) or any(a is not b for a, b in zip(now, params)):
                return f"a Parameter of a {type(m).__name__} was replaced"
        self.epoch = runtime.module_epoch
        return None

    def _moved(self) -> str | None:
        for ref, buf in self.suspects:
            if ref is None:
                return "a pending tensor it reads was written in place"
            t = ref()
            if t is not None and _held(t._node) is not buf:
                return f"a {tuple(buf.data.shape)} tensor it reads was changed outside it"
        self.suspects.clear()
        return None


_AMBIGUOUS = ("ambiguous",)


def _numbers(a: list, b: list) -> str:
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    return ", ".join(f"{_shown(x)}, then {_shown(y)}" for x, y in diff[:3])


def _shown(e) -> str:
    return repr(e[1]) if e[0] == "num" else "a number from the arguments"


def _rebound(entry) -> tuple:
    who, r, o = entry
    return (who if isinstance(who, tuple) else "tensor", r, o)


def _shape_of(results):
    tree, leaves = results
    return tree, [None if x is None else (x[0], id(x[1])) if x[0] == "keep" else x for x in leaves]


# -- arguments and results as trees (lists, tuples, dicts) with Tensor leaves
def _key(obj, leaves: list, nums: list | None = None):
    """A hashable signature of `obj`; its Tensors are appended to `leaves`, its Python numbers to
    `nums` (their values are not part of it)."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        n = obj._node  # from the node: `.shape`/`.device` build torch objects (60 us after a large kernel)
        return ("T", n.shape, n.dtype, n.device or "cpu")
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(_key(x, leaves, nums) for x in obj))
    if isinstance(obj, dict):
        return (dict, tuple((k, _key(v, leaves, nums)) for k, v in obj.items()))
    if type(obj) in (float, int) and nums is not None:  # an argument of the replay (lazy/symnum.py)
        nums.append(obj)
        return ("num", type(obj))
    try:
        hash(obj)
    except TypeError:
        raise _NotReplayable(f"an argument of type {type(obj).__name__} has no value to key recordings "
                             "by (it is unhashable)") from None
    return (type(obj), obj)


def _traced_numbers(obj, it):
    """`obj` with each Python number replaced by the next traced stand-in of `it` (`_key`'s order)."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_traced_numbers(x, it) for x in obj]
        return type(obj)._make(items) if hasattr(type(obj), "_make") else type(obj)(items)
    if isinstance(obj, dict):
        return {k: _traced_numbers(v, it) for k, v in obj.items()}
    if type(obj) in (float, int):
        return next(it)
    return obj


def _tree(out, leaves: list):
    """The structure of a result (None, Tensors, lists, tuples, dicts); its Tensors go to `leaves`."""
    if out is None:
        return None
    if isinstance(out, Tensor):
        leaves.append(out)
        return "T"
    if isinstance(out, (list, tuple)):
        return (type(out), tuple(_tree(x, leaves) for x in out))
    if isinstance(out, dict):
        return (dict, tuple(out), tuple(_tree(v, leaves) for v in out.values()))
    raise _NotReplayable(f"it returns a {type(out).__name__} (only Tensors and None in lists, tuples and "
                         "dicts are replayed)")


def _build(tree, leaves):
    """Inverse of `_tree`: the structure with the next Tensor of the iterator `leaves` at each leaf."""
    if tree is None:
        return None
    if tree == "T":
        return next(leaves)
    if tree[0] is dict:
        return {k: _build(t, leaves) for k, t in zip(tree[1], tree[2])}
    typ, items = tree[0], [_build(t, leaves) for t in tree[1]]
    return typ._make(items) if hasattr(typ, "_make") else typ(items)


def _buffer_of(t: Tensor) -> Buffer:
    return _held(t._node)


@dataclass
class _Signature:
    calls: int = 0
    captures: list = field(default_factory=list)
    plan: Capture | None = None
    failed: str | None = None
    failed_on: Capture | None = None  # the recording that disagreed with the one before
    recorded: int = 0  # plans made (more than one: guards failed in between)


class Jit:
    """See the module docstring. `Jit.stats`: per signature, 'running', 'capturing', 'replaying'
    or 'failed: <why>'."""

    def __init__(self, fn):
        self.fn = fn
        self.plans: dict = {}  # signature -> _Signature
        self.warned: set[str] = set()
        functools.update_wrapper(self, fn)
        _instances.add(self)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "fn")

    @property
    def stats(self) -> dict:
        return {sig: ("replaying" if st.plan is not None else f"failed: {st.failed}" if st.failed
                      else "capturing" if st.calls >= 1 else "running") for sig, st in self.plans.items()}

    def reset(self) -> None:
        for st in self.plans.values():
            for c in (st.plan, st.failed_on, *st.captures):
                _unwatch(c)
        self.plans.clear()

    def _warn(self, why: str, depth: int = 4) -> None:
        """Once per reason; `depth`: frames from here to the caller of the jitted function."""
        if why not in self.warned:
            self.warned.add(why)
            warnings.warn(f"lazy.jit({self.name}): cannot replay, running it as Python: {why}", JitWarning,
                          stacklevel=depth)

    def __call__(self, *args, **kwargs):
        tensors: list[Tensor] = []
        nums: list = []
        try:
            sig = (_key(args, tensors, nums), _key(kwargs, tensors, nums))
        except _NotReplayable as e:
            self._warn(str(e), depth=3)
            return self.fn(*args, **kwargs)
        realize(*tensors) if tensors else None
        for t in tensors:
            if t._node.op not in (Op.BUFFER, Op.STORED):  # a view: give it memory of its own
                t._set_realized(node(Op.BUFFER, (), Buffer(t.torch().clone()), t.dtype, tuple(t.shape)))
        # arguments that are one tensor (f(a, a)) or share a buffer replay as one: part of the signature
        bufs = [_held(t._node) for t in tensors]
        same, shared = {}, {}
        sig += (tuple((same.setdefault(id(t), i), shared.setdefault(id(b), i)) for i, (t, b) in
                      enumerate(zip(tensors, bufs))),)
        st = self.plans.get(sig)
        if st is None:
            st = self.plans[sig] = _Signature()
        st.calls += 1
        if st.plan is not None:
            why = st.plan.stale() or _changed_answer(st.plan, nums)
            if why is None:
                out = self._replay(st.plan, tensors, bufs, nums)
                if out is not _UNSAFE:
                    return out
                why = "a tensor outside it holds memory the step overwrites (a clone of a parameter)"
            runtime.debug_level() >= 1 and runtime._log(f"lazy.jit({self.name}): recording again: {why}")
            _unwatch(st.plan)
            st.plan = None  # record again from this call on (it compiled long ago)
        elif st.failed and st.failed_on is not None and st.failed_on.stale():
            _unwatch(st.failed_on)  # a mode or value it depended on changed: it may replay now
            st.failed = st.failed_on = None
        elif st.failed or st.calls == 1:
            return self.fn(*args, **kwargs)
        return self._capture(st, args, kwargs, tensors, nums)

    def _capture(self, st: _Signature, args, kwargs, tensors: list[Tensor], nums: list):
        cap = Capture([_buffer_of(t) for t in tensors], list(tensors))
        bases = [(t._base, t._base._version) for t in tensors if t._base is not None]
        if nums:  # the numbers as traced stand-ins (lazy/symnum.py)
            it = iter(symnum.wrap_args(nums))
            args, kwargs = _traced_numbers(args, it), _traced_numbers(kwargs, it)
        runtime._recorders.append(cap)
        prev_recorder, prev_hook = symnum._recorder, graph.const_hook
        symnum._recorder, graph.const_hook = cap, cap.const_seen
        try:
            out = self.fn(*args, **kwargs)
            results: list[Tensor] = []
            try:
                tree = _tree(out, results)
            except _NotReplayable as e:
                tree, why = None, str(e)
            else:
                why = None
            # results, and arguments changed in place, are realized inside the recording
            realize(*results, *tensors) if results or tensors else None
            mine = {id(t) for t in results}  # the caller's: a replay returns new ones instead of rebinding
            cap.rebind = [e for e in cap.rebind if not callable(e[0]) or id(e[0]()) not in mine]
            cap.results = (tree, [cap.source(_buffer_of(t)) for t in results])
        finally:
            runtime._recorders.remove(cap)
            symnum._recorder, graph.const_hook = prev_recorder, prev_hook
        # the buffers handed to tensors that outlive the call (`p.grad`): a next call reading one
        # again carries state from call to call (named in the warning)
        cap.handed = [b for b in cap._alive if any(e[1:] == cap._outs.get(id(b)) for e in cap.rebind)]
        cap._outs, cap._alive, cap._seen, cap.arg_tensors, cap.created, cap._drawn = {}, [], set(), [], set(), {}
        if cap.reads:  # first: Python may have branched on them, whatever it returned
            why = f"it reads tensor values on the host ({cap.reads[0]}): a replay could not follow them"
        elif cap.blocked:
            why = cap.blocked[0]
        if why is None and any(b._version != v for b, v in bases):
            why = "it writes into an argument that is a view"
        if why is not None:
            for c in st.captures:
                _unwatch(c)
            st.failed, st.captures, st.failed_on = why, [], None
            self._warn(why)
            return out
        cap.epoch = runtime.module_epoch
        if st.captures and st.captures[0].stale():  # changed outside since: this call is the first
            _unwatch(st.captures.pop())
        st.captures.append(cap)
        _watch(cap)
        if len(st.captures) == 2:
            first, second = st.captures
            _unwatch(first)
            why = first.differs_from(second)
            first.handed = second.handed = []  # (only that comparison reads them: free the buffers)
            if why is None:
                st.plan, st.recorded = second, st.recorded + 1
            else:  # watched still: if its guards fail later (eval() after train()), record again
                st.failed, st.failed_on = why, second
                self._warn(why)
            st.captures = []
        return out

    def _replay(self, plan: Capture, tensors: list[Tensor], args: list[Buffer], nums: list = ()):
        """The results of one replay, or _UNSAFE when a value outside the step still reads memory the
        replay would overwrite and cannot be computed first (a clone of a parameter)."""
        outs: list[list[Buffer]] = []
        drawn: list[Buffer] = []

        def resolve(src):
            if src[0] == "arg":
                return args[src[1]]
            if src[0] == "out":
                return outs[src[1]][src[2]]
            if src[0] == "draw":
                return drawn[src[1]]
            return src[1]

        # memory the programs overwrite in place that lives beyond the call (parameters, optimizer
        # state, arguments): values built outside the step that still read it are computed first
        over = [resolve(r.inputs[s]) for r in plan.realizations if r.prog is not None for s in r.prog.written
                if r.inputs[s][0] not in ("out", "draw")]
        if over and not all(holds_alone(b) for b in over):
            first, renamed = inplace.readers({i: (b, b.owner() if b.owner else None) for i, b in enumerate(over)}, {})
            if renamed:
                return _UNSAFE
            if first:
                realize(*first)
        for effect in plan.effects:
            effect()
        drawn += [Buffer(redraw(), owned=True) for _, redraw in plan.draws]  # in the call's order
        for r in plan.realizations:
            inputs = [resolve(s) for s in r.inputs]
            if r.collective is not None:  # (it moves the buffers it writes to their next version)
                r.collective[1](inputs)
                outs.append([])
                continue
            scalars = [e[1] if e[0] == "num" else symnum.evaluate(e, nums) for e in r.scalars]
            outs.append(runtime.run_program(r.prog, inputs, r.dev, scalars=scalars, sizes=r.sizes,
                                            on_ready=r.on_ready))
            for s in r.prog.written:  # the owners hold the new versions
                overwritten(inputs[s])
        for who, ri, oi in plan.rebind:
            t = tensors[who[1]] if isinstance(who, tuple) else who()
            if t is not None:
                b = outs[ri][oi]
                t._set_realized(node(Op.BUFFER, (), b, t.dtype, tuple(b.data.shape)))

        def fresh(src):
            b = resolve(src)
            return Tensor._new(node(Op.BUFFER, (), b, as_dtype(b.data.dtype), tuple(b.data.shape)))

        tree, leaves = plan.results
        return _build(tree, iter([fresh(x) for x in leaves]))


def _changed_answer(plan: Capture, nums: list) -> str | None:
    """Why this call's numbers cannot replay `plan`: a comparison Python made on them while it was
    recorded would answer otherwise now (None: every one answers the same)."""
    for expr, answer in plan.checks:
        try:
            now = symnum.evaluate(expr, nums)
        except (ArithmeticError, ValueError, TypeError):
            return "a comparison of its number arguments cannot be evaluated for these numbers"
        if now != answer:
            return "its number arguments answer a comparison it made differently (it may branch)"
    return None


def _watch(plan: Capture) -> None:
    """Long-lived inputs of a plan: a tensor leaving one of them marks the plan suspect. So does a
    write into a tensor whose pending value its programs compute (`c = lazy.ones(3)` read by fn)."""
    ref = weakref.ref(plan)
    alive = {id(n): r for r in plan.nodes if (n := r()) is not None}  # most died with the call that made them
    plan.nodes = list(alive.values())
    for b in plan.kept():
        runtime._watched.setdefault(id(b), []).append(ref)
    for nref in plan.nodes:
        n = nref()
        if n is not None:
            runtime._watched_nodes.setdefault(id(n), []).append((nref, ref))


def _unwatch(plan: Capture | None) -> None:
    """Forget `plan`'s watches, and any whose plan or node is gone (a full sweep: plans change rarely)."""
    if plan is None:
        return
    for key, refs in list(runtime._watched.items()):
        refs = [r for r in refs if r() is not None and r() is not plan]
        if refs:
            runtime._watched[key] = refs
        else:
            del runtime._watched[key]
    for key, refs in list(runtime._watched_nodes.items()):
        refs = [(n, p) for n, p in refs if n() is not None and p() is not None and p() is not plan]
        if refs:
            runtime._watched_nodes[key] = refs
        else:
            del runtime._watched_nodes[key]


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
