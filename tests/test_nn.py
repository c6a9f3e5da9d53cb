"""lazy.nn: functional ops and layers against torch (values and gradients), and the Module system
(names, state dicts, loading a torch model's weights, modes, containers, init)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lazy
import lazy.nn.functional as F
from lazy import nn

TOL = {"rtol": 1e-4, "atol": 1e-5}


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def both(a: np.ndarray, requires_grad=True):
    """The same values as a lazy leaf and a torch leaf."""
    lt = lazy.tensor(a.copy())
    tt = torch.tensor(a)
    if requires_grad:
        lt.requires_grad_()
        tt.requires_grad_()
    return lt, tt


def check_fn(lazy_fn, torch_fn, *arrays, tol=TOL, grad=True):
    """Values of f(*arrays) and gradients of sum(f * fixed weights) against torch."""
    pairs = [both(a, grad) for a in arrays]
    lout, tout = lazy_fn(*[p[0] for p in pairs]), torch_fn(*[p[1] for p in pairs])
    if grad:
        wgt = rand(*tout.shape, seed=99)
        (lout * lazy.tensor(wgt)).sum().backward()
        (tout * torch.tensor(wgt)).sum().backward()
    torch.testing.assert_close(lout.torch(), tout.detach(), **tol)
    if grad:
        for (lt, tt) in pairs:
            torch.testing.assert_close(lt.grad.torch(), tt.grad, **tol)


# ---------------------------------------------------------------- functional

@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "softplus"])
def test_activations(name):
    x = rand(7, 5)
    check_fn(getattr(F, name), getattr(TF, name), x)


def test_gelu_tanh_and_modules():
    x = rand(4, 6)
    check_fn(lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh"), x)
    for lm, tm in [(nn.ReLU(), torch.nn.ReLU()), (nn.GELU(), torch.nn.GELU()), (nn.SiLU(), torch.nn.SiLU()),
                   (nn.Tanh(), torch.nn.Tanh()), (nn.Softmax(-1), torch.nn.Softmax(-1))]:
        check_fn(lm, tm, x, grad=False)


def test_softmax_log_softmax():
    x = rand(3, 4, 5)
    for d in (0, 1, -1):
        check_fn(lambda t, d=d: F.softmax(t, d), lambda t, d=d: TF.softmax(t, d), x)
        check_fn(lambda t, d=d: F.log_softmax(t, dim=d), lambda t, d=d: TF.log_softmax(t, dim=d), x)


def test_linear_with_and_without_bias():
    x, w, b = rand(5, 3, 4), rand(6, 4, seed=1), rand(6, seed=2)
    check_fn(F.linear, TF.linear, x, w, b)
    check_fn(F.linear, TF.linear, x, w)


def test_embedding_and_padding_idx():
    w = rand(10, 4)
    idx = np.array([[1, 0, 9], [3, 3, 0]])
    check_fn(lambda t: F.embedding(lazy.tensor(idx), t), lambda t: TF.embedding(torch.tensor(idx), t), w)
    check_fn(lambda t: F.embedding(lazy.tensor(idx), t, padding_idx=0),
             lambda t: TF.embedding(torch.tensor(idx), t, padding_idx=0), w)
    with pytest.raises(RuntimeError, match="integer indices"):
        F.embedding(lazy.tensor([0.5]), lazy.tensor(w))


def test_layer_norm_and_rms_norm():
    x, w, b = rand(4, 3, 8), rand(8, seed=1), rand(8, seed=2)
    check_fn(lambda x, w, b: F.layer_norm(x, (8,), w, b), lambda x, w, b: TF.layer_norm(x, (8,), w, b), x, w, b)
    check_fn(lambda x: F.layer_norm(x, (3, 8)), lambda x: TF.layer_norm(x, (3, 8)), x)
    check_fn(lambda x, w: F.rms_norm(x, (8,), w), lambda x, w: TF.rms_norm(x, (8,), w), x, w)
    check_fn(lambda x: F.rms_norm(x, 8, eps=1e-3), lambda x: TF.rms_norm(x, (8,), eps=1e-3), x)
    with pytest.raises(RuntimeError, match="normalized_shape"):
        F.layer_norm(lazy.tensor(x), (4,))


@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
                                {"weight": True}, {"weight": True, "ignore_index": 1}, {"label_smoothing": 0.1},
                                {"label_smoothing": 0.2, "weight": True, "ignore_index": 0}])
def test_cross_entropy_with_class_indices(kw):
    x = rand(6, 5)
    y = np.array([0, 2, 4, 1, 2, 3])
    kw = dict(kw)
    if kw.pop("weight", False):
        wv = np.abs(rand(5, seed=3)) + 0.1
        lkw, tkw = dict(kw, weight=lazy.tensor(wv)), dict(kw, weight=torch.tensor(wv))
    else:
        lkw = tkw = kw
    check_fn(lambda t: F.cross_entropy(t, lazy.tensor(y), **lkw), lambda t: TF.cross_entropy(t, torch.tensor(y), **tkw), x)


def test_cross_entropy_spatial_probabilities_and_nll():
    x = rand(2, 4, 3)
    y = np.array([[0, 3, 1], [2, 2, 0]])
    check_fn(lambda t: F.cross_entropy(t, lazy.tensor(y)), lambda t: TF.cross_entropy(t, torch.tensor(y)), x)
    p = torch.softmax(torch.tensor(rand(5, 4, seed=4)), -1).numpy()
    check_fn(lambda t: F.cross_entropy(t, lazy.tensor(p), label_smoothing=0.1),
             lambda t: TF.cross_entropy(t, torch.tensor(p), label_smoothing=0.1), rand(5, 4))
    y1 = np.array([1, 0, 3, 3, 2])
    check_fn(lambda t: F.nll_loss(t.log_softmax(-1), lazy.tensor(y1)),
             lambda t: TF.nll_loss(t.log_softmax(-1), torch.tensor(y1)), rand(5, 4))
    check_fn(lambda t: F.cross_entropy(t, lazy.tensor(np.array(2))), lambda t: TF.cross_entropy(t, torch.tensor(2)),
             rand(4))  # unbatched
    with pytest.raises(RuntimeError, match="target of shape"):
        F.cross_entropy(lazy.tensor(rand(5, 4)), lazy.tensor(np.array([1, 2])))


def test_regression_losses():
    a, b = rand(4, 3), rand(4, 3, seed=1)
    for red in ("mean", "sum", "none"):
        check_fn(lambda x, y, r=red: F.mse_loss(x, y, reduction=r), lambda x, y, r=red: TF.mse_loss(x, y, reduction=r),
                 a, b)
        check_fn(lambda x, y, r=red: F.l1_loss(x, y, reduction=r), lambda x, y, r=red: TF.l1_loss(x, y, reduction=r),
                 a, b)
    t = (rand(4, 3, seed=2) > 0).astype(np.float32)
    pw = np.abs(rand(3, seed=5))
    check_fn(lambda x: F.binary_cross_entropy_with_logits(x, lazy.tensor(t), pos_weight=lazy.tensor(pw)),
             lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(t), pos_weight=torch.tensor(pw)), a * 5)
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(lazy.tensor(a), lazy.tensor(b), reduction="avg")


@pytest.mark.parametrize("kw", [{}, {"is_causal": True}, {"mask": "bool"}, {"mask": "float"}, {"scale": 0.3}])
def test_scaled_dot_product_attention(kw):
    q, k, v = rand(2, 3, 5, 4), rand(2, 3, 6, 4, seed=1), rand(2, 3, 6, 4, seed=2)
    kw = dict(kw)
    m = kw.pop("mask", None)
    if m == "bool":
        mask = rand(5, 6, seed=3) > -0.5
        kw["attn_mask"] = mask
    elif m == "float":
        kw["attn_mask"] = rand(5, 6, seed=3)
    lkw = {a: (lazy.tensor(b) if isinstance(b, np.ndarray) else b) for a, b in kw.items()}
    tkw = {a: (torch.tensor(b) if isinstance(b, np.ndarray) else b) for a, b in kw.items()}
    check_fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **lkw),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **tkw), q, k, v)


def test_sdpa_grouped_query_attention():
    q, k, v = rand(1, 4, 3, 2), rand(1, 2, 3, 2, seed=1), rand(1, 2, 3, 2, seed=2)
    check_fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), q, k, v)


def test_dropout():
    x = lazy.tensor(np.ones((200, 50), np.float32))
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x
    lazy.manual_seed(3)
    y = F.dropout(x, 0.25).numpy()
    kept = y != 0
    assert 0.70 < kept.mean() < 0.80  # 10000 draws: keep rate 0.75 +- 0.013 (3 sigma)
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    lazy.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.25).numpy(), y)  # reproducible from the seed
    assert not F.dropout(x, 1.0).numpy().any()
    d = nn.Dropout(0.5)
    assert d(x).numpy().min() == 0
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    # the gradient flows through the kept elements only, scaled like the values
    w = lazy.tensor(np.ones(1000, np.float32)).requires_grad_()
    out = F.dropout(w, 0.5)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), out.numpy())



def test_dropout_draws_torchs_mask_from_the_seed():
    # a model with dropout trains as on torch from the same seed (the MNIST CNN of perf/models)
    x = np.random.default_rng(0).standard_normal((4, 33), dtype=np.float32)
    for p in (0.25, 0.5):
        lazy.manual_seed(7)
        torch.manual_seed(7)
        np.testing.assert_array_equal(F.dropout(lazy.tensor(x), p).numpy(), TF.dropout(torch.tensor(x), p).numpy())

# a few configurations only: the backward graphs of windowed views take the scheduler a while
@pytest.mark.parametrize("kw,grad", [({}, True), ({"stride": 2, "padding": 1, "dilation": (2, 1)}, True),
                                     ({"groups": 2, "padding": "same"}, False), ({"stride": (1, 2)}, False)])
def test_conv2d(kw, grad):
    groups = kw.get("groups", 1)
    x, w, b = rand(2, 4, 7, 6), rand(6, 4 // groups, 3, 2, seed=1), rand(6, seed=2)
    check_fn(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw), x, w, b,
             tol={"rtol": 1e-4, "atol": 1e-4}, grad=grad)


@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1, "dilation": 2}, {"groups": 2, "padding": "same"},
                                {"padding": "valid", "stride": (3,)}])
def test_conv1d(kw):
    groups = kw.get("groups", 1)
    x, w, b = rand(2, 4, 11), rand(6, 4 // groups, 3, seed=1), rand(6, seed=2)
    check_fn(lambda x, w, b: F.conv1d(x, w, b, **kw), lambda x, w, b: TF.conv1d(x, w, b, **kw), x, w, b,
             tol={"rtol": 1e-4, "atol": 1e-4}, grad=True)


def test_conv1d_module_matches_torch_and_unbatched_input():
    torch.manual_seed(0)
    tm = torch.nn.Conv1d(3, 5, 4, stride=2, padding=1, bias=True)
    lm = lazy.nn.Conv1d(3, 5, 4, stride=2, padding=1)
    lm.load_state_dict(tm.state_dict())
    assert repr(lm) == repr(tm)
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(lm(lazy.tensor(x)).torch(), tm(x).detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lm(lazy.tensor(x[0])).torch(), tm(x[0]).detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="conv1d: expected a 2-d"):
        lm(lazy.ones(1, 1, 3, 9))


def test_conv2d_module_matches_torch_and_unbatched_input():
    torch.manual_seed(0)
    tm = torch.nn.Conv2d(3, 4, 3, padding=1)
    lm = nn.Conv2d(3, 4, 3, padding=1)
    lm.load_state_dict(tm.state_dict())
    x = rand(3, 5, 5)
    torch.testing.assert_close(lm(lazy.tensor(x)).torch(), tm(torch.tensor(x)).detach(), rtol=1e-4, atol=1e-5)
    assert repr(lm) == "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    with pytest.raises(RuntimeError, match="channels"):
        F.conv2d(lazy.tensor(rand(1, 2, 5, 5)), lazy.tensor(rand(4, 3, 3, 3)))


@pytest.mark.parametrize("kw", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                {"kernel_size": 3, "stride": 2, "ceil_mode": True}, {"kernel_size": (2, 3), "dilation": 2}])
def test_max_pool2d(kw):
    x = rand(2, 3, 9, 8)
    check_fn(lambda t: F.max_pool2d(t, **kw), lambda t: TF.max_pool2d(t, **kw), x, grad=kw == {"kernel_size": 2})
    check_fn(nn.MaxPool2d(**kw), torch.nn.MaxPool2d(**kw), x, grad=False)


def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum():
    x = np.array([[[[1, 1, 0, 2], [1, 0, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]]], dtype=np.float32)
    for kw in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 1, "padding": 1}):
        check_fn(lambda t, kw=kw: F.max_pool2d(t, **kw), lambda t, kw=kw: TF.max_pool2d(t, **kw), x)


@pytest.mark.parametrize("kw", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
                                {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                                {"kernel_size": 2, "divisor_override": 3}])
def test_avg_pool2d(kw):
    x = rand(2, 3, 9, 8)
    check_fn(lambda t: F.avg_pool2d(t, **kw), lambda t: TF.avg_pool2d(t, **kw), x, grad=kw == {"kernel_size": 2})
    check_fn(nn.AvgPool2d(**kw), torch.nn.AvgPool2d(**kw), x, grad=False)


def test_one_hot_and_pad():
    t = lazy.tensor([0, 2, 1])
    np.testing.assert_array_equal(F.one_hot(t).numpy(), TF.one_hot(torch.tensor([0, 2, 1])).numpy())
    np.testing.assert_array_equal(F.one_hot(t, 4).numpy(), TF.one_hot(torch.tensor([0, 2, 1]), 4).numpy())
    x = rand(2, 3)
    check_fn(lambda t: F.pad(t, (1, 2), value=3.0), lambda t: TF.pad(t, (1, 2), value=3.0), x)


# ---------------------------------------------------------------- modules

def mlp_pair(seed=0):
    torch.manual_seed(seed)
    tm = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.GELU(), torch.nn.LayerNorm(6), torch.nn.Linear(6, 3))
    lm = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 3))
    return lm, tm


def test_nn_and_optim_are_attributes_of_lazy():
    import importlib
    import subprocess
    import sys

    code = "import lazy; print(lazy.nn.Linear, lazy.optim.AdamW, lazy.nn.functional.cross_entropy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Linear" in out.stdout
    assert importlib.import_module("lazy.nn") is lazy.nn


def test_parameter_is_a_leaf_that_owns_a_buffer():
    p = nn.Parameter(lazy.ones(3) * 2)  # lazy input: realized once, then a leaf
    assert isinstance(p, lazy.Tensor) and p.requires_grad and p.is_leaf
    assert p._node.op.name == "BUFFER"
    np.testing.assert_array_equal(p.numpy(), [2, 2, 2])
    q = nn.Parameter(p)  # the same buffer would make the two leaves one for autograd: copied
    assert q._node is not p._node
    (p * 3 + q).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [3, 3, 3])
    np.testing.assert_array_equal(q.grad.numpy(), [1, 1, 1])
    assert not nn.Parameter(lazy.ones(2), requires_grad=False).requires_grad
    assert repr(nn.Parameter(lazy.tensor([1.0]))).startswith("Parameter containing:")
    assert type(p * 2) is lazy.Tensor


def test_init_matches_torch_for_the_same_seed():
    torch.manual_seed(5)
    lazy.manual_seed(5)
    tl, ll = torch.nn.Linear(7, 4), nn.Linear(7, 4)
    te, le = torch.nn.Embedding(6, 3, padding_idx=2), nn.Embedding(6, 3, padding_idx=2)
    tc, lc = torch.nn.Conv2d(2, 3, 3), nn.Conv2d(2, 3, 3)
    for t, lz in [(tl, ll), (te, le), (tc, lc)]:
        for (tn, tp), (ln, lp) in zip(t.named_parameters(), lz.named_parameters()):
            assert tn == ln
            np.testing.assert_array_equal(lp.numpy(), tp.detach().numpy())
    assert not le.weight.numpy()[2].any()



def test_data_is_an_alias_that_init_writes_through():
    # DCGAN's weights_init: `nn.init.normal_(m.weight.data, 0.0, 0.02)` must change the weight
    torch.manual_seed(5)
    lazy.manual_seed(5)
    tc, lc = torch.nn.Conv2d(2, 3, 3), nn.Conv2d(2, 3, 3)
    torch.nn.init.normal_(tc.weight.data, 0.0, 0.02)
    nn.init.normal_(lc.weight.data, 0.0, 0.02)
    torch.nn.init.zeros_(tc.bias.data)
    nn.init.zeros_(lc.bias.data)
    np.testing.assert_array_equal(lc.weight.numpy(), tc.weight.detach().numpy())
    assert not lc.bias.numpy().any() and lc.weight.requires_grad and not lc.weight.data.requires_grad
    lc.weight.data = lazy.ones(3, 2, 3, 3)  # assignment replaces the value, the Parameter stays
    assert isinstance(lc.weight, nn.Parameter) and lc.weight.numpy().min() == 1
    with pytest.raises(RuntimeError, match="data: assigning"):
        lc.weight.data = lazy.ones(2)

def test_names_and_state_dict_match_torch():
    lm, tm = mlp_pair()
    assert [n for n, _ in lm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert list(lm.state_dict()) == list(tm.state_dict())
    assert [tuple(p.shape) for p in lm.parameters()] == [tuple(p.shape) for p in tm.parameters()]
    assert len(list(lm.modules())) == len(list(tm.modules()))
    assert [n for n, _ in lm.named_children()] == ["0", "1", "2", "3"]
    assert repr(lm) == repr(tm)
    # state_dict values alias the parameters (detached), like torch
    sd = lm.state_dict()
    assert not sd["0.weight"].requires_grad
    np.testing.assert_array_equal(sd["0.weight"].numpy(), lm[0].weight.numpy())


@pytest.mark.parametrize("source", ["torch", "numpy", "lazy"])
def test_load_state_dict_from_torch_numpy_or_lazy(source):
    lm, tm = mlp_pair()
    sd = tm.state_dict()
    if source == "numpy":
        sd = {k: v.numpy().astype(np.float64) for k, v in sd.items()}  # cast to the parameter's dtype
    elif source == "lazy":
        sd = {k: lazy.tensor(v.numpy()) for k, v in sd.items()}
    before = lm[0].weight
    res = lm.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert lm[0].weight is before and lm[0].weight.requires_grad and lm[0].weight.dtype is lazy.float32
    x = rand(5, 8)
    torch.testing.assert_close(lm(lazy.tensor(x)).torch(), tm(torch.tensor(x)).detach(), **TOL)


def test_load_state_dict_copies_and_checks():
    lm, tm = mlp_pair()
    lm.load_state_dict(tm.state_dict())
    with torch.no_grad():
        tm[0].weight.add_(1.0)  # torch's in-place update must not show through: we copied
    assert not np.allclose(lm[0].weight.numpy(), tm[0].weight.detach().numpy())
    sd = dict(tm.state_dict())
    sd.pop("3.bias")
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "3.bias"(.|\n)*Unexpected key\(s\)'):
        lm.load_state_dict(sd)
    res = lm.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["3.bias"] and res.unexpected_keys == ["extra"]
    sd["3.bias"] = torch.zeros(4)
    with pytest.raises(RuntimeError, match="size mismatch for 3.bias"):
        lm.load_state_dict(sd, strict=False)


def test_train_eval_zero_grad_requires_grad():
    lm, _ = mlp_pair()
    assert lm.training and lm[0].training
    assert lm.eval() is lm and not any(m.training for m in lm.modules())
    lm.train()
    assert all(m.training for m in lm.modules())
    lm(lazy.tensor(rand(2, 8))).sum().backward()
    assert all(p.grad is not None for p in lm.parameters())
    lm.zero_grad()
    assert all(p.grad is None for p in lm.parameters())
    lm.requires_grad_(False)
    assert not any(p.requires_grad for p in lm.parameters())


def test_custom_module_registration_and_containers():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
            self.norm = nn.RMSNorm(4)
            self.scale = nn.Parameter(lazy.ones(1))
            self.register_buffer("mask", lazy.tensor(np.ones(4, np.float32)))
            self.register_buffer("tmp", lazy.zeros(2), persistent=False)
            self.plain = 3

        def forward(self, x):
            for layer in self.layers:
                x = layer(x).relu()
            return self.norm(x) * self.scale * self.mask

    b = Block()
    names = [n for n, _ in b.named_parameters()]
    assert names == ["scale", "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "norm.weight"]
    assert list(b.state_dict()) == ["scale", "mask", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                                    "layers.1.bias", "norm.weight"]
    assert [n for n, _ in b.named_buffers()] == ["mask", "tmp"]
    assert b.plain == 3 and len(b.layers) == 2 and isinstance(b.layers[-1], nn.Linear)
    assert tuple(b(lazy.tensor(rand(3, 4))).shape) == (3, 4)
    b.layers.append(nn.Linear(4, 4))
    assert len(list(b.parameters())) == 8
    with pytest.raises(TypeError, match="parameter"):
        b.scale = lazy.ones(1)
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.parameters())) == 2  # shared parameters once, like torch
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    assert "a" in d and [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = b.nope


def test_deepcopy_gives_independent_parameters():
    lm, _ = mlp_pair()
    c = copy.deepcopy(lm)
    np.testing.assert_array_equal(c[0].weight.numpy(), lm[0].weight.numpy())
    assert c[0].weight is not lm[0].weight and c[0].weight._node is not lm[0].weight._node
    assert isinstance(c[0].weight, nn.Parameter)
    (c(lazy.tensor(rand(2, 8))).sum()).backward()
    assert lm[0].weight.grad is None and c[0].weight.grad is not None


def test_module_to_dtype():
    lm, _ = mlp_pair()
    lm.double()
    assert all(p.dtype is lazy.float64 and p.requires_grad and isinstance(p, nn.Parameter) for p in lm.parameters())
    assert lm(lazy.tensor(rand(2, 8)).double()).dtype is lazy.float64
