"""lazy.optim.lr_scheduler against torch.optim.lr_scheduler: 50 steps of each scheduler give torch's
learning rates (and OneCycleLR's momentum or beta1), with two parameter groups; state dicts have
torch's entries and restore a scheduler mid-schedule; torch's warnings and errors; and a scheduled
training run compiles its step once."""

import math
import warnings

import numpy as np
import pytest
import torch

import lazy
from lazy import nn, optim, runtime
from lazy.optim import lr_scheduler as lls

tls = torch.optim.lr_scheduler
STEPS = 50


def pair(opt_name="SGD", **kw):
    """A lazy and a torch optimizer over two parameter groups (the second with its own lr)."""
    rng = np.random.default_rng(0)
    vals = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    lps = [nn.Parameter(lazy.tensor(v)) for v in vals]
    tps = [torch.nn.Parameter(torch.tensor(v)) for v in vals]
    kw = {"lr": 0.1, **kw}
    lo = getattr(optim, opt_name)([{"params": lps[:1]}, {"params": lps[1:], "lr": 0.05}], **kw)
    to = getattr(torch.optim, opt_name)([{"params": tps[:1]}, {"params": tps[1:], "lr": 0.05}], **kw)
    return lo, to, lps, tps


def lam(e):
    return 0.95 ** e


SCHEDULERS = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [5, 12, 12, 30], "gamma": 0.3}),
    ("ExponentialLR", {"gamma": 0.93}),
    ("CosineAnnealingLR", {"T_max": 13, "eta_min": 0.001}),
    ("LambdaLR", {"lr_lambda": lam}),
    ("LambdaLR", {"lr_lambda": [lam, lambda e: 1.0 / (e + 1)]}),
    ("MultiplicativeLR", {"lr_lambda": lambda e: 0.97}),
    ("LinearLR", {"start_factor": 0.2, "end_factor": 0.9, "total_iters": 20}),
    ("ConstantLR", {"factor": 0.5, "total_iters": 8}),
    ("PolynomialLR", {"total_iters": 30, "power": 2.0}),
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 2, "eta_min": 0.002}),
    ("CosineAnnealingWarmRestarts", {"T_0": 9}),
    ("OneCycleLR", {"max_lr": [0.4, 0.2], "total_steps": STEPS + 1}),
    ("OneCycleLR", {"max_lr": 0.3, "epochs": 5, "steps_per_epoch": 11, "anneal_strategy": "linear", "three_phase": True}),
]


def _grads(lps, tps, rng):
    for lp, tp in zip(lps, tps):
        g = rng.standard_normal(tuple(tp.shape)).astype(np.float32)
        lp.grad, tp.grad = lazy.tensor(g), torch.tensor(g)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name,kw", SCHEDULERS)
def test_schedule_matches_torch_over_50_steps(name, kw, opt_name):
    okw = {"momentum": 0.9} if opt_name == "SGD" else {}
    lo, to, lps, tps = pair(opt_name, **okw)
    ls, ts = getattr(lls, name)(lo, **kw), getattr(tls, name)(to, **kw)
    assert ls.get_last_lr() == ts.get_last_lr()
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        _grads(lps, tps, rng)
        lo.step()
        to.step()
        ls.step()
        ts.step()
        np.testing.assert_allclose(ls.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=0)
        for lg, tg in zip(lo.param_groups, to.param_groups):
            assert lg["lr"] == pytest.approx(tg["lr"], rel=1e-12, abs=0)
            key = "momentum" if opt_name == "SGD" else "betas"
            assert lg[key] == pytest.approx(tg[key], rel=1e-12)
    for lp, tp in zip(lps, tps):  # the optimizers followed the schedule (momentum/beta1 too)
        torch.testing.assert_close(lp.torch(), tp.detach(), rtol=1e-4, atol=1e-5)
    assert sorted(ls.state_dict()) == sorted(ts.state_dict())


def test_sequential_and_chained():
    lo, to, _, _ = pair()
    mk = [lambda o, m: m.LinearLR(o, start_factor=0.1, total_iters=5), lambda o, m: m.ExponentialLR(o, gamma=0.9),
          lambda o, m: m.CosineAnnealingLR(o, T_max=10)]
    ls = lls.SequentialLR(lo, [f(lo, lls) for f in mk], milestones=[5, 20])
    ts = tls.SequentialLR(to, [f(to, tls) for f in mk], milestones=[5, 20])
    lo2, to2, _, _ = pair()
    lc = lls.ChainedScheduler([lls.ConstantLR(lo2, factor=0.5, total_iters=4), lls.ExponentialLR(lo2, gamma=0.9)])
    tc = tls.ChainedScheduler([tls.ConstantLR(to2, factor=0.5, total_iters=4), tls.ExponentialLR(to2, gamma=0.9)])
    assert ls.get_last_lr() == pytest.approx(ts.get_last_lr()) and lc.get_last_lr() == pytest.approx(tc.get_last_lr())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the optimizers are not stepped here
        for _ in range(STEPS):
            ls.step()
            ts.step()
            lc.step()
            tc.step()
            np.testing.assert_allclose(ls.get_last_lr(), ts.get_last_lr(), rtol=1e-12)
            np.testing.assert_allclose(lc.get_last_lr(), tc.get_last_lr(), rtol=1e-12)
    assert sorted(ls.state_dict()) == sorted(ts.state_dict())
    assert len(ls.state_dict()["_schedulers"]) == 3


@pytest.mark.parametrize("kw", [{}, {"mode": "max", "factor": 0.5, "patience": 2, "threshold_mode": "abs", "cooldown": 1},
                                {"patience": 0, "min_lr": [0.02, 0.001], "threshold": 0.1}])
def test_reduce_lr_on_plateau(kw):
    lo, to, _, _ = pair()
    ls, ts = lls.ReduceLROnPlateau(lo, **kw), tls.ReduceLROnPlateau(to, **kw)
    rng = np.random.default_rng(2)
    metric = 1.0
    for i in range(STEPS):
        metric = metric * (0.97 if i % 7 < 3 else 1.01) + rng.standard_normal() * 0.001
        ls.step(lazy.tensor(metric, dtype=lazy.float64) if i % 2 else metric)  # a lazy 0-d tensor: read on the host
        ts.step(metric)
        assert ls.get_last_lr() == ts.get_last_lr()
        assert (ls.num_bad_epochs, ls.cooldown_counter, ls.best) == (ts.num_bad_epochs, ts.cooldown_counter, ts.best)
    assert sorted(ls.state_dict()) == sorted(ts.state_dict())


def test_state_dict_restores_mid_schedule():
    lo, to, _, _ = pair()
    ls = lls.CosineAnnealingWarmRestarts(lo, T_0=4, T_mult=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(9):
            ls.step()
        sd = ls.state_dict()
        lo2, _, _, _ = pair()
        fresh = lls.CosineAnnealingWarmRestarts(lo2, T_0=4, T_mult=2)
        fresh.load_state_dict(sd)
        for _ in range(5):
            ls.step()
            fresh.step()
            assert fresh.get_last_lr() == ls.get_last_lr()
    ts = tls.CosineAnnealingWarmRestarts(to, T_0=4, T_mult=2)
    assert {k: v for k, v in ts.state_dict().items() if k != "base_lrs"}.keys() == \
        {k: v for k, v in sd.items() if k != "base_lrs"}.keys()

    class Scale:  # a callable object: LambdaLR saves its __dict__, as torch's
        def __init__(self):
            self.f = 0.5

        def __call__(self, e):
            return self.f ** e

    lo3, _, _, _ = pair()
    s = lls.LambdaLR(lo3, [Scale(), lam])
    s.lr_lambdas[0].f = 0.25
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"f": 0.25}, None]
    lo4, _, _, _ = pair()
    s2 = lls.LambdaLR(lo4, [Scale(), lam])
    s2.load_state_dict(sd)
    assert s2.lr_lambdas[0].f == 0.25


def test_torchs_warnings_and_errors():
    lo, _, lps, _ = pair()
    s = lls.StepLR(lo, step_size=2)
    with pytest.warns(UserWarning, match="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"):
        s.step()
    with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
        s.get_lr()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lls.StepLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), step_size=2)
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        lls.OneCycleLR(optim.Adagrad(lps, lr=0.1), max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        o = optim.SGD(lps, lr=0.1, momentum=0.9)
        sched = lls.OneCycleLR(o, max_lr=0.1, total_steps=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):
                sched.step()
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lls.ReduceLROnPlateau(lo, factor=1.0)
    with pytest.raises(ValueError, match="Expected positive integer T_0"):
        lls.CosineAnnealingWarmRestarts(lo, T_0=0)
    assert math.isclose(lls.ExponentialLR(optim.SGD(lps, lr=0.2), gamma=0.5).get_last_lr()[0], 0.2)


@pytest.mark.parametrize("opt", ["SGD", "Adam", "RMSprop"])
def test_one_cycle_training_compiles_the_step_once(opt):
    """lr and momentum (beta1) change every step: they reach the kernels as host numbers."""
    lazy.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    kw = {"momentum": 0.9} if opt != "Adam" else {}
    o = getattr(optim, opt)(model.parameters(), lr=0.01, **kw)
    sched = lls.OneCycleLR(o, max_lr=0.1, total_steps=10)
    x, y = lazy.randn(6, 4), lazy.randn(6, 2)
    misses = []
    for _ in range(8):
        loss = nn.functional.mse_loss(model(x), y)
        o.zero_grad()
        loss.backward()
        before = runtime.cache_stats["schedule_misses"]
        o.step()
        misses.append(runtime.cache_stats["schedule_misses"] - before)
        sched.step()
    assert misses[2:] == [0] * 6, misses  # the first step, then the momentum's move to a host number
