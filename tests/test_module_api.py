"""The module-level API that programs written for torch reach first, against torch: devices and
`lazy.cuda`/`lazy.accelerator`, from_numpy's shared memory, `.to`/`.cuda`, the default dtype, grad
modes as decorators, inference_mode, autocast and GradScaler, and torch's `axis=`/`keepdims=`.

Every test runs on the compiled C backend and on the reference interpreter.
"""

import warnings

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import lazy
import lazy.nn.functional as F
from lazy import nn, optim


@pytest.fixture(autouse=True, params=["c", "interp"])
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    return request.param


@pytest.fixture
def default_float64():
    lazy.set_default_dtype(lazy.float64)
    yield
    lazy.set_default_dtype(lazy.float32)


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- devices

def test_device_is_torch_device_and_cuda_queries_are_torch():
    dev = lazy.device("cuda" if lazy.cuda.is_available() else "cpu")
    assert dev == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert lazy.device is torch.device and lazy.Size is torch.Size
    assert lazy.cuda.is_available() == torch.cuda.is_available()
    assert lazy.cuda.device_count() == torch.cuda.device_count()
    assert lazy.accelerator.is_available() == torch.accelerator.is_available()
    assert lazy.accelerator.current_accelerator() == torch.accelerator.current_accelerator()
    assert lazy.accelerator.device_count() == torch.accelerator.device_count()
    x = lazy.ones(3, device=dev)
    assert x.device == dev and x.to(dev) is x


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch's errors without a GPU")
def test_cuda_without_gpu_raises_torchs_error_and_seeding_does_not_touch_lazys_stream():
    with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled") as e:
        torch.zeros(1).cuda()
    with pytest.raises(type(e.value), match=str(e.value)):
        lazy.zeros(1).cuda()
    with pytest.raises(type(e.value), match=str(e.value)):
        nn.Linear(2, 2).cuda()
    with pytest.raises(type(e.value)):
        lazy.cuda.synchronize()
    lazy.manual_seed(5)
    a = lazy.rand(4)
    lazy.manual_seed(5)
    lazy.cuda.manual_seed(1)
    lazy.cuda.manual_seed_all(1)
    assert torch.equal(lazy.rand(4).torch(), a.torch())  # torch.cuda.manual_seed leaves the CPU stream too


def test_to_takes_torchs_forms():
    x = lazy.tensor(rand(2, 3))
    t = torch.tensor(rand(2, 3))
    for args, kw in [(("cpu",), {"non_blocking": True}), ((torch.device("cpu"), torch.float64), {}),
                     (("cpu", torch.float16, True), {}), ((torch.bfloat16,), {"non_blocking": True}),
                     ((), {"device": "cpu", "dtype": torch.float64}), ((torch.float64, False, True), {})]:
        a, b = x.to(*args, **kw), t.to(*args, **kw)
        assert a.dtype is lazy.dtypes.as_dtype(b.dtype) and a.device == b.device
        assert_close(a.float().torch(), b.float())
    assert x.to("cpu") is x and x.to(lazy.float32) is x
    c = x.to("cpu", copy=True)
    assert c is not x and torch.equal(c.torch(), x.torch())
    y = lazy.ones(2, dtype=lazy.float64)
    assert x.to(y).dtype is lazy.float64
    m = nn.Linear(2, 2).to("cpu", non_blocking=True).to(torch.float64)
    assert m.weight.dtype is lazy.float64


# ---------------------------------------------------------------- from_numpy

def test_from_numpy_shares_memory_both_ways():
    a = np.arange(6, dtype=np.float32)
    t = lazy.from_numpy(a)
    ta = torch.from_numpy(a.copy())
    assert t.dtype is lazy.float32 and t.shape == (6,)
    before = t * 2  # pending readers of the old contents keep them, as torch's would
    c = t.clone()
    copy = lazy.tensor(a)  # torch.tensor copies: it does not see the writes either
    t.add_(1)
    ta.add_(1)
    np.testing.assert_array_equal(a, ta.numpy())  # visible in the array at once
    t[2:4] = 0
    ta[2:4] = 0
    np.testing.assert_array_equal(a, ta.numpy())
    np.testing.assert_array_equal(before.numpy(), np.arange(6) * 2)
    np.testing.assert_array_equal(c.numpy(), np.arange(6))
    np.testing.assert_array_equal(copy.numpy(), np.arange(6))
    a[0] = 100  # the array's own writes show in the tensor
    assert t[0].item() == 100
    with lazy.no_grad():
        t.mul_(2)
    np.testing.assert_array_equal(a, np.array([200, 4, 0, 0, 10, 12], dtype=np.float32))


def test_from_numpy_parameter_is_trained_in_the_array():
    a = rand(3, 4)
    p = nn.Parameter(lazy.from_numpy(a))
    tp = torch.nn.Parameter(torch.from_numpy(a.copy()))
    lo, to = optim.SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    for _ in range(3):
        for opt, w in ((lo, p), (to, tp)):
            opt.zero_grad()
            (w * w).sum().backward()
            opt.step()
    np.testing.assert_allclose(a, tp.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.numpy(), a)


def test_from_numpy_dtypes_and_errors_are_torchs():
    for dt in (np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_):
        a = np.zeros(3, dtype=dt)
        assert lazy.from_numpy(a).dtype is lazy.dtypes.as_dtype(torch.from_numpy(a).dtype)
    with pytest.raises(TypeError, match="expected np.ndarray"):
        lazy.from_numpy([1, 2])
    with pytest.raises(ValueError):
        lazy.from_numpy(np.arange(4.0)[::-1])  # negative strides, as torch


# ---------------------------------------------------------------- default dtype and grad modes

def test_set_default_dtype(default_float64):
    assert lazy.get_default_dtype() is lazy.float64
    for lz in (lazy.tensor([1.5]), lazy.tensor([1]) * 1.5, lazy.arange(3.0), lazy.zeros(2), lazy.full((2,), 1.5),
               lazy.rand(2), nn.Linear(2, 2).weight, lazy.tensor([1, 2]).exp(), lazy.Tensor([1, 2])):
        assert lz.dtype is lazy.float64
    assert lazy.tensor([0.1]).item() == 0.1  # built in float64, not rounded through float32
    assert torch.get_default_dtype() == torch.float32  # torch's own is left alone
    with pytest.raises(TypeError, match="only floating-point types are supported as the default type"):
        lazy.set_default_dtype(lazy.int64)


def test_grad_modes_as_decorators_with_and_without_parentheses():
    x = lazy.ones(2, requires_grad=True)

    @lazy.no_grad
    def f():
        return (x * 2).requires_grad, lazy.is_grad_enabled()

    @lazy.no_grad()
    def g():
        return lazy.is_grad_enabled()

    @lazy.enable_grad()
    def h():
        return lazy.is_grad_enabled()

    @lazy.no_grad()
    def gen():
        yield lazy.is_grad_enabled()
        yield lazy.is_grad_enabled()

    assert f() == (False, False) and g() is False and lazy.is_grad_enabled()
    with lazy.no_grad():
        assert h() is True and not lazy.is_grad_enabled()
    assert list(gen()) == [False, False] and lazy.is_grad_enabled()
    lazy.set_grad_enabled(False)  # as a statement it stays set, like torch's
    assert not lazy.is_grad_enabled()
    lazy.set_grad_enabled(True)
    with lazy.set_grad_enabled(False):
        assert not lazy.is_grad_enabled()
    assert lazy.is_grad_enabled()


def test_inference_mode():
    x = lazy.ones(2, requires_grad=True)
    with lazy.inference_mode():
        assert not lazy.is_grad_enabled() and lazy.is_inference_mode_enabled()
        assert not (x * 2).requires_grad
    with lazy.inference_mode(False):
        assert lazy.is_grad_enabled() and not lazy.is_inference_mode_enabled()

    @lazy.inference_mode
    def f():
        return lazy.is_grad_enabled()

    @lazy.inference_mode()
    def g():
        return lazy.is_inference_mode_enabled()

    assert f() is False and g() is True and lazy.is_grad_enabled() and not lazy.is_inference_mode_enabled()


# ---------------------------------------------------------------- axis= / keepdims=

@pytest.mark.parametrize("name", ["sum", "mean", "prod", "amax", "amin", "logsumexp", "var", "std", "any", "all",
                                  "argmax", "argmin", "count_nonzero", "softmax", "log_softmax"])
def test_axis_and_keepdims_are_torchs_aliases(name):
    a = rand(3, 4, 5)
    x, t = lazy.tensor(a), torch.tensor(a)
    kw = {} if name in ("softmax", "log_softmax", "count_nonzero") else {"keepdims": True}
    if name in ("any", "all"):
        x, t = x > 0, t > 0
    got = getattr(x, name)(axis=1, **kw)
    want = getattr(t, name)(axis=1, **kw)
    assert_close(got.torch(), want)
    assert_close(getattr(lazy, name)(x, axis=1, **kw).torch(), want)
    with pytest.raises(TypeError):
        getattr(x, name)(dim=1, axis=1)


def test_axis_on_dim_taking_functions():
    a = rand(2, 3)
    x, t = lazy.tensor(a), torch.tensor(a)
    assert_close(x.max(axis=1, keepdims=True).values.torch(), t.max(axis=1, keepdims=True).values)
    assert_close(lazy.cat([x, x], axis=1).torch(), torch.cat([t, t], axis=1))
    assert_close(lazy.stack([x, x], axis=0).torch(), torch.stack([t, t], axis=0))
    assert_close(lazy.var_mean(x, axis=0)[0].torch(), torch.var_mean(t, axis=0)[0])
    assert_close(x.squeeze(axis=0).torch(), t.squeeze(axis=0))
    assert_close(x.unsqueeze(axis=1).torch(), t.unsqueeze(axis=1))


# ---------------------------------------------------------------- autocast

def test_autocast_cpu_casts_torchs_op_list():
    x, w, b = rand(4, 8), rand(3, 8, seed=1), rand(3, seed=2)
    img, cw = rand(1, 2, 5, 5, seed=3), rand(3, 2, 3, 3, seed=4)
    lx, lw, lb, limg, lcw = (lazy.tensor(v) for v in (x, w, b, img, cw))
    tx, tw, tb, timg, tcw = (torch.tensor(v) for v in (x, w, b, img, cw))
    with lazy.autocast("cpu"), torch.autocast("cpu"):
        assert lazy.is_autocast_enabled("cpu") == torch.is_autocast_enabled("cpu")
        pairs = [(F.linear(lx, lw, lb), torch.nn.functional.linear(tx, tw, tb)), (lx @ lw.T, tx @ tw.T),
                 (lazy.mm(lx, lw.T), torch.mm(tx, tw.T)), (lazy.bmm(lx[None], lw.T[None]), torch.bmm(tx[None], tw.T[None])),
                 (F.conv2d(limg, lcw), torch.nn.functional.conv2d(timg, tcw)),
                 (lazy.einsum("ij,kj->ik", lx, lw), torch.einsum("ij,kj->ik", tx, tw)),
                 (lazy.mv(lw, lx[0]), torch.mv(tw, tx[0])),  # not on torch's list: float32
                 (lx.double() @ lw.double().T, tx.double() @ tw.double().T),  # float64 is never cast
                 (lx.exp(), tx.exp()), (lx.bfloat16().prod(), tx.bfloat16().prod()),
                 (F.mse_loss(lx.bfloat16(), lx.bfloat16()), torch.nn.functional.mse_loss(tx.bfloat16(), tx.bfloat16())),
                 (F.cross_entropy(lx.bfloat16(), lazy.tensor([0, 1, 2, 0])),
                  torch.nn.functional.cross_entropy(tx.bfloat16(), torch.tensor([0, 1, 2, 0]))),
                 (F.scaled_dot_product_attention(lx[None], lx[None], lx[None]),
                  torch.nn.functional.scaled_dot_product_attention(tx[None], tx[None], tx[None]))]
        with lazy.autocast("cpu", enabled=False), torch.autocast("cpu", enabled=False):
            pairs.append((lx @ lw.T, tx @ tw.T))
    assert not lazy.is_autocast_enabled("cpu")
    for got, want in pairs:
        assert got.dtype is lazy.dtypes.as_dtype(want.dtype)
        assert_close(got.float().torch(), want.float(), rtol=2e-2, atol=2e-2)


def test_autocast_gradients_reach_float32_parameters_and_float16_dtype():
    x, w = rand(4, 8), rand(3, 8, seed=1)
    lw, tw = lazy.tensor(w).requires_grad_(), torch.tensor(w).requires_grad_()

    @lazy.autocast("cpu", dtype=lazy.float16)
    def fwd(v):
        return F.linear(v, lw)

    y = fwd(lazy.tensor(x))
    with torch.autocast("cpu", dtype=torch.float16):
        ty = torch.nn.functional.linear(torch.tensor(x), tw)
    assert y.dtype is lazy.float16 and ty.dtype == torch.float16
    y.float().sum().backward()
    ty.float().sum().backward()
    assert lw.grad.dtype is lazy.float32
    assert_close(lw.grad.torch(), tw.grad, rtol=1e-2, atol=1e-2)


def test_autocast_cuda_without_gpu_is_disabled_with_torchs_warning():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        ctx = lazy.autocast("cuda")
    with ctx:
        assert not lazy.is_autocast_enabled("cuda")
        assert (lazy.ones(2, 2) @ lazy.ones(2, 2)).dtype is lazy.float32
    with pytest.warns(FutureWarning, match="torch.cuda.amp.autocast"), pytest.warns(UserWarning):
        lazy.cuda.amp.autocast()
    with pytest.warns(UserWarning, match="target dtype is not supported"):
        assert not lazy.autocast("cpu", dtype=lazy.float64)._enabled
    with pytest.raises(RuntimeError, match="unsupported autocast device_type 'tpu'"):
        lazy.autocast("tpu")


# ---------------------------------------------------------------- GradScaler

def _scaler_run(mod, scaler_ctor, steps=4, inf_at=2):
    torch.manual_seed(0)
    lazy.manual_seed(0)
    model = mod.nn.Linear(4, 3)
    opt = mod.optim.SGD(model.parameters(), lr=0.1)
    scaler = scaler_ctor()
    x = mod.tensor(rand(5, 4))
    scales, ws = [], []
    for i in range(steps):
        opt.zero_grad()
        loss = (model(x) ** 2).mean() * (float("inf") if i == inf_at else 1.0)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        ws.append(np.array(model.weight.detach().numpy()))
    return scales, ws, scaler


def test_grad_scaler_enabled_matches_torch():
    kw = {"init_scale": 2.0 ** 10, "growth_interval": 2}
    ls, lws, lsc = _scaler_run(lazy, lambda: lazy.amp.GradScaler("cpu", **kw))
    ts, tws, tsc = _scaler_run(torch, lambda: torch.amp.GradScaler("cpu", **kw))
    assert ls == ts  # grows after 2 clean steps, backs off at the inf, skips that step
    for a, b in zip(lws, tws):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert lsc.state_dict() == tsc.state_dict()
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        lsc.scale(lazy.ones(()))
        opt = optim.SGD([nn.Parameter(lazy.ones(2))], lr=1.0)
        opt.param_groups[0]["params"][0].grad = lazy.ones(2)
        lsc.unscale_(opt)
        lsc.unscale_(opt)


def test_grad_scaler_disabled_without_cuda_behaves_as_torchs():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ls, lws, lsc = _scaler_run(lazy, lambda: lazy.cuda.amp.GradScaler(), inf_at=-1)
        ts, tws, tsc = _scaler_run(torch, lambda: torch.cuda.amp.GradScaler(), inf_at=-1)
    assert ls == ts == [1.0] * 4 and not lsc.is_enabled() and lsc.state_dict() == {} == tsc.state_dict()
    for a, b in zip(lws, tws):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="GradScaler is enabled, but CUDA is not available"):
        lazy.amp.GradScaler()
    with pytest.warns(FutureWarning, match="torch.cuda.amp.GradScaler"):
        lazy.cuda.amp.GradScaler(enabled=False)
    from lazy.cuda.amp import GradScaler, autocast  # importable as torch.cuda.amp's

    assert GradScaler is lazy.cuda.amp.GradScaler and autocast is lazy.cuda.amp.autocast
