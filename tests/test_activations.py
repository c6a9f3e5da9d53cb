"""nn activations against torch: values and gradients, at their kinks and bounds too (hardtanh's
gradient is 0 at its bounds, hardswish's -1/2 at -3), and far out (logsigmoid at -100)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lazy

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")

TF, LF = torch.nn.functional, lazy.nn.functional
EDGES = [-100.0, -7.0, -6.0, -3.0, -2.5, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0, 5.9, 6.0, 7.5, 30.0]

FUNCTIONAL = {
    "hardtanh": ((), {}), "hardtanh(-2, 0.5)": ((-2.0, 0.5), {}), "relu6": ((), {}), "hardsigmoid": ((), {}),
    "hardswish": ((), {}), "selu": ((), {}), "celu": ((), {}), "celu(0.5)": ((0.5,), {}), "elu": ((), {}),
    "softsign": ((), {}), "logsigmoid": ((), {}), "mish": ((), {}), "tanhshrink": ((), {}),
    "threshold": ((0.5, -2.0), {}), "softplus": ((), {}), "softmin": ((), {"dim": -1}),
    "glu": ((), {"dim": 0}), "normalize": ((), {"dim": -1}), "normalize(p=1)": ((), {"p": 1.0, "dim": 0}),
}


def _call(mod, name, x):
    args, kw = FUNCTIONAL[name]
    return getattr(mod, name.split("(")[0])(x, *args, **kw)


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_values_and_gradients_match_torch(name):
    rng = np.random.default_rng(1)
    data = np.concatenate([EDGES, rng.standard_normal(15) * 4]).astype(np.float32).reshape(2, 15)
    t = torch.tensor(data, requires_grad=True)
    want = _call(TF, name, t)
    g = torch.tensor(rng.standard_normal(tuple(want.shape)).astype(np.float32))
    (want * g).sum().backward()
    x = lazy.tensor(data).requires_grad_()
    got = _call(LF, name, x)
    (got * lazy.tensor(g)).sum().backward()
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=2e-5, atol=1e-6)


MODULES = {"ELU": (), "CELU": (0.7,), "Hardtanh": (-0.5, 2.0), "ReLU6": (), "Hardsigmoid": (), "Hardswish": (),
           "SELU": (), "Mish": (), "Softsign": (), "LogSigmoid": (), "Tanhshrink": (), "Softplus": (2.0, 5.0),
           "Threshold": (0.1, 20.0), "GLU": (1,), "Softmin": (1,)}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_match_torch_on_views(name):
    data = torch.randn(6, 9, generator=torch.Generator().manual_seed(2)) * 3
    want = getattr(torch.nn, name)(*MODULES[name])(data.T)
    got = getattr(lazy.nn, name)(*MODULES[name])(lazy.tensor(data).T)  # a transposed view
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-6, atol=1e-6)
    assert name in repr(getattr(lazy.nn, name)(*MODULES[name]))


def test_nan_passes_through_the_clamping_activations():
    x = torch.tensor([float("nan"), 1.0])
    for name in ("hardtanh", "relu6", "hardsigmoid"):
        np.testing.assert_array_equal(getattr(LF, name)(lazy.tensor(x)).numpy(), getattr(TF, name)(x).numpy())


def test_bad_arguments_raise_at_the_call():
    with pytest.raises(ValueError, match="hardtanh: min_val cannot be greater than max_val"):
        LF.hardtanh(lazy.ones(3), 2.0, 1.0)
    with pytest.raises(RuntimeError, match="glu: halving dimension must be even, but dimension -1 is size 3"):
        LF.glu(lazy.ones(2, 3))
    with pytest.raises(ValueError, match="celu: alpha cannot be 0"):
        LF.celu(lazy.ones(2), 0.0)


def test_an_activation_chain_is_one_kernel():
    from conftest import kernels_of

    x = lazy.tensor(torch.randn(64, 33))
    assert len(kernels_of(lambda: LF.mish(LF.hardswish(LF.selu(x))).realize())) == 1


def test_configured_modules_take_torch_arguments_and_reject_others():
    assert lazy.nn.ELU(0.5).alpha == 0.5 and lazy.nn.Softmax(dim=1).dim == 1
    assert lazy.nn.LeakyReLU(0.2, True).inplace is True
    assert "threshold=0.1, value=20.0" in repr(lazy.nn.Threshold(0.1, value=20.0))
    with pytest.raises(TypeError, match="Threshold: missing argument"):
        lazy.nn.Threshold(0.1)
    with pytest.raises(TypeError, match="Softmax: takes at most 1 arguments"):
        lazy.nn.Softmax(1, 2)
    with pytest.raises(TypeError, match="ELU: unexpected or repeated argument 'beta'"):
        lazy.nn.ELU(beta=2.0)
