"""Programs on disk: what building a program computed, so a new process that meets the same graph
structure skips scheduling and rendering.

In:  a program's full key (lazy/runtime.py `program_for`), its size template and sizes (a program
     for all sizes, lazy/dynamic.py), and the record of a program just built (lazy/runtime.py
     `_build`: the schedule and, per kernel, its launches with their C sources and configs).
Out: `digest(...)`: the record's name, or None when the program must not be persisted;
     `load(name)`: the record stored under it, or None; `store(name, record)`.

Invariants
- A name is a digest of the repr of the key and of everything else that changes what a build
  gives: the compile flags and the compiler, the source of lazy/, scheduler/ and codegen/ (an
  upgrade misses), the tuning database's contents and the device name its rows are keyed by. Only
  values whose repr is the same in every process go in (ints, strs, floats, bools, None, bytes,
  enum members, DTypes, tuples of these): a key holding anything else is not persisted.
- While this process tunes (a tuning session, or configs remembered after one) nothing is
  persisted: its configs are not all in the database yet.
- Records live in `$LAZY_CACHE_DIR/programs/<name>.pkl`, written atomically (temp file, then
  rename: codegen/compile_c.atomic_write). One that cannot be read, is cut short, does not
  unpickle or is not a record of this FORMAT for this name is a miss, and the build that follows
  overwrites it. A cache that cannot be written is read; nothing is stored then.
- Records are pickles: loading one runs what it names, as loading the cache's compiled kernels
  does; the cache directory is trusted the same way (README, LAZY_CACHE_DIR).
- Kernel IR pickles without its per-process hash caches (codegen/kernel_ir.py `Expr`): a string's
  hash differs between processes. Its sympy expressions come back as they were stored, made from
  their arguments without sympy's evaluation (`_Pickler`): a record's expressions are canonical
  already. Evaluated again (sympy's own pickling), the GPT example's program (111 kernels) loaded
  in 42-58 ms instead of 10, and the first evaluation imported more of sympy (`Add.flatten`:
  0.4 s of the MLP example's warm first step, under the profiler).
- A kernel's stages (its reduces and stores, which hold its index expressions) are a pickle of
  their own inside the record, unpickled when first read (codegen/kernel_ir.py `deferred_stages`):
  loading and launching a program reads only its kernels' buffers, scalars, sizes and meta, so a
  process whose programs all come from here, at fixed sizes, never imports sympy. (A program for all
  sizes has sympy polynomials in its shapes, and a launch with a tuned config needs the module
  that defines the config's class, a renderer: those load it.)
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import os
import pickle
from pathlib import Path

from codegen import compile_c, tune, tunedb
from codegen.kernel_ir import Kernel, deferred_stages
from lazy.graph import DType

FORMAT = 1  # of records: bump when what a record holds changes
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("lazy", "scheduler", "codegen")  # the code that decides what a program is
stats = {"hits": 0, "misses": 0, "stored": 0, "unreadable": 0, "skipped": 0}
_PLAIN = (int, str, float, bool, bytes, type(None))


def stable(value) -> bool:
    """Whether `value`'s repr is the same in every process (see the module docstring)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is tuple:
            stack.extend(v)
        elif not (t in _PLAIN or t is DType or (isinstance(v, enum.Enum) and type(v.value) in _PLAIN)):
            return False
    return True


@functools.cache
def code_version() -> str:
    """A digest of the source of the modules that schedule, render and build programs, and of the
    C they paste into kernels (codegen/prelude.h: a record holds its kernels' full sources)."""
    h = hashlib.sha256()
    for pkg in SOURCES:
        for p in sorted([*(ROOT / pkg).rglob("*.py"), *(ROOT / pkg).rglob("*.h")]):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


_db_digests: dict[tuple, str] = {}


def _file_digest(p: Path) -> str:
    """A digest of a file's bytes ("" when it does not exist), recomputed only when its stat changes."""
    try:
        st = p.stat()
    except OSError:
        return ""
    sig = (str(p), st.st_ino, st.st_size, st.st_mtime_ns)
    d = _db_digests.get(sig)
    if d is None:
        try:
            d = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            d = "unreadable"
        _db_digests.clear()  # one or two files: keep only the current signatures
        _db_digests[sig] = d
    return d


def _tuning_state(backend: str) -> tuple:
    """What `tune.tuned_config` reads: the database's contents and the names its rows are keyed by."""
    p = tunedb.path()
    kinds = ("c", "cgemm") if backend == "c" else ("triton", "gemm")
    return (_file_digest(p), _file_digest(p.with_name(p.name + "-wal")),
            *(tune.device_name(k) for k in kinds), *(tune.backend_version(k) for k in kinds))


def digest(full_key: tuple, backend: str, template=None, ints=None) -> str | None:
    """The record name of a program: `full_key` (`program_for`'s), built for `template`'s sizes
    (then `ints` are the sizes it was fitted at, which hint its kernels' speed decisions); None when
    it is not to be persisted."""
    if tune.remembered or os.environ.get("LAZY_PROGRAM_CACHE", "1") == "0":
        stats["skipped"] += 1
        return None
    tmpl = None if template is None else (
        tuple(template.symbols), tuple(None if r is None else (r.c, tuple(r.exps), r.d) for r in template.rules))
    key = (FORMAT, full_key, tmpl, None if ints is None else tuple(ints))
    if not stable(key):
        stats["skipped"] += 1
        return None
    try:
        flags = compile_c.cflags() if backend == "c" else ()
        cc = compile_c.compiler() if backend == "c" else ()
        env = (flags, cc, compile_c.compiler_version(cc) if cc else "", _tuning_state(backend), code_version())
    except Exception:  # noqa: BLE001 (no compiler, bad flags: the build says so)
        return None
    h = hashlib.sha256(repr(key).encode())
    h.update(b"\0")
    h.update(repr(env).encode())
    return h.hexdigest()[:40]


def _sympy_node(cls, args: tuple):
    """A compound sympy expression from its stored arguments, as it was (nothing evaluated)."""
    import sympy
    from sympy.core.operations import AssocOp

    if issubclass(cls, AssocOp):
        return cls._from_args(args)
    return sympy.Basic.__new__(cls, *args)


def _stages(data: bytes) -> tuple:
    """A stored kernel's (reduces, stores), which `_Pickler` pickled apart from the kernel."""
    return pickle.loads(data)


class _Pickler(pickle.Pickler):
    def __init__(self, file, basic: type):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._basic = basic  # sympy.Basic: passed in, so this module imports sympy only to store

    def reducer_override(self, obj):
        if type(obj) is Kernel:  # its stages in a pickle of their own, unpickled when first read
            stages = dumps((obj.reduces, obj.stores))
            fields = {k: v for k, v in vars(obj).items() if k not in ("reduces", "stores")}
            return deferred_stages, (fields, functools.partial(_stages, stages))
        # atoms (symbols with their assumptions, numbers, singletons) pickle as sympy makes them
        if isinstance(obj, self._basic) and not obj.is_Atom:
            return _sympy_node, (type(obj), obj.args)
        return NotImplemented


def dumps(record) -> bytes:
    import sympy

    buf = io.BytesIO()
    _Pickler(buf, sympy.Basic).dump(record)
    return buf.getvalue()


def _path(name: str) -> Path:
    return compile_c.cache_root() / "programs" / f"{name}.pkl"


def load(name: str) -> dict | None:
    """The record stored as `name`, or None (none, or one that cannot be used: a miss)."""
    try:
        data = _path(name).read_bytes()
    except OSError:
        stats["misses"] += 1
        return None
    try:
        rec = pickle.loads(data)
    except Exception:  # noqa: BLE001 (cut short, corrupt, or naming code that is gone: a miss)
        rec = None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or rec.get("name") != name:
        stats["unreadable"] += 1
        stats["misses"] += 1
        return None
    stats["hits"] += 1
    return rec


def store(name: str, record: dict) -> bool:
    """Store `record` as `name` where the cache can be written; whether it was stored."""
    try:
        d = compile_c.cache_subdir("programs")
        if not compile_c.writable(d):
            return False
        data = dumps({**record, "format": FORMAT, "name": name})
        compile_c.atomic_write(d / f"{name}.pkl", data)
    except Exception:  # noqa: BLE001 (a record too deep to pickle, a full disk: the program just is not kept)
        return False
    stats["stored"] += 1
    return True
