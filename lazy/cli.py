"""The `lazy` command.

Subcommands:
  demo   run a few workloads, print their fused kernels, time and speedup against torch eager
  bench  the benchmark table against numpy, torch eager and torch.compile (perf/run.py)
Exit codes: 0 success, 1 a workload failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import lazy
    from perf.run import run_workload
    from perf.workloads import SIZES, WORKLOADS

    print(f"lazy demo: C backend on the CPU, {SIZES[args.size]:,} elements per workload")
    failed = 0
    for name, w in WORKLOADS.items():
        try:
            r = run_workload(w, SIZES[args.size], args.repeat, ["lazy", "torch"], log=lambda *_: None)
        except Exception as e:  # a demo keeps going and reports
            print(f"{name:<18} FAILED: {type(e).__name__}: {e}")
            failed += 1
            continue
        lz, te = r["peers"]["lazy"], r["peers"]["torch"]
        print(f"{name:<18} {r['kernels']} kernel(s)  lazy {lz['median_s'] * 1e3:8.3f} ms  "
              f"torch eager {te['median_s'] * 1e3:8.3f} ms  speedup {te['median_s'] / lz['median_s']:5.2f}x  "
              f"({lz['gbps']:.1f} GB/s, max |err| {r['max_abs_err']:.1e})")
        x = lazy.tensor(w.make_inputs(1 << 12)[0])
        with lazy.profile() as p:
            w.lazy(*[x] + [lazy.tensor(a) for a in w.make_inputs(1 << 12)[1:]]).realize()
        print("    kernels: " + ", ".join(k.name for k in p.kernels))
    return 1 if failed else 0


def _bench(args) -> int:
    from perf.run import main as bench_main

    argv = ["--size", args.size]
    if args.filter:
        argv += ["--filter", args.filter]
    if args.no_compile:
        argv.append("--no-compile")
    return bench_main(argv)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lazy", description="lazy-triton: lazy tensors fused into few kernels")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run a few workloads and show fused kernels and speedups vs torch")
    d.add_argument("--size", choices=["small", "medium", "large"], default="medium")
    d.add_argument("--repeat", type=int, default=5)
    d.set_defaults(fn=_demo)
    b = sub.add_parser("bench", help="benchmark against numpy, torch eager and torch.compile")
    b.add_argument("--size", choices=["small", "medium", "large"], default="large")
    b.add_argument("--filter", default="")
    b.add_argument("--no-compile", action="store_true")
    b.set_defaults(fn=_bench)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
