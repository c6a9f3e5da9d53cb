"""Benchmark workloads: one definition per workload, written once per library.

Each `Workload` builds its inputs (numpy arrays, seeded) from a size budget and gives the same
computation for each peer: `lazy`, `torch` (eager; torch.compile wraps the same function unless
`torch_compiled` says how), `numpy` and, optionally, `tinygrad`. A peer given as None does not
run that workload (shown as "-" in the table).

`bytes` counts the compulsory memory traffic (inputs read once, outputs written once): what a
fused kernel should approach and what GB/s figures are computed from. `flops` (matmul-bound
workloads only) counts multiply-adds as two flops; such rows report GFLOP/s.

A workload whose lazy side needs a feature lazy does not have yet lists it in `needs` as
(probe, reason); while a probe is false the row shows "missing: <reason>" and the peers still
run, so the target to beat is visible. Rows appear as their features land: no edit here needed.

`SUITE` is the whole benchmark suite in display order; `WORKLOADS` is the four-workload demo set
that `lazy demo` and tests use (a subset of SUITE, unchanged keys).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# numel budget per size; every workload derives its shapes from it
SIZES = {"tiny": 1 << 12, "small": 1 << 20, "medium": 1 << 22, "large": 1 << 24}
LR = 0.01  # SGD step size of the training-step workloads


@dataclass
class Workload:
    name: str
    make_inputs: Callable[[int], list[np.ndarray]]  # numel budget -> inputs
    lazy: Callable | None
    torch: Callable | None
    numpy: Callable | None
    bytes: Callable[[list[np.ndarray]], int]
    expected_kernels: int | None  # what the fused lazy program should launch (None: not pinned yet)
    group: str = ""
    description: str = ""
    flops: Callable[[list[np.ndarray]], int] | None = None  # set: compute-bound, reported in GFLOP/s
    tinygrad: Callable | None = None
    torch_compiled: Callable[[Callable], Callable] | None = None  # torch.compile -> compiled callable
    needs: list[tuple[Callable[[], bool], str]] = field(default_factory=list)
    rtol: float = 1e-3  # max |lazy - torch| <= rtol * (1 + max |torch|)

    def missing(self) -> str | None:
        """Why lazy cannot run this workload yet, or None when it can."""
        if self.lazy is None:
            return "no lazy implementation"
        for probe, reason in self.needs:
            try:
                ok = probe()
            except Exception:  # noqa: BLE001 (a probe that breaks means: not there)
                ok = False
            if not ok:
                return f"needs {reason}"
        return None


def _rng():
    return np.random.default_rng(0)


def _level(n: int) -> int:
    """0 tiny, 1 small, 2 medium, 3 large: the size step nearest to the budget."""
    return min(range(4), key=lambda i: abs(math.log2(n) - (12, 20, 22, 24)[i]))


def _vec(n):
    return [_rng().standard_normal(n, dtype=np.float32)]


def _mat(n):
    side = round(n ** 0.5)
    rng = _rng()
    return [rng.standard_normal((side, side), dtype=np.float32),
            rng.standard_normal(side, dtype=np.float32), rng.standard_normal(side, dtype=np.float32)]


def _rect(n):
    """A (rows, cols) matrix of n elements, 4x wider than tall: rows and columns differ."""
    rows = max(1, round((n / 4) ** 0.5))
    return [_rng().standard_normal((rows, n // rows), dtype=np.float32)]


def _rect_t(n):
    """The transpose's storage: a (cols, rows) contiguous matrix, read through `.T`."""
    return [np.ascontiguousarray(_rect(n)[0].T)]


def _half(make):
    """The inputs of `make` in float16."""
    return lambda n: [a.astype(np.float16) for a in make(n)]


def _in_out(inputs):
    return 2 * inputs[0].nbytes


def _all_in(inputs):
    return sum(a.nbytes for a in inputs)


def _all_in_plus(out_elems: Callable[[list[np.ndarray]], int]):
    return lambda ins: _all_in(ins) + 4 * out_elems(ins)


def _has(attr: str) -> Callable[[], bool]:
    def probe():
        import lazy
        return hasattr(lazy.Tensor, attr)
    return probe


AUTOGRAD = (_has("backward"), "autograd (issue 4)")


# -- elementwise -------------------------------------------------------------------------------
# 10 elementwise ops: mul add relu sub sigmoid mul add tanh abs mul
def chain_lazy(x):
    y = ((x * 2.0 + 1.0).relu() - 0.5).sigmoid() * 3.0 + x
    return y.tanh().abs() * 0.5


chain_tinygrad = chain_lazy  # same method names in tinygrad


def chain_torch(x):
    import torch
    y = torch.sigmoid(torch.relu(x * 2.0 + 1.0) - 0.5) * 3.0 + x
    return torch.abs(torch.tanh(y)) * 0.5


def chain_numpy(x):
    y = 1.0 / (1.0 + np.exp(-(np.maximum(x * 2.0 + 1.0, 0.0) - 0.5))) * 3.0 + x
    return np.abs(np.tanh(y)) * 0.5


# 10 arithmetic ops, no exp/tanh: mul add relu sub abs mul add clamp sub mul. The chain above is
# compute-bound on a few cores (16M vector exp and tanh take longer than its bytes take from
# memory); this one is bound by memory, so it shows whether fusion reaches the bandwidth roof.
def arith_lazy(x):
    y = ((x * 2.0 + 1.0).relu() - 0.5).abs() * 3.0 + x
    return (y.clamp(-4.0, 4.0) - 1.0) * 0.5


arith_tinygrad = arith_lazy


def arith_torch(x):
    import torch
    y = torch.abs(torch.relu(x * 2.0 + 1.0) - 0.5) * 3.0 + x
    return (torch.clamp(y, -4.0, 4.0) - 1.0) * 0.5


def arith_numpy(x):
    y = np.abs(np.maximum(x * 2.0 + 1.0, 0.0) - 0.5) * 3.0 + x
    return (np.clip(y, -4.0, 4.0) - 1.0) * 0.5


# -- normalizations ----------------------------------------------------------------------------
def softmax_lazy(x, w, b):
    return x.softmax(-1)


softmax_tinygrad = softmax_lazy


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


layernorm_tinygrad = layernorm_lazy


def layernorm_torch(x, w, b):
    import torch
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def layernorm_numpy(x, w, b):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + 1e-5) * w + b


def rmsnorm_lazy(x, w, b):
    return x * ((x * x).mean(-1, keepdim=True) + 1e-6).rsqrt() * w


rmsnorm_tinygrad = rmsnorm_lazy


def rmsnorm_torch(x, w, b):
    import torch
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), w, 1e-6)


def rmsnorm_numpy(x, w, b):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w


def _norm_bytes(inputs):
    return 2 * inputs[0].nbytes + inputs[1].nbytes + inputs[2].nbytes


# -- reductions --------------------------------------------------------------------------------
def sumsq_lazy(x):
    return (x * x).sum()


sumsq_tinygrad = sumsq_lazy


def sumsq_torch(x):
    return (x * x).sum()


def sumsq_numpy(x):
    return np.dot(x, x)  # numpy's best: one pass through BLAS


def sum_inner(x):  # the same call in lazy, torch, numpy and tinygrad
    return x.sum(-1)


def sum_outer(x):
    return x.sum(0)


def sum_inner_t(x):  # x is stored (cols, rows); reduce the logical inner axis of x.T
    return x.T.sum(-1)


def sum_outer_t(x):
    return x.T.sum(0)


# -- mixed layouts: loads and stores disagree on the contiguous axis (codegen/tiling.py) ---------
def _vec_square(n):
    return _square_pair(n)[:1]


def _square_pair(n):
    side = round(n ** 0.5)
    rng = _rng()
    return [rng.standard_normal((side, side), dtype=np.float32), rng.standard_normal((side, side), dtype=np.float32)]


def permute_add(x, y):  # the same call in lazy, torch and numpy
    return x.T + y


def permute_copy_lazy(x):
    return x.permute(1, 0).contiguous()


permute_copy_torch = permute_copy_lazy


def permute_copy_numpy(x):
    return np.ascontiguousarray(x.T)


def permute_mul_sum(x, y):
    return (x.T * y).sum(0)


def _heads_inputs(n):
    """(batch, seq, heads, head_dim) activations of n elements: 8 heads of 64."""
    seq = max(1, n // (2 * 8 * 64))
    return [_rng().standard_normal((2, seq, 8, 64), dtype=np.float32)]


def heads_permute_lazy(x):  # (batch, seq, heads, dim) -> (batch, heads, seq, dim), as attention splits heads
    return x.permute(0, 2, 1, 3).contiguous()


heads_permute_torch = heads_permute_lazy


def heads_permute_numpy(x):
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


# -- broadcasting ------------------------------------------------------------------------------
def _affine_inputs(n):
    x = _rect(n)[0]
    rng = _rng()
    return [x, rng.standard_normal((x.shape[0], 1), dtype=np.float32),
            rng.standard_normal(x.shape[1], dtype=np.float32)]


def affine(x, s, b):  # per-row scale, per-column shift
    return x * s + b


def _outer_inputs(n):
    rows = max(1, round((n / 4) ** 0.5))
    rng = _rng()
    return [rng.standard_normal((rows, 1), dtype=np.float32), rng.standard_normal(n // rows, dtype=np.float32)]


def outer_lazy(a, b):
    return (a - b).abs()


outer_tinygrad = outer_lazy


def outer_torch(a, b):
    return (a - b).abs()


def outer_numpy(a, b):
    return np.abs(a - b)


# -- matmul-bound ------------------------------------------------------------------------------
def _linear_inputs(n):
    d = (64, 512, 1024, 2048)[_level(n)]
    rng = _rng()
    return [rng.standard_normal((d, d), dtype=np.float32) * 0.5,
            rng.standard_normal((d, d), dtype=np.float32) / np.float32(d ** 0.5),
            rng.standard_normal(d, dtype=np.float32)]


def _linear_flops(ins):
    (m, k), n = ins[0].shape, ins[1].shape[1]
    return 2 * m * k * n


def gelu_linear_lazy(x, w, b):
    return (x @ w + b).gelu()


gelu_linear_tinygrad = gelu_linear_lazy


def gelu_linear_torch(x, w, b):
    import torch
    return torch.nn.functional.gelu(torch.addmm(b, x, w))


def gelu_linear_numpy(x, w, b):
    y = x @ w + b
    # numpy has no erf (scipy may be absent): the tanh form is within 1e-3 of the exact gelu
    return 0.5 * y * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))


def _conv_inputs(n):
    """A 3x3 convolution of ResNet's CIFAR stages: batch 32, c channels at s x s."""
    c, s = ((4, 8), (16, 32), (32, 16), (64, 32))[_level(n)]
    rng = _rng()
    return [rng.standard_normal((32, c, s, s), dtype=np.float32),
            rng.standard_normal((c, c, 3, 3), dtype=np.float32) / np.float32(3 * c ** 0.5),
            rng.standard_normal(c, dtype=np.float32)]


def _conv_flops(ins):
    (n, c, h, w), oc = ins[0].shape, ins[1].shape[0]
    return 2 * n * h * w * oc * c * 9


def conv_relu_lazy(x, w, b):
    import lazy.nn.functional as F
    return F.relu(F.conv2d(x, w, b, padding=1))


def conv_relu_torch(x, w, b):
    import torch
    return torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))


def _attention_inputs(n):
    bh, s, d = ((2, 32, 16), (8, 256, 64), (16, 512, 64), (32, 1024, 64))[_level(n)]
    rng = _rng()
    return [rng.standard_normal((bh, s, d), dtype=np.float32) for _ in range(3)]


def _attention_flops(ins):
    bh, s, d = ins[0].shape
    return 4 * bh * s * s * d  # q @ k^T and p @ v


def attention_lazy(q, k, v):
    return (q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)).softmax(-1) @ v


attention_tinygrad = attention_lazy


def attention_torch(q, k, v):
    import torch
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def attention_numpy(q, k, v):
    s = q @ k.transpose(0, 2, 1) * np.float32(q.shape[-1] ** -0.5)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


# -- training steps ----------------------------------------------------------------------------
# A step is a pure function: (params..., data...) -> new params after one SGD step, so repeated
# calls do the same work. Losses are cross-entropy against one-hot targets (no gather needed).
def _mlp_inputs(n):
    b, din, h, c = ((16, 32, 64, 10), (256, 512, 1024, 16), (512, 1024, 2048, 16), (1024, 2048, 4096, 16))[_level(n)]
    rng = _rng()
    y = np.eye(c, dtype=np.float32)[rng.integers(0, c, b)]
    return [rng.standard_normal((din, h), dtype=np.float32) / np.float32(din ** 0.5),
            np.zeros(h, np.float32),
            rng.standard_normal((h, c), dtype=np.float32) / np.float32(h ** 0.5),
            np.zeros(c, np.float32),
            rng.standard_normal((b, din), dtype=np.float32), y]


def _mlp_flops(ins):
    b, din = ins[4].shape
    h, c = ins[2].shape
    return 3 * 2 * b * (din * h + h * c)  # forward, and twice that backward


def mlp_loss(w1, b1, w2, b2, x, y):  # lazy and torch: the same methods
    logits = (x @ w1 + b1).relu() @ w2 + b2
    return -(y * logits.log_softmax(-1)).sum(-1).mean()


def _sgd_step_lazy(loss_fn, n_params: int):
    def step(*args):
        params = [p.detach().requires_grad_() for p in args[:n_params]]
        loss_fn(*params, *args[n_params:]).backward()
        return [p.detach() - LR * p.grad for p in params]
    return step


def _jitted(step):
    """The step under lazy.jit (made on first use, so importing the suite does not import lazy):
    recorded on its 2nd and 3rd calls, replayed after; the bench's warm-up covers the recording."""
    holder = []

    def call(*args):
        if not holder:
            import lazy

            holder.append(lazy.jit(step))
        return holder[0](*args)
    return call


def _sgd_step_torch(loss_fn, n_params: int):
    def step(*args):
        import torch

        params = [p.detach().requires_grad_() for p in args[:n_params]]
        grads = torch.autograd.grad(loss_fn(*params, *args[n_params:]), params)
        with torch.no_grad():
            return [p - LR * g for p, g in zip(params, grads)]
    return step


def mlp_step_numpy(w1, b1, w2, b2, x, y):
    h = x @ w1 + b1
    a = np.maximum(h, 0)
    logits = a @ w2 + b2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    dlogits = (e / e.sum(-1, keepdims=True) - y) / np.float32(x.shape[0])
    dh = (dlogits @ w2.T) * (h > 0)
    return [w1 - LR * (x.T @ dh), b1 - LR * dh.sum(0), w2 - LR * (a.T @ dlogits), b2 - LR * dlogits.sum(0)]


TF_HEADS = 4


def _transformer_inputs(n):
    b, s, d, v = ((2, 8, 16, 32), (8, 64, 128, 256), (16, 128, 256, 512), (32, 256, 384, 1024))[_level(n)]
    rng = _rng()

    def w(i, o):
        return rng.standard_normal((i, o), dtype=np.float32) / np.float32(i ** 0.5)

    ones, zeros = np.ones(d, np.float32), np.zeros(d, np.float32)
    mask = np.triu(np.full((s, s), -1e9, np.float32), 1)  # causal, additive (finite: no inf - inf)
    y = np.eye(v, dtype=np.float32)[rng.integers(0, v, (b, s))]
    return [ones, zeros, w(d, 3 * d), w(d, d), ones.copy(), zeros.copy(), w(d, 4 * d), w(4 * d, d), w(d, v),
            rng.standard_normal((b, s, d), dtype=np.float32), mask, y]


TF_PARAMS = 9


def _transformer_flops(ins):
    b, s, d = ins[9].shape
    v = ins[8].shape[1]
    fwd = 2 * b * s * (3 * d * d + d * d + 8 * d * d + d * v) + 4 * b * s * s * d
    return 3 * fwd


def _layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    return xc * ((xc * xc).mean(-1, keepdim=True) + 1e-5).rsqrt() * w + b


def transformer_loss_lazy(ln1w, ln1b, wqkv, wo, ln2w, ln2b, w1, w2, head, x, mask, y, gelu=None):
    """One pre-norm block (causal multi-head attention + GELU MLP) and a vocabulary head."""
    gelu = gelu or (lambda t: t.gelu())
    bsz, s, d = x.shape
    hd = d // TF_HEADS
    qkv = _layer_norm(x, ln1w, ln1b) @ wqkv
    q, k, v = (qkv[:, :, i * d:(i + 1) * d].reshape(bsz, s, TF_HEADS, hd).permute(0, 2, 1, 3) for i in range(3))
    att = (q @ k.transpose(-2, -1) * (hd ** -0.5) + mask).softmax(-1) @ v
    x = x + att.permute(0, 2, 1, 3).reshape(bsz, s, d) @ wo
    x = x + gelu(_layer_norm(x, ln2w, ln2b) @ w1) @ w2
    return -(y * (x @ head).log_softmax(-1)).sum(-1).mean()


def transformer_loss_torch(*args):
    import torch
    return transformer_loss_lazy(*args, gelu=torch.nn.functional.gelu)


# -- the suite ---------------------------------------------------------------------------------
def _w(name, make, lazy, torch, numpy, bytes_, kernels, group, description, **kw):
    return Workload(name, make, lazy, torch, numpy, bytes_, kernels, group=group, description=description, **kw)


_SUITE = [
    _w("elementwise_chain", _vec, chain_lazy, chain_torch, chain_numpy, _in_out, 1, "elementwise",
       "10 elementwise ops (relu, sigmoid, tanh, abs, arithmetic) on a vector", tinygrad=chain_tinygrad),
    _w("elementwise_arith", _vec, arith_lazy, arith_torch, arith_numpy, _in_out, 1, "elementwise",
       "10 arithmetic elementwise ops (relu, abs, clamp, no exp/tanh) on a vector: memory-bound",
       tinygrad=arith_tinygrad),
    _w("softmax", _mat, softmax_lazy, softmax_torch, softmax_numpy, _in_out, 1, "normalization",
       "softmax over the last axis of a square matrix", tinygrad=softmax_tinygrad),
    _w("layernorm", _mat, layernorm_lazy, layernorm_torch, layernorm_numpy, _norm_bytes, 1, "normalization",
       "layer norm over the last axis, with weight and bias", tinygrad=layernorm_tinygrad),
    _w("layernorm_f16", _half(_mat), layernorm_lazy, layernorm_torch, layernorm_numpy, _norm_bytes, 1,
       "normalization", "layer norm in float16: lazy computes in float32 and rounds where the ops cast (the "
       "mean, the squares it averages, variance + eps, rsqrt) and the output; numpy rounds every op; "
       "torch's layer_norm rounds once", rtol=1e-2),
    _w("rmsnorm", _mat, rmsnorm_lazy, rmsnorm_torch, rmsnorm_numpy, _norm_bytes, 1, "normalization",
       "RMS norm over the last axis, with weight", tinygrad=rmsnorm_tinygrad),
    _w("sum_of_squares", _vec, sumsq_lazy, sumsq_torch, sumsq_numpy, lambda ins: ins[0].nbytes, 1, "reduction",
       "full reduction of x*x to a scalar", tinygrad=sumsq_tinygrad),
    _w("sum_inner", _rect, sum_inner, sum_inner, sum_inner, _all_in_plus(lambda ins: ins[0].shape[0]), 1,
       "reduction", "sum along the inner (contiguous) axis of a wide matrix", tinygrad=sum_inner),
    _w("sum_outer", _rect, sum_outer, sum_outer, sum_outer, _all_in_plus(lambda ins: ins[0].shape[1]), 1,
       "reduction", "sum along the outer (strided) axis of a wide matrix: column sums", tinygrad=sum_outer),
    _w("sum_inner_permuted", _rect_t, sum_inner_t, sum_inner_t, sum_inner_t,
       _all_in_plus(lambda ins: ins[0].shape[1]), 1, "reduction",
       "x.T.sum(-1): the inner axis of a transposed view (strided in memory)", tinygrad=sum_inner_t),
    _w("sum_outer_permuted", _rect_t, sum_outer_t, sum_outer_t, sum_outer_t,
       _all_in_plus(lambda ins: ins[0].shape[0]), 1, "reduction",
       "x.T.sum(0): the outer axis of a transposed view (contiguous in memory)", tinygrad=sum_outer_t),
    _w("permute_add", _square_pair, permute_add, permute_add, permute_add, _all_in_plus(lambda ins: ins[0].size),
       1, "layout", "x.T + y, square: x walked a row apart per element of the output"),
    _w("permute_copy", _vec_square, permute_copy_lazy, permute_copy_torch, permute_copy_numpy, _in_out, 1,
       "layout", "x.T.contiguous(), square: a transpose"),
    _w("permute_mul_sum", _square_pair, permute_mul_sum, permute_mul_sum, permute_mul_sum,
       _all_in_plus(lambda ins: ins[0].shape[1]), 1, "layout",
       "(x.T * y).sum(0), square: a reduction whose load x is contiguous along the reduced axis, y across it"),
    _w("permute_heads", _heads_inputs, heads_permute_lazy, heads_permute_torch, heads_permute_numpy, _in_out, 1,
       "layout", "x.permute(0, 2, 1, 3).contiguous() of (2, seq, 8, 64): attention's split of heads"),
    _w("broadcast_affine", _affine_inputs, affine, affine, affine, _all_in_plus(lambda ins: ins[0].size), 1,
       "broadcast", "x * row_scale[:, None] + col_shift[None, :]", tinygrad=affine),
    _w("broadcast_outer", _outer_inputs, outer_lazy, outer_torch, outer_numpy,
       _all_in_plus(lambda ins: ins[0].size * ins[1].size), 1, "broadcast",
       "|a[:, None] - b[None, :]|: two vectors to a matrix", tinygrad=outer_tinygrad),
    _w("gelu_linear", _linear_inputs, gelu_linear_lazy, gelu_linear_torch, gelu_linear_numpy,
       _all_in_plus(lambda ins: ins[0].shape[0] * ins[1].shape[1]), None, "matmul",
       "gelu(x @ w + b), square d x d: a matmul with a bias and activation epilogue",
       flops=_linear_flops, tinygrad=gelu_linear_tinygrad),
    _w("conv_relu", _conv_inputs, conv_relu_lazy, conv_relu_torch, None,
       _all_in_plus(lambda ins: ins[0].size), 2, "matmul",
       "relu(conv2d(x, w, b, padding=1)), 3x3, batch 32: an implicit GEMM over the input's windows (no im2col "
       "matrix), then the bias and relu over NCHW", flops=_conv_flops),
    _w("attention", _attention_inputs, attention_lazy, attention_torch, attention_numpy,
       _all_in_plus(lambda ins: ins[0].size), None, "matmul",
       "softmax(q @ k^T / sqrt(d)) @ v over (batch*heads, seq, head_dim); torch: scaled_dot_product_attention",
       flops=_attention_flops, tinygrad=attention_tinygrad),
    _w("mlp_train_step", _mlp_inputs, _jitted(_sgd_step_lazy(mlp_loss, 4)), _sgd_step_torch(mlp_loss, 4),
       mlp_step_numpy,
       _all_in_plus(lambda ins: sum(a.size for a in ins[:4])), None, "training",
       "2-layer ReLU MLP: forward, cross-entropy, backward, SGD update (lazy: under lazy.jit; numpy: "
       "hand-written backward)",
       flops=_mlp_flops, needs=[AUTOGRAD], rtol=1e-2,
       torch_compiled=lambda compile: _sgd_step_torch(compile(mlp_loss), 4)),
    _w("transformer_train_step", _transformer_inputs, _jitted(_sgd_step_lazy(transformer_loss_lazy, TF_PARAMS)),
       _sgd_step_torch(transformer_loss_torch, TF_PARAMS), None,
       _all_in_plus(lambda ins: sum(a.size for a in ins[:TF_PARAMS])), None, "training",
       "one pre-norm transformer block (4-head causal attention, GELU MLP) + vocabulary head: "
       "forward, cross-entropy, backward, SGD update (lazy: under lazy.jit)",
       flops=_transformer_flops, needs=[AUTOGRAD], rtol=1e-2,
       torch_compiled=lambda compile: _sgd_step_torch(compile(transformer_loss_torch), TF_PARAMS)),
]

SUITE: dict[str, Workload] = {w.name: w for w in _SUITE}
WORKLOADS: dict[str, Workload] = {n: SUITE[n] for n in ("elementwise_chain", "softmax", "layernorm", "sum_of_squares")}
