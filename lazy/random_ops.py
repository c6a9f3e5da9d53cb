"""Random sampling with torch's names: bernoulli, multinomial and the in-place fills (bernoulli_,
uniform_, normal_, exponential_, log_normal_, geometric_, cauchy_, random_).

In:  lazy tensors (probabilities, or the tensor to fill), torch's arguments; `generator=` a
     torch.Generator, by default lazy's (`lazy.manual_seed`).
Out: lazy tensors whose values were drawn on the host.

Invariants
- Every draw is torch's own sampler on the host, with lazy's torch.Generator: the same seed and
  the same sequence of calls give exactly torch's numbers (`lazy.manual_seed(s)` then
  `x.uniform_()` equals `torch.manual_seed(s)` then the same on a torch tensor), like
  lazy.rand/randn.
- Probabilities (bernoulli's input, multinomial's weights, a tensor p) are data: they are
  realized and read on the host first, as torch reads them.
- A fill replaces the tensor's value without a kernel (its buffer becomes the drawn one) when it
  is a base tensor; a view is written through, reaching its base. The leaf rule is torch's: a
  leaf that requires grad may only be filled under no_grad.
"""

from __future__ import annotations

import torch

from lazy import autograd, runtime
from lazy.dtypes import to_torch
from lazy.tensor import FUNCTIONS, Tensor, _gen, _held, _leaf_tensors, _operand, owned_tensor

__all__ = ["bernoulli", "multinomial"]


def _host(x, name: str) -> torch.Tensor:
    v = _operand(name, x)
    return v.torch() if isinstance(v, Tensor) else torch.as_tensor(v)


def _wrap(host: torch.Tensor, like: Tensor | None = None) -> Tensor:
    t = owned_tensor(host)
    dev = like.device if like is not None else None
    return t if dev is None or t.device == dev else t.to(dev).realize()


def bernoulli(input, p=None, *, generator=None) -> Tensor:
    """0/1 draws with probabilities `input` (or with the float `p` for every element), input's dtype."""
    x = _operand("bernoulli", input)
    h = x.torch()
    g = generator or _gen
    out = torch.bernoulli(h, generator=g) if p is None else torch.bernoulli(h, p, generator=g)
    return _wrap(out, x)


def multinomial(input, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """Indices drawn from the categorical distributions in the rows of `input` (non-negative weights,
    1-d or 2-d), without replacement unless `replacement`; int64, torch's sampler."""
    x = _operand("multinomial", input)
    out = torch.multinomial(x.torch(), num_samples, replacement, generator=generator or _gen)
    return _wrap(out, x)


# ---------------------------------------------------------------- in-place fills

def _fill(self: Tensor, name: str, draw) -> Tensor:
    """self's value replaced by `draw(host)`, a torch tensor of self's shape and dtype filled on the host."""
    if autograd.grad_enabled() and (self if self._base is None else self._base) in _leaf_tensors:
        raise RuntimeError(f"{name}: a leaf Variable that requires grad is being used in an in-place operation.")
    shape, tdt = tuple(self.shape), to_torch(self.dtype)
    host = _drawn(shape, tdt, draw)
    value = _wrap(host, self)
    if runtime._recorders:  # lazy.jit: a replay draws anew, into the tensor the call made
        b = _held(value._node)
        if self._base is None and not all(id(self) in r.created for r in runtime._recorders):
            why = f"{name} fills a tensor made outside the function"  # (its buffer is swapped: no kernel to replay)
        elif b is None or b.data.device != host.device:
            why = f"{name} draws on the host for a tensor on {self.device}"  # (the copy's input would be new)
        else:
            why = None
            runtime.record_draw(b, lambda: _drawn(shape, tdt, draw), (name, shape, self.dtype.name))
        if why is not None:
            for r in runtime._recorders:
                r.unreplayable(why)
    if self._base is None:
        from lazy.nn.init import _assign

        return _assign(self, value)
    with autograd.no_grad():
        return self.copy_(value)


def _drawn(shape, tdt, draw) -> torch.Tensor:
    """A host tensor of `shape` and torch dtype `tdt` filled by `draw` (a fill's draw, and its replay's)."""
    host = torch.empty(shape, dtype=tdt)
    draw(host)
    return host


def bernoulli_(self: Tensor, p=0.5, *, generator=None) -> Tensor:
    """Fill with 0/1 draws of probability `p` (a float, or a tensor broadcast to self)."""
    g = generator or _gen
    if isinstance(p, (Tensor, torch.Tensor)):
        ph = _host(p, "bernoulli_")
        return _fill(self, "bernoulli_", lambda h: h.bernoulli_(ph, generator=g))
    return _fill(self, "bernoulli_", lambda h: h.bernoulli_(float(p), generator=g))


def uniform_(self: Tensor, a: float = 0.0, b: float = 1.0, *, generator=None, **kw) -> Tensor:
    """Fill with U(a, b) draws (torch's `from`/`to`, also accepted as keywords)."""
    a, b = kw.pop("from", a), kw.pop("to", b)
    if kw:
        raise TypeError(f"uniform_: unexpected arguments {sorted(kw)}")
    return _fill(self, "uniform_", lambda h: h.uniform_(a, b, generator=generator or _gen))


def normal_(self: Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    return _fill(self, "normal_", lambda h: h.normal_(mean, std, generator=generator or _gen))


def exponential_(self: Tensor, lambd: float = 1.0, *, generator=None) -> Tensor:
    return _fill(self, "exponential_", lambda h: h.exponential_(lambd, generator=generator or _gen))


def log_normal_(self: Tensor, mean: float = 1.0, std: float = 2.0, *, generator=None) -> Tensor:
    return _fill(self, "log_normal_", lambda h: h.log_normal_(mean, std, generator=generator or _gen))


def geometric_(self: Tensor, p: float, *, generator=None) -> Tensor:
    return _fill(self, "geometric_", lambda h: h.geometric_(p, generator=generator or _gen))


def cauchy_(self: Tensor, median: float = 0.0, sigma: float = 1.0, *, generator=None) -> Tensor:
    return _fill(self, "cauchy_", lambda h: h.cauchy_(median, sigma, generator=generator or _gen))


def random_(self: Tensor, *args, generator=None, **kw) -> Tensor:
    """random_([from,] to): integers in [from, to) (no arguments: the dtype's mantissa range)."""
    return _fill(self, "random_", lambda h: h.random_(*args, generator=generator or _gen, **kw))


for _name, _fn in [("bernoulli", bernoulli), ("multinomial", multinomial), ("bernoulli_", bernoulli_),
                   ("uniform_", uniform_), ("normal_", normal_), ("exponential_", exponential_),
                   ("log_normal_", log_normal_), ("geometric_", geometric_), ("cauchy_", cauchy_),
                   ("random_", random_)]:
    setattr(Tensor, _name, _fn)
for _name in ("bernoulli", "multinomial"):
    FUNCTIONS[_name] = globals()[_name]
