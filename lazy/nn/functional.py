"""torch.nn.functional for lazy tensors: layers, activations and losses composed from Tensor ops.

In:  lazy tensors (torch tensors and numpy arrays are wrapped); torch's names, argument names
     and defaults.
Out: lazy tensors (nothing runs until realized). Every function is a composition of the
     primitive ops, so autograd differentiates it for free and the scheduler fuses it.

Choices, and why
- Index lookups (cross_entropy/nll_loss targets, embedding) compare the indices with an IOTA
  row (a one-hot mask built in-kernel, never in memory) and reduce: the IR has no gather. This
  costs O(N*C) instead of O(N), fine for the class counts and vocabularies we train here.
- Pooling and conv2d cut windows out of the input with movement ops only (one shifted view
  per kernel offset, stacked: the "im2col" matrix is an index map, not a copy), then reduce.
- Dropout masks come from `lazy.rand` (eager, host generator, see lazy.manual_seed).
- Max pooling shares the gradient evenly between tied maxima (like `amax`), where torch gives it
  to the first one; ties need equal floats, so this only matters for constant windows.
"""

from __future__ import annotations

import math

import lazy
from lazy.amp import FP32, LOWER, autocast_op
from lazy.graph import Op
from lazy.tensor import Tensor, _operand, where

__all__ = [
    "avg_pool2d", "binary_cross_entropy_with_logits", "conv1d", "conv2d", "cross_entropy", "dropout", "elu", "embedding",
    "gelu", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax", "max_pool2d", "mse_loss", "nll_loss",
    "one_hot", "pad", "relu", "rms_norm", "scaled_dot_product_attention", "sigmoid", "silu", "softmax",
    "softplus", "tanh",
]


def _t(op: str, x) -> Tensor:
    v = _operand(op, x)
    if not isinstance(v, Tensor):
        raise TypeError(f"{op}: expected a tensor, got {type(x).__name__}")
    return v


def _pair(op: str, v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(a, int) for a in v):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return v


# ---------------------------------------------------------------- activations

def relu(input, inplace: bool = False) -> Tensor:
    return _t("relu", input).relu()


def gelu(input, approximate: str = "none") -> Tensor:
    return _t("gelu", input).gelu(approximate=approximate)


def silu(input, inplace: bool = False) -> Tensor:
    return _t("silu", input).silu()


def tanh(input) -> Tensor:
    return _t("tanh", input).tanh()


def sigmoid(input) -> Tensor:
    return _t("sigmoid", input).sigmoid()


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    x = _t("leaky_relu", input)
    return where(x > 0, x, x * negative_slope)


def elu(input, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    x = _t("elu", input)
    return where(x > 0, x, x.expm1() * alpha)


def softplus(input, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, linear above `threshold` like torch."""
    x = _t("softplus", input)
    bx = x * beta
    return where(bx > threshold, x, (bx.exp().log1p()) / beta)


def _inside(x: Tensor, lo, hi) -> Tensor:
    """x clamped to [lo, hi] with torch's hardtanh gradient: 1 strictly inside, 0 at and beyond the
    bounds and at NaN (clamp's own gradient is 1 at the bounds)."""
    return where((x > lo) & (x < hi), x, x.clamp(lo, hi).detach())


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val cannot be greater than max_val, got {min_val} > {max_val}")
    return _inside(_t("hardtanh", input), min_val, max_val)


def relu6(input, inplace: bool = False) -> Tensor:
    return _inside(_t("relu6", input), 0.0, 6.0)


def hardsigmoid(input, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6: gradient 1/6 strictly inside (-3, 3), like torch."""
    x = _t("hardsigmoid", input)
    return _inside(x + 3.0, 0.0, 6.0) / 6.0


def hardswish(input, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6, with torch's gradient: 0 up to -3, x/3 + 1/2 inside, 1 from 3 up."""
    x = _t("hardswish", input)
    return where(x <= -3.0, x * 0.0, where(x < 3.0, x * (x + 3.0) / 6.0, x))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def selu(input, inplace: bool = False) -> Tensor:
    x = _t("selu", input)
    return where(x > 0, x, x.expm1() * _SELU_ALPHA) * _SELU_SCALE


def celu(input, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    if alpha == 0:
        raise ValueError("celu: alpha cannot be 0 (it divides x)")
    x = _t("celu", input)
    return where(x > 0, x, (x / alpha).expm1() * alpha)


def softsign(input) -> Tensor:
    x = _t("softsign", input)
    return x / (x.abs() + 1.0)


def logsigmoid(input) -> Tensor:
    """log(sigmoid(x)): x - log1p(e^x) below 0, -log1p(e^-x) from 0 up, so nothing overflows; each
    side runs on 0 where it is not used (its gradient stays finite), and the slope at 0 is 1/2."""
    x = _t("logsigmoid", input)
    neg = x < 0
    xn, xp = where(neg, x, 0.0), where(neg, 0.0, x)
    return where(neg, xn - xn.exp().log1p(), -(-xp).exp().log1p())


def mish(input, inplace: bool = False) -> Tensor:
    x = _t("mish", input)
    return x * softplus(x).tanh()


def tanhshrink(input) -> Tensor:
    x = _t("tanhshrink", input)
    return x - x.tanh()


def threshold(input, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """x where x > threshold, else value."""
    x = _t("threshold", input)
    return where(x > threshold, x, x._const(value))


def glu(input, dim: int = -1) -> Tensor:
    """a * sigmoid(b), a and b the two halves of `dim`."""
    x = _t("glu", input)
    if x.ndim == 0:
        raise RuntimeError("glu: does not support scalars (0-d tensors)")
    n = x.shape[dim]
    if n % 2:
        raise RuntimeError(f"glu: halving dimension must be even, but dimension {dim} is size {n}")
    a, b = x.chunk(2, dim)
    return a * b.sigmoid()


def softmin(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    x = _t("softmin", input)
    return (-x).softmax(_implicit_dim("softmin", dim, x), dtype=dtype)


def normalize(input, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_p over dim, eps)."""
    x = _t("normalize", input)
    return x / x.norm(p, dim, keepdim=True).clamp(min=eps)


def softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    x = _t("softmax", input)
    return x.softmax(_implicit_dim("softmax", dim, x), dtype=dtype)


def log_softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    x = _t("log_softmax", input)
    return x.log_softmax(_implicit_dim("log_softmax", dim, x), dtype=dtype)


def _implicit_dim(op: str, dim, x: Tensor) -> int:
    if dim is not None:
        return dim
    # torch's legacy rule (with a deprecation warning there): dim 0 for 0-, 1- and 3-d inputs, else 1
    return 0 if x.ndim in (0, 1, 3) else 1


# ---------------------------------------------------------------- layers

@autocast_op(LOWER, "input", "weight", "bias")
def linear(input, weight, bias=None) -> Tensor:
    """input @ weight.T + bias, weight of shape (out_features, in_features)."""
    x, w = _t("linear", input), _t("linear", weight)
    y = x @ w.t() if w.ndim == 2 else x @ w
    return y if bias is None else y + bias


def embedding(input, weight, padding_idx: int | None = None, max_norm=None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """weight[input]: a gather of whole rows (lazy/indexed.py); the padding row receives no gradient."""
    idx, w = _t("embedding", input), _t("embedding", weight)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"embedding: expected integer indices (int32 or int64), got {idx.dtype}")
    if w.ndim != 2:
        raise RuntimeError(f"embedding: weight must be 2-d (num_embeddings, embedding_dim), got shape {tuple(w.shape)}")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    n = w.shape[0]
    out = w.index_select(0, idx.reshape(-1).to(lazy.int64)).reshape(*idx.shape, w.shape[1])
    if padding_idx is not None:  # the same values, through a detach where the padding row was read
        pad = padding_idx + n if padding_idx < 0 else padding_idx
        out = where((idx == pad).unsqueeze(-1), out.detach(), out)
    return out


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    x = _t("layer_norm", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise RuntimeError(f"layer_norm: input of shape {tuple(x.shape)} does not end with normalized_shape "
                           f"{shape}")
    dims = tuple(range(x.ndim - len(shape), x.ndim))
    mean = x.mean(dims, keepdim=True)
    xc = x - mean
    y = xc * ((xc * xc).mean(dims, keepdim=True) + eps).rsqrt()
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def rms_norm(input, normalized_shape, weight=None, eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x**2) + eps) * weight, like torch: float16 and bfloat16 inputs computed in
    float32 and rounded once; eps defaults to the machine epsilon of the type computed in."""
    x = _t("rms_norm", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise RuntimeError(f"rms_norm: input of shape {tuple(x.shape)} does not end with normalized_shape {shape}")
    half = x.dtype in (lazy.float16, lazy.bfloat16)
    xc = x.float() if half else x
    if eps is None:
        import torch

        from lazy.dtypes import to_torch
        eps = torch.finfo(to_torch(xc.dtype)).eps
    dims = tuple(range(x.ndim - len(shape), x.ndim))
    y = xc * ((xc * xc).mean(dims, keepdim=True) + eps).rsqrt()
    if weight is not None:
        y = y * weight
    return y.to(x.dtype) if half else y


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p). The mask is torch's:
    `empty_like(input).bernoulli_(1 - p)` on lazy's generator, as torch's CPU dropout draws it, so a
    seed gives torch's mask and a model with dropout trains as it does on torch."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    x = _t("dropout", input)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    noise = lazy.empty(tuple(x.shape), dtype=x.dtype if x.dtype.is_float else None, device=x.device)
    out = where(noise.bernoulli_(1.0 - p) != 0, x * (1.0 / (1.0 - p)), 0.0)
    if inplace:
        return x.copy_(out)
    return out


def pad(input, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    return _t("pad", input).pad(pad, 0 if value is None else value)


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    t = _t("one_hot", tensor)
    if t.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot: expected an integer tensor, got {t.dtype}")
    if num_classes < 0:  # needs the data, like torch (which also reads the max)
        num_classes = int(t.max().item()) + 1
    return (t.unsqueeze(-1) == lazy.arange(num_classes)).long()


# ---------------------------------------------------------------- windows: conv and pooling

def _windows(x: Tensor, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> Tensor:
    """[..., H, W] -> [..., OH, OW, KH, KW] with out[.., i, j, a, b] = x[.., i*sH + a*dH, j*sW + b*dW]:
    two WINDOW views (lazy/graph.py), whose index maps stay affine (no // or %), so a pooling or a
    convolution and their gradients schedule in milliseconds."""
    n = x.ndim
    y = x._mv(Op.WINDOW, (n - 2, k[0], s[0], d[0]))  # [..., OH, KH, W]
    y = y._mv(Op.WINDOW, (n, k[1], s[1], d[1]))  # [..., OH, KH, OW, KW]
    return y.permute(*range(n - 2), n - 2, n, n - 1, n + 1)


def _out_size(op: str, n: int, k: int, s: int, d: int, p: int, ceil_mode: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise RuntimeError(f"{op}: kernel size {k} (dilation {d}) is larger than the padded input size {n + 2 * p}")
    if not ceil_mode:
        return span // s + 1
    o = -(-span // s) + 1
    return o - 1 if (o - 1) * s >= n + p else o  # the last window must start inside the input or left pad


def _batched(op: str, x: Tensor) -> tuple[Tensor, bool]:
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim != 4:
        raise RuntimeError(f"{op}: expected a 3-d (C, H, W) or 4-d (N, C, H, W) input, got shape {tuple(x.shape)}")
    return x, False


@autocast_op(LOWER, "input", "weight", "bias")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """Cross-correlation like torch, as a GEMM: the windows of the padded input (views) as rows of
    an im2col matrix times the weight (see below); the gradients are GEMMs too, and the input's sums
    the windows' rows back where they were read (lazy/autograd.py, WINDOW)."""
    x, unbatched = _batched("conv2d", _t("conv2d", input))
    w = _t("conv2d", weight)
    s, d = _pair("conv2d", stride, "stride"), _pair("conv2d", dilation, "dilation")
    oc, icg, kh, kw = w.shape
    n, c = x.shape[:2]
    if c != icg * groups or oc % groups:
        raise RuntimeError(f"conv2d: input with {c} channels, weight of shape {tuple(w.shape)} and groups={groups} "
                           f"do not match (expected input channels = {icg} * {groups}, out channels divisible by "
                           "groups)")
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            if s != (1, 1):
                raise RuntimeError("conv2d: padding='same' is not supported for strided convolutions")
            tot = (d[0] * (kh - 1), d[1] * (kw - 1))
            pads = ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))
        else:
            raise ValueError(f"conv2d: padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        p = _pair("conv2d", padding, "padding")
        pads = ((p[0], p[0]), (p[1], p[1]))
    if any(a or b for a, b in pads):
        x = x.pad((pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    win = _windows(x, (kh, kw), s, d)  # [N, C, OH, OW, KH, KW]
    oh, ow = win.shape[2], win.shape[3]
    g, ocg, m = groups, oc // groups, n * oh * ow
    # a GEMM over the im2col matrix [N*OH*OW, C/g*KH*KW] (the scheduler writes it from the windows,
    # padding and any elementwise op before it fused in) and the weight, per group; the bias is the
    # GEMM's epilogue; the result [N*OH*OW, OC] is NCHW through a permute (a view)
    cols = win.reshape(n, g, icg, oh, ow, kh, kw).permute(1, 0, 3, 4, 2, 5, 6).reshape(g, m, icg * kh * kw)
    wg = w.reshape(g, ocg, icg * kh * kw).transpose(1, 2)  # [g, C/g*KH*KW, OC/g]
    y = (cols @ wg).permute(1, 0, 2).reshape(m, oc)
    if bias is not None:
        y = y + _t("conv2d", bias)
    y = y.reshape(n, oh, ow, oc).permute(0, 3, 1, 2)
    return y.squeeze(0) if unbatched else y


def _single(op: str, v, name: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    v = tuple(v)
    if len(v) != 1 or not isinstance(v[0], int):
        raise ValueError(f"{op}: {name} must be an int or a 1-tuple of ints, got {v!r}")
    return v[0]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """torch's conv1d: conv2d over a height of 1, so the same im2col GEMM and the same gradients."""
    x, w = _t("conv1d", input), _t("conv1d", weight)
    if x.ndim not in (2, 3) or w.ndim != 3:
        raise RuntimeError(f"conv1d: expected a 2-d (unbatched) or 3-d input and a 3-d weight, got shapes "
                           f"{tuple(x.shape)} and {tuple(w.shape)}")
    s, d = _single("conv1d", stride, "stride"), _single("conv1d", dilation, "dilation")
    p = padding if isinstance(padding, str) else (0, _single("conv1d", padding, "padding"))
    y = conv2d(x.unsqueeze(-2), w.unsqueeze(-2), bias, (1, s), p, (1, d), groups)
    return y.squeeze(-2)


def _pool_args(op: str, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    k = _pair(op, kernel_size, "kernel_size")
    s = k if stride is None or stride == [] or stride == () else _pair(op, stride, "stride")
    p, d = _pair(op, padding, "padding"), _pair(op, dilation, "dilation")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, got padding={p} "
                           f"and kernel_size={k}")
    h, w = x.shape[-2:]
    o = (_out_size(op, h, k[0], s[0], d[0], p[0], ceil_mode), _out_size(op, w, k[1], s[1], d[1], p[1], ceil_mode))
    # right padding: the left pad, plus whatever the last (ceil_mode) window needs beyond it
    extra = tuple(max(0, (o[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (n + 2 * p[i])) for i, n in enumerate((h, w)))
    return k, s, p, d, o, extra


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported")
    x, unbatched = _batched("max_pool2d", _t("max_pool2d", input))
    k, s, p, d, _, extra = _pool_args("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    if any(p) or any(extra):
        x = x.pad((p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=-math.inf)
    # max(dim), not amax: torch sends a window's gradient to its first maximum, not shared among ties
    # (the first maximum of each window row, then the first of those rows: the first in row-major
    # order, without merging the two window dims into one, whose index needs // and %)
    y = _windows(x, k, s, d).max(-1).values.max(-1).values
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    x, unbatched = _batched("avg_pool2d", _t("avg_pool2d", input))
    k, s, p, d, _, extra = _pool_args("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    h, w = x.shape[-2:]
    grow = (p[1], p[1] + extra[1], p[0], p[0] + extra[0])
    if any(grow):
        x = x.pad(grow)
    total = _windows(x, k, s, d).sum((-2, -1))
    if divisor_override is not None:
        y = total / divisor_override
    elif not any(grow):
        y = total / (k[0] * k[1])
    else:  # count what torch counts: the padded input (count_include_pad) or the input, never the ceil overhang
        if count_include_pad:
            ones = lazy.ones(h + 2 * p[0], w + 2 * p[1], dtype=x.dtype).pad((0, extra[1], 0, extra[0]))
        else:
            ones = lazy.ones(h, w, dtype=x.dtype).pad(grow)
        y = total / _windows(ones, k, s, d).sum((-2, -1))
    return y.squeeze(0) if unbatched else y


# ---------------------------------------------------------------- attention

@autocast_op(LOWER, "query", "key", "value", "attn_mask")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v; `is_causal` masks keys after the query position
    (top-left aligned, like torch); a bool mask keeps True, a float mask is added."""
    q, k, v = (_t("scaled_dot_product_attention", a) for a in (query, key, value))
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = (t.unsqueeze(-3).expand(*t.shape[:-2], rep, *t.shape[-2:]).reshape(
            *t.shape[:-3], t.shape[-3] * rep, *t.shape[-2:]) for t in (k, v))
    s = (1.0 / math.sqrt(E)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * s
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("scaled_dot_product_attention: pass either attn_mask or is_causal, not both")
        keep = lazy.arange(L).unsqueeze(-1) >= lazy.arange(S)
        attn = scores.masked_fill(keep.logical_not(), -math.inf).softmax(-1)  # every query keeps key 0
    elif attn_mask is not None:
        m = _t("scaled_dot_product_attention", attn_mask)
        scores = scores.masked_fill(m.logical_not(), -math.inf) if m.dtype is lazy.bool else scores + m
        # a row with every key masked attends to nothing (0), as in torch, not NaN; its softmax runs
        # on zeros so that its (unused) gradient stays finite too
        none = scores.amax(-1, keepdim=True) == -math.inf
        attn = scores.masked_fill(none, 0.0).softmax(-1).masked_fill(none, 0.0)
    else:
        attn = scores.softmax(-1)
    if dropout_p > 0.0:
        attn = dropout(attn, dropout_p, training=True)
    return attn @ v


# ---------------------------------------------------------------- losses

def _reduce(op: str, loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_rows(op: str, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(hit, classes): hit[n, c, ...] = target[n, ...] == c, the one-hot mask as a bool graph."""
    if x.ndim < 1:
        raise RuntimeError(f"{op}: expected an input with a class dim, got a 0-d tensor")
    if target.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: expected class indices of an integer dtype (int64), got {target.dtype}")
    batch = tuple(x.shape[:1]) + tuple(x.shape[2:]) if x.ndim > 1 else ()
    if tuple(target.shape) != batch:
        raise RuntimeError(f"{op}: input of shape {tuple(x.shape)} needs a target of shape {batch} "
                           f"(the input without its class dim 1), got {tuple(target.shape)}")
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    cls = lazy.arange(c).reshape((c,) + (1,) * (x.ndim - 2)) if x.ndim > 1 else lazy.arange(c)
    t = target.unsqueeze(1) if x.ndim > 1 else target.unsqueeze(0)
    return t == cls, cls


@autocast_op(FP32, "input", "weight")
def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> Tensor:
    """-input[n, target[n]] * weight[target[n]]; 'mean' divides by the summed weights of the
    targets that are not `ignore_index` (the count when weight is None), like torch."""
    x, target = _t("nll_loss", input), _t("nll_loss", target)
    hit, cls = _class_rows("nll_loss", x, target)
    cdim = 1 if x.ndim > 1 else 0
    valid = target != ignore_index
    picked = where(hit, x, 0.0).sum(cdim)
    if weight is None:
        w = valid.to(x.dtype)
    else:
        wt = _t("nll_loss", weight).to(x.dtype)
        w = where(valid, where(hit, wt.reshape(cls.shape), 0.0).sum(cdim), 0.0)
    loss = -(picked * w)
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce("nll_loss", loss, reduction)


@autocast_op(FP32, "input", "target", "weight")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim (1, or 0 for an unbatched input) + nll_loss; targets are
    class indices or class probabilities (a float tensor shaped like the input)."""
    x, target = _t("cross_entropy", input), _t("cross_entropy", target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    cdim = 1 if x.ndim > 1 else 0
    c = x.shape[cdim]
    logp = x.log_softmax(cdim)
    wshape = (c,) + (1,) * (x.ndim - 2) if x.ndim > 1 else (c,)
    if target.dtype.is_float:  # class probabilities
        if tuple(target.shape) != tuple(x.shape):
            raise RuntimeError(f"cross_entropy: probability targets must have the input's shape {tuple(x.shape)}, "
                               f"got {tuple(target.shape)}")
        p = target if label_smoothing == 0 else target * (1 - label_smoothing) + label_smoothing / c
        terms = logp * p
        if weight is not None:
            terms = terms * _t("cross_entropy", weight).reshape(wshape)
        loss = -terms.sum(cdim)
        if reduction == "mean":
            return loss.sum() / (loss.numel() if loss.ndim else 1)
        return _reduce("cross_entropy", loss, reduction)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing == 0:
        return nll
    valid = target != ignore_index
    if weight is None:
        smooth = -logp.sum(cdim)
        denom = valid.to(x.dtype).sum()
    else:
        wt = _t("cross_entropy", weight).to(x.dtype)
        smooth = -(logp * wt.reshape(wshape)).sum(cdim)
        hit, _ = _class_rows("cross_entropy", x, target)
        denom = where(valid, where(hit, wt.reshape(wshape), 0.0).sum(cdim), 0.0).sum()
    smooth = where(valid, smooth, 0.0)
    if reduction == "mean":
        smooth = smooth.sum() / denom
    else:
        smooth = _reduce("cross_entropy", smooth, reduction)
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / c)


@autocast_op(FP32, "input", "target")
def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None) -> Tensor:
    d = _t("mse_loss", input) - target
    return _reduce("mse_loss", d * d, reduction)


@autocast_op(FP32, "input", "target")
def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    return _reduce("l1_loss", (_t("l1_loss", input) - target).abs(), reduction)


@autocast_op(FP32, "input", "target", "weight", "pos_weight")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction: str = "mean", pos_weight=None) -> Tensor:
    """torch's stable form: (1 - y) x + (1 + (pw - 1) y) * log(1 + exp(-x)), log term around max(-x, 0)."""
    x = _t("binary_cross_entropy_with_logits", input)
    y = target
    softplus_neg = (-x).clamp_min(0) + ((-x.abs()).exp()).log1p()  # log(1 + exp(-x)), stable
    if pos_weight is not None:
        lw = (pos_weight - 1) * y + 1
        loss = (1 - y) * x + lw * softplus_neg
    else:
        loss = (1 - y) * x + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce("binary_cross_entropy_with_logits", loss, reduction)
