"""bernoulli, multinomial and the in-place fills against torch: with lazy.manual_seed(s) they draw
exactly torch's numbers after torch.manual_seed(s) (the same sampler on the same generator state),
in every float dtype; fills of views reach the base; leaves follow torch's in-place rule; and a
statistical check that multinomial without replacement has torch's distribution.

Every test runs on the compiled C backend and on the reference interpreter.
"""

import numpy as np
import pytest
import torch

import lazy
from lazy import nn


@pytest.fixture(autouse=True, params=["c", "interp"])
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    return request.param


def seeded(seed=7):
    lazy.manual_seed(seed)
    torch.manual_seed(seed)


FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(), (1,), (5, 7), (0, 3)])
def test_bernoulli_draws_torchs_numbers(dtype, shape):
    p = torch.rand(shape, dtype=torch.float64).to(dtype)
    seeded()
    got, want = lazy.bernoulli(lazy.tensor(p)), torch.bernoulli(p)
    assert got.dtype is lazy.dtypes.as_dtype(dtype) and torch.equal(got.torch(), want)
    got, want = lazy.tensor(p).bernoulli(0.3), torch.bernoulli(p, 0.3)
    assert torch.equal(got.torch(), want)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(lazy.bernoulli(lazy.tensor(p) * 0.5, generator=g1).torch(), torch.bernoulli(p * 0.5, generator=g2))


@pytest.mark.parametrize("replacement", [False, True])
def test_multinomial_draws_torchs_numbers(replacement):
    w = torch.rand(4, 10)
    w[1, :5] = 0
    seeded()
    for n in (1, 3, 5):
        got, want = lazy.multinomial(lazy.tensor(w), n, replacement), torch.multinomial(w, n, replacement)
        assert got.dtype is lazy.int64 and torch.equal(got.torch(), want)
    got, want = lazy.tensor(w[0] * 3).multinomial(20, replacement=True), torch.multinomial(w[0] * 3, 20, True)
    assert torch.equal(got.torch(), want)
    with pytest.raises(RuntimeError):
        lazy.multinomial(lazy.tensor(w), 11, replacement=False)  # torch's error: more samples than categories


def test_multinomial_without_replacement_has_torchs_distribution():
    """The first two draws of 20000 rows, as frequencies, against the exact probabilities of drawing
    without replacement (independent of any generator)."""
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    seeded(3)
    s = lazy.multinomial(lazy.tensor(w).expand(20000, 4), 2).numpy()
    p = (w / w.sum()).numpy()
    first = np.bincount(s[:, 0], minlength=4) / len(s)
    second = np.bincount(s[:, 1], minlength=4) / len(s)
    want_second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(4)])
    assert np.abs(first - p).max() < 0.015 and np.abs(second - want_second).max() < 0.015
    assert (s[:, 0] != s[:, 1]).all()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fill,args", [("uniform_", ()), ("uniform_", (-2.0, 3.0)), ("normal_", ()), ("normal_", (1.0, 0.5)),
                                       ("exponential_", ()), ("exponential_", (3.0,)), ("bernoulli_", ()),
                                       ("bernoulli_", (0.2,)), ("log_normal_", ()), ("cauchy_", ()),
                                       ("geometric_", (0.3,))])
def test_fills_draw_torchs_numbers(dtype, fill, args):
    x, t = lazy.zeros(6, 5, dtype=dtype), torch.zeros(6, 5, dtype=dtype)
    seeded()
    assert getattr(x, fill)(*args) is x
    getattr(t, fill)(*args)
    assert torch.equal(x.torch(), t)
    getattr(x[2:4], fill)(*args)  # through a view: the base changes, as in torch
    getattr(t[2:4], fill)(*args)
    assert torch.equal(x.torch(), t)


def test_fills_with_tensor_probability_generator_and_ints():
    p = torch.rand(3, 4)
    x, t = lazy.zeros(3, 4), torch.zeros(3, 4)
    seeded()
    x.bernoulli_(lazy.tensor(p))
    t.bernoulli_(p)
    assert torch.equal(x.torch(), t)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x.uniform_(generator=g1)
    t.uniform_(generator=g2)
    assert torch.equal(x.torch(), t)
    i, ti = lazy.zeros(10, dtype=lazy.int64), torch.zeros(10, dtype=torch.int64)
    i.random_(3, 9)
    ti.random_(3, 9)
    assert torch.equal(i.torch(), ti)


def test_fill_of_a_leaf_follows_torchs_rule_and_keeps_the_parameter():
    p = nn.Parameter(lazy.zeros(3, 4))
    tp = torch.nn.Parameter(torch.zeros(3, 4))
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        p.uniform_()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        tp.uniform_()
    seeded()
    with lazy.no_grad():
        p.normal_()
    with torch.no_grad():
        tp.normal_()
    assert torch.equal(p.torch(), tp.detach()) and p.is_leaf and p.requires_grad
    (p * 2).sum().backward()
    assert torch.equal(p.grad.torch(), torch.full((3, 4), 2.0))
