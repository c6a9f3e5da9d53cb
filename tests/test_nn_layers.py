"""The nn layers real programs reach for after the core ones, against torch (values and gradients):
BatchNorm1d/2d/3d with their running statistics over training steps, GroupNorm, adaptive pooling,
interpolate/Upsample, ConvTranspose2d, binary cross entropy and its modules, gradient clipping,
and each new module's repr.

Every test runs on the compiled C backend and on the reference interpreter.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.testing import assert_close

import lazy
import lazy.nn.functional as F
from lazy import nn, optim

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True, params=["c", "interp"])
def backend(request, monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", request.param)
    return request.param


def rand(*shape, seed=0, lo=None, hi=None):
    r = np.random.default_rng(seed)
    a = r.standard_normal(shape) if lo is None else r.uniform(lo, hi, shape)
    return a.astype(np.float32)


def check_fn(lazy_fn, torch_fn, *arrays, tol=TOL, grad=True, dtype=torch.float32):
    """Values of f(*arrays) and gradients of sum(f * fixed weights) against torch."""
    lts = [lazy.tensor(torch.tensor(a).to(dtype)) for a in arrays]
    tts = [torch.tensor(a).to(dtype) for a in arrays]
    if grad:
        lts = [t.requires_grad_() for t in lts]
        tts = [t.requires_grad_() for t in tts]
    lo, to = lazy_fn(*lts), torch_fn(*tts)
    assert lo.dtype is lazy.dtypes.as_dtype(to.dtype) and tuple(lo.shape) == tuple(to.shape)
    assert_close(lo.torch().double(), to.detach().double(), **tol)
    if grad and to.numel():
        w = rand(*to.shape, seed=99)
        (lo * lazy.tensor(w).to(lo.dtype)).sum().backward()
        (to * torch.tensor(w).to(to.dtype)).sum().backward()
        for lt, tt in zip(lts, tts):
            if tt.grad is None:
                assert lt.grad is None
            else:
                assert_close(lt.grad.torch().double(), tt.grad.double(), **tol)


# ---------------------------------------------------------------- BatchNorm

@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (6, 4)), ("BatchNorm1d", (5, 4, 7)), ("BatchNorm2d", (3, 4, 5, 3)),
                                       ("BatchNorm3d", (2, 4, 3, 2, 3))])
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"momentum": 0.3, "affine": False},
                                {"track_running_stats": False}, {"eps": 1e-3, "bias": False}])
def test_batchnorm_training_steps_and_eval_match_torch(cls, shape, kw):
    """Three training steps (the running statistics updated in place, each step's loss backward
    through a changing input) and eval, against torch: outputs, parameter gradients, buffers."""
    lazy.manual_seed(0)
    torch.manual_seed(0)
    lm, tm = getattr(nn, cls)(4, **kw), getattr(torch.nn, cls)(4, **kw)
    for step in range(3):
        x = rand(*shape, seed=step) * (step + 1) + step
        lx, tx = lazy.tensor(x).requires_grad_(), torch.tensor(x).requires_grad_()
        ly, ty = lm(lx), tm(tx)
        assert_close(ly.torch(), ty.detach(), **TOL)
        w = rand(*shape, seed=50 + step)
        (ly * lazy.tensor(w)).sum().backward()
        (ty * torch.tensor(w)).sum().backward()
        assert_close(lx.grad.torch(), tx.grad, **TOL)
    for (name, lb), (_, tb) in zip(lm.named_buffers(), tm.named_buffers()):
        assert_close(lb.torch(), tb, rtol=1e-5, atol=1e-6, msg=name)
    for lp, tp in zip(lm.parameters(), tm.parameters()):
        assert_close(lp.grad.torch(), tp.grad, **TOL)
    lm.eval()
    tm.eval()
    x = rand(*shape, seed=9)
    check_fn(lm, tm, x)
    assert set(lm.state_dict()) == set(tm.state_dict())


def test_batchnorm_state_dict_round_trip_with_torch_and_repr():
    tm = torch.nn.BatchNorm2d(3, momentum=None)
    tm(torch.randn(4, 3, 2, 2) * 3 + 1)
    lm = nn.BatchNorm2d(3, momentum=None)
    lm.load_state_dict(tm.state_dict())
    assert lm.num_batches_tracked.item() == 1 and lm.num_batches_tracked.dtype is lazy.int64
    x = rand(4, 3, 2, 2)
    lm(lazy.tensor(x))
    tm(torch.tensor(x))
    assert_close(lm.running_var.torch(), tm.running_var)
    back = torch.nn.BatchNorm2d(3)
    back.load_state_dict({k: v.torch() for k, v in lm.state_dict().items()})
    assert_close(back.running_mean, tm.running_mean)
    for m in (nn.BatchNorm2d(3), nn.BatchNorm1d(4, momentum=None, affine=False), nn.BatchNorm3d(2, eps=1e-3),
              nn.GroupNorm(2, 4), nn.GroupNorm(1, 3, affine=False)):
        t = getattr(torch.nn, type(m).__name__)(*([m.num_features] if hasattr(m, "num_features") else
                                                   [m.num_groups, m.num_channels]),
                                                **({"momentum": m.momentum} if hasattr(m, "momentum") else {}),
                                                eps=m.eps, affine=m.affine)
        assert repr(m) == repr(t)


def test_batchnorm_running_stats_do_not_grow_the_graph_or_carry_gradients():
    bn = nn.BatchNorm1d(3)
    lin = nn.Linear(2, 3)
    opt = optim.SGD(list(bn.parameters()) + list(lin.parameters()), lr=0.1)
    for i in range(3):
        loss = bn(lin(lazy.tensor(rand(8, 2, seed=i)))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert bn.running_mean._node.op is lazy.graph.Op.BUFFER  # written with the step, into its buffer
    assert bn.num_batches_tracked.item() == 3
    assert not bn.running_mean.requires_grad and not bn.running_var.requires_grad


def test_batch_norm_functional_and_errors():
    x = rand(5, 3, 4)
    rm, rv = rand(3), rand(3, lo=0.5, hi=2.0)
    w, b = rand(3, seed=1), rand(3, seed=2)
    check_fn(lambda a, m, v, ww, bb: F.batch_norm(a, m.detach(), v.detach(), ww, bb, training=False),
             lambda a, m, v, ww, bb: TF.batch_norm(a, m.detach(), v.detach(), ww, bb, training=False), x, rm, rv, w, b)
    lrm, lrv, trm, trv = lazy.tensor(rm), lazy.tensor(rv), torch.tensor(rm), torch.tensor(rv)
    F.batch_norm(lazy.tensor(x), lrm, lrv, training=True, momentum=0.25)
    TF.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.25)
    assert_close(lrm.torch(), trm)
    assert_close(lrv.torch(), trv)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(lazy.ones(1, 3), None, None, training=True)
    with pytest.raises(RuntimeError, match="running_mean must be defined in evaluation mode"):
        F.batch_norm(lazy.ones(2, 3), None, None, training=False)
    with pytest.raises(ValueError, match="expected 4D input \\(got 2D input\\)"):
        nn.BatchNorm2d(3)(lazy.ones(2, 3))
    with pytest.raises(ValueError, match="expected 2D or 3D input \\(got 4D input\\)"):
        nn.BatchNorm1d(3)(lazy.ones(2, 3, 4, 5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_norms_in_other_dtypes(dtype):
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype != torch.float64 else {"rtol": 1e-10, "atol": 1e-12}
    x = rand(4, 6, 3)
    check_fn(lambda a: F.group_norm(a, 3), lambda a: TF.group_norm(a, 3), x, dtype=dtype, tol=tol)
    check_fn(lambda a: F.batch_norm(a, None, None, training=True), lambda a: TF.batch_norm(a, None, None, training=True),
             x, dtype=dtype, tol=tol)


# ---------------------------------------------------------------- GroupNorm

@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((3, 4, 3, 3), 2), ((2, 10), 5), ((2, 4, 1, 1), 1), ((4, 6, 7), 6)])
def test_group_norm(shape, groups):
    c = shape[1]
    check_fn(lambda x, w, b: F.group_norm(x, groups, w, b, eps=1e-4), lambda x, w, b: TF.group_norm(x, groups, w, b, 1e-4),
             rand(*shape), rand(c, seed=1), rand(c, seed=2))
    lm, tm = nn.GroupNorm(groups, c), torch.nn.GroupNorm(groups, c)
    check_fn(lm, tm, rand(*shape, seed=3))
    with pytest.raises(RuntimeError, match="Expected number of channels in input to be divisible by num_groups"):
        F.group_norm(lazy.ones(2, 5, 3), 2)
    with pytest.raises(ValueError, match=r"num_channels \(3\) must be divisible by num_groups \(2\)"):
        nn.GroupNorm(2, 3)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size \[1, 5\]"):
        F.group_norm(lazy.ones(1, 5), 5)


# ---------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("out", [(3, 4), (7, 9), 1, (14, 5), (2, None), 5, (None, 2), (9, 3)])
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (3, 7, 9)])
def test_adaptive_pools(out, shape):
    x = rand(*shape)
    check_fn(lambda a: F.adaptive_avg_pool2d(a, out), lambda a: TF.adaptive_avg_pool2d(a, out), x)
    check_fn(lambda a: F.adaptive_max_pool2d(a, out), lambda a: TF.adaptive_max_pool2d(a, out), x)
    check_fn(nn.AdaptiveAvgPool2d(out), torch.nn.AdaptiveAvgPool2d(out), x, grad=False)
    check_fn(nn.AdaptiveMaxPool2d(out), torch.nn.AdaptiveMaxPool2d(out), x, grad=False)


def test_adaptive_pools_ties_nan_and_dtypes():
    x = np.zeros((1, 1, 5, 7), np.float32)
    x[0, 0, 1, 2] = np.nan
    check_fn(lambda a: F.adaptive_max_pool2d(a, (2, 3)), lambda a: TF.adaptive_max_pool2d(a, (2, 3)), x,
             tol={"rtol": 0, "atol": 0, "equal_nan": True})  # ties: the first maximum in row-major order
    check_fn(lambda a: F.adaptive_avg_pool2d(a, (2, 3)), lambda a: TF.adaptive_avg_pool2d(a, (2, 3)), x, grad=False,
             tol={"rtol": 1e-6, "atol": 1e-6, "equal_nan": True})  # NaN stays in its windows
    for dtype in (torch.float64, torch.bfloat16):
        check_fn(lambda a: F.adaptive_avg_pool2d(a, (3, 2)), lambda a: TF.adaptive_avg_pool2d(a, (3, 2)), rand(2, 5, 7),
                 dtype=dtype, tol={"rtol": 1e-2, "atol": 1e-2})


# ---------------------------------------------------------------- interpolate

INTERP = [({"scale_factor": 2}, 4), ({"scale_factor": 3, "mode": "bilinear"}, 4),
          ({"scale_factor": 2, "mode": "bilinear", "align_corners": True}, 4), ({"size": (5, 13), "mode": "bilinear"}, 4),
          ({"size": (5, 13)}, 4), ({"size": (3, 4), "mode": "bilinear"}, 4), ({"scale_factor": 0.5}, 4),
          ({"scale_factor": 1.5, "mode": "bilinear"}, 4), ({"scale_factor": (2, 0.5), "mode": "nearest-exact"}, 4),
          ({"size": (4, 4), "mode": "area"}, 4), ({"scale_factor": 2.5, "mode": "bilinear", "recompute_scale_factor": True}, 4),
          ({"size": (7, 9), "mode": "bilinear"}, 4), ({"size": 1, "mode": "bilinear", "align_corners": True}, 4),
          ({"scale_factor": 2, "mode": "linear"}, 3), ({"size": 11, "mode": "linear", "align_corners": True}, 3),
          ({"scale_factor": 3}, 3), ({"size": (5, 6, 7), "mode": "trilinear", "align_corners": True}, 5),
          ({"scale_factor": 2, "mode": "trilinear"}, 5), ({"size": (4, 2, 6)}, 5)]


@pytest.mark.parametrize("kw,ndim", INTERP)
def test_interpolate(kw, ndim):
    x = rand(*{3: (2, 3, 6), 4: (2, 3, 6, 7), 5: (1, 2, 3, 4, 5)}[ndim])
    check_fn(lambda a: F.interpolate(a, **kw), lambda a: TF.interpolate(a, **kw), x)


def test_upsample_modules_dtypes_and_errors():
    x = rand(2, 3, 4, 5)
    for lm, tm in [(nn.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2)),
                   (nn.Upsample(size=(7, 3), mode="bilinear"), torch.nn.Upsample(size=(7, 3), mode="bilinear")),
                   (nn.UpsamplingBilinear2d(scale_factor=2), torch.nn.UpsamplingBilinear2d(scale_factor=2)),
                   (nn.UpsamplingNearest2d(size=6), torch.nn.UpsamplingNearest2d(size=6))]:
        check_fn(lm, tm, x)
        assert repr(lm) == repr(tm)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        tol = {"rtol": 1e-2, "atol": 1e-2} if dtype != torch.float64 else {"rtol": 1e-12, "atol": 1e-12}
        check_fn(lambda a: F.interpolate(a, scale_factor=2, mode="bilinear"),
                 lambda a: TF.interpolate(a, scale_factor=2, mode="bilinear"), x, dtype=dtype, tol=tol)
    img = torch.randint(0, 255, (1, 3, 4, 5), dtype=torch.uint8)
    for kw in ({"scale_factor": 2}, {"size": (3, 7)}):
        assert torch.equal(F.interpolate(lazy.tensor(img), **kw).torch(), TF.interpolate(img, **kw))
    with pytest.raises(ValueError, match="align_corners option can only be set with the interpolating modes"):
        F.interpolate(lazy.tensor(x), scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="only one of size or scale_factor should be defined"):
        F.interpolate(lazy.tensor(x), size=3, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor should be defined"):
        F.interpolate(lazy.tensor(x))
    with pytest.raises(NotImplementedError):
        F.interpolate(lazy.tensor(x), scale_factor=2, mode="linear")


# ---------------------------------------------------------------- ConvTranspose2d

CONVT = [{}, {"stride": 2}, {"stride": 2, "padding": 1, "output_padding": 1},
         {"stride": (2, 3), "padding": (1, 2), "dilation": 2, "output_padding": (1, 0)}, {"groups": 3, "stride": 2},
         {"padding": (2, 0)}, {"stride": 3, "dilation": (1, 2), "padding": (0, 1)}]


@pytest.mark.parametrize("kw", CONVT)
def test_conv_transpose2d(kw):
    g = kw.get("groups", 1)
    x, w = rand(2, 3 if g == 1 else 6, 5, 4), rand(3 if g == 1 else 6, 4 if g == 1 else 2, 3, 2, seed=1)
    b = rand(w.shape[1] * g, seed=2)
    check_fn(lambda a, ww, bb: F.conv_transpose2d(a, ww, bb, **kw), lambda a, ww, bb: TF.conv_transpose2d(a, ww, bb, **kw),
             x, w, b, tol={"rtol": 1e-4, "atol": 1e-4})
    check_fn(lambda a, ww: F.conv_transpose2d(a, ww, **kw), lambda a, ww: TF.conv_transpose2d(a, ww, **kw), x[0], w,
             tol={"rtol": 1e-4, "atol": 1e-4})


def test_conv_transpose2d_module_init_output_size_repr_and_errors():
    for args, kw in [((4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
                     ((2, 2, (2, 3)), {"bias": False}), ((3, 5, 2), {"dilation": 2})]:
        lazy.manual_seed(3)
        torch.manual_seed(3)
        lm, tm = nn.ConvTranspose2d(*args, **kw), torch.nn.ConvTranspose2d(*args, **kw)
        assert repr(lm) == repr(tm)
        assert_close(lm.weight.torch(), tm.weight.detach())  # torch's init on the same generator
        check_fn(lm, tm, rand(2, args[0], 4, 3), grad=False, tol={"rtol": 1e-4, "atol": 1e-4})
    lm, tm = nn.ConvTranspose2d(2, 3, 3, stride=2), torch.nn.ConvTranspose2d(2, 3, 3, stride=2)
    lm.load_state_dict(tm.state_dict())
    x = rand(1, 2, 4, 4)
    assert_close(lm(lazy.tensor(x), output_size=(10, 9)).torch(), tm(torch.tensor(x), output_size=(10, 9)).detach(),
                 rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="requested an output size of"):
        lm(lazy.tensor(x), output_size=(20, 20))
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride or dilation"):
        F.conv_transpose2d(lazy.tensor(x), lm.weight, output_padding=1)
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.ConvTranspose2d(3, 4, 2, groups=2)


# ---------------------------------------------------------------- binary cross entropy

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction, weighted):
    p, t = rand(4, 5, lo=0.01, hi=0.99), rand(4, 5, seed=1, lo=0, hi=1)
    w = rand(5, seed=2, lo=0.5, hi=2)
    lw, tw = (lazy.tensor(w), torch.tensor(w)) if weighted else (None, None)  # torch: no gradient for the weight
    check_fn(lambda a, b: F.binary_cross_entropy(a, b, lw, reduction=reduction),
             lambda a, b: TF.binary_cross_entropy(a, b, tw, reduction=reduction), p, t)
    lm = nn.BCELoss(weight=lazy.tensor(w) if weighted else None, reduction=reduction)
    tm = torch.nn.BCELoss(weight=torch.tensor(w) if weighted else None, reduction=reduction)
    check_fn(lm, tm, p, t, grad=False)


def test_binary_cross_entropy_clamps_like_torch_and_has_torchs_gradient():
    p = np.array([0.0, 1.0, 1e-20, 0.5, 1 - 1e-7, 1e-30, 0.3], np.float32)
    t = np.array([1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 0.2], np.float32)
    lp, lt = lazy.tensor(p).requires_grad_(), lazy.tensor(t).requires_grad_()
    tp, tt = torch.tensor(p).requires_grad_(), torch.tensor(t).requires_grad_()
    lo, to = F.binary_cross_entropy(lp, lt, reduction="none"), TF.binary_cross_entropy(tp, tt, reduction="none")
    assert_close(lo.torch(), to.detach(), rtol=1e-5, atol=1e-5)  # 100 where the log is clamped, as torch's
    lo.sum().backward()
    to.sum().backward()
    assert_close(lp.grad.torch(), tp.grad, rtol=1e-5, atol=1e-5)  # (x - t) / max(x (1 - x), 1e-12)
    inside = (p > 0) & (p < 1)
    assert_close(lt.grad.torch()[inside], tt.grad[inside], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Using a target size"):
        F.binary_cross_entropy(lazy.ones(3) * 0.5, lazy.ones(2))


def test_binary_cross_entropy_second_order_and_logits_module():
    p, t = rand(6, lo=0.05, hi=0.95).astype(np.float64), rand(6, seed=1, lo=0, hi=1).astype(np.float64)
    lp, tp = lazy.tensor(p).requires_grad_(), torch.tensor(p).requires_grad_()
    (g,) = lazy.autograd.grad(F.binary_cross_entropy(lp, lazy.tensor(t)), lp, create_graph=True)
    (tg,) = torch.autograd.grad(TF.binary_cross_entropy(tp, torch.tensor(t)), tp, create_graph=True)
    assert_close(lazy.autograd.grad((g * g).sum(), lp)[0].torch(), torch.autograd.grad((tg * tg).sum(), tp)[0])
    x, y, pw = rand(3, 4), rand(3, 4, seed=1, lo=0, hi=1), rand(4, seed=2, lo=0.5, hi=2)
    lm = nn.BCEWithLogitsLoss(pos_weight=lazy.tensor(pw))
    tm = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw))
    check_fn(lm, tm, x, y)
    check_fn(nn.L1Loss(reduction="sum"), torch.nn.L1Loss(reduction="sum"), x, y)
    for m, t_ in [(nn.BCELoss(), torch.nn.BCELoss()), (lm, tm), (nn.L1Loss(), torch.nn.L1Loss())]:
        assert repr(m) == repr(t_)


# ---------------------------------------------------------------- nn.utils

def _grads_pair(seed=0):
    shapes = [(4, 3), (3,), (2, 2, 2)]
    vals = [rand(*s, seed=seed + i) for i, s in enumerate(shapes)]
    grads = [rand(*s, seed=seed + 10 + i) * 3 for i, s in enumerate(shapes)]
    lps = [nn.Parameter(lazy.tensor(v)) for v in vals]
    tps = [torch.nn.Parameter(torch.tensor(v)) for v in vals]
    for lp, tp, g in zip(lps, tps, grads):
        lp.grad, tp.grad = lazy.tensor(g.copy()), torch.tensor(g)
    return lps, tps


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1), (2.0, math.inf), (1.0, 3.0)])
def test_clip_grad_norm(max_norm, norm_type):
    lps, tps = _grads_pair()
    ln = nn.utils.clip_grad_norm_(lps, max_norm, norm_type)
    tn = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
    assert_close(ln.torch(), tn)
    for lp, tp in zip(lps, tps):
        assert_close(lp.grad.torch(), tp.grad)
    lps[0].grad = lazy.tensor([[math.inf, 0, 0]] * 4)
    with pytest.raises(RuntimeError, match="is non-finite, so it cannot be clipped"):
        nn.utils.clip_grad_norm_(lps, max_norm, norm_type, error_if_nonfinite=True)
    assert nn.utils.clip_grad_norm_([nn.Parameter(lazy.ones(2))], 1.0).item() == 0.0  # no gradients


def test_clip_grad_value_and_vectors():
    lps, tps = _grads_pair(1)
    nn.utils.clip_grad_value_(lps, 0.7)
    torch.nn.utils.clip_grad_value_(tps, 0.7)
    for lp, tp in zip(lps, tps):
        assert_close(lp.grad.torch(), tp.grad)
    v = nn.utils.parameters_to_vector(lps)
    assert_close(v.torch(), torch.nn.utils.parameters_to_vector(tps).detach())
    nn.utils.vector_to_parameters(v * 2, lps)
    torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(tps).detach() * 2, tps)
    for lp, tp in zip(lps, tps):
        assert_close(lp.torch(), tp.detach())
        assert lp.is_leaf and lp.requires_grad


def test_clip_grad_norm_in_a_training_step_is_one_schedule(backend):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    tmodel.load_state_dict({k: v.torch() for k, v in model.state_dict().items()})
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
    x, y = rand(5, 4), rand(5, 2, seed=1)
    for _ in range(3):
        loss = F.mse_loss(model(lazy.tensor(x)), lazy.tensor(y))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        with lazy.profile() as prof:
            opt.step()
        assert prof.realizes == (backend != "interp")  # the clipped gradients are computed in the step's schedule
        tl = TF.mse_loss(tmodel(torch.tensor(x)), torch.tensor(y))
        topt.zero_grad()
        tl.backward()
        torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 0.1)
        topt.step()
    for lp, tp in zip(model.parameters(), tmodel.parameters()):
        assert_close(lp.torch(), tp.detach(), rtol=1e-5, atol=1e-6)
