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


def test_new_sizes_become_kernel_arguments():
    """dynamo recompiles for a second batch size with the size symbolic (a SymInt placeholder, an
    int at run time); lazy's programs take sizes as arguments from then on, so further sizes
    compile no C kernels."""
    from codegen import compile_c

    torch._dynamo.reset()
    model, _ = build("mlp")
    compiled = torch.compile(copy.deepcopy(model), backend=dynamo.backend)
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
    from perf.torch_models import build, loss_of
    model, inputs = build("mlp")
    compiled = torch.compile(model, backend="lazy")   # by name: torch finds it through the entry point
    loss_of(compiled(*inputs)).backward()
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
