"""torch.nn.utils for lazy parameters: gradient clipping and parameters as one vector.

In:  parameters (an iterable, or one tensor) whose `.grad` are lazy gradients.
Out: clip_grad_norm_ returns the total norm as a lazy 0-d tensor and scales the gradients in
     place; clip_grad_value_ clamps them in place; parameters_to_vector / vector_to_parameters.

The gradients are written in place under no_grad (lazy/inplace.py): the scaled gradients are
computed with the next realization, normally the optimizer's step, in the same schedule, so
clipping costs no extra pass and no host sync. `error_if_nonfinite=True` needs the norm on the
host (as torch does): it realizes the norm then. `foreach` is accepted and ignored.
"""

from __future__ import annotations

import lazy
from lazy.autograd import no_grad
from lazy.nn.init import _assign
from lazy.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm", "parameters_to_vector",
           "vector_to_parameters"]


def _params(parameters) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


@no_grad()
def get_total_norm(tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """The norm of the tensors' norms (the norm of all their elements together), torch's order."""
    ts = _params(tensors)
    norm_type = float(norm_type)
    if not ts:
        return lazy.tensor(0.0)
    norms = [t.norm(norm_type) for t in ts]
    total = lazy.stack([n.to(norms[0].dtype) for n in norms]).norm(norm_type)
    if error_if_nonfinite and bool(total.isnan() | total.isinf()):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
                           "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
                           "anyway, set `error_if_nonfinite=False`")
    return total


@no_grad()
def clip_grads_with_norm_(parameters, max_norm: float, total_norm: Tensor, foreach=None) -> None:
    """Scale the gradients in place by min(1, max_norm / (total_norm + 1e-6))."""
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    if not grads:
        return
    coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.device))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """torch.nn.utils.clip_grad_norm_: the total gradient norm (returned), and gradients scaled in
    place so that it is at most max_norm."""
    params = _params(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


@no_grad()
def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for p in _params(parameters):
        if p.grad is not None:
            p.grad.clamp_(min=-clip_value, max=clip_value)


def parameters_to_vector(parameters) -> Tensor:
    """The parameters flattened and concatenated (one device, as torch requires)."""
    ps = _params(parameters)
    devices = {str(p.device) for p in ps}
    if len(devices) > 1:
        raise TypeError("Found two parameters on different devices, this is currently not supported.")
    return lazy.cat([p.reshape(-1) for p in ps])


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """The parameters take consecutive slices of `vec` as their values (each keeps its identity)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    pointer = 0
    with no_grad():
        for p in _params(parameters):
            n = p.numel()
            _assign(p, vec[pointer:pointer + n].detach().reshape(p.shape).to(p.dtype).clone().realize())
            pointer += n
