"""The `lazy` command.

Subcommands:
  demo       run a few workloads, print their fused kernels, time and speedup against torch eager
  bench      the benchmark suite against numpy, torch eager, torch.compile and tinygrad (perf/run.py):
             a table (or JSON), a record appended to the history, the HTML dashboard
  dashboard  re-render the HTML dashboard from a history file (perf/dashboard.py)
  kernels    run a script and compile every kernel it makes for a GPU target, ahead of time
  tune       run a script with kernel autotuning on; report, clear, export or import the tuning database
Exit codes: 0 success, 1 a workload failed, 2 bad usage (or no C compiler, or no writable cache directory).
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
        except Exception as e:  # noqa: BLE001 (a demo keeps going and reports)
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
    from perf.run import run_from_args

    return run_from_args(args)


def _dashboard(args) -> int:
    from pathlib import Path

    from perf import dashboard, history

    src = Path(args.history) if args.history else history.default_history()
    out = Path(args.output) if args.output else src.with_name("dashboard.html")
    try:
        records, problems = history.load(src)
    except FileNotFoundError:
        print(f"lazy dashboard: no history file at {src} (run `lazy bench` first, or name the file)", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"lazy dashboard: cannot read {src}: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"lazy dashboard: {p}", file=sys.stderr)
    if not records:
        print(f"lazy dashboard: {src} holds no valid run record", file=sys.stderr)
        return 2
    from perf.run import unwritable

    why = unwritable(out)
    if why:
        print(f"lazy dashboard: cannot write {out}: {why}", file=sys.stderr)
        return 2
    try:
        dashboard.write(records, out)
    except OSError as e:
        print(f"lazy dashboard: cannot write {out}: {e}", file=sys.stderr)
        return 2
    print(f"dashboard: {out} ({len(records)} run(s) from {src})")
    return 0


def _kernels(args) -> int:
    from lazy import kernels_report

    # `lazy kernels SCRIPT.py --target sm_80`: a --target after the script is ours, unless the
    # script's arguments come after a `--`
    rest, target = list(args.args), args.target
    cut = rest.index("--") if "--" in rest else len(rest)
    head, tail = rest[:cut], rest[cut + 1:]
    for i, a in enumerate(head):
        if a == "--target" and i + 1 < len(head):
            target = head[i + 1]
            head = head[:i] + head[i + 2:]
            break
        if a.startswith("--target="):
            target = a.split("=", 1)[1]
            head = head[:i] + head[i + 1:]
            break
    return kernels_report.main(args.script, head + tail, target)


def _tune(args) -> int:
    from lazy import tuning

    return tuning.main(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lazy", description="lazy-triton: lazy tensors fused into few kernels")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run a few workloads and show fused kernels and speedups vs torch")
    d.add_argument("--size", choices=["small", "medium", "large"], default="medium")
    d.add_argument("--repeat", type=int, default=5)
    d.set_defaults(fn=_demo)
    from perf.run import add_arguments

    b = sub.add_parser("bench", help="benchmark suite against peers: table, history record, HTML dashboard",
                       description="Run the benchmark suite (perf/workloads.py) against numpy, torch eager, "
                                   "torch.compile and tinygrad (when installed) in one process; print a table "
                                   "(or --json), append the run to the history file and write the dashboard. "
                                   "Progress goes to stderr. Exit codes: 0 ok, 1 a workload failed or "
                                   "mismatched torch, 2 bad usage.")
    add_arguments(b)
    b.set_defaults(fn=_bench)
    h = sub.add_parser("dashboard", help="render the HTML dashboard from a benchmark history file",
                       description="Render the self-contained HTML dashboard (no network needed to view it) from "
                                   "a history file written by `lazy bench`. Exit codes: 0 ok, 2 no usable history "
                                   "or unwritable output.")
    h.add_argument("history", nargs="?", default=None,
                   help="the history file (default: the one `lazy bench` writes by default)")
    h.add_argument("--output", default=None, metavar="HTML", help="where to write (default: dashboard.html beside "
                                                                   "the history file)")
    h.set_defaults(fn=_dashboard)
    k = sub.add_parser("kernels", help="run a script and compile every kernel it makes for a GPU target (no GPU needed)",
                       description="Run SCRIPT (with ARGS) as __main__, collect every distinct kernel the scheduler "
                                   "makes, render each as Triton and compile it ahead of time for --target; print "
                                   "registers, spills, shared memory and PTX size per kernel. Exit codes: 0 all "
                                   "compiled and fit, 1 a kernel failed to compile or does not fit, 2 bad usage.")
    k.add_argument("script", help="the Python script to run")
    k.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    k.add_argument("--target", default="sm_90", help="NVIDIA target, e.g. sm_80, sm_90 (default), sm_100")
    k.set_defaults(fn=_kernels)
    t = sub.add_parser("tune", help="run a script with kernel autotuning on; manage the tuning database",
                       description="Run SCRIPT (with ARGS) as __main__ with tuning on: every distinct kernel it "
                                   "launches is benchmarked under candidate configs on its real buffers (each "
                                   "candidate verified against the default's result), and the winner is stored in "
                                   "the tuning database ($LAZY_TUNE_DB, default $LAZY_CACHE_DIR/tuning.sqlite), "
                                   "which every later run on this device uses. Options go before SCRIPT. Exit "
                                   "codes: 0 ok, 1 the script failed, 2 bad usage.")
    t.add_argument("script", nargs="?", default=None, help="the Python script to run")
    t.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    t.add_argument("--budget-s", type=float, default=10.0, metavar="SECONDS",
                   help="wall time per kernel for the search (default 10)")
    t.add_argument("--max-configs", type=int, default=40, metavar="N",
                   help="configs benchmarked per kernel at most, the default included (default 40)")
    t.add_argument("--force", action="store_true", help="re-tune kernels the database already has")
    t.add_argument("--report", action="store_true",
                   help="show each tuned kernel: default and tuned time, speedup, configs tried, winning config")
    t.add_argument("--all-devices", action="store_true", help="with --report: rows of every device, not only this one")
    t.add_argument("--clear", action="store_true", help="delete every tuned kernel from the database")
    t.add_argument("--export", metavar="FILE", default=None, help="write the database as JSON")
    t.add_argument("--import", dest="import_", metavar="FILE", default=None,
                   help="merge a JSON export into the database")
    t.set_defaults(fn=_tune)
    args = ap.parse_args(argv)
    from codegen import compile_c

    try:
        if args.cmd != "dashboard":  # the others compile kernels: say now, not per workload, what is missing
            compile_c.compiler()
            compile_c.cache_dir()
            compile_c.extra_flags()
        return args.fn(args)
    except (compile_c.CompilerNotFound, compile_c.CacheDirError, compile_c.FlagsError) as e:
        print(f"lazy {args.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
