"""Gradients as Tensor-level operations: backward(), autograd.grad, grad(f), value_and_grad, jvp.

In:  lazy tensors; graph-level reverse mode from lazy/autograd.py.
Out: lazy tensors holding gradient graphs (nothing runs until they are realized, so a training
     step's forward, backward and optimizer update are scheduled together).

Invariants
- Leaves are the tensors marked `requires_grad` (their *current* node is the leaf).
- Without `create_graph`, gradients are DETACHed: they cannot be differentiated again, as in torch.
- `backward()` remembers its root until the next realize that includes pending roots
  (`pending_roots`), so an optimizer step can realize the loss in the same schedule and a later
  `loss.item()` costs nothing.
- `backward_hooks` run after `backward()` has set the gradients (DistributedDataParallel reduces
  them across processes there, as torch's reducer does from its autograd hooks).
"""

from __future__ import annotations

from lazy import autograd
from lazy.graph import Node, Op, const, node
from lazy.tensor import Tensor, _fmt, _IdentityWeakSet, _leaf_tensors, _operand, leaf_node_ids, tensor

pending_roots = _IdentityWeakSet()
# callables(tensors that received a gradient) run at the end of each backward() (data parallelism:
# lazy.nn.parallel reduces the gradients there); weak references, dropped once their object is gone
backward_hooks: list = []


def _cotangent(out: Tensor, gradient, op: str) -> Node:
    if gradient is None:
        if out.numel() != 1:
            raise RuntimeError(f"{op}: grad can be implicitly created only for scalar outputs "
                               f"(got shape {_fmt(out.shape)}); pass `gradient=`")
        return const(1, out.dtype, out._node.shape)
    g = _operand(op, gradient)
    if not isinstance(g, Tensor):
        return const(g, out.dtype, out._node.shape)
    if tuple(g.shape) != tuple(out.shape):
        raise RuntimeError(f"{op}: gradient has shape {_fmt(g.shape)}, expected {_fmt(out.shape)} "
                           "(the shape of the output)")
    return g._cast(out.dtype)._node


def accumulate_backward(root: Tensor, gradient, retain_graph, create_graph: bool, inputs) -> None:
    if root._graph_freed:
        raise RuntimeError("backward: trying to backward through the graph a second time; specify "
                           "retain_graph=True the first time if you need to")
    targets = list(_leaf_tensors) if inputs is None else [t for t in _as_list(inputs)]
    if not root.requires_grad:
        raise RuntimeError("backward: element 0 of tensors does not require grad and does not have a "
                           "grad_fn (mark a leaf with requires_grad=True)")
    by_node: dict[int, list[Tensor]] = {}
    for t in targets:
        for nid in leaf_node_ids(t):
            by_node.setdefault(nid, []).append(t)
    grads = autograd.backward(root._node, _cotangent(root, gradient, "backward"), set(by_node))
    with autograd.set_grad_enabled(create_graph):  # accumulated grads stay differentiable with create_graph
        for nid, g in grads.items():
            if not create_graph:
                g = node(Op.DETACH, (g,))
            for t in by_node[nid]:
                new = Tensor._new(node(Op.CAST, (g,), t.dtype) if g.dtype is not t.dtype else g)
                if t._grad is None:
                    t._grad = new
                else:  # in place, like torch: a tensor holding the old .grad sees the sum
                    t._grad._write(t._grad + new, "backward")
    if not (retain_graph if retain_graph is not None else create_graph):
        root._graph_freed = True
    pending_roots.add(root)
    if backward_hooks:
        touched = [t for nid in grads for t in by_node[nid]]
        for ref in list(backward_hooks):
            hook = ref()
            if hook is None:
                backward_hooks.remove(ref)
            else:
                hook(touched)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def grad_of(outputs, inputs, grad_outputs=None, create_graph: bool = False, allow_unused: bool = False):
    outs, ins = _as_list(outputs), _as_list(inputs)
    gos = _as_list(grad_outputs) if grad_outputs is not None else [None] * len(outs)
    if len(gos) != len(outs):
        raise RuntimeError(f"grad: got {len(gos)} grad_outputs for {len(outs)} outputs")
    leaves = {nid for t in ins for nid in leaf_node_ids(t)}
    total: dict[int, Node] = {}
    for o, go in zip(outs, gos):
        for nid, g in autograd.backward(o._node, _cotangent(o, go, "grad"), leaves).items():
            total[nid] = g if nid not in total else autograd.add(total[nid], g)
    result = []
    for i, t in enumerate(ins):
        parts = [total[nid] for nid in leaf_node_ids(t) if nid in total]
        g = None if not parts else parts[0] if len(parts) == 1 else autograd.add(*parts)
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} (shape {_fmt(t.shape)}) was not used to compute the "
                                   "outputs; pass allow_unused=True to get None")
            result.append(None)
            continue
        result.append(Tensor._new(g if create_graph else node(Op.DETACH, (g,))))
    return tuple(result)


def _fresh(x, op: str) -> Tensor:
    """x as a node of its own that gradients pass through (x + 0): the variable of one transform.
    Not DETACH, so an outer transform still sees through it (grad of grad)."""
    t = _operand(op, x)
    t = t if isinstance(t, Tensor) else tensor(t)
    if not t.dtype.is_float:
        raise RuntimeError(f"{op}: only floating point inputs can be differentiated, got {t.dtype}")
    n = t._node
    return Tensor._new(node(Op.ADD, (n, const(0, n.dtype, n.shape))))


def value_and_grad(f, argnums: int | tuple[int, ...] = 0, has_aux: bool = False):
    """JAX-style: `value_and_grad(f)(x, y)` -> (f(x, y), d f / d x). f must return a scalar."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def wrapped(*args):
        xs = list(args)
        for i in nums:
            xs[i] = _fresh(xs[i], "grad")
        out = f(*xs)
        value, aux = (out[0], out[1]) if has_aux else (out, None)
        gs = grad_of(value, [xs[i] for i in nums], create_graph=True, allow_unused=True)
        gs = tuple(g if g is not None else xs[i] * 0 for g, i in zip(gs, nums))
        g = gs[0] if isinstance(argnums, int) else gs
        return ((value, aux), g) if has_aux else (value, g)
    return wrapped


def grad(f, argnums: int | tuple[int, ...] = 0, has_aux: bool = False):
    """JAX-style: `lazy.grad(f)(x)` -> d f / d x, itself differentiable (so grad(grad(f)) works)."""
    vg = value_and_grad(f, argnums, has_aux)

    def wrapped(*args):
        out, g = vg(*args)
        return (g, out[1]) if has_aux else g
    return wrapped


def jvp(f, primals, tangents):
    """Forward mode: (f(*primals), J @ tangents), built as lazy graph.

    The VJP of f is linear in its cotangent u; differentiating u -> VJP(u) . t with respect to u
    gives J @ t, so forward mode reuses the reverse rules (no second rule table)."""
    primals, tangents = _as_list(primals), _as_list(tangents)
    if len(primals) != len(tangents):
        raise RuntimeError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    xs = [_fresh(p, "jvp") for p in primals]
    ts = [_operand("jvp", t) for t in tangents]
    for x, t in zip(xs, ts):
        if not isinstance(t, Tensor) or tuple(t.shape) != tuple(x.shape):
            raise RuntimeError(f"jvp: each tangent must be a tensor shaped like its primal {_fmt(x.shape)}")
    out = f(*xs)
    u = tensor(_zeros_buffer(out))  # a leaf of its own: the cotangent the VJP is linear in
    vjps = autograd.backward(out._node, u._node, {id(x._node) for x in xs})
    tangent_out = None
    for x, t in zip(xs, ts):
        g = vjps.get(id(x._node))
        if g is None:
            continue
        inner = autograd.mul(g, t._cast(x.dtype)._node)
        total = node(Op.SUM, (inner,), tuple(range(len(inner.shape)))) if inner.shape else inner
        total = node(Op.RESHAPE, (total,), ())
        d = autograd.backward(total, const(1, total.dtype, ()), {id(u._node)}).get(id(u._node))
        if d is not None:
            tangent_out = d if tangent_out is None else autograd.add(tangent_out, d)
    if tangent_out is None:
        tangent_out = const(0, out.dtype, out._node.shape)
    return out, Tensor._new(tangent_out)


def _zeros_buffer(like: Tensor):
    import torch

    from lazy.dtypes import to_torch

    return torch.zeros(tuple(like.shape), dtype=to_torch(like.dtype))
