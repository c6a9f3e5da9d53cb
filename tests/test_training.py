"""Training end to end: the issue's MLP and a small GPT (the code of examples/) track torch's losses
step for step, one training step is one schedule, and its kernel count is pinned and explained."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lazy
from lazy import nn, optim, transforms

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    key = f"lazy_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
        mod = sys.modules[key] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
        spec.loader.exec_module(mod)
    return sys.modules[key]


SIZES = (64, 32, 10)  # the MLP, small: 64-32-10, batches of 16


@pytest.mark.parametrize("jit", [False, True])
def test_mlp_losses_match_torch_step_for_step(jit):
    mlp = example("train_mlp")
    batches = mlp.make_batches(8, 16, SIZES)
    ref, _ = mlp.train("torch", batches, SIZES, lr=1e-2)
    got, _ = mlp.train("lazy", batches, SIZES, lr=1e-2, jit=jit)  # jit: steps 4-8 are replays
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    assert ref[-1] < ref[0]  # it learns: the comparison is not between two flat curves


@pytest.mark.parametrize("jit", [False, True])
def test_gpt_losses_match_torch_step_for_step(jit):
    gpt = example("train_gpt")
    cfg = gpt.Config(vocab=16, block=8, d=32, heads=2, layers=2)
    batches = gpt.make_batches(6 if jit else 4, 2, cfg)
    ref, _ = gpt.train("torch", batches, cfg)
    got, _ = gpt.train("lazy", batches, cfg, jit=jit)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    assert ref[-1] < ref[0]


def mlp_step_kernels(opt_cls, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 10))
    opt = opt_cls(model.parameters(), **kw)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second step is the steady state (the first compiles)
        x = lazy.tensor(rng.standard_normal((16, 64), dtype=np.float32))
        y = lazy.tensor(rng.integers(0, 10, 16))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        with lazy.profile() as prof:
            opt.step()
        with lazy.profile() as after:
            loss.item()
            [p.grad.numpy() for p in model.parameters()]
    assert prof.realizes == 1  # forward + backward + update + loss: one schedule
    assert after.kernels == []  # the loss and the gradients were part of it
    return [k.name for k in prof.kernels]


@pytest.mark.parametrize("opt_cls,kw", [(optim.AdamW, {"lr": 1e-3}), (optim.SGD, {"lr": 0.1, "momentum": 0.9})])
def test_mlp_training_step_kernel_count(opt_cls, kw, monkeypatch):
    """One training step of Linear(64,32) -> GELU -> LayerNorm(32) -> Linear(32,10), cross entropy,
    batch 16: 20 kernels with the C GEMM (LAZY_GEMM=c), whatever the optimizer; 22 on BLAS.

    5 matmuls: x@W1.T and h@W2.T forward; dlogits@W2, and dW1, dW2 backward (x needs no
      gradient, so there is no dx). The C GEMM adds the forward biases in its epilogue; on BLAS
      (LAZY_GEMM=blas) each of those two is the GEMM plus an in-place epilogue kernel.
    4 parameter updates, one per shape family, each computing that family's gradient (the
      batch reduction) and storing gradient, parameter and optimizer state for all its members:
      [32,64] W1, [32] b1 + LayerNorm weight + bias (3 reductions, 12 stores with AdamW),
      [10,32] W2, [10] b2. The update adds no kernel of its own, for SGD or AdamW.
    11 others (13 on BLAS, with the 2 bias-add epilogues):
      4 LayerNorm forward: row mean, centred values, row variance, then normalized and affine
        outputs (2 stores: the next matmul reads one, the weight gradient the other); one
        persistent-row kernel computes the forward alone, but the backward needs the pieces;
      3 log-softmax: row max, shifted logits, row sum of exp (+ the picked logit);
      2 loss: the number of targets that are not ignore_index (the 'mean' divisor, also used by
        the gradient) and the loss itself;
      2 backward: dlogits (softmax - one-hot), and LayerNorm + GELU backward (row reductions).
    Realizing the gradients (to keep `.grad` readable for free) adds stores to the update kernels,
    not kernels: without them AdamW needs 2 more (measured when this was written).
    """
    for mode, count in (("c", 20), ("blas", 22)):
        monkeypatch.setenv("LAZY_GEMM", mode)
        names = mlp_step_kernels(opt_cls, **kw)
        assert len(names) == count, (mode, names)
        assert sum("matmul" in n for n in names) == 5


def test_loss_item_before_backward_and_grad_accumulation():
    # common user patterns: print the loss before backward; accumulate two micro-batches
    mlp = example("train_mlp")
    (xa, ya), (xb, yb) = mlp.make_batches(2, 8, SIZES)
    torch.manual_seed(0)
    tm = mlp.make_model(torch.nn, SIZES)
    lm = mlp.make_model(nn, SIZES)
    lm.load_state_dict(tm.state_dict())
    topt, lopt = torch.optim.SGD(tm.parameters(), lr=0.1), optim.SGD(lm.parameters(), lr=0.1)
    for (tx, ty, lx, ly) in [(torch.tensor(xa), torch.tensor(ya), lazy.tensor(xa), lazy.tensor(ya)),
                             (torch.tensor(xb), torch.tensor(yb), lazy.tensor(xb), lazy.tensor(yb))]:
        tl = torch.nn.functional.cross_entropy(tm(tx), ty)
        ll = nn.functional.cross_entropy(lm(lx), ly)
        assert abs(ll.item() - tl.item()) < 1e-5
        tl.backward()
        ll.backward()
    topt.step()
    lopt.step()
    assert len(transforms.pending_roots) == 0
    for lp, tp in zip(lm.parameters(), tm.parameters()):
        torch.testing.assert_close(lp.torch(), tp.detach(), rtol=1e-5, atol=1e-6)


def test_eval_forward_under_no_grad_builds_no_gradient_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2)).eval()
    with lazy.no_grad():
        out = model(lazy.tensor(np.ones((3, 8), np.float32)))
    assert not out.requires_grad
    a = out.numpy()
    np.testing.assert_array_equal(model(lazy.tensor(np.ones((3, 8), np.float32))).detach().numpy(), a)
