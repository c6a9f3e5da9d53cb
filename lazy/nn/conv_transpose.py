"""Transposed convolution: `F.conv_transpose2d` and ConvTranspose2d, as the gradient of conv2d with
respect to its input, built from conv2d itself.

In:  (N, C_in, H, W) or (C_in, H, W) lazy tensors; weight (C_in, C_out / groups, kH, kW); torch's
     stride, padding, output_padding, groups, dilation.
Out: (N, C_out, H_out, W_out) with H_out = (H - 1) stride - 2 padding + dilation (kH - 1) +
     output_padding + 1, as torch.

How (dilation 1): the sub-pixel decomposition. With o' = o + padding, out[o] sums x[i] w[k] over
o' = i stride + k; the outputs of one phase o' = q stride + r take the taps k = r + stride j alone,
and read x[q - j]: a stride-1 convolution of the undilated input with that sub-kernel. So each of
the stride^2 output phases (per dim: o mod stride) is one conv2d (the sub-kernel flipped, its in/out
channels swapped within each group) over the input padded or cropped to line its windows up; a
phase without taps (kernel < stride) is zeros. The phases, each ceil(H_out / stride) long, are
interleaved (stack, permute, reshape: one copy) and cropped to H_out; the bias is added once.
Every conv2d reads its windows straight from the input (the scheduler's implicit GEMM), so
nothing the size of an im2col matrix is written and no multiply-add meets an inserted zero. Stride
1 is a single conv2d. All of it is views and conv2d, so it is differentiable like any composition.

Fallback (dilation > 1): the input is dilated with stride - 1 zeros between elements (a pad of a
size-1 axis and a reshape), padded by dilation (k - 1) - padding on each side (+ output_padding at
the end; a negative amount crops) and convolved (stride 1, the same dilation) with the flipped
weight. The zeros cost stride^2 more multiply-adds, and the scheduler cannot read the dilated
input's windows in place, so their im2col matrix is written.
"""

from __future__ import annotations

import math

from lazy.amp import LOWER, autocast_op
from lazy.nn import init
from lazy.nn.functional import _batched, _pair, _t, conv2d
from lazy.nn.modules import Module, _param
from lazy.tensor import Tensor, stack, zeros

__all__ = ["ConvTranspose2d", "conv_transpose2d"]
FUNCTIONAL = ["conv_transpose2d"]


def _dilate(x: Tensor, s: tuple[int, int]) -> Tensor:
    """stride - 1 zeros between neighbours in H and W: [.., H, W] -> [.., (H-1) sH + 1, (W-1) sW + 1]."""
    if s == (1, 1):
        return x
    *lead, h, w = x.shape
    y = x.reshape(*lead, h, 1, w, 1).pad((0, s[1] - 1, 0, 0, 0, s[0] - 1))
    y = y.reshape(*lead, h * s[0], w * s[1])
    return y[..., :(h - 1) * s[0] + 1, :(w - 1) * s[1] + 1]


def _dilated(x: Tensor, wc: Tensor, bias, s, p, op, d, g) -> Tensor:
    """The fallback for dilation > 1: conv2d over the zero-dilated, padded input (module docstring)."""
    kh, kw = wc.shape[-2:]
    eh, ew = d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]
    return conv2d(_dilate(x, s).pad((ew, ew + op[1], eh, eh + op[0])), wc, bias, 1, 0, d, g)


def _phases(n: int, k: int, s: int, p: int, size: int) -> tuple[int, list[tuple[int, int, int, int]]]:
    """One spatial dim of the sub-pixel decomposition.

    In:  input length n, kernel k, stride s, padding p, output length size.
    Out: the phases' common length t = ceil(size / s) and, per output phase rho = o mod s, the
         first tap of the flipped kernel, the number of taps, and the left and right pads of the
         input (negative: a crop) for a stride-1 correlation giving out[rho + s u], u < t.
    How: o + p = q s + r with r = (rho + p) mod s and q = u + c, c = (rho + p) // s; the taps are
         k = r + s j (J of them), reading x[q - j]. Correlated in reverse order, window u reads
         x[u + c - J + 1 ...]: the input padded by J - 1 - c on the left, t + J - 1 long. The
         reversed taps are every s-th of the flipped kernel, from (k - 1 - r) mod s.
    """
    t = -(-size // s)
    res = []
    for rho in range(s):
        r, c = (rho + p) % s, (rho + p) // s
        taps = len(range(r, k, s))
        left = taps - 1 - c
        res.append(((k - 1 - r) % s, taps, left, t + taps - 1 - n - left))
    return t, res


def _sub_pixel(x: Tensor, wc: Tensor, bias: Tensor | None, s, p, size, g) -> Tensor:
    """conv_transpose2d for dilation 1: one stride-1 conv2d per output phase, interleaved.
    In: batched x, wc the flipped conv weight (C_out, C_in / g, kH, kW), bias or None, the output's
    (H_out, W_out). Out: (N, C_out, H_out, W_out)."""
    n, _, h, w = x.shape
    oc, _, kh, kw = wc.shape
    (th, ph), (tw, pw) = _phases(h, kh, s[0], p[0], size[0]), _phases(w, kw, s[1], p[1], size[1])
    if s == (1, 1):  # one phase: the whole result, its bias the GEMM's epilogue
        (_, _, lh, rh), (_, _, lw, rw) = ph[0], pw[0]
        return conv2d(x.pad((lw, rw, lh, rh)), wc, bias, 1, 0, 1, g)
    outs = []
    for ah, jh, lh, rh in ph:
        for aw, jw, lw, rw in pw:
            if jh and jw:
                outs.append(conv2d(x.pad((lw, rw, lh, rh)), wc[:, :, ah::s[0], aw::s[1]], None, 1, 0, 1, g))
            else:  # no tap lands on this phase (kernel < stride)
                outs.append(zeros(n, oc, th, tw, dtype=x.dtype, device=x.device))
    y = stack(outs).reshape(s[0], s[1], n, oc, th, tw).permute(2, 3, 4, 0, 5, 1)
    y = y.reshape(n, oc, th * s[0], tw * s[1])[..., :size[0], :size[1]]
    return y if bias is None else y + bias.reshape(-1, 1, 1)


@autocast_op(LOWER, "input", "weight", "bias")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> Tensor:
    """torch.nn.functional.conv_transpose2d; see the module docstring."""
    x, unbatched = _batched("conv_transpose2d", _t("conv_transpose2d", input))
    w = _t("conv_transpose2d", weight)
    s, p = _pair("conv_transpose2d", stride, "stride"), _pair("conv_transpose2d", padding, "padding")
    op, d = _pair("conv_transpose2d", output_padding, "output_padding"), _pair("conv_transpose2d", dilation, "dilation")
    if w.ndim != 4:
        raise RuntimeError(f"conv_transpose2d: expected a 4-d weight (C_in, C_out / groups, kH, kW), got {tuple(w.shape)}")
    cin, coutg, kh, kw = w.shape
    if x.shape[1] != cin or cin % groups:
        raise RuntimeError(f"Given transposed=1, weight of size {list(w.shape)}, expected input{list(x.shape)} to have "
                           f"{cin} channels, but got {x.shape[1]} channels instead")
    for i in range(2):
        if op[i] >= s[i] and op[i] >= d[i]:
            raise RuntimeError(f"conv_transpose2d: output padding must be smaller than either stride or dilation, "
                               f"but got output_padding_height: {op[0]} output_padding_width: {op[1]} stride_height: "
                               f"{s[0]} stride_width: {s[1]} dilation_height: {d[0]} dilation_width: {d[1]}")
    size = [(x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k - 1) + op[i] + 1 for i, k in enumerate((kh, kw))]
    if min(size) < 1:
        raise RuntimeError(f"Given input size per channel: ({x.shape[2]} x {x.shape[3]}). Calculated output size per "
                           f"channel: ({size[0]} x {size[1]}). Output size is too small")
    g = groups
    # weight (C_in, C_out/g, kH, kW) -> conv weight (C_out, C_in/g, kH, kW), flipped in space
    wc = w.reshape(g, cin // g, coutg, kh, kw).transpose(1, 2).reshape(g * coutg, cin // g, kh, kw).flip(-2, -1)
    b = None if bias is None else _t("conv_transpose2d", bias)
    out = _sub_pixel(x, wc, b, s, p, size, g) if d == (1, 1) else _dilated(x, wc, b, s, p, op, d, g)
    return out.squeeze(0) if unbatched else out


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d: weight (in, out / groups, kH, kW), torch's init; forward takes an
    optional output_size that picks the output_padding, as torch's does."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("ConvTranspose2d", kernel_size, "kernel_size")
        self.stride, self.padding = _pair("ConvTranspose2d", stride, "stride"), _pair("ConvTranspose2d", padding, "padding")
        self.output_padding = _pair("ConvTranspose2d", output_padding, "output_padding")
        self.dilation, self.padding_mode = _pair("ConvTranspose2d", dilation, "dilation"), padding_mode
        self.weight = _param(in_channels, out_channels // groups, *self.kernel_size, dtype=dtype, device=device)
        if bias:
            self.bias = _param(out_channels, dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # fan_in from the weight's dim 1, as torch's
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _output_padding(self, x: Tensor, output_size) -> tuple[int, int]:
        if output_size is None:
            return self.output_padding
        size = list(output_size)[-2:]
        res = []
        for i, n in enumerate(x.shape[-2:]):
            least = (n - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (self.kernel_size[i] - 1) + 1
            if not least <= size[i] < least + self.stride[i]:
                raise ValueError(f"requested an output size of {size}, but valid sizes range from {least} to "
                                 f"{least + self.stride[i] - 1} (for an input of {list(x.shape[-2:])})")
            res.append(size[i] - least)
        return tuple(res)

    def forward(self, input, output_size=None):
        x = _t("ConvTranspose2d", input)
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self._output_padding(x, output_size),
                                self.groups, self.dilation)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")
