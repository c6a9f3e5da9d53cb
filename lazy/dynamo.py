"""`torch.compile(model, backend="lazy")`: torch programs through lazy's scheduler and codegen.

In:  an FX graph of core aten ops from AOTAutograd (one for the forward, one for the backward),
     with its example inputs; at run time the graph's inputs: torch tensors, and Python ints
     where dynamo made a size symbolic (SymInt placeholders arrive as ints).
Out: a callable (boxed, as AOTAutograd asks) that runs the graph as lazy tensors and returns torch
     tensors: every output realized in ONE schedule (`lazy.realize(*outs)`), so a forward's
     activations and a backward's gradients fuse with each other.

How:
- `backend` is AOTAutograd with `compile_graph` as forward and backward compiler and torch's
  core-aten decompositions, less the ones lazy translates better whole (`KEEP`: softmax, layer
  norm, convolution backward... are one lazy function each, where the decomposition is many ops).
  The entry point `torch_dynamo_backends: lazy = lazy.dynamo:backend` (pyproject.toml) makes
  `backend="lazy"` work without importing lazy first.
- The graph is run node by node, with each node's value a lazy tensor (or a Python value): inputs
  are wrapped without a copy (`lazy.tensor(t)` is a BUFFER leaf over t's memory, strides kept);
  each call_function node looks its aten op up in `OPS`, a table from op (overload packet, or one
  overload where they differ) to a function of lazy tensors with the aten signature. Nothing runs
  while the table's functions build the graph; lazy's caches (schedule by graph structure, kernels
  on disk) make the second call of the same graph cost the trace only, and a size that changes
  becomes a kernel argument (lazy/dynamic.py), so dynamo's recompiles for new sizes build no kernels.
- An op not in the table (or one whose arguments its function does not take: it raises
  `Unsupported`) runs on torch: its lazy inputs are realized together and handed over as torch
  tensors, its outputs wrapped back. The graph is thereby partitioned at that node: what feeds
  it is one schedule, what follows it joins the final one. Each such op is reported once per
  process with its node count under LAZY_DEBUG=1 (`fallbacks` keeps the counts for tests).
- From the fourth call with the same input shapes, a graph with no torch node and no size among
  its inputs replays its recorded programs (`lazy.jit` over the translation): no FX node is
  visited and no lazy graph is built, which is what a small model's step spends most time on
  (the GPT block's step: 26 ms traced, 5 ms replayed). `LAZY_DYNAMO_REPLAY=0` traces every call.
- Backward ops whose forward lazy has as a function (convolution_backward, max-pool backward,
  attention backward) are the vector-Jacobian products of that function through lazy's autograd
  (`_vjp`), so they are the same graphs `loss.backward()` builds on lazy tensors.

Invariants
- Inputs are never written: graphs from AOTAutograd are functional (mutations are returned as
  outputs and applied by AOTAutograd's wrapper), and lazy never writes a buffer it did not allocate.
- An output the graph returns as its input is that torch tensor; every other output is a buffer
  lazy allocated for it (no copy afterwards), except an output that lazy's realize left as an
  input's buffer (clone of an input: the same value, so the same buffer in lazy), which is copied
  because torch's caller may write it in place.
- No module in codegen/ or scheduler/ imports this one; it imports torch._dynamo lazily (at the
  first compile), so `import lazy` does not pay for it.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

import lazy
from lazy.jit import JitWarning, jit
from lazy.runtime import _log, debug_level
from lazy.tensor import Tensor

aten = torch.ops.aten


class Unsupported(Exception):
    """A translation does not take these arguments: the node runs on torch instead."""


# ---------------------------------------------------------------- helpers

def _dims(dim, ndim: int) -> tuple[int, ...] | None:
    """aten's dim lists: None or [] mean every dim."""
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    return tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)


def _cast(x: Tensor, dtype) -> Tensor:
    return x if dtype is None else x.to(dtype)


def _creation_kw(kw: dict) -> dict:
    """dtype only: layout, pin_memory and memory_format do not apply, device is where the inputs are."""
    return {"dtype": kw["dtype"]} if kw.get("dtype") is not None else {}


def _like(kw: dict, x: Tensor) -> dict:
    return {"dtype": kw.get("dtype") or x.dtype}


def _vjp(fn: Callable, primals: list, grad_out: Tensor, mask) -> list:
    """The gradients of fn(*primals) for the primals where `mask` is true, given the output's
    cotangent: lazy's autograd on the forward function, as `loss.backward()` on lazy tensors."""
    from lazy.transforms import _fresh, grad_of

    xs = [_fresh(p, "vjp") if m else p for p, m in zip(primals, mask)]
    with lazy.enable_grad():
        out = fn(*xs)
        wanted = [x for x, m in zip(xs, mask) if m]
        gs = list(grad_of(out, wanted, grad_out, allow_unused=True)) if wanted else []
    it = iter(gs)
    res = []
    for x, m in zip(xs, mask):
        if not m:
            res.append(None)
            continue
        g = next(it)
        res.append(lazy.zeros_like(x) if g is None else g)
    return res


# ---------------------------------------------------------------- elementwise

def _method(name: str) -> Callable:
    def f(x, *args, **kw):
        return getattr(x, name)(*args, **kw)
    f.__name__ = name
    return f


def _add(a, b, alpha=1):
    return a + (b if alpha == 1 else b * alpha)


def _sub(a, b, alpha=1):
    return a - (b if alpha == 1 else b * alpha)


def _div(a, b, rounding_mode=None):
    if rounding_mode is None:
        return a / b
    if not isinstance(a, Tensor):
        a = lazy.full((), a, dtype=b.dtype if isinstance(b, Tensor) else None)
    return a.div(b, rounding_mode=rounding_mode)


def _pow(a, b):
    if not isinstance(a, Tensor):  # pow.Scalar: a number to a tensor power
        return lazy.full((), a, dtype=b.dtype if b.dtype.is_float else torch.get_default_dtype()) ** b
    return a ** b


def _where(c, a, b):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise Unsupported("where with two scalars")
    return lazy.where(c, a, b)


def _clamp(x, min=None, max=None):
    return x.clamp(min, max)


def _gelu_backward(g, x, approximate="none"):
    return _vjp(lambda t: t.gelu(approximate), [x], g, [True])[0]


def _threshold_backward(g, x, threshold):
    return lazy.where(x <= threshold, 0.0, g)


def _copy(a, b, non_blocking=False):
    return b.to(a.dtype).expand(a.shape) if tuple(b.shape) != tuple(a.shape) else b.to(a.dtype)


# ---------------------------------------------------------------- reductions

def _reduction(name: str) -> Callable:
    def f(x, dim=None, keepdim=False, *, dtype=None):
        d = _dims(dim, x.ndim)
        if dtype is not None:
            x = x.to(dtype)
        return getattr(x, name)(d, keepdim=keepdim) if d is not None else \
            (getattr(x, name)() if not keepdim else getattr(x, name)(tuple(range(x.ndim)), keepdim=True))
    return f


def _amax(x, dim=(), keepdim=False):
    d = _dims(dim, x.ndim)
    return x.amax(d if d is not None else tuple(range(x.ndim)), keepdim=keepdim)


def _amin(x, dim=(), keepdim=False):
    d = _dims(dim, x.ndim)
    return x.amin(d if d is not None else tuple(range(x.ndim)), keepdim=keepdim)


def _var(x, dim=None, *, correction=None, keepdim=False):
    d = _dims(dim, x.ndim)
    return x.var(d, keepdim=keepdim, correction=1 if correction is None else correction)


def _maxmin(name: str) -> Callable:
    def f(x, dim=None, keepdim=False):
        if dim is None:
            return getattr(x, name)()
        r = getattr(x, name)(dim, keepdim)
        return r.values, r.indices
    return f


def _any(x, dim=None, keepdim=False):
    d = _dims(dim, x.ndim)
    if d is None:
        return x.any() if not keepdim else x.any(tuple(range(x.ndim)), keepdim=True)
    r = x
    for a in sorted((a % x.ndim for a in d), reverse=True):
        r = r.any(a, keepdim=keepdim)
    return r


# ---------------------------------------------------------------- creation

def _full(size, value, **kw):
    return lazy.full(tuple(size), value, **_creation_kw(kw))


def _full_like(x, value, **kw):
    return lazy.full(tuple(x.shape), value, **_like(kw, x))


def _scalar_tensor(value, **kw):
    return lazy.full((), value, **_creation_kw(kw))


def _arange(start, end=None, step=1, **kw):
    return lazy.arange(start, end, step, **_creation_kw(kw))


def _rand_like(x, **kw):
    return lazy.rand(*x.shape, **_like(kw, x))


def _randn_like(x, **kw):
    return lazy.randn(*x.shape, **_like(kw, x))


def _rand(size, **kw):
    return lazy.rand(*size, **_creation_kw(kw))


def _randn(size, **kw):
    return lazy.randn(*size, **_creation_kw(kw))


# ---------------------------------------------------------------- views and structure

def _view(x, size):
    return x.reshape(tuple(size))


def _expand(x, size, implicit=False):
    return x.expand(*size)


def _squeeze(x, dim=None):
    if dim is None:
        return x.squeeze()
    for d in sorted((d % max(x.ndim, 1) for d in (dim if isinstance(dim, (list, tuple)) else (dim,))), reverse=True):
        if x.ndim and x.shape[d] == 1:
            x = x.squeeze(d)
    return x


def _slice(x, dim=0, start=None, end=None, step=1):
    n = x.shape[dim]
    s, e, _ = slice(start, end, step).indices(n)
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(s, max(e, s), step)
    return x[tuple(idx)]


def _select(x, dim, index):
    return x.select(dim, index)


def _split_with_sizes(x, sizes, dim=0):
    return list(x.split(list(sizes), dim))


def _split(x, size, dim=0):
    return list(x.split(size, dim))


def _cat(tensors, dim=0):
    ts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]  # torch's legacy empty tensors
    return lazy.cat(ts, dim) if len(ts) > 1 else ts[0]


def _constant_pad_nd(x, pad, value=0):
    return x.pad(tuple(pad), value=value)


def _slice_scatter(x, src, dim=0, start=None, end=None, step=1):
    n = x.shape[dim]
    s, e, _ = slice(start, end, step).indices(n)
    if step != 1:
        raise Unsupported("slice_scatter with a step")
    dim %= x.ndim
    pad = [0, 0] * (x.ndim - dim - 1) + [s, n - max(e, s)]
    placed = src.to(x.dtype).pad(tuple(pad))
    pos = lazy.arange(n).reshape((n,) + (1,) * (x.ndim - dim - 1))
    return lazy.where((pos >= s) & (pos < e), placed, x)


def _select_scatter(x, src, dim, index):
    return _slice_scatter(x, src.unsqueeze(dim), dim, index % x.shape[dim], index % x.shape[dim] + 1)


def _clone(x, memory_format=None):
    return x


def _to_copy(x, dtype=None, **kw):
    return _cast(x, dtype)


def _index(x, indices):
    return x[tuple(slice(None) if i is None else i for i in indices)]


def _index_put(x, indices, values, accumulate=False):
    return lazy.index_put(x, tuple(slice(None) if i is None else i for i in indices), values, accumulate)


def _gather(x, dim, index, sparse_grad=False):
    return lazy.gather(x, dim, index)


def _scatter(x, dim, index, src=None, value=None, reduce=None):
    if reduce is not None:
        raise Unsupported("scatter with reduce")
    return lazy.scatter(x, dim, index, src)


def _embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return lazy.nn.functional.embedding(indices, weight)


def _embedding_dense_backward(g, indices, num_weights, padding_idx, scale_grad_by_freq):
    if scale_grad_by_freq:
        raise Unsupported("embedding backward scaled by frequency")
    d = g.shape[-1]
    flat = indices.reshape(-1)
    rows = g.reshape(-1, d)
    if padding_idx >= 0:
        rows = lazy.where((flat != padding_idx).unsqueeze(-1), rows, 0.0)
    return lazy.zeros(num_weights, d, dtype=g.dtype).index_add(0, flat, rows)


# ---------------------------------------------------------------- matmul, convolution, pooling

def _addmm(bias, a, b, beta=1, alpha=1):
    y = a @ b
    if alpha != 1:
        y = y * alpha
    return y + (bias if beta == 1 else bias * beta)


def _conv(x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    F = lazy.nn.functional
    if x.ndim == 3:  # conv1d as a conv2d of height 1
        y = _conv(x.unsqueeze(2), w.unsqueeze(2), bias, [1, *stride], [0, *padding], [1, *dilation], transposed,
                  [0, *output_padding], groups)
        return y.squeeze(2)
    if x.ndim != 4:
        raise Unsupported(f"{x.ndim - 2}-d convolution")
    if transposed:
        return F.conv_transpose2d(x, w, bias, tuple(stride), tuple(padding), tuple(output_padding), groups,
                                  tuple(dilation))
    return F.conv2d(x, w, bias, tuple(stride), tuple(padding), tuple(dilation), groups)


def _conv_backward(g, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, mask):
    gx, gw = _vjp(lambda a, b: _conv(a, b, None, stride, padding, dilation, transposed, output_padding, groups),
                  [x, w], g, mask[:2])
    gb = g.sum([d for d in range(g.ndim) if d != 1]) if mask[2] else None
    return gx, gw, gb


def _max_pool2d_with_indices(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """The pooled values, and each one's flat index h * W + w in its input plane (torch's indices:
    the first maximum of the window in row-major order)."""
    F = lazy.nn.functional
    if x.ndim != 4:
        raise Unsupported("max_pool2d of a 3-d input")
    y = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    k, s, p, d, o, extra = F._pool_args("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    w = x.shape[-1]
    xp = x.pad((p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=-math.inf) if any(p) or any(extra) else x
    win = F._windows(xp, k, s, d)  # [N, C, OH, OW, KH, KW]
    j = win.reshape(*win.shape[:4], k[0] * k[1]).argmax(-1)
    kh, kw = j // k[1], j % k[1]
    oh = lazy.arange(o[0]).reshape(o[0], 1)
    ow = lazy.arange(o[1])
    ih = oh * s[0] - p[0] + kh * d[0]
    iw = ow * s[1] - p[1] + kw * d[1]
    return y, ih * w + iw


def _max_pool2d_backward(g, x, kernel_size, stride, padding, dilation, ceil_mode, indices):
    F = lazy.nn.functional
    return _vjp(lambda t: F.max_pool2d(t, kernel_size, stride, padding, dilation, ceil_mode), [x], g, [True])[0]


def _avg_pool2d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return lazy.nn.functional.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                         divisor_override)


def _avg_pool2d_backward(g, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _vjp(lambda t: _avg_pool2d(t, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                      divisor_override), [x], g, [True])[0]


def _adaptive_avg_pool2d(x, output_size):
    return lazy.nn.functional.adaptive_avg_pool2d(x, tuple(output_size))


# ---------------------------------------------------------------- normalization

def _batch_stats(x: Tensor, eps: float):
    axes = (0, *range(2, x.ndim))
    xf = x.float() if x.dtype.itemsize < 4 else x
    var, mean = lazy.var_mean(xf, axes, correction=0)
    return xf, mean, (var + eps).rsqrt(), var, math.prod(x.shape[a] for a in axes)


def _channels(v: Tensor, ndim: int) -> Tensor:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _affine(xhat: Tensor, w, b, like: Tensor) -> Tensor:
    if w is not None:
        xhat = xhat * _channels(w, like.ndim)
    if b is not None:
        xhat = xhat + _channels(b, like.ndim)
    return xhat.to(like.dtype)


def _bn_functional(x, w, b, running_mean, running_var, training, momentum, eps):
    if not training:
        out, m, r = _bn_no_training(x, w, b, running_mean, running_var, momentum, eps)
        return out, m, r, running_mean, running_var
    xf, mean, rstd, var, n = _batch_stats(x, eps)
    out = _affine((xf - _channels(mean, x.ndim)) * _channels(rstd, x.ndim), w, b, x)
    new_mean = running_mean * (1 - momentum) + mean * momentum if running_mean is not None else None
    new_var = running_var * (1 - momentum) + var * (momentum * n / max(n - 1, 1)) if running_var is not None else None
    return out, mean, rstd, new_mean, new_var


def _bn_legit(x, w, b, running_mean, running_var, training, momentum, eps):
    out, mean, rstd, _, _ = _bn_functional(x, w, b, running_mean, running_var, training, momentum, eps)
    return out, mean, rstd


def _bn_no_stats(x, w, b, training, momentum, eps):
    out, mean, rstd, _, _ = _bn_functional(x, w, b, None, None, True, momentum, eps)
    return out, mean, rstd


def _bn_no_training(x, w, b, running_mean, running_var, momentum, eps):
    rstd = (running_var + eps).rsqrt()
    out = _affine((x - _channels(running_mean, x.ndim)) * _channels(rstd, x.ndim), w, b, x)
    empty = lazy.zeros(0, dtype=x.dtype)
    return out, empty, empty


def _native_batch_norm(x, w, b, running_mean, running_var, training, momentum, eps):
    return _bn_legit(x, w, b, running_mean, running_var, training, momentum, eps)


def _layer_norm(x, normalized_shape, w, b, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = x.float() if x.dtype.itemsize < 4 else x
    var, mean = lazy.var_mean(xf, axes, correction=0, keepdim=True)
    rstd = (var + eps).rsqrt()
    y = (xf - mean) * rstd
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.to(x.dtype), mean, rstd


def _group_norm(x, w, b, n, c, hw, groups, eps):
    xg = x.reshape(n, groups, -1)
    xf = xg.float() if x.dtype.itemsize < 4 else xg
    var, mean = lazy.var_mean(xf, -1, correction=0, keepdim=True)
    rstd = (var + eps).rsqrt()
    y = ((xf - mean) * rstd).reshape(x.shape)
    return _affine(y, w, b, x), mean.reshape(n, groups), rstd.reshape(n, groups)


def _native_dropout(x, p, train):
    if not train or p == 0:
        return x, lazy.ones(*x.shape, dtype=lazy.bool)
    keep = lazy.rand(*x.shape) >= p
    return lazy.where(keep, x * (1.0 / (1.0 - p)), 0.0), keep


def _native_dropout_backward(g, mask, scale):
    return lazy.where(mask, g * scale, 0.0)


def _activation(name: str) -> Callable:
    def f(x, *args):
        return getattr(lazy.nn.functional, name)(x, *args)
    return f


def _activation_backward(name: str, nargs: int) -> Callable:
    """aten's `<name>_backward(grad, self, *args)`: the vjp of lazy's function (extra trailing
    flags such as leaky_relu's self_is_result are dropped)."""
    def f(g, x, *args):
        return _vjp(lambda t: getattr(lazy.nn.functional, name)(t, *args[:nargs]), [x], g, [True])[0]
    return f


def _elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return lazy.where(x > 0, x * scale, (x * input_scale).expm1() * (alpha * scale))


def _tanh_backward(g, y):
    return g * (1 - y * y)


def _sigmoid_backward(g, y):
    return g * y * (1 - y)


# ---------------------------------------------------------------- softmax, losses, attention

def _softmax(x, dim, half_to_float=False):
    return x.softmax(dim, dtype=torch.float32 if half_to_float else None)


def _log_softmax(x, dim, half_to_float=False):
    return x.log_softmax(dim, dtype=torch.float32 if half_to_float else None)


def _softmax_backward(g, y, dim, input_dtype):
    return (y * (g - (g * y).sum(dim, keepdim=True))).to(input_dtype)


def _log_softmax_backward(g, y, dim, input_dtype):
    return (g - y.exp() * g.sum(dim, keepdim=True)).to(input_dtype)


_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _nll_loss(x, target, weight, reduction, ignore_index):
    F = lazy.nn.functional
    out = F.nll_loss(x, target, weight, ignore_index=ignore_index, reduction=_REDUCTIONS[reduction])
    keep = target != ignore_index
    if weight is None:
        total = keep.sum().to(x.dtype)
    else:
        total = lazy.where(keep, weight[lazy.where(keep, target, 0)], 0.0).sum().to(x.dtype)
    return out, total


def _nll_loss_backward(g, x, target, weight, reduction, ignore_index, total_weight):
    F = lazy.nn.functional
    return _vjp(lambda t: F.nll_loss(t, target, weight, ignore_index=ignore_index, reduction=_REDUCTIONS[reduction]),
                [x], g, [True])[0]


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if dropout_p:
        raise Unsupported("attention with dropout")
    return lazy.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask, 0.0, is_causal, scale=scale)


def _sdpa_lse(q, k, scale, is_causal, attn_mask):
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * s
    if is_causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill((lazy.arange(L).unsqueeze(-1) >= lazy.arange(S)).logical_not(), -math.inf)
    elif attn_mask is not None:
        scores = scores.masked_fill(attn_mask.logical_not(), -math.inf) if attn_mask.dtype is lazy.bool \
            else scores + attn_mask
    return scores.logsumexp(-1)


def _flash_cpu(q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    return _sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale), _sdpa_lse(q, k, scale, is_causal, attn_mask)


def _flash_cpu_backward(g, q, k, v, out, lse, dropout_p, is_causal, *, attn_mask=None, scale=None):
    return tuple(_vjp(lambda a, b, c: _sdpa(a, b, c, attn_mask, dropout_p, is_causal, scale), [q, k, v], g,
                      [True] * 3))


# ---------------------------------------------------------------- the table

def _m(*names: str) -> dict:
    return {getattr(aten, n): _method(n) for n in names}


OPS: dict[Any, Callable] = {
    **_m("abs", "neg", "exp", "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
         "tan", "tanh", "sigmoid", "relu", "erf", "sign", "floor", "ceil", "trunc", "round", "reciprocal",
         "isnan", "isinf", "isfinite", "logical_not", "bitwise_not", "asin", "acos", "atan", "sinh", "cosh",
         "asinh", "acosh", "atanh", "silu", "logical_and", "logical_or", "logical_xor", "bitwise_and",
         "bitwise_or", "bitwise_xor", "maximum", "minimum", "fmod", "remainder", "atan2", "clamp_min",
         "clamp_max", "hypot", "logit", "gelu", "masked_fill", "lerp", "flip", "permute", "unsqueeze", "t",
         "transpose", "tril", "triu", "roll", "cumsum", "cumprod", "index_select", "scatter_add", "index_add",
         "diagonal", "mm", "bmm", "matmul", "prod", "logsumexp", "argmax", "argmin", "sort", "topk", "where"),
    aten.add: _add, aten.sub: _sub, aten.mul: operator.mul, aten.div: _div, aten.true_divide: _div,
    aten.pow: _pow, aten.where: _where, aten.clamp: _clamp, aten.copy: _copy,
    aten.eq: operator.eq, aten.ne: operator.ne, aten.lt: operator.lt, aten.le: operator.le,
    aten.gt: operator.gt, aten.ge: operator.ge,
    aten.gelu_backward: _gelu_backward, aten.threshold_backward: _threshold_backward,
    aten.sum: _reduction("sum"), aten.mean: _reduction("mean"), aten.amax: _amax, aten.amin: _amin,
    aten.var: _var, aten.max.dim: _maxmin("max"), aten.min.dim: _maxmin("min"), aten.max.default: _maxmin("max"),
    aten.min.default: _maxmin("min"), aten.any: _any,
    aten.full: _full, aten.full_like: _full_like, aten.scalar_tensor: _scalar_tensor, aten.arange: _arange,
    aten.zeros: lambda size, **kw: _full(size, 0, **kw), aten.ones: lambda size, **kw: _full(size, 1, **kw),
    aten.empty: lambda size, **kw: _full(size, 0, **kw),
    aten.zeros_like: lambda x, **kw: _full_like(x, 0, **kw), aten.ones_like: lambda x, **kw: _full_like(x, 1, **kw),
    aten.empty_like: lambda x, **kw: _full_like(x, 0, **kw),
    aten.new_zeros: lambda x, size, **kw: lazy.zeros(*size, **_like(kw, x)),
    aten.new_ones: lambda x, size, **kw: lazy.ones(*size, **_like(kw, x)),
    aten.new_empty: lambda x, size, **kw: lazy.zeros(*size, **_like(kw, x)),
    aten.new_full: lambda x, size, v, **kw: lazy.full(tuple(size), v, **_like(kw, x)),
    aten.rand_like: _rand_like, aten.randn_like: _randn_like, aten.rand: _rand, aten.randn: _randn,
    aten.view: _view, aten._unsafe_view: _view, aten.reshape: _view, aten.expand: _expand, aten.squeeze: _squeeze,
    aten.slice: _slice, aten.select: _select, aten.split_with_sizes: _split_with_sizes, aten.split: _split,
    aten.cat: _cat, aten.stack: lambda ts, dim=0: lazy.stack(ts, dim), aten.constant_pad_nd: _constant_pad_nd,
    aten.slice_scatter: _slice_scatter, aten.select_scatter: _select_scatter,
    aten.alias: _clone, aten.clone: _clone, aten.detach: _clone, aten.lift_fresh_copy: _clone,
    aten._to_copy: _to_copy, aten.index: _index, aten.index_put: _index_put, aten.gather: _gather,
    aten.scatter: _scatter, aten.embedding: _embedding, aten.embedding_dense_backward: _embedding_dense_backward,
    aten.addmm: _addmm, aten.convolution: _conv, aten.convolution_backward: _conv_backward,
    aten.max_pool2d_with_indices: _max_pool2d_with_indices,
    aten.max_pool2d_with_indices_backward: _max_pool2d_backward,
    aten.avg_pool2d: _avg_pool2d, aten.avg_pool2d_backward: _avg_pool2d_backward,
    aten._adaptive_avg_pool2d: _adaptive_avg_pool2d,
    aten._native_batch_norm_legit_functional: _bn_functional, aten._native_batch_norm_legit.default: _bn_legit,
    aten._native_batch_norm_legit.no_stats: _bn_no_stats,
    aten._native_batch_norm_legit_no_training: _bn_no_training, aten.native_batch_norm: _native_batch_norm,
    aten.native_layer_norm: _layer_norm,
    aten.native_group_norm: _group_norm,  # (its backward: torch's core-aten decomposition)
    aten.native_dropout: _native_dropout, aten.native_dropout_backward: _native_dropout_backward,
    aten.leaky_relu: _activation("leaky_relu"), aten.leaky_relu_backward: _activation_backward("leaky_relu", 1),
    aten.elu: _elu, aten.softplus: _activation("softplus"),
    aten.softplus_backward: _activation_backward("softplus", 2), aten.hardtanh: _activation("hardtanh"),
    aten.hardtanh_backward: _activation_backward("hardtanh", 2), aten.hardswish: _activation("hardswish"),
    aten.hardswish_backward: _activation_backward("hardswish", 0), aten.hardsigmoid: _activation("hardsigmoid"),
    aten.hardsigmoid_backward: _activation_backward("hardsigmoid", 0),
    aten.silu_backward: _activation_backward("silu", 0), aten.mish: _activation("mish"),
    aten.tanh_backward: _tanh_backward, aten.sigmoid_backward: _sigmoid_backward,
    aten._softmax: _softmax, aten._log_softmax: _log_softmax,
    aten._softmax_backward_data: _softmax_backward, aten._log_softmax_backward_data: _log_softmax_backward,
    aten.nll_loss_forward: _nll_loss, aten.nll_loss_backward: _nll_loss_backward,
    aten.scaled_dot_product_attention: _sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward,
    aten.sym_size: lambda x, dim=None: x.shape[dim] if dim is not None else tuple(x.shape),
    aten.sym_numel: lambda x: x.numel(), aten.sym_stride: lambda x, dim: x.stride(dim),
}

# core-aten decompositions lazy does not take: its own function for the op is one fused piece of
# graph (softmax and layer norm one kernel each) or a gradient through its own autograd
KEEP = (aten._softmax, aten._log_softmax, aten._softmax_backward_data, aten._log_softmax_backward_data,
        aten.native_layer_norm, aten.gelu, aten.gelu_backward, aten.embedding_dense_backward,
        aten.max_pool2d_with_indices_backward, aten.avg_pool2d_backward, aten.nll_loss_forward,
        aten.nll_loss_backward, aten.addmm, aten.threshold_backward, aten.var)


def lookup(target) -> Callable | None:
    """The translation of an FX call target: an overload's own entry, else its packet's; plain
    Python functions on sizes (operator.mul on SymInts, getitem of a tuple) run as themselves."""
    if isinstance(target, torch._ops.OpOverload):
        return OPS.get(target) or OPS.get(target.overloadpacket)
    if isinstance(target, torch._ops.OpOverloadPacket):
        return OPS.get(target)
    if getattr(target, "__module__", None) in ("_operator", "operator", "math", "builtins") or \
            target in (operator.getitem, math.floor, math.ceil):
        return target
    if callable(target) and getattr(target, "__module__", "").startswith("torch.fx.experimental"):
        return target  # sym_sum, sym_min...: functions of ints
    return None


# ---------------------------------------------------------------- running a graph

REPLAY = os.environ.get("LAZY_DYNAMO_REPLAY", "1") != "0"
fallbacks: Counter = Counter()  # aten op name -> how many graph nodes ran on torch (this process)
stats: Counter = Counter()  # "graphs" compiled, "calls" of them, "replays" among the calls (this process)
_reported: set[str] = set()


def _report(name: str, count: int, why: str = "") -> None:
    fallbacks[name] += count
    if name not in _reported:
        _reported.add(name)
        if debug_level() >= 1:
            _log(f"lazy.dynamo: {name} runs on torch ({count} node(s) in this graph{': ' + why if why else ''})")


def _tree_map(fn, x):
    if isinstance(x, (list, tuple)):
        return type(x)(_tree_map(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _tree_map(fn, v) for k, v in x.items()}
    return fn(x)


def _leaves(x, out: list) -> list:
    if isinstance(x, (list, tuple)):
        for v in x:
            _leaves(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _leaves(v, out)
    else:
        out.append(x)
    return out


def _to_torch(x):
    return x.torch() if isinstance(x, Tensor) else x


def _to_lazy(x):
    return lazy.tensor(x) if isinstance(x, torch.Tensor) else x


def _on_torch(target, args, kwargs):
    ts = [t for t in _leaves((args, kwargs), []) if isinstance(t, Tensor)]
    if ts:
        lazy.realize(*ts)
    out = target(*_tree_map(_to_torch, args), **_tree_map(_to_torch, kwargs))
    return _tree_map(_to_lazy, out)


class Compiled:
    """One aten graph as a function of its argument list (AOTAutograd's boxed calling convention:
    `compile_graph` marks it so; the list is emptied so inputs can be freed during the call)."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.plan: list[tuple] = []  # (node, function, on torch)
        missing: Counter = Counter()
        for n in gm.graph.nodes:
            if n.op == "call_function":
                fn = lookup(n.target)
                if fn is None:
                    missing[str(n.target)] += 1
                self.plan.append((n, fn or n.target, fn is None))
            elif n.op == "get_attr":
                self.plan.append((n, None, True))
            elif n.op not in ("placeholder", "output"):
                raise NotImplementedError(f"lazy.dynamo: FX node kind {n.op} ({n.target})")
        for name, c in missing.items():
            _report(name, c)
        self.placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.output = next(n for n in gm.graph.nodes if n.op == "output")
        # a graph lazy takes whole replays its recorded programs without running this Python
        # (lazy.jit: the third call on, per input shapes); one with a torch node runs as traced
        self.replay = jit(self.trace_args) if not missing and REPLAY else None

    def trace_args(self, *inputs):
        self.traced = True
        return self.trace(list(inputs))

    def __call__(self, args: list) -> list:
        inputs = [_to_lazy(a) for a in args]
        held = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor) and a.numel()}
        args.clear()  # boxed: the caller's list no longer holds the inputs (AOTAutograd frees them)
        out = None
        if self.replay is not None and all(isinstance(t, Tensor) for t in inputs):
            self.traced = False
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", JitWarning)
                out = self.replay(*inputs)
            stats["replays"] += not self.traced
            if any(issubclass(w.category, JitWarning) for w in caught):
                self.replay = None  # it cannot replay (it ran as is): trace from now on
        if out is None:
            out = self.trace(inputs)
        ts = [t for t in _leaves(out, []) if isinstance(t, Tensor)]
        if ts:
            lazy.realize(*ts)  # every output in one schedule
        out = list(_tree_map(_to_torch, out))
        for i, (o, a) in enumerate(zip(out, self.output.args[0])):
            # clone(x) of an input is that input's buffer in lazy: a new tensor for torch, unless the
            # graph returns the input itself
            if isinstance(o, torch.Tensor) and o.numel() and o.untyped_storage().data_ptr() in held \
                    and not (isinstance(a, torch.fx.Node) and a.op == "placeholder"):
                out[i] = o.clone()
        return out

    def trace(self, inputs: list) -> list:
        """The graph's outputs as lazy tensors (and Python values) over `inputs`."""
        env: dict = dict(zip(self.placeholders, inputs))

        def val(a):
            return _tree_map(lambda v: env[v] if isinstance(v, torch.fx.Node) else v, a)

        for i, (n, fn, on_torch) in enumerate(self.plan):
            if n.op == "get_attr":
                env[n] = _to_lazy(getattr(self.gm, n.target))
                continue
            a, kw = val(n.args), val(n.kwargs)
            if not on_torch:
                try:
                    env[n] = fn(*a, **kw)
                    continue
                except Unsupported as e:
                    self.plan[i] = (n, n.target, True)
                    self.replay = None
                    _report(str(n.target), 1, str(e))
            env[n] = _on_torch(n.target, a, kw)
        out = list(val(self.output.args[0]))
        if self.replay is not None and not all(t is None or isinstance(t, Tensor) for t in out):
            self.replay = None  # a size among the outputs: lazy.jit replays tensors only
        return out


def compile_graph(gm: torch.fx.GraphModule, example_inputs) -> Compiled:
    """AOTAutograd's forward and backward compiler."""
    if debug_level() >= 4:
        _log(f"lazy.dynamo: aten graph\n{gm.graph}")
    compiled = Compiled(gm)
    stats["graphs"] += 1

    def run(args: list) -> list:
        stats["calls"] += 1
        return compiled(args)
    run._boxed_call = True
    run.compiled = compiled
    return run


def decompositions() -> dict:
    from torch._decomp import core_aten_decompositions

    keep = set(KEEP)
    return {op: fn for op, fn in core_aten_decompositions().items()
            if op not in keep and op.overloadpacket not in keep}


_backend = None


def backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
    """The `torch.compile` backend: `torch.compile(model, backend="lazy")` (by its entry point) or
    `backend=lazy.dynamo.backend`."""
    global _backend
    if _backend is None:
        from torch._dynamo.backends.common import aot_autograd

        _backend = aot_autograd(fw_compiler=compile_graph, bw_compiler=compile_graph,
                                decompositions=decompositions())
    return _backend(gm, example_inputs, **kwargs)
