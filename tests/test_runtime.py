"""The realize path: debug levels, profiling records, the buffer pool, backend selection."""

import os

import pytest
import torch
from conftest import kernel_body, kernels_of, run_cli

import lazy
from codegen.render_c import PRELUDE
from lazy import runtime


def _fresh_program(seed: float):
    x = lazy.randn(33, int(seed * 4))
    return (x * seed).softmax(-1)  # a new shape: a new schedule, so every level has output


def test_debug_levels_print_only_when_asked(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "DYNAMIC", False)  # (else the second shape builds one program for all)
    _fresh_program(1.25).realize()
    assert capsys.readouterr().err == ""
    with lazy.debug(1):
        _fresh_program(1.5).realize()
    err = capsys.readouterr().err
    assert "realize: 1 kernel(s)" in err and "GB/s" in err and "void lazy_kernel" not in err
    with lazy.debug(2):
        _fresh_program(1.75).realize()
    assert "fuse: sum[33, 1], max[33, 1] into the kernel of mul[33, 7]" in capsys.readouterr().err
    with lazy.debug(3):
        _fresh_program(2.25).realize()
    err = capsys.readouterr().err
    assert "void lazy_kernel" in err and "#pragma omp" in err
    with lazy.debug(4):
        _fresh_program(2.5).realize()
    assert "<RMAX float32[33, 1]" in capsys.readouterr().err


def test_debug_level_from_environment(monkeypatch, capsys):
    monkeypatch.setenv("LAZY_DEBUG", "1")
    _fresh_program(3.5).realize()
    assert "realize: 1 kernel(s)" in capsys.readouterr().err


def test_profile_records_kernels():
    x = lazy.randn(64, 64)
    with lazy.profile() as p:
        x.exp().sum(1).realize()
    (k,) = p.kernels
    assert k.backend == "c" and k.device == "cpu" and k.seconds > 0
    assert k.bytes_read == 64 * 64 * 4 and k.bytes_written == 64 * 4
    assert p.realizes == 1 and "1 kernels" in repr(p)


def test_pool_reuses_released_buffers_only():
    n = (2 << 20) // 4  # above the pool threshold
    a = runtime.pool.alloc((n,), "float32")
    ptr = a.data_ptr()
    b = runtime.pool.alloc((n,), "float32")
    assert b.data_ptr() != ptr, "a buffer still referenced must not be handed out again"
    del a
    c = runtime.pool.alloc((n,), "float32")
    assert c.data_ptr() == ptr, "a released buffer is reused (no fresh page faults)"
    view = c[10:]
    del c
    d = runtime.pool.alloc((n,), "float32")
    assert d.data_ptr() != ptr, "a view keeps its buffer alive"
    del view, b, d


def test_results_survive_pool_reuse():
    x = lazy.randn(1 << 20)
    y1 = (x * 2).realize()
    first = y1.torch().clone()
    for _ in range(3):
        (x * 3).realize()
    torch.testing.assert_close(y1.torch(), first)


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "cuda-graphs")
    with pytest.raises(ValueError, match="LAZY_BACKEND='cuda-graphs': expected one of c, triton, interp"):
        (lazy.randn(3) * 7.5).realize()


def test_backend_for_devices(monkeypatch):
    monkeypatch.delenv("LAZY_BACKEND", raising=False)
    assert runtime.backend_for("cpu") == "c"
    assert runtime.backend_for("cuda:0") == "triton"
    monkeypatch.setenv("LAZY_BACKEND", "c")
    with pytest.raises(RuntimeError, match="CPU buffers only"):
        runtime.backend_for("cuda")


def test_kernels_report_compiles_every_kernel_for_sm90(tmp_path, capsys):
    from lazy import kernels_report

    script = tmp_path / "prog.py"
    script.write_text("import lazy\nx = lazy.randn(8, 300)\nprint(x.softmax(-1).sum().item())\n")
    assert kernels_report.main(str(script), [], "sm_90") == 0
    out = capsys.readouterr().out
    assert "compiled for sm_90" in out and "FAILED" not in out
    assert kernels_report.main(str(tmp_path / "missing.py"), [], "sm_90") == 2


if os.environ.get("LAZY_BACKEND") == "interp":  # these tests are about the compiled path
    pytestmark = pytest.mark.skip("the compiled runtime is not used under LAZY_BACKEND=interp")


def test_lazy_kernels_cli(tmp_path, capsys):
    from lazy.cli import main

    with pytest.raises(SystemExit) as e:
        main(["kernels", "--help"])
    assert e.value.code == 0 and "--target" in capsys.readouterr().out
    script = tmp_path / "prog.py"
    script.write_text("import sys, lazy\nn = int(sys.argv[1])\nlazy.randn(4, n).logsumexp(-1).realize()\n")
    assert main(["kernels", str(script), "100", "--target", "sm_80"]) == 0
    assert "1 kernel(s) compiled for sm_80" in capsys.readouterr().out
    assert main(["kernels", "--target", "sm_90", str(script), "100"]) == 0
    assert "1 kernel(s) compiled for sm_90" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["bogus", "sm_1", "sm_70", "sm_101"])
def test_lazy_kernels_refuses_a_bad_target_before_running_the_script(tmp_path, target):
    script = tmp_path / "prog.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    rc, out, err = run_cli("kernels", str(script), "--target", target)
    assert rc == 2 and out == "" and not (tmp_path / "ran").exists()
    assert f"--target: target {target!r}" in err and "sm_90" in err and len(err.splitlines()) == 1


def _c_sources(fn) -> list[str]:
    from codegen import render_c

    return [render_c.render_c(k) for k in kernels_of(fn) if hasattr(k, "loops")]


def test_stable_sigmoid_exp_has_no_select_under_it():
    # exp(where(0 <= a, -a, a)) is rendered exp(-fabs(a)): gcc duplicated a call under a select
    # into both arms of a later select on the same condition (two vector exps per element)
    t = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.0, -3.0, -100.0, 100.0])
    x = lazy.tensor(t)
    (src,) = _c_sources(lambda: x.sigmoid().realize())
    assert PRELUDE in src
    body = kernel_body(src)
    assert "expf(-fabsf(" in body and body.count("expf(") == 1
    torch.testing.assert_close(x.sigmoid().torch(), torch.sigmoid(t), equal_nan=True)  # torch flushes exp(-100) to 0
    # the select itself, where it is a value, keeps its sign of zero: -(+0) = -0, -(-0) = +0
    y = lazy.where(x >= 0, -x, x).torch()
    ref = torch.where(t >= 0, -t, t)
    assert torch.equal(torch.signbit(y), torch.signbit(ref)) and torch.equal(y.isnan(), ref.isnan())


def test_import_sets_a_short_openmp_spin_unless_the_user_chose():
    import subprocess
    import sys

    def spin(**env):
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        out = subprocess.run([sys.executable, "-c", "import os, lazy; print(os.environ.get('GOMP_SPINCOUNT'))"],
                             env={**base, **env}, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    assert spin() == "3000"
    assert spin(OMP_WAIT_POLICY="PASSIVE") == "None"  # the user's policy stands alone
    assert spin(GOMP_SPINCOUNT="5") == "5"


# -- graph nodes: hash-consing and structure keys -------------------------------------------------
def test_nodes_are_shared_while_alive_and_forgotten_when_dead():
    import gc

    import numpy as np

    from lazy import graph

    x = lazy.tensor(np.ones(3, np.float32))
    # the table also holds nodes of earlier tests that only a collection frees, as this one in a
    # reference cycle: follow the keys this test adds, not the table's size
    garbage: list = [x * 3.0]
    garbage.append(garbage)
    del garbage
    before = set(graph._interned)
    y = (x * 2.0 + 1.0).exp()
    assert (x * 2.0 + 1.0).exp()._node is y._node  # the same program builds the same node
    ours = set(graph._interned) - before
    assert len(ours) >= 3 and any(graph._interned[k]() is y._node for k in ours)  # (mul, add, exp, ...)
    del y
    gc.collect()
    assert not ours & set(graph._interned)  # dead nodes leave no entry behind


def test_structure_keys_tell_aliased_buffers_and_layouts_apart():
    import numpy as np

    from lazy.graph import structure_key

    a, b = (lazy.tensor(np.ones((2, 3), np.float32)) for _ in range(2))
    k_ab, bufs, _ = structure_key([(a + b)._node])
    assert len(bufs) == 2 and structure_key([(b + a)._node])[0] == k_ab  # other data, same program
    assert structure_key([(a + a)._node])[0] != k_ab  # one buffer read twice is another program
    t = lazy.tensor(np.ones((3, 2), np.float32)).contiguous().T.contiguous()
    assert structure_key([(a + t.realize())._node])[0] == k_ab  # realized contiguous: same layout


def test_dtypes_stay_one_instance_through_copies_and_pickles():
    import copy
    import pickle

    for dt in (lazy.float32, lazy.bfloat16, lazy.bool):
        assert copy.copy(dt) is dt and copy.deepcopy(dt) is dt and pickle.loads(pickle.dumps(dt)) is dt
        assert {dt: 1}[pickle.loads(pickle.dumps(dt))] == 1


def _mapped(under) -> set[str]:
    """The files under `under` mapped into this process (the kernel libraries loaded from it)."""
    with open("/proc/self/maps") as f:
        return {p[5].strip() for p in (line.split(None, 5) for line in f) if len(p) == 6 and p[5].startswith(str(under))}


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="counts mappings in /proc/self/maps (Linux)")
def test_a_new_kernel_per_call_keeps_programs_and_libraries_bounded(tmp_path, monkeypatch):
    """A shape that changes every call is a new kernel each time: the schedule cache and the loaded
    libraries stay within their bounds and the evicted libraries are unloaded, while a program
    something still holds (a lazy.jit plan) keeps its library and runs; an evicted program realized
    again is loaded from the disk cache, with the right values."""
    from collections import OrderedDict

    from codegen import compile_c

    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LAZY_BACKEND", raising=False)
    monkeypatch.setattr(runtime, "MAX_PROGRAMS", 4)
    monkeypatch.setattr(compile_c, "MAX_LOADED", 3)
    monkeypatch.setattr(runtime, "_programs", OrderedDict())
    monkeypatch.setattr(compile_c, "_loaded", OrderedDict())
    x = lazy.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])

    def step(c: float) -> float:  # c columns of c: the shape is new whenever c is
        return (lazy.full((1, int(c)), c) * x[:1, :1] + 1).sum().item()

    held = lazy.jit(lambda t: t * 1.25 + 1)
    for _ in range(3):
        held(x)
    assert list(held.stats.values()) == ["replaying"]
    held_lib = _mapped(tmp_path)
    assert step(1.0) == 2.0
    maps0, unloaded = _maps(), compile_c.stats.unloaded
    n = 24  # each a new kernel: 6x the schedule cache, 8x the libraries kept
    for i in range(n):
        assert step(2.0 + i) == (2.0 + i) ** 2 + (2.0 + i)
        assert len(runtime._programs) <= 4 and len(compile_c._loaded) <= 3
        assert len(_mapped(tmp_path)) <= 4 + 3 + 1  # the programs', the kept, the held plan's
    assert compile_c.stats.unloaded - unloaded >= n - 8
    assert _maps() - maps0 < 40, "a closed library leaves no mapping behind"
    assert held_lib <= _mapped(tmp_path)
    assert held(x).torch().tolist() == [[2.25, 3.5, 4.75], [6.0, 7.25, 8.5]]  # its library is still loaded
    misses, hits = compile_c.stats.misses, compile_c.stats.hits
    assert step(1.0) == 2.0  # evicted long ago: scheduled again, its library loaded again from disk
    assert (compile_c.stats.misses, compile_c.stats.hits) == (misses, hits + 1)
    held.reset()
    for i in range(8):  # the plan's program leaves the cache too
        step(100.0 + i)
    assert not held_lib & _mapped(tmp_path)


@pytest.mark.parametrize("backend", ["c", "triton"])
def test_kernels_that_share_expressions_deeply_build_in_linear_time(backend, monkeypatch, tmp_path):
    # sinh uses its argument five times: sinh of sinh, then a softmax, made expression trees of
    # millions of nodes, which Kernel.key's repr and Expr's generated == walked for minutes
    # (perf/fuzz.py seed 200 case 180)
    import time

    from codegen.kernel_ir import REPR_KEY_NODES, Expr, Kernel, _tree_size

    monkeypatch.setenv("LAZY_BACKEND", backend)
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path))
    t = torch.tensor([[0.1, -0.4, 0.3], [1.0, 0.2, -2.0]])
    t0 = time.perf_counter()
    ks = kernels_of(lambda: lazy.tensor(t).sinh().sinh().sinh().softmax(-1).realize())
    assert time.perf_counter() - t0 < 60
    k = next(k for k in ks if isinstance(k, Kernel))
    assert _tree_size([s.value for s in k.stores]) > REPR_KEY_NODES  # keyed by its DAG text
    torch.testing.assert_close(lazy.tensor(t).sinh().sinh().sinh().softmax(-1).torch(),
                               t.sinh().sinh().sinh().softmax(-1))
    ks2 = kernels_of(lambda: lazy.tensor(t * 2).sinh().sinh().sinh().softmax(-1).realize())
    assert next(k2 for k2 in ks2 if isinstance(k2, Kernel)).key() == k.key()  # the same kernel, the same key
    a, b = Expr("const", arg=float("nan")), Expr("const", arg=float("nan"))
    assert Expr("exp", (a,)) == Expr("exp", (b,)) and Expr("exp", (a,)) != Expr("exp", (Expr("const", arg=1.0),))
