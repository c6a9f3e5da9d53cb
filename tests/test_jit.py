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


def test_a_function_returning_a_number_keeps_running_as_python():
    f = lazy.jit(lambda x: float(x.sum().item()))
    x = lazy.tensor(np.ones(2, np.float32))
    assert f(x) == 2.0  # the first call runs plainly
    with pytest.warns(JitWarning, match="reads tensor values on the host") as w:
        assert [f(x) for _ in range(3)] == [2.0, 2.0, 2.0]
    assert len(w) == 1 and w[0].filename == __file__  # once, pointing at the call
    g = lazy.jit(lambda x: (x * 2, 3))
    with pytest.warns(JitWarning, match="returns a int"):
        assert [g(x)[1] for _ in range(3)] == [3, 3, 3]
    assert next(iter(g.stats.values())).startswith("failed")


# -- arguments written in place, values changed outside, guards


def _replaying(f):
    return list(f.stats.values()) == ["replaying"]


@pytest.mark.parametrize("realize_inside", [True, False])
def test_an_argument_changed_in_place_is_the_one_passed(realize_inside):
    @lazy.jit
    def step(x):
        x.add_(1)
        if realize_inside:
            x.realize()
        return x * 2

    for i in range(5):
        a = lazy.tensor(np.full(3, float(i), np.float32))
        r = step(a)
        np.testing.assert_array_equal(a.numpy(), np.full(3, i + 1.0))
        np.testing.assert_array_equal(r.numpy(), np.full(3, 2 * (i + 1.0)))
    assert _replaying(step)


def test_one_tensor_passed_twice_is_not_two_tensors_sharing_a_buffer():
    @lazy.jit
    def f(x, y):
        x.add_(1)
        return x + y

    a = lazy.zeros(2)
    assert [f(a, a).tolist()[0] for _ in range(4)] == [2.0, 4.0, 6.0, 8.0]  # y is x, written
    b, c = lazy.zeros(2), lazy.zeros(2)  # equal constants: one buffer once realized
    assert f(b, c).tolist() == [1.0, 1.0] and b.tolist() == [1.0, 1.0] and c.tolist() == [0.0, 0.0]


def test_parameters_changed_outside_are_read_by_the_next_replay():
    lin = nn.Linear(2, 1)

    @lazy.jit
    def f(x):
        return lin(x)

    x = lazy.ones(1, 2)
    for _ in range(4):
        f(x)
    assert _replaying(f)
    with lazy.no_grad():
        lin.weight.fill_(0.0)
        lin.bias.fill_(5.0)
    assert f(x).tolist() == [[5.0]]
    lin.load_state_dict({"weight": torch.tensor([[1.0, 2.0]]), "bias": torch.tensor([0.5])})
    assert [f(x).tolist() for _ in range(4)] == [[[3.5]]] * 4
    assert _replaying(f)  # recorded again after the change, then replayed


def test_captured_tensors_written_in_place_are_read_by_the_next_replay():
    pending = lazy.ones(3)  # a constant node, compiled into the program
    stored = lazy.tensor(np.ones(3, np.float32))  # a buffer

    @lazy.jit
    def f(x):
        return x + pending * stored

    x = lazy.zeros(3)
    for _ in range(4):
        f(x)
    pending += 10
    assert f(x).tolist() == [11.0] * 3
    stored.mul_(2)
    assert f(x).tolist() == [22.0] * 3
    for _ in range(3):
        f(x)
    assert _replaying(f) and f(x).tolist() == [22.0] * 3


def test_an_unjitted_optimizer_step_keeps_a_jitted_evaluation_replaying():
    _, model = _models()
    opt = optim.SGD(model.parameters(), lr=0.1)
    evaluate = lazy.jit(lambda x: model(x))
    data = _data(3)
    x = lazy.tensor(data[0][0])
    for _ in range(3):
        evaluate(x)
    plan = next(iter(evaluate.plans.values())).plan
    for xb, yb in data:
        loss = nn.functional.cross_entropy(model(lazy.tensor(xb)), lazy.tensor(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()  # written into the parameters' own buffers
        with lazy.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(evaluate(x).numpy(), want, rtol=1e-6)
    assert next(iter(evaluate.plans.values())).plan is plan


class _Twice(nn.Module):
    def forward(self, x):
        return x * 2 if self.training else x


def test_a_module_mode_changed_outside_records_again():
    m = nn.Sequential(_Twice())
    f = lazy.jit(lambda x: m(x))
    x = lazy.ones(2)
    assert [f(x).tolist()[0] for _ in range(4)] == [2.0] * 4
    m.eval()
    assert [f(x).tolist()[0] for _ in range(4)] == [1.0] * 4
    assert _replaying(f)  # returning its argument needs no kernel, and replays
    m[0].training = True  # the attribute, not train(): seen too
    assert [f(x).tolist()[0] for _ in range(3)] == [2.0] * 3
    assert _replaying(f)


def test_a_mode_set_inside_is_set_again_by_each_replay():
    m = nn.Sequential(_Twice())

    @lazy.jit
    def train_step(x):
        m.train()
        return m(x)

    @lazy.jit
    def eval_step(x):
        m.eval()
        return m(x)

    x = lazy.ones(2)
    for _ in range(5):
        assert train_step(x).tolist()[0] == 2.0 and m.training
        assert eval_step(x).tolist()[0] == 1.0 and not m.training
    assert _replaying(train_step) and _replaying(eval_step)
    assert next(iter(train_step.plans.values())).recorded == 1  # never recorded again


def test_a_replaced_parameter_records_again():
    lin = nn.Linear(2, 1, bias=False)
    f = lazy.jit(lambda x: lin(x))
    x = lazy.ones(1, 2)
    for _ in range(4):
        f(x)
    lin.weight = nn.Parameter(lazy.tensor([[3.0, 4.0]]))
    assert f(x).tolist() == [[7.0]]


def test_tensors_in_keywords_lists_and_dicts_are_arguments():
    @lazy.jit
    def f(xs, *, scale, opts):
        return {"sum": xs[0] + xs[1] * scale, "neg": -opts["bias"]}, None

    for i in range(5):
        out, none = f([lazy.full((2,), i + 0.5), lazy.ones(2)], scale=lazy.full((2,), i + 10.0),
                      opts={"bias": lazy.full((2,), i + 20.0), "name": "x"})
        assert none is None
        assert out["sum"].tolist() == [2 * i + 10.5] * 2 and out["neg"].tolist() == [-(i + 20.0)] * 2
    assert _replaying(f)


def test_named_tuples_are_returned_as_named_tuples():
    f = lazy.jit(lambda x: x.max(-1))
    for i in range(4):
        r = f(lazy.tensor([[1.0, 5.0 + i, 2.0]]))
        assert type(r).__name__ == "max" and r.values.tolist() == [5.0 + i] and r.indices.tolist() == [1]
    assert _replaying(f)


def test_an_unhashable_argument_runs_as_python():
    f = lazy.jit(lambda x, a: x + lazy.tensor(a))
    x = lazy.zeros(2)
    with pytest.warns(JitWarning, match="argument of type ndarray .* unhashable") as w:
        outs = [f(x, np.full(2, float(i), np.float32)).tolist() for i in range(4)]
    assert outs == [[float(i)] * 2 for i in range(4)] and len(w) == 1


def test_a_branch_on_a_host_value_is_never_replayed():
    @lazy.jit
    def f(x):
        return x * 2 if x.sum().item() > 0 else -x

    with pytest.warns(JitWarning, match=r"reads tensor values on the host"):
        outs = [f(lazy.full((2,), v)).tolist() for v in [1.0, 1.0, 1.0, 1.0, -1.0]]
    assert outs == [[2.0, 2.0]] * 4 + [[1.0, 1.0]]


def test_writing_into_a_view_argument_runs_as_python():
    @lazy.jit
    def f(x):
        x.add_(1)
        return x * 1

    base = lazy.zeros(2, 3)
    with pytest.warns(JitWarning, match="writes into an argument that is a view"):
        [f(base[0]) for _ in range(4)]
    np.testing.assert_array_equal(base.numpy(), [[4.0] * 3, [0.0] * 3])


def test_recording_again_and_again_keeps_no_watch_behind():
    acc = lazy.tensor(np.zeros(3, np.float32))
    f = lazy.jit(lambda x: x + acc)
    x = lazy.ones(3)
    for i in range(12):
        for _ in range(3):
            assert f(x).tolist() == [1.0 + i] * 3
        acc += 1  # every third call reads a new value: recorded again
        if i % 2:
            acc.realize()  # else a pending value, computed by the recorded program
    def watches(mine):  # of these recordings (other tests' jitted functions may still be alive)
        return (sum(r() in mine for refs in runtime._watched.values() for r in refs)
                + sum(p() in mine for refs in runtime._watched_nodes.values() for _, p in refs))

    mine = [c for st in f.plans.values() for c in (st.plan, st.failed_on, *st.captures) if c is not None]
    assert 1 <= watches(mine) <= 4
    f.reset()
    assert watches(mine) == 0 and not f.plans


def test_gradients_accumulated_across_calls_are_named_in_the_warning():
    lin = nn.Linear(4, 2)
    opt = optim.SGD(lin.parameters(), lr=0.1)

    @lazy.jit
    def step(x):  # no zero_grad(): each call reads the gradient the call before left
        loss = lin(x).sum()
        loss.backward()
        opt.step()
        return loss

    with pytest.warns(JitWarning, match="a result of the call before, read again .*without zero_grad"):
        [step(lazy.ones(3, 4)) for _ in range(4)]


def test_a_tensor_the_step_makes_and_writes_in_place_does_not_stale_the_recording():
    # DCGAN's `label = full(...)` then `label.fill_(fake)`: the tensor is the step's own, but its
    # constant node is interned, the same node the previous recording read (and that the loss it
    # returned still holds through autograd); writing it must not drop that recording
    w = lazy.tensor(np.ones((3, 4), np.float32)).requires_grad_()
    opt = optim.SGD([w], lr=0.1)

    @lazy.jit
    def step(x):
        label = lazy.full((2, 4), 1.0)
        loss = ((x @ w - label) ** 2).mean()
        label.fill_(0.0)
        loss = loss + ((x @ w - label) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    x = lazy.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) / 6)
    kept = [step(x) for _ in range(5)]
    assert list(step.stats.values()) == ["replaying"], step.stats
    ref = torch.ones(3, 4, requires_grad=True)
    tx = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 6
    for _ in range(5):
        loss = ((tx @ ref - 1) ** 2).mean() + ((tx @ ref) ** 2).mean()
        ref.grad = None
        loss.backward()
        with torch.no_grad():
            ref -= 0.1 * ref.grad
    np.testing.assert_allclose(w.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert kept[-1].item() == pytest.approx(loss.item(), rel=1e-5)


def _noisy_step():
    lazy.manual_seed(0)
    lin = nn.Linear(4, 4)
    opt = optim.SGD(lin.parameters(), lr=0.1)

    def step(x):
        z = lin(x) + lazy.randn(2, 4) * 0.5  # a VAE's reparameterization, then dropout's mask
        z = nn.functional.dropout(z, 0.3, training=True)
        loss = (z ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return lin, step


def test_random_draws_replay_as_the_calls_would_draw_them():
    x = lazy.tensor(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4))
    lin_a, plain = _noisy_step()
    lin_b, step = _noisy_step()
    jitted = lazy.jit(step)
    lazy.manual_seed(5)
    want = [plain(x).item() for _ in range(7)]
    lazy.manual_seed(5)
    got = [jitted(x).item() for _ in range(7)]
    assert list(jitted.stats.values()) == ["replaying"], jitted.stats
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(lin_b.weight.numpy(), lin_a.weight.numpy(), rtol=1e-6)
    assert len(set(got)) == 7  # new numbers every call
    after = lazy.rand(3).tolist()  # the generator moved as the plain calls moved it
    lazy.manual_seed(5)
    for _ in range(7):
        plain(x)
    assert lazy.rand(3).tolist() == after


def test_a_draw_into_a_tensor_made_outside_is_not_replayed():
    w = lazy.zeros(3)

    @lazy.jit
    def step(x):
        w.normal_()
        return x * w

    step(lazy.ones(3)).realize()  # (the first call runs as is; the second records)
    with pytest.warns(JitWarning, match="fills a tensor made outside"):
        step(lazy.ones(3))
    assert "failed" in next(iter(step.stats.values()))
