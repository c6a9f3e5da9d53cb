"""Symbolic reverse-mode differentiation of the graph IR.

In:  a root node, the cotangent node for it, and the set of leaf nodes to differentiate for.
Out: {leaf node: gradient node}: gradients are more graph, so they fuse with the forward pass
     and the optimizer update, and can be differentiated again (higher order).

`VJP` below is the whole of autograd: one vector-Jacobian rule per primitive op, each taking
the node, its output cotangent `g` and returning one cotangent per source (None: no gradient).
Nothing numeric is saved: a rule that needs the forward value uses the node itself (`EXP`: g * n).
DETACH stops gradients. Forward mode (`jvp`) is the transpose of reverse mode: the VJP is linear
in its cotangent, so differentiating it again with respect to that cotangent gives J @ t.
"""

from __future__ import annotations

import math

from lazy.graph import ELEMENTWISE, MOVEMENT, REDUCE, Node, Op, const, node, toposort


def _k(v, like: Node) -> Node:
    return const(v, like.dtype, like.shape)


def _b(op: Op, a: Node, b: Node) -> Node:
    return node(op, (a, b))


def add(a, b): return _b(Op.ADD, a, b)
def sub(a, b): return _b(Op.SUB, a, b)
def mul(a, b): return _b(Op.MUL, a, b)
def div(a, b): return _b(Op.DIV, a, b)
def neg(a): return node(Op.NEG, (a,))
def where(c, a, b): return node(Op.WHERE, (c, a, b))


def _zeros_like(a: Node) -> Node:
    return _k(0, a)


def _sum_to(g: Node, shape: tuple[int, ...]) -> Node:
    """Undo an EXPAND: sum the axes that were broadcast (keeping them, as the source had size 1)."""
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, g.shape)) if s == 1 and t != 1)
    if g.op is Op.MATMUL and axes and axes == tuple(range(len(shape) - 2)):
        return _folded_batch_matmul(g, shape)
    return node(Op.SUM, (g,), axes) if axes else g


def _permute_vjp(n: Node, g: Node) -> Node:
    """The gradient through a transpose of the last two axes, when it comes from a product, is
    the product the other way round: (A @ B)^T = B^T @ A^T. So the weight gradient of
    `x @ w.T` is computed in w's own layout (g^T @ x) instead of being a transposed view of
    x^T @ g that the optimizer update then reads column by column."""
    inv = _inverse_perm(n.arg)
    k = len(inv)
    prod, lead = g, ()
    inner = g
    while inner.op is Op.RESHAPE:  # [1, .., M, N] views (reshapes of reshapes) of an [M, N] product
        inner = inner.srcs[0]
    if inner is not g and inner.op is Op.MATMUL and len(inner.shape) == 2 and g.shape[-2:] == inner.shape \
            and all(d == 1 for d in g.shape[:-2]):
        prod, lead = inner, g.shape[:-2]
    if k >= 2 and inv == (*range(k - 2), k - 1, k - 2) and prod.op is Op.MATMUL and len(prod.shape) == 2:
        a, b = prod.srcs
        out = node(Op.MATMUL, (_mT(b), _mT(a)))
        return node(Op.RESHAPE, (out,), (*lead, *out.shape)) if lead else out
    return node(Op.PERMUTE, (g,), inv)


def _folded_batch_matmul(g: Node, shape: tuple[int, ...]) -> Node:
    """sum_b L_b @ R_b as one GEMM contracting over batch and rows: [K, B*M] @ [B*M, N]. The
    gradient of a matrix broadcast over a batch (a Linear on [batch, seq, features]) is then one
    GEMM with a long K, instead of a batch of products plus a strided reduction over them."""
    left, right = g.srcs
    nb = len(g.shape) - 2
    k, m, n = left.shape[-2], left.shape[-1], right.shape[-1]
    rows = math.prod(g.shape[:nb]) * m
    if left.op is Op.PERMUTE and left.arg == (*range(nb), nb + 1, nb):  # left = a^T: [K, B*M] = (a as [B*M, K])^T
        lhs = _mT(node(Op.RESHAPE, (left.srcs[0],), (rows, k)))
    else:
        lhs = node(Op.RESHAPE, (node(Op.PERMUTE, (left,), (nb, *range(nb), nb + 1)),), (k, rows))
    rhs = node(Op.RESHAPE, (right,), (rows, n))
    return node(Op.RESHAPE, (node(Op.MATMUL, (lhs, rhs)),), tuple(shape))


def _expand(g: Node, shape) -> Node:
    return node(Op.EXPAND, (g,), shape)


def _max_vjp(n: Node, g: Node):
    """Ties share the gradient evenly, like torch.amax; a NaN max goes to the NaNs."""
    a = n.srcs[0]
    big = _expand(n, a.shape)
    eq = node(Op.EQ, (a, big))
    if a.dtype.is_float:
        eq = node(Op.OR, (eq, node(Op.AND, (node(Op.ISNAN, (a,)), node(Op.ISNAN, (big,))))))
    hit = node(Op.CAST, (eq,), a.dtype)
    count = _expand(node(Op.SUM, (hit,), n.arg), a.shape)
    return (div(mul(hit, _expand(g, a.shape)), count),)


def _minmax_vjp(mine: Op):
    """torch.maximum/minimum: the winner takes the gradient, ties split it in half."""
    def rule(n: Node, g: Node):
        a, b = n.srcs
        eq = node(Op.EQ, (a, b))
        a_wins = node(Op.LT, (b, a)) if mine is Op.MAX else node(Op.LT, (a, b))
        half = mul(g, _k(0.5, g))
        ga = where(eq, half, where(a_wins, g, _zeros_like(g)))
        gb = where(eq, half, where(a_wins, _zeros_like(g), g))
        return ga, gb
    return rule


def _pow_vjp(n: Node, g: Node):
    a, b = n.srcs
    # d/da a**b = b * a**(b-1), which torch defines as 0 where b == 0 (0 * 0**-1 would be NaN)
    zero_exp = node(Op.EQ, (b, _zeros_like(b)))
    da = where(zero_exp, _zeros_like(g), mul(g, mul(b, node(Op.POW, (a, sub(b, _k(1, b)))))))
    # d/db a**b = a**b * log(a); torch defines it as 0 where a == 0 and b >= 0 (not for b < 0: -inf)
    zero_base = node(Op.AND, (node(Op.EQ, (a, _zeros_like(a))), node(Op.LE, (_zeros_like(b), b))))
    db = where(zero_base, _zeros_like(g), mul(g, mul(n, node(Op.LOG, (a,)))))
    return da, db


def _prod_vjp(n: Node, g: Node):
    """d prod / d a_i = product of the others: prod / a_i where no zero is involved; where a_i is
    the only zero, the product of the rest; where two or more are zero, 0."""
    a = n.srcs[0]
    zero = node(Op.EQ, (a, _zeros_like(a)))
    zf = node(Op.CAST, (zero,), a.dtype)
    nonzero = where(zero, _k(1, a), a)
    rest = _expand(node(Op.PROD, (nonzero,), n.arg), a.shape)  # product of the nonzero entries
    zeros = _expand(node(Op.SUM, (zf,), n.arg), a.shape)
    ge = _expand(g, a.shape)
    no_zero = div(mul(ge, _expand(n, a.shape)), nonzero)
    one_zero = where(zero, mul(ge, rest), _zeros_like(a))
    return (where(node(Op.EQ, (zeros, _zeros_like(a))), no_zero,
                  where(node(Op.EQ, (zeros, _k(1, a))), one_zero, _zeros_like(a))),)


def _sign(a: Node) -> Node:
    pos = node(Op.CAST, (node(Op.LT, (_zeros_like(a), a)),), a.dtype)
    negv = node(Op.CAST, (node(Op.LT, (a, _zeros_like(a))),), a.dtype)
    return sub(pos, negv)


def _mT(a: Node) -> Node:
    """Swap the last two axes (a view, so the GEMM reads it transposed without a copy)."""
    order = list(range(len(a.shape)))
    order[-2], order[-1] = order[-1], order[-2]
    return node(Op.PERMUTE, (a,), tuple(order))


def _inverse_perm(order):
    return tuple(sorted(range(len(order)), key=order.__getitem__))


def _window_vjp(n: Node, g: Node):
    """The sum over the window offsets j of g[.., :, j, ..] put back where each read: element o at
    o*s + j*d (every s-th place when s > 1: the dilation of a strided convolution's gradient)."""
    axis, k, st, dil = n.arg
    size, o = n.srcs[0].shape[axis], n.shape[axis]
    span = (o - 1) * st + 1
    total = None
    for j in range(k):
        bounds = tuple((j, j + 1) if a == axis + 1 else (0, m) for a, m in enumerate(g.shape))
        gj = node(Op.RESHAPE, (node(Op.SHRINK, (g,), bounds),), g.shape[:axis + 1] + g.shape[axis + 2:])
        if st > 1:  # o -> o*s: a column of s-1 zeros after each element, the last ones cut
            wide = node(Op.RESHAPE, (gj,), gj.shape[:axis + 1] + (1,) + gj.shape[axis + 1:])
            pads = tuple((0, st - 1) if a == axis + 1 else (0, 0) for a in range(len(wide.shape)))
            spread = node(Op.RESHAPE, (node(Op.PAD, (wide,), pads),), gj.shape[:axis] + (o * st,) + gj.shape[axis + 1:])
            gj = node(Op.SHRINK, (spread,), tuple((0, span) if a == axis else (0, m) for a, m in enumerate(spread.shape)))
        placed = node(Op.PAD, (gj,), tuple((j * dil, size - j * dil - span) if a == axis else (0, 0)
                                         for a in range(len(gj.shape))))
        total = placed if total is None else node(Op.ADD, (total, placed))
    return (total,)


def _no_grad(n: Node, g: Node):
    return (None,) * len(n.srcs)


VJP = {
    Op.ADD: lambda n, g: (g, g),
    Op.SUB: lambda n, g: (g, neg(g)),
    Op.MUL: lambda n, g: (mul(g, n.srcs[1]), mul(g, n.srcs[0])),
    Op.DIV: lambda n, g: (div(g, n.srcs[1]), neg(div(mul(g, n), n.srcs[1]))),
    Op.NEG: lambda n, g: (neg(g),),
    Op.EXP: lambda n, g: (mul(g, n),),
    Op.LOG: lambda n, g: (div(g, n.srcs[0]),),
    Op.SQRT: lambda n, g: (div(g, mul(n, _k(2, n))),),
    Op.SIN: lambda n, g: (mul(g, node(Op.COS, n.srcs)),),
    Op.COS: lambda n, g: (neg(mul(g, node(Op.SIN, n.srcs))),),
    Op.TANH: lambda n, g: (mul(g, sub(_k(1, n), mul(n, n))),),
    Op.ERF: lambda n, g: (mul(g, mul(_k(2 / math.sqrt(math.pi), n),
                                     node(Op.EXP, (neg(mul(n.srcs[0], n.srcs[0])),)))),),
    Op.ABS: lambda n, g: (mul(g, _sign(n.srcs[0])),),
    Op.RECIP: lambda n, g: (neg(mul(g, mul(n, n))),),
    Op.POW: _pow_vjp,
    Op.MAX: _minmax_vjp(Op.MAX),
    Op.MIN: _minmax_vjp(Op.MIN),
    Op.WHERE: lambda n, g: (None, where(n.srcs[0], g, _zeros_like(g)), where(n.srcs[0], _zeros_like(g), g)),
    Op.CAST: lambda n, g: (node(Op.CAST, (g,), n.srcs[0].dtype) if n.srcs[0].dtype.is_float else None,),
    Op.MOD: lambda n, g: (g, neg(mul(g, node(Op.FLOORDIV, n.srcs)))),  # a - floor(a/b) * b
    Op.SUM: lambda n, g: (_expand(g, n.srcs[0].shape),),
    Op.RMAX: _max_vjp,
    Op.PROD: _prod_vjp,
    Op.STORED: lambda n, g: (None,),  # the gradient goes to n.arg: see _children
    Op.MATMUL: lambda n, g: (node(Op.MATMUL, (g, _mT(n.srcs[1]))), node(Op.MATMUL, (_mT(n.srcs[0]), g))),
    Op.RESHAPE: lambda n, g: (node(Op.RESHAPE, (g,), n.srcs[0].shape),),
    Op.PERMUTE: lambda n, g: (_permute_vjp(n, g),),
    Op.EXPAND: lambda n, g: (_sum_to(g, n.srcs[0].shape),),
    Op.PAD: lambda n, g: (node(Op.SHRINK, (g,), tuple((a, a + s) for (a, _), s in zip(n.arg, n.srcs[0].shape))),),
    Op.SHRINK: lambda n, g: (node(Op.PAD, (g,), tuple((a, s - b) for (a, b), s in zip(n.arg, n.srcs[0].shape))),),
    Op.FLIP: lambda n, g: (node(Op.FLIP, (g,), n.arg),),
    Op.WINDOW: _window_vjp,
}
# Piecewise-constant float ops have a zero gradient (as in torch); boolean/integer results none.
for _op in (Op.FLOOR, Op.CEIL, Op.TRUNC):
    VJP[_op] = lambda n, g: (_zeros_like(n.srcs[0]),)
for _op in (Op.NOT, Op.ISNAN, Op.ISINF, Op.FLOORDIV, Op.LT, Op.LE, Op.EQ, Op.NE, Op.AND, Op.OR, Op.XOR, Op.DETACH):
    VJP[_op] = _no_grad
assert set(VJP) >= (ELEMENTWISE | REDUCE | MOVEMENT) - {Op.DETACH} - set(), "every op needs a rule"


def _children(n: Node) -> tuple[Node, ...]:
    """Where gradients go: the sources, except for STORED, whose value was realized from `arg`."""
    return (n.arg,) if n.op is Op.STORED else n.srcs


def _grad_edges(n: Node) -> tuple[Node, ...]:
    return () if n.op is Op.DETACH else _children(n)  # nothing below a DETACH can carry a gradient


def differentiable_nodes(root: Node | list[Node], leaves: set[int]) -> tuple[list[Node], set[int]]:
    """Topological order under `root` (or several roots; through STORED nodes to what they store),
    and the ids of the floating-point nodes that depend on a leaf other than through DETACH."""
    order = toposort(root if isinstance(root, list) else [root], _grad_edges)
    live: set[int] = set()
    for n in order:
        if not n.dtype.is_float:
            continue
        if id(n) in leaves or (n.op is not Op.DETACH and any(id(s) in live for s in _children(n))):
            live.add(id(n))
    return order, live


def backward(root: Node, grad_root: Node, leaves: set[int]) -> dict[int, Node]:
    """{id(leaf): d root / d leaf contracted with grad_root} for the leaves `root` depends on."""
    order, live = differentiable_nodes(root, leaves)
    grads: dict[int, Node] = {id(root): grad_root}
    out: dict[int, Node] = {}
    for n in reversed(order):
        g = grads.pop(id(n), None)
        if g is None or id(n) not in live:
            continue
        if id(n) in leaves:
            out[id(n)] = g  # and keep going: a leaf may depend on another leaf
        if not _children(n):
            continue
        if n.op is Op.STORED:
            s = n.arg
            if id(s) in live:
                grads[id(s)] = g if id(s) not in grads else add(grads[id(s)], g)
            continue
        for s, gs in zip(n.srcs, VJP[n.op](n, g)):
            if gs is None or id(s) not in live:
                continue
            prev = grads.get(id(s))
            grads[id(s)] = gs if prev is None else add(prev, gs)
    return out


# -- grad mode ---------------------------------------------------------------------------------
_grad_enabled: list[bool] = [True]


def grad_enabled() -> bool:
    return _grad_enabled[-1]


class _GradMode:
    """Context manager and decorator, like torch.no_grad / enable_grad: entering pushes the mode,
    leaving pops it. Decorates plain and generator functions, with or without parentheses
    (`@lazy.no_grad` and `@lazy.no_grad()`), as torch's do."""

    enabled: bool | None = None  # None: leave the mode as it is (inference_mode(False))

    def __new__(cls, *args, **kw):
        if len(args) == 1 and not kw and callable(args[0]) and not isinstance(args[0], bool):
            return cls()(args[0])  # used as `@decorator` without parentheses
        return super().__new__(cls)

    def __enter__(self):
        _grad_enabled.append(_grad_enabled[-1] if self.enabled is None else self.enabled)
        return self

    def __exit__(self, *exc):
        _grad_enabled.pop()
        return False

    def clone(self) -> _GradMode:
        return self

    def __call__(self, fn):
        import functools
        import inspect

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kw):
                it = fn(*args, **kw)
                with self.clone():
                    value = next(it, _DONE)
                while value is not _DONE:
                    sent = yield value
                    with self.clone():
                        value = it.send(sent) if sent is not None else next(it, _DONE)
            return gen

        @functools.wraps(fn)
        def wrapped(*args, **kw):
            with self.clone():
                return fn(*args, **kw)
        return wrapped


_DONE = object()


class no_grad(_GradMode):
    """Ops inside build graph that no gradient flows through (torch.no_grad)."""

    enabled = False

    def __init__(self, orig_func=None):
        pass


class enable_grad(_GradMode):
    enabled = True

    def __init__(self, orig_func=None):
        pass


class inference_mode(_GradMode):
    """torch.inference_mode: here the same as no_grad (lazy has no version counters or views to save
    work on); `inference_mode(False)` changes nothing. Tensors made inside are ordinary tensors."""

    def __new__(cls, mode=True):
        if not isinstance(mode, bool):  # `@inference_mode` without parentheses
            return cls()(mode)
        return super().__new__(cls)

    def __init__(self, mode: bool = True):
        self.mode = mode
        self.enabled = False if mode else None

    def clone(self) -> inference_mode:
        return inference_mode(self.mode)

    def __enter__(self):
        _inference.append(self.mode or _inference[-1])
        return super().__enter__()

    def __exit__(self, *exc):
        _inference.pop()
        return super().__exit__(*exc)


_inference: list[bool] = [False]


def is_inference_mode_enabled() -> bool:
    return _inference[-1]


class set_grad_enabled(_GradMode):
    """torch.set_grad_enabled: sets the mode at once (as a statement, it stays set); as a context
    manager or decorator, the mode before comes back at the end."""

    def __new__(cls, mode: bool):
        return object.__new__(cls)

    def __init__(self, mode: bool):
        self.prev, self.enabled = _grad_enabled[-1], bool(mode)
        _grad_enabled[-1] = self.enabled

    def clone(self) -> _GradMode:
        return _Fixed(self.enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _grad_enabled[-1] = self.prev
        return False

    def __call__(self, fn):
        _grad_enabled[-1] = self.prev  # as a decorator it only applies inside the function
        return super().__call__(fn)


class _Fixed(_GradMode):
    def __init__(self, enabled: bool):
        self.enabled = enabled


def is_grad_enabled() -> bool:
    return grad_enabled()


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph: bool = False,
         allow_unused: bool = False):
    """torch.autograd.grad: d outputs / d inputs as a tuple of lazy tensors (nothing runs yet)."""
    from lazy.transforms import grad_of

    return grad_of(outputs, inputs, grad_outputs, create_graph, allow_unused)
