"""CPU GEMM with a fused epilogue: lazy's C GEMM template against BLAS + epilogue, and peers.

Usage: `python -m perf.gemm_c_vs_blas [--grid] [--repeat N] [--no-compile] [--filter NAME,...]`

Default: the issue's cases, `gelu(x @ w + b)` for (M, K, N) in (512, 512, 512), (2048, 2048, 2048),
(4096, 1024, 4096), and batched attention scores `(q @ k^T) * d**-0.5` with q, k of shape
(32, 1024, 64). Per case, GFLOP/s of: torch.mm / torch.bmm alone into a preallocated output (the
BLAS's own GEMM throughput: the roof), numpy (matmul, bias, tanh-form gelu), torch eager
(`gelu(addmm(b, x, w))`; `q @ k.mT * s`), torch.compile of the same, lazy with BLAS + in-place
epilogue (LAZY_GEMM=blas: 2 launches) and lazy with the C GEMM (LAZY_GEMM=c: 1 launch); then the
ratios (C GEMM fused / torch eager end to end; the fused kernel / the BLAS roof and / BLAS + epilogue
kernels) and what `choose_impl` picks. Lazy's kernel time alone (from `lazy.profile`) is shown
too: end to end it also pays for building the graph in Python and realizing it (~0.5-1 ms).

`--grid`: the data behind `gemm_c.choose_impl`: for square, skinny, transposed-weight and batched
shapes, the kernel time of the two lazy paths (launches only, no graph building), with and without
an epilogue, next to torch.mm.

How it measures: one process; each timed round calls every contender once, in rotated order, so a
burst of load from another process hits all of them alike (numpy apart, after the others: its
OpenBLAS threads keep spinning after a call and would slow the next contender); the median of the rounds is reported
(`--stat min`: the best round, the machine's capability when other processes share the cores).
lazy is timed end to end (graph building, schedule lookup, allocation, launches), like torch eager.
Progress goes to stderr, the table to stdout. lazy is imported before torch, so every contender
runs under the OpenMP wait policy `import lazy` sets (idle workers spin briefly, then sleep, unless
OMP_WAIT_POLICY says otherwise; see lazy/__init__.py).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

# isort: off
import lazy  # first: it sets lazy's OpenMP wait policy, which libgomp reads when torch loads it
# isort: on
import numpy as np
import torch

from codegen import gemm_c
from codegen.kernel_ir import ExternCall
from lazy import runtime
from lazy.graph import structure_key
from scheduler import schedule


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Case:
    name: str
    inputs: list[np.ndarray]
    flops: int
    lazy: Callable
    torch: Callable
    numpy: Callable
    roof: Callable  # torch tensors -> the bare GEMM into a preallocated output


def _gelu_np(y):
    return 0.5 * y * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))


def linear_case(m: int, k: int, n: int) -> Case:
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal((m, k), dtype=np.float32) * 0.5,
           rng.standard_normal((k, n), dtype=np.float32) / np.float32(k ** 0.5),
           rng.standard_normal(n, dtype=np.float32)]
    out = torch.empty(m, n)
    return Case(f"gelu(x@w+b) {m}x{k}x{n}", ins, 2 * m * k * n,
                lazy=lambda x, w, b: (x @ w + b).gelu(),
                torch=lambda x, w, b: torch.nn.functional.gelu(torch.addmm(b, x, w)),
                numpy=lambda x, w, b: _gelu_np(x @ w + b),
                roof=lambda x, w, b: torch.mm(x, w, out=out))


def attention_case(bh: int, s: int, d: int) -> Case:
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal((bh, s, d), dtype=np.float32) for _ in range(2)]
    scale = d ** -0.5
    out = torch.empty(bh, s, s)
    return Case(f"q@k^T*s {bh}x{s}x{d}", ins, 2 * bh * s * s * d,
                lazy=lambda q, k: (q @ k.transpose(-2, -1)) * scale,
                torch=lambda q, k: (q @ k.mT) * scale,
                numpy=lambda q, k: (q @ k.transpose(0, 2, 1)) * np.float32(scale),
                roof=lambda q, k: torch.bmm(q, k.mT, out=out))


CASES = [lambda: linear_case(512, 512, 512), lambda: linear_case(2048, 2048, 2048),
         lambda: linear_case(4096, 1024, 4096), lambda: attention_case(32, 1024, 64)]


STAT = {"median": statistics.median, "min": min}


def _rounds(fns: dict[str, Callable], repeat: int, warmup: int = 1, stat: str = "median") -> dict[str, float]:
    """Seconds per contender (median or best of the rounds); each round calls all of them once,
    in rotated order."""
    names = list(fns)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    return {n: STAT[stat](ts) for n, ts in times.items()}


def _lazy_call(fn, mode: str, args, kernel_seconds: list):
    def call():
        os.environ["LAZY_GEMM"] = mode
        with lazy.profile() as p:
            out = fn(*args).realize()
        kernel_seconds.append(p.seconds)
        return out
    return call


def _gemm_call_of(y) -> ExternCall:
    _, bufs, _ = structure_key([y._node])
    return next(k for k in schedule([y._node], bufs).kernels if isinstance(k, ExternCall))


def _compile_all(cases: list[Case]) -> dict[str, Callable]:
    """torch.compile of every case, compiled before anything is timed (Inductor's compile workers
    would otherwise share the cores with the first timed case)."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    out = {}
    for case in cases:
        tt = [torch.from_numpy(a) for a in case.inputs]
        try:
            t0 = time.perf_counter()
            compiled = torch.compile(case.torch)
            compiled(*tt)
            _log(f"{case.name}: torch.compile first call {time.perf_counter() - t0:.1f} s")
            out[case.name] = compiled
        except Exception as e:  # noqa: BLE001 (a peer that cannot run is reported, not fatal)
            _log(f"{case.name}: torch.compile failed: {type(e).__name__}: {e}")
    return out


def bench_cases(cases: list[Case], repeat: int, compile_: bool, stat: str = "median") -> list[dict]:
    rows = []
    compiled = _compile_all(cases) if compile_ else {}
    for case in cases:
        _log(f"{case.name}: preparing")
        tt = [torch.from_numpy(a) for a in case.inputs]
        lt = [lazy.tensor(a) for a in case.inputs]
        fns = {"blas roof": lambda tt=tt, c=case: c.roof(*tt),
               "torch": lambda tt=tt, c=case: c.torch(*tt)}
        if case.name in compiled:
            fns["torch.compile"] = lambda tt=tt, f=compiled[case.name]: f(*tt)
        kernels: dict[str, list] = {"blas+epi kernels": [], "c fused kernel": []}
        fns["lazy blas+epi"] = _lazy_call(case.lazy, "blas", lt, kernels["blas+epi kernels"])
        fns["lazy c fused"] = _lazy_call(case.lazy, "c", lt, kernels["c fused kernel"])
        ref = case.torch(*tt)
        for mode in ("blas", "c"):
            os.environ["LAZY_GEMM"] = mode
            got = case.lazy(*lt).torch()
            err = float((got - ref).abs().max()) / (1 + float(ref.abs().max()))
            if err > 1e-3:
                raise AssertionError(f"{case.name}: lazy ({mode}) differs from torch by {err:.2e}")
        os.environ.pop("LAZY_GEMM", None)
        pick = gemm_c.choose_impl(_gemm_call_of(case.lazy(*lt)))  # LAZY_GEMM unset: the auto rule
        n = max(3, min(repeat, int(2.0 / max(case.flops / 150e9, 1e-6))))
        _log(f"  timing {len(fns)} contenders x {n} rounds")
        t = _rounds(fns, n, stat=stat)
        # numpy's OpenBLAS keeps its own threads spinning for a while after each call, which would
        # slow whatever runs next on the two cores: it is timed on its own, after the others
        t.update(_rounds({"numpy": lambda c=case: c.numpy(*c.inputs)}, n, stat=stat))
        time.sleep(0.5)
        t.update({k: STAT[stat](v[1:]) for k, v in kernels.items()})  # [0]: the warm-up call
        os.environ.pop("LAZY_GEMM", None)
        rows.append({"case": case.name, "flops": case.flops, "seconds": t, "pick": pick})
    return rows


def print_cases(rows: list[dict]) -> None:
    """GFLOP/s end to end (lazy: graph building and realize included), then lazy's kernel time
    alone; ratios: c/torch end to end, c/roof and c/blas kernel against kernel(s)."""
    cols = ["blas roof", "numpy", "torch", "torch.compile", "lazy blas+epi", "lazy c fused",
            "blas+epi kernels", "c fused kernel"]
    print(f"{'GFLOP/s':<28}" + "".join(f"{c:>17}" for c in cols)
          + f"{'c/torch':>9}{'c/roof':>8}{'c/blas':>8}  pick")
    for r in rows:
        t = r["seconds"]
        gf = {c: r["flops"] / t[c] / 1e9 for c in t}
        cells = "".join(f"{gf[c]:>17.1f}" if c in gf else f"{'-':>17}" for c in cols)
        ck = t["c fused kernel"]
        print(f"{r['case']:<28}{cells}{t['torch'] / t['lazy c fused']:>9.2f}{t['blas roof'] / ck:>8.2f}"
              f"{t['blas+epi kernels'] / ck:>8.2f}  {r['pick']}")


# -- the grid behind choose_impl -----------------------------------------------------------------

GRID = ([(n, n, n) for n in (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)]
        + [(1, 4096, 4096), (8, 4096, 4096), (32, 4096, 4096), (128, 4096, 4096), (4096, 4096, 8),
           (4096, 4096, 32), (4096, 4096, 128), (4096, 16, 4096), (4096, 64, 4096), (1024, 8192, 1024),
           (64, 1024, 4096), (256, 4096, 1024), (4096, 1024, 4096)])
GRID_T = [(m, k, n, "wT") for m, k, n in ((128, 1024, 1024), (512, 512, 512), (2048, 2048, 2048), (16, 4096, 4096))]
GRID_B = [(32, 1024, 64, 1024), (32, 128, 64, 128), (256, 64, 64, 64), (8, 512, 512, 512)]


def _program(y, mode: str):
    os.environ["LAZY_GEMM"] = mode
    prog, bufs, scalar_nodes, sizes, _, dev = runtime.program_for([y._node])
    scalars = [c.arg for c in scalar_nodes]
    slots = [b.data for b in bufs] + [runtime._alloc(s, d, dev) for s, d in prog.allocs]

    def run():
        for ln in prog.launches:
            ln(slots, scalars, sizes)
    return run


def grid(repeat: int, stat: str = "median") -> None:
    specs = [((), m, k, n, False) for m, k, n in GRID] + [((), m, k, n, True) for m, k, n, _ in GRID_T]
    specs += [((b,), m, k, n, False) for b, m, k, n in GRID_B]
    print(f"{'shape (batch x M x K x N)':<30}{'epilogue':<10}{'mm GF/s':>9}{'blas GF/s':>10}{'c GF/s':>9}"
          f"{'c/blas':>8}  pick")
    rng = np.random.default_rng(0)
    for batch, m, k, n, wt in specs:
        x = lazy.tensor(rng.standard_normal((*batch, m, k), dtype=np.float32))
        w = lazy.tensor(rng.standard_normal((n, k) if wt else (*batch, k, n), dtype=np.float32))
        b = lazy.tensor(rng.standard_normal(n, dtype=np.float32))
        w_ = w.T if wt else w
        xt, wt_ = x.torch(), w_.torch()
        out = torch.empty(*batch, m, n)
        flops = 2 * math.prod(batch) * m * k * n
        label = "x".join(map(str, (*batch, m, k, n))) + (" (w.T)" if wt else "")
        for epi in (False, True):
            y = (x @ w_ + b).gelu() if epi else x @ w_
            _log(f"grid {label} {'gelu+bias' if epi else 'none'}")
            fns = {"mm": lambda xt=xt, wt_=wt_, out=out: torch.matmul(xt, wt_, out=out),
                   "blas": _program(y, "blas"), "c": _program(y, "c")}
            os.environ.pop("LAZY_GEMM", None)
            inner = max(1, int(2e-3 / max(flops / 150e9, 1e-7)))  # batch tiny calls to ~2 ms
            batched = {kk: (lambda f=f, n=inner: [f() for _ in range(n)]) for kk, f in fns.items()}
            rounds = max(3, min(repeat, int(1.0 / max(inner * flops / 150e9, 1e-6))))
            t = {kk: v / inner for kk, v in _rounds(batched, rounds, stat=stat).items()}
            gf = {kk: flops / v / 1e9 for kk, v in t.items()}
            pick = gemm_c.choose_impl(_gemm_call_of(y))
            print(f"{label:<30}{'gelu+bias' if epi else 'none':<10}{gf['mm']:>9.1f}{gf['blas']:>10.1f}"
                  f"{gf['c']:>9.1f}{t['blas'] / t['c']:>8.2f}  {pick}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.gemm_c_vs_blas", description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true", help="kernel times of both lazy paths over a grid of shapes")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds (fewer for slow cases)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--filter", default="", help="comma-separated substrings of case names")
    ap.add_argument("--stat", choices=list(STAT), default="median",
                    help="per contender: the median of the rounds, or the best (on a busy machine)")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"threads {torch.get_num_threads()}, load average {load:.2f} at start"
          + ("  (other processes are busy: timings are noisy)" if load > (os.cpu_count() or 1) / 2 else ""))
    if args.grid:
        grid(args.repeat, args.stat)
        return 0
    cases = [c() for c in CASES]
    if args.filter:
        cases = [c for c in cases if any(f in c.name for f in args.filter.split(","))]
    print(f"{args.stat} of the rounds")
    print_cases(bench_cases(cases, args.repeat, not args.no_compile, args.stat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
