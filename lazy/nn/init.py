"""torch.nn.init for lazy parameters: torch's own init functions, drawn from lazy's generator.

In:  a lazy tensor that owns its buffer (a Parameter), the init's arguments.
Out: the same tensor, its value replaced (under no_grad, like torch).

The values are drawn on the host by torch.nn.init with lazy's torch.Generator (the one
`lazy.manual_seed` seeds), so `lazy.manual_seed(s); nn.Linear(3, 4)` holds exactly the weights of
`torch.manual_seed(s); torch.nn.Linear(3, 4)`: same functions, same generator state, same order.
"""

from __future__ import annotations

import torch

from lazy.autograd import no_grad
from lazy.dtypes import to_torch
from lazy.graph import Op
from lazy.tensor import Tensor, _gen, owned_tensor, tensor

__all__ = ["calculate_gain", "constant_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
           "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_"]

calculate_gain = torch.nn.init.calculate_gain


def _assign(t: Tensor, value: Tensor) -> Tensor:
    """t takes value's realized buffer as its own node: an in-place assignment without a kernel,
    keeping the Tensor object (and so a parameter's identity in modules and optimizers).

    Not `copy_`: under no_grad that wraps the buffer in a DETACH node, which reads back through a
    copy kernel and makes the first training step's graph differ from every later one's."""
    n = value._node
    # a view (`m.weight.data`, `w[0]`) is written through to its base, as torch's init writes
    if t._base is not None or n.op is not Op.BUFFER or n.shape != t._node.shape or n.dtype is not t.dtype:
        with no_grad():
            return t.copy_(value)
    t._set_realized(n, assigned=True)
    return t


def _fill(t: Tensor, draw) -> Tensor:
    host = torch.empty(tuple(t.shape), dtype=to_torch(t.dtype))
    draw(host)
    return _assign(t, owned_tensor(host) if t.device.type == "cpu" else tensor(host).to(t.device).realize())


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.uniform_(h, a, b, generator=generator or _gen))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.normal_(h, mean, std, generator=generator or _gen))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.trunc_normal_(h, mean, std, a, b, generator=generator or _gen))


def constant_(tensor: Tensor, val: float) -> Tensor:
    # a host buffer, not a lazy CONST: a parameter must own a buffer (equal constants are one node,
    # and autograd tells leaves apart by node)
    return _fill(tensor, lambda h: h.fill_(val))


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.kaiming_uniform_(h, a, mode, nonlinearity, generator=generator or _gen))


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.kaiming_normal_(h, a, mode, nonlinearity, generator=generator or _gen))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.xavier_uniform_(h, gain, generator=generator or _gen))


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, lambda h: torch.nn.init.xavier_normal_(h, gain, generator=generator or _gen))
