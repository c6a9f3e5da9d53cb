"""Run the benchmark suite against peers in one process: a table, a history record, a dashboard.

Usage: `lazy bench [--size tiny|small|medium|large] [--filter NAMES] [--json] [--output HISTORY.jsonl]`
(`python -m perf.run` takes the same options). `--suite models` runs perf/models/bench.py instead:
whole models' training steps and inference.

In:  the workloads of `perf/workloads.py` (SUITE), a size, the peers to run.
Out: one run record (a dict, see `perf/history.py` for its schema), printed as a table or JSON,
     appended to the history file and rendered into the HTML dashboard.

How it measures
- Every peer runs in this process, interleaved: per workload, each timed round calls every peer
  once (in rotated order), so drift in clock or temperature hits all peers alike. Warm-up calls
  come first; the median of the timed calls is reported with min, max and quartiles.
- lazy is timed end to end: building the graph, realizing it (schedule lookup, allocation,
  kernel launches) and returning the result. Its host ("Python") overhead per call is that time
  minus the time spent inside kernels, from `lazy.profile()`.
- Compile time cold: lazy's first call with a fresh, empty `LAZY_CACHE_DIR` and nothing in
  memory (schedule + C/Triton compile + load); warm: the same again with the disk cache filled
  but nothing in memory (what a new process pays). torch.compile likewise: cold with a fresh
  `TORCHINDUCTOR_CACHE_DIR`, warm after `torch._dynamo.reset()` with that cache filled. Loading
  Inductor itself (once per process) is reported apart as `torch_compile_startup_s`.
- The machine's limits are measured in the same run: memory bandwidth by an OpenMP C copy and
  triad over arrays far larger than the caches (on a GPU: torch copy and add), at the start and
  at the end, the best kept (another process may hold the cores during one probe); and a matmul
  roof (numpy's BLAS SGEMM; cuBLAS on a GPU). On the CPU each bandwidth row is also rated against
  the triad over the same number of bytes timed in the same interleaved rounds as its peers
  (`roof_gbps`): this machine's bandwidth drifts within minutes, and a row is compared with the
  machine it ran on. Every row, and every lazy kernel, is shown as a fraction of its roof.
- A bandwidth row can also be compute-bound (16M vector exp and tanh take longer than 128 MB take
  from memory): its compute floor is lazy's kernel time on a cache-resident copy of the workload
  (FLOOR_NUMEL elements) scaled to the row's bytes, and the attainable time is the larger of the
  floor and the bytes at the roof (`%att`).
- The roof's triads, the floor and a profiled lazy call (its kernel times and host time) take
  their own slots in the same interleaved rounds as the peers, so every figure of a row comes
  from the same minutes of the machine: its speed here moved 1.5x within minutes.
- `lazy.jit` is a peer like the others: the same lazy function, its kernels replayed without
  rebuilding the graph; its column against plain lazy is the share of lazy's host time.
- The 1-minute load average at the start is recorded: above half the CPUs, the table warns that
  timings are noisy.
- Results are checked: lazy against torch eager (tolerance per workload); a mismatch is a
  failure (exit code 1), like an exception. A workload lazy cannot run yet is "missing", its
  peers still run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from perf.workloads import SIZES, SUITE, Workload

TRIAD_C = r"""
void copy(float* restrict a, const float* restrict b, int64_t n) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = b[i];
}
void triad(float* restrict a, const float* restrict b, const float* restrict c, float s, int64_t n) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}
/* the same triad with the C backend's streaming (non-temporal) stores: no write-allocate reads */
void triad_stream(float* restrict a, const float* restrict b, const float* restrict c, float s, int64_t n) {
  #pragma omp parallel
  {
  #pragma omp for schedule(static) nowait
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t e = i0 + 1024 < n ? i0 + 1024 : n;
    float blk[1024] __attribute__((aligned(64)));
    #pragma omp simd
    for (int64_t i = i0; i < e; i++) blk[i - i0] = b[i] + s * c[i];
    lz_stream(&a[i0], blk, (e - i0) * (int64_t)sizeof(float));
  }
  lz_stream_fence();
  }
}
"""

# lazy always runs; lazy.jit is the same lazy function under `lazy.jit` (recorded kernels replayed
# without rebuilding the graph): the difference between the two columns is lazy's host time
PEERS = ("lazy.jit", "numpy", "torch", "torch.compile", "tinygrad")
MIN_SAMPLES = 3  # timed rounds kept even past the per-workload time budget


def _stderr(*args, end="\n"):
    print(*args, end=end, file=sys.stderr, flush=True)


def _num(x) -> float | None:
    """JSON-safe float: NaN and infinities become None."""
    return float(x) if x is not None and np.isfinite(x) else None


def _time(fn, repeat: int, warmup: int = 2) -> tuple[float, float, float]:
    """(median, min, max) seconds of fn() after warm-up."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), max(ts)


# -- the machine's limits ----------------------------------------------------------------------
def measure_bandwidth(n: int = 1 << 24, repeat: int = 10, device: str = "cpu") -> dict:
    """GB/s of a copy and a triad over arrays far larger than the caches (best of `repeat`)."""
    if device.startswith("cuda"):
        import torch

        a, b, c = (torch.ones(n * 4, device=device) for _ in range(3))  # 256 MiB each
        sync = torch.cuda.synchronize
        copy_s = _time(lambda: (a.copy_(b), sync()), repeat)[1]
        triad_s = _time(lambda: (torch.add(b, c, alpha=3.0, out=a), sync()), repeat)[1]
        n *= 4
        method = "torch copy_ and add(out=) on the GPU"
    else:
        import ctypes

        from codegen import compile_c
        from codegen.render_c import PRELUDE

        lib_copy = compile_c.load(PRELUDE + TRIAD_C, "copy")
        lib_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        a = np.ones(n, dtype=np.float32)
        b = np.ones(n, dtype=np.float32)
        copy_s = _time(lambda: lib_copy(a.ctypes.data, b.ctypes.data, n), repeat)[1]
        triads = {name: _time(call, repeat)[1] for name, call in _triad_calls(n).items()}
        triad_s = min(triads.values())
        method = ("OpenMP C copy and triad (-O3 -march=native), all threads; the triad is the faster of "
                  "plain and streaming (non-temporal) stores")
        return {"copy_gbps": 2 * 4 * n / copy_s / 1e9, "triad_gbps": 3 * 4 * n / triad_s / 1e9,
                "triad_plain_gbps": 3 * 4 * n / triads["triad"] / 1e9,
                "triad_stream_gbps": 3 * 4 * n / triads["triad_stream"] / 1e9,
                "array_bytes": 4 * n, "method": method}
    return {"copy_gbps": 2 * 4 * n / copy_s / 1e9, "triad_gbps": 3 * 4 * n / triad_s / 1e9,
            "array_bytes": 4 * n, "method": method}


def _triad_calls(n: int) -> dict[str, Callable]:
    """{"triad": call, "triad_stream": call}: the C triad with plain and with streaming stores over
    three float32 arrays of `n` elements (12 n bytes per call), the arrays owned by the calls."""
    import ctypes

    from codegen import compile_c
    from codegen.render_c import PRELUDE

    arrays = [np.ones(n, dtype=np.float32) for _ in range(3)]
    pa, pb, pc = (x.ctypes.data for x in arrays)
    calls = {}
    for name in ("triad", "triad_stream"):
        fn = compile_c.load(PRELUDE + TRIAD_C, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64]
        calls[name] = lambda fn=fn, arrays=arrays: fn(pa, pb, pc, 3.0, n)
    return calls


def _roof_elements(nbytes: int) -> int:
    """Elements per array of the triad a row of `nbytes` is rated against: the same bytes in all.
    Timed in the same rounds as the row's peers: this VM's memory bandwidth drifts by 1.5x within
    minutes (the same triad, 27 to 64 GB/s), so a roof measured only at the start and end rates a
    workload against another moment's machine."""
    return max(nbytes // 12, 1 << 16)


def _triad_text(bw: dict) -> str:
    if "triad_stream_gbps" not in bw:
        return f"{bw['triad_gbps']:.1f} GB/s"
    return (f"{bw['triad_gbps']:.1f} GB/s (plain stores {bw['triad_plain_gbps']:.1f}, "
            f"streaming stores {bw['triad_stream_gbps']:.1f})")


def measure_matmul(d: int = 1024, repeat: int = 5, device: str = "cpu") -> dict:
    """GFLOP/s of the vendor SGEMM on a d x d x d float32 product: the compute roof."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((d, d), dtype=np.float32), rng.standard_normal((d, d), dtype=np.float32)
    if device.startswith("cuda"):
        import torch

        ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        s = _time(lambda: (ta @ tb, torch.cuda.synchronize()), repeat)[1]
        by = "torch.matmul (cuBLAS)"
    else:
        s = _time(lambda: a @ b, repeat)[1]
        by = "numpy matmul (BLAS)"
    return {"gflops": 2 * d ** 3 / s / 1e9, "shape": [d, d, d], "method": by}


# -- run description ---------------------------------------------------------------------------
def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_info() -> dict:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    info: dict = {"commit": None, "dirty": None, "branch": None}
    try:
        def git(*a):
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10,
                                  check=False)
        r = git("rev-parse", "HEAD")
        if r.returncode == 0:
            info["commit"] = r.stdout.strip()
            info["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
            info["branch"] = git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_info(device: str) -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    mem_gb = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as f:
        mem_gb = round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 2 ** 20, 1)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"load_avg_1min": load, "hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": usable, "torch_threads": torch.get_num_threads(), "memory_gb": mem_gb, "gpu": gpu,
            "device": device}


def versions(tinygrad_version: str | None) -> dict:
    import platform

    v = {"python": platform.python_version(), "lazy-triton": _dist_version("lazy-triton"),
         "numpy": np.__version__, "torch": _dist_version("torch"), "triton": _dist_version("triton"),
         "tinygrad": tinygrad_version, "plotly": _dist_version("plotly"), "cc": None}
    with contextlib.suppress(Exception):
        from codegen import compile_c

        v["cc"] = compile_c.compiler_version(compile_c.compiler())
    return v


# -- peers -------------------------------------------------------------------------------------
@dataclass
class Peer:
    """How to hand a workload's inputs to one library, call it, and wait for it."""
    name: str
    prepare: Callable[[list[np.ndarray]], list]  # numpy inputs -> this library's inputs
    function: Callable[[Workload], Callable | None]  # the workload's function for this library
    finish: Callable[[object], object]  # make the result real (realize, synchronize)
    to_numpy: Callable[[object], np.ndarray]


def _seq(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _jitted(w: Workload):
    """`lazy.jit(w.lazy)`, quiet: a function it cannot replay runs as plain Python, which the row
    records (`jit_status`) instead of a warning in the middle of the progress line."""
    import warnings

    import lazy
    from lazy.jit import JitWarning

    if w.lazy is None:
        return None
    jitted = lazy.jit(w.lazy)

    def call(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JitWarning)
            return jitted(*args)
    call.jit = jitted
    return call


def make_peers(device: str, names: list[str]) -> dict[str, Peer]:
    import torch

    import lazy

    cuda = device.startswith("cuda")
    tsync = torch.cuda.synchronize if cuda else (lambda: None)

    def t_prepare(arrays):
        return [torch.from_numpy(a).to(device) for a in arrays]

    def t_finish(out):
        tsync()
        return out

    def l_finish(out):
        outs = _seq(out)
        lazy.realize(*outs)
        tsync()
        return out

    def t_numpy(t):
        return t.detach().cpu().numpy()

    def l_prepare(arrays):
        return [lazy.tensor(t) for t in t_prepare(arrays)]

    peers = {
        "lazy": Peer("lazy", l_prepare, lambda w: w.lazy, l_finish, lambda t: t_numpy(t.torch())),
        # a fresh jit per workload (and per call of `function`): its recording is of this row only
        "lazy.jit": Peer("lazy.jit", l_prepare, _jitted, l_finish, lambda t: t_numpy(t.torch())),
        "numpy": Peer("numpy", lambda arrays: list(arrays), lambda w: w.numpy, lambda out: out, np.asarray),
        "torch": Peer("torch", t_prepare, lambda w: w.torch, t_finish, t_numpy),
        # torch.compile's callable is built per workload by bench_workload (cold/warm compile timing)
        "torch.compile": Peer("torch.compile", t_prepare, lambda w: w.torch, t_finish, t_numpy),
    }
    if "tinygrad" in names:
        from tinygrad import Device, Tensor

        def tg_prepare(arrays):
            return [Tensor(np.ascontiguousarray(a)).realize() for a in arrays]

        def tg_finish(out):
            Tensor.realize(*_seq(out))
            Device[Device.DEFAULT].synchronize()
            return out

        peers["tinygrad"] = Peer("tinygrad", tg_prepare, lambda w: w.tinygrad, tg_finish, lambda t: t.numpy())
    return {n: p for n, p in peers.items() if n == "lazy" or n in names}


def tinygrad_status() -> tuple[str | None, str | None]:
    """(version, None) when tinygrad is importable and runs here, else (version or None, why not)."""
    import importlib.util

    if importlib.util.find_spec("tinygrad") is None:
        return None, "not installed (pip install tinygrad; on CPU it also needs clang)"
    version = _dist_version("tinygrad")
    try:
        from tinygrad import Tensor

        (Tensor([1.0, 2.0]) + 1).numpy()
    except Exception as e:  # noqa: BLE001, e.g. no clang on PATH
        return version, f"installed but cannot run here: {type(e).__name__}: {str(e)[:200]}"
    return version, None


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _forget_compiled() -> None:
    """Drop lazy's in-memory schedules and loaded kernels (what a new process starts with)."""
    from codegen import compile_c, compile_triton
    from lazy import runtime
    from lazy.jit import reset_all

    reset_all()  # a recorded step would replay the old programs and skip the compile being timed
    runtime._programs.clear()
    compile_c._loaded.clear()
    compile_triton._modules.clear()


def torch_compile_startup(device: str) -> float:
    """Seconds to load Inductor and compile a trivial function: paid once per process."""
    import torch

    t0 = time.perf_counter()
    torch.compile(lambda x: x * 2 + 1)(torch.ones(8, device=device))
    return time.perf_counter() - t0


def _tinygrad_counters():
    from tinygrad.helpers import GlobalCounters

    GlobalCounters.reset()
    return GlobalCounters


def _rel_err(out, ref) -> float:
    outs, refs = _seq(out), _seq(ref)
    if len(outs) != len(refs):
        return float("inf")
    worst = 0.0
    for o, r in zip(outs, refs):
        o, r = np.asarray(o, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if o.shape != r.shape:
            return float("inf")
        if o.size:
            worst = max(worst, float(np.abs(o - r).max() / (1 + np.abs(r).max())))
    return worst


def _max_abs(out, ref) -> float:
    return max((float(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64)).max()) if np.size(r) else 0.0)
               for o, r in zip(_seq(out), _seq(ref)))


def _quartiles(ts: list[float]) -> tuple[float, float]:
    if len(ts) < 2:
        return ts[0], ts[0]
    q = statistics.quantiles(ts, n=4, method="inclusive")
    return q[0], q[2]


def _short(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) < 300 else msg[:297] + "..."


# -- one workload ------------------------------------------------------------------------------
def bench_workload(w: Workload, numel: int, peers: dict[str, Peer], *, repeat: int = 10, warmup: int = 2,
                   budget_s: float = 10.0, cold: bool = True, limits: dict | None = None,
                   log: Callable[[str], None] = lambda s: None) -> dict:
    """Time `w` in every peer, interleaved. Returns the workload's result dict (see perf/history.py)."""
    import torch

    inputs = w.make_inputs(numel)
    res: dict = {"workload": w.name, "group": w.group, "description": w.description,
                 "shapes": [list(a.shape) for a in inputs], "bytes": int(w.bytes(inputs)),
                 "flops": int(w.flops(inputs)) if w.flops else None, "metric": "gflops" if w.flops else "gbps",
                 "expected_kernels": w.expected_kernels, "status": "ok", "missing": None, "error": None,
                 "kernels": None, "kernel_names": [], "kernel_detail": [], "max_abs_err": None, "rel_err": None,
                 "overhead_us": None, "compile": {}, "peers": {}}
    missing = w.missing()
    calls: dict[str, Callable] = {}
    jits: dict = {}
    ref = None
    if w.torch is not None:  # the oracle: torch eager on the CPU
        try:
            ref = [np.asarray(o.detach()) for o in _seq(w.torch(*[torch.from_numpy(a) for a in inputs]))]
        except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
            log(f"torch reference failed: {_short(e)}")

    for name, peer in peers.items():
        entry: dict = {"status": "ok"}
        res["peers"][name] = entry
        if name in ("lazy", "lazy.jit") and missing:
            if name == "lazy":
                res["status"], res["missing"] = "missing", missing
            entry.update(status="missing", reason=missing)
            continue
        fn = peer.function(w)
        if fn is None:
            entry["status"] = "n/a"
            continue
        try:
            args = peer.prepare(inputs)
            if name == "lazy":
                call, out = _lazy_first_calls(fn, args, peer, res, cold, log)
            elif name == "torch.compile":
                call, out = _compile_first_calls(w, args, peer, res, log)
            else:
                def call(fn=fn, args=args, peer=peer):
                    return peer.finish(fn(*args))
                counter = _tinygrad_counters() if name == "tinygrad" else None
                t0 = time.perf_counter()
                out = call()
                entry["first_call_s"] = time.perf_counter() - t0
                if counter is not None:
                    entry["kernels"] = counter.kernel_count
            calls[name] = call
            if hasattr(fn, "jit"):
                jits[name] = fn.jit
            if ref is not None:
                got = [peer.to_numpy(o) for o in _seq(out)]
                entry["rel_err"] = _num(_rel_err(got, ref))
                if name == "lazy":
                    res["rel_err"] = entry["rel_err"]
                    if res["rel_err"] is not None:
                        res["max_abs_err"] = _num(_max_abs(got, ref))
                    if res["rel_err"] is None or res["rel_err"] > w.rtol:
                        res["status"] = "mismatch"
                        res["error"] = (f"lazy differs from torch: max |err| {res['max_abs_err']}, "
                                        f"relative {res['rel_err']} (tolerance {w.rtol})")
                        log(res["error"])
            del out
        except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
            entry.update(status="failed", error=_short(e))
            if name == "lazy":
                res["status"], res["error"] = "failed", entry["error"]
            log(f"{name} failed: {entry['error']}")

    # measurements that ride in the same rounds as the peers, their wall times discarded: the
    # triads of the row's roof, lazy's kernel times (a profiled call) and its compute floor
    extra: dict[str, Callable] = {}
    if limits and not res["flops"] and "triad_stream_gbps" in limits["bandwidth"] and calls:  # CPU rows
        roof_n = _roof_elements(res["bytes"])
        extra.update({f"roof:{name}": call for name, call in _triad_calls(roof_n).items()})
    lazy_ok = "lazy" in calls and res["peers"]["lazy"].get("status") == "ok"
    runs: list = []
    floors: list[float] = []
    if lazy_ok:
        extra["kernels:lazy"] = _profiled_runs(calls["lazy"], runs)
        if "roof:triad" in extra and numel > FLOOR_NUMEL:
            try:
                extra["floor:lazy"] = _floor_runs(w, peers["lazy"], res["bytes"], floors)
            except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
                log(f"compute floor failed: {_short(e)}")
    samples = _interleaved({**calls, **extra}, res, repeat, warmup, budget_s, log)
    roof = [samples.pop(name) for name in extra if name.startswith("roof:") and name in samples]
    for name in extra:
        samples.pop(name, None)
    if roof:
        res["roof_gbps"] = max(12 * roof_n / statistics.median(ts) / 1e9 for ts in roof)
    for name, j in jits.items():  # 'replaying', or 'failed: why' (then it ran as plain Python)
        res["peers"][name]["jit_status"] = next(iter(j.stats.values()), "running")
    for name, ts in samples.items():
        med = statistics.median(ts)
        q1, q3 = _quartiles(ts)
        e = res["peers"][name]
        e.update(median_s=med, min_s=min(ts), max_s=max(ts), q1_s=q1, q3_s=q3, samples=len(ts),
                 gbps=res["bytes"] / med / 1e9 if med > 0 else None,
                 gflops=res["flops"] / med / 1e9 if res["flops"] and med > 0 else None)
    runs, floors = runs[warmup:], floors[warmup:]  # (each warm-up call added one)
    if runs:
        _lazy_overhead(runs, res)
    if floors:
        res["compute_floor_s"] = statistics.median(floors)
    if limits:
        _rate(res, limits)
    return res


def _rate(res: dict, limits: dict) -> None:
    """Each peer's rate, and each lazy kernel's, as a fraction of the machine's measured limit."""
    triad = res.get("roof_gbps") or limits["bandwidth"]["triad_gbps"]
    for e in res.get("peers", {}).values():
        achieved = e.get("gflops") if res.get("flops") else e.get("gbps")
        if achieved:
            e["roof_fraction"] = achieved / (limits["matmul"]["gflops"] if res.get("flops") else triad)
    detail = res.get("kernel_detail") or []
    kernel_s = sum(k["seconds"] for k in detail)
    if not res.get("flops") and kernel_s > 0:  # the fused kernels alone, without the host's share
        res["kernel_roof_fraction"] = res["bytes"] / kernel_s / 1e9 / triad
    lz = res.get("peers", {}).get("lazy", {})
    if not res.get("flops") and lz.get("median_s"):
        # the time the row could take at best: its bytes at the roof, or its compute in cache
        res["attainable_s"] = max(res["bytes"] / (triad * 1e9), res.get("compute_floor_s") or 0.0)
        lz["attainable_fraction"] = res["attainable_s"] / lz["median_s"]
    for k in res.get("kernel_detail") or []:
        if k.get("gbps"):
            k["roof_fraction"] = k["gbps"] / triad


def _lazy_first_calls(fn, args, peer, res, cold, log):
    import lazy
    from codegen import compile_c

    def call():
        return peer.finish(fn(*args))

    def profiled():
        t0 = time.perf_counter()
        with lazy.profile() as p:
            out = call()
        return out, time.perf_counter() - t0, p

    c = res["compile"]
    if cold:
        with tempfile.TemporaryDirectory(prefix="lazy-bench-cold-") as d, _env("LAZY_CACHE_DIR", d), \
                _env("TRITON_CACHE_DIR", os.path.join(d, "triton-jit")):  # on a GPU Triton's own cache too
            _forget_compiled()
            s0 = compile_c.stats.compile_seconds
            out, c["lazy_cold_s"], p = profiled()
            c["lazy_compiler_s"] = compile_c.stats.compile_seconds - s0
            _forget_compiled()
            _, c["lazy_warm_s"], _ = profiled()
    else:
        out, c["lazy_first_call_s"], p = profiled()
    res["lazy_first_call_s"] = c.get("lazy_cold_s", c.get("lazy_first_call_s"))
    res["kernels"] = res["peers"]["lazy"]["kernels"] = len(p.kernels)
    res["kernel_names"] = [k.name for k in p.kernels]
    res["backend"] = p.kernels[0].backend if p.kernels else None
    log(f"lazy {len(p.kernels)} kernel(s), first call {res['lazy_first_call_s']:.2f} s")
    return call, out


def _compile_first_calls(w, args, peer, res, log):
    import torch
    import torch._inductor.metrics as inductor_metrics

    def build():
        return w.torch_compiled(torch.compile) if w.torch_compiled else torch.compile(w.torch)

    c = res["compile"]
    inductor_metrics.reset()
    compiled = build()
    t0 = time.perf_counter()
    out = peer.finish(compiled(*args))
    c["torch.compile_cold_s"] = time.perf_counter() - t0
    res["peers"]["torch.compile"]["kernels"] = inductor_metrics.generated_kernel_count
    torch._dynamo.reset()
    compiled = build()
    t0 = time.perf_counter()
    peer.finish(compiled(*args))
    c["torch.compile_warm_s"] = time.perf_counter() - t0
    log(f"torch.compile cold {c['torch.compile_cold_s']:.2f} s, warm {c['torch.compile_warm_s']:.2f} s")

    def call(compiled=compiled):
        return peer.finish(compiled(*args))
    return call, out


def _interleaved(calls: dict[str, Callable], res: dict, repeat: int, warmup: int, budget_s: float,
                 log) -> dict[str, list[float]]:
    """Warm-up, then rounds that call every peer once (rotated order); a failing peer drops out.
    Names with a colon ("roof:triad", "kernels:lazy") are measurements, not peers: a failing one
    drops out of the rounds without an entry in the row's peers."""
    from codegen.tune import gc_paused

    names = list(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}

    def drop(n, e):
        if ":" not in n:
            res["peers"].setdefault(n, {}).update(status="failed", error=_short(e))
        if n == "lazy":
            res["status"], res["error"] = "failed", res["peers"][n]["error"]
        names.remove(n)
        samples.pop(n)
        log(f"{n} failed: {_short(e)}")

    for n in list(names):
        try:
            for _ in range(warmup):
                calls[n]()
        except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
            drop(n, e)
    gc.collect()
    with gc_paused():  # as timeit does: a collection inside one peer's call is noise
        t_start = time.perf_counter()
        for r in range(max(repeat, 1)):
            for n in names[r % max(len(names), 1):] + names[:r % max(len(names), 1)]:
                if n not in samples:
                    continue
                try:
                    t = time.perf_counter()
                    calls[n]()
                    samples[n].append(time.perf_counter() - t)
                except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
                    drop(n, e)
            if r + 1 >= MIN_SAMPLES and time.perf_counter() - t_start > budget_s:
                break
    return samples


FLOOR_NUMEL = 1 << 18  # elements of the cache-resident copy of a workload (1 MiB per float32 input)


def _floor_runs(w: Workload, peer: Peer, nbytes: int, out: list[float], repeat: int = 3) -> Callable:
    """A call for the interleaved rounds that appends to `out` the seconds lazy's kernels would need
    for `nbytes` of this workload if memory were free: the fastest of `repeat` kernel times on a
    cache-resident copy of it (FLOOR_NUMEL elements; the first call of a round finds it evicted by
    the other peers), scaled by bytes. A row slower than its bandwidth roof but near this floor is
    compute-bound: with 16M vector exp and tanh, the 10-op chain needs longer in cache than its
    bytes take from memory. Timed in the rounds, it sees the machine the peers saw."""
    import lazy

    inputs = w.make_inputs(FLOOR_NUMEL)
    fn, args = peer.function(w), peer.prepare(inputs)
    peer.finish(fn(*args))  # compiled outside the timing
    scale = nbytes / w.bytes(inputs)

    def call():
        best = float("inf")
        for _ in range(repeat):
            with lazy.profile() as p:
                peer.finish(fn(*args))
            best = min(best, p.seconds)
        out.append(best * scale)
    return call


def _profiled_runs(call: Callable, out: list) -> Callable:
    """A call for the interleaved rounds: lazy's call under `lazy.profile()`, appending to `out`
    its wall time and its kernel records (the plain call, timed beside it, runs unprofiled)."""
    import lazy

    def profiled():
        t0 = time.perf_counter()
        with lazy.profile() as p:
            call()
        out.append((time.perf_counter() - t0, p.seconds, p.kernels))
    return profiled


def _lazy_overhead(runs: list, res) -> None:
    """Host time per call (wall - time in kernels) and each kernel's median time and GB/s, from the
    profiled calls of the interleaved rounds."""
    res["overhead_us"] = max(statistics.median(wall - kern for wall, kern, _ in runs), 0.0) * 1e6
    per_kernel = [ks for _, _, ks in runs]
    detail = []
    if per_kernel and all(len(ks) == len(per_kernel[0]) for ks in per_kernel):
        for i, k in enumerate(per_kernel[0]):
            s = statistics.median(ks[i].seconds for ks in per_kernel)
            nbytes = k.bytes_read + k.bytes_written
            detail.append({"name": k.name, "seconds": s, "bytes": nbytes, "gbps": nbytes / s / 1e9 if s > 0 else None})
    res["kernel_detail"] = detail


def run_workload(w, numel: int, repeat: int, peers: list[str], log=print) -> dict:
    """Time one workload in the named peers (no cold compile): what `lazy demo` uses."""
    res = bench_workload(w, numel, make_peers("cpu", peers), repeat=repeat, cold=False, log=lambda s: None)
    if res["status"] != "ok":
        raise RuntimeError(res["error"] or res["missing"])
    for name, e in res["peers"].items():
        if "median_s" in e:
            log(f"  {w.name:<18} {name:<14} {e['median_s'] * 1e3:9.3f} ms  "
                f"({e['min_s'] * 1e3:.3f}..{e['max_s'] * 1e3:.3f})")
    return res


# -- the whole run -----------------------------------------------------------------------------
def select(filter_: str) -> list[str]:
    """Workload names matching a comma-separated list of substrings. ValueError names a term that
    matches nothing, with the valid names."""
    terms = [t.strip() for t in filter_.split(",") if t.strip()]
    if not terms:
        return list(SUITE)
    chosen = []
    for t in terms:
        hits = [n for n in SUITE if t in n]
        if not hits:
            raise ValueError(f"no workload matches {t!r}; valid workloads: {', '.join(SUITE)}")
        chosen += [n for n in hits if n not in chosen]
    return [n for n in SUITE if n in chosen]


def run_bench(names: list[str], size: str, *, device: str = "cpu", peers: list[str] = PEERS, repeat: int = 10,
              warmup: int = 2, budget_s: float = 10.0, cold: bool = True, progress: bool = True) -> dict:
    """Run the named workloads; returns the run record (perf/history.py describes its fields)."""
    import datetime

    from perf import history

    log = _stderr if progress else (lambda *a, **k: None)
    t_run = time.perf_counter()
    wanted = [p for p in PEERS if p in peers]
    unavailable: dict[str, str] = {}
    tg_version, tg_why = tinygrad_status() if "tinygrad" in wanted else (None, None)
    if "tinygrad" in wanted and tg_why:
        unavailable["tinygrad"] = tg_why
        wanted.remove("tinygrad")
    for p in PEERS:
        if p not in peers:
            unavailable.setdefault(p, "not requested")
    backend = "triton" if device.startswith("cuda") else "c"
    log(f"lazy bench: size {size}, device {device} ({backend} backend), {len(names)} workload(s); "
        f"peers: lazy {' '.join(wanted)}" + "".join(f"; {p}: {why}" for p, why in unavailable.items()
                                                    if why != "not requested"))
    log("measuring the machine: memory bandwidth ... ", end="")
    bw = measure_bandwidth(repeat=max(3, min(repeat, 10)), device=device)
    log(f"copy {bw['copy_gbps']:.1f} GB/s, triad {_triad_text(bw)}; matmul roof ... ", end="")
    mm = measure_matmul(1024 if size != "tiny" else 512, repeat=3, device=device)
    log(f"{mm['gflops']:.0f} GFLOP/s ({mm['method']})")
    limits = {"bandwidth": bw, "matmul": mm}

    record: dict = {
        "schema": history.SCHEMA_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(), "machine": machine_info(device), "versions": versions(tg_version),
        "size": size, "numel": SIZES[size], "device": device, "backend": backend,
        "settings": {"repeat": repeat, "warmup": warmup, "budget_s": budget_s, "cold_compile": cold},
        "peers": ["lazy"] + wanted, "peers_unavailable": unavailable,
        "bandwidth": bw, "matmul": mm, "torch_compile_startup_s": None, "results": [], "wall_s": None,
    }
    with contextlib.ExitStack() as stack:
        if "torch.compile" in wanted:
            # a private Inductor cache: "cold" compiles are really cold, and nothing is left behind
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="lazy-bench-inductor-"))
            stack.enter_context(_env("TORCHINDUCTOR_CACHE_DIR", d))
            log("loading torch.compile (Inductor, once per process) ... ", end="")
            try:
                record["torch_compile_startup_s"] = torch_compile_startup(device)
                log(f"{record['torch_compile_startup_s']:.1f} s")
            except Exception as e:  # noqa: BLE001 (a benchmark records the failure and goes on)
                unavailable["torch.compile"] = f"failed to start: {_short(e)}"
                wanted.remove("torch.compile")
                record["peers"].remove("torch.compile")
                log(f"failed: {_short(e)}")
        peer_objs = make_peers(device, wanted)
        for i, name in enumerate(names, 1):
            w = SUITE[name]
            log(f"[{i:>{len(str(len(names)))}}/{len(names)}] {name:<24}", end="")
            t0 = time.perf_counter()
            try:
                r = bench_workload(w, SIZES[size], peer_objs, repeat=repeat, warmup=warmup, budget_s=budget_s,
                                   cold=cold, limits=limits)
            except Exception as e:  # noqa: BLE001, inputs or the reference failed: record and go on
                r = {"workload": name, "group": w.group, "description": w.description, "status": "failed",
                     "error": _short(e), "missing": None, "peers": {}, "compile": {}}
            r["wall_s"] = time.perf_counter() - t0
            record["results"].append(r)
            log(_progress_line(r))
    # Other processes can hold the cores during one probe: measure again at the end and keep the
    # best of the two (a limit is what the machine can do), then rate every row against it.
    log("measuring the machine again: ", end="")
    bw2 = measure_bandwidth(repeat=max(3, min(repeat, 10)), device=device)
    for k in ("copy_gbps", "triad_gbps", "triad_plain_gbps", "triad_stream_gbps"):
        if k in bw2:
            bw[k + "_start"], bw[k + "_end"] = bw[k], bw2[k]
            bw[k] = max(bw[k], bw2[k])
    mm2 = measure_matmul(mm["shape"][0], repeat=3, device=device)
    mm["gflops_start"], mm["gflops_end"] = mm["gflops"], mm2["gflops"]
    mm["gflops"] = max(mm["gflops"], mm2["gflops"])
    log(f"copy {bw2['copy_gbps']:.1f} GB/s, triad {_triad_text(bw2)}; matmul {mm2['gflops']:.0f} GFLOP/s "
        "(kept: the best of start and end)")
    for r in record["results"]:
        _rate(r, limits)
    record["wall_s"] = time.perf_counter() - t_run
    return record


def _progress_line(r: dict) -> str:
    bits = []
    if r["status"] == "missing":
        bits.append(f"lazy missing ({r['missing']})")
    elif r["status"] in ("failed", "mismatch"):
        bits.append(f"lazy {r['status'].upper()}: {r['error']}")
    for n, e in r["peers"].items():
        if "median_s" in e:
            bits.append(f"{n} {_ms(e['median_s'])}")
    return " | ".join(bits) + f"  ({r['wall_s']:.1f} s)"


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


# -- the table ---------------------------------------------------------------------------------
def format_table(record: dict) -> str:
    """The run as a text table: lazy's time, rate and share of the roof, speedups vs each peer."""
    peers = [p for p in PEERS if p in record["peers"]]
    bw, mm = record["bandwidth"], record["matmul"]
    m = record["machine"]
    commit = (record["git"].get("commit") or "unknown")[:10] + ("+dirty" if record["git"].get("dirty") else "")
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    lines = [
        (f"lazy bench: size {record['size']}, {record['device']} ({record['backend']} backend), "
         f"{m['cpu']} ({m['cpus_usable']} CPUs){gpu}, commit {commit}"),
        (f"limits measured in this run (best of start and end): memory copy {bw['copy_gbps']:.1f} GB/s, "
         f"triad {bw['triad_gbps']:.1f} GB/s; "
         f"matmul {mm['gflops']:.0f} GFLOP/s ({mm['method']})"),
    ]
    short = {"torch.compile": "compile", "lazy.jit": "jit"}
    head = (f"{'workload':<24} {'kern':>4} {'lazy':>10} {'IQR':>5} {'rate':>12} {'roof':>6} {'%roof':>5} "
            f"{'k%roof':>6} {'floor':>9} {'%att':>4} "
            + " ".join(f"{'x ' + short.get(p, p):>10}" for p in peers)
            + f" {'cold s':>7} {'warm s':>7} {'host us':>8}")
    lines += [head, "-" * len(head)]
    for r in record["results"]:
        lz = r["peers"].get("lazy", {})
        if r["status"] == "missing" or "median_s" not in lz:
            why = f"missing: {r['missing']}" if r["status"] == "missing" else f"{r['status']}: {r.get('error')}"
            ref = ", ".join(f"{p} {_ms(r['peers'][p]['median_s'])}" for p in peers
                            if "median_s" in r["peers"].get(p, {}))
            lines.append(f"{r['workload']:<24} {why}" + (f"  [{ref}]" if ref else ""))
            continue
        med = lz["median_s"]
        rate = f"{lz['gflops']:.1f} GF/s" if r.get("flops") else f"{lz['gbps']:.1f} GB/s"
        roof = f"{100 * lz['roof_fraction']:.0f}%" if lz.get("roof_fraction") is not None else "-"
        limit = f"{r['roof_gbps']:.1f}" if r.get("roof_gbps") else "-"
        kroof = f"{100 * r['kernel_roof_fraction']:.0f}%" if r.get("kernel_roof_fraction") else "-"
        floor = _ms(r["compute_floor_s"]) if r.get("compute_floor_s") else "-"
        att = f"{100 * lz['attainable_fraction']:.0f}%" if lz.get("attainable_fraction") else "-"
        iqr = f"{100 * (lz['q3_s'] - lz['q1_s']) / med:.0f}%" if med > 0 else "-"
        cells = []
        for p in peers:
            q = r["peers"].get(p, {})
            if "median_s" not in q:
                cells.append(f"{'-':>10}")
                continue
            mark = "*" if str(q.get("jit_status", "")).startswith("failed") else ""  # ran as plain Python
            cells.append(f"{q['median_s'] / med:.2f}{mark}".rjust(10))
        c = r["compile"]
        cold = f"{c['lazy_cold_s']:.2f}" if "lazy_cold_s" in c else "-"
        warm = f"{c['lazy_warm_s']:.3f}" if "lazy_warm_s" in c else "-"
        host = f"{r['overhead_us']:.0f}" if r.get("overhead_us") is not None else "-"
        flag = "" if r["status"] == "ok" else f"  {r['status'].upper()}"
        lines.append(f"{r['workload']:<24} {r['kernels'] if r['kernels'] is not None else '-':>4} {_ms(med):>10} "
                     f"{iqr:>5} {rate:>12} {limit:>6} {roof:>5} {kroof:>6} {floor:>9} {att:>4} " + " ".join(cells)
                     + f" {cold:>7} {warm:>7} {host:>8}{flag}")
    lines.append("x peer = peer time / lazy time (above 1: lazy is faster); roof = GB/s of the C triad over the "
                 "same bytes, timed in the same rounds as the peers (the faster of plain and streaming stores); "
                 "%roof = share of it (GB/s rows) or of the matmul roof (GF/s rows); k%roof = the same for "
                 "lazy's kernels alone (no host time); floor = lazy's kernels on a cache-resident copy, scaled "
                 "to the row's bytes (the compute limit); %att = share of the attainable time, the larger of "
                 "the bytes at the roof and the floor; * = lazy.jit could not replay the function (it ran as "
                 "plain Python; the JSON says why); cold/warm = lazy's first-call time with an empty / "
                 "filled disk cache; host us = lazy's time per call outside kernels")
    load, cpus = m.get("load_avg_1min"), m.get("cpus_usable") or 1
    if load is not None and load > 0.5 * cpus:
        lines.append(f"warning: load average {load:.1f} on {cpus} CPUs when the run started: other processes were "
                     "busy, timings are noisy")
    if record.get("peers_unavailable"):
        lines.append("not run: " + "; ".join(f"{p} ({why})" for p, why in record["peers_unavailable"].items()))
    tc = [r["compile"] for r in record["results"] if "torch.compile_cold_s" in r.get("compile", {})]
    if tc:
        lines.append(f"torch.compile: startup {record['torch_compile_startup_s']:.1f} s, compile per workload "
                     f"cold {statistics.median(c['torch.compile_cold_s'] for c in tc):.2f} s / warm "
                     f"{statistics.median(c['torch.compile_warm_s'] for c in tc):.2f} s (median)")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `lazy bench` (and `python -m perf.run`)."""
    from perf import history

    ap.add_argument("--suite", choices=["kernels", "models"], default="kernels",
                    help="kernels: the workloads of perf/workloads.py (default); models: training steps and "
                         "inference of the models in perf/models (MNIST CNN, ResNet-18, GPT, VAE, DCGAN; "
                         "sizes tiny and small)")
    ap.add_argument("--size", choices=list(SIZES), default="small",
                    help="problem size: tiny (seconds, for tests), small (default, a few minutes on 2 cores), "
                         "medium, large")
    ap.add_argument("--filter", default="", metavar="NAMES",
                    help="comma-separated substrings: run the workloads whose name contains one "
                         f"(workloads: {', '.join(SUITE)})")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--repeat", type=int, default=10, help="timed calls per peer (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per peer before timing (default 2)")
    ap.add_argument("--budget", type=float, default=10.0, metavar="SECONDS",
                    help="stop timing a workload after this long (at least 3 rounds; default 10)")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated peers besides lazy (default: {','.join(PEERS)}; "
                         "tinygrad runs only when installed)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves ~20 s of startup)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold/warm compile-time measurement")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: cuda (Triton backend) when a GPU is present, else cpu (C backend)")
    ap.add_argument("--json", action="store_true", help="print the run record as JSON instead of the table")
    ap.add_argument("--output", default=None, metavar="HISTORY.jsonl",
                    help=f"append the run record to this history file (default {history.default_history()})")
    ap.add_argument("--dashboard", default=None, metavar="HTML",
                    help="write the dashboard here (default: dashboard.html beside the history file)")
    ap.add_argument("--no-save", action="store_true", help="write neither history nor dashboard")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")


def unwritable(path) -> str | None:
    """Why a file could not be written at `path` (None: it could), without creating anything:
    the path is not a directory, and its nearest existing ancestor is a writable directory."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return "it is a directory (name a file)"
    if p.exists():
        return None if os.access(p, os.W_OK) else "permission denied"
    d = p.parent
    while not d.exists():
        d = d.parent
    if not d.is_dir():
        return f"{d} is not a directory"
    return None if os.access(d, os.W_OK | os.X_OK) else f"{d} is not writable"


def run_from_args(args) -> int:
    """`lazy bench`: 0 all ran and matched, 1 a workload failed or mismatched, 2 bad usage."""
    import json
    from pathlib import Path

    from perf import dashboard, history

    if args.suite == "models":
        from perf.models.bench import run_from_args as run_models

        return run_models(args)
    if args.list:
        for n, w in SUITE.items():
            why = w.missing()
            print(f"{n:<24} {w.group:<14} {w.description}" + (f"  [missing: {why}]" if why else ""))
        return 0
    try:
        names = select(args.filter)
    except ValueError as e:
        print(f"lazy bench: {e}", file=sys.stderr)
        return 2
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        print(f"lazy bench: unknown peer(s) {', '.join(bad)}; valid peers: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    if args.no_compile and "torch.compile" in peers:
        peers.remove("torch.compile")
    if args.repeat < 1 or args.warmup < 0:
        print("lazy bench: --repeat must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        print("lazy bench: --device cuda, but torch sees no GPU", file=sys.stderr)
        return 2
    out_path = Path(args.output) if args.output else history.default_history()
    dash_path = Path(args.dashboard) if args.dashboard else out_path.with_name("dashboard.html")
    if not args.no_save:
        for p, what in ((out_path, "--output"), (dash_path, "--dashboard")):
            why = unwritable(p)
            if why:
                print(f"lazy bench: {what}: cannot write {p}: {why}", file=sys.stderr)
                return 2

    record = run_bench(names, args.size, device=device, peers=peers, repeat=args.repeat, warmup=args.warmup,
                       budget_s=args.budget, cold=not args.no_cold, progress=not args.quiet)
    if args.json:
        print(json.dumps(record, indent=1, allow_nan=False))
    else:
        print(format_table(record))
    if not args.no_save:
        try:
            history.append(out_path, record)  # (append and write create missing directories)
            records, problems = history.load(out_path)
            for p in problems:
                print(f"lazy bench: {p}", file=sys.stderr)
            dashboard.write(records, dash_path)
        except OSError as e:  # checked up front, but the disk may fill or the mode change during the run
            print(f"lazy bench: cannot save the run: {e}", file=sys.stderr)
            return 2
        print(f"history: {out_path} ({len(records)} run(s)); dashboard: {dash_path}", file=sys.stderr)
    bad_rows = [r["workload"] for r in record["results"] if r["status"] in ("failed", "mismatch")]
    if bad_rows:
        print(f"lazy bench: failed: {', '.join(bad_rows)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
