"""lazy.jit: a training step recorded twice, then replayed without running its Python."""

import numpy as np
import pytest
import torch

import lazy
from lazy import nn, optim, runtime
from lazy.jit import JitWarning


def _data(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((8, 6), dtype=np.float32), rng.integers(0, 3, 8)) for _ in range(steps)]


def _models():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    mine = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def test_jitted_training_step_matches_torch_and_replays():
    ref, model = _models()
    topt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    runs = []

    @lazy.jit
    def step(x, y):
        runs.append(1)  # Python side effects happen only in the calls that run the function
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for i, (xb, yb) in enumerate(_data(8)):
        tloss = torch.nn.functional.cross_entropy(ref(torch.tensor(xb)), torch.tensor(yb))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        misses = runtime.cache_stats["schedule_misses"] + runtime.cache_stats["schedule_hits"]
        with lazy.profile() as prof:
            loss = step(lazy.tensor(xb), lazy.tensor(yb))
        if i >= 3:  # replayed: programs launched directly, no graph hashed or scheduled
            assert runtime.cache_stats["schedule_misses"] + runtime.cache_stats["schedule_hits"] == misses
            assert prof.realizes == 1 and len(prof.kernels) > 0
        assert abs(loss.item() - tloss.item()) < 1e-5, i
    assert len(runs) == 3
    assert list(step.stats.values()) == ["replaying"]
    for (name, p), tp in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.torch(), tp.detach(), rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(p.grad.torch(), tp.grad, rtol=1e-4, atol=1e-6, msg=name)  # rebound each replay
    assert opt.state[model[0].weight]["step"] == 8


def test_replay_follows_learning_rate_changes():
    _, model = _models()
    opt = optim.SGD(model.parameters(), lr=0.1)

    @lazy.jit
    def step(x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    data = _data(5)
    for xb, yb in data[:4]:
        step(lazy.tensor(xb), lazy.tensor(yb))
    assert list(step.stats.values()) == ["replaying"]
    opt.param_groups[0]["lr"] = 0.0  # host numbers are redone on every replay
    before = [p.numpy().copy() for p in model.parameters()]
    step(lazy.tensor(data[4][0]), lazy.tensor(data[4][1]))
    for b, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(p.numpy(), b)


def test_a_buffer_made_anew_every_call_is_not_replayed():
    calls = []

    @lazy.jit
    def f(x):
        calls.append(1)
        noise = lazy.tensor(np.full(3, float(len(calls)), np.float32))  # new host data each call
        return (x + noise).realize()

    x = lazy.tensor(np.zeros(3, np.float32))
    with pytest.warns(JitWarning, match="new buffer each call"):
        outs = [f(x).numpy() for _ in range(4)]
    assert [o[0] for o in outs] == [1.0, 2.0, 3.0, 4.0]  # still correct: it keeps running as Python
    assert next(iter(f.stats.values())).startswith("failed")


def test_signatures_are_recorded_separately_and_results_are_fresh():
    @lazy.jit
    def f(a, b):
        return a * b + 1, (a - b).sum()

    rng = np.random.default_rng(0)
    outs = []
    for shape in [(4,), (4,), (4,), (4,), (2, 3), (2, 3), (2, 3), (2, 3)]:
        a, b = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
        y, s = f(lazy.tensor(a), lazy.tensor(b))
        outs.append((y, a * b + 1))
        np.testing.assert_allclose(s.numpy(), (a - b).sum(), rtol=1e-5, atol=1e-6)
    for y, want in outs:  # earlier results keep their values: each replay writes new buffers
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-6)
    assert sorted(f.stats.values()) == ["replaying", "replaying"]


def test_bad_return_value():
    f = lazy.jit(lambda x: float(x.sum().item()))
    x = lazy.tensor(np.ones(2, np.float32))
    f(x)  # the first call runs plainly
    with pytest.raises(TypeError, match="lazy.jit: .* must return a Tensor, a tuple or list of Tensors, or None"):
        f(x)
