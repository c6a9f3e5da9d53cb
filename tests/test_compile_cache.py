"""The on-disk C compile cache: reuse across processes, atomic writes, corrupt entries, no compiler."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
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
    runs = [subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                           check=False)
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


def _listing(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*"))}


def test_a_read_only_cache_is_read_and_what_it_lacks_compiles_privately(cache, monkeypatch):
    """A warm cache that cannot be written serves its kernels; one it lacks is compiled into a temp
    directory of this process, with one warning. Writability is simulated here (root writes
    anywhere); the next test makes the directory truly read-only."""
    from codegen import compile_triton, tunedb

    monkeypatch.delenv("LAZY_TUNE_DB", raising=False)  # the database in the cache directory
    root = cache.parent
    compile_c.load(SRC)
    warm_module = compile_triton.cached_source("warm.py", "A = 1\n")
    row = {"kernel": "k", "device": "d", "version": "v", "backend": "c", "name": "k0", "config": {"threads": 2},
           "default_config": {}, "default_s": 2.0, "tuned_s": 1.0, "tried": 3, "rejected": 0, "tuning_s": 1.0,
           "created": 0.0}
    assert tunedb.put([row])
    compile_c._loaded.clear()
    before = _listing(root)
    monkeypatch.setattr(compile_c, "writable", lambda d: not Path(d).is_relative_to(root))
    monkeypatch.setattr(compile_c, "_private", {})
    monkeypatch.setattr(compile_c, "_swept", set())
    hits, misses = compile_c.stats.hits, compile_c.stats.misses
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what the cache holds is read without a warning
        assert _call(compile_c.load(SRC)) == 42.0
        assert compile_triton.cached_source("warm.py", "A = 1\n") == warm_module
        assert tunedb.get("k", "d", "v")["config"] == {"threads": 2}
    assert (compile_c.stats.hits, compile_c.stats.misses) == (hits + 1, misses)
    def three_new_artifacts():
        return (_call(compile_c.load(SRC.replace("42.0f", "7.0f"))), _call(compile_c.load(SRC.replace("42.0f", "8.0f"))),
                compile_triton.cached_source("new.py", "B = 2\n"))

    with pytest.warns(compile_c.CacheWarning, match=r"cache .* cannot be written: kernels it does not hold") as w:
        seven, eight, module = three_new_artifacts()
    assert (seven, eight) == (7.0, 8.0)
    assert len(w) == 1, [str(x.message) for x in w]
    assert compile_c.stats.misses == misses + 2
    assert _listing(root) == before, "nothing is written into a cache that cannot be written"
    private = compile_c._private[root]
    try:
        assert module == private / "triton" / "new.py"
        assert len(list((private / "c").glob("*.so"))) == 2
        compile_c._loaded.clear()  # found again in the private directory, not compiled a third time
        assert _call(compile_c.load(SRC.replace("42.0f", "7.0f"))) == 7.0
        assert compile_c.stats.misses == misses + 2
    finally:
        shutil.rmtree(private)


def _read_only_prefix() -> list[str] | None:
    """A command prefix under which a chmod'ed directory is read-only: none for a normal user; for
    root, setpriv dropping the capability to override file permissions. None: no way here."""
    if os.geteuid() != 0:
        return []
    cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    if shutil.which("setpriv") and subprocess.run([*cmd, "true"], capture_output=True, check=False).returncode == 0:
        return cmd
    return None


def test_a_read_only_warm_cache_runs_a_program_in_a_new_process(tmp_path):
    prefix = _read_only_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod does not stop root's writes (the logic is tested "
                    "with writability simulated in the test above)")
    script = textwrap.dedent("""
        import sys
        import lazy
        from codegen import compile_c
        x = lazy.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        y = (x.softmax(-1) * 2 + x.sum(0)).sum(-1)
        print(y.numpy().round(4).tolist())
        if sys.argv[1:] == ["new"]:
            print((x * 3.5 + 1).sum().item())
        print(compile_c.stats.misses, compile_c.stats.hits)
    """)
    env = dict(os.environ, LAZY_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("LAZY_BACKEND", None)
    root = Path(__file__).resolve().parents[1]

    def run(*args):
        r = subprocess.run([*prefix, sys.executable, "-c", script, *args], env=env, cwd=root, capture_output=True,
                           text=True, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines(), r.stderr

    (values, counts), _ = run()
    cache = tmp_path / "cache"
    for p in [cache, *cache.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        before = _listing(cache)
        (warm_values, warm_counts), err = run()
        assert warm_values == values and warm_counts == f"0 {counts.split()[0]}" and "cannot be written" not in err
        (new_values, new_sum, new_counts), err = run("new")
        assert new_values == values and float(new_sum) == 21.0 * 3.5 + 6
        assert int(new_counts.split()[0]) >= 1 and err.count("cannot be written") == 1, err
        assert _listing(cache) == before
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


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


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_temp_files_are_swept_when_the_cache_opens(tmp_path, monkeypatch):
    """Temp files of killed writers go; a fresh one, or an old one a live process holds, stays."""
    d = tmp_path / "c"
    d.mkdir()
    stale, fresh, held = (d / f"{n}.so.abc123.tmp" for n in ("stale", "fresh", "held"))
    for p in (stale, fresh, held):
        p.write_bytes(b"half an object")
    other = d / "keep.so"  # not a temp file, however old
    other.write_bytes(b"")
    for p in (stale, held, other):
        _age(p, compile_c.STALE_TEMP_S + 60)
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(held)!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a compiling process holds its temp file
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(compile_c, "_swept", set())
        removed = compile_c.stats.stale_temps_removed
        compile_c.cache_dir()
        assert not stale.exists() and fresh.exists() and held.exists() and other.exists()
        assert compile_c.stats.stale_temps_removed == removed + 1
        writer.kill()  # killed mid-compile: its file is a leftover now, but this process swept already
        writer.wait()
        compile_c.cache_dir()
        assert held.exists()
        monkeypatch.setattr(compile_c, "_swept", set())  # the next process
        compile_c.cache_dir()
        assert not held.exists() and fresh.exists()
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock(1) to probe the lock")
def test_the_compilers_output_is_locked_while_it_compiles(cache, monkeypatch, tmp_path):
    """A compiler that checks its temp output is locked (by another open file: flock(1) -n fails)."""
    cc = tmp_path / "checking-cc"
    cc.write_text(textwrap.dedent("""\
        #!/bin/sh
        out=; prev=
        for a; do [ "$prev" = -o ] && out=$a; prev=$a; done
        if [ -n "$out" ] && flock -n "$out" true; then echo "the temp output is not locked" >&2; exit 1; fi
        exec gcc "$@"
    """))
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    assert _call(compile_c.load(SRC + "/* locked */")) == 42.0


@pytest.mark.parametrize("suffix", [".so", ".sha256", ".c"])
def test_a_directory_where_an_artifact_belongs_is_moved_aside(cache, suffix):
    src = SRC + f"/* {suffix} */"
    cache.mkdir(parents=True)
    entry = cache / f"{compile_c.cache_key(src)}{suffix}"
    entry.mkdir()
    (entry / "something").write_text("not ours to delete")
    rebuilt = compile_c.stats.rebuilt_corrupt
    assert _call(compile_c.load(src)) == 42.0
    assert entry.is_file()
    (aside,) = cache.glob(f"{entry.name}.corrupt-*")
    assert (aside / "something").read_text() == "not ours to delete"
    assert compile_c.stats.rebuilt_corrupt == rebuilt + (suffix != ".c")  # a .c is only the source's copy


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_unloading_the_last_openmp_kernel_keeps_the_openmp_runtime(tmp_path):
    """Without torch (which brings an OpenMP runtime of its own) the kernels' runtime comes and
    would go with them: its idle threads would then crash the process."""
    script = textwrap.dedent("""
        import ctypes, sys, time
        from codegen import compile_c
        assert "torch" not in sys.modules
        src = '''void lazy_kernel(float* restrict o) {
          #pragma omp parallel for
          for (int i = 0; i < 4096; i++) o[i] = i;
        }'''
        fn = compile_c.load(src)
        out = (ctypes.c_float * 4096)()
        fn.argtypes = [ctypes.c_void_p]
        fn(ctypes.addressof(out))
        so = fn.library._name
        del fn
        compile_c._loaded.clear()
        maps = open("/proc/self/maps").read()
        time.sleep(0.2)  # the runtime's idle threads wake and wait inside it
        print(out[4095], compile_c.stats.unloaded, so in maps, "omp" in maps)
    """)
    env = dict(os.environ, LAZY_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="2")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, check=False)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.split() == ["4095.0", "1", "False", "True"]


def test_a_schedules_kernels_compile_together_once_each(cache):
    srcs = [SRC.replace("42.0f", f"{v}.0f") for v in (1, 2, 3)]
    before = compile_c.stats.misses
    compile_c.build_all(srcs + srcs[:1])
    assert compile_c.stats.misses == before + 3
    hits = compile_c.stats.hits
    assert [_call(compile_c.load(s)) for s in srcs] == [1.0, 2.0, 3.0]
    assert compile_c.stats.misses == before + 3 and compile_c.stats.hits == hits + 3
    compile_c.build_all(srcs)  # all cached: nothing compiles
    assert compile_c.stats.misses == before + 3


def test_a_failing_kernel_among_several_fails_when_it_is_loaded(cache):
    bad = "void lazy_kernel(float* o) { this is not C; }\n"
    compile_c.build_all([SRC, bad])
    assert _call(compile_c.load(SRC)) == 42.0
    with pytest.raises(compile_c.CompileError, match="C compiler failed"):
        compile_c.load(bad)
