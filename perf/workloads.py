"""Benchmark workloads: one definition per workload, written once per library.

Each `Workload` builds its inputs (numpy arrays, seeded) and gives the same computation for
each peer: `lazy`, `torch` (eager; torch.compile wraps the same function) and `numpy`.
`bytes` counts the compulsory memory traffic (inputs read once, outputs written once), which is
what a fused kernel should approach and what GB/s figures are computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SIZES = {"small": 1 << 20, "medium": 1 << 22, "large": 1 << 24}


@dataclass
class Workload:
    name: str
    make_inputs: Callable[[int], list[np.ndarray]]  # numel budget -> inputs
    lazy: Callable
    torch: Callable
    numpy: Callable
    bytes: Callable[[list[np.ndarray]], int]
    expected_kernels: int  # what the fused lazy program should launch


def _rng():
    return np.random.default_rng(0)


def _vec(n):
    return [_rng().standard_normal(n, dtype=np.float32)]


def _mat(n):
    side = int(round(n ** 0.5))
    rng = _rng()
    return [rng.standard_normal((side, side), dtype=np.float32),
            rng.standard_normal(side, dtype=np.float32), rng.standard_normal(side, dtype=np.float32)]


def _in_out(inputs):
    return 2 * inputs[0].nbytes


# 10 elementwise ops: mul add relu sub sigmoid mul add tanh abs mul
def chain_lazy(x):
    y = ((x * 2.0 + 1.0).relu() - 0.5).sigmoid() * 3.0 + x
    return y.tanh().abs() * 0.5


def chain_torch(x):
    import torch
    y = torch.sigmoid(torch.relu(x * 2.0 + 1.0) - 0.5) * 3.0 + x
    return torch.abs(torch.tanh(y)) * 0.5


def chain_numpy(x):
    y = 1.0 / (1.0 + np.exp(-(np.maximum(x * 2.0 + 1.0, 0.0) - 0.5))) * 3.0 + x
    return np.abs(np.tanh(y)) * 0.5


def softmax_lazy(x, w, b):
    return x.softmax(-1)


def softmax_torch(x, w, b):
    import torch
    return torch.softmax(x, -1)


def softmax_numpy(x, w, b):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layernorm_lazy(x, w, b):
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdim=True)
    return xc * (var + 1e-5).rsqrt() * w + b


def layernorm_torch(x, w, b):
    import torch
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def layernorm_numpy(x, w, b):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + 1e-5) * w + b


def sumsq_lazy(x):
    return (x * x).sum()


def sumsq_torch(x):
    return (x * x).sum()


def sumsq_numpy(x):
    return np.dot(x, x)  # numpy's best: one pass through BLAS


WORKLOADS = {
    "elementwise_chain": Workload("elementwise_chain", _vec, chain_lazy, chain_torch, chain_numpy, _in_out, 1),
    "softmax": Workload("softmax", _mat, softmax_lazy, softmax_torch, softmax_numpy, _in_out, 1),
    "layernorm": Workload("layernorm", _mat, layernorm_lazy, layernorm_torch, layernorm_numpy, _in_out, 1),
    "sum_of_squares": Workload("sum_of_squares", _vec, sumsq_lazy, sumsq_torch, sumsq_numpy,
                               lambda ins: ins[0].nbytes, 1),
}
