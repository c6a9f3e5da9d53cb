"""Realization: graph nodes -> buffers, through scheduler and codegen.

In:  nodes to compute. Out: one `Buffer` per node, holding a torch tensor of the node's shape.

Invariants
- The schedule and the compiled kernels are cached by `graph.structure_key`, so a program
  that builds the same graph again (a training loop, a second run of a script) does no
  scheduling, no sympy and no compiling: it allocates and launches. A program built is also kept
  on disk (lazy/program_cache.py): a new process that meets the same structure loads its schedule
  and kernel sources and dlopens the kernels, scheduling and rendering nothing. The cache keeps the
  MAX_PROGRAMS used last; an evicted program's kernels stay loaded while anything (a lazy.jit
  plan) still holds it, and are unloaded after (codegen/compile_c.py).
- Large buffers come from a pool of huge-page-backed numpy allocations, reused once no tensor
  refers to them any more: fresh 4 KiB pages cost more than the kernels that fill them.
- Kernels compile with their tuned config when the tuning database has one for this device
  (codegen/tune.py: one lookup per distinct kernel per process); while a tuning session is on
  (lazy/tuning.py) each new kernel is tuned on its real buffers just before its first launch.
- Debug output only under LAZY_DEBUG (1: kernels and times, 2: fusion decisions, 3: generated
  source, 4: the graph); `lazy.debug(level)` sets it for one block.
- Packed roots (`realize_nodes(packs=...)`, data-parallel gradient buckets): the roots of a pack
  are stored back to back in one flat allocation by the kernels that compute them (no copy kernel),
  and `on_ready(i, flat)` runs right after the last launch that touches flat i, while the
  remaining launches run: a collective started there overlaps them.
- Memory a collective is writing or reading (`_in_flight`, lazy/distributed.py) is waited for
  before a program reads it (`settle`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import math
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from codegen import compile_c, extern, gemm_c_runtime, tune
from codegen.kernel_ir import ExternCall, Kernel, epilogue_in_place, size_fn
from lazy import dynamic, packing, program_cache, reasons
from lazy.graph import Buffer, Node, structure_key, toposort

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
        nbytes = math.prod(shape) * tdt.itemsize  # (a training step allocates ~200 buffers: keep this cheap)
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


# -- capture (lazy.jit) -------------------------------------------------------------------------
_recorders: list = []  # active captures (lazy.jit.Capture): each sees every realize and host effect


_watched: dict = {}  # id(Buffer) -> [weakref to a lazy.jit plan that reads it as a long-lived input]
module_epoch = 0  # bumped when a Module's mode or Parameters change: lazy.jit plans check their guards then
_watched_nodes: dict = {}  # id(Node) -> [(weakref to the Node, weakref to a plan whose graphs hold it)]


def record_host_effect(fn) -> None:
    """Tell an active capture about host state that a step changes outside the graph (an
    optimizer's step count and learning-rate numbers): a replay calls `fn` before its kernels.
    The caller has already done the work for this call."""
    for r in _recorders:
        r.host_effect(fn)


def record_draw(buf: Buffer, redraw, key: tuple) -> None:
    """Tell an active capture that a random draw made `buf` on the host: a replay calls `redraw()`
    (the same sampler on the same generator, so the stream advances as the call would advance it)
    for a new buffer in its place. `key` (op, shape, dtype) says which draw it is."""
    for r in _recorders:
        r.drawn(buf, redraw, key)


def record_host_read(what: str) -> None:
    """Tell an active capture that a value went to the host (`.item()`, `bool`, `.numpy()`): what
    the step does next may depend on it, which a replay cannot see."""
    for r in _recorders:
        r.host_read(what)


def node_left(n: Node) -> None:
    """A tensor whose pending value was `n` was written in place: plans that computed `n` from its
    graph (a lazy tensor captured by a jitted function) are stale."""
    for ref, pref in _watched_nodes.get(id(n), ()):
        plan = pref()
        if plan is not None and ref() is n:
            plan.suspect(None, None)


def buffer_left(owner, buf: Buffer) -> None:
    """`owner` (a Tensor) no longer holds `buf` as its value (an in-place write, `fill_`,
    `load_state_dict`): the plans that read `buf` check `owner` before their next replay."""
    for ref in _watched.get(id(buf), ()):
        plan = ref()
        if plan is not None:
            plan.suspect(owner, buf)


# -- compiled schedules ------------------------------------------------------------------------
@dataclass
class Launch:
    kernel: Kernel | ExternCall
    fn: object
    slots: tuple[int, ...]
    source: str  # C source, or the path of the generated Triton module
    backend: str
    config: object = None  # the tuned config it was built with (None: the backend's heuristics)
    scalars: tuple[int, ...] = ()  # the program's scalar slots its kernel takes as arguments, in order
    sized: bool = False  # it takes the program's size symbols (lazy/dynamic.py) after its scalars

    def __call__(self, slots: list, scalars: list = (), sizes: tuple = ()) -> None:
        sz = sizes if self.sized else ()
        if self.backend == "extern":
            extern.run(self.kernel, [slots[s] for s in self.slots], sz)
        elif self.backend == "c":
            self.fn(*[slots[s].data_ptr() for s in self.slots], *[scalars[i] for i in self.scalars], *sz)
        else:
            self.fn(*[slots[s] for s in self.slots], *[scalars[i] for i in self.scalars], *sz)


@dataclass
class Program:
    launches: list[Launch]
    n_inputs: int
    allocs: list
    outputs: list[int]
    decisions: list[str]
    compiled: bool = False
    written: tuple[int, ...] = ()  # input slots its kernels overwrite in place
    sizes: tuple[str, ...] = ()  # its size symbols (lazy/dynamic.py); then `allocs` shapes may use them
    alloc_fn: object = None  # sizes -> the flat shapes of `allocs` (a program with sizes)
    # packed roots (lazy/packing.py): slots n_inputs + len(allocs) + i are the flats, then the copies' views
    flats: tuple = ()  # (numel, dtype name) per pack
    placed: tuple = ()  # per alloc: None, or (flat, offset) when the allocation is a view of a flat
    copies: tuple = ()  # (source slot, flat, offset, shape): packed roots copied into place
    events: tuple = ()  # per position 0..len(launches) (before launch i): (copies to make, flats complete)
    from_disk: bool = False  # loaded from the program cache (lazy/program_cache.py), not scheduled here

    def alloc_shapes(self, sizes: tuple) -> list[tuple[int, ...]]:
        if not self.sizes:
            return [shape for shape, _ in self.allocs]
        flat, out, i = self.alloc_fn(*sizes), [], 0
        for shape, _ in self.allocs:
            out.append(tuple(flat[i:i + len(shape)]))
            i += len(shape)
        return out


# Programs kept, the one used last at the end. A loop reuses a handful of graphs (a training
# step of examples/train_gpt.py is one program), so 512 holds any loop's set with room to spare;
# a caller that builds a new graph per call (a Python scalar that changes: a new kernel each time)
# levels off at 512 programs and their kernel libraries (~5 memory mappings each, of the 65,530
# Linux allows) instead of growing until mmap fails. An evicted program built again costs its
# schedule and a dlopen from the disk cache, not a compile.
MAX_PROGRAMS = 512
_programs: OrderedDict = OrderedDict()
cache_stats = {"schedule_hits": 0, "schedule_misses": 0, "schedule_evictions": 0}
kernel_listeners: list = []  # callables(Kernel, backend): `lazy kernels` collects kernels this way
tuner = None  # set by lazy/tuning.py while tuning: callable(Launch, slots, scalars) -> the Launch to run
BACKENDS = ("c", "triton", "interp")


def backend_for(device: str) -> str:
    """LAZY_BACKEND when set, else Triton for CUDA buffers and C for CPU buffers."""
    b = os.environ.get("LAZY_BACKEND", "")
    if b and b not in BACKENDS:
        raise ValueError(f"LAZY_BACKEND={b!r}: expected one of {', '.join(BACKENDS)}")
    if b in ("c", "triton"):
        if b == "c" and device != "cpu":
            raise RuntimeError(f"LAZY_BACKEND=c runs on CPU buffers only, got buffers on {device}")
        return b
    return "triton" if device.startswith("cuda") else "c"


def _compile(k: Kernel | ExternCall, backend: str) -> list[Launch]:
    """The launches that run `k`: one, or for a GEMM whose epilogue the backend cannot fuse into
    it, the GEMM into the output buffer and then the epilogue over it in place."""
    level = debug_level()
    if os.environ.get("LAZY_VERIFY", "") not in ("", "0"):  # the tests check every kernel they build
        from codegen.legalize import verify

        epilogue = k.epilogue if isinstance(k, ExternCall) else k
        if epilogue is not None:
            verify(epilogue)
    cfg = tune.tuned_config(k, backend)
    if isinstance(k, ExternCall):
        if level >= 3:
            _log(f"--- {k.name}: extern {k.op} {[(v.shape, v.strides, v.offset) for v in k.views]} ---")
        if k.op != "matmul":  # a library call (codegen/extern.py OPS): torch's kernel on either device
            return [Launch(k, None, k.meta["slots"], "", "extern", sized=bool(k.sizes))]
        from codegen import gemm_c, gemm_triton

        # GEMMs over sizes that change run on BLAS (its calls take any size): the templates size
        # their blocks at compile time
        impl = gemm_c.choose_impl(k) if backend == "c" and not k.sizes else None
        if level >= 2 and impl is not None:
            _log(f"  {k.name}: " + ("C GEMM template, epilogue fused" if impl == "c" else "BLAS")
                 + f" (LAZY_GEMM={os.environ.get('LAZY_GEMM') or 'auto'}; rule: codegen/gemm_c.choose_impl)")
        if impl == "c":  # the C GEMM, epilogue fused: one launch
            fn = gemm_c.load(k, cfg)
            if level >= 3:
                _log(f"--- {k.name} C GEMM ({k.key()}) ---\n{fn.source}")
            return [Launch(k, fn, k.meta["slots"] + (() if k.epilogue is None else gemm_triton.epilogue_slots(k)),
                           fn.source, "c", cfg, _scalar_slots(k))]
        if backend != "triton" or k.sizes or not gemm_triton.supports(k):  # C, int, symbolic GEMMs: BLAS
            if k.epilogue is None:
                return [Launch(k, None, k.meta["slots"], "", "extern", sized=bool(k.sizes))]
            return _compile(k.without_epilogue(), backend) + _compile(epilogue_in_place(k), backend)
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        gemm = gemm_triton.load(k, cfg)
        if level >= 3:
            _log(f"--- {k.name} Triton GEMM {gemm.config} {gemm.path} ---\n{Path(gemm.path).read_text()}")

        class TritonGemmLaunch(Launch):
            # still reported as backend "extern" (an ExternCall: profiles count GEMMs that way),
            # but runs the Triton template (codegen/gemm_triton.py) instead of codegen/extern.py
            def __call__(self, slots: list, scalars: list = (), sizes: tuple = ()) -> None:
                self.fn(*[slots[s] for s in self.slots], *[scalars[i] for i in self.scalars])

        slots = k.meta["slots"] + (() if k.epilogue is None else gemm_triton.epilogue_slots(k))
        return [TritonGemmLaunch(k, gemm, slots, str(gemm.path), "extern", cfg, _scalar_slots(k))]
    if backend == "c":
        from codegen import render_c

        src = render_c.render_c(k, config=cfg)
        if level >= 3:
            _log(f"--- {k.name} ({k.key()}) ---\n{src}")
        return [Launch(k, _c_kernel(k, src), k.meta["slots"], src, "c", cfg, _scalar_slots(k), bool(k.sizes))]
    from codegen import compile_triton

    if not torch.cuda.is_available():
        # Triton on CPU tensors runs under its interpreter (numerics only: how the tests use it)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    fn = compile_triton.load(k, cfg)
    if level >= 3:
        _log(f"--- {k.name} ({k.key()}) {fn.path} ---\n{Path(fn.path).read_text()}")
    return [Launch(k, fn, k.meta["slots"], str(fn.path), "triton", cfg, _scalar_slots(k), bool(k.sizes))]


def _c_kernel(k: Kernel, src: str):
    """The compiled function of `k`'s C source `src`, taking buffer pointers, scalars, sizes."""
    fn = compile_c.load(src)
    fn.argtypes = ([ctypes.c_void_p] * len(k.buffers) + compile_c.scalar_argtypes(k.scalars)
                   + [ctypes.c_int64] * len(k.sizes))
    return fn


def _scalar_slots(k: Kernel | ExternCall) -> tuple[int, ...]:
    """The program scalar slots a kernel (or a GEMM's fused epilogue) takes, in argument order."""
    if isinstance(k, ExternCall):
        k = k.epilogue
    return () if k is None else k.meta.get("scalar_slots", ())


def _c_sources(k: Kernel | ExternCall, backend: str) -> list[str]:
    """The C sources `_compile` will load for `k` (none for Triton and BLAS launches)."""
    if backend != "c":
        return []
    cfg = tune.tuned_config(k, backend)
    if isinstance(k, Kernel):
        from codegen import render_c

        return [render_c.render_c(k, config=cfg)]
    from codegen import gemm_c

    if k.op != "matmul":
        return []
    if not k.sizes and gemm_c.choose_impl(k) == "c":
        return [gemm_c.render_gemm_c(k, cfg)]
    return [] if k.epilogue is None else _c_sources(epilogue_in_place(k), backend)


def _schedule():
    """scheduler.schedule.schedule, imported when a program is built: the scheduler (and sympy, which
    it computes indices with) loads only in a process that schedules something, not at `import lazy`
    nor in one whose programs all come from the program cache. Looked up here, not bound at import:
    `import scheduler` imports lazy (the graph IR lives in it) before the scheduler's own modules
    exist, and once they do, scheduler/__init__ binds the name `schedule` to the function over its
    submodule."""
    if "scheduler.schedule" not in sys.modules:
        _import_paused("scheduler.schedule")
    from scheduler.schedule import schedule

    return schedule


def _import_paused(name: str) -> None:
    """Import module `name` with the garbage collector paused, as `import lazy` imports torch: the
    scheduler's first import makes sympy's tens of thousands of objects and no garbage, and with a
    program's own 200,000 objects alive, the collections it set off took 0.05-0.1 s of its 0.35 s.
    LAZY_GC_FREEZE=0 leaves the collector alone here too."""
    enabled = gc.isenabled()
    if os.environ.get("LAZY_GC_FREEZE", "1") != "0":
        gc.disable()
    try:
        importlib.import_module(name)
    finally:
        if enabled:
            gc.enable()


def _build(nodes: list[Node], buffers: list[Buffer], backend: str, into=None, scalars=(),
           template: dynamic.Template | None = None, ints: list[int] | None = None,
           full_key: tuple | None = None) -> Program:
    """The program of a graph; with `template`, for every size it gives (lazy/dynamic.py). With
    `full_key` (`program_for`'s), from the program cache on disk when it holds the program
    (lazy/program_cache.py), else built and stored there."""
    name = None if full_key is None else program_cache.digest(full_key, backend, template, ints)
    if name is not None:
        rec = program_cache.load(name)
        if rec is not None:
            try:
                return _from_record(rec, backend)
            except Exception as e:  # noqa: BLE001 (a record this code cannot use: built again, and replaced)
                if debug_level() >= 1:
                    _log(f"lazy: program record {name} not used ({type(e).__name__}: {e})")
    schedule, sized = _schedule(), ()
    if template is not None:
        from lazy import symbolic

        ph_nodes, ph_buffers, ph_scalars = symbolic.placeholder_graph(nodes, buffers, template, ints)
        sched = schedule(ph_nodes, ph_buffers, into, scalars=ph_scalars)
        n, hints = len(template.symbols), template.bind(ints)
        sched.kernels = [symbolic.symbolic_kernel(k, n, hints) for k in sched.kernels]  # NotSymbolic: caller
        sched.allocs = [(symbolic.decode_shape(shape, n), dt) for shape, dt in sched.allocs]
        sized = tuple(f"d{i}" for i in range(n))
    else:
        sched = schedule(nodes, buffers, into, scalars=scalars)
    misses = compile_c.stats.misses
    # a new schedule's kernels compile concurrently (one compiler process per core), then load
    # one by one from the disk cache: a cold training step waits for its slowest kernel, not the sum
    compile_c.build_all([src for k in sched.kernels for src in _c_sources(k, backend)])
    launches, kept = [], []
    for k in sched.kernels:
        made = _compile(k, backend)
        launches += made
        kept.append((k, _storable(made)))
    _log_schedule(sched.kernels, sched.decisions, backend)
    prog = _program(launches, sched.n_inputs, sched.allocs, sched.outputs, sched.decisions,
                    compile_c.stats.misses > misses or backend == "triton", sched.written, sized)
    if name is not None:
        program_cache.store(name, {"kernels": kept, "n_inputs": sched.n_inputs, "allocs": sched.allocs,
                                   "outputs": sched.outputs, "decisions": sched.decisions,
                                   "written": sched.written, "sizes": sized})
    return prog


def _program(launches, n_inputs, allocs, outputs, decisions, compiled, written, sized) -> Program:
    alloc_fn = size_fn([s for shape, _ in allocs for s in shape], sized) if sized else None
    return Program(launches, n_inputs, allocs, outputs, decisions, compiled, written, sized, alloc_fn)


def _log_schedule(kernels: list, decisions: list[str], backend: str) -> None:
    if debug_level() >= 2:
        _log(f"schedule: {len(kernels)} kernel(s) [{backend}]")
        for d in decisions:
            _log(f"  {d}")


def _storable(launches: list[Launch]) -> list[Launch] | None:
    """`launches` without their functions, for the program cache: each can be loaded again from its
    source alone (C kernels, C GEMMs, library calls); None when one cannot (Triton: built again)."""
    out = []
    for ln in launches:
        if type(ln) is not Launch or ln.backend not in ("c", "extern") or (ln.backend == "extern" and ln.fn is not None):
            return None
        out.append(replace(ln, fn=None))
    return out


def _from_record(rec: dict, backend: str) -> Program:
    """The program a record of the program cache describes (`_build` stored it): its kernels loaded
    by their sources, nothing scheduled or rendered (a source whose object left the disk cache is
    compiled again). A fixed-size program loads without sympy: its kernels' stages, the index
    expressions, stay pickled until something reads them (codegen/kernel_ir.py `deferred_stages`)."""
    misses = compile_c.stats.misses
    level = debug_level()
    launches = []
    for k, stored in rec["kernels"]:
        if stored is None:
            launches += _compile(k, backend)
            continue
        for ln in stored:
            if ln.backend == "c":
                fn = _c_kernel(ln.kernel, ln.source) if isinstance(ln.kernel, Kernel) else \
                    gemm_c_runtime.from_source(ln.kernel, ln.source)
                ln = replace(ln, fn=fn)
                if level >= 3:
                    _log(f"--- {ln.kernel.name} ({ln.kernel.key()}), from the program cache ---\n{ln.source}")
            launches.append(ln)
    _log_schedule([k for k, _ in rec["kernels"]], rec["decisions"], backend)
    prog = _program(launches, rec["n_inputs"], rec["allocs"], rec["outputs"], rec["decisions"],
                    compile_c.stats.misses > misses or backend == "triton", rec["written"], rec["sizes"])
    prog.from_disk = True
    return prog


def _device_of(buffers: list[Buffer], device: str | None) -> str:
    devices = {b.layout[2] for b in buffers}
    if device is not None:
        devices.add(str(device))
    if len(devices) > 1:
        raise RuntimeError(f"realize: buffers live on several devices ({', '.join(sorted(devices))}); "
                           "move them to one device with .to(device) first")
    return devices.pop() if devices else "cpu"


@dataclass
class Family:
    """Programs that differ only in their sizes (lazy/dynamic.py): the sizes seen, and the
    programs built for all sizes their templates give."""

    loose: tuple = ()  # its key with constants' values erased (`dynamic.loose`)
    instances: list = field(default_factory=list)
    programs: list = field(default_factory=list)  # (Template, Program)
    failed: str | None = None  # why the last generalization was not built
    failed_template: object = None  # (not tried again)


MAX_INSTANCES = 4  # size vectors a family keeps to fit a template from
_families: OrderedDict = OrderedDict()
# full key -> (the size values its program (one with size symbols) runs with, how the program takes
# the key's constants: None for its own scalars, else `dynamic.argument_plan`'s)
_bound: dict = {}
DYNAMIC = os.environ.get("LAZY_DYNAMIC", "1") != "0"


def program_for(nodes: list[Node], device: str | None = None, into: list[Buffer | None] | None = None,
                packs: tuple | None = None) -> tuple[Program, list[Buffer], list, tuple, bool, str]:
    """(the program of `nodes`' structure, its input buffers, the CONST nodes of its scalar arguments,
    the values of its size symbols, whether it was built now, the device)."""
    key, buffers, scalar_nodes = structure_key(nodes)
    dev = _device_of(buffers, device)
    backend = backend_for(dev)
    slots = None
    if into is not None:
        where = {id(b): i for i, b in enumerate(buffers)}
        slots = tuple(None if b is None else where.get(id(b)) for b in into)
    packs = tuple(tuple(p) for p in packs) if packs else None
    # LAZY_GEMM changes which GEMM runs
    full_key = (key, backend, dev, slots, os.environ.get("LAZY_GEMM", ""), *((packs,) if packs else ()))
    prog = _programs.get(full_key)
    if prog is not None:
        with contextlib.suppress(KeyError):  # (another thread may have evicted it meanwhile)
            _programs.move_to_end(full_key)
        cache_stats["schedule_hits"] += 1
        bound = _bound.get(full_key)
        if bound is None:
            return prog, buffers, scalar_nodes, (), False, dev
        return prog, buffers, _arguments(scalar_nodes, bound[1]), bound[0], False, dev
    cache_stats["schedule_misses"] += 1
    if packs:  # sizes stay fixed: a pack's layout is made of them
        if debug_level() >= 1:
            _log(f"lazy: new program ({reasons.note(full_key)}), {len(packs)} pack(s)")
        prog = packing.pack(_build(nodes, buffers, backend, slots, scalar_nodes, full_key=full_key), nodes, packs)
        _programs[full_key] = prog
        while len(_programs) > MAX_PROGRAMS:
            old, _ = _programs.popitem(last=False)
            _bound.pop(old, None)
            cache_stats["schedule_evictions"] += 1
        return prog, buffers, scalar_nodes, (), True, dev
    fam_key, ints, leaf = dynamic.sizes_of(full_key)
    fam = _families.get(fam_key)
    if fam is None:
        fam = _families[fam_key] = Family(dynamic.loose(fam_key))
        while len(_families) > MAX_PROGRAMS:
            _families.popitem(last=False)
    else:
        _families.move_to_end(fam_key)
    sizes, fresh, plan = (), True, None
    for template, sym_prog in fam.programs:
        syms = template.bind(ints)
        if syms is not None:
            prog, sizes, fresh = sym_prog, tuple(syms), False
            break
    if prog is None:
        prog, sizes, plan = _program_of_kin(nodes, fam_key, fam, ints)
        fresh = prog is None
    if prog is None:
        prog, sizes = _new_program(nodes, buffers, backend, slots, scalar_nodes, full_key, fam_key, fam, ints, leaf)
    _programs[full_key] = prog
    if sizes:
        _bound[full_key] = (sizes, plan)
        scalar_nodes = _arguments(scalar_nodes, plan)
    while len(_programs) > MAX_PROGRAMS:
        old, _ = _programs.popitem(last=False)
        _bound.pop(old, None)
        cache_stats["schedule_evictions"] += 1
    return prog, buffers, scalar_nodes, sizes, fresh, dev


def _kin(fam_key: tuple, fam: Family, program: bool):
    """The other families of the same graph whose constants differ in being literals or kernel
    arguments (`dynamic.loose`), each with its key: with `program`, those whose programs can run
    this family's graphs (they take as arguments the constants it has as literals); else those
    whose graphs this family's programs can run."""
    for key, other in list(_families.items()):
        if other is not fam and other.loose == fam.loose and \
                (dynamic.argument_plan(fam_key, key) if program else dynamic.argument_plan(key, fam_key)) is not None:
            yield key, other


def _program_of_kin(nodes, fam_key: tuple, fam: Family, ints: list[int]) -> tuple:
    """(a program for all sizes of a kin family (`_kin`) that runs these sizes, the values of its
    size symbols, how it takes this graph's constants), or (None, (), None). A literal that follows
    a size (a mean over 2 elements divides by 2.0) then runs the program built for the other sizes;
    at sizes the kin family was seen with, a literal is a number that changed, not a size, and gets
    a program of its own (its literal in the source), as before."""
    for key, other in _kin(fam_key, fam, program=True):
        if ints in other.instances:  # a number the caller changed at sizes seen: a program with its literal
            continue
        for template, prog in other.programs:
            syms = template.bind(ints)
            if syms is not None:
                return prog, tuple(syms), dynamic.argument_plan(fam_key, key, dynamic.nodes_in_key_order(nodes))
    return None, (), None


def _arguments(scalars: list, plan: list | None) -> list:
    """The scalar arguments of a program that takes a graph's constants by `plan` (None: its own):
    CONST nodes of the graph, or the values of its literals the program takes as arguments."""
    if plan is None:
        return scalars
    return [scalars[x] if kind == "slot" else x for kind, x in plan]


def _new_program(nodes, buffers, backend, slots, scalar_nodes, full_key, fam_key: tuple, fam: Family,
                 ints: list[int], leaf: list[bool]) -> tuple[Program, tuple]:
    """Build the program of a key no program matches: for all sizes when the family has been seen
    with other sizes and a template fits them (lazy/dynamic.py), else for these sizes."""
    level = debug_level()
    why = reasons.note(full_key) if level >= 1 else None
    misses = compile_c.stats.misses
    if ints not in fam.instances:
        fam.instances = (fam.instances + [ints])[-MAX_INSTANCES:]
    # the sizes its kin were seen with count too: a program of this family runs their graphs
    # (`_program_of_kin`), so a mean seen over 2 elements (a literal 2.0), then over 3, fits here
    seen = [i for _, other in _kin(fam_key, fam, program=False) for i in other.instances if i not in fam.instances]
    instances = (seen + fam.instances)[-MAX_INSTANCES:]
    template = dynamic.fit(instances, leaf) if DYNAMIC and len(instances) >= 2 else None
    if template is None and DYNAMIC and any(b.dynamic for b in buffers):  # dims marked dynamic: at once
        template = dynamic.guess(ints, leaf, dynamic.marked_positions(full_key, buffers))
    prog, sizes = None, ()
    if template is not None and template != fam.failed_template:
        try:
            prog = _build(nodes, buffers, backend, slots, scalar_nodes, template, ints, full_key)
            sizes = tuple(template.bind(ints))
            fam.programs.append((template, prog))
            why = f"{why}; sizes {', '.join(f'd{i}={v}' for i, v in enumerate(sizes))} are arguments from now on" \
                if why else why
        except Exception as e:  # noqa: BLE001 (a program for these sizes alone is always right)
            fam.failed, fam.failed_template = f"{type(e).__name__}: {e}", template
            if level >= 1:
                _log(f"lazy: sizes stay fixed for this program ({fam.failed})")
    if prog is None:
        prog = _build(nodes, buffers, backend, slots, scalar_nodes, full_key=full_key)
    if level >= 1:
        built = compile_c.stats.misses - misses
        _log(f"lazy: new program ({why}): {len(prog.launches)} launch(es), "
             + (f"{built} kernel(s) compiled" if backend == "c" else f"{backend} kernels")
             + (", from the program cache on disk" if prog.from_disk else ""))
    return prog, sizes


def _alloc(shape, dtype: str, device: str):
    if device == "cpu":
        return pool.alloc(shape, dtype)
    return torch.empty(shape, dtype=TORCH_DTYPES[dtype], device=device)


def realize_nodes(nodes: list[Node], device: str | None = None,
                  into: list[Buffer | None] | None = None, packs: tuple | None = None,
                  on_ready=None) -> list[Buffer]:
    """Compute `nodes` (one schedule for all of them) and return their buffers.

    `device` is where results go when no input buffer says so (e.g. `lazy.zeros(3)`).
    `into[i]`: an input buffer node i may overwrite in place (when no other read sees the old
    value; the scheduler decides): then buffer `into[i]` itself is returned for node i.
    `packs`: tuples of node indices (one dtype each) stored back to back in one flat buffer per
    pack; the result then continues with the flats, then every packed node's view of its flat in
    pack order. `on_ready(i, flat)` is called once flat i is complete (lazy/packing.py), then
    `on_ready(-1, None)` after the last launch.
    """
    level = debug_level()
    if level >= 4:
        for n in toposort(nodes):
            _log(f"  {id(n):x} {n} <- {[f'{id(s):x}' for s in n.srcs]}")
    t0 = time.perf_counter()
    prog, buffers, scalar_nodes, sizes, fresh, dev = program_for(nodes, device, into, packs)
    outs = run_program(prog, buffers, dev, fresh, t0, level,
                       [c.arg if isinstance(c, Node) else c for c in scalar_nodes], sizes, on_ready)
    for r in _recorders:
        r.realized(prog, buffers, outs, dev, nodes, scalar_nodes, sizes, on_ready)
    return outs


def run_program(prog: Program, buffers: list[Buffer], dev: str, fresh: bool = False,
                t0: float | None = None, level: int | None = None, scalars: list = (),
                sizes: tuple = (), on_ready=None) -> list[Buffer]:
    """Launch a program's kernels over `buffers` (its inputs, in structure-key order), fresh
    allocations, `scalars` (the values of its scalar slots) and `sizes` (of its size symbols); the
    buffers of its outputs. `on_ready`: see `realize_nodes`."""
    if _in_flight:  # a collective still writes (or reads) memory this program reads
        settle(buffers)
    level = debug_level() if level is None else level
    t0 = time.perf_counter() if t0 is None else t0
    for listener in kernel_listeners:  # every launch, cached or not (`lazy kernels` collects them)
        for ln in prog.launches:
            listener(ln.kernel, ln.backend)
    slots: list = [b.data for b in buffers]
    if prog.flats:
        slots += packing.allocations(prog, lambda shape, dt: _alloc(shape, dt, dev))
    else:
        slots += [_alloc(shape, dt, dev) for shape, (_, dt) in zip(prog.alloc_shapes(sizes), prog.allocs)]
    timed = bool(_profiles) or level >= 1
    events = prog.events
    if events:
        packing.at(prog, events[0], slots, on_ready)
    if not timed and tuner is None:  # the common case (and every lazy.jit replay): launches only
        if events:
            for i, ln in enumerate(prog.launches):
                ln(slots, scalars, sizes)
                if events[i + 1]:
                    packing.at(prog, events[i + 1], slots, on_ready)
            if on_ready is not None:
                on_ready(-1, None)
        else:
            for ln in prog.launches:
                ln(slots, scalars, sizes)
        return _results(prog, buffers, slots)
    sync = torch.cuda.synchronize if dev.startswith("cuda") and timed else (lambda: None)
    recs = []
    for i, ln in enumerate(prog.launches):
        if tuner is not None:  # tune on the real buffers (inputs of this launch are ready now)
            ln = prog.launches[i] = tuner(ln, slots, scalars) if not prog.sizes else ln
        sync()
        t = time.perf_counter()
        ln(slots, scalars, sizes)
        sync()
        dt = time.perf_counter() - t
        if events and events[i + 1]:
            packing.at(prog, events[i + 1], slots, on_ready)
        m = ln.kernel.meta
        moved = (m["bytes_read"], m["bytes_written"])
        if prog.sizes:
            moved = size_fn(moved, prog.sizes)(*sizes)
        recs.append(KernelRecord(ln.kernel.name, ln.backend, dev, dt, *moved,
                                 fresh and prog.compiled))
    if events and on_ready is not None:
        on_ready(-1, None)
    for p in _profiles:
        p.kernels.extend(recs)
        p.realizes += 1
    if level >= 1:
        total = time.perf_counter() - t0
        _log(f"realize: {len(recs)} kernel(s), {total * 1e3:.3f} ms"
             + ("" if not fresh else " (scheduled and compiled)"))
        for r in recs:
            _log(f"  {r.name:<24} {r.seconds * 1e3:9.3f} ms {r.gbps:8.2f} GB/s")
    return _results(prog, buffers, slots)


def _results(prog: Program, buffers: list[Buffer], slots: list) -> list[Buffer]:
    """The output buffers of a run: inputs written in place move to their next version (BUFFER nodes
    made before the run read the old one), fresh allocations become buffers lazy owns (one per slot:
    a packed root is an output twice, as a root and as a member of its pack)."""
    for s in prog.written:
        buffers[s].version += 1
    if not prog.flats:
        return [buffers[s] if s < prog.n_inputs else Buffer(slots[s], owned=True) for s in prog.outputs]
    made: dict[int, Buffer] = {}
    out = []
    for s in prog.outputs:
        if s < prog.n_inputs:
            out.append(buffers[s])
            continue
        b = made.get(s)
        if b is None:
            b = made[s] = Buffer(slots[s], owned=True)
        out.append(b)
    return out


# -- collectives in flight (lazy/distributed.py) ----------------------------------------------------
_in_flight: dict = {}  # storage key -> a lazy.distributed.Work that writes or reads that memory


def storage_key(t: torch.Tensor) -> tuple:
    return (str(t.device), t.untyped_storage().data_ptr())


def settle(buffers: list[Buffer]) -> None:
    """Wait for the collectives in flight on `buffers`' memory (a kernel or the host reads it next)."""
    for b in buffers:
        w = _in_flight.get(storage_key(b.data))
        if w is not None:
            w.wait()


def record_collective(key: tuple, fn, buffers: list[Buffer]) -> None:
    """Tell an active capture about a collective the step ran between its realizations (lazy.jit
    replays `fn(buffers)` at the same place, over the replay's buffers)."""
    for r in _recorders:
        r.collective(key, fn, buffers)


def record_unreplayable(why: str) -> None:
    """Tell an active capture that the step did something a replay cannot redo."""
    for r in _recorders:
        r.unreplayable(why)
