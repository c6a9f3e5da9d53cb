"""Optimizers with per-element step sizes from running squared gradients: RMSprop, Adagrad,
Adadelta, with torch's update formulas.

In:  parameters with lazy `.grad`, torch's constructor arguments.
Out: `step()` as SGD/Adam's (lazy/optim/__init__.py): the new parameters and state are one
     elementwise graph per parameter, realized with the gradients in one schedule and written in
     place.

Invariants
- Each update follows torch's single-tensor implementation operation by operation (addcmul as
  self + (value * t1) * t2, addcdiv as self + (value * t1) / t2, add(alpha) as self + alpha * other),
  so trajectories track torch's within float32 rounding.
- Numbers that change from step to step (lr, Adagrad's decayed lr) reach the kernels through the
  optimizer's host scalar buffer, so no step recompiles; RMSprop's momentum too once a scheduler
  changes it. The rest (alpha, rho, eps, weight decay) are folded constants.
- State tensors are zero (Adagrad: initial_accumulator_value) buffers from the first step on, so
  the first step's program is every step's. Adagrad creates its state in the constructor, as
  torch's does.
"""

from __future__ import annotations

import torch

from lazy.dtypes import to_torch
from lazy.optim import Optimizer, _check, _Expr, _zeros_buffer
from lazy.tensor import owned_tensor

__all__ = ["Adadelta", "Adagrad", "RMSprop"]


def _grad(grad: _Expr, p: _Expr, group: dict) -> _Expr:
    """The gradient as torch's loops start: negated for maximize, plus weight_decay * p."""
    g = -grad if group["maximize"] else grad
    return g + p * group["weight_decay"] if group["weight_decay"] != 0 else g


class RMSprop(Optimizer):
    """torch.optim.RMSprop: square_avg = alpha sa + (1 - alpha) g^2; centered subtracts the squared
    running mean of g; momentum buffers the step."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, capturable: bool = False, foreach=None,
                 maximize: bool = False, differentiable: bool = False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        _check("alpha value", alpha)
        super().__init__(params, {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                                  "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable})

    def _numbers(self, param, group, state):
        state["step"] = state.get("step", 0) + 1
        return (-group["lr"],) + ((group["momentum"],) if self._varies(group, "momentum") else ())

    def _update(self, param, p, grad, group, state, nums):
        if "square_avg" not in state:
            state["square_avg"] = _zeros_buffer(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = _zeros_buffer(param)
            if group["centered"]:
                state["grad_avg"] = _zeros_buffer(param)
        neg_lr = nums[0]
        momentum = nums[1] if self._varies(group, "momentum") else group["momentum"]
        alpha = group["alpha"]
        g = _grad(grad, p, group)
        sa = state["square_avg"]
        new_sa = _Expr(sa._node) * alpha + g * (1 - alpha) * g
        out = [(sa, new_sa)]
        if group["centered"]:
            ga = state["grad_avg"]
            new_ga = _Expr(ga._node).lerp(g, 1 - alpha)
            out.append((ga, new_ga))
            avg = (new_sa + new_ga * -1 * new_ga).sqrt()
        else:
            avg = new_sa.sqrt()
        avg = avg + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            new_buf = _Expr(buf._node) * momentum + g / avg
            out.append((buf, new_buf))
            return out + [(param, p + neg_lr * new_buf)]
        return out + [(param, p + neg_lr * g / avg)]


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum += g^2, p -= clr g / (sqrt(sum) + eps), clr = lr / (1 + (step - 1) lr_decay)."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, foreach=None, *, maximize: bool = False,
                 differentiable: bool = False, fused=None):
        _check("learning rate", lr)
        _check("lr_decay value", lr_decay)
        _check("weight_decay value", weight_decay)
        _check("initial_accumulator_value value", initial_accumulator_value)
        _check("epsilon value", eps)
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable, "fused": fused})
        for group in self.param_groups:  # torch makes the state here, not at the first step
            for p in group["params"]:
                st = self.state[p]
                st["step"] = 0
                init = torch.full(tuple(p.shape), group["initial_accumulator_value"], dtype=to_torch(p.dtype))
                t = owned_tensor(init)
                st["sum"] = t if t.device == p.device else t.to(p.device).realize()

    def _numbers(self, param, group, state):
        state["step"] = state.get("step", 0) + 1
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        return (-clr,)

    def _update(self, param, p, grad, group, state, nums):
        (neg_clr,) = nums
        g = _grad(grad, p, group)
        s = state["sum"]
        new_s = _Expr(s._node) + g * 1 * g
        std = new_s.sqrt() + group["eps"]
        return [(s, new_s), (param, p + neg_clr * g / std)]


class Adadelta(Optimizer):
    """torch.optim.Adadelta: square_avg and acc_delta running averages with rho; the step is
    sqrt(acc_delta + eps) / sqrt(square_avg + eps) g, times lr."""

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False, differentiable: bool = False):
        _check("learning rate", lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        _check("epsilon value", eps)
        _check("weight_decay value", weight_decay)
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "foreach": foreach,
                                  "capturable": capturable, "maximize": maximize, "differentiable": differentiable})

    def _numbers(self, param, group, state):
        state["step"] = state.get("step", 0) + 1
        return (-group["lr"],)

    def _update(self, param, p, grad, group, state, nums):
        if "square_avg" not in state:
            state["square_avg"] = _zeros_buffer(param)
            state["acc_delta"] = _zeros_buffer(param)
        (neg_lr,) = nums
        rho, eps = group["rho"], group["eps"]
        g = _grad(grad, p, group)
        sa, ad = state["square_avg"], state["acc_delta"]
        new_sa = _Expr(sa._node) * rho + g * (1 - rho) * g
        std = (new_sa + eps).sqrt()
        delta = (_Expr(ad._node) + eps).sqrt() / std * g
        new_ad = _Expr(ad._node) * rho + delta * (1 - rho) * delta
        return [(sa, new_sa), (ad, new_ad), (param, p + neg_lr * delta)]
