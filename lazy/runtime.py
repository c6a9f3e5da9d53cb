"""Realization: graph nodes -> buffers, through scheduler and codegen.

In:  nodes to compute. Out: one `Buffer` per node, holding a torch tensor of the node's shape.

Invariants
- The schedule and the compiled kernels are cached by `graph.structure_key`, so a program
  that builds the same graph again (a training loop, a second run of a script) does no
  scheduling, no sympy and no compiling: it allocates and launches.
- Large buffers come from a pool of huge-page-backed numpy allocations, reused once no tensor
  refers to them any more: fresh 4 KiB pages cost more than the kernels that fill them.
- Debug output only under LAZY_DEBUG (1: kernels and times, 2: fusion decisions, 3: generated
  source, 4: the graph); `lazy.debug(level)` sets it for one block.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from codegen import compile_c, render_c
from codegen.kernel_ir import Kernel
from lazy.graph import Buffer, Node, structure_key, toposort
from scheduler import schedule

TORCH_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int32": torch.int32, "int64": torch.int64, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}

# -- debug levels ------------------------------------------------------------------------------
_debug_override: list[int] = []


def debug_level() -> int:
    if _debug_override:
        return _debug_override[-1]
    try:
        return int(os.environ.get("LAZY_DEBUG", "0") or 0)
    except ValueError:
        return 0


@contextlib.contextmanager
def debug(level: int):
    """Set the debug level for one block: `with lazy.debug(2): y.realize()`."""
    _debug_override.append(int(level))
    try:
        yield
    finally:
        _debug_override.pop()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


# -- profiling -----------------------------------------------------------------------------------
@dataclass
class KernelRecord:
    name: str
    backend: str
    device: str
    seconds: float
    bytes_read: int
    bytes_written: int
    compiled: bool  # compiled in this call (False: from memory or the disk cache)

    @property
    def gbps(self) -> float:
        return (self.bytes_read + self.bytes_written) / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class Profile:
    kernels: list[KernelRecord] = field(default_factory=list)
    realizes: int = 0

    @property
    def seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    def __repr__(self) -> str:
        return f"Profile({len(self.kernels)} kernels, {self.seconds * 1e3:.3f} ms)"


_profiles: list[Profile] = []


@contextlib.contextmanager
def profile():
    """Record every kernel launched in the block: `with lazy.profile() as p: ...; p.kernels`."""
    p = Profile()
    _profiles.append(p)
    try:
        yield p
    finally:
        _profiles.remove(p)


# -- buffer pool -------------------------------------------------------------------------------
POOL_MIN_BYTES = 1 << 20
POOL_MAX_FREE_BYTES = 4 << 30


class BufferPool:
    """Huge-page numpy allocations handed out as torch tensors and reused when unreferenced."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []

    @staticmethod
    def _free(arr: np.ndarray) -> bool:
        # references when free: the pool's list, the caller's variable, this parameter and
        # getrefcount's own argument; any torch tensor viewing the array adds one more
        return sys.getrefcount(arr) <= 4

    def alloc(self, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
        tdt = TORCH_DTYPES[dtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=tdt).element_size()
        if nbytes < POOL_MIN_BYTES:
            return torch.empty(shape, dtype=tdt)
        arr = None
        for a in self.arrays:
            if a.nbytes == nbytes and self._free(a):
                arr = a
                break
        if arr is None:
            self._trim()
            arr = np.empty(nbytes, dtype=np.uint8)  # numpy madvises huge pages for large arrays
            self.arrays.append(arr)
        return torch.from_numpy(arr).view(tdt).view(shape)

    def _trim(self) -> None:
        free = [a for a in self.arrays if self._free(a)]
        total = sum(a.nbytes for a in free)
        for a in free:
            if total <= POOL_MAX_FREE_BYTES:
                break
            self.arrays.remove(a)
            total -= a.nbytes


pool = BufferPool()


# -- compiled schedules ------------------------------------------------------------------------
@dataclass
class Launch:
    kernel: Kernel
    fn: object
    slots: tuple[int, ...]
    source: str


@dataclass
class Program:
    launches: list[Launch]
    n_inputs: int
    allocs: list
    outputs: list[int]
    decisions: list[str]


_programs: dict = {}
cache_stats = {"schedule_hits": 0, "schedule_misses": 0}


def _backend() -> str:
    b = os.environ.get("LAZY_BACKEND", "c") or "c"
    if b not in ("c", "interp"):  # interp is dispatched by the Tensor layer and never reaches here
        raise ValueError(f"LAZY_BACKEND={b!r}: expected one of 'c', 'interp'")
    return b


def _build(nodes: list[Node], buffers: list[Buffer]) -> Program:
    sched = schedule(nodes, buffers)
    launches = []
    level = debug_level()
    for k in sched.kernels:
        src = render_c.render_c(k)
        if level >= 3:
            _log(f"--- {k.name} ({k.key()}) ---\n{src}")
        fn = compile_c.load(src)
        fn.argtypes = [ctypes.c_void_p] * len(k.buffers)
        launches.append(Launch(k, fn, k.meta["slots"], src))
    if level >= 2:
        _log(f"schedule: {len(sched.kernels)} kernel(s)")
        for d in sched.decisions:
            _log(f"  {d}")
    return Program(launches, sched.n_inputs, sched.allocs, sched.outputs, sched.decisions)


def program_for(nodes: list[Node]) -> tuple[Program, list[Buffer], bool]:
    key, buffers = structure_key(nodes)
    prog = _programs.get(key)
    fresh = prog is None
    if fresh:
        cache_stats["schedule_misses"] += 1
        misses = compile_c.stats.misses
        prog = _build(nodes, buffers)
        prog.compiled = compile_c.stats.misses > misses
        _programs[key] = prog
    else:
        cache_stats["schedule_hits"] += 1
    return prog, buffers, fresh


def realize_nodes(nodes: list[Node]) -> list[Buffer]:
    """Compute `nodes` (one schedule for all of them) and return their buffers."""
    level = debug_level()
    if level >= 4:
        for n in toposort(nodes):
            _log(f"  {id(n):x} {n} <- {[f'{id(s):x}' for s in n.srcs]}")
    t0 = time.perf_counter()
    prog, buffers, fresh = program_for(nodes)
    slots: list = [b.data for b in buffers]
    slots += [pool.alloc(shape, dt) for shape, dt in prog.allocs]
    recs = []
    for ln in prog.launches:
        args = [slots[s].data_ptr() for s in ln.slots]
        t = time.perf_counter()
        ln.fn(*args)
        dt = time.perf_counter() - t
        m = ln.kernel.meta
        recs.append(KernelRecord(ln.kernel.name, "c", "cpu", dt, m["bytes_read"], m["bytes_written"],
                                 fresh and getattr(prog, "compiled", False)))
    for p in _profiles:
        p.kernels.extend(recs)
        p.realizes += 1
    if level >= 1:
        total = time.perf_counter() - t0
        _log(f"realize: {len(recs)} kernel(s), {total * 1e3:.3f} ms"
             + ("" if not fresh else " (scheduled and compiled)"))
        for r in recs:
            _log(f"  {r.name:<24} {r.seconds * 1e3:9.3f} ms {r.gbps:8.2f} GB/s")
    out = []
    for n, s in zip(nodes, prog.outputs):
        if s < prog.n_inputs:
            out.append(buffers[s])
        else:
            out.append(Buffer(slots[s]))
    return out
