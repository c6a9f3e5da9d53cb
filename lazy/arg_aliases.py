"""torch's NumPy-style keyword aliases: `axis=` for `dim=` and `keepdims=` for `keepdim=`.

In:  the Tensor methods and `lazy.` functions, after every module has added its own.
Out: each one that takes `dim` (or `keepdim`) also takes `axis` (or `keepdims`), as torch's
     argument parser does for every function it parses (`x.sum(axis=0, keepdims=True)`).

Invariants
- The wrapper only renames keywords; giving both names raises TypeError, as torch does.
- Functions are wrapped once (`_aliased` marks them), so importing twice changes nothing.
"""

from __future__ import annotations

import functools
import inspect

from lazy.tensor import FUNCTIONS, Tensor

__all__ = ["with_aliases"]

_ALIASES = (("axis", "dim"), ("keepdims", "keepdim"))


def with_aliases(fn):
    """fn, also taking `axis=`/`keepdims=` for the `dim`/`keepdim` it has."""
    if getattr(fn, "_aliased", False):
        return fn
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    pairs = [(a, n) for a, n in _ALIASES if n in params and a not in params]
    if not pairs:
        return fn

    @functools.wraps(fn)
    def g(*args, **kw):
        if kw:
            for alias, name in pairs:
                if alias in kw:
                    if name in kw:
                        raise TypeError(f"{fn.__name__}() got multiple values for argument '{name}' "
                                        f"(given as '{name}' and as '{alias}')")
                    kw[name] = kw.pop(alias)
        return fn(*args, **kw)
    g._aliased = True
    return g


def install() -> None:
    wrapped = {}
    for name, attr in list(vars(Tensor).items()):
        if inspect.isfunction(attr) and not name.startswith("_"):
            w = wrapped[attr] = with_aliases(attr)
            setattr(Tensor, name, w)
    for name, fn in list(FUNCTIONS.items()):
        FUNCTIONS[name] = wrapped.get(fn) or with_aliases(fn)


install()
