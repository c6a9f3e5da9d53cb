"""Property test: random graphs of elementwise, reduction and movement ops match torch.

Each example builds the same random program twice, once with lazy and once with torch,
realizes the lazy one through the compiled backend, and compares. Programs mix broadcasting,
permutes, reshapes, slices with steps, flips, pads, expands, and reductions whose results flow
back into elementwise ops, which is what exercises fusion and index simplification.
"""

import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazy

UNARY = [
    ("exp", lambda t: (t.clamp(-10, 10)).exp()),
    ("tanh", lambda t: t.tanh()),
    ("relu", lambda t: t.relu()),
    ("abs", lambda t: t.abs()),
    ("neg", lambda t: -t),
    ("sigmoid", lambda t: t.sigmoid()),
    ("sin", lambda t: t.sin()),
    ("sq", lambda t: t * t),
    ("sqrtabs", lambda t: (t.abs() + 1).sqrt()),
]
BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("max", lambda a, b: a.maximum(b)),
    ("where", lambda a, b: (a > b).where(a, b * 0.5) if hasattr(a > b, "where") else None),
]


def _where(lib, c, a, b):
    return lib.where(c, a, b)


@st.composite
def programs(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    steps = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 10_000)), min_size=1, max_size=7))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, steps, seed


def build(lib, x, y, steps):
    """Apply the op sequence with `lib` in (lazy, torch); both tensors types share the method names."""
    vals = [x, y]
    for kind, r in steps:
        a = vals[r % len(vals)]
        b = vals[(r // 7) % len(vals)]
        if kind == 0:
            a = UNARY[r % len(UNARY)][1](a)
        elif kind == 1:
            if a.shape != b.shape:
                try:
                    b = b.reshape(a.shape) if b.numel() == a.numel() else b.sum().reshape([1] * a.ndim)
                except (RuntimeError, ValueError):  # a shape reshape cannot reach
                    b = b.sum().reshape([1] * a.ndim)
            op = r % 5
            if op == 4:
                a = _where(lib, a > b, a, b * 0.5)
            else:
                a = BINARY[op][1](a, b)
        elif kind == 2 and a.ndim >= 1:  # reduction, then broadcast back into an elementwise op
            d = r % a.ndim
            red = [a.sum(d, keepdim=True), a.amax(d, keepdim=True), a.mean(d, keepdim=True)][r % 3]
            a = a - red
        elif kind == 3 and a.ndim >= 2:
            perm = list(range(a.ndim))
            perm[0], perm[-1] = perm[-1], perm[0]
            a = a.permute(*perm)
        elif kind == 4:
            a = a.flatten()
        elif kind == 5 and a.shape[0] > 1:
            a = a[1::2] if r % 2 else a[: a.shape[0] - 1]
        elif kind == 6:
            a = a.flip(r % a.ndim)
        elif kind == 7:
            pad = [r % 2, (r // 2) % 3]
            a = torch.nn.functional.pad(a, pad) if lib is torch else a.pad(pad)
        elif kind == 8:
            a = a.unsqueeze(0).expand(2, *a.shape)
        elif kind == 9 and a.ndim >= 1:
            a = a.softmax(r % a.ndim)
        vals.append(a)
    return vals[-1]


@settings(max_examples=int(os.environ.get("LAZY_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_program_matches_torch(prog):
    shape, steps, seed = prog
    rng = np.random.default_rng(seed)
    xa = rng.standard_normal(shape, dtype=np.float32)
    ya = rng.standard_normal(shape, dtype=np.float32)
    ref = build(torch, torch.from_numpy(xa), torch.from_numpy(ya), steps)
    out = build(lazy, lazy.tensor(xa), lazy.tensor(ya), steps)
    assert tuple(out.shape) == tuple(ref.shape)
    torch.testing.assert_close(out.torch(), ref, rtol=1e-4, atol=1e-4, equal_nan=True)
