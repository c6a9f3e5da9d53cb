"""Resampling: adaptive pooling (`F.adaptive_avg_pool2d`, `F.adaptive_max_pool2d`) and
`F.interpolate` (nearest, nearest-exact, linear/bilinear/trilinear, area), with their modules.

In:  (N, C, *spatial) or unbatched lazy tensors, torch's size/scale_factor/align_corners arguments.
Out: lazy tensors, differentiable through the composition (no new graph op).

How
- Adaptive pooling windows are torch's: rows floor(i H / oh) to ceil((i + 1) H / oh). When
  every window has one size (H % oh == 0) it is avg/max pooling with stride = kernel; otherwise a
  host-built window mask (a boolean buffer) selects rows, then columns, under WHERE, and they are
  summed or maxed: O(oh H W) work, separable; NaN and inf stay in their windows. Max takes W first, then H, so its
  gradient goes to the first maximum in row-major order, as torch's.
- interpolate works one spatial dim at a time (W, then H, then D). Source indices and weights are
  computed on the host exactly as torch's kernels compute them (in float32 for float32 and
  halves, float64 for float64), so they are torch's. Nearest with an integer scale is a view (an
  expand up, a split of the dim down). Otherwise a dim is multiplied by a host (in, out) matrix
  holding each output's taps and weights: one GEMM per dim, fast to run and to schedule. Weighted
  sums of shifted views, the other way to write it, keep NaN and inf in place but made the
  scheduler's index simplification take 4 s (scale 2) to 18 s (scale 4) for a 7x9 image; with the
  GEMM, unlike torch, a NaN or inf in the input reaches its whole line of outputs (0 * inf in the
  zero weights). Integer tensors (nearest) are picked by a one-hot WHERE and a sum instead.
- Linear modes compute in float32 for float16/bfloat16 and round once.
"""

from __future__ import annotations

import math

import numpy as np

import lazy
from lazy.graph import float32, float64
from lazy.nn.functional import _batched, _t, avg_pool2d, max_pool2d
from lazy.nn.modules import Module
from lazy.shape_ops import _take
from lazy.tensor import Tensor, where

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "upsample"]
FUNCTIONAL = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "upsample"]

# ---------------------------------------------------------------- adaptive pooling

def _out_sizes(op: str, x: Tensor, output_size) -> tuple[int, int]:
    o = (output_size, output_size) if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(o) != 2:
        raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    return tuple(x.shape[-2 + i] if v is None else int(v) for i, v in enumerate(o))


def _windows_mask(n: int, o: int) -> np.ndarray:
    """[o, n] bool: row i covers floor(i n / o) .. ceil((i + 1) n / o) - 1 (torch's start/end index)."""
    i = np.arange(o)
    start, end = (i * n) // o, -((-(i + 1) * n) // o)
    j = np.arange(n)
    return (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])


def _adaptive(op: str, input, output_size, reduce: str) -> Tensor:
    x, unbatched = _batched(op, _t(op, input))
    h, w = x.shape[-2:]
    oh, ow = _out_sizes(op, x, output_size)
    if oh <= 0 and h or ow <= 0 and w:
        raise RuntimeError(f"{op}: output_size must be positive, got {(oh, ow)}")
    if h % max(oh, 1) == 0 and w % max(ow, 1) == 0 and oh and ow and h and w:  # equal windows: plain pooling
        k = (h // oh, w // ow)
        y = avg_pool2d(x, k, k) if reduce == "avg" else max_pool2d(x, k, k)
    else:
        mh, mw = lazy.tensor(_windows_mask(h, oh)), lazy.tensor(_windows_mask(w, ow))
        if reduce == "avg":
            rows = where(mh.reshape(oh, h, 1), x.unsqueeze(-3), 0.0).sum(-2)  # [N, C, oh, W]
            total = where(mw, rows.unsqueeze(-2), 0.0).sum(-1)  # [N, C, oh, ow]
            count = mh.sum(-1).reshape(oh, 1) * mw.sum(-1).reshape(1, ow)
            y = (total / count.to(total.dtype)).to(x.dtype)
        else:  # W first, then H: the first maximum in row-major order gets the gradient, as in torch
            cols = where(mw, x.unsqueeze(-2), -math.inf).max(-1).values  # [N, C, H, ow]
            y = where(mh.reshape(oh, h, 1), cols.unsqueeze(-3), -math.inf).max(-2).values
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """torch.nn.functional.adaptive_avg_pool2d: any output size (None keeps the input's)."""
    return _adaptive("adaptive_avg_pool2d", input, output_size, "avg")


def adaptive_max_pool2d(input, output_size, return_indices: bool = False) -> Tensor:
    """torch.nn.functional.adaptive_max_pool2d (return_indices is not supported)."""
    if return_indices:
        raise NotImplementedError("adaptive_max_pool2d: return_indices=True is not supported")
    return _adaptive("adaptive_max_pool2d", input, output_size, "max")


# ---------------------------------------------------------------- interpolate: indices and weights

def _scale(n_in: int, n_out: int, sf, align_corners: bool, dt) -> np.floating:
    """torch's area_pixel_compute_scale in the kernel's compute type `dt`."""
    if align_corners:
        return dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)
    return dt(1.0 / sf) if sf is not None and sf > 0 else dt(n_in) / dt(n_out)


def _nearest_index(n_in: int, n_out: int, sf, exact: bool) -> np.ndarray:
    o = np.arange(n_out)
    if not exact and n_out == n_in:
        return o
    if not exact and n_out == 2 * n_in:
        return o >> 1
    s = _scale(n_in, n_out, sf, False, np.float32)
    src = (o + 0.5) * np.float64(s) if exact else o.astype(np.float32) * s
    return np.minimum(np.floor(src).astype(np.int64), n_in - 1)


def _linear_taps(n_in: int, n_out: int, sf, align_corners: bool, dt):
    """torch's taps and weights (i0, i1, lambda0, lambda1) for one linear dim, in its compute type."""
    o = np.arange(n_out)
    s = _scale(n_in, n_out, sf, align_corners, dt)
    raw = s * o.astype(dt) if align_corners else s * (o.astype(dt) + dt(0.5)) - dt(0.5)
    src = np.maximum(raw, dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.minimum(np.maximum(src - i0.astype(dt), dt(0)), dt(1)).astype(dt)
    return i0, i0 + (i0 < n_in - 1), (dt(1) - lam1).astype(dt), lam1


def _by_views(x: Tensor, d: int, idx: np.ndarray) -> Tensor | None:
    """x[idx] along dim d through views when the scale is an integer: an upscale by k that repeats
    each element k times is an expand; a downscale by q that reads x[q o + c] is a split of the
    dim. None otherwise."""
    n, m = x.shape[d], len(idx)
    sh = x.shape
    if m % n == 0 and np.array_equal(idx, np.repeat(np.arange(n), m // n)):
        return x.unsqueeze(d + 1).expand(*sh[:d + 1], m // n, *sh[d + 1:]).reshape(*sh[:d], m, *sh[d + 1:])
    q = n // m
    if n % m == 0 and q > 1 and 0 <= idx[0] < q and np.array_equal(idx, idx[0] + q * np.arange(m)):
        y = x.reshape(*sh[:d], m, q, *sh[d + 1:])
        return y.select(d + 1, int(idx[0]))
    return None


def _weighted_pick(x: Tensor, d: int, taps: list[np.ndarray], weights: list[np.ndarray] | None) -> Tensor:
    """sum_j weights[j][o] x[taps[j][o]] along dim d, as x @ W^T with a host (out, in) matrix W of
    the taps' weights: one GEMM. Integer and bool tensors (nearest) are picked with a one-hot WHERE
    and a sum instead."""
    n, m = x.shape[d], len(taps[0])
    if not x.dtype.is_float:
        return _take(x, d, taps[0])
    w = np.zeros((m, n), np.float64)
    for t, v in zip(taps, weights or [np.ones(m)]):
        np.add.at(w, (np.arange(m), t), v.astype(np.float64))
    if d == x.ndim - 1:  # the last dim: x @ W^T
        return x @ lazy.tensor(w.T.copy()).to(x.dtype)
    if d == x.ndim - 2:  # the next to last: W @ x, broadcast over the batch
        return lazy.tensor(w).to(x.dtype) @ x
    return (x.movedim(d, -1) @ lazy.tensor(w.T.copy()).to(x.dtype)).movedim(-1, d)


def _resample_dim(x: Tensor, d: int, n_out: int, sf, mode: str, align_corners: bool) -> Tensor:
    n_in = x.shape[d]
    if n_in <= 0 or n_out <= 0:
        raise RuntimeError(f"Input and output sizes should be greater than 0, but got input size {n_in} and output "
                           f"size {n_out} in spatial dim {d - 2}")
    if n_out == n_in:  # torch copies (nearest), or takes 1 x + 0 x of the same element (linear)
        return x
    if mode in ("nearest", "nearest-exact"):
        idx = _nearest_index(n_in, n_out, sf, mode == "nearest-exact")
        y = _by_views(x, d, idx)
        return y if y is not None else _weighted_pick(x, d, [idx], None)
    i0, i1, lam0, lam1 = _linear_taps(n_in, n_out, sf, align_corners, np.float64 if x.dtype is float64 else np.float32)
    return _weighted_pick(x, d, [i0, i1], [lam0, lam1])


_MODES = {"nearest": None, "nearest-exact": None, "area": None, "linear": 3, "bilinear": 4, "trilinear": 5}


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """torch.nn.functional.interpolate for nearest, nearest-exact, area and the linear modes on
    (N, C, d1[, d2[, d3]]) inputs; see the module docstring."""
    x = _t("interpolate", input)
    if mode not in _MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (expected one of {', '.join(_MODES)})")
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating modes: "
                             "linear | bilinear | bicubic | trilinear")
    elif align_corners is None:
        align_corners = False
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    dim = x.ndim - 2
    if dim < 1 or dim > 3 or (_MODES[mode] is not None and x.ndim != _MODES[mode]):
        need = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(x.ndim, "")
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {x.ndim}D) for the "
                                  f"modes: nearest | linear | bilinear | bicubic | trilinear | area | nearest-exact "
                                  f"(got {mode}){'; for ' + str(x.ndim) + 'D input use ' + need if need else ''}")
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    spatial = list(x.shape[2:])
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        out = list(size) if isinstance(size, (list, tuple)) else [size] * dim
        if len(out) != dim:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input with "
                             f"spatial dimensions of {spatial} and output size of {size}. Please provide input tensor "
                             "in (N, C, d1, d2, ...,dK) format and output size in (o1, o2, ...,oK) format.")
        scales = [None] * dim
    elif scale_factor is not None:
        scales = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * dim
        if len(scales) != dim:
            raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {spatial} and scale_factor of shape {scale_factor}. Please "
                             "provide input tensor in (N, C, d1, d2, ...,dK) format and scale_factor in (s1, s2, ...,sK) "
                             "format.")
        out = [math.floor(n * float(s)) for n, s in zip(spatial, scales)]
        if recompute_scale_factor or mode == "area":
            scales = [None] * dim
    else:
        raise ValueError("either size or scale_factor should be defined")
    out = [int(o) for o in out]
    if mode == "area":
        if dim != 2:
            raise NotImplementedError("interpolate: mode 'area' is supported for 4-D inputs only")
        return adaptive_avg_pool2d(x, out)
    y = x.to(float32) if mode not in ("nearest", "nearest-exact") and x.dtype.itemsize < 4 else x
    for i in reversed(range(dim)):  # the last dim first, as torch's separable kernels do
        y = _resample_dim(y, 2 + i, out[i], scales[i], mode, align_corners)
    return y.to(x.dtype)


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
    return interpolate(input, size, scale_factor, mode, align_corners)


# ---------------------------------------------------------------- modules

class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input):
        return adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Upsample(Module):
    """torch.nn.Upsample: interpolate with fixed size or scale_factor, mode and align_corners."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None):
        super().__init__()
        self.name = type(self).__name__
        self.size = size
        if isinstance(scale_factor, tuple):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        info = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
