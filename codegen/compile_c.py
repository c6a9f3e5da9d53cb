"""C compile cache: C source -> loaded shared object, compiled once per (source, compiler, flags).

In:  C source text. Out: a ctypes function `lazy_kernel(void*, ...)`.

Invariants
- Artifacts live in `$LAZY_CACHE_DIR` (default `~/.cache/lazy`) under `c/<key>.so` with the
  source beside it (`<key>.c`, for debugging and compiler messages). The key hashes the source,
  the flags and the compiler's `--version`, so a new compiler or flag set never reuses old
  objects.
- Writes are atomic: compile into a private temp name in the same directory, then
  `os.replace`. Two processes compiling the same kernel both produce a complete file and the
  last rename wins; no reader ever sees half a file.
- Every object has a sidecar `<key>.sha256` (written after the object). An object whose hash
  does not match, or that fails to load, is treated as corrupt: removed and rebuilt.
- No C compiler: `CompilerNotFound` says which command was tried and how to install one.
- The flags are BASE_FLAGS plus `$LAZY_CFLAGS_EXTRA`, whose words must each be one of
  EXTRA_FLAGS (`FlagsError` otherwise): nothing from the environment reaches the compiler unless it
  is one of those fixed strings, and the compiler runs without a shell. `cflags()` is read at every compile and is part of the key.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# -D__FAST_MATH__ makes glibc's <math.h> declare its SIMD (libmvec) variants so gcc vectorizes
# expf/logf/...; we do NOT pass -ffast-math, so comparisons with NaN/Inf keep IEEE semantics.
# -mprefer-vector-width=512: loops use the widest vectors the CPU has. gcc's tuning for Intel's
# AVX-512 models (-march=native on them) prefers 256-bit ones, which the prelude does not expect:
# its own 16-lane exp and its sum blocks (SUM_LANE per lane) take AVX-512 to mean 16 floats, so
# there loops called libmvec's 8-lane exp (2.6 ulp) and float sums lost accuracy. On such a VM
# (2 cores, shared), 2048x2048 rows and 4M-element vectors, the 512-bit kernels took this share of
# the 256-bit ones' time: softmax 0.83-0.96, bfloat16 softmax 0.72-0.77, layer norm 0.86-0.92,
# exp 0.77-0.94, relu-sigmoid-tanh 0.21-0.33, logsumexp 0.70-0.81; the C GEMM was within the
# noise. Below AVX-512 the flag changes nothing.
BASE_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fPIC", "-shared", "-fopenmp",
              "-fno-math-errno", "-fno-trapping-math", "-D__FAST_MATH__", "-std=gnu11", "-w")
LIBS = ("-lmvec", "-lm")
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
    compile_seconds: float = 0.0


stats = CacheStats()
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}


class CacheDirError(RuntimeError):
    """The compile cache's directory cannot be created or written."""


def cache_root() -> Path:
    return Path(os.environ.get("LAZY_CACHE_DIR") or Path.home() / ".cache" / "lazy")


def cache_subdir(name: str) -> Path:
    """`cache_root()/name`, created; CacheDirError naming LAZY_CACHE_DIR when that cannot be."""
    d = cache_root() / name
    where = (f"LAZY_CACHE_DIR={os.environ['LAZY_CACHE_DIR']!r}" if os.environ.get("LAZY_CACHE_DIR")
             else "the default ~/.cache/lazy")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheDirError(f"lazy's compile cache needs a writable directory at {d} ({where}), but creating it "
                            f"failed: {e.strerror or e}. Set LAZY_CACHE_DIR to a writable directory.") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise CacheDirError(f"lazy's compile cache needs a writable directory at {d} ({where}), but it is not "
                            "writable. Set LAZY_CACHE_DIR to a writable directory.")
    return d


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


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and os.replace: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _valid(so: Path) -> bool:
    sha = so.with_suffix(".sha256")
    try:
        return so.exists() and sha.exists() and sha.read_text().strip() == _digest(so)
    except OSError:
        return False


def _compile(source: str, so: Path, flags: tuple[str, ...]) -> None:
    import time

    cc = compiler()
    c_path = so.with_suffix(".c")
    atomic_write(c_path, source.encode())
    fd, tmp = tempfile.mkstemp(dir=so.parent, prefix=so.name + ".", suffix=".tmp")
    os.close(fd)
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
        Path(tmp).unlink(missing_ok=True)
    stats.compile_seconds += time.perf_counter() - t0


def load(source: str, fn_name: str = "lazy_kernel", flags: tuple[str, ...] | None = None):
    """The compiled function for `source` (with `flags`; None: `cflags()`), compiling it only if
    the disk cache lacks it."""
    flags = cflags() if flags is None else flags
    key = cache_key(source, flags)
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            so = cache_dir() / f"{key}.so"
            if _valid(so):
                try:
                    lib = ctypes.CDLL(str(so))
                    stats.hits += 1
                except OSError:
                    lib = None
            if lib is None:
                if so.exists() or so.with_suffix(".sha256").exists():
                    stats.rebuilt_corrupt += 1
                    so.unlink(missing_ok=True)
                    so.with_suffix(".sha256").unlink(missing_ok=True)
                stats.misses += 1
                _compile(source, so, flags)
                lib = ctypes.CDLL(str(so))
            _loaded[key] = lib
    fn = getattr(lib, fn_name)
    fn.restype = None
    return fn
