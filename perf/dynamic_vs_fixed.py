"""Kernels for sizes that change against kernels for one size: the same computation at the same
shape, one kernel built with the changing size as an argument (lazy/dynamic.py; its hint is this
shape) and one built for the shape alone, timed in one process, calls alternating.

    python -m perf.dynamic_vs_fixed [--repeat 30] [--cpu] [NAME...]

Prints per workload: milliseconds (median) and GB/s of each, symbolic / fixed of the medians and of
the fastest calls (on a machine shared with other work the fastest calls say more about the code).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch

import lazy
from codegen import compile_c, render_c
from codegen.kernel_ir import Kernel, size_fn
from lazy import runtime

F = lazy.nn.functional
N = 4096
WORKLOADS = {  # name: (function of lazy tensors, input shapes at N, input shapes at another size of the changing dim)
    "softmax, row length changes": (lambda x: x.softmax(-1), [(N, N)], [(N, N - 96)]),
    "softmax, rows change": (lambda x: x.softmax(-1), [(N, N)], [(N - 96, N)]),
    "layer norm, row length changes": (lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b),
                                       [(N, N), (N,), (N,)], [(N, N - 96), (N - 96,), (N - 96,)]),
    "add, row length changes": (lambda x, y: x + y, [(N, N), (N, N)], [(N, N - 96), (N, N - 96)]),
    "add, rows change": (lambda x, y: x + y, [(N, N), (N, N)], [(N - 96, N), (N - 96, N)]),
    "column sum, rows change": (lambda x: x.sum(0), [(N, N)], [(N - 96, N)]),
}


def kernel(fn, shapes_seq) -> Kernel:
    """The (one) kernel `fn` runs at the last shapes of `shapes_seq`, built in fresh program tables."""
    saved = [(t, dict(t)) for t in (runtime._programs, runtime._families, runtime._bound)]
    for t, _ in saved:
        t.clear()
    ks: list = []
    runtime.kernel_listeners.append(lambda k, backend: ks.append(k))
    try:
        for shapes in shapes_seq:
            ks.clear()
            lazy.realize(fn(*[lazy.tensor(torch.randn(*s)) for s in shapes]))
    finally:
        runtime.kernel_listeners.pop()
        for t, old in saved:
            t.clear()
            t.update(old)
    (k,) = ks
    return k


def caller(k: Kernel, sizes: tuple, bufs: list[torch.Tensor] | None = None):
    """(a zero-argument call of `k`, the bytes it moves, its buffers): on `bufs`, or on fresh ones
    (both kernels run on the same memory: where buffers lie changes a memory-bound kernel's time)."""
    fn = compile_c.load(render_c.render_c(k))
    fn.argtypes = ([ctypes.c_void_p] * len(k.buffers) + compile_c.scalar_argtypes(k.scalars)
                   + [ctypes.c_int64] * len(k.sizes))
    numels = size_fn([b.numel for b in k.buffers], k.sizes)(*sizes)
    bufs = bufs or [torch.randn(n) for n in numels]
    assert [b.numel() for b in bufs] == list(numels)
    args = [b.data_ptr() for b in bufs] + list(k.meta.get("scalar_values", ())) + list(sizes)
    moved = size_fn((k.meta["bytes_read"], k.meta["bytes_written"]), k.sizes)(*sizes)
    return (lambda bufs=bufs: fn(*args)), sum(moved), bufs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cpu", action="store_true",
                    help="time the process's CPU time instead of the wall clock (less noise from other processes)")
    ap.add_argument("names", nargs="*", help="workloads whose name contains one of these (default: all)")
    args = ap.parse_args(argv)
    print(f"{'workload':<34} {'fixed ms':>9} {'GB/s':>6} {'symbolic ms':>12} {'GB/s':>6} {'sym/fixed':>10} {'(fastest)':>10}")
    for name, (fn, shapes, other) in WORKLOADS.items():
        if args.names and not any(n in name for n in args.names):
            continue
        fixed = kernel(fn, [shapes])
        sym = kernel(fn, [other, shapes])
        assert not fixed.sizes and sym.sizes, name
        hints = sym.meta["hints"]
        call_f, nbytes, bufs = caller(fixed, ())
        call_s, _, _ = caller(sym, tuple(hints[s] for s in sym.sizes), bufs)
        for c in (call_f, call_s, call_f, call_s):  # warm up: pages, threads
            c()
        clock = time.process_time if args.cpu else time.perf_counter
        tf, ts = [], []
        for i in range(args.repeat):  # alternating, in turns (ABBA): drift and order reach both alike
            for c, out in ((call_f, tf), (call_s, ts))[::1 if i % 2 else -1]:
                t = clock()
                c()
                out.append(clock() - t)
        f, s = statistics.median(tf), statistics.median(ts)
        print(f"{name:<34} {f * 1e3:9.3f} {nbytes / f / 1e9:6.1f} {s * 1e3:12.3f} {nbytes / s / 1e9:6.1f} {s / f:10.3f}"
              f" {min(ts) / min(tf):10.3f}", flush=True)


if __name__ == "__main__":
    main()
