"""Batch and group normalization: `F.batch_norm`, `F.group_norm`, BatchNorm1d/2d/3d, GroupNorm.

In:  (N, C, ...) lazy tensors; running statistics as module buffers.
Out: normalized lazy tensors; in training mode the running statistics are updated in place,
     as torch does: running = (1 - momentum) * running + momentum * batch statistic, with the
     unbiased variance (n / (n - 1)) for running_var; momentum=None is the cumulative average
     1 / num_batches_tracked.

Choices
- The running updates are in-place writes of detached values under no_grad (lazy/inplace.py):
  they are computed with the next realization of anything, normally the training step's own
  schedule, into the buffers' own memory; the graph does not grow over steps.
- momentum=None needs 1 / num_batches_tracked. torch reads the counter on the host every step;
  here the factor stays a lazy 0-d tensor, so a training step does not sync on it.
- Statistics are computed in float32 for float16/bfloat16 inputs; the output has the input's
  dtype (parameters and buffers keep theirs).
"""

from __future__ import annotations

import math

import torch

from lazy.autograd import no_grad
from lazy.dtypes import DTypeError
from lazy.graph import float32, int64
from lazy.nn import init
from lazy.nn.functional import _t
from lazy.nn.modules import Module, _param
from lazy.tensor import Tensor, owned_tensor

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "batch_norm", "group_norm"]
FUNCTIONAL = ["batch_norm", "group_norm"]


def _channels(x: Tensor, v: Tensor | None, dtype) -> Tensor | None:
    """A per-channel vector shaped to broadcast over (N, C, ...), in the compute dtype."""
    if v is None:
        return None
    return v.to(dtype).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum=0.1, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.batch_norm over dim 1: batch statistics when `training` (updating the
    running ones in place when given), else the running statistics. `momentum` may also be a 0-d
    tensor (BatchNorm's cumulative average)."""
    x = _t("batch_norm", input)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input with at least 2 dims (N, C, ...), got shape {tuple(x.shape)}")
    if not x.dtype.is_float:
        raise DTypeError(f"batch_norm: expected a floating point input, got {x.dtype}")
    c = x.shape[1]
    dt = float32 if x.dtype.itemsize < 4 else x.dtype
    xc = x.to(dt)
    axes = (0, *range(2, x.ndim))
    if training:
        n = math.prod(x.shape[a] for a in axes)
        if n == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
        mean = xc.mean(axes, keepdim=True)
        d = xc - mean
        var = (d * d).mean(axes, keepdim=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                m = momentum if isinstance(momentum, Tensor) else float(momentum)
                if running_mean is not None:
                    _update(running_mean, mean.reshape(c), m)
                if running_var is not None:
                    _update(running_var, var.reshape(c) * (n / max(n - 1, 1) if n > 1 else math.nan), m)
    else:
        if running_mean is None:
            raise RuntimeError("running_mean must be defined in evaluation mode")
        if running_var is None:
            raise RuntimeError("running_var must be defined in evaluation mode")
        mean, var = _channels(x, _t("batch_norm", running_mean), dt), _channels(x, _t("batch_norm", running_var), dt)
        d = xc - mean
    y = d * (var + eps).rsqrt()
    w, b = _channels(x, weight, dt), _channels(x, bias, dt)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.to(x.dtype)


def _update(running: Tensor, stat: Tensor, m) -> None:
    """running <- (1 - m) * running + m * stat, in place, as torch's kernel orders it."""
    r = running.to(stat.dtype)
    running.copy_((stat.detach() * m + r * (1 - m)).to(running.dtype))


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.group_norm: statistics over each group of C / num_groups channels (and
    all positions), biased variance; per-channel affine."""
    x = _t("group_norm", input)
    if x.ndim < 2:
        raise RuntimeError(f"group_norm: expected an input with at least 2 dims (N, C, ...), got shape {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    size = [n * c // max(num_groups, 1), num_groups, *x.shape[2:]]
    if size[0] * math.prod(size[2:]) == 1:  # torch's _verify_batch_size
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    if c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input of "
                           f"shape {list(x.shape)} and num_groups={num_groups}")
    dt = float32 if x.dtype.itemsize < 4 else x.dtype
    g = x.to(dt).reshape(n, num_groups, -1)
    mean = g.mean(-1, keepdim=True)
    d = g - mean
    var = (d * d).mean(-1, keepdim=True)
    y = (d * (var + eps).rsqrt()).reshape(x.shape)
    w, b = _channels(x, weight, dt), _channels(x, bias, dt)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.to(x.dtype)


# ---------------------------------------------------------------- modules

def _buffer(values: torch.Tensor, device) -> Tensor:
    t = owned_tensor(values)
    return t if device is None or torch.device(device) == t.device else t.to(device).realize()


class _BatchNorm(Module):
    """torch's _BatchNorm: affine weight/bias, running_mean/running_var/num_batches_tracked buffers."""

    _dims: tuple[int, ...] = ()
    _expect = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = _param(num_features, dtype=dtype, device=device)
            if bias:
                self.bias = _param(num_features, dtype=dtype, device=device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            from lazy.dtypes import as_dtype, get_default_dtype, to_torch

            tdt = to_torch(get_default_dtype() if dtype is None else as_dtype(dtype, type(self).__name__))
            self.register_buffer("running_mean", _buffer(torch.zeros(num_features, dtype=tdt), device))
            self.register_buffer("running_var", _buffer(torch.ones(num_features, dtype=tdt), device))
            self.register_buffer("num_batches_tracked", _buffer(torch.tensor(0, dtype=torch.long), device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.ndim not in self._dims:
            raise ValueError(f"expected {self._expect} input (got {x.ndim}D input)")

    def forward(self, input):
        x = _t(type(self).__name__, input)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # the cumulative average, without reading the counter on the host
                factor = self.num_batches_tracked.detach().to(int64).double().reciprocal().to(float32)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if keep else None, self.running_var if keep else None, self.weight,
                          self.bias, use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs over N (and L)."""

    _dims, _expect = (2, 3), "2D or 3D"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs over N, H and W."""

    _dims, _expect = (4,), "4D"


class BatchNorm3d(_BatchNorm):
    _dims, _expect = (5,), "5D"


class GroupNorm(Module):
    """Group normalization (torch.nn.GroupNorm): per-sample statistics over channel groups."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None,
                 dtype=None, *, bias: bool = True):
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = _param(num_channels, dtype=dtype, device=device)
            if bias:
                self.bias = _param(num_channels, dtype=dtype, device=device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"
