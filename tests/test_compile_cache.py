"""The on-disk C compile cache: reuse across processes, atomic writes, corrupt entries, no compiler."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codegen import compile_c

SRC = "void lazy_kernel(float* restrict o) { o[0] = 42.0f; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path))
    compile_c._loaded.clear()
    yield tmp_path / "c"
    compile_c._loaded.clear()


def _call(fn) -> float:
    import ctypes

    import torch

    out = torch.zeros(1)
    fn.argtypes = [ctypes.c_void_p]
    fn(out.data_ptr())
    return float(out[0])


def test_compiles_once_then_hits_disk(cache):
    before = compile_c.stats.misses
    assert _call(compile_c.load(SRC)) == 42.0
    assert compile_c.stats.misses == before + 1
    compile_c._loaded.clear()  # a new process would start with nothing loaded
    hits = compile_c.stats.hits
    assert _call(compile_c.load(SRC)) == 42.0
    assert compile_c.stats.hits == hits + 1 and compile_c.stats.misses == before + 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".c", ".sha256", ".so"]


def test_corrupt_object_is_rebuilt(cache):
    compile_c.load(SRC)
    compile_c._loaded.clear()
    so = next(cache.glob("*.so"))
    so.unlink()  # a new inode: the loaded copy stays mapped, as with a truncated write on disk
    so.write_bytes(b"\x7fELF this is not a shared object")
    rebuilt = compile_c.stats.rebuilt_corrupt
    assert _call(compile_c.load(SRC)) == 42.0
    assert compile_c.stats.rebuilt_corrupt == rebuilt + 1


def test_missing_checksum_is_rebuilt(cache):
    compile_c.load(SRC)
    compile_c._loaded.clear()
    next(cache.glob("*.sha256")).unlink()
    assert _call(compile_c.load(SRC)) == 42.0
    assert len(list(cache.glob("*.sha256"))) == 1


def test_missing_compiler_says_how_to_install(cache, monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc-anywhere")
    with pytest.raises(compile_c.CompilerNotFound, match="apt-get install -y gcc"):
        compile_c.load(SRC + "/* new */")


def test_compiler_error_names_source_path(cache):
    with pytest.raises(compile_c.CompileError, match=r"\.c \(exit"):
        compile_c.load("void lazy_kernel( {")
    assert not list(cache.glob("*.so")), "a failed compile must leave no object behind"
    assert not list(cache.glob("*.tmp"))


def test_second_process_compiles_nothing(tmp_path):
    """The same program in a fresh process finds every kernel in the disk cache."""
    script = textwrap.dedent("""
        import lazy
        from codegen import compile_c
        x = lazy.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        y = (x.softmax(-1) * 2 + x.sum(0)).sum(-1)
        y.realize()
        print(compile_c.stats.misses, compile_c.stats.hits)
    """)
    env = dict(os.environ, LAZY_CACHE_DIR=str(tmp_path))
    env.pop("LAZY_BACKEND", None)
    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (tuple(map(int, r.stdout.split())) for r in runs)
    assert first[0] >= 1
    assert second == (0, first[0])


def test_two_processes_compile_same_kernel_at_once(tmp_path):
    script = textwrap.dedent(f"""
        from codegen import compile_c
        import ctypes, torch
        fn = compile_c.load({SRC!r} + "/* race */")
        o = torch.zeros(1); fn.argtypes = [ctypes.c_void_p]; fn(o.data_ptr()); print(float(o[0]))
    """)
    env = dict(os.environ, LAZY_CACHE_DIR=str(tmp_path))
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(o.strip() == "42.0" for o, _ in outs)
    assert len(list((tmp_path / "c").glob("*.so"))) == 1
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_a_compiler_command_with_arguments(cache, monkeypatch):
    monkeypatch.setenv("CC", "env gcc")  # like `ccache gcc`: a wrapper and the compiler it runs
    assert compile_c.compiler()[1:] == ("gcc",)
    assert _call(compile_c.load(SRC + "/* through env */")) == 42.0
    monkeypatch.setenv("CC", "gcc '-O2")
    with pytest.raises(compile_c.CompilerNotFound, match="not a valid command line"):
        compile_c.compiler()


def test_extra_flags_narrow_the_instruction_set_and_key_their_own_objects(cache, monkeypatch):
    src = "#ifdef __AVX__\n#define AVX_OR_NOT 1.0f\n#else\n#define AVX_OR_NOT 0.0f\n#endif\n" + SRC.replace("42.0f", "AVX_OR_NOT")
    monkeypatch.setenv("LAZY_CFLAGS_EXTRA", "  -mno-avx512f   -mno-avx ")
    assert compile_c.cflags() == (*compile_c.BASE_FLAGS, "-mno-avx512f", "-mno-avx")
    narrow = compile_c.cache_key(src)
    assert _call(compile_c.load(src)) == 0.0  # what a CPU without AVX compiles
    monkeypatch.delenv("LAZY_CFLAGS_EXTRA")
    assert compile_c.cache_key(src) != narrow and compile_c.cache_key(src, compile_c.BASE_FLAGS) == compile_c.cache_key(src)


@pytest.mark.parametrize("extra", ["-O0", "-mno-avx;rm -rf /", "$(touch x)", "-fplugin=./evil.so", "-mno-avx512f -o/tmp/x",
                                   "-MNO-AVX"])
def test_extra_flags_outside_the_allowed_list_never_reach_the_compiler(cache, monkeypatch, extra):
    monkeypatch.setenv("LAZY_CFLAGS_EXTRA", extra)
    compiled = compile_c.stats.misses
    with pytest.raises(compile_c.FlagsError, match=r"LAZY_CFLAGS_EXTRA=.*is not a flag it accepts; it accepts -mno-avx512f"):
        compile_c.load(SRC + "/* never compiled */")
    assert compile_c.stats.misses == compiled and not list(cache.glob("*.c"))


def test_a_cache_dir_that_cannot_be_made_says_which_and_how(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(blocker / "cache"))
    compile_c._loaded.clear()
    with pytest.raises(compile_c.CacheDirError, match=r"LAZY_CACHE_DIR=.*a-file/cache.*Not a directory.*Set LAZY_CACHE_DIR"):
        compile_c.load(SRC + "/* nowhere */")
    assert blocker.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_cache_dir_says_so(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    (ro / "c").mkdir(parents=True)
    ro.chmod(0o555)
    (ro / "c").chmod(0o555)
    monkeypatch.setenv("LAZY_CACHE_DIR", str(ro))
    with pytest.raises(compile_c.CacheDirError, match="not writable"):
        compile_c.load(SRC + "/* read-only */")


@pytest.mark.parametrize("cmd", [["demo", "--size", "small"], ["bench", "--size", "tiny", "--no-save"]])
def test_cli_commands_check_the_compiler_and_cache_up_front(tmp_path, monkeypatch, cmd):
    from conftest import run_cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(blocker))
    rc, out, err = run_cli(*cmd)
    assert rc == 2 and out == "" and err.startswith(f"lazy {cmd[0]}: lazy's compile cache needs a writable directory")
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-cc-anywhere")
    rc, out, err = run_cli(*cmd)
    assert rc == 2 and out == "" and "apt-get install -y gcc" in err and len(err.splitlines()) == 1
    monkeypatch.delenv("CC")
    monkeypatch.setenv("LAZY_CFLAGS_EXTRA", "-O0")
    rc, out, err = run_cli(*cmd)
    assert rc == 2 and out == "" and err.startswith(f"lazy {cmd[0]}: LAZY_CFLAGS_EXTRA='-O0': '-O0' is not a flag")
