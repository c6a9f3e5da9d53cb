"""C kernels for sizes that change (codegen/render_c.py on the Kernel IR of lazy/dynamic.py): a
program seen with a second size compiles its kernels once more, for every size, and gives torch's
values at each, including sizes that are no multiple of a block or a vector width, rows longer than
the row caches hold, and 2 (where a mean's divisor is the literal 2.0)."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import torch
from conftest import kernel_body, kernels_of, render_spy

import lazy
from codegen import compile_c, render_c, tune
from codegen.kernel_ir import Kernel
from codegen.render_c import CConfig
from lazy import nn, optim, runtime

F = lazy.nn.functional
SIZES = (3, 7, 2, 1023, 4097, 5, 130)
ROWS = (3, 7, 2, 1023, 4097, 16384, 16385, 20001)  # row lengths: the last two beyond the row caches


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    """A compile cache and programs of the test's own: `compile_c.stats.misses` counts what it
    compiles, and every program it runs is seen (a program of an earlier test would be run without
    its sizes counting for its family)."""
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path))
    compile_c._loaded.clear()
    saved = [(table, dict(table)) for table in (runtime._programs, runtime._families, runtime._bound)]
    for table, _ in saved:
        table.clear()
    yield
    for table, old in saved:
        table.clear()
        table.update(old)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@contextlib.contextmanager
def sizes_checked(capsys):
    """Inside: LAZY_DEBUG=1. After: the block built a program for all sizes, and none stayed fixed."""
    with lazy.debug(1):
        yield
    log = capsys.readouterr().err
    assert "sizes stay fixed" not in log, log
    assert "are arguments from now on" in log, log


def over_sizes(capsys, fn_lazy, fn_torch, inputs, rtol=1e-5, atol=1e-5):
    """Run `fn_lazy` on each tuple of `inputs` and compare with `fn_torch`; compiles stop after the
    second sizes and the second set is no larger than the first."""
    start, counts = compile_c.stats.misses, []
    with sizes_checked(capsys):
        for ins in inputs:
            got = fn_lazy(*map(lazy.tensor, ins))
            want = fn_torch(*ins)
            got, want = (got, want) if isinstance(got, list) else ([got], [want])
            lazy.realize(*got)
            for g, w in zip(got, want):
                torch.testing.assert_close(g.torch(), w, rtol=rtol, atol=atol)
            counts.append(compile_c.stats.misses - start)
    assert counts[0] > 0 and counts[1:] == [counts[1]] * (len(counts) - 1), counts  # nothing after the second
    assert counts[1] <= 2 * counts[0], counts
    return counts


# -- elementwise -----------------------------------------------------------------------------------
def test_an_elementwise_chain_over_batches_of_every_size(capsys):
    def chain(x, b):
        return ((x * 3 + b).relu() - x.tanh()) * x.sigmoid()

    over_sizes(capsys, chain, chain, [(randn(n, 37, seed=n), randn(37)) for n in SIZES])


def test_a_vector_chain_with_split_loops(capsys):
    def chain(x):  # two vector calls per element: the store loop splits (call fission)
        return (x * 0.7).exp() * x.tanh()

    over_sizes(capsys, chain, chain, [(randn(n, seed=n),) for n in (*SIZES, 50_001)], rtol=2e-5)


# -- rows ------------------------------------------------------------------------------------------
ROW_OPS = {
    "sum": (lambda x, w, b: x.sum(-1), 1e-4),
    "amax": (lambda x, w, b: x.amax(-1), 0),
    "softmax": (lambda x, w, b: x.softmax(-1), 1e-5),
    "log_softmax": (lambda x, w, b: x.log_softmax(-1), 1e-4),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b), 1e-4),
    "rms_norm": (lambda x, w, b: x * (x * x).mean(-1, keepdim=True).rsqrt() * w, 1e-4),
}


def torch_row(name):
    if name == "layer_norm":
        return lambda x, w, b: torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b)
    return ROW_OPS[name][0]


@pytest.mark.parametrize("name", ROW_OPS)
def test_row_kernels_where_the_row_length_changes(capsys, name):
    fn, tol = ROW_OPS[name]
    inputs = [(randn(5, n, seed=n), randn(n, seed=1), randn(n, seed=2)) for n in ROWS]
    over_sizes(capsys, fn, torch_row(name), inputs, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ROW_OPS)
def test_row_kernels_where_the_number_of_rows_changes(capsys, name):
    fn, tol = ROW_OPS[name]
    inputs = [(randn(n, 333, seed=n), randn(333, seed=1), randn(333, seed=2)) for n in SIZES]
    over_sizes(capsys, fn, torch_row(name), inputs, rtol=tol, atol=tol)


@pytest.mark.parametrize("width", [29, 300])
def test_column_reductions_over_the_dimension_that_changes(capsys, width):
    def cols(x):
        return [x.sum(0), x.amax(0), x.mean(0)]

    over_sizes(capsys, cols, cols, [(randn(n, width, seed=n),) for n in SIZES], rtol=1e-4, atol=1e-4)


def test_two_symbols_reshaped_transposed_sliced_and_flipped(capsys):
    def views(x):
        b, t, c = x.shape
        return [(x.reshape(b * t, c) * 0.5).softmax(-1), x.transpose(1, 2) * 3, x[:, -1].exp(),
                x[:, :-1] + 1, x.flip(1) - x]

    # T stays above 2: x[:, :-1] of T = 2 has a dimension of 1, another structure
    shapes = [(3, 5), (4, 7), (2, 3), (7, 9), (5, 33), (2, 1024), (3, 4097)]
    over_sizes(capsys, views, views, [(randn(b, t, 16, seed=b * t),) for b, t in shapes])


@pytest.mark.parametrize("order", [(2, 3, 7, 5), (3, 7, 2, 5)])
def test_a_mean_over_two_elements_runs_the_program_for_every_size(capsys, order):
    """The divisor of a mean over 2 elements is the literal 2.0, over others a kernel argument: the
    two keys are kin (lazy/dynamic.py `loose`), and one program for all sizes runs both."""
    def mean(x):
        return x.mean(-1).exp()

    counts = over_sizes(capsys, mean, mean, [(randn(4, n, seed=n),) for n in order])
    assert counts[-1] == 2  # the program of the first sizes, the program for all


def test_a_number_changed_to_a_literal_at_sizes_seen_gets_its_own_program(capsys):
    x = randn(6, 7)
    with lazy.debug(1):
        for n, c in ((5, 0.3), (7, 0.3), (5, 2.0)):
            got = (lazy.tensor(x[:, :n].contiguous()) * c).sum(-1)
            torch.testing.assert_close(got.torch(), (x[:, :n] * c).sum(-1))
    log = capsys.readouterr().err
    assert log.count("lazy: new program") == 3 and "a kernel argument -> 2.0" in log


# -- float16 and bfloat16 rows: the row and column caches -------------------------------------------
@contextlib.contextmanager
def fixed_sizes(monkeypatch, cache):
    """Inside: programs built for their sizes only, as before dynamic shapes (the reference),
    compiled into the cache directory `cache` (the test's own counts the kernels built after)."""
    saved = [(table, dict(table)) for table in (runtime._programs, runtime._families, runtime._bound)]
    for table, _ in saved:
        table.clear()
    with monkeypatch.context() as m:
        m.setattr(runtime, "DYNAMIC", False)
        m.setenv("LAZY_CACHE_DIR", str(cache))
        try:
            yield
        finally:
            compile_c._loaded.clear()
            for table, old in saved:
                table.clear()
                table.update(old)


@pytest.mark.parametrize("name", ["layer_norm", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rows_of_every_length(capsys, monkeypatch, tmp_path, dtype, name):
    fn = ROW_OPS[name][0]
    rows = render_c.COLUMN_CACHE_MIN_ROWS + 1  # enough rows for the column cache of the weight and bias
    inputs = [tuple(randn(*s, seed=n + i, dtype=dtype) * 3 + 1 for i, s in enumerate(((rows, n), (n,), (n,))))
              for n in (3, 1023, 7, 2, 16385)]  # (the second: the hint, rows long enough for threads)
    with fixed_sizes(monkeypatch, tmp_path / "fixed"):
        fixed = [fn(*map(lazy.tensor, ins)).torch() for ins in inputs]
    tol = 4 * torch.finfo(dtype).eps
    got = iter(fixed)
    over_sizes(capsys, fn, lambda *ins: next(got), inputs, rtol=tol, atol=tol)
    # and torch's values, computed in float32 and rounded once (rows of 2 leave the ulps of a mean)
    for ins, ref in zip(inputs, fixed):
        if ins[0].shape[1] < 7:
            continue
        want = torch_row(name)(*[t.float() for t in ins]).to(dtype).float()
        torch.testing.assert_close(ref.float(), want, rtol=8 * tol, atol=8 * tol)
    (k,) = kernels_of(lambda: fn(*map(lazy.tensor, inputs[1])).realize())  # (the first sizes: their own)
    assert k.sizes == ("d0",)
    src = render_c.render_c(k)
    # rows of up to ROW_CACHE_MAX elements keep the converted row (and the weight and bias) in arrays
    # of the row, one per thread; longer rows take the function without them
    assert f"if (d0 <= {render_c.ROW_CACHE_MAX}) lazy_kernel_rows(" in src
    assert "float row0[d0] __attribute__((aligned(64)));" in src
    assert ("float col0[d0] __attribute__((aligned(64)));" in src) == (name == "layer_norm")
    long = src[src.index("static inline void lazy_kernel_long_row("):]
    assert "row0" not in long and "col0" not in long


# -- training --------------------------------------------------------------------------------------
def test_an_mlp_trains_over_twenty_batch_sizes_with_two_kernel_sets(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    ref = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    with torch.no_grad():
        for p, q in zip(ref.parameters(), model.parameters()):
            p.copy_(q.torch())
    opt, ref_opt = optim.AdamW(model.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    batches = (3, 7, 2, 5, 16, 33, 64, 100, 127, 4, 9, 200, 31, 8, 17, 6, 50, 1023, 11, 12)
    start, counts, log = compile_c.stats.misses, [], []
    for b in batches:
        x, y = rng.standard_normal((b, 20), dtype=np.float32), rng.integers(0, 5, b)
        with lazy.debug(1):
            loss = nn.functional.cross_entropy(model(lazy.tensor(x)), lazy.tensor(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            got = loss.item()
        log.append(capsys.readouterr().err)
        want = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y))
        ref_opt.zero_grad()
        want.backward()
        ref_opt.step()
        assert got == pytest.approx(want.item(), abs=2e-5)
        counts.append(compile_c.stats.misses - start)
    assert counts[2:] == [counts[1]] * (len(batches) - 2), counts  # two kernel sets
    assert counts[1] <= 2 * counts[0]
    assert not any("sizes stay fixed" in text for text in log), log
    assert "are arguments from now on" in log[1] and not any("new program" in text for text in log[2:])
    for p, q in zip(ref.parameters(), model.parameters()):
        np.testing.assert_allclose(q.numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5)


# -- the source ----------------------------------------------------------------------------------------
def symbolic_kernels(fn, inputs) -> list[Kernel]:
    ks: list = []
    for ins in inputs:
        ks = kernels_of(lambda ins=ins: lazy.realize(*fn(*map(lazy.tensor, ins))))
    return [k for k in ks if isinstance(k, Kernel) and k.sizes]


def test_sizes_are_parameters_and_no_array_is_sized_by_one():
    (k,) = symbolic_kernels(lambda x: [x.softmax(-1)], [(randn(40, n),) for n in (300, 500)])
    src = render_c.render_c(k)
    assert "const int64_t d0" in src and "for (int64_t r0 = 0; r0 < d0; r0++)" in src
    # the row function takes the sizes too
    assert re.search(r"static inline void lazy_kernel_rows_row\(int64_t x0, [^)]*const int64_t d0, float\* restrict "
                     r"row0\)", src)
    # arrays have fixed extents (blocks), except the row cache of the function for rows of at most
    # ROW_CACHE_MAX elements, which the kernel calls only for those: an array of the row per thread
    rows, long = kernel_body(src).split("static inline void lazy_kernel_long_row(")
    assert f"if (d0 <= {render_c.ROW_CACHE_MAX}) lazy_kernel_rows(b0, b1, d0);" in long
    for part, allowed in ((rows, r"\d+|d0"), (long, r"\d+")):
        decls = re.findall(r"\b(?:float|double|int|uint16_t) \w+\[([^\]]+)\]", part)
        assert all(re.fullmatch(allowed, d) for d in decls), decls
    assert "float row0[d0]" in rows
    # decisions read the hint (d0 = 500, the second size): elements touched, 40 rows of 500 twice
    assert render_c._work(k) == 40 * 500 * 500


def test_a_kernel_without_sizes_renders_as_before():
    (k,) = kernels_of(lambda: lazy.tensor(randn(40, 300)).softmax(-1).realize())
    assert not k.sizes and "int64_t d0" not in render_c.render_c(k)
    assert "lazy_kernel_rows" not in render_c.render_c(k)


# -- under every knob ------------------------------------------------------------------------------------
def _softmax_rows():
    return lambda x: [x.softmax(-1)], [(randn(5, n, seed=n),) for n in (300, 7, 2, 1023, 16385)]


def _column_sums():
    return lambda x: [x.sum(0), x.amax(0)], [(randn(n, 70, seed=n),) for n in (300, 7, 2, 1023, 4097)]


def _vector_chain():
    return lambda x: [(x * 0.7).exp() * x.tanh()], [(randn(n, seed=n),) for n in (5000, 7, 2, 1023, 70_001)]


def _half_out():
    return lambda x: [(x * 3).exp()], [(randn(4, n, seed=n, dtype=torch.float16),) for n in (3000, 7, 2, 1023, 4097)]


@pytest.mark.parametrize("program, cfg", [
    (_softmax_rows, CConfig(prefetch=True, stream=True)), (_softmax_rows, CConfig(parallel_min_work=0, rsplit=True)),
    (_softmax_rows, CConfig(parallel_min_work=0, row_fn=False, simdlen=4)), (_softmax_rows, CConfig(interchange=True)),
    (_column_sums, CConfig(parallel_min_work=0, tile=16)), (_column_sums, CConfig(parallel_min_work=0, rsplit=True)),
    (_column_sums, CConfig(interchange=False)), (_vector_chain, CConfig(parallel_min_work=0, chunk=4096)),
    (_vector_chain, CConfig(stream=True, fission=False)), (_half_out, CConfig(stream=True, parallel_min_work=0)),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_symbolic_kernels_keep_their_values_under_every_knob(capsys, monkeypatch, program, cfg):
    real = tune.tuned_config
    monkeypatch.setattr(tune, "tuned_config", lambda k, backend: cfg if isinstance(k, Kernel) else real(k, backend))
    fn, inputs = program()
    with render_spy(monkeypatch, lambda k, src: None), sizes_checked(capsys):  # (programs of other configs forgotten)
        for ins in inputs:
            got = fn(*map(lazy.tensor, ins))
            lazy.realize(*got)
            tol = 1e-3 if ins[0].dtype == torch.float16 else 1e-4
            for g, w in zip(got, fn(*[t.float() for t in ins])):
                torch.testing.assert_close(g.torch().float(), w.to(g.torch().dtype).float(), rtol=tol, atol=tol)
    for k in symbolic_kernels(fn, inputs[:2]):
        assert set(render_c.search_space(k)) >= {"threads", "simdlen", "unroll"}


# -- generation ------------------------------------------------------------------------------------
def _tiny_lm(lib, state=None):
    """A two-head causal attention layer and a head over 16 tokens: generate's step, written once
    for torch and lazy (weights from `state`, torch's)."""
    lib.manual_seed(0)
    emb, pos, qkv, head = lib.nn.Embedding(16, 8), lib.nn.Embedding(32, 8), lib.nn.Linear(8, 24), lib.nn.Linear(8, 16)
    mods = {"emb": emb, "pos": pos, "qkv": qkv, "head": head}
    if state is not None:
        for name, m in mods.items():
            m.load_state_dict(state[name])

    def step(idx):
        t = idx.shape[1]
        x = emb(idx) + pos(lib.arange(t))
        q, k, v = (y.view(1, t, 2, 4).transpose(1, 2) for y in qkv(x).split(8, dim=2))
        att = (q @ k.transpose(-2, -1)) * 0.5
        att = att.masked_fill(lib.ones(t, t).tril() == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(1, t, 8)
        logits = head(y)[:, -1, :] / 0.8
        top, _ = lib.topk(logits, 5)
        logits[logits < top[:, [-1]]] = -float("inf")
        return lib.cat((idx, lib.multinomial(logits.softmax(-1), num_samples=1)), dim=1)

    return step, {name: m.state_dict() for name, m in mods.items()}


def test_generate_grows_its_sequence_with_one_program_for_every_length(capsys):
    """`idx = cat((idx, next))` each token: the pending sequence is realized at the next cat (its
    graph would otherwise nest every earlier cat), so each token's graph is the one before at a new
    length; from the fourth token on (1 and 2 are specialized, then 3 and 4 fit) nothing compiles."""
    ref, state = _tiny_lm(torch)
    step, _ = _tiny_lm(lazy, state)
    want, idx = torch.zeros((1, 1), dtype=torch.long), lazy.zeros((1, 1), dtype=lazy.long)
    torch.manual_seed(1)
    lazy.manual_seed(1)
    counts, log = [], []
    with torch.no_grad(), lazy.no_grad():
        for _ in range(12):
            want = ref(want)
            with lazy.debug(1):
                idx = step(idx)
                idx.realize()
            log.append(capsys.readouterr().err)
            counts.append(compile_c.stats.misses)
    assert idx.tolist() == want.tolist()
    assert counts[4:] == [counts[4]] * 8, counts
    assert not any("sizes stay fixed" in text for text in log), log
    assert not any("new program" in text for text in log[5:]), log


def test_cats_nested_in_one_expression_stay_one_kernel():
    a, b, c = (lazy.tensor(randn(2, n, seed=n)) for n in (3, 4, 5))
    y = lazy.cat([lazy.cat([a, b], 1), c], 1) * 2
    with lazy.profile() as p:
        y.realize()
    assert len(p.kernels) == 1
    torch.testing.assert_close(y.torch(), torch.cat([a.torch(), b.torch(), c.torch()], 1) * 2)
