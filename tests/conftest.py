"""Shared test helpers (pytest puts this folder on sys.path: test modules import from here)."""

import contextlib
import functools
import io
import platform

import pytest


@pytest.fixture(scope="session", autouse=True)
def _own_tuning_database(tmp_path_factory):
    """Configs tuned on this machine (`lazy tune`, LAZY_TUNE=1: $LAZY_CACHE_DIR/tuning.sqlite)
    would change the kernels the tests render, count and compare: the suite reads a database of its
    own, empty at the start, and tunes nothing unless a test asks."""
    from lazy import runtime

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAZY_TUNE_DB", str(tmp_path_factory.mktemp("tuning") / "tuning.sqlite"))
        mp.delenv("LAZY_TUNE", raising=False)
        mp.setattr(runtime, "tuner", None)  # (LAZY_TUNE=1 started one when lazy was imported)
        yield
import os

import pytest

# every kernel the tests build passes codegen.legalize.verify before it is compiled (lazy/runtime.py),
# in this process and in the processes tests start
os.environ.setdefault("LAZY_VERIFY", "1")
# tests change what a build gives (a scheduler or renderer patched, a threshold lowered) where the
# program cache's key cannot see it: programs are built here, as they were; tests/test_program_cache.py
# turns the cache on
os.environ.setdefault("LAZY_PROGRAM_CACHE", "0")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (the fuzzer's long budget)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: runs with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_sizes_seen_before():
    """Each test starts as a fresh process would: no program family seen with other sizes. A test
    that runs a program once gets the kernels of its sizes, whatever the tests before it ran with
    other sizes (lazy/dynamic.py builds a program for every size once a family was seen with two);
    tests of dynamic shapes run their sizes within the test."""
    from lazy import runtime

    runtime._families.clear()
    for key in [key for key, prog in runtime._programs.items() if prog.sizes]:
        del runtime._programs[key]
        runtime._bound.pop(key, None)


def run_cli(*args) -> tuple[int, str, str]:
    """`lazy ARGS...` in this process: (exit code, stdout, stderr)."""
    from lazy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def kernels_of(fn) -> list:
    """The kernels (Kernel IR, or GEMM calls) that `fn()` launches, compiled or cached."""
    from lazy import runtime

    ks: list = []
    runtime.kernel_listeners.append(lambda k, backend: ks.append(k))
    try:
        fn()
    finally:
        runtime.kernel_listeners.pop()
    return ks


@contextlib.contextmanager
def render_spy(monkeypatch, on_render):
    """Inside: `on_render(kernel, source)` sees every C kernel rendered, and programs compiled
    earlier are forgotten (so every kernel is rendered again), with the sizes their families were
    seen with (so a program is built for its sizes, not for every size: lazy/dynamic.py); they are
    restored after."""
    from codegen import render_c
    from lazy import runtime

    real = render_c.render_c

    def spy(k, *a, **kw):
        src = real(k, *a, **kw)
        on_render(k, src)
        return src

    monkeypatch.setattr(render_c, "render_c", spy)
    saved = [(table, dict(table)) for table in (runtime._programs, runtime._families, runtime._bound)]
    for table, _ in saved:
        table.clear()
    try:
        yield
    finally:
        for table, old in saved:
            table.clear()
            table.update(old)


def disassembly(source: str) -> str:
    """`objdump -d` of the shared object that C `source` compiles to (compiled if not cached)."""
    import subprocess

    from codegen import compile_c

    so = compile_c.build(source)
    return subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True, check=True).stdout


def kernel_body(source: str) -> str:
    """A rendered C kernel without the shared prelude."""
    from codegen.render_c import NO_CONTRACT, PRELUDE

    return source.replace(NO_CONTRACT + "\n", "", 1).replace(PRELUDE, "")


def native_macro(name: str, flags: tuple[str, ...] | None = None) -> bool:
    """Whether the C compiler predefines `name` (`__AVX512F__`, `__F16C__`...) with `flags`; None:
    the flags kernels compile with now (-march=native, then LAZY_CFLAGS_EXTRA: the `isa` path)."""
    from codegen import compile_c

    return f"#define {name} " in _predefined(compile_c.cflags() if flags is None else flags)


@functools.cache
def _predefined(flags: tuple[str, ...]) -> str:
    import subprocess

    from codegen import compile_c

    return subprocess.run([*compile_c.compiler(), *flags, "-dM", "-E", "-x", "c", "/dev/null"],
                          capture_output=True, text=True, check=True).stdout


# -- the vector widths of the C kernels --------------------------------------------------------
# Each path: the LAZY_CFLAGS_EXTRA that compiles the kernels as a CPU without the wider instruction
# sets would, and what -march=native must define for this CPU to run them. A CPU without AVX-512
# runs the AVX2 and SSE paths, and so on: CI then tests every path its machine can, whichever it gets.
ISA_PATHS = {"avx512": ("", "__AVX512F__"), "avx2": ("-mno-avx512f", "__AVX2__"), "sse": ("-mno-avx", "__SSE2__")}
if platform.machine().lower() not in ("x86_64", "amd64"):
    ISA_PATHS = {"native": ("", None)}


@pytest.fixture(scope="module", params=list(ISA_PATHS))
def isa(request):
    """A test module with `pytestmark = pytest.mark.usefixtures("isa")` runs once per path of
    ISA_PATHS (its tests grouped by path), each with its own compiled programs; a path this CPU
    cannot execute is skipped, saying why."""
    from codegen import compile_c
    from lazy import runtime

    extra, needs = ISA_PATHS[request.param]
    if needs and not native_macro(needs, compile_c.BASE_FLAGS):
        pytest.skip(f"{request.param} kernels: this CPU lacks {needs.strip('_')} (-march=native does not define {needs})")
    saved = dict(runtime._programs)
    runtime._programs.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAZY_CFLAGS_EXTRA", extra)
        yield request.param
    runtime._programs.clear()
    runtime._programs.update(saved)


def call_c(fn, k, tensors) -> None:
    """Call C function `fn` compiled from kernel `k` on torch `tensors` (in `k.buffers` order), with
    the scalar arguments `k` was lowered with (`meta["scalar_values"]`)."""
    import ctypes

    from codegen.compile_c import scalar_argtypes

    fn.argtypes = [ctypes.c_void_p] * len(tensors) + scalar_argtypes(k.scalars)
    fn(*[t.data_ptr() for t in tensors], *k.meta.get("scalar_values", ()))


def assert_transposed_views_equal(x, sums: bool = True) -> None:
    """Transposed views of `x` (2-d, at least 150x130) with offsets, steps and a flip, added to a
    contiguous tensor and copied (and, with `sums`, multiplied and summed over their first dim):
    equal to torch. The tiled-kernel tests of both backends run it."""
    import torch

    import lazy

    r, c = x.shape
    views = [(lambda t: t[3:, 5::2].T), (lambda t: t[1:-2:3, 4:].T), (lambda t: t.flip(0)[7:r * 2 // 3].T),
             (lambda t: t.T[2:c - 10, 10:r - 10])]
    tx = lazy.tensor(x)
    for i, view in enumerate(views):
        v = view(x)
        y = torch.randn(*v.shape, generator=torch.Generator().manual_seed(i + 1))
        assert torch.equal((view(tx) + lazy.tensor(y)).torch(), v + y)
        assert torch.equal(view(tx).contiguous().torch(), v.contiguous())
        if sums:
            torch.testing.assert_close((view(tx) * lazy.tensor(y)).sum(0).torch(),
                                       (v.double() * y.double()).sum(0).float(), rtol=1e-5, atol=1e-5)
