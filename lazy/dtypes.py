"""User-facing dtypes: names, conversion to/from torch and numpy, and type promotion.

In:  the `DType` values of lazy.graph; torch / numpy dtypes, strings and Python types from users.
Out: `as_dtype` (anything -> DType), `to_torch`, `result_type` (torch's promotion, exactly),
     `can_cast` (torch's in-place rule), `get_default_dtype`/`set_default_dtype`.

Invariants
- `lazy.float32 is lazy.graph.float32`: the user names *are* the IR dtypes.
- Promotion follows torch's n-ary rule (dimensioned tensors, 0-d tensors and Python scalars
  promoted apart, then combined by category) over `torch.promote_types`; answers are cached by key.
- lazy's default float dtype is its own (`lazy.set_default_dtype` leaves torch's alone): promotion
  wraps a Python float as it, and where torch reads its default (inferring a dtype from Python
  data), lazy's is lent to torch for that one call (`torch_default`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from lazy.graph import DTYPES, DType, bfloat16, bool_, float16, float32, float64, int8, int32, int64, uint8

__all__ = ["DType", "DTypeError", "bfloat16", "bool_", "float16", "float32", "float64", "get_default_dtype", "int8",
           "int32", "int64", "set_default_dtype", "uint8"]

# torch's short names (lazy.float, lazy.long, ...); exported by lazy/__init__.py, not defined here
# because they would shadow the builtins in this module.
ALIASES = {"bool": bool_, "float": float32, "half": float16, "double": float64, "int": int32,
           "long": int64}

_TO_TORCH = {float32: torch.float32, float64: torch.float64, float16: torch.float16,
             bfloat16: torch.bfloat16, int32: torch.int32, int64: torch.int64, int8: torch.int8,
             uint8: torch.uint8, bool_: torch.bool}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}
_PY_TYPES = {bool: bool_, int: int64, float: float32}


class DTypeError(TypeError, RuntimeError):
    """An op got (or would produce) a dtype it does not support. Both a TypeError (Pythonic) and a
    RuntimeError (what torch raises for the same mistakes), so either `except` clause catches it."""


_default = [float32]


def get_default_dtype() -> DType:
    """The dtype of float data without an explicit dtype (float32 unless `set_default_dtype` changed it)."""
    return _default[0]


def set_default_dtype(d) -> None:
    """torch.set_default_dtype for lazy: Python floats, float data without a dtype, float ops on ints
    and new parameters take `d` (a floating point dtype). torch's own default is not changed."""
    try:
        dt = as_dtype(d, "set_default_dtype")
    except TypeError:
        dt = None
    if dt is None or not dt.is_float:
        raise TypeError("only floating-point types are supported as the default type")
    _default[0] = dt
    _result_cache.clear()


@contextlib.contextmanager
def torch_default():
    """torch's default dtype is lazy's inside (for torch calls that read it); restored after."""
    mine, theirs = _TO_TORCH[_default[0]], torch.get_default_dtype()
    if mine == theirs:
        yield
        return
    torch.set_default_dtype(mine)
    try:
        yield
    finally:
        torch.set_default_dtype(theirs)


def to_torch(d: DType) -> torch.dtype:
    return _TO_TORCH[d]


def as_dtype(x, op: str = "dtype") -> DType:
    """Any dtype spelling (lazy, torch, numpy, name string, Python type) -> DType, or TypeError."""
    if isinstance(x, DType):
        return x
    if isinstance(x, torch.dtype) and x in _FROM_TORCH:
        return _FROM_TORCH[x]
    if isinstance(x, str) and x.removeprefix("torch.").removeprefix("lazy.") in DTYPES | ALIASES:
        name = x.removeprefix("torch.").removeprefix("lazy.")
        return DTYPES.get(name) or ALIASES[name]
    if isinstance(x, type) and x in _PY_TYPES:
        return _PY_TYPES[x]
    try:  # numpy dtypes and scalar types
        npd = np.dtype(x) if x is not None and not isinstance(x, (str, torch.dtype)) else None
    except (TypeError, ValueError):
        npd = None
    if npd is not None and npd.name in DTYPES:
        return DTYPES[npd.name]
    raise TypeError(f"{op}: unknown or unsupported dtype {x!r} (expected one of "
                    f"{', '.join('lazy.' + n for n in DTYPES)})")


_WRAPPED = {bool: torch.bool, int: torch.int64}  # a Python float wraps as lazy's default dtype
_result_cache: dict[tuple, DType] = {}


def _combine(higher, lower):
    """torch's combine_categories: a lower-priority result only raises a higher one's category."""
    if higher is None:
        return lower
    if lower is None or higher.is_floating_point:
        return higher
    if higher == torch.bool or lower.is_floating_point:
        return torch.promote_types(higher, lower)
    return higher


def result_type(*keys: tuple[str, object], op: str = "result_type") -> DType:
    """Promoted dtype of operands given as keys ("tensor"|"0d", DType) or ("scalar", python type).

    torch's n-ary rule (ResultTypeState): dimensioned tensors, 0-d tensors and Python scalars are
    promoted apart, then a lower group raises the category of a higher one only: an int8 tensor
    with a 0-d int32 and a bool tensor is int8, where folding pairs gave int32."""
    hit = _result_cache.get(keys)
    if hit is not None:
        return hit
    groups: dict[str, torch.dtype | None] = {"tensor": None, "0d": None, "scalar": None}
    for kind, v in keys:
        d = (_WRAPPED.get(v) or _TO_TORCH[_default[0]]) if kind == "scalar" else _TO_TORCH[v]
        g = groups[kind]
        try:
            groups[kind] = d if g is None else torch.promote_types(g, d)
        except RuntimeError as e:
            raise DTypeError(f"{op}: {e}") from None
    td = _combine(groups["tensor"], _combine(groups["0d"], groups["scalar"]))
    if td not in _FROM_TORCH:
        raise DTypeError(f"{op}: promoting {' and '.join(str(v) for _, v in keys)} gives {td}, which lazy does not "
                         "support")
    out = _FROM_TORCH[td]
    _result_cache[keys] = out
    return out


_cast_cache: dict[tuple, bool] = {}


def can_cast(frm: DType, to: DType) -> bool:
    """torch.can_cast: may an in-place op store a `frm` result into a `to` tensor?"""
    k = (frm, to)
    if k not in _cast_cache:
        _cast_cache[k] = torch.can_cast(_TO_TORCH[frm], _TO_TORCH[to])
    return _cast_cache[k]
