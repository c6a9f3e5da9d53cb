"""Run the workloads against peers in one process and print a table.

Usage: `python -m perf.run [--size small|medium|large] [--filter NAME] [--no-compile]`

Every peer is timed in the same process, interleaved per workload: warm-up calls first
(compiles happen there and are reported apart), then `repeat` timed calls; the median is
reported with the spread. lazy is timed end to end: building the graph, realizing it
(schedule lookup, allocation, kernel launches) and returning the result tensor.
The machine's memory bandwidth is measured in the same run by an OpenMP C copy and triad,
so each row shows what fraction of the physical limit it reaches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from perf.workloads import SIZES, WORKLOADS

TRIAD_C = r"""
#include <stdint.h>
void copy(float* restrict a, const float* restrict b, int64_t n) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = b[i];
}
void triad(float* restrict a, const float* restrict b, const float* restrict c, float s, int64_t n) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}
"""


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


def measure_bandwidth(n: int = 1 << 24, repeat: int = 10) -> dict:
    """GB/s of an OpenMP C copy and triad over arrays far larger than the caches."""
    import ctypes

    from codegen import compile_c

    lib_copy = compile_c.load(TRIAD_C, "copy")
    lib_triad = compile_c.load(TRIAD_C, "triad")
    lib_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib_triad.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64]
    a, b, c = (np.ones(n, dtype=np.float32) for _ in range(3))
    pa, pb, pc = (x.ctypes.data for x in (a, b, c))
    copy_s = _time(lambda: lib_copy(pa, pb, n), repeat)[1]
    triad_s = _time(lambda: lib_triad(pa, pb, pc, 3.0, n), repeat)[1]
    return {"copy_gbps": 2 * 4 * n / copy_s / 1e9, "triad_gbps": 3 * 4 * n / triad_s / 1e9}


def run_workload(w, numel: int, repeat: int, peers: list[str], log=print) -> dict:
    import torch

    import lazy

    inputs = w.make_inputs(numel)
    t_in = [torch.from_numpy(a) for a in inputs]
    l_in = [lazy.tensor(t) for t in t_in]
    res: dict = {"workload": w.name, "bytes": w.bytes(inputs), "shape": list(inputs[0].shape), "peers": {}}

    def lazy_call():
        return w.lazy(*l_in).realize()

    t0 = time.perf_counter()
    with lazy.profile() as prof:
        out = lazy_call()
    res["lazy_first_call_s"] = time.perf_counter() - t0
    res["kernels"] = len(prof.kernels)
    ref = w.torch(*t_in)
    res["max_abs_err"] = float((out.torch().double() - ref.double()).abs().max())
    fns = {"lazy": lazy_call, "torch": lambda: w.torch(*t_in), "numpy": lambda: w.numpy(*inputs)}
    if "torch.compile" in peers:
        compiled = torch.compile(w.torch)
        t0 = time.perf_counter()
        compiled(*t_in)
        res["torch_compile_first_call_s"] = time.perf_counter() - t0
        fns["torch.compile"] = lambda: compiled(*t_in)
    for name in peers:
        if name not in fns:
            continue
        med, lo, hi = _time(fns[name], repeat)
        res["peers"][name] = {"median_s": med, "min_s": lo, "max_s": hi, "gbps": res["bytes"] / med / 1e9}
        log(f"  {w.name:<18} {name:<14} {med * 1e3:9.3f} ms  ({lo * 1e3:.3f}..{hi * 1e3:.3f})")
    return res


def format_table(results: list[dict], bw: dict) -> str:
    peers = ["numpy", "torch", "torch.compile"]
    head = (f"{'workload':<18} {'kernels':>7} {'lazy ms':>9} {'GB/s':>7} {'%copy':>6} "
            + " ".join(f"{'x ' + p:>15}" for p in peers))
    lines = [f"memory bandwidth (OpenMP C, this run): copy {bw['copy_gbps']:.1f} GB/s, "
             f"triad {bw['triad_gbps']:.1f} GB/s", head, "-" * len(head)]
    for r in results:
        lz = r["peers"].get("lazy")
        if lz is None:
            continue
        cells = []
        for p in peers:
            q = r["peers"].get(p)
            cells.append(f"{q['median_s'] / lz['median_s']:>15.2f}" if q else f"{'-':>15}")
        lines.append(f"{r['workload']:<18} {r['kernels']:>7} {lz['median_s'] * 1e3:>9.3f} {lz['gbps']:>7.1f} "
                     f"{100 * lz['gbps'] / bw['copy_gbps']:>5.0f}% " + " ".join(cells))
    lines.append("x peer = peer time / lazy time (above 1: lazy is faster)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="large")
    ap.add_argument("--filter", default="", help="only workloads whose name contains this")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves ~20 s of startup)")
    args = ap.parse_args(argv)
    names = [n for n in WORKLOADS if args.filter in n]
    if not names:
        print(f"no workload matches {args.filter!r}; workloads: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    peers = ["lazy", "numpy", "torch"] + ([] if args.no_compile else ["torch.compile"])
    bw = measure_bandwidth()
    results = [run_workload(WORKLOADS[n], SIZES[args.size], args.repeat, peers) for n in names]
    print(format_table(results, bw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
