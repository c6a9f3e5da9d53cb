"""torch.compile(model, backend="lazy") (lazy/dynamo.py): the model suite against eager torch.

Tolerances, float32 throughout: forwards agree to rtol 1e-5 / atol 1e-5 (lazy's matmuls and sums
add in another order than torch's and lazy's sums are more accurate, so results differ by a few
ulp per reduction step); gradients to rtol 1e-4 / atol 1e-5 scaled by the gradient's magnitude:
a gradient is a reduction over the batch of products of activations that already differ by
ulps, and batch norm's 1/std multiplies those differences (a conv bias followed by batch norm
has a gradient that is exactly 0 in theory and ~1e-7 in both: atol covers it).
Each model is compiled once per module and reused across its asserts: dynamo's tracing is slow.
"""

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lazy
from lazy import dynamo
from perf.torch_models import MODELS, build, loss_of

ROOT = Path(__file__).resolve().parents[1]


def _close(got, want, rtol, atol):
    scale = max(want.abs().max().item(), 1.0)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol * scale)


def _step(model, inputs):
    out = model(*inputs)
    loss_of(out).backward()
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_and_gradients_match_eager(name):
    torch._dynamo.reset()
    model, inputs = build(name)
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, backend=dynamo.backend)
    graphs, replays = dynamo.stats["graphs"], dynamo.stats["replays"]
    # the second step reuses the compiled graphs and lazy's programs, the fourth replays them (lazy.jit)
    for step in range(4):
        want, got = _step(model, inputs), _step(compiled, inputs)
        for w, g in zip(want, got):
            _close(g, w, 1e-5, 1e-5)
        for (pname, p), q in zip(model.named_parameters(), compiled_model.parameters()):
            assert q.grad is not None, pname
            _close(q.grad, p.grad, 1e-4, 1e-5)
        for b, c in zip(model.buffers(), compiled_model.buffers()):  # batch norm's running statistics
            if b.is_floating_point():
                _close(c, b, 1e-5, 1e-6)
        model.zero_grad()
        compiled_model.zero_grad()
    assert dynamo.stats["graphs"] - graphs == 2  # one forward and one backward graph, no recompile
    assert dynamo.stats["replays"] - replays == 2  # step 4's forward and backward ran no graph-building Python
    assert not dynamo.fallbacks.keys() & {"aten.convolution.default", "aten.convolution_backward.default",
                                          "aten.embedding_dense_backward.default"}


class _Breaks(torch.nn.Module):
    """A data-dependent branch on .item() (a graph break), a print, and an op lazy does not
    translate (erfinv: forward and backward run on torch)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        if h.abs().mean().item() > 0.1:
            h = h * 2
        print("forward of _Breaks")
        return self.b(torch.special.erfinv(torch.tanh(h) * 0.5))


def test_graph_break_and_untranslated_op_run_and_are_reported(monkeypatch, capfd):
    torch._dynamo.reset()
    monkeypatch.setattr(dynamo, "_reported", set())
    monkeypatch.setattr(dynamo, "fallbacks", type(dynamo.fallbacks)())
    torch.manual_seed(0)
    model = _Breaks()
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, backend=dynamo.backend)
    x = torch.randn(3, 8)
    graphs = dynamo.stats["graphs"]
    with lazy.debug(1):
        got = _step(compiled, (x,))[0]
    want = _step(model, (x,))[0]
    _close(got, want, 1e-5, 1e-5)
    for p, q in zip(model.parameters(), compiled_model.parameters()):
        _close(q.grad, p.grad, 1e-4, 1e-5)
    # the .item() and the print break the graph: each piece has a forward and a backward graph
    assert dynamo.stats["graphs"] - graphs >= 4
    assert dynamo.fallbacks["aten.erfinv.default"] == 2  # its forward and its gradient's
    err = capfd.readouterr().err
    assert err.count("lazy.dynamo: aten.erfinv.default runs on torch (1 node(s) in this graph)") == 1


@pytest.mark.parametrize("dynamic", [None, True])
def test_new_sizes_become_kernel_arguments(dynamic):
    """dynamo recompiles for a second batch size with the size symbolic (or, dynamic=True, has it
    symbolic from the start): a SymInt placeholder, an int at run time; lazy's programs take sizes
    as arguments from its second size on, so further sizes compile no C kernels."""
    from codegen import compile_c

    torch._dynamo.reset()
    model, _ = build("mlp")
    compiled = torch.compile(copy.deepcopy(model), backend=dynamo.backend, dynamic=dynamic)
    for batch, new_kernels in ((4, None), (5, None), (7, 0), (9, 0)):
        x = torch.randn(batch, 32)
        before = compile_c.stats.misses
        with torch.no_grad():
            _close(compiled(x), model(x), 1e-5, 1e-5)
        if new_kernels is not None:
            assert compile_c.stats.misses - before == new_kernels, batch


def test_untranslated_node_between_lazy_nodes():
    """An aten graph by hand: the node lazy lacks gets its input realized as a torch tensor, and
    its torch output feeds the lazy nodes after it."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x):
        return (torch.special.i0e(x.exp()) * 2 + x,)

    x = torch.randn(5)
    gm = make_fx(f)(x)
    assert "aten.special_i0e.default" in {str(n.target) for n in gm.graph.nodes}
    before = dynamo.fallbacks["aten.special_i0e.default"]
    run = dynamo.compile_graph(gm, [x])
    (out,) = run([x])
    assert isinstance(out, torch.Tensor)
    _close(out, f(x)[0], 1e-6, 1e-6)
    assert dynamo.fallbacks["aten.special_i0e.default"] == before + 1


_SECOND_PROCESS = textwrap.dedent("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    compiled = torch.compile(model, backend="lazy")   # by name: torch finds it through the entry point
    compiled(torch.randn(2, 8)).square().sum().backward()
    import sys
    from codegen import compile_c
    print("compiled", compile_c.stats.misses, "graphs", sys.modules["lazy.dynamo"].stats["graphs"])
""")


def test_entry_point_and_second_process_reuses_the_disk_cache(tmp_path):
    """pyproject.toml's entry point, installed as a dist-info of its own on the path, lets torch
    find backend="lazy" without importing lazy; a second process with the same LAZY_CACHE_DIR
    compiles no C kernel."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.entry-points.torch_dynamo_backends]\n")[1]
    name, value = section.split("\n")[0].split("#")[0].split("=")
    eps = {name.strip(): value.strip().strip('"')}  # (tomllib is 3.11+; the project supports 3.10)
    assert eps == {"lazy": "lazy.dynamo:backend"}
    site = tmp_path / "site"
    dist = site / "lazy_dynamo_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-dynamo-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[torch_dynamo_backends]\n"
                                          + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    env = {**os.environ, "LAZY_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind")}
    counts = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _SECOND_PROCESS], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=300, check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        line = next(s for s in r.stdout.splitlines() if s.startswith("compiled"))
        counts.append([int(v) for v in line.split()[1::2]])
    (first, graphs1), (second, graphs2) = counts
    assert first > 0 and graphs1 == 2
    assert second == 0 and graphs2 == 2


def _grad_of(f):
    """x -> (f(x), d sum(f(x) * w) / dx) for a fixed uneven w: forward and backward aten ops."""
    def g(x, *rest):
        x = x.detach().requires_grad_()
        y = f(x, *rest)
        w = torch.linspace(-1, 2, y.numel()).reshape(y.shape)
        return y, torch.autograd.grad((y * w).sum(), x)[0]
    return g


_F = torch.nn.functional
_OPS = {  # name -> (function of torch tensors, inputs): each through aten and back
    "cat_stack_slices": (lambda x: torch.cat([x[:, 1:3], torch.stack([x[:, 0], x[:, -1]], 1)], 1).flip(0),
                         lambda: [torch.randn(4, 6)]),
    "reductions": (lambda x: torch.stack([x.amax(1), x.var(1), x.mean(1), x.logsumexp(1), x.max(1).values,
                                          x.argmin(1).float()]), lambda: [torch.randn(3, 7)]),
    "creation": (lambda x: x + torch.arange(5.0) * torch.full((3, 5), 2.0) + torch.ones_like(x).cumsum(1),
                 lambda: [torch.randn(3, 5)]),
    "where_clamp_pow": (lambda x: torch.where(x > 0, x.clamp(-0.5, 0.7) ** 3, 2.0 ** x), lambda: [torch.randn(4, 4)]),
    "index_put_gather_scatter": (
        lambda x, i: torch.index_put(x, (i,), torch.ones(2, 5), accumulate=True).gather(1, i.expand(4, 2)[:, :2])
        + torch.zeros(4, 5).scatter_add(1, i.expand(4, 2), x[:, :2]).sum(1, keepdim=True),
        lambda: [torch.randn(4, 5), torch.tensor([[1, 3]]).reshape(2)]),
    "avg_pool_grad": (_grad_of(lambda x: _F.avg_pool2d(x, 3, 2, 1)), lambda: [torch.randn(2, 3, 7, 7)]),
    "max_pool_grad": (_grad_of(lambda x: _F.max_pool2d(x, 3, 2, 1)), lambda: [torch.randn(2, 3, 7, 7)]),
    "log_softmax_nll_grad": (_grad_of(lambda x, t: _F.nll_loss(x.log_softmax(1), t, ignore_index=2)[None]),
                             lambda: [torch.randn(6, 4), torch.tensor([0, 2, 3, 1, 2, 0])]),
    "softmax_grad": (_grad_of(lambda x: x.softmax(-1)), lambda: [torch.randn(3, 8)]),
    "embedding_grad": (lambda w, i: _grad_of(lambda w: _F.embedding(i, w, padding_idx=1))(w),
                       lambda: [torch.randn(6, 4), torch.tensor([[1, 2, 2], [5, 0, 1]])]),
    "conv_grad": (_grad_of(lambda x, w: _F.conv2d(x, w, stride=2, padding=1)),
                  lambda: [torch.randn(2, 4, 7, 7), torch.randn(6, 4, 3, 3)]),
    "grouped_conv1d_grad": (_grad_of(lambda x, w: _F.conv1d(x, w, padding=1, groups=2)),
                            lambda: [torch.randn(2, 4, 9), torch.randn(6, 2, 3)]),
    "group_norm_grad": (lambda x, w, b: _grad_of(lambda x: _F.group_norm(x, 2, w, b))(x),
                        lambda: [torch.randn(2, 4, 3, 3), torch.randn(4), torch.randn(4)]),
    "activations_grad": (_grad_of(lambda x: torch.stack([_F.leaky_relu(x, 0.1), _F.elu(x), _F.selu(x), _F.softplus(x),
                                                         _F.hardtanh(x), _F.hardswish(x), _F.silu(x), x.tanh(),
                                                         x.sigmoid(), _F.mish(x)])), lambda: [torch.randn(5, 6)]),
    "batch_norm_eval": (lambda x, m, v: _F.batch_norm(x, m, v, training=False),
                        lambda: [torch.randn(2, 3, 4, 4), torch.randn(3), torch.rand(3) + 0.5]),
    "attention_grad": (_grad_of(lambda q: _F.scaled_dot_product_attention(q, q * 2, q.flip(-1), is_causal=True)),
                       lambda: [torch.randn(2, 2, 5, 4)]),
}


@pytest.mark.parametrize("name", list(_OPS))
def test_aten_translations_match_torch(name):
    """aten graphs made directly (make_fx with the backend's decompositions, no dynamo): every node
    translated (nothing on torch), the outputs equal to torch's (rtol 1e-5: reduction order)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def fn(*args):  # graphs from AOTAutograd return a tuple
        out = _OPS[name][0](*args)
        return out if isinstance(out, tuple) else (out,)

    torch.manual_seed(0)
    inputs = _OPS[name][1]()
    gm = make_fx(fn, decomposition_table=dynamo.decompositions())(*inputs)
    untranslated = {str(n.target) for n in gm.graph.nodes if n.op == "call_function" and dynamo.lookup(n.target) is None}
    assert not untranslated
    want = fn(*inputs)
    got = dynamo.compile_graph(gm, inputs)(list(inputs))
    for g, w in zip(got, want):
        _close(g, w, 1e-5, 1e-5)


def test_clone_of_an_input_is_a_new_tensor():
    """lazy's clone of a buffer is that buffer (values never change in lazy); torch's caller may
    write the result in place, so an output that would be an input's memory is copied, unless the
    graph returns the input itself."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(3, 4)
    gm = make_fx(lambda x: (x.clone(), x))(x)
    a, b = dynamo.compile_graph(gm, [x])([x])
    assert a.data_ptr() != x.data_ptr() and torch.equal(a, x)
    assert b.data_ptr() == x.data_ptr()


def test_training_loop_with_a_compiled_optimizer_step():
    """Five SGD steps (momentum) with the model and the optimizer's step both compiled by lazy:
    the parameters and batch norm's running statistics follow eager's (rtol 1e-5: each step's
    ulp-level differences carry into the next; the loss is a mean, so the run does not diverge)."""
    torch._dynamo.reset()
    model, inputs = build("cnn")
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, backend=dynamo.backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    copt = torch.optim.SGD(compiled_model.parameters(), lr=0.01, momentum=0.9)
    cstep = torch.compile(copt.step, backend=dynamo.backend)
    for _ in range(5):
        opt.zero_grad()
        model(*inputs).square().mean().backward()
        opt.step()
        copt.zero_grad()
        compiled(*inputs).square().mean().backward()
        cstep()
    for p, q in zip(model.parameters(), compiled_model.parameters()):
        _close(q, p, 1e-5, 1e-5)
    for b, c in zip(model.buffers(), compiled_model.buffers()):
        _close(c.float(), b.float(), 1e-5, 1e-5)
