"""Transposed convolution: `F.conv_transpose2d` and ConvTranspose2d, as the gradient of conv2d with
respect to its input, built from conv2d itself.

In:  (N, C_in, H, W) or (C_in, H, W) lazy tensors; weight (C_in, C_out / groups, kH, kW); torch's
     stride, padding, output_padding, groups, dilation.
Out: (N, C_out, H_out, W_out) with H_out = (H - 1) stride - 2 padding + dilation (kH - 1) +
     output_padding + 1, as torch.

How: the input is dilated with stride - 1 zeros between elements (a pad of a size-1 axis and a
reshape: views, no copy), padded by dilation (k - 1) - padding on each side (+ output_padding at
the end; a negative amount crops), and convolved (stride 1, the same dilation) with the weight
flipped in both spatial dims and its in/out channels swapped within each group. conv2d's
im2col-through-views then does the rest, so the result is differentiable like any composition.
The zeros cost stride^2 more multiply-adds than a scatter formulation would.
"""

from __future__ import annotations

import math

from lazy.amp import LOWER, autocast_op
from lazy.nn import init
from lazy.nn.functional import _batched, _pair, _t, conv2d
from lazy.nn.modules import Module, _param
from lazy.tensor import Tensor

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
    g = groups
    # weight (C_in, C_out/g, kH, kW) -> conv weight (C_out, C_in/g, kH, kW), flipped in space
    wc = w.reshape(g, cin // g, coutg, kh, kw).transpose(1, 2).reshape(g * coutg, cin // g, kh, kw).flip(-2, -1)
    y = _dilate(x, s)
    eh, ew = d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]
    y = y.pad((ew, ew + op[1], eh, eh + op[0]))
    out = conv2d(y, wc, bias, 1, 0, d, g)
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
