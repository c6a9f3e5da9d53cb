"""C compile cache: C source -> loaded shared object, compiled once per (source, compiler, flags).

In:  C source text. Out: a ctypes function `lazy_kernel(void*, ...)`.

Invariants
- Artifacts live in `$LAZY_CACHE_DIR` (default `~/.cache/lazy`) under `c/<key>.so` with the
  source beside it (`<key>.c`, for debugging and compiler messages). The key hashes the source,
  the flags and the compiler's `--version`, so a new compiler or flag set never reuses old
  objects.
- A cache that exists but cannot be written (a container image, a shared file system) is read
  from. What it lacks is compiled into a private temp directory of this process, removed at
  exit, with one CacheWarning naming the cache (`write_dir`). Only a cache directory that does
  not exist and cannot be created is an error (CacheDirError): nothing could ever be read from it.
- Writes are atomic: compile into a private temp name in the same directory, then
  `os.replace`. Two processes compiling the same kernel both produce a complete file and the
  last rename wins; no reader ever sees half a file.
- A writer holds an flock on its temp file until the rename. The temp files of a process killed
  mid-write (`<name>.XXXX.tmp`) are removed the first time a process opens the directory, when
  older than STALE_TEMP_S and not locked: a live writer's file is never removed.
- Every object has a sidecar `<key>.sha256` (written after the object). An object whose hash
  does not match, or that fails to load, is treated as corrupt: removed and rebuilt. A directory
  where an artifact belongs (nothing this cache makes) is moved aside to `<name>.corrupt-<pid>-<ns>`
  instead, with whatever it holds.
- No C compiler: `CompilerNotFound` says which command was tried and how to install one.
- The flags are BASE_FLAGS plus `$LAZY_CFLAGS_EXTRA`, whose words must each be one of
  EXTRA_FLAGS (`FlagsError` otherwise): nothing from the environment reaches the compiler unless it
  is one of those fixed strings, and the compiler runs without a shell. `cflags()` is read at every compile and is part of the key.
- Loaded objects are unloaded (dlclose) once nothing can call them: a function from `load` holds
  its library (a plain reference, so it goes as soon as the last function does), and the
  libraries kept for reuse are the MAX_LOADED used last. The OpenMP runtime that kernels pull in
  is made resident first: its threads outlive any one kernel.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# No -ffast-math, so comparisons with NaN/Inf keep IEEE semantics; and no -D__FAST_MATH__, which
# would make glibc's <math.h> declare its vector (libmvec) variants: each vector width has its own
# algorithm there, so a value came out of a loop body and its scalar tail with different bits. The
# float32 functions that matter for speed are the prelude's own, the same at every width (render_c).
# -mprefer-vector-width=512: loops use the widest vectors the CPU has. gcc's tuning for Intel's
# AVX-512 models (-march=native on them) prefers 256-bit ones, which the prelude does not expect:
# its sum blocks (SUM_LANE per lane) take AVX-512 to mean 16 floats, so there float sums lost
# accuracy. On such a VM
# (2 cores, shared), 2048x2048 rows and 4M-element vectors, the 512-bit kernels took this share of
# the 256-bit ones' time: softmax 0.83-0.96, bfloat16 softmax 0.72-0.77, layer norm 0.86-0.92,
# exp 0.77-0.94, relu-sigmoid-tanh 0.21-0.33, logsumexp 0.70-0.81; the C GEMM was within the
# noise. Below AVX-512 the flag changes nothing.
# -fno-tree-slp-vectorize: gcc 12's straight-line vectorizer drops a rounding conversion. A loop's
# remainder (the last 2-7 elements of a constant trip count) is unrolled and vectorized as one
# block, where double -> float -> double becomes a V4DF -> V4SF -> V4DF pair that gcc folds into
# nothing (it compares the vectors' lane counts, not their element precisions): `x.double()` of a
# float32 cast came back unrounded in those lanes, on every instruction set (AVX-512, AVX2, SSE).
# Loops are vectorized by the loop vectorizer, which this flag leaves on. Both workarounds are
# pinned by tests/test_compiler_workarounds.py.
# -mno-mmx: without AVX, gcc 12 spilled a 64-bit value through an MMX register (movq %rax,%mm0;
# movq2dq) and never ran EMMS, which leaves the x87 unit's registers marked full: the next x87
# instruction in the process, glibc's fmodf inside torch's remainder among them, returned NaN.
BASE_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-tree-slp-vectorize", "-mno-mmx",
              "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
              "-std=gnu11", "-w")
LIBS = ("-lm",)
# What LAZY_CFLAGS_EXTRA may add: flags that take instruction sets away from -march=native, so one
# machine compiles its kernels as a machine without AVX-512, or without AVX, would (the tests run
# the vector-width-dependent code under each path the CPU can execute), or that set the vector
# width gcc prefers. A later -m flag overrides an earlier one, so they apply after BASE_FLAGS.
EXTRA_FLAGS = ("-mno-avx512f", "-mno-avx2", "-mno-avx", "-mno-fma", "-mno-f16c",
               "-mprefer-vector-width=128", "-mprefer-vector-width=256", "-mprefer-vector-width=512")


class CompilerNotFound(RuntimeError):
    pass


class CompileError(RuntimeError):
    pass


class FlagsError(ValueError):
    """LAZY_CFLAGS_EXTRA holds a word that is not one of EXTRA_FLAGS."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rebuilt_corrupt: int = 0
    stale_temps_removed: int = 0
    unloaded: int = 0
    compile_seconds: float = 0.0


stats = CacheStats()
_lock = threading.Lock()
_stats_lock = threading.Lock()
# Libraries kept loaded for reuse, the one used last at the end. The functions in use keep their
# own libraries (a program's launches hold theirs), so this bounds only those nothing calls now:
# reopening one from the disk cache costs a checksum and a dlopen, well under a millisecond, while
# each kept one holds ~5 memory mappings (Linux allows 65,530 a process) and its pages.
MAX_LOADED = 256
_loaded: OrderedDict[str, ctypes.CDLL] = OrderedDict()
_VOID_FN = ctypes.CFUNCTYPE(None)


# A temp file older than this, that no process holds locked, was left by a process killed while
# writing it. The age is a second guard beside the lock (a linker may write a new file under the
# locked name, and there is a moment between creating a temp file and locking it): the slowest
# compile here, the C GEMM template at -O3, takes seconds, and the compiler writes its output at
# the end, so ten minutes is a hundred times that, enough for a loaded machine.
STALE_TEMP_S = 600.0
_swept: set[Path] = set()  # directories already swept by this process


class CacheDirError(RuntimeError):
    """The compile cache's directory does not exist and cannot be created."""


class CacheWarning(RuntimeWarning):
    """The compile cache cannot be written: kernels it lacks are compiled for this process only."""


_private: dict[Path, Path] = {}  # cache root that cannot be written -> this process's temp directory
_private_lock = threading.Lock()  # (tune.py compiles candidates from several threads)


def cache_root() -> Path:
    return Path(os.environ.get("LAZY_CACHE_DIR") or Path.home() / ".cache" / "lazy")


def _where() -> str:
    return (f"LAZY_CACHE_DIR={os.environ['LAZY_CACHE_DIR']!r}" if os.environ.get("LAZY_CACHE_DIR")
            else "the default ~/.cache/lazy")


def writable(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def cache_subdir(name: str) -> Path:
    """`cache_root()/name`, created when it can be; it may be read-only (see `write_dir`).
    CacheDirError naming LAZY_CACHE_DIR when the cache directory does not exist and cannot be made."""
    root = cache_root()
    d = root / name
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if not root.is_dir():
            raise CacheDirError(f"lazy's compile cache needs a writable directory at {d} ({_where()}), but creating "
                                f"it failed: {e.strerror or e}. Set LAZY_CACHE_DIR to a writable directory.") from None
    if d not in _swept:
        _swept.add(d)
        if writable(d):
            stats.stale_temps_removed += sweep_stale_temps(d)
    return d


def private_subdir(name: str) -> Path | None:
    """This process's directory for `name` artifacts beside a read-only cache, if it has one."""
    p = _private.get(cache_root())
    return None if p is None else p / name


def write_dir(name: str) -> Path:
    """Where a new `name` artifact goes: `cache_subdir(name)`, or when that cannot be written, a
    temp directory of this process (removed at exit; the first time, a CacheWarning says so)."""
    d = cache_subdir(name)
    if writable(d):
        return d
    root = cache_root()
    with _private_lock:
        if root not in _private:
            _private[root] = Path(tempfile.mkdtemp(prefix="lazy-cache-"))
            atexit.register(shutil.rmtree, _private[root], ignore_errors=True)
            warnings.warn(f"lazy's compile cache {root} ({_where()}) cannot be written: kernels it does not hold "
                          f"are compiled into {_private[root]} for this process only. Fill the cache where it can "
                          "be written, or set LAZY_CACHE_DIR to a writable directory.", CacheWarning, stacklevel=2)
        p = _private[root] / name
        p.mkdir(exist_ok=True)
    return p


def cache_dir() -> Path:
    return cache_subdir("c")


def compiler() -> tuple[str, ...]:
    """The compiler command: `$CC` split like a shell would (`ccache gcc` works), default `cc`,
    its first word resolved on PATH."""
    cc = os.environ.get("CC", "cc")
    try:
        words = shlex.split(cc)
    except ValueError as e:
        raise CompilerNotFound(f"CC={cc!r} is not a valid command line: {e}") from None
    path = shutil.which(words[0]) if words else None
    if path is None:
        raise CompilerNotFound(
            f"lazy's C backend needs a C compiler, but {words[0] if words else cc!r} was not found on PATH. "
            "Install one (Debian/Ubuntu: `apt-get install -y gcc`; Fedora: `dnf install gcc`) "
            "or point the CC environment variable at it.")
    return (path, *words[1:])


@cache
def compiler_version(cc: tuple[str, ...]) -> str:
    try:
        out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as e:
        raise CompilerNotFound(f"the C compiler {' '.join(cc)!r} cannot be run: {e}") from e
    return out.stdout.strip().splitlines()[0] if out.stdout else " ".join(cc)


def extra_flags() -> tuple[str, ...]:
    """The words of `$LAZY_CFLAGS_EXTRA`, each one of EXTRA_FLAGS; FlagsError names any other."""
    raw = os.environ.get("LAZY_CFLAGS_EXTRA", "")
    words = tuple(raw.split())
    bad = [w for w in words if w not in EXTRA_FLAGS]
    if bad:
        raise FlagsError(f"LAZY_CFLAGS_EXTRA={raw!r}: {bad[0]!r} is not a flag it accepts; it accepts "
                         f"{', '.join(EXTRA_FLAGS)} (separated by spaces)")
    return words


def cflags() -> tuple[str, ...]:
    """The flags kernels compile with: BASE_FLAGS, then LAZY_CFLAGS_EXTRA's."""
    return BASE_FLAGS + extra_flags()


def cache_key(source: str, flags: tuple[str, ...] | None = None) -> str:
    """The key of `source` compiled with `flags` (None: `cflags()`) by this compiler."""
    cc = compiler()
    flags = cflags() if flags is None else flags
    h = hashlib.sha256()
    for part in (source, " ".join(flags + LIBS), compiler_version(cc)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside `path` (fd, name), flocked until the fd is closed: the sweep of a
    later process leaves it alone while this one lives."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # no flock here: the age rule alone protects the file
        pass
    return fd, tmp


def sweep_stale_temps(d: Path, max_age_s: float = STALE_TEMP_S) -> int:
    """Remove the temp files in `d` that killed writers left: older than `max_age_s` and not
    locked by a live one. Returns how many; a file it cannot check is kept."""
    try:
        import fcntl
    except ImportError:
        return 0
    cutoff, removed = time.time() - max_age_s, 0
    for p in d.glob("*.tmp"):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime > cutoff:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a live writer holds it
            if os.stat(p, follow_symlinks=False).st_ino == st.st_ino:  # still the file we checked
                os.unlink(p)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and os.replace: readers never see half a file."""
    fd, tmp = _locked_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.replace(tmp, path)  # before the close: the temp file is locked until it has its name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _valid(so: Path) -> bool:
    sha = so.with_suffix(".sha256")
    try:
        return so.exists() and sha.exists() and sha.read_text().strip() == _digest(so)
    except OSError:
        return False


def _discard(path: Path) -> None:
    """Remove a corrupt cache entry; a directory is moved aside, not deleted with its contents."""
    try:
        if path.is_dir() and not path.is_symlink():
            os.rename(path, path.with_name(f"{path.name}.corrupt-{os.getpid()}-{time.time_ns()}"))
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:  # another process discarded it first
        pass


def _compile(source: str, so: Path, flags: tuple[str, ...]) -> None:
    cc = compiler()
    c_path = so.with_suffix(".c")
    if c_path.is_dir():
        _discard(c_path)
    atomic_write(c_path, source.encode())
    fd, tmp = _locked_temp(so)  # locked while the compiler writes into it (see STALE_TEMP_S)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*cc, *flags, str(c_path), "-o", tmp, *LIBS], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise CompileError(f"C compiler failed on {c_path} (exit {proc.returncode}):\n{proc.stderr.strip()}")
        digest = _digest(Path(tmp))
        os.replace(tmp, so)
        atomic_write(so.with_suffix(".sha256"), digest.encode())
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
    with _stats_lock:  # compiles run in threads (build_all)
        stats.compile_seconds += time.perf_counter() - t0


def _cached(key: str) -> list[Path]:
    """The objects for `key` on disk that pass their checksum: the cache's, then this process's."""
    dirs = [cache_dir(), private_subdir("c")]
    return [so for d in dirs if d is not None and _valid(so := d / f"{key}.so")]


def _rebuild(source: str, key: str, flags: tuple[str, ...]) -> Path:
    """Compile into the cache (or this process's directory beside a read-only one), replacing a
    corrupt entry there."""
    so = write_dir("c") / f"{key}.so"
    if os.path.lexists(so) or os.path.lexists(so.with_suffix(".sha256")):
        with _stats_lock:
            stats.rebuilt_corrupt += 1
        _discard(so)
        _discard(so.with_suffix(".sha256"))
    with _stats_lock:
        stats.misses += 1
    _compile(source, so, flags)
    return so


def build(source: str, flags: tuple[str, ...] | None = None) -> Path:
    """The compiled object for `source` on disk (with `flags`; None: `cflags()`), compiled if no cache
    holds it (not loaded)."""
    flags = cflags() if flags is None else flags
    key = cache_key(source, flags)
    found = _cached(key)
    return found[0] if found else _rebuild(source, key, flags)


def build_all(sources: list[str], flags: tuple[str, ...] | None = None) -> None:
    """Compile the sources no cache holds yet, one compiler process per core at a time (the
    compiler runs outside the GIL). Loaded or cached ones cost a hash; failures are left for
    `load` to raise, with its message, when the source is loaded."""
    flags = cflags() if flags is None else flags
    todo = {}
    for src in sources:
        key = cache_key(src, flags)
        if key not in _loaded and key not in todo and not _cached(key):
            todo[key] = src
    if len(todo) < 2:
        return  # nothing to overlap: `load` compiles it
    workers = min(len(todo), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        for f in [ex.submit(_rebuild, src, key, flags) for key, src in todo.items()]:
            f.exception()


# The OpenMP runtimes a kernel can need, by the name it asks the loader for: gcc's, LLVM's (two
# spellings), Intel's
OPENMP_RUNTIMES = ("libgomp.so.1", "libomp.so.5", "libomp.so", "libiomp5.so")
_resident: dict[str, ctypes.CDLL] = {}


def _keep_openmp_resident() -> bool:
    """Mark each loaded OpenMP runtime never to be unloaded (RTLD_NODELETE): kernels load it, its
    worker threads wait inside it between kernels, and unloading it with the last kernel that
    needed it crashes them. False when that cannot be done: then no library is closed."""
    if not hasattr(os, "RTLD_NODELETE"):
        return False
    for name in OPENMP_RUNTIMES:
        if name not in _resident:
            try:  # RTLD_NOLOAD: only if loaded (by name or soname); ~50 us when it is not
                _resident[name] = ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_NOLOAD | os.RTLD_NODELETE)
            except OSError:
                pass
    return True


def _close(handle: int) -> None:
    """dlclose a kernel library: the finalizer of its CDLL, which runs when no function of it is left."""
    dlclose = getattr(_ctypes, "dlclose", None)
    if dlclose is not None and _keep_openmp_resident():
        dlclose(handle)
        stats.unloaded += 1


def _open(so: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(so))
    weakref.finalize(lib, _close, lib._handle).atexit = False  # (at exit the process unmaps everything)
    return lib


def load_library(source: str, flags: tuple[str, ...] | None = None) -> ctypes.CDLL:
    """The loaded object for `source` (with `flags`; None: `cflags()`), compiling it only if no disk
    cache holds it. It is unloaded once it is neither among the MAX_LOADED used last nor referenced."""
    flags = cflags() if flags is None else flags
    key = cache_key(source, flags)
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            for so in _cached(key):
                try:
                    lib = _open(so)
                    stats.hits += 1
                    break
                except OSError:  # corrupt despite its checksum: rebuilt below
                    pass
            if lib is None:
                lib = _open(_rebuild(source, key, flags))
            _loaded[key] = lib
            while len(_loaded) > MAX_LOADED:
                _loaded.popitem(last=False)
        else:
            _loaded.move_to_end(key)
    return lib


# the ctypes of the scalar parameters render_c.scalar_params declares: each dtype's compute type
SCALAR_CTYPES = {"float32": ctypes.c_float, "float64": ctypes.c_double, "float16": ctypes.c_float,
                 "bfloat16": ctypes.c_float, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
                 "int8": ctypes.c_int32, "uint8": ctypes.c_int32, "bool": ctypes.c_int}


def scalar_argtypes(dtypes: tuple[str, ...]) -> list:
    """ctypes of a kernel's scalar arguments, for a loaded function's argtypes. Here rather than
    beside the renderer that declares them: loading a kernel from its stored source needs these,
    and no renderer (nor sympy)."""
    return [SCALAR_CTYPES[dt] for dt in dtypes]


def load(source: str, fn_name: str = "lazy_kernel", flags: tuple[str, ...] | None = None):
    """The compiled function for `source` (with `flags`; None: `cflags()`), compiling it only if no
    disk cache holds it. The function holds its library, which stays loaded while the function exists."""
    lib = load_library(source, flags)
    try:
        fn = _VOID_FN(_ctypes.dlsym(lib._handle, fn_name))
    except OSError:
        raise AttributeError(f"{lib._name}: undefined symbol: {fn_name}") from None
    # not `lib[fn_name]`: such a function refers to itself, so only the cycle collector would
    # free it, and its library would stay loaded until it ran
    fn.library = lib
    return fn
