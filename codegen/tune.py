"""Kernel autotuning: search a backend's config space for one kernel, verify, time, store the winner.

In:  a kernel (`Kernel`, or a GEMM `ExternCall` on the Triton backend or, when it runs the C GEMM
     template, on the C backend), the backend, and the
     torch tensors it runs on (its real buffers: they hold the same values afterwards).
Out: a `TuneResult` (default and best config, their times, what was tried and rejected), stored
     in the tuning database (codegen/tunedb.py); `tuned_config(kernel, backend)` gives the stored
     winner to the runtime when it compiles the kernel.

Configs are checked wherever they come in (codegen/knobs.py: each knob's type and range is
declared beside its config class): `tuned_config` refuses a stored row whose config or
default_config is not what the tuner writes, or that the kernel cannot be built with
(`check_fit`), warns once and gives None, so the kernel runs with its default config; the search
skips points outside the specs before building anything.

Search spaces are declared beside each backend: `render_c.search_space` (threads, parallel
threshold, tile, simdlen, unroll, chunk, loop order, reduction split, row functions, transposed
tiles and their extents),
`render_triton.search_space` (XBLOCK, RBLOCK, num_warps, num_stages; transposed tiles and their
YBLOCK), `gemm_triton.search_space`
(BLOCK_M/N/K, GROUP_M, num_warps, num_stages), `gemm_c.search_space` (MC/KC/NC blocking, MR x NV
micro-tile). Each knob's values are ordered where they have one.

Strategy (`coordinate_descent`): start from the heuristic default; change one knob at a time,
keeping the others at the best point so far. An ordered knob tries its two neighbours and keeps
walking in the direction that improves; an unordered one tries all its values. A change is kept
only when it is faster by `min_gain` (timing noise must not make the walk wander). Rounds repeat
until one improves nothing (early stop), or the budget (wall seconds per kernel, configs per
kernel) runs out: a new candidate starts only when the time it is expected to take still fits.
Candidates that render the same source as one already tried are free (not rebuilt, not counted).

Every candidate is verified before it may win: default and candidate run on the same inputs
(the real buffers, read only; outputs restored before each run and after tuning; in-place
kernels on private copies), and their outputs must agree (exactly for integers and bools,
within `TOLERANCES` for floats). A candidate that fails to build or differs is rejected and
reported. Timing: the verification run is the warm-up, then the fastest of several runs (tiny
kernels timed in batches of calls); on a GPU the median of `triton.testing.do_bench`. A winner is
confirmed against the default in alternating runs and kept only if still faster by `min_gain`,
in its fastest and in its median run: a config that wins only on an idle machine, or only on a
busy one, is not stored.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import importlib.metadata
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cache

import numpy as np
import torch

from codegen import knobs, tunedb
from codegen.kernel_ir import ExternCall, Kernel

SCHEMA = 1  # of stored configs: bump when a knob's meaning changes, so old winners are not reused
# the same for one kind of config alone, so the others keep their winners. triton 2: XBLOCK of a
# kernel with transposed tiles (render_triton.transpose_plan) is the tile's width, no longer a
# flat block of thousands of elements
KIND_SCHEMA = {"triton": 2}

# Outputs of a candidate must match the default's. Candidates change loop order, vector width,
# threads and block sizes, never the arithmetic: float32 sums accumulate in double on the C backend
# (a different order moves the float32 result by about 1 ulp, 6e-8), a fused multiply-add that a
# different loop shape lets gcc form or not moves a chain of math functions by a few ulp (5e-7),
# and Triton's float32 block reductions reorder by block size. rtol 1e-5 is 20x that, while a
# wrong index or a lost tail changes values by O(1).
# atol scales with the output's largest magnitude: a row sum that cancels to ~0 carries the
# rounding of its largest terms. 16-bit results round once more at the end, so one flipped
# rounding (1 ulp: 2^-8 bfloat16, 2^-11 float16) must pass.
TOLERANCES = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14), "float16": (2e-3, 1e-5),
              "bfloat16": (1e-2, 1e-4)}

# A candidate whose first (verification) run takes this many times the best time so far is not
# timed further: it cannot win, and a slow candidate would eat the budget of the good ones.
SLOW_CUTOFF = 3.0


# -- where winners are keyed -------------------------------------------------------------------
@cache
def cpu_name() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine() or "cpu"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    omp = os.environ.get("OMP_NUM_THREADS")
    return f"{model} ({cpus} cpus" + (f", OMP_NUM_THREADS={omp})" if omp else ")")


def device_name(kind: str) -> str:
    if kind in ("c", "cgemm"):
        return cpu_name()
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "triton interpreter"


def _c_version() -> str:
    from codegen import compile_c

    flags = hashlib.sha256(" ".join(compile_c.cflags() + compile_c.LIBS).encode()).hexdigest()[:8]
    return f"{compile_c.compiler_version(compile_c.compiler())}; flags {flags}; tune {SCHEMA}"


@cache
def _triton_version() -> str:
    try:
        v = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        v = "unknown"
    return f"triton {v}; tune {SCHEMA}"


def backend_version(kind: str) -> str:
    v = _c_version() if kind in ("c", "cgemm") else _triton_version()
    return v + (f"; {kind} {KIND_SCHEMA[kind]}" if kind in KIND_SCHEMA else "")


def kind_of(k: Kernel | ExternCall, backend: str) -> str | None:
    """Which search space a kernel has on a backend: "c", "triton", "gemm", "cgemm" or None (not tunable)."""
    if isinstance(k, Kernel):
        return backend if backend in ("c", "triton") else None
    if isinstance(k, ExternCall) and k.op != "matmul":
        return None  # a library call: nothing of ours to tune
    if isinstance(k, ExternCall) and k.sizes:  # GEMMs over sizes that change run on BLAS (lazy/runtime.py)
        return None
    if isinstance(k, ExternCall) and backend == "triton":
        from codegen import gemm_triton

        return "gemm" if gemm_triton.supports(k) else None
    if isinstance(k, ExternCall) and backend == "c":
        from codegen import gemm_c

        return "cgemm" if gemm_c.choose_impl(k) == "c" else None  # else a BLAS call: nothing of ours
    return None


KINDS = ("c", "triton", "gemm", "cgemm")  # a stored row's `backend`: which config class it holds


def _config_type(kind: str):
    if kind == "c":
        from codegen.render_c import CConfig

        return CConfig
    if kind == "triton":
        from codegen.render_triton import TritonConfig

        return TritonConfig
    if kind == "cgemm":
        from codegen.gemm_c import GemmCConfig

        return GemmCConfig
    from codegen.gemm_triton import GemmConfig

    return GemmConfig


def config_from(kind: str, d: dict):
    """A checked config of `kind` from stored JSON: KnobError (a ValueError) for an unknown or
    missing knob, or a value its spec (codegen/knobs.py) does not allow."""
    if kind not in KINDS:
        raise knobs.KnobError(f"unknown backend {knobs.shown(kind)} (expected one of {', '.join(KINDS)})")
    return knobs.from_dict(_config_type(kind), d)


def check_fit(k: Kernel | ExternCall, kind: str, cfg) -> None:
    """Raise ValueError unless `cfg` is a config of `kind` that `k` can be built with: every knob
    within its spec, and what spans knobs (Triton block size, GEMM shared memory or registers)."""
    if kind == "c":
        knobs.check(cfg)
    elif kind == "triton":
        from codegen import render_triton

        render_triton.check_config(cfg)
    elif kind == "cgemm":
        from codegen import gemm_c

        gemm_c.check_config(cfg)
    else:
        from codegen import gemm_triton

        gemm_triton.check_config(cfg, gemm_triton.problem_of(k).dtype)


# -- the runtime's lookup ----------------------------------------------------------------------
_memo: dict[tuple, object] = {}
stats = {"lookups": 0, "hits": 0}
remembered = 0  # configs this process uses that it did not read from the database (tuned here)


def tuned_config(k: Kernel | ExternCall, backend: str):
    """The stored winner for `k` on this device and backend version, or None. One database query
    per distinct kernel per process; none at all while the database file does not exist."""
    kind = kind_of(k, backend)
    if kind is None:
        return None
    p = tunedb.path()
    if not p.exists() and not _memo:  # no database and nothing tuned in this process: no key needed
        return None
    key = (str(p), k.key(), kind, backend_version(kind))  # (the version names the C flags)
    if key in _memo:
        return _memo[key]
    cfg = None
    if p.exists():
        stats["lookups"] += 1
        row = tunedb.get(k.key(), device_name(kind), key[3])
        if row is not None:
            try:
                # the file is anyone's who can write it: its knobs become source code, so a row
                # that is not what the tuner writes is refused whole (its default_config too)
                config_from(kind, row["default_config"])
                cfg = config_from(kind, row["config"])
                check_fit(k, kind, cfg)
                stats["hits"] += 1
            except ValueError as e:
                cfg = None
                tunedb._warn(f"tuning database {p}: stored config of {k.name} ({k.key()}) rejected, running its "
                             f"default config: {e}")
    _memo[key] = cfg
    return cfg


def remember(k: Kernel | ExternCall, kind: str, cfg) -> None:
    """Make this process use `cfg` for `k` from now on (after tuning it)."""
    global remembered
    remembered += 1
    _memo[(str(tunedb.path()), k.key(), kind, backend_version(kind))] = cfg


def forget() -> None:
    global remembered
    remembered = 0
    _memo.clear()


# -- the search --------------------------------------------------------------------------------
@dataclass
class Trial:
    point: dict
    seconds: float | None  # None: rejected
    note: str = ""  # why rejected, or "same source as ..." for free duplicates


@dataclass
class Search:
    best: dict
    best_s: float
    start_s: float
    trials: list[Trial]
    evaluated: int  # candidates that cost a build and a benchmark (the start included)
    stop: str  # "converged" | "budget" | "max_configs"
    seconds: float


def _ordered(values: tuple) -> bool:
    """Numbers in increasing order: walked step by step. Anything else: every value is tried."""
    return (len(values) > 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            and list(values) == sorted(values))


def coordinate_descent(space: dict[str, tuple], start: dict, evaluate: Callable[[dict], float | None], *,
                       budget_s: float = 10.0, max_configs: int = 40, min_gain: float = 0.03,
                       identity: Callable[[dict], object] | None = None, valid: Callable[[dict], bool] | None = None,
                       prefetch: Callable[[list[dict]], None] | None = None, max_rounds: int = 4,
                       clock: Callable[[], float] = time.perf_counter,
                       progress: Callable[[int, float, float], None] | None = None) -> Search:
    """Minimise `evaluate(point)` (seconds; None = rejected) over `space` from `start`.

    `identity(point)` (e.g. the rendered source) makes points with the same identity one
    candidate; `valid(point)` false skips a point for free; `prefetch(points)` is told the next
    batch before it is evaluated (e.g. to compile it in parallel). `progress(evaluated, elapsed,
    best speedup)` after each candidate. The start is always evaluated and must not be rejected."""
    t0 = clock()
    results: dict = {}  # identity -> seconds | None
    trials: list[Trial] = []
    spent: list[float] = []
    state = {"evaluated": 0, "stop": "converged", "halted": False}  # halted: out of budget, stop asking

    def ident(p: dict):
        return identity(p) if identity else tuple(sorted(p.items(), key=lambda kv: kv[0]))

    def out_of_budget() -> bool:
        if state["evaluated"] >= max_configs:
            state["stop"] = "max_configs"
            return True
        expected = statistics.mean(spent) if spent else 0.0
        if clock() - t0 + expected > budget_s:
            state["stop"] = "budget"
            return True
        return False

    def run(p: dict) -> float | None:
        if valid is not None and not valid(p):
            return None
        key = ident(p)
        if key in results:
            trials.append(Trial(dict(p), results[key], "same code as an earlier candidate"))
            return results[key]
        if state["halted"] or out_of_budget():
            state["halted"] = True
            return None
        t = clock()
        try:
            s = evaluate(p)
            note = ""
        except Exception as e:  # noqa: BLE001 (a failing candidate is a rejected candidate)
            s, note = None, f"{type(e).__name__}: {e}"
        spent.append(clock() - t)
        state["evaluated"] += 1
        results[key] = s
        trials.append(Trial(dict(p), s, note))
        if progress is not None:
            progress(state["evaluated"], clock() - t0, start_s / best_s if best_s else 1.0)
        return s

    best, best_s, start_s = dict(start), None, None
    start_s = best_s = evaluate(best)
    if start_s is None:
        raise RuntimeError("the default config was rejected: nothing to compare candidates with")
    spent.append(clock() - t0)
    state["evaluated"] = 1
    results[ident(best)] = start_s
    trials.append(Trial(dict(best), start_s, "default"))
    if progress is not None:
        progress(1, clock() - t0, 1.0)

    def better(s: float | None, than: float) -> bool:
        return s is not None and s < than * (1.0 - min_gain)

    def batch(points: list[dict]) -> list[dict]:
        points = [p for p in points if (valid is None or valid(p)) and ident(p) not in results]
        if prefetch is not None and points and not state["halted"]:
            prefetch(points)
        return points

    for _ in range(max_rounds):
        improved = False
        for knob, values in space.items():
            if state["halted"]:
                break
            cur = best.get(knob)
            if _ordered(values) and cur in values:
                i = values.index(cur)
                near = [dict(best, **{knob: values[j]}) for j in (i - 1, i + 1) if 0 <= j < len(values)]
                batch(near)
                scored = [(run(p), p) for p in near]
                ok = [(s, p) for s, p in scored if better(s, best_s)]
                if not ok:
                    continue
                s, p = min(ok, key=lambda sp: sp[0])
                step = 1 if values.index(p[knob]) > i else -1
                best, best_s, improved = p, s, True
                j = values.index(p[knob]) + step
                while 0 <= j < len(values):  # keep walking while it pays
                    q = dict(best, **{knob: values[j]})
                    s = run(q)
                    if not better(s, best_s):
                        break
                    best, best_s = q, s
                    j += step
            else:
                cands = batch([dict(best, **{knob: v}) for v in values if v != cur])
                scored = [(run(p), p) for p in cands]
                ok = [(s, p) for s, p in scored if better(s, best_s)]
                if ok:
                    best_s, best = min(ok, key=lambda sp: sp[0])
                    improved = True
        if not improved:
            break
    return Search(best, best_s, start_s, trials, state["evaluated"], state["stop"], clock() - t0)


# -- backends ------------------------------------------------------------------------------------
@dataclass
class Adapter:
    """How to build, identify and launch one kernel under a config of its backend."""

    kind: str
    default: object
    space: dict[str, tuple]
    source: Callable[[object], str]  # the generated code: candidates with equal code are one
    bind: Callable[..., Callable[[], None]]  # (config, tensors, scalar values) -> launch with no arguments
    valid: Callable[[object], bool] = lambda cfg: True
    prefetch: Callable[[list], None] | None = None


def _c_adapter(k: Kernel) -> Adapter:
    from codegen import compile_c, render_c

    def source(cfg) -> str:
        return render_c.render_c(k, config=cfg)

    def bind(cfg, tensors, scalars=()):
        fn = compile_c.load(source(cfg))
        fn.argtypes = [ctypes.c_void_p] * len(tensors) + compile_c.scalar_argtypes(k.scalars)
        ptrs = [t.data_ptr() for t in tensors]
        return lambda: fn(*ptrs, *scalars)

    def prefetch(cfgs: list) -> None:
        # compile a batch in parallel (gcc runs outside the GIL); load() then finds the objects on
        # disk. Failures are left for load() to raise, when the candidate is evaluated.
        srcs = list(dict.fromkeys(source(c) for c in cfgs))
        if len(srcs) < 2:
            return
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as ex:
            for f in [ex.submit(compile_c.build, s) for s in srcs]:
                f.exception()

    return Adapter("c", render_c.CConfig(), render_c.search_space(k), source, bind, prefetch=prefetch)


def _triton_adapter(k: Kernel) -> Adapter:
    from codegen import compile_triton, render_triton

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

    def bind(cfg, tensors, scalars=()):
        fn = compile_triton.load(k, cfg)
        return lambda: fn(*tensors, *scalars)

    return Adapter("triton", render_triton.choose_config(k), render_triton.search_space(k),
                   lambda cfg: render_triton.render_triton(k, cfg), bind,
                   valid=lambda cfg: render_triton.valid_config(k, cfg))


def _gemm_adapter(call: ExternCall) -> Adapter:
    from codegen import gemm_triton

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    dtype = gemm_triton.problem_of(call).dtype

    def valid(cfg) -> bool:
        try:
            gemm_triton.check_config(cfg, dtype)
            return True
        except gemm_triton.GemmConfigError:
            return False

    def bind(cfg, tensors, scalars=()):
        fn = gemm_triton.load(call, cfg)
        return lambda: fn(*tensors, *scalars)

    return Adapter("gemm", gemm_triton.choose_config(call), gemm_triton.search_space(call),
                   lambda cfg: gemm_triton.render(call, cfg, check=False), bind, valid=valid)


def _cgemm_adapter(call: ExternCall) -> Adapter:
    from codegen import gemm_c

    def bind(cfg, tensors, scalars=()):
        fn = gemm_c.load(call, cfg)
        ptrs = [t.data_ptr() for t in tensors]
        return lambda: fn(*ptrs, *scalars)

    return Adapter("cgemm", gemm_c.choose_config(call), gemm_c.search_space(call),
                   lambda cfg: gemm_c.render_gemm_c(call, cfg), bind, valid=gemm_c.valid_config)


def adapter_for(k: Kernel | ExternCall, backend: str) -> Adapter:
    kind = kind_of(k, backend)
    if kind is None:
        raise ValueError(f"{k.name}: nothing to tune on the {backend} backend")
    return {"c": _c_adapter, "triton": _triton_adapter, "gemm": _gemm_adapter, "cgemm": _cgemm_adapter}[kind](k)


# -- verification and timing -------------------------------------------------------------------
def mismatch(ref: torch.Tensor, got: torch.Tensor, dtype: str) -> str | None:
    """Why `got` is not the same result as `ref` (None when it is)."""
    if ref.shape != got.shape:
        return f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
    if torch.equal(ref, got):  # the usual case, and one cheap pass
        return None
    if dtype not in TOLERANCES:
        bad = int((ref != got).sum())
        return f"{bad} of {ref.numel()} {dtype} values differ"
    rtol, atol = TOLERANCES[dtype]
    # numpy on the host: single-threaded and predictable (torch's elementwise ops on 16M doubles
    # took seconds while other processes held the cores)
    r = ref.detach().float().cpu().numpy() if dtype != "float64" else ref.detach().cpu().numpy()
    g = got.detach().float().cpu().numpy() if dtype != "float64" else got.detach().cpu().numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        mag = np.abs(r)
        finite = np.isfinite(mag)
        scale = float(mag.max(where=finite, initial=0.0))
        ok = np.abs(r - g) <= atol * max(1.0, scale) + rtol * mag
        ok |= r == g  # equal infinities
        ok |= np.isnan(r) & np.isnan(g)
    if ok.all():
        return None
    bad = ~ok
    err = np.abs(r[bad].astype(np.float64) - g[bad])
    return (f"{int(bad.sum())} of {r.size} {dtype} values differ "
            f"(max |err| {float(np.nan_to_num(err, nan=np.inf).max()):.3g}, rtol {rtol})")


def _sync(tensors) -> Callable[[], None]:
    if any(t.is_cuda for t in tensors):
        return torch.cuda.synchronize
    return lambda: None


def measure(run: Callable[[], None], tensors: list, target_s: float = 0.1, min_reps: int = 3,
            max_reps: int = 50) -> float:
    """Seconds per call of `run` (already warmed up): the fastest of several samples. Other
    processes only ever add time, and on a 2-core machine they do so often: the minimum is what
    the kernel costs, a median would rank configs by how busy the machine was while they ran."""
    if any(t.is_cuda for t in tensors):
        from triton.testing import do_bench

        return do_bench(run, warmup=10, rep=max(20, int(target_s * 1e3)), return_mode="median") / 1e3
    sync = _sync(tensors)
    t = time.perf_counter()
    run()
    sync()
    once = max(time.perf_counter() - t, 1e-9)
    inner = max(1, int(2e-4 / once))  # batch tiny kernels: one sample is at least ~0.2 ms
    reps = max(min_reps, min(max_reps, int(target_s / (once * inner))))
    samples = []
    with gc_paused():
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(inner):
                run()
            sync()
            samples.append((time.perf_counter() - t) / inner)
    return min(samples)


@contextlib.contextmanager
def gc_paused():
    """No garbage collection pass lands inside a timed sample."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def measure_pair(a: Callable[[], None], b: Callable[[], None], tensors: list,
                 target_s: float = 0.6) -> tuple[tuple[float, float], tuple[float, float]]:
    """((fastest, median) seconds per call of `a`, the same of `b`), from samples taken in strict
    alternation (a b b a a b ...) so that load from other processes hits both alike."""
    if any(t.is_cuda for t in tensors):
        ta, tb = measure(a, tensors), measure(b, tensors)
        return (ta, ta), (tb, tb)
    sync = _sync(tensors)
    t = time.perf_counter()
    a()
    b()
    sync()
    pair = max(time.perf_counter() - t, 1e-9)
    inner = max(1, int(4e-4 / pair))
    rounds = max(8, min(100, int(target_s / (pair * inner))))
    ta, tb = [], []
    with gc_paused():
        for r in range(rounds):
            for run, out in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
                t = time.perf_counter()
                for _ in range(inner):
                    run()
                sync()
                out.append((time.perf_counter() - t) / inner)
    return (min(ta), statistics.median(ta)), (min(tb), statistics.median(tb))


# -- one kernel ----------------------------------------------------------------------------------
@dataclass
class TuneResult:
    name: str
    key: str
    kind: str
    device: str
    default: object
    best: object
    default_s: float
    best_s: float
    tried: int
    rejected: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    stop: str = "converged"
    status: str = "tuned"  # "tuned" | "stored" (found in the database, not re-tuned)

    @property
    def speedup(self) -> float:
        return self.default_s / self.best_s if self.best_s else 1.0

    def row(self) -> dict:
        return {"kernel": self.key, "device": self.device, "version": backend_version(self.kind),
                "backend": self.kind, "name": self.name, "config": asdict(self.best),
                "default_config": asdict(self.default), "default_s": self.default_s, "tuned_s": self.best_s,
                "tried": self.tried, "rejected": len(self.rejected), "tuning_s": self.seconds}


def _span(t: torch.Tensor) -> int:
    """Elements from t's first to its last addressable one."""
    return 0 if t.numel() == 0 else 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))


def _span_view(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the memory `t` spans, flat, t itself)."""
    t = t.detach()
    return torch.as_strided(t, (_span(t),), (1,)), t


def _span_copy(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a private flat copy of the memory `t` spans, the copy seen with `t`'s strides). Kernels
    index from data_ptr() with the buffer's own strides, so a copy must keep the layout."""
    t = t.detach()
    if t.numel() == 0:
        return t.clone(), t.clone()
    flat = torch.as_strided(t, (_span(t),), (1,)).clone()
    return flat, torch.as_strided(flat, t.shape, t.stride())


def tune_kernel(k: Kernel | ExternCall, backend: str, tensors: list[torch.Tensor], *, budget_s: float = 10.0,
                max_configs: int = 40, min_gain: float = 0.03,
                bench: Callable[[Kernel | ExternCall, object], float] | None = None,
                progress: Callable[[int, float, float], None] | None = None, store: bool = True,
                scalars: list | None = None) -> TuneResult:
    """Search `k`'s config space, running candidates on `tensors` (its buffers in `k.buffers`
    order; what they hold is the same afterwards, see `_workspace`) and `scalars`, the values of
    its scalar arguments (default: those it was lowered with).

    `bench(kernel, config) -> seconds` replaces timing (tests, cost models); candidates still run
    once to be verified. The result is stored in the tuning database unless `store=False`."""
    t_start = time.perf_counter()
    if scalars is None:
        lowered = k.epilogue if isinstance(k, ExternCall) else k
        scalars = lowered.meta.get("scalar_values", ()) if lowered is not None else ()
    ad = adapter_for(k, backend)
    check_fit(k, ad.kind, ad.default)
    outputs = [i for i, b in enumerate(k.buffers) if b.output]
    ws, restore, put_back = _workspace(k, tensors, outputs)
    sync = _sync(ws)
    ref: list[torch.Tensor] = []
    fastest = [float("inf")]

    def config(point: dict):
        return replace(ad.default, **point)

    def fits(point: dict) -> bool:  # what the tuner builds is checked like what it reads
        try:
            check_fit(k, ad.kind, config(point))
            return True
        except ValueError:
            return False

    def evaluate(point: dict) -> float | None:
        cfg = config(point)
        run = ad.bind(cfg, ws, scalars)
        restore()
        t = time.perf_counter()
        run()
        sync()
        first = time.perf_counter() - t
        if not ref:  # the default: its outputs are the reference
            ref.extend(ws[i].clone() for i in outputs)
        else:
            for i, r in zip(outputs, ref):
                why = mismatch(r, ws[i], k.buffers[i].dtype)
                if why:
                    raise WrongResult(f"{k.buffers[i].name}: {why}")
        if bench is not None:
            return bench(k, cfg)
        if first > SLOW_CUTOFF * fastest[0]:  # hopeless (rsplit over 8192 rows...): do not spend the budget on it
            return first
        s = measure(run, ws)
        fastest[0] = min(fastest[0], s)
        return s

    try:
        search = coordinate_descent(  # the rest of the budget is for the confirmation below
            ad.space, {name: getattr(ad.default, name) for name in ad.space}, evaluate,
            budget_s=budget_s * (0.85 if bench is None else 1.0), max_configs=max_configs, min_gain=min_gain,
            identity=lambda p: ad.source(config(p)), valid=lambda p: fits(p) and ad.valid(config(p)),
            prefetch=(lambda ps: ad.prefetch([config(p) for p in ps])) if ad.prefetch else None, progress=progress)
        best = config(search.best)
        default_s, best_s = search.start_s, search.best_s
        if best != ad.default and bench is None:
            # confirm against the default, interleaved: the winner must be faster both at its best
            # and typically (a config that only wins while other processes hold a core, or only
            # when they do not, is a regression half of the time), else the default stays
            (d_min, d_med), (b_min, b_med) = measure_pair(ad.bind(ad.default, ws, scalars),
                                                          ad.bind(best, ws, scalars), ws)
            default_s, best_s = d_min, b_min
            if not (b_min < d_min * (1.0 - min_gain) and b_med < d_med * (1.0 - min_gain)):
                best, best_s = ad.default, d_min
    finally:
        put_back()
    rejected = [t for t in search.trials if t.seconds is None and t.note and not t.note.startswith("same code")]
    res = TuneResult(k.name, k.key(), ad.kind, device_name(ad.kind), ad.default, best, default_s, best_s,
                     search.evaluated, rejected, time.perf_counter() - t_start, search.stop)
    if store:
        tunedb.put([res.row()])
    remember(k, ad.kind, best)
    return res


def _workspace(k, tensors: list[torch.Tensor], outputs: list[int]):
    """(buffers to run candidates on, restore() before each verified run, put_back() when done).

    Inputs are the real buffers: candidates only read them, and timing on the real memory (its
    pages, its alignment) is what the kernel will see. Outputs are the real buffers too, saved
    first and put back after tuning (a wrong candidate may have written anywhere in them; the real
    launch writes them next). A kernel that reads what it writes (in place), or buffers that
    overlap, run on private copies of everything: every run must see the same inputs, and the
    program's buffers are never written."""
    spans = [(t.data_ptr(), t.data_ptr() + _span(t) * t.element_size()) for t in tensors]
    overlap = any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for (b0, b1) in spans[i + 1:])
    loaded = set()
    if isinstance(k, Kernel):
        from codegen.kernel_ir import kernel_exprs

        loaded = {e.arg[0] for e in kernel_exprs(k) if e.op == "load"}
    private = overlap or any(i in loaded for i in outputs)
    if private:
        pairs = [_span_copy(t) for t in tensors]
        flats, ws = [f for f, _ in pairs], [v for _, v in pairs]
    else:
        flats, ws = [_span_view(tensors[i])[0] for i in outputs], list(tensors)
    saved = [f.clone() for f in flats]

    def restore() -> None:
        for f, s in zip(flats, saved):
            f.copy_(s)

    def put_back() -> None:
        if not private:
            restore()

    return ws, restore, put_back


class WrongResult(RuntimeError):
    """A candidate config whose outputs differ from the default's."""
