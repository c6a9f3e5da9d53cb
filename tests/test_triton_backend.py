"""Triton backend: generated kernels run under TRITON_INTERPRET=1 on CPU tensors and match torch;
softmax / layer norm compile ahead of time for sm_90 without spills; bad source names its file.

The interpreter runs one program at a time (~1 ms each), so these tests use big blocks (few
programs) except where a test is about tails and loops.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import sympy
import torch

from codegen import compile_triton, render_triton
from codegen.kernel_ir import BufferArg, Expr, Kernel, Reduce, Store
from lazy import interpret
from lazy.dtypes import to_torch
from lazy.graph import DTYPES, Buffer, Op, const, node, structure_key
from scheduler import schedule

f32, f64, f16, bf16 = DTYPES["float32"], DTYPES["float64"], DTYPES["float16"], DTYPES["bfloat16"]
i32, i64, i8, boolean = DTYPES["int32"], DTYPES["int64"], DTYPES["int8"], DTYPES["bool"]

BIG = {"xblock_max": 1 << 16, "row_block_elems": 1 << 15}  # few programs under the interpreter


@pytest.fixture(autouse=True)
def interpreter(tmp_path_factory, monkeypatch):
    # read when a generated module is imported (at @triton.jit), so set it before any load()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lazy-cache"))
    yield


# -- graph helpers -----------------------------------------------------------------------------

def buf(t: torch.Tensor):
    return node(Op.BUFFER, (), Buffer(t), DTYPES[str(t.dtype).split(".")[1]], tuple(t.shape))


def ex(n, shape):
    return node(Op.EXPAND, (n,), tuple(shape))


def u(op, a):
    return node(op, (a,))


def b(op, x, y):
    return node(op, (x, y))


def c(v, like):
    return const(v, like.dtype, like.shape)


def cast(x, dt):
    return node(Op.CAST, (x,), dt)


def red(op, x, axes):
    return node(op, (x,), tuple(axes))


def run(nodes, **cfg):
    """Schedule `nodes`, launch every kernel through Triton (interpreted); outputs and schedule."""
    _, buffers, _ = structure_key(nodes)
    sched = schedule(nodes, buffers)
    slots = [bf.data for bf in buffers]
    slots += [torch.empty(shape, dtype=to_torch(DTYPES[dt])) for shape, dt in sched.allocs]
    for k in sched.kernels:
        fn = compile_triton.load(k, render_triton.choose_config(k, **{**BIG, **cfg}))
        fn(*(slots[s] for s in k.meta["slots"]))
    return [slots[s] for s in sched.outputs], sched


def check(nodes, rtol=None, atol=None, **cfg):
    outs, sched = run(nodes, **cfg)
    refs = interpret.interpret(nodes)
    for o, r in zip(outs, refs):
        assert o.dtype == r.dtype and tuple(o.shape) == tuple(r.shape)
        if r.dtype.is_floating_point:
            torch.testing.assert_close(o, r, rtol=rtol, atol=atol, equal_nan=True)
        else:
            assert torch.equal(o, r), (o, r)
    return outs, sched


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


# -- elementwise ---------------------------------------------------------------------------------

def test_elementwise_chain_one_kernel():
    x = randn(33, 65)
    x[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    X = buf(x)
    pos = b(Op.LT, c(0.0, X), X)
    y = node(Op.WHERE, (pos, b(Op.MUL, u(Op.EXP, u(Op.NEG, X)), u(Op.TANH, X)),
                        b(Op.SUB, u(Op.ERF, X), u(Op.LOG, b(Op.ADD, u(Op.ABS, X), c(1.0, X))))))
    y = b(Op.ADD, y, u(Op.SQRT, u(Op.ABS, X)))
    y = b(Op.ADD, y, b(Op.MUL, u(Op.SIN, X), u(Op.COS, X)))
    y = b(Op.ADD, y, u(Op.RECIP, b(Op.ADD, b(Op.MUL, X, X), c(1.0, X))))
    y = b(Op.ADD, y, b(Op.MAX, X, c(0.5, X)))  # NaN must propagate through max
    y = b(Op.SUB, y, b(Op.MIN, X, c(-0.5, X)))
    y = b(Op.ADD, y, b(Op.POW, u(Op.ABS, X), c(1.5, X)))
    y = b(Op.ADD, y, cast(b(Op.LE, X, c(0.25, X)), f32))
    y = b(Op.ADD, y, u(Op.TRUNC, b(Op.MUL, X, c(3.0, X))))
    y = b(Op.ADD, y, b(Op.ADD, u(Op.FLOOR, X), u(Op.CEIL, X)))
    y = b(Op.ADD, y, cast(b(Op.OR, u(Op.ISNAN, X), u(Op.ISINF, X)), f32))
    outs, sched = check([y])
    assert len(sched.kernels) == 1 and not sched.kernels[0].reduces
    assert math.isnan(outs[0][0, 0])


@pytest.mark.parametrize("n", [1, 7, 1023])
def test_odd_sizes_with_tail_masks(n):
    x = randn(n, seed=n)
    X = buf(x)
    y = u(Op.TANH, b(Op.ADD, b(Op.MUL, X, c(2.0, X)), c(1.0, X)))
    check([y], xblock_max=256)  # several programs and a masked tail


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16])
def test_half_precision_loads_compute_in_float32(dt):
    x, w = randn(37, 129, seed=1, dtype=dt), randn(37, 129, seed=2, dtype=dt)
    X, W = buf(x), buf(w)
    y = b(Op.ADD, b(Op.MUL, u(Op.EXP, b(Op.MUL, X, c(0.5, X))), W), c(1.0, X))
    s = red(Op.SUM, b(Op.MUL, X, W), [1])
    z = cast(b(Op.ADD, cast(X, f32), cast(W, f32)), dt is torch.float16 and f16 or bf16)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dt is torch.float16 else {"rtol": 3e-2, "atol": 3e-2}
    outs, _ = check([y, s, z], **tol)
    assert outs[0].dtype == dt and outs[1].dtype == dt


def test_casts():
    x = randn(5, 41) * 100
    X = buf(x)
    ys = [cast(X, i32), cast(X, i64), cast(X, boolean), cast(cast(X, f16), f32), cast(cast(X, bf16), f32),
          cast(cast(X, i32), f64)]
    check(ys)


# -- integers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt", [torch.int32, torch.int64])
def test_int_floordiv_mod_with_negative_operands(dt):
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-50, 50, (9, 31), generator=g).to(dt)
    d = torch.randint(1, 7, (9, 31), generator=g).to(dt) * (torch.randint(0, 2, (9, 31), generator=g) * 2 - 1).to(dt)
    A, D = buf(a), buf(d)
    ys = [b(Op.FLOORDIV, A, D), b(Op.MOD, A, D), b(Op.DIV, A, D), b(Op.MAX, A, D), b(Op.MIN, A, D),
          b(Op.AND, A, D), b(Op.OR, A, D), b(Op.XOR, A, D), u(Op.NOT, A), u(Op.NEG, A), u(Op.ABS, A),
          b(Op.POW, A, b(Op.MOD, D, c(4, D)))]
    check(ys)


def test_int8_wraps_like_torch():
    a = torch.tensor([100, -100, 127, -128, 5], dtype=torch.int8)
    A = buf(a)
    check([b(Op.ADD, A, A), b(Op.MUL, A, c(3, A))])


def test_float_floordiv_mod_follow_torch():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(17, 23, generator=g) * 10
    d = torch.randn(17, 23, generator=g) * 3
    a[0, :4] = torch.tensor([-0.0, 0.0, 5.0, -5.0])
    d[0, :4] = torch.tensor([3.0, -3.0, 0.0, 2.5])
    A, D = buf(a), buf(d)
    check([b(Op.FLOORDIV, A, D), b(Op.MOD, A, D)])


def test_bool_logic_and_iota():
    x = randn(50)
    X = buf(x)
    p, q = b(Op.LT, X, c(0.3, X)), b(Op.LT, c(-0.3, X), X)
    i = node(Op.IOTA, (), None, i32, (50,))
    ys = [b(Op.AND, p, q), b(Op.XOR, p, q), u(Op.NOT, p), b(Op.EQ, p, q),
          node(Op.WHERE, (p, X, cast(i, f32))), b(Op.MUL, i, i), red(Op.SUM, p, [0])]
    check(ys)


# -- fixed-index loads (0-d and one-element operands) ---------------------------------------------

def _scalar_ops(X, S):
    """S (same shape as X, broadcast from one element) through every helper that compares its
    operands: NaN-propagating max/min (relu, clamp), float pow."""
    return [b(Op.MAX, X, S), b(Op.MIN, S, X), b(Op.MAX, S, c(0.0, S)), b(Op.POW, c(2.0, X), S),
            b(Op.POW, u(Op.ABS, X), S), b(Op.ADD, b(Op.MAX, S, S), b(Op.MIN, X, c(0.25, X)))]


@pytest.mark.parametrize("shape", [(), (1,), (1023,)])
def test_fixed_index_loads_are_one_element_blocks(shape):
    # A 0-d tensor (or any size-1 operand) is a load at a constant index. Rendered as a 0-d load,
    # the helpers' comparisons on it were 0-d too, and the interpreter broadcasts a 0-d comparison
    # as a float array: `(a > b) | (a != a)` failed with "ufunc 'bitwise_or' not supported"
    # (exp2/relu on 0-d tensors, maximum/minimum/pow with a 0-d operand).
    x = randn(*shape, seed=21) if shape else randn(1, seed=21).reshape(())
    for s in (torch.tensor(1.5), torch.tensor(float("nan"))):
        X, S0 = buf(x), buf(s)
        S = S0 if shape == () else ex(node(Op.RESHAPE, (S0,), (1,) * len(shape)), shape)
        outs, sched = check(_scalar_ops(X, S), rtol=1e-5, atol=1e-5)
        src = "".join(render_triton.render_triton(k) for k in sched.kernels)
        assert not re.search(r"tl\.load\(b\d+ \+ \d+\)", src), "a 0-d load"
        if math.isnan(s):
            assert all(torch.isnan(o).all() for o in outs[:3])


def test_fixed_index_loads_in_reduction_kernels():
    # the same in row kernels: a one-element operand is a [1, 1] block there
    x, s = randn(5, 300, seed=22), torch.tensor([0.25])
    X, S = buf(x), buf(s)
    SX = ex(node(Op.RESHAPE, (S,), (1, 1)), X.shape)
    y = red(Op.SUM, b(Op.MAX, X, SX), [1])
    z = red(Op.RMAX, b(Op.POW, u(Op.ABS, X), SX), [1])
    g = red(Op.SUM, b(Op.MIN, X, SX), [0, 1])  # a global reduction: no row variable at all
    w = b(Op.MAX, red(Op.SUM, S, [0]), c(0.0, red(Op.SUM, S, [0])))  # size-1 reduction of a 0-d load
    for loop in ({}, {"persistent_max": 64, "loop_rblock": 64}):
        check([y, z, g, w], rtol=1e-5, atol=1e-5, **loop)


@pytest.mark.skipif(os.environ.get("LAZY_SKIP_AOT") == "1", reason="LAZY_SKIP_AOT=1")
def test_fixed_index_load_kernels_compile_for_sm90():
    # the one-element block is only a shape: on the GPU it lowers to the same scalar load
    x, s = torch.empty(4096), torch.empty(())
    X, S = buf(x), buf(s)
    S1 = ex(node(Op.RESHAPE, (S,), (1,)), X.shape)
    nodes = [b(Op.POW, X, S1), b(Op.MAX, S, c(0.0, S)), red(Op.SUM, b(Op.MAX, X, S1), [0])]
    kernels = []
    for y in nodes:
        _, bufs, _ = structure_key([y])
        kernels += schedule([y], bufs).kernels
    for res in compile_triton.aot_compile_many(kernels, "sm_90"):
        assert ".target sm_90a" in res["ptx"] and res["cubin_bytes"] > 0 and res["spills"] == 0
        src = Path(res["path"]).read_text()
        assert re.search(r"tl\.load\(b\d+ \+ tl\.full\(\[1(, 1)?\], 0, tl\.int32\)\)", src)


# -- views -----------------------------------------------------------------------------------------

def test_broadcast_and_views():
    x = randn(6, 10, seed=5)
    v = randn(10, seed=6)
    X, V = buf(x), buf(v)
    t = node(Op.PERMUTE, (X,), (1, 0))  # [10, 6]
    t = node(Op.FLIP, (t,), (0,))
    t = node(Op.PAD, (t,), ((1, 2), (0, 3)))  # [13, 9]
    t = node(Op.SHRINK, (t,), ((0, 12), (1, 9)))  # [12, 8]
    t = node(Op.RESHAPE, (t,), (4, 24))
    vv = ex(node(Op.RESHAPE, (node(Op.PAD, (V,), ((1, 1),)),), (12, 1)), (12, 8))
    y = b(Op.ADD, t, node(Op.RESHAPE, (vv,), (4, 24)))
    check([y])


def test_input_view_with_storage_offset():
    base = torch.arange(40, dtype=torch.float32)
    x = base[5:35].view(5, 6)[:, 1:]  # storage offset 6, strides (6, 1)
    X = buf(x)
    check([b(Op.MUL, X, c(2.0, X)), red(Op.SUM, X, [1])])


# -- reductions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axes", [((7, 1023), [1]), ((1023, 7), [0]), ((33, 45), [0, 1]),
                                        ((4, 5, 6), [1]), ((3, 4, 5), [0, 2]), ((1, 1), [0, 1]), ((1,), [0])])
@pytest.mark.parametrize("op", [Op.SUM, Op.RMAX, Op.PROD])
def test_reductions(shape, axes, op):
    x = randn(*shape, seed=7)
    if op is Op.PROD:
        x = 1.0 + 0.01 * x
    X = buf(x)
    check([red(op, X, axes)], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("persistent_max", [8192, 64])
def test_looped_and_persistent_reductions(persistent_max):
    x = randn(9, 1000, seed=8)
    x[3, 17] = float("nan")
    X = buf(x)
    g = torch.Generator().manual_seed(9)
    n = torch.randint(-9, 9, (9, 1000), generator=g, dtype=torch.int32)
    N = buf(n)
    ys = [red(Op.SUM, X, [1]), red(Op.RMAX, X, [1]), red(Op.RMAX, N, [1]), red(Op.SUM, N, [1]),
          red(Op.SUM, X, [0, 1])]
    outs, _ = check(ys, persistent_max=persistent_max, loop_rblock=128)
    assert math.isnan(outs[1][3, 0]) and math.isnan(outs[4][0, 0])


def test_global_sum_feeds_elementwise_store():
    x = randn(37, 11, seed=10)
    X = buf(x)
    y = b(Op.DIV, X, ex(red(Op.SUM, u(Op.ABS, X), [0, 1]), X.shape))
    check([y], rtol=1e-5, atol=1e-6, persistent_max=64, loop_rblock=64)


def softmax(X, axis=1):
    m = red(Op.RMAX, X, [axis])
    e = u(Op.EXP, b(Op.SUB, X, ex(m, X.shape)))
    return b(Op.DIV, e, ex(red(Op.SUM, e, [axis]), X.shape))


def layer_norm(X, W, B, eps=1e-5):
    n = X.shape[-1]
    inv_n = const(1.0 / n, X.dtype, (X.shape[0], 1))
    mean = b(Op.MUL, red(Op.SUM, X, [1]), inv_n)
    d = b(Op.SUB, X, ex(mean, X.shape))
    var = b(Op.MUL, red(Op.SUM, b(Op.MUL, d, d), [1]), inv_n)
    inv = u(Op.RECIP, u(Op.SQRT, b(Op.ADD, var, const(eps, X.dtype, var.shape))))
    return b(Op.ADD, b(Op.MUL, b(Op.MUL, d, ex(inv, X.shape)), ex(W, X.shape)), ex(B, X.shape))


def logsumexp(X):
    m = red(Op.RMAX, X, [1])
    s = red(Op.SUM, u(Op.EXP, b(Op.SUB, X, ex(m, X.shape))), [1])
    return b(Op.ADD, u(Op.LOG, s), m)


@pytest.mark.parametrize("cols,persistent_max", [(100, 8192), (1023, 8192), (1023, 256), (1, 8192)])
def test_softmax_layernorm_logsumexp(cols, persistent_max):
    x, w, bias = randn(13, cols, seed=11), randn(1, cols, seed=12), randn(1, cols, seed=13)
    X, W, B = buf(x * 4), buf(w), buf(bias)
    for y in (softmax(X), layer_norm(X, W, B), logsumexp(X)):
        _, sched = check([y], rtol=1e-5, atol=1e-5, persistent_max=persistent_max, loop_rblock=256)
        assert len(sched.kernels) == 1
    ref = torch.softmax(x * 4, -1)
    torch.testing.assert_close(run([softmax(X)])[0][0], ref)


def test_softmax_persistent_row_is_read_once():
    X = buf(randn(64, 100))
    _, sched = run([softmax(X)])
    src = render_triton.render_triton(sched.kernels[0], render_triton.choose_config(sched.kernels[0]))
    assert src.count("tl.load(") == 1 and src.count("tl.store(") == 1 and "for roffset" not in src
    looped = render_triton.render_triton(sched.kernels[0], render_triton.choose_config(
        sched.kernels[0], persistent_max=32, loop_rblock=32))
    assert looped.count("for roffset") == 3  # max, sum, then the output row


def test_several_kernels_in_one_schedule():
    x = randn(20, 30, seed=14)
    X = buf(x)
    col = red(Op.SUM, X, [0])  # [1, 30] used by a row-wise consumer: its own kernel
    y = softmax(b(Op.SUB, X, ex(col, X.shape)))
    _, sched = check([y, col], rtol=1e-5, atol=1e-5)
    assert len(sched.kernels) >= 2


_EARLY_IMPORT = """
import os, sys
import triton  # first import with TRITON_INTERPRET unset (torch._dynamo does this on its own)
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, os.getcwd())
import torch
from tests.test_triton_backend import Op, buf, check, randn, red, softmax
x = randn(6, 300, seed=31)
x[2, 5] = float("nan")
n = torch.randint(-9, 9, (6, 300), dtype=torch.int32, generator=torch.Generator().manual_seed(32))
X, N = buf(x), buf(n)
ys = [red(Op.SUM, X, [1]), red(Op.RMAX, X, [1]), red(Op.RMAX, N, [1]), red(Op.SUM, N, [1]),
      red(Op.PROD, X, [1]), softmax(X), red(Op.SUM, X, [0, 1])]
for cfg in ({}, {"persistent_max": 64, "loop_rblock": 64}):
    check(ys, rtol=1e-4, atol=1e-4, **cfg)
print("OK")
"""


def test_reductions_run_when_triton_was_imported_before_interpret_was_set(tmp_path):
    # Triton's own tl.sum / tl.max are @triton.jit functions, interpreted only if TRITON_INTERPRET
    # was set when triton was first imported. Generated reductions called them, so a process that
    # imported triton first (torch.func / torch._dynamo do) failed every reduction under the
    # interpreter: "Cannot call @triton.jit'd outside of the scope of a kernel".
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["LAZY_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _EARLY_IMPORT], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_calling_a_compiled_mode_library_function_explains_itself():
    e = RuntimeError("Cannot call @triton.jit'd outside of the scope of a kernel")
    msg = compile_triton._short(e)
    assert "imported triton before TRITON_INTERPRET=1" in msg and "tl.zeros" in msg


# -- rendering details, caching, errors -------------------------------------------------------------

def _sym(name):
    return sympy.Symbol(name, integer=True, nonnegative=True)


def big_kernel() -> Kernel:
    """A row sum whose indices pass 2**31: rendered with int64 index arithmetic."""
    x0, r0 = _sym("x0"), _sym("r0")
    load = Expr("load", (), (0, 70000 * x0 + r0, ()), "float32")
    red_ = Reduce("acc0", "sum", load, "float32", (70000,), ("r0",), 1)
    st = Store(1, x0, Expr("acc", arg="acc0", dtype="float32"), "float32")
    bufs = (BufferArg("b0", "float32", 70000 * 40000, False), BufferArg("b1", "float32", 40000, True))
    return Kernel("k_big_sum", bufs, (40000,), (red_,), (st,))


def test_int64_indices_when_an_index_passes_int32():
    src = render_triton.render_triton(big_kernel())
    assert "tl.program_id(0).to(tl.int64)" in src and ".to(tl.int64)" in src.split("for roffset")[1]
    small = render_triton.render_triton(Kernel("k", big_kernel().buffers, (40,), big_kernel().reduces[:0],
                                               (Store(1, _sym("x0"), Expr("const", arg=1.0), "float32"),)))
    assert "tl.int64" not in small.split("def k(")[1].split("KERNEL =")[0]


def test_source_is_cached_on_disk_atomically():
    x = randn(10)
    X = buf(x)
    _, sched = run([u(Op.EXP, X)])
    k = sched.kernels[0]
    p1 = compile_triton.write_source(k)
    p2 = compile_triton.write_source(k)
    assert p1 == p2 and p1.parent == compile_triton.cache_dir() and p1.name.startswith(k.key())
    assert p1.parent.name == "triton" and not list(p1.parent.glob("*.tmp"))


def test_imported_modules_are_bounded_and_imported_again_when_evicted(monkeypatch):
    from collections import OrderedDict

    monkeypatch.setattr(compile_triton, "MAX_MODULES", 2)
    monkeypatch.setattr(compile_triton, "_modules", OrderedDict())
    paths = [compile_triton.cached_source(f"bounded-{i}.py", f"VALUE = {i}\n") for i in range(5)]
    first = compile_triton.import_module(paths[0])
    for p in paths[1:]:
        compile_triton.import_module(p)
        assert len(compile_triton._modules) <= 2
    assert first.VALUE == 0  # a module still referenced keeps working
    again = compile_triton.import_module(paths[0])
    assert again is not first and again.VALUE == 0
    assert compile_triton.import_module(paths[0]) is again  # used last: kept


def test_invalid_generated_source_names_the_file(monkeypatch):
    x = randn(10)
    X = buf(x)
    _, sched = run([u(Op.EXP, X)])
    k = sched.kernels[0]
    good = compile_triton.render_triton
    monkeypatch.setattr(compile_triton, "render_triton",
                        lambda kk, cfg=None: good(kk, cfg).replace("tl.exp(", "tl.no_such_function("))
    fn = compile_triton.load(k)
    with pytest.raises(compile_triton.TritonCompileError) as ei:
        fn(x, torch.empty(10))
    assert str(fn.path) in str(ei.value) and "no_such_function" in str(ei.value)
    monkeypatch.setattr(compile_triton, "render_triton", lambda kk, cfg=None: good(kk, cfg) + "\ndef broken(:\n")
    with pytest.raises(compile_triton.TritonCompileError) as ei:
        compile_triton.load(k)
    assert ".py" in str(ei.value) and "SyntaxError" in str(ei.value)
    monkeypatch.setattr(compile_triton, "render_triton",
                        lambda kk, cfg=None: good(kk, cfg).replace("tl.exp(", "tl.no_such_function("))
    with pytest.raises(compile_triton.TritonCompileError) as ei:  # AOT: a subprocess, file named too
        compile_triton.aot_compile(k, "sm_90")
    assert ".py" in str(ei.value) and "no_such_function" in str(ei.value)


@pytest.mark.skipif(os.environ.get("LAZY_SKIP_AOT") == "1", reason="LAZY_SKIP_AOT=1")
def test_softmax_layernorm_and_int64_kernels_compile_for_sm90_without_spills():
    n = 4096
    x, w, bias = torch.empty(n, n), torch.empty(1, n), torch.empty(1, n)
    X, W, B = buf(x), buf(w), buf(bias)
    kernels = []
    for y in (softmax(X), layer_norm(X, W, B)):
        _, bufs, _ = structure_key([y])
        (k,) = schedule([y], bufs).kernels
        kernels.append(k)
    kernels.append(big_kernel())
    # TRITON_INTERPRET=1 here, so this compiles in one subprocess with the variable unset
    results = compile_triton.aot_compile_many(kernels, "sm_90")
    for res in results:
        assert res["target"] == "sm_90" and ".target sm_90a" in res["ptx"] and res["cubin_bytes"] > 0
        assert res["spills"] == 0 and res["local"] == 0, res["resource_usage"]
        assert 0 < res["registers"] <= 255
        assert res["shared"] <= compile_triton.H100_SHARED_LIMIT
    for res in results[:2]:
        assert res["constexprs"]["RBLOCK"] == n and res["grid"] == [n]  # a row per program, kept in registers
        assert "div.rn.f32" in res["ptx"]  # IEEE division, as torch and the C backend
