"""Tuned against default, per benchmark workload: does tuning pay for itself on this machine?

Usage: `python -m perf.tune_bench [--size large] [--filter NAMES] [--budget-s 10] [--json]`

For each workload of perf/workloads.py (lazy side only): run it once (compile), tune every
kernel it launches with `lazy.tune` into a private tuning database, then time the whole workload
end to end (like `lazy bench`) with the default configs and with the tuned ones, alternating the
two in several rounds so that drift and other processes hit both alike (each program keeps both
lists of launches, swapped in place: lazy.jit's replays of the training steps switch with them). Prints per workload: default ms, tuned ms,
speedup, tuning seconds (total and per kernel), and the kernels whose config changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from perf.run import _env, _seq, select
from perf.workloads import SIZES, SUITE


def _time_calls(call, repeat: int, warmup: int = 1) -> list[float]:
    import gc

    from codegen.tune import gc_paused

    for _ in range(warmup):
        call()
    out = []
    gc.collect()
    with gc_paused():
        for _ in range(repeat):
            t = time.perf_counter()
            call()
            out.append(time.perf_counter() - t)
    return out


def bench_one(name: str, size: str, *, budget_s: float, max_configs: int, rounds: int, repeat: int, db: Path,
              log) -> dict:
    import lazy
    from codegen import tune
    from lazy import runtime

    w = SUITE[name]
    inputs = w.make_inputs(SIZES[size])
    args = [lazy.tensor(a) for a in inputs]

    def call():
        return lazy.realize(*_seq(w.lazy(*args)))

    runtime._programs.clear()  # only this workload's programs below
    call()  # compile the defaults (the database has nothing for these kernels yet)
    t0 = time.perf_counter()
    report = lazy.tune(lambda: w.lazy(*args), budget_s=budget_s, max_configs=max_configs, progress=True)
    tuning_s = time.perf_counter() - t0
    # each program's launches on both sides; switching swaps the lists in place, which also
    # switches what lazy.jit replays (it holds the same Program objects)
    progs = list(runtime._programs.values())
    sides = {True: [list(pr.launches) for pr in progs]}
    with _env("LAZY_TUNE_DB", str(db.with_name("no-such-db.sqlite"))):
        tune.forget()
        sides[False] = [[_default_launch(ln) for ln in pr.launches] for pr in progs]
    tune.forget()

    def use(tuned: bool) -> None:
        for pr, launches in zip(progs, sides[tuned]):
            pr.launches[:] = launches

    samples: dict[bool, list[float]] = {False: [], True: []}
    try:
        for r in range(rounds):
            for tuned in ((False, True) if r % 2 == 0 else (True, False)):
                use(tuned)
                samples[tuned] += _time_calls(call, repeat)
    finally:
        use(True)
    d, t = statistics.median(samples[False]), statistics.median(samples[True])
    dmin, tmin = min(samples[False]), min(samples[True])
    kernels = []
    for k in report.kernels:
        kernels.append({"name": k.name, "key": k.key, "default_ms": k.default_s * 1e3, "tuned_ms": k.best_s * 1e3,
                        "speedup": k.speedup, "configs": k.tried, "tuning_s": k.seconds, "stop": k.stop,
                        "rejected": len(k.rejected),
                        "changed": {f: v for f, v in asdict(k.best).items() if getattr(k.default, f) != v}})
    res = {"workload": name, "size": size, "default_ms": d * 1e3, "tuned_ms": t * 1e3, "speedup": d / t,
           "default_min_ms": dmin * 1e3, "tuned_min_ms": tmin * 1e3, "speedup_min": dmin / tmin,
           "same_code": not any(k["changed"] for k in kernels),
           "default_iqr_ms": _iqr(samples[False]) * 1e3, "tuned_iqr_ms": _iqr(samples[True]) * 1e3,
           "tuning_s": tuning_s, "kernels": kernels, "failed": report.failed}
    log(f"{name:<24} default {d * 1e3:9.3f} ms  tuned {t * 1e3:9.3f} ms  {d / t:5.2f}x  "
        f"tuning {tuning_s:6.1f} s for {len(kernels)} kernel(s)")
    return res


def _default_launch(ln):
    """`ln` as compiled without a tuned config (itself when it has none)."""
    from lazy import runtime

    if ln.config is None:
        return ln
    backend = "triton" if ln.backend == "extern" else ln.backend  # a Triton GEMM: C-backend GEMMs have no config
    (default,) = runtime._compile(ln.kernel, backend)
    return default


def _iqr(ts: list[float]) -> float:
    if len(ts) < 4:
        return 0.0
    q = statistics.quantiles(ts, n=4)
    return q[2] - q[0]


def format_table(results: list[dict]) -> str:
    head = (f"{'workload':<24} {'default ms':>11} {'tuned ms':>10} {'speedup':>8} {'min/min':>8} {'tuning s':>9} "
            f"{'kernels':>7} {'s/kernel':>8}  changed configs")
    out = [head, "-" * len(head)]
    for r in results:
        n = max(len(r["kernels"]), 1)
        changed = "; ".join(f"{k['name']}: " + " ".join(f"{f}={v}" for f, v in k["changed"].items())
                            for k in r["kernels"] if k["changed"])
        out.append(f"{r['workload']:<24} {r['default_ms']:>11.3f} {r['tuned_ms']:>10.3f} {r['speedup']:>7.2f}x "
                   f"{r['speedup_min']:>7.2f}x {r['tuning_s']:>9.1f} {len(r['kernels']):>7} {r['tuning_s'] / n:>8.1f}  "
                   f"{changed or '- (same code: differences are noise)'}")
    out.append("default/tuned ms: medians of all timed calls; speedup: their ratio; min/min: ratio of the fastest "
               "calls (other processes only add time)")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.tune_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="large")
    ap.add_argument("--filter", default="", metavar="NAMES", help="comma-separated substrings of workload names")
    ap.add_argument("--budget-s", type=float, default=10.0, help="tuning wall time per kernel (default 10)")
    ap.add_argument("--max-configs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=10, help="alternating default/tuned timing rounds (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per round (default 3)")
    ap.add_argument("--db", default=None, help="tuning database to use (default: a fresh temporary one)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    try:
        names = select(args.filter)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    results = []
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus / 2:
        print(f"warning: load average {load:.1f} on {cpus} CPUs: other processes are busy, timings (and thread "
              "counts chosen by tuning) reflect that", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        if args.db:
            db = Path(args.db)
        else:
            db = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lazy-tune-bench-"))) / "tuning.sqlite"
        stack.enter_context(_env("LAZY_TUNE_DB", str(db)))
        for name in names:
            w = SUITE[name]
            if w.missing():
                print(f"{name:<24} skipped: {w.missing()}", file=sys.stderr)
                continue
            results.append(bench_one(name, args.size, budget_s=args.budget_s, max_configs=args.max_configs,
                                     rounds=args.rounds, repeat=args.repeat, db=db,
                                     log=lambda s: print(s, file=sys.stderr, flush=True)))
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
