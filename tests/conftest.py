"""Shared test helpers (pytest puts this folder on sys.path: test modules import from here)."""

import contextlib
import io
import os

# every kernel the tests build passes codegen.legalize.verify before it is compiled (lazy/runtime.py),
# in this process and in the processes tests start
os.environ.setdefault("LAZY_VERIFY", "1")


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
    earlier are forgotten (so every kernel is rendered again); they are restored after."""
    from codegen import render_c
    from lazy import runtime

    real = render_c.render_c

    def spy(k, *a, **kw):
        src = real(k, *a, **kw)
        on_render(k, src)
        return src

    monkeypatch.setattr(render_c, "render_c", spy)
    saved = dict(runtime._programs)
    runtime._programs.clear()
    try:
        yield
    finally:
        runtime._programs.clear()
        runtime._programs.update(saved)


def disassembly(source: str) -> str:
    """`objdump -d` of the shared object that C `source` compiles to (compiled if not cached)."""
    import subprocess

    from codegen import compile_c

    so = compile_c.build(source)
    return subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True, check=True).stdout


def kernel_body(source: str) -> str:
    """A rendered C kernel without the shared prelude."""
    from codegen.render_c import PRELUDE

    return source.replace(PRELUDE, "")


def native_macro(name: str) -> bool:
    """Whether the C compiler predefines `name` for this machine (-march=native): `__AVX512F__`,
    `__F16C__`..."""
    import subprocess

    from codegen import compile_c

    out = subprocess.run([*compile_c.compiler(), "-march=native", "-dM", "-E", "-x", "c", "/dev/null"],
                         capture_output=True, text=True, check=True).stdout
    return f"#define {name} " in out


def call_c(fn, k, tensors) -> None:
    """Call C function `fn` compiled from kernel `k` on torch `tensors` (in `k.buffers` order), with
    the scalar arguments `k` was lowered with (`meta["scalar_values"]`)."""
    import ctypes

    from codegen.render_c import scalar_argtypes

    fn.argtypes = [ctypes.c_void_p] * len(tensors) + scalar_argtypes(k.scalars)
    fn(*[t.data_ptr() for t in tensors], *k.meta.get("scalar_values", ()))
