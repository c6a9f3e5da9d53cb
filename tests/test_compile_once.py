"""Compile once per program, not per value: Python numbers are kernel arguments (graph.literal says
which stay in the source), so a loop that changes them compiles its kernels once."""

import sys

import numpy as np
import pytest
import torch
from conftest import kernel_body, kernels_of

import lazy
from codegen import compile_c
from lazy import runtime
from lazy.graph import float16, float32, int8, int64, literal


def compiles(fn) -> int:
    before = compile_c.stats.misses + compile_c.stats.hits
    fn()
    return compile_c.stats.misses + compile_c.stats.hits - before


def test_which_numbers_stay_literal():
    for v in (0.0, 1.0, -1.0, 2.0, 0.5, -0.5, float("inf"), float("-inf"), float("nan")):
        assert literal(v, float32), v
    for v in (0.1, 3.0, 1e-5, -7.25):
        assert not literal(v, float32), v
    assert literal(-128, int8) and literal(127, int8) and not literal(5, int8)
    assert literal(2**63 - 1, int64) and not literal(1000, int64)
    assert literal(0.1, float16) is False


def test_a_changing_python_number_compiles_the_kernel_once():
    x_np = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    x = lazy.tensor(x_np)
    lrs = [0.001 * (i + 1.37) for i in range(100)]
    (x * lrs[0] + 1).exp().sum().item()  # compiles here
    got = []
    n = compiles(lambda: got.extend((x * lr + 1).exp().sum().item() for lr in lrs))
    assert n == 0
    want = [float((torch.tensor(x_np) * lr + 1).exp().sum()) for lr in lrs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_scalar_is_an_argument_and_a_literal_stays_in_the_source():
    x = lazy.randn(64)
    (k,) = kernels_of(lambda: (x * 0.37 + 2.0).realize())
    assert k.scalars == ("float32",) and k.meta["scalar_slots"] == (0,)
    from codegen.render_c import render_c

    src = kernel_body(render_c(k))
    assert "const float s0" in src and "0.37" not in src and "(float)2.0" in src


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int32", "int64", "int8", "uint8"])
def test_scalar_arguments_match_torch_in_every_dtype(dtype):
    tdt = getattr(torch, dtype)
    rng = np.random.default_rng(1)
    if tdt.is_floating_point:
        base = torch.tensor(rng.standard_normal(37) * 10).to(tdt)
        # values every dtype holds exactly: how torch rounds an inexact Python number for a half
        # tensor differs between ops, which is not what this test is about
        values = (0.375, -7.125, 1e3, 1.5)
    else:
        info = torch.iinfo(tdt)
        base = torch.tensor(rng.integers(max(info.min, -100), min(info.max, 100), 37)).to(tdt)
        values = (3, -7, 100, 37)
    x = lazy.tensor(base)
    ops = [lambda a, s: a * s, lambda a, s: a + s, lambda a, s: a - s, lambda a, s: (a > s).to(a.dtype),
           lambda a, s: a.maximum(torch.tensor(s).to(a.dtype) if isinstance(a, torch.Tensor) else
                                  lazy.tensor(s).to(a.dtype))]
    if tdt.is_floating_point:
        ops.append(lambda a, s: (a * s).float())  # the product rounds to the dtype before the cast
        ops.append(lambda a, s: a == s)
    else:
        ops.append(lambda a, s: a // s)
        ops.append(lambda a, s: a % s)
    for op in ops:
        for s in values:
            got, want = op(x, s), op(base, s)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got.torch(), want, rtol=2e-3 if dtype in ("float16", "bfloat16") else 1e-6,
                                       atol=0, equal_nan=True)


def test_scalars_in_a_gemm_epilogue_compile_once():
    a_np, b_np, c_np = (np.random.default_rng(i).standard_normal(s).astype(np.float32)
                        for i, s in enumerate(((33, 20), (20, 17), (17,))))
    a, b, c = lazy.tensor(a_np), lazy.tensor(b_np), lazy.tensor(c_np)
    ((a @ b) * 0.25 + c).realize()
    outs = []
    n = compiles(lambda: outs.extend(((a @ b) * s + c).torch() for s in (0.3, 0.7, 1.9)))
    assert n == 0
    for s, got in zip((0.3, 0.7, 1.9), outs):
        torch.testing.assert_close(got, (torch.tensor(a_np) @ torch.tensor(b_np)) * s + torch.tensor(c_np),
                                   rtol=1e-5, atol=1e-5)


def test_triton_kernels_take_scalar_arguments(monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "triton")
    x64 = lazy.tensor(np.linspace(-1, 1, 50))
    x32 = lazy.tensor(np.linspace(0.5, 1, 50).astype(np.float32))
    for s in (0.1, 1e-9 + 0.2, 3.5):
        torch.testing.assert_close((x64 * s + 1).torch(), x64.torch() * s + 1, rtol=1e-15, atol=0)
        torch.testing.assert_close((x32 * s).sum().torch(), (x32.torch() * s).sum(), rtol=1e-6, atol=1e-7)
    progs = [p for k, p in runtime._programs.items() if k[1] == "triton"]
    assert progs  # the Triton backend ran


def test_jit_says_when_a_number_computed_inside_changes():
    w = lazy.ones(4)
    calls = iter(range(100))

    def step(x):
        return x * (0.1 + next(calls))

    f = lazy.jit(step)
    f(w)  # runs
    f(w)  # recorded
    with pytest.warns(sys.modules["lazy.jit"].JitWarning, match="other Python numbers"):
        f(w)  # recorded again: the number differs


def test_debug_level_1_says_why_each_program_is_built(capsys):
    def run(n, dtype=lazy.float32, c=0.3):
        (lazy.randn(n, 4, dtype=dtype) * c).sum().item()

    with lazy.debug(1):
        run(23)
        first = capsys.readouterr().err
        for c in (0.1, 0.7, 1.9):  # a changing number: nothing new
            run(23, c=c)
        assert "new program" not in capsys.readouterr().err
        run(24)
        size = capsys.readouterr().err
        run(24, dtype=lazy.float64)
        dtype = capsys.readouterr().err
        run(24, c=2)
        lit = capsys.readouterr().err
    assert first.count("lazy: new program") == 1
    assert "a size changed" in size and "(23, 4) -> (24, 4)" in size
    assert "a dtype changed" in dtype and "float32 -> float64" in dtype
    assert "a literal constant changed" in lit and "a kernel argument -> 2.0" in lit


def _sgd_with_warmup(lib, w, v, x, it, base_lr):
    lr = base_lr * min(1.0, (it + 1) / 5)
    loss = (x @ w.T).square().mean()
    loss.backward()
    with lib.no_grad():
        v.mul_(0.9).add_(w.grad)
        w.sub_(lr * v)
    w.grad = None
    return loss


def test_jit_replays_a_step_that_takes_its_iteration_number_and_learning_rate():
    import warnings

    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((16, 8), dtype=np.float32)
    lw, lv = lazy.tensor(w0.copy(), requires_grad=True), lazy.zeros(16, 8)
    tw, tv = torch.tensor(w0, requires_grad=True), torch.zeros(16, 8)
    step = lazy.jit(lambda x, it, lr: _sgd_with_warmup(lazy, lw, lv, x, it, lr))
    built = lazy.runtime.cache_stats["schedule_misses"]
    states = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no JitWarning
        for it in range(24):
            if it == 12:  # every program and kernel the step needs exists by now
                before = compile_c.stats.misses
            xb = rng.standard_normal((4, 8), dtype=np.float32)
            lr = 0.01 * (1 + it % 3) * (1 + it / 100)  # a new number every call
            got = step(lazy.tensor(xb), it, lr).item()
            want = _sgd_with_warmup(torch, tw, tv, torch.tensor(xb), it, lr).item()
            assert got == pytest.approx(want, rel=1e-5)
            states.append(next(iter(step.stats.values())))
    torch.testing.assert_close(lw.torch(), tw.detach(), rtol=1e-5, atol=1e-6)
    # records on calls 2-3, replays, records again once `it` passes the warm-up (the min() flips)
    assert states[2:4] == ["replaying", "replaying"] and states[-3:] == ["replaying"] * 3
    assert states.count("capturing") <= 4
    # numbers are arguments: the programs of the first calls and of the re-recording only (counted as
    # programs built: kernel compiles depend on what the disk cache already holds), and nothing
    # compiles for the next twelve iterations, their numbers all new
    assert lazy.runtime.cache_stats["schedule_misses"] - built <= 3, lazy.runtime.cache_stats["schedule_misses"] - built
    assert compile_c.stats.misses == before


def test_jit_numbers_used_as_themselves_specialize():
    x = lazy.arange(12.0)
    f = lazy.jit(lambda t, n: t[:n].sum())  # a slice bound: the replay needs this very n
    outs = [f(x, n).item() for n in (3, 3, 3, 3, 5, 5, 5, 4)]
    assert outs == [sum(range(n)) for n in (3, 3, 3, 3, 5, 5, 5, 4)]
