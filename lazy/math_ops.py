"""More elementwise math, composed from the primitive ops (no new graph op): fmod, the inverse
trigonometric and hyperbolic functions, addcmul and addcdiv.

In:  lazy tensors (and Python numbers where torch takes them), torch's names and arguments.
Out: lazy tensors; each function is also a Tensor method, a `lazy.` function and, where torch
     has one, an in-place `_` method.

How the inverse functions are built, and why
- atan is Cephes' (Moshier's) range reduction and polynomial: |x| beyond tan(3pi/8) maps to
  -1/x around pi/2, beyond tan(pi/8) (float32; 0.66 in float64) to (x-1)/(x+1) around pi/4, and
  a minimax polynomial in x^2 (float32: degree 4; float64: Cephes' rational P4/Q5) finishes. The
  branches are WHERE nodes, every branch fed an input it is finite on where it is not selected,
  so gradients (the derivative of the approximation, accurate to about the same relative error)
  never meet 0 * inf.
- atan2 reduces to atan of min(|x|, |y|) / max(|x|, |y|) in [0, 1], then reflects (pi/2 - r, pi - r,
  the sign of y). It follows C's atan2 on zeros, infinities and signed zeros, as torch does.
- asin(x) = atan2(x, sqrt((1 - x)(1 + x))) and acos(x) = atan2(sqrt((1 - x)(1 + x)), x): the
  product is exact enough near |x| = 1 (1 - x is exact there), so no cancellation.
- acosh, asinh and atanh are glibc's formulas (log1p near the small end, log(2x) + ln 2 beyond
  2^28), the log1p being lazy's cancellation-free composite. They compute in float64 and round
  once: they rest on log, which the C backend computes within about 4 ulp in float32 and 1 ulp
  in float64. The trigonometric ones stay in float32 (their polynomial is tuned for it).
- Measured against float64 (float32 inputs; mpmath for float64 inputs) over a sweep with 0, +-inf,
  NaN, denormals and huge values: see tests/test_math_ops.py, which states the max ulp.
- Halves and ints compute in float32 (the hyperbolic ones in float64) and round once at the end.
"""

from __future__ import annotations

import functools
import math

from lazy.dtypes import DTypeError
from lazy.graph import Op, float64
from lazy.tensor import FUNCTIONS, Tensor, _composite, _inplace_op, _operand, _promote, where

__all__ = ["acos", "acosh", "addcdiv", "addcmul", "asin", "asinh", "atan", "atan2", "atanh", "fmod"]


# ---------------------------------------------------------------- atan and atan2

_ATANF = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)  # Cephes atanf
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
           -1.228866684490136173410e2, -6.485021904942025371773e1)  # Cephes atan (double): P4 / Q5
_ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - float64(pi/2)


def _horner(z: Tensor, coeffs, lead_one: bool = False) -> Tensor:
    p = z + coeffs[0] if lead_one else z * 0 + coeffs[0]
    for c in coeffs[1:]:
        p = p * z + c
    return p


def _atan_core(t: Tensor) -> Tensor:
    """atan(t) for |t| at most tan(pi/8) (float32) or 0.66 (float64): the polynomial, odd in t."""
    z = t * t
    if t.dtype is float64:
        return t * (z * (_horner(z, _ATAN_P) / _horner(z, _ATAN_Q, lead_one=True))) + t
    return _horner(z, _ATANF) * z * t + t


def _atan_pos(x: Tensor, signed: Tensor | None = None) -> Tensor:
    """atan of x >= 0 (or NaN) by range reduction; `signed`: x with its sign (the result is then
    atan(signed), keeping -0.0 and the oddness exact)."""
    wide = x.dtype is float64
    big = x > 2.414213562373095
    mid = (x > (0.66 if wide else 0.4142135623730950)) & big.logical_not()
    xb = where(big, x, 1.0)  # finite where not selected: -1/x would be -inf at 0,
    xm = where(big, 1.0, x)  # and (x - 1) / (x + 1) NaN at inf
    red = where(big, -xb.reciprocal(), (xm - 1) / (xm + 1))
    y0 = where(big, x._const(math.pi / 2), math.pi / 4)  # (two Python floats would give float32)
    lo = where(big, x._const(_MOREBITS), 0.5 * _MOREBITS) if wide else 0.0
    if signed is not None:
        neg = signed < 0
        red, y0 = where(neg, -red, red), where(neg, -y0, y0)
        if wide:
            lo = where(neg, -lo, lo)
        t = where(big | mid, red, signed)
    else:
        t = where(big | mid, red, x)
    p = _atan_core(t)
    return where(big | mid, y0 + (p + lo if wide else p), p)


@_composite
def atan(self: Tensor) -> Tensor:
    """Arctangent (Cephes' reduction and polynomial; see the module docstring)."""
    a = where(self < 0, -self, self)
    return where(self == 0, self, _atan_pos(a, signed=self))  # +-0 exactly (the polynomial gives +0 for -0)


def _signbit(x: Tensor) -> Tensor:
    """Negative, or -0.0 (1 / -0.0 is -inf). NaN: False."""
    return (x < 0) | ((x == 0) & (where(x == 0, x, 1.0).reciprocal() < 0))


def atan2(self, other) -> Tensor:
    """atan2(self, other): the angle of the point (other, self), with C's rules for zeros (signed),
    infinities and NaN, like torch. Tensors and Python numbers promote as in torch."""
    y, x = _promote("atan2", self, other)
    y, x = y._floating(), x._floating()
    (y, out), (x, _) = y._acc(None), x._acc(None)
    ay, ax = where(y < 0, -y, y), where(x < 0, -x, x)
    swap = ay > ax
    num, den = where(swap, ax, ay), where(swap, ay, ax)
    both_inf = ax.isinf() & ay.isinf()
    zero = den == 0
    t = where(both_inf, 1.0, where(zero | both_inf, 0.0, num) / where(zero | both_inf, 1.0, den))
    r = _atan_pos(t)
    wide = r.dtype is float64
    r = where(swap, (math.pi / 2 - r) + (_MOREBITS if wide else 0.0), r)
    r = where(_signbit(x), (math.pi - r) + (2 * _MOREBITS if wide else 0.0), r)
    r = where(_signbit(y), -r, r)
    return where(x.isnan() | y.isnan(), math.nan, r)._cast(out)


# ---------------------------------------------------------------- asin, acos

def _grad_via(value: Tensor, surrogate: Tensor) -> Tensor:
    """`value`, differentiated as `surrogate` (equal in exact arithmetic): value.detach() plus
    surrogate - surrogate.detach(), which is 0 but carries every derivative of the surrogate. For a
    value computed accurately as a product with a factor that goes to 0, whose product-rule
    gradient would meet inf * 0 where the function's derivative is infinite."""
    return value.detach() + (surrogate - surrogate.detach())


def _cosine_side(x: Tensor) -> Tensor:
    """sqrt(1 - x^2) as sqrt((1 - x)(1 + x)): exact differences near |x| = 1; differentiated as
    1 - x*x, whose gradient at |x| = 1 is -2x (the product's would be NaN times the sqrt's inf)."""
    return _grad_via((1 - x) * (1 + x), 1 - x * x).sqrt()


def acos(self: Tensor) -> Tensor:
    x = self._floating()
    if x.dtype.itemsize < 4:  # halves: the side in float32, one rounding at the end
        w, out = x._acc(None)
        return atan2(_cosine_side(w), w)._cast(out)
    return atan2(_cosine_side(x), x)


def asin(self: Tensor) -> Tensor:
    x = self._floating()
    if x.dtype.itemsize < 4:
        w, out = x._acc(None)
        return atan2(w, _cosine_side(w))._cast(out)
    return atan2(x, _cosine_side(x))


# ---------------------------------------------------------------- hyperbolic inverses

_LN2 = math.log(2.0)
_HUGE = 2.0 ** 28  # beyond, x^2 +- 1 is x^2 in float64 too: log(2x) is exact


def _in_float64(fn):
    """The function computed in float64 and rounded once to the input's float dtype (ints: the
    default dtype). For the inverse hyperbolics, which rest on log: the C backend's float32 log is
    within about 4 ulp, its double log within 1, so float32 results land within about 1 ulp."""
    @functools.wraps(fn)
    def g(self):
        x = self._floating()
        return fn(x._cast(float64))._cast(x.dtype)
    return g


@_in_float64
def acosh(self: Tensor) -> Tensor:
    """log(x + sqrt(x^2 - 1)) as glibc: log1p(t + sqrt(2t + t^2)), t = x - 1, up to 2; then
    log(2x - 1 / (x + sqrt(x^2 - 1))); log(x) + ln 2 beyond 2^28. NaN below 1."""
    x = self
    big, mid = x > _HUGE, (x > 2) & (x <= _HUGE)
    small = (big | mid).logical_not()
    xb, xm, xs = where(big, x, 2.0), where(mid, x, 3.0), where(small, x, 1.5)
    t = xs - 1
    r_small = (t + _grad_via(t * 2 + t * t, (t + 1) * (t + 1) - 1).sqrt()).log1p()  # inf, not NaN, at 1
    r_mid = (xm * 2 - (xm + (xm * xm - 1).sqrt()).reciprocal()).log()
    r_big = xb.log() + _LN2
    r = where(big, r_big, where(mid, r_mid, r_small))
    return where(x < 1, math.nan, where(x.isnan(), x, r))


@_in_float64
def asinh(self: Tensor) -> Tensor:
    """sign(x) log(|x| + sqrt(x^2 + 1)) as glibc: log1p(a + a^2 / (1 + sqrt(1 + a^2))) up to 2, then
    log(2a + 1 / (sqrt(a^2 + 1) + a)), log(a) + ln 2 beyond 2^28; exact at +-0."""
    x = self
    neg = x < 0
    a = where(neg, -x, x)
    big, mid = a > _HUGE, (a > 2) & (a <= _HUGE)
    small = (big | mid).logical_not()
    ab, am, as_ = where(big, a, 4.0), where(mid, a, 4.0), where(small, a, 1.0)
    r_small = (as_ + as_ * as_ / ((as_ * as_ + 1).sqrt() + 1)).log1p()
    r_mid = (am * 2 + ((am * am + 1).sqrt() + am).reciprocal()).log()
    r_big = ab.log() + _LN2
    r = where(big, r_big, where(mid, r_mid, r_small))
    r = where(a.isnan(), a, r)
    return where(x == 0, x, where(neg, -r, r))


@_in_float64
def atanh(self: Tensor) -> Tensor:
    """0.5 log((1 + x) / (1 - x)) as glibc: 0.5 log1p(2a + 2a^2 / (1 - a)) below 0.5, else
    0.5 log1p(2a / (1 - a)); +-inf at +-1, NaN beyond; exact at +-0."""
    x = self
    neg = x < 0
    a = where(neg, -x, x)
    low, one = a < 0.5, a == 1
    al, ah, a1 = where(low, a, 0.0), where(low | one, 0.75, a), where(one, a, 0.0)
    r_low = (al * 2 + al * al * 2 / (1 - al)).log1p() * 0.5
    r_high = (ah * 2 / (1 - ah)).log1p() * 0.5
    r_one = (1 - a1).log() * -0.5  # inf, with the gradient inf (log1p(inf)'s would be NaN)
    r = where(low, r_low, where(one, r_one, r_high))
    r = where(a.isnan(), a, r)
    return where(x == 0, x, where(neg, -r, r))


# ---------------------------------------------------------------- fmod, addcmul, addcdiv

def fmod(self, other) -> Tensor:
    """C's fmod: the remainder of truncated division, with the sign of the dividend (torch.fmod).
    Floats: |a| mod |b| is exact (the remainder op on non-negative operands is fmod), and the sign
    of a is put back (a = -0.0 gives -0.0). Ints: a - trunc(a / b) * b; by zero it gives a (torch
    raises, see README). Gradients are torch's: 1 for a, -trunc(a / b) for b."""
    a, b = _promote("fmod", self, other)
    if a.dtype.kind == "b":
        raise DTypeError("fmod: \"fmod_cpu\" not implemented for 'Bool'")
    if a.dtype.kind in "iu":
        return a - a._ew(Op.DIV, b) * b  # DIV truncates ints
    (x, out), (y, _) = a._acc(None), b._acc(None)
    neg = _signbit(x)
    r = where(neg, -x, x).remainder(where(y < 0, -y, y))
    return where(neg, -r, r)._cast(out)


def addcmul(self, tensor1, tensor2, *, value=1) -> Tensor:
    """self + value * tensor1 * tensor2 (torch's order of the products), promoted as torch does;
    halves compute in float32 and round once."""
    return _addc("addcmul", self, tensor1, tensor2, value, divide=False)


def addcdiv(self, tensor1, tensor2, *, value=1) -> Tensor:
    """self + value * tensor1 / tensor2; integer tensor1 and tensor2 raise, as in torch."""
    return _addc("addcdiv", self, tensor1, tensor2, value, divide=True)


def _addc(name: str, x, t1, t2, value, divide: bool) -> Tensor:
    ops = [_operand(name, v) for v in (x, t1, t2)]
    if not all(isinstance(o, Tensor) for o in ops):
        raise TypeError(f"{name}: expected tensors for input, tensor1 and tensor2, got "
                        f"{', '.join(type(v).__name__ for v in (x, t1, t2))}")
    if divide and ops[1].dtype.kind in "biu" and ops[2].dtype.kind in "biu":
        raise RuntimeError("Integer division with addcdiv is no longer supported, and in a future release addcdiv "
                           "will perform a true division of tensor1 and tensor2. The historic addcdiv behavior can "
                           "be implemented as (input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype) for "
                           "integer inputs and as (input + value * tensor1 / tensor2) for float inputs. The future "
                           "addcdiv behavior is just the latter implementation: (input + value * tensor1 / tensor2), "
                           "for all dtypes.")
    a, p, q = _promote(name, *ops)
    if isinstance(value, float) and not a.dtype.is_float:
        raise RuntimeError(f"{name}: for integral input tensors, argument value must not be a floating point "
                           f"number (got value={value})")
    out = a.dtype
    if out.is_float:  # halves compute in float32
        a, p, q = (t._acc(None)[0] for t in (a, p, q))
    s = p if value == 1 else p * value
    return (a + (s / q if divide else s * q))._cast(out)


# ---------------------------------------------------------------- registration

for _name, _fn in [("atan", atan), ("asin", asin), ("acos", acos), ("acosh", acosh), ("asinh", asinh),
                   ("atanh", atanh), ("atan2", atan2), ("fmod", fmod), ("addcmul", addcmul), ("addcdiv", addcdiv)]:
    setattr(Tensor, _name, _fn)
    FUNCTIONS[_name] = _fn
    setattr(Tensor, _name + "_", _inplace_op(_name + "_", _name))
for _alias, _name in [("arctan", "atan"), ("arcsin", "asin"), ("arccos", "acos"), ("arccosh", "acosh"),
                      ("arcsinh", "asinh"), ("arctanh", "atanh"), ("arctan2", "atan2")]:
    setattr(Tensor, _alias, getattr(Tensor, _name))
    setattr(Tensor, _alias + "_", getattr(Tensor, _name + "_"))
    FUNCTIONS[_alias] = FUNCTIONS[_name]
