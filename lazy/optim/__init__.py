"""torch.optim for lazy parameters: SGD, Adam, AdamW (here), RMSprop, Adagrad, Adadelta
(lazy/optim/adaptive.py) with torch's update formulas; lr schedulers in lazy/optim/lr_scheduler.py.

In:  parameters whose `.grad` holds lazy gradient graphs (from `loss.backward()`).
Out: `step()` computes each parameter's and each state tensor's new value, realizes them all in
     ONE schedule, together with the gradients and the losses `backward()` left pending
     (`lazy.transforms.pending_roots`), and writes them in place: the kernels store the new values
     into the parameters' and the state's own memory (the Tensor objects and their buffers stay;
     no copy kernel, no new allocation per step). So forward, backward and update of a training
     step are one program, and a later `loss.item()` reads a buffer.

In-place writes and lazy reads
- A new value goes into its tensor's old buffer by the rules of lazy/inplace.py: a lazy tensor
  built from the old value earlier (the model's output, held across `step()`) is computed in the
  same schedule, before the write, as torch would have computed it already; where another tensor
  holds the old buffer itself, or the scheduler finds a read of the old value after the write
  (scheduler.schedule `_in_place_hazards`), the value gets a fresh buffer that the tensor takes
  over, as a plain assignment.

Why the pieces look the way they do
- Per-step numbers (lr, Adam's bias corrections) go into the graph as a small host BUFFER, never
  as constants: constants are part of a graph's structure key, so a new value every step would
  reschedule and recompile every step. Hyperparameters that stay fixed (betas, eps, momentum,
  weight decay) are constants the compiler can fold; one that changes (OneCycleLR cycles SGD's
  momentum and Adam's beta1) moves to the buffer from then on (`_varies`): one new schedule, then
  none. (Under lazy.jit, a hyperparameter that first changes during replays needs `step.reset()`,
  as changing a folded one always did.)
- State starts as zero buffers (not lazy zeros), so the first step has the same graph as every
  later one and the step program is compiled once.
- The update is elementwise in tensors of the parameter's shape, so the scheduler stores all of it
  (parameters, state, of every parameter of one shape) from one kernel: the kernel that computes
  those gradients' batch reductions anyway. An optimizer adds no kernels to a training step.
- Gradients are realized in the same schedule: more stores in those kernels, one extra write per
  gradient element and no extra kernel (without them AdamW's MLP step measured 2 kernels *more*:
  the scheduler then stored other intermediates instead). In exchange `.grad` is a buffer after
  `step()`: reading it is free, and it stops holding the step's graph and the previous
  parameter buffers alive.
- Formulas follow torch's single-tensor (CPU default) implementations operation by operation,
  so losses track torch's within float32 rounding.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import torch

from lazy.autograd import enable_grad, no_grad
from lazy.dtypes import to_torch
from lazy.graph import Node, Op, const, node
from lazy.nn.init import _assign
from lazy.tensor import Tensor, holds_alone, overwritten, owned_tensor, realize, tensor

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """torch.optim.Optimizer: param_groups, state, zero_grad(), step(); see the module docstring."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = defaultdict(dict)  # Tensor hashes by identity, like torch
        self._scalars = _Scalars()
        self._first: dict[int, dict] = {}  # id(group) -> the hyperparameters' values at their first step
        self._dynamic: set[tuple[int, str]] = set()  # (id(group), key): changed since, sent as host numbers
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize lazy Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        with no_grad():
                            p.grad = owned_tensor(torch.zeros(tuple(p.shape), dtype=to_torch(p.dtype))).to(p.device)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])

    # ---- the step: subclasses write `_update`; realization happens once, here
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        updates: list[tuple[Tensor, Tensor]] = []
        grads: list[tuple[Tensor, Tensor]] = []
        entries = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        numbers = [self._numbers(p, group, self.state[p]) for p, group in entries]
        scalars = self._scalars.write(entries, numbers)
        # on a replay of a captured step (lazy.jit) only the host numbers are redone, then the kernels run
        from lazy.runtime import record_host_effect
        record_host_effect(functools.partial(self._renumber, entries))
        with no_grad():
            for (p, group), nums in zip(entries, scalars):
                # DETACHed inputs: no gradient flows through an update (so realize returns plain
                # buffers, and no node needs a DETACH of its own)
                g = node(Op.DETACH, (p.grad._node,))
                if g.dtype is not p.dtype:
                    g = node(Op.CAST, (g,), p.dtype)
                news = self._update(p, _Expr(node(Op.DETACH, (p._node,))), _Expr(g), group, self.state[p], nums)
                updates += [(t, Tensor._new(e.node)) for t, e in news]
                grads.append((p, p.grad))
        _realize_step(updates, grads)
        return loss

    def _renumber(self, entries) -> None:
        self._scalars.write(entries, [self._numbers(p, group, self.state[p]) for p, group in entries], views=False)

    def _varies(self, group: dict, key: str, value=None) -> bool:
        """Whether group[key] (or `value` derived from it) reaches the kernels as a host number: from
        the first step at which it differs from its first value on (see the module docstring)."""
        value = group[key] if value is None else value
        first = self._first.setdefault(id(group), {}).setdefault(key, value)
        if first != value:
            self._dynamic.add((id(group), key))
        return (id(group), key) in self._dynamic

    def _numbers(self, param: Tensor, group: dict, state: dict) -> tuple[float, ...]:
        """This step's host numbers for one parameter (learning rate, bias corrections), advancing
        its step count; they reach the kernels through a buffer (see _Scalars)."""
        raise NotImplementedError

    def _update(self, param: Tensor, p: _Expr, grad: _Expr, group: dict, state: dict,
                nums: tuple[_Expr, ...]) -> list[tuple[Tensor, _Expr]]:
        """[(tensor, its new value)] for the parameter and each state tensor, as graph expressions
        (`p`, `grad`: param's and its gradient's nodes; `nums`: `_numbers`' values, broadcast)."""
        raise NotImplementedError

    # ---- saving and loading (torch's layout: state by parameter index)
    def state_dict(self) -> dict:
        index = {}
        groups = []
        for g in self.param_groups:
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [index[id(p)] for p in g["params"]]})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        by_index = {}
        for mine, saved in zip(self.param_groups, groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            by_index.update(zip(saved["params"], mine["params"]))
            mine.update({k: v for k, v in saved.items() if k != "params"})
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: _own_buffer(v, p) if hasattr(v, "shape") and len(v.shape) else
                             (int(v) if k == "step" else v) for k, v in s.items()}


@functools.lru_cache(maxsize=1024)
def _cached_const(key, value, dtype, shape) -> Node:
    return const(value, dtype, shape)


def _const(value, dtype, shape) -> Node:
    """const(), remembered: the same few constants every step (the key tells 0.0 from -0.0)."""
    return _cached_const((type(value), repr(value)), value, dtype, shape)


class _Expr:
    """Arithmetic on graph nodes that all have one shape and dtype: the update formulas.

    Tensor ops would redo promotion, broadcasting, device checks and grad-mode bookkeeping on
    every op; here every operand already has the parameter's shape and dtype, and a training step
    builds these formulas for every parameter at every step (building them with Tensor ops took
    about 2 ms a parameter, several times the kernels' time for small models)."""

    __slots__ = ("node",)

    def __init__(self, n: Node):
        self.node = n

    def _of(self, x) -> Node:
        return x.node if isinstance(x, _Expr) else _const(x, self.node.dtype, self.node.shape)

    def _op(self, op: Op, other, swap: bool = False) -> _Expr:
        a, b = self.node, self._of(other)
        return _Expr(node(op, (b, a) if swap else (a, b)))

    def __add__(self, o): return self._op(Op.ADD, o)
    def __radd__(self, o): return self._op(Op.ADD, o, swap=True)
    def __sub__(self, o): return self._op(Op.SUB, o)
    def __rsub__(self, o): return self._op(Op.SUB, o, swap=True)
    def __mul__(self, o): return self._op(Op.MUL, o)
    def __rmul__(self, o): return self._op(Op.MUL, o, swap=True)
    def __truediv__(self, o): return self._op(Op.DIV, o)
    def __neg__(self): return _Expr(node(Op.NEG, (self.node,)))
    def sqrt(self): return _Expr(node(Op.SQRT, (self.node,)))
    def maximum(self, o): return self._op(Op.MAX, o)

    def lerp(self, end: _Expr, w: float) -> _Expr:
        """torch.lerp with a scalar weight, torch's two-sided formula."""
        d = end - self
        return self + d * w if w < 0.5 else end - d * (1 - w)


class _Scalars:
    """The step's host numbers as views of one small buffer per (dtype, device), which the optimizer
    keeps and overwrites every step: the graph reads the same buffer nodes at every step (one
    structure, one compiled program) and a replayed step (lazy.jit) sees new numbers after
    `write` alone. Each parameter owns its slots; `write` returns one expression per number,
    broadcast to the parameter's shape."""

    def __init__(self):
        self.bufs: dict = {}  # (dtype, device) -> Tensor over the host/device buffer

    def write(self, entries, numbers, views: bool = True) -> list[tuple[_Expr, ...]]:
        layout: dict = defaultdict(list)
        slots = []
        for (p, _), nums in zip(entries, numbers):
            key = (p.dtype, str(p.device))
            slots.append((key, len(layout[key])))
            layout[key].extend(nums)
        bufs = {}
        for key, values in layout.items():
            host = torch.tensor(values, dtype=to_torch(key[0]))
            buf = self.bufs.get(key)
            if buf is None or buf.shape[0] != len(values) or not holds_alone(buf._node.arg):
                # (a fresh buffer also when a pending value still reads the last step's numbers)
                buf = owned_tensor(host) if key[1] == "cpu" else tensor(host).to(key[1]).realize()
                self.bufs[key] = buf
            else:
                b = buf._node.arg
                b.data.copy_(host)  # in place: nothing reads the last step's numbers any more
                b.version += 1
                overwritten(b)
            bufs[key] = buf._node
        if not views:
            return []
        out = []
        for ((p, _), nums), (key, start) in zip(zip(entries, numbers), slots):
            shape = tuple(p.shape)
            exprs = []
            for i in range(start, start + len(nums)):
                v = node(Op.RESHAPE, (node(Op.SHRINK, (bufs[key],), ((i, i + 1),)),), ())
                exprs.append(_Expr(v if not shape else
                                   node(Op.EXPAND, (node(Op.RESHAPE, (v,), (1,) * len(shape)),), shape)))
            out.append(tuple(exprs))
        return out


def _zeros_buffer(p: Tensor) -> Tensor:
    """Optimizer state that owns memory from the start (see the module docstring)."""
    t = owned_tensor(torch.zeros(tuple(p.shape), dtype=to_torch(p.dtype)))
    return t if t.device == p.device else t.to(p.device).realize()


def _own_buffer(v, like: Tensor) -> Tensor:
    host = v.torch() if isinstance(v, Tensor) else torch.as_tensor(v)
    t = owned_tensor(host.to(dtype=to_torch(like.dtype), copy=True))
    return t if t.device == like.device else t.to(like.device).realize()


def _realize_step(updates: list[tuple[Tensor, Tensor]], grads: list[tuple[Tensor, Tensor]]) -> None:
    """Realize the new values, the gradients and the pending losses in one schedule per device
    (normally one), then assign the values to their tensors.

    New values are realized as tensors of their own and then assigned, rather than written into the
    parameter first and the parameter realized: realizing a leaf keeps its update graph attached
    (a STORED node whose graph references the previous step's, and so on: memory that grows every
    step), while a parameter must end up holding a plain buffer (a leaf's identity for autograd)."""
    from lazy import transforms

    pending = list(transforms.pending_roots)
    by_device: dict = defaultdict(list)
    # grouped by the parameter's device: asking a fresh gradient graph for its device walks it
    for p, t in [*updates, *grads, *((t, t) for t in pending)]:
        by_device[str(p.device)].append(t)
    # each new value may overwrite its tensor's own buffer; realize() checks that nothing pending
    # still reads the old value (lazy/inplace.py), and the scheduler the order within the step
    into = {id(value): target for target, value in updates}
    for ts in by_device.values():
        realize(*ts, _into=into)
    for target, value in updates:
        # the tensor object stays; its node becomes the realized buffer, which is its own buffer
        # when the update was written in place
        _assign(target, value)
    for t in pending:
        transforms.pending_roots.discard(t)


def _check(name: str, value: float, low: float = 0.0) -> None:
    if not value >= low:
        raise ValueError(f"Invalid {name}: {value}")


class SGD(Optimizer):
    """torch.optim.SGD: momentum (with dampening), Nesterov, L2 weight decay, maximize."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        _check("learning rate", lr)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                                      "nesterov": nesterov, "maximize": maximize})

    def _numbers(self, param, group, state):
        return (group["lr"],) + ((group["momentum"],) if self._varies(group, "momentum") else ())

    def _update(self, param, p, grad, group, state, nums):
        lr = nums[0]
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + p * group["weight_decay"]
        out = []
        momentum, dampening = group["momentum"], group["dampening"]
        if self._varies(group, "momentum"):
            momentum = nums[1]
        if group["momentum"] != 0:
            buf = state.get("momentum_buffer")
            first = buf is None
            if first:  # a zero buffer, so the first step's graph is every step's when dampening is 0:
                buf = state["momentum_buffer"] = _zeros_buffer(param)  # 0 * momentum + grad == grad
            b = _Expr(buf._node)
            if first and dampening != 0:
                new_buf = g  # torch starts the buffer at the gradient
            else:
                new_buf = b * momentum + (g if dampening == 0 else g * (1 - dampening))
            out.append((buf, new_buf))
            g = g + new_buf * momentum if group["nesterov"] else new_buf
        out.append((param, p - g * lr))
        return out


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient; amsgrad; maximize)."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        _check("weight_decay value", weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                      "amsgrad": amsgrad, "maximize": maximize})

    def _numbers(self, param, group, state):
        state["step"] = state.get("step", 0) + 1
        step, lr, wd = state["step"], group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        # torch's host arithmetic in double; the kernel sees each number rounded to p's dtype once
        step_size = lr / (1 - beta1 ** step)
        w = 1 - beta1  # the lerp weight, or (at 1/2 and above) the one from the other end, as torch's lerp
        varies = ((w if w < 0.5 else beta1),) if self._varies(group, "beta1", beta1) else ()
        return 1 - lr * wd, -step_size, math.sqrt(1 - beta2 ** step), *varies

    def _update(self, param, p, grad, group, state, nums):
        if "exp_avg" not in state:
            state["exp_avg"] = _zeros_buffer(param)
            state["exp_avg_sq"] = _zeros_buffer(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = _zeros_buffer(param)
        wd = group["weight_decay"]
        beta1, beta2 = group["betas"]
        decay, neg_step, bc2_sqrt = nums[:3]
        g = -grad if group["maximize"] else grad
        m, v = state["exp_avg"], state["exp_avg_sq"]
        new_p = p
        if wd != 0:
            if self._decoupled:
                new_p = p * decay
            else:
                g = g + p * wd
        if self._varies(group, "beta1", beta1):  # _Expr.lerp's two formulas, the weight a host number
            mm = _Expr(m._node)
            new_m = mm + (g - mm) * nums[3] if 1 - beta1 < 0.5 else g - (g - mm) * nums[3]
        else:
            new_m = _Expr(m._node).lerp(g, 1 - beta1)
        new_v = _Expr(v._node) * beta2 + g * (1 - beta2) * g
        out = [(m, new_m), (v, new_v)]
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            new_v = _Expr(vmax._node).maximum(new_v)
            out.append((vmax, new_v))
        denom = new_v.sqrt() / bc2_sqrt + group["eps"]
        return out + [(param, new_p + new_m * neg_step / denom)]


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay first)."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


from lazy.optim import lr_scheduler  # (they build on the classes above)
from lazy.optim.adaptive import Adadelta, Adagrad, RMSprop
