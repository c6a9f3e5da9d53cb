"""Binary cross entropy and the loss modules torch programs reach for next: `F.binary_cross_entropy`,
BCELoss, BCEWithLogitsLoss, L1Loss.

In:  probabilities (BCE) or logits (BCEWithLogits) and targets of the same shape, torch's
     weight/pos_weight/reduction arguments.
Out: lazy losses.

binary_cross_entropy follows torch's kernel: (t - 1) max(log1p(-x), -100) - t max(log(x), -100),
times the weight, so x = 0 or 1 gives 100, not inf. Its gradient is torch's, not the gradient of
that clamped formula: for x, w (x - t) / max(x (1 - x), 1e-12) (finite everywhere: -1e12 at x = 0,
t = 1); for t, w (log1p(-x) - log(x)). It is built as the loss value plus a term that is 0 but
carries that gradient (where x (1 - x) >= 1e-12 the plain formula, so second derivatives are
torch's there too). Two corners differ: at x exactly 0 or 1 the target's gradient is 0 here (torch:
+-inf), and torch's check that x and t lie in [0, 1] (data-dependent) is not made.
"""

from __future__ import annotations

from lazy.amp import FP32, autocast_op
from lazy.graph import float32
from lazy.nn.functional import _reduce, _t, binary_cross_entropy_with_logits, l1_loss
from lazy.nn.modules import _Loss
from lazy.tensor import Tensor, where

__all__ = ["BCELoss", "BCEWithLogitsLoss", "L1Loss", "binary_cross_entropy"]
FUNCTIONAL = ["binary_cross_entropy"]

_EPS = 1e-12  # torch's EPSILON in binary_cross_entropy_backward


@autocast_op(FP32, "input", "target", "weight")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """torch.nn.functional.binary_cross_entropy; see the module docstring."""
    x, t = _t("binary_cross_entropy", input), _t("binary_cross_entropy", target)
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"Using a target size ({t.shape}) that is different to the input size ({x.shape}) is "
                         "deprecated. Please ensure they have the same size.")
    out = x.dtype
    xc = x.to(float32) if out.itemsize < 4 else x
    tc = t.to(xc.dtype)
    value = (tc - 1) * (-xc).log1p().clamp_min(-100) - tc * xc.log().clamp_min(-100)
    # torch's gradient (module docstring): the plain formula where x (1 - x) >= eps, a quadratic in x
    # with slope (x - t) / eps elsewhere, and the target's log-odds from a detached x
    main = xc * (1 - xc) >= _EPS
    xm = where(main, xc, 0.5)
    plain = -(tc * xm.log() + (1 - tc) * (-xm).log1p())
    xe = where(main, 0.0, xc)
    xd = xc.detach()
    odds = (-where(xd < 1, xd, 0.5)).log1p() - where(xd > 0, xd, 0.5).log()  # finite stand-ins at 0 and 1
    odds = where((xd > 0) & (xd < 1), odds, 0.0)
    edge = (xe * xe * 0.5 - tc.detach() * xe) / _EPS + tc * odds
    s = where(main, plain, edge)
    loss = value.detach() + (s - s.detach())
    if weight is not None:
        loss = loss * _t("binary_cross_entropy", weight).to(loss.dtype)
    return _reduce("binary_cross_entropy", loss, reduction).to(out)


class BCELoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, pos_weight=self.pos_weight,
                                                reduction=self.reduction)


class L1Loss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        return l1_loss(input, target, reduction=self.reduction)
