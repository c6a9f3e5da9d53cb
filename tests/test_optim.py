"""lazy.optim: SGD, Adam, AdamW, RMSprop, Adagrad and Adadelta follow torch's trajectories; a step is
one schedule that updates parameters and state in place; the update of parameters of one shape fuses
into one kernel; a learning rate (or a scheduled momentum) that changes every step compiles nothing
after the first step."""

import numpy as np
import pytest
import torch

import lazy
from lazy import nn, optim, runtime, transforms

SHAPES = [(4, 3), (3,), (2, 2, 2)]


def params_pair(seed=0):
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal(s, dtype=np.float32) for s in SHAPES]
    return [nn.Parameter(lazy.tensor(v.copy())) for v in vals], [torch.nn.Parameter(torch.tensor(v)) for v in vals]


def run_both(lazy_opt, torch_opt, steps=5, seed=1):
    """Feed both optimizers the same gradients for `steps` steps; compare parameters and state."""
    lps, tps = params_pair()
    lo, to = lazy_opt(lps), torch_opt(tps)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for lp, tp in zip(lps, tps):
            g = rng.standard_normal(tuple(tp.shape), dtype=np.float32)
            lp.grad, tp.grad = lazy.tensor(g), torch.tensor(g)
        lo.step()
        to.step()
    for lp, tp in zip(lps, tps):
        torch.testing.assert_close(lp.torch(), tp.detach(), rtol=1e-5, atol=1e-6)
        for k, v in to.state[tp].items():
            if k == "step":
                assert lo.state[lp][k] == int(v)
            elif v is not None:
                torch.testing.assert_close(lo.state[lp][k].torch(), v, rtol=1e-5, atol=1e-6)
    return lo, lps


@pytest.mark.parametrize("kw", [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9, "nesterov": True},
                                {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
                                {"lr": 0.1, "weight_decay": 0.1, "maximize": True}])
def test_sgd_matches_torch(kw):
    run_both(lambda ps: optim.SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


@pytest.mark.parametrize("cls,kw", [("Adam", {"lr": 0.01}), ("Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
                                    ("Adam", {"lr": 0.02, "betas": (0.8, 0.9), "eps": 1e-6, "maximize": True}),
                                    ("AdamW", {"lr": 0.01}), ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True})])
def test_adam_matches_torch(cls, kw):
    run_both(lambda ps: getattr(optim, cls)(ps, **kw), lambda ps: getattr(torch.optim, cls)(ps, **kw))


@pytest.mark.parametrize("cls,kw", [("RMSprop", {"lr": 0.01}),
                                    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
                                    ("RMSprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-6, "maximize": True, "momentum": 0.5}),
                                    ("Adagrad", {"lr": 0.1}),
                                    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                                                 "initial_accumulator_value": 0.3, "eps": 1e-8, "maximize": True}),
                                    ("Adadelta", {}),
                                    ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.05, "maximize": True})])
def test_adaptive_optimizers_match_torch(cls, kw):
    lo, lps = run_both(lambda ps: getattr(optim, cls)(ps, **kw), lambda ps: getattr(torch.optim, cls)(ps, **kw), steps=6)
    sd = lo.state_dict()  # (run_both compared every state tensor torch keeps)
    fresh = getattr(optim, cls)(lps, **kw)
    fresh.load_state_dict(sd)
    for k, v in lo.state[lps[1]].items():
        got = fresh.state[lps[1]][k]
        assert got == v if k == "step" else np.array_equal(got.numpy(), v.numpy())


@pytest.mark.parametrize("make", [lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True),
                                  lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.1),
                                  lambda ps: optim.Adadelta(ps, lr=1.0),
                                  lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.AdamW(ps, lr=0.01)])
def test_changing_lr_compiles_nothing_after_the_first_step(make):
    # parameters in memory lazy owns (drawn), so the first step already writes them in place (from
    # the caller's arrays, the first step moves them to memory of their own: a second program)
    lazy.manual_seed(0)
    lps = [nn.Parameter(lazy.randn(*s)) for s in SHAPES]
    opt = make(lps)
    rng = np.random.default_rng(0)
    compiled, misses = [], []
    for step in range(5):
        for p in lps:
            p.grad = lazy.tensor(rng.standard_normal(tuple(p.shape), dtype=np.float32))
        opt.param_groups[0]["lr"] = 0.1 / (step + 1)  # a schedule: a new lr every step
        before = runtime.cache_stats["schedule_misses"]
        with lazy.profile() as prof:
            opt.step()
        compiled.append(sum(k.compiled for k in prof.kernels))
        misses.append(runtime.cache_stats["schedule_misses"] - before)
    assert compiled[1:] == [0] * 4 and misses[1:] == [0] * 4, (compiled, misses)


@pytest.mark.parametrize("cls,kw,key", [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "momentum"),
                                        ("RMSprop", {"lr": 0.01, "momentum": 0.9}, "momentum"),
                                        ("Adam", {"lr": 0.01}, "betas"), ("AdamW", {"lr": 0.01, "amsgrad": True}, "betas")])
def test_scheduled_momentum_matches_torch_and_recompiles_once(cls, kw, key):
    """OneCycleLR's cycle of momentum or beta1: the folded constant becomes a host number once."""
    lps, tps = params_pair()
    lo, to = getattr(optim, cls)(lps, **kw), getattr(torch.optim, cls)(tps, **kw)
    rng = np.random.default_rng(0)
    misses = []
    for step in range(6):
        for lp, tp in zip(lps, tps):
            g = rng.standard_normal(tuple(tp.shape), dtype=np.float32)
            lp.grad, tp.grad = lazy.tensor(g), torch.tensor(g)
        m = 0.95 - 0.02 * step
        for og in (lo, to):
            g0 = og.param_groups[0]
            g0[key] = (m, g0["betas"][1]) if key == "betas" else m
        before = runtime.cache_stats["schedule_misses"]
        lo.step()
        to.step()
        misses.append(runtime.cache_stats["schedule_misses"] - before)
    for lp, tp in zip(lps, tps):
        torch.testing.assert_close(lp.torch(), tp.detach(), rtol=1e-5, atol=1e-6)
    assert misses[2:] == [0] * 4, misses  # step 1 changed it: one new schedule there, then none


def test_param_groups_and_lr_changes_do_not_recompile():
    lps, tps = params_pair()
    lo = optim.Adam([{"params": lps[:1], "lr": 0.1}, {"params": lps[1:]}], lr=0.01)
    to = torch.optim.Adam([{"params": tps[:1], "lr": 0.1}, {"params": tps[1:]}], lr=0.01)
    rng = np.random.default_rng(0)
    misses = []
    for step in range(6):
        for lp, tp in zip(lps, tps):
            g = rng.standard_normal(tuple(tp.shape), dtype=np.float32)
            lp.grad, tp.grad = lazy.tensor(g), torch.tensor(g)
        for og in (lo, to):
            og.param_groups[1]["lr"] = 0.01 / (step + 1)  # a schedule: per-step numbers are buffers
        misses.append(runtime.cache_stats["schedule_misses"])
        lo.step()
        to.step()
    for lp, tp in zip(lps, tps):
        torch.testing.assert_close(lp.torch(), tp.detach(), rtol=1e-5, atol=1e-6)
    # the first step schedules and compiles the update; later steps, with a new lr and new bias
    # corrections each, reuse it
    assert misses[-1] == misses[1]


def test_step_is_one_schedule_in_place_with_state_and_grads_realized():
    lps, _ = params_pair()
    opt = optim.AdamW(lps, lr=0.01)
    ids = [id(p) for p in lps]
    for _ in range(2):
        loss = sum((p * p).sum() for p in lps)
        opt.zero_grad()
        loss.backward()
        assert loss in transforms.pending_roots
        with lazy.profile() as prof:
            opt.step()
        assert prof.realizes == 1  # parameters, state, gradients and the loss: one schedule
        assert loss not in transforms.pending_roots
        with lazy.profile() as prof:
            loss.item()
            for p in lps:
                p.grad.numpy()
                opt.state[p]["exp_avg"].numpy()
        assert prof.kernels == []  # all of it was realized by the step
    assert [id(p) for p in opt.param_groups[0]["params"]] == ids
    assert all(p.is_leaf and p.requires_grad for p in lps)
    with lazy.profile() as prof:
        [p.numpy() for p in lps]
    assert prof.kernels == []


def _memory(t):
    return t._node.arg.data.data_ptr()


def test_parameters_and_state_are_updated_in_place():
    # after the first step (which gives every tensor a buffer of its own), each step writes the
    # new values into the parameters' and the moments' own memory: no new buffers per step
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = optim.AdamW(model.parameters(), lr=0.01)
    x = lazy.tensor(np.random.default_rng(0).standard_normal((4, 6), dtype=np.float32))
    y = lazy.tensor(np.array([0, 2, 1, 2]))
    seen = []
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append([_memory(p) for p in model.parameters()]
                    + [_memory(opt.state[p][k]) for p in model.parameters() for k in ("exp_avg", "exp_avg_sq")])
    assert seen[1] == seen[2] and seen[0] == seen[1]


def test_in_place_update_keeps_earlier_lazy_reads_correct():
    # a lazy tensor built from the old parameter and realized after the step must see the old
    # value (as torch would have computed it before the step): the step then does not write in place
    w = nn.Parameter(lazy.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)))
    opt = optim.SGD([w], lr=0.25)
    before = w.numpy().copy()
    old_view = w.T * 1.0  # built before the step, not realized
    (w * w).sum().backward()
    opt.step()
    np.testing.assert_allclose(old_view.numpy(), before.T)
    np.testing.assert_allclose(w.numpy(), 0.5 * before)
    # with nothing else holding the old value, the next step writes in place
    ptr = _memory(w)
    opt.zero_grad()
    (w * w).sum().backward()
    opt.step()
    assert _memory(w) == ptr
    np.testing.assert_allclose(w.numpy(), 0.25 * before)


@pytest.mark.parametrize("reader", ["later kernel", "same kernel"])
def test_in_place_write_is_refused_when_the_old_value_is_read_afterwards(reader):
    from lazy.graph import structure_key
    from scheduler import schedule

    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    w = lazy.tensor(host.copy()).realize()
    new_w = w * 0.5
    # a second output reading w: a reduction kernel after new_w's, or a flip in new_w's own kernel
    other = w.T.sum(-1) if reader == "later kernel" else w.flip(0) + 1.0
    roots = [new_w._node, other._node]
    _, buffers, _ = structure_key(roots)
    slot = next(i for i, b in enumerate(buffers) if b is w._node.arg)
    sched = schedule(roots, buffers, (slot, None))
    assert sched.outputs[0] != slot
    why = "reads the old value after it is written" if reader == "later kernel" else "at other elements"
    assert any(d.startswith("in-place") and why in d for d in sched.decisions), sched.decisions
    a, b = lazy.realize(new_w, other)
    np.testing.assert_allclose(a.numpy(), host * 0.5)
    np.testing.assert_allclose(b.numpy(), host.T.sum(-1) if reader == "later kernel" else host[::-1] + 1)


def test_optimizer_update_of_one_shape_family_is_one_kernel():
    # 3 parameters of shape (8, 16) and 2 of shape (16,), gradients given as buffers: AdamW
    # writes p, exp_avg, exp_avg_sq (and the grad, already a buffer) for each. The update is
    # elementwise, so each shape family is one kernel storing all of its tensors, not one kernel
    # per parameter, let alone per elementwise op: 2 kernels.
    rng = np.random.default_rng(0)
    shapes = [(8, 16), (16,), (8, 16), (16,), (8, 16)]
    ps = [nn.Parameter(lazy.tensor(rng.standard_normal(s, dtype=np.float32))) for s in shapes]
    opt = optim.AdamW(ps, lr=1e-3)
    for _ in range(2):
        for p in ps:
            p.grad = lazy.tensor(rng.standard_normal(tuple(p.shape), dtype=np.float32))
        with lazy.profile() as prof:
            opt.step()
    assert len(prof.kernels) == 2
    # the kernel of the (8, 16) family reads p, exp_avg, exp_avg_sq and grad of 3 parameters and
    # writes p, exp_avg, exp_avg_sq: each element once
    big = max(prof.kernels, key=lambda k: k.bytes_written)
    assert big.bytes_written == 3 * 3 * 8 * 16 * 4
    assert big.bytes_read <= 3 * 4 * 8 * 16 * 4 + 64  # + the per-step scalars


def test_sgd_momentum_update_is_one_kernel():
    ps = [nn.Parameter(lazy.tensor(np.ones((5, 5), np.float32))) for _ in range(3)]
    opt = optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    for _ in range(2):
        for p in ps:
            p.grad = lazy.tensor(np.full((5, 5), 0.5, np.float32))
        with lazy.profile() as prof:
            opt.step()
    assert len(prof.kernels) == 1


def test_zero_grad_and_skipping_params_without_grad():
    lps, _ = params_pair()
    opt = optim.SGD(lps, lr=0.1)
    before = [p.numpy().copy() for p in lps]
    lps[0].grad = lazy.tensor(np.ones(SHAPES[0], np.float32))
    opt.step()
    np.testing.assert_allclose(lps[0].numpy(), before[0] - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(lps[1].numpy(), before[1])
    opt.zero_grad()
    assert all(p.grad is None for p in lps)
    lps[0].grad = lazy.tensor(np.ones(SHAPES[0], np.float32))
    opt.zero_grad(set_to_none=False)
    assert not lps[0].grad.numpy().any() and lps[1].grad is None


def test_state_dict_round_trip():
    lo, lps = run_both(lambda ps: optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01), steps=2)
    sd = lo.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2] and sd["param_groups"][0]["params"] == [0, 1, 2]
    fresh = optim.Adam(lps, lr=0.5)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == 0.01 and fresh.state[lps[0]]["step"] == 2
    np.testing.assert_array_equal(fresh.state[lps[1]]["exp_avg"].numpy(), lo.state[lps[1]]["exp_avg"].numpy())


def test_bad_arguments():
    ps, _ = params_pair()
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(ps, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(ps, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam(ps, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([ps[0] * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": ps}, {"params": ps[:1]}], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD(ps[0], lr=0.1)


def test_training_loop_keeps_no_graph_alive():
    # parameters and state are assigned realized buffers each step, gradients are realized and the
    # pending losses dropped: nothing of a step's graph outlives the next step
    import gc

    from lazy.graph import Node

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.LayerNorm(5), nn.Linear(5, 3))
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    alive = []
    for step in range(6):
        x = lazy.tensor(rng.standard_normal((4, 6), dtype=np.float32))
        loss = nn.functional.cross_entropy(model(x), lazy.tensor(rng.integers(0, 3, 4)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if step in (2, 5):
            gc.collect()
            alive.append(sum(isinstance(o, Node) for o in gc.get_objects()))
    assert alive[0] == alive[1], alive
