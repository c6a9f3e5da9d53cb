"""`lazy bench --suite models`: each model's training step and inference on lazy, lazy.jit, torch
eager and torch.compile in one process.

In:  the models of perf/models (MODELS), a size (tiny | small), the peers.
Out: a run record (one row per model and phase: `train`, `infer`, and `generate` for a model that
     samples: GPT's `generate` with top-k, one token per forward), printed as a table (or JSON),
     appended as one JSON line to `models.jsonl` beside the benchmark history.

How it measures
- Every peer gets its own copy of the model, all holding torch's initial weights (state_dict
  copied across) and the same batch. A training step is the model file's own step (zero_grad,
  forward, loss, backward, optimizer and scheduler steps); inference is eval mode under no_grad.
- cold: the first call in this process. lazy's includes scheduling and compiling every kernel with
  an empty disk cache (the run uses a fresh LAZY_CACHE_DIR unless --no-cold), torch.compile's its
  Inductor compile with an empty cache (its once-per-process start-up is reported apart).
- Warm-up calls follow (lazy's second training step has a graph of its own: optimizer state
  exists from then on; lazy.jit records on its second and third calls and replays from the fourth),
  then timed rounds that call every peer once, in rotated order; the median is reported.
- Kernels per call: lazy's launches under `lazy.profile()` for one steady call, with the time spent
  inside them (the rest of lazy's time is host work: building the graph, scheduling lookups,
  launching); torch.compile's is the number of kernels Inductor generated for the model.
- lazy's result of the first call is checked against torch eager's (same weights, same seed):
  a mismatch is a failure (exit code 1).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

from perf import models

PEERS = ("lazy", "lazy.jit", "torch", "torch.compile")
PHASES = ("train", "infer", "generate")
RTOL = 1e-3  # first-call results: lazy against torch eager (tests/test_models.py pins tighter ones)


def _seq(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _to_numpy(x) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return x.numpy()


def _finish(name: str, out):
    """Make a result real: lazy's values computed (and every pending in-place write with them)."""
    if name.startswith("lazy"):
        import lazy

        lazy.realize(*[o for o in _seq(out) if o is not None])
    return out


def _make_call(name: str, case: models.Case, phase: str):
    import lazy

    fn = {"train": case.train_step, "infer": case.infer}.get(phase) or case.extra["sample"]
    if name == "lazy.jit":
        from lazy.jit import JitWarning

        jitted = lazy.jit(fn)

        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JitWarning)
                return _finish(name, jitted(*case.batch))
        call.jit = jitted
        return call
    return lambda: _finish(name, fn(*case.batch))


def _build(model: str, size: str, peers: list[str]) -> dict[str, models.Case]:
    import torch

    import lazy

    ref = models.build(model, torch, size)
    cases = {}
    for p in peers:
        if p == "torch":
            cases[p] = ref
            continue
        c = models.build(model, lazy if p.startswith("lazy") else torch, size)
        models.copy_weights(ref, c)
        if p == "torch.compile":
            for m in c.modules.values():
                m.compile()  # nn.Module.compile: forward compiled in place, the state_dict keys kept
        cases[p] = c
    return cases


def _seed(s: int) -> None:
    import torch

    import lazy

    torch.manual_seed(s)
    lazy.manual_seed(s)


def bench_model(model: str, size: str, peers: list[str], phase: str, *, repeat: int, budget_s: float,
                log) -> dict:
    import torch
    import torch._inductor.metrics as inductor_metrics

    import lazy

    row: dict = {"model": model, "phase": phase, "status": "ok", "error": None, "peers": {}}
    cases = _build(model, size, peers)
    calls, first = {}, {}
    for p in peers:
        e = row["peers"][p] = {"status": "ok"}
        try:
            call = _make_call(p, cases[p], phase)
            if p == "torch.compile":
                inductor_metrics.reset()
            _seed(1)
            t0 = time.perf_counter()
            first[p] = [_to_numpy(o) for o in _seq(call())]
            e["cold_s"] = time.perf_counter() - t0
            if p == "torch.compile":
                e["kernels"] = inductor_metrics.generated_kernel_count
            for _ in range(3 if p == "lazy.jit" else 1):  # jit: records twice, then replays
                call()
            calls[p] = call
            log(f"{p} first {e['cold_s']:.2f} s")
        except Exception as ex:  # noqa: BLE001 (a benchmark records the failure and goes on)
            e.update(status="failed", error=f"{type(ex).__name__}: {str(ex)[:300]}")
            log(f"{p} FAILED: {e['error']}")
    if "lazy" in first and "torch" in first:
        errs = [float(np.abs(a.astype(np.float64) - b).max() / (1 + np.abs(b).max()))
                for a, b in zip(first["lazy"], first["torch"]) if a.dtype.kind == "f"]
        row["rel_err"] = max(errs, default=0.0)
        if row["rel_err"] > RTOL:
            row["status"], row["error"] = "mismatch", f"lazy differs from torch eager: relative {row['rel_err']:.2e}"
        if any(a.dtype.kind != "f" and not np.array_equal(a, b) for a, b in zip(first["lazy"], first["torch"])):
            row["status"], row["error"] = "mismatch", "lazy's integer results (sampled tokens) differ from torch eager's"
    if row["peers"].get("lazy", {}).get("status") == "failed":
        row["status"], row["error"] = "failed", row["peers"]["lazy"]["error"]
    # kernels of one steady call, and the time inside them
    for p in ("lazy", "lazy.jit"):
        if p in calls:
            with lazy.profile() as prof:
                calls[p]()
            row["peers"][p].update(kernels=len(prof.kernels), kernel_s=prof.seconds)
            if hasattr(calls[p], "jit"):
                row["peers"][p]["jit_status"] = next(iter(calls[p].jit.stats.values()), "running")
    samples: dict[str, list[float]] = {p: [] for p in calls}
    names = list(calls)
    gc.collect()
    t_start = time.perf_counter()
    for r in range(max(repeat, 1)):
        for p in names[r % len(names):] + names[:r % len(names)] if names else []:
            if p not in samples:
                continue
            try:
                t0 = time.perf_counter()
                calls[p]()
                samples[p].append(time.perf_counter() - t0)
            except Exception as ex:  # noqa: BLE001
                row["peers"][p].update(status="failed", error=f"{type(ex).__name__}: {str(ex)[:300]}")
                samples.pop(p)
        if r + 1 >= 3 and time.perf_counter() - t_start > budget_s:
            break
    for p, ts in samples.items():
        row["peers"][p].update(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts), samples=len(ts))
    del cases, calls
    torch._dynamo.reset()
    return row


def _ms(s) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_table(record: dict) -> str:
    peers = record["peers"]
    head = (f"{'model':<16} {'lazy':>9} {'jit':>9} {'eager':>9} {'compile':>9} "
            f"{'x eager':>7} {'x compile':>9} {'jit x eager':>11} {'kern':>5} {'kern ms':>8} "
            f"{'cold lazy':>9} {'cold cmp':>9} {'cmp kern':>8}")
    m = record["machine"]
    lines = [(f"lazy bench --suite models: size {record['size']}, {m['cpu']} ({m['cpus_usable']} CPUs), "
              f"load {m['load_avg_1min']:.1f} at start, commit {(record['git'].get('commit') or 'unknown')[:10]}"),
             head, "-" * len(head)]
    for r in record["results"]:
        pe = r["peers"]

        def med(p, pe=pe):
            return pe.get(p, {}).get("median_s") if p in peers else None
        lz, jt, te, tc = med("lazy"), med("lazy.jit"), med("torch"), med("torch.compile")

        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "-"
        jmark = "*" if str(pe.get("lazy.jit", {}).get("jit_status", "")).startswith("failed") else ""
        lk = pe.get("lazy", {})
        line = (f"{r['model'] + ' ' + r['phase']:<16} {_ms(lz):>9} {_ms(jt) + jmark:>9} {_ms(te):>9} {_ms(tc):>9} "
                f"{ratio(te, lz):>7} {ratio(tc, lz):>9} {ratio(te, jt):>11} {lk.get('kernels', '-'):>5} "
                f"{(lk['kernel_s'] * 1e3 if 'kernel_s' in lk else 0):>8.1f} {_ms(lk.get('cold_s')):>9} "
                f"{_ms(pe.get('torch.compile', {}).get('cold_s')):>9} {pe.get('torch.compile', {}).get('kernels', '-'):>8}")
        if r["status"] != "ok":
            line += f"  {r['status'].upper()}: {r['error']}"
        for p, e in pe.items():
            if e.get("status") == "failed" and p != "lazy":
                line += f"  [{p} failed: {e['error'][:120]}]"
        lines.append(line)
    lines.append("median time per call; x eager / x compile = peer time / lazy time (above 1: lazy is faster); "
                 "jit x eager = the same for lazy.jit; kern = lazy's kernels per call, kern ms = the time inside "
                 "them (the rest is host time); cold = the first call (lazy: with an empty kernel cache, "
                 "scheduling and compiling included; torch.compile: Inductor's compile); cmp kern = kernels "
                 "Inductor generated; * = lazy.jit could not replay (ran as plain Python; the JSON says why)")
    if record.get("torch_compile_startup_s") is not None:
        lines.append(f"torch.compile start-up (once per process): {record['torch_compile_startup_s']:.1f} s")
    return "\n".join(lines)


def run(names: list[str], size: str, peers: list[str], *, repeat: int, budget_s: float, cold: bool,
        progress: bool) -> dict:
    import datetime

    from perf import run as perf_run

    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    record: dict = {"suite": "models", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "git": perf_run.git_info(), "machine": perf_run.machine_info("cpu"),
                    "versions": perf_run.versions(None), "size": size, "peers": peers,
                    "settings": {"repeat": repeat, "budget_s": budget_s, "cold_compile": cold},
                    "torch_compile_startup_s": None, "results": []}
    t_run = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if cold:  # lazy's first calls compile every kernel: a fresh cache, removed at the end
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="lazy-bench-models-"))
            stack.enter_context(perf_run._env("LAZY_CACHE_DIR", d))
            perf_run._forget_compiled()
        if "torch.compile" in peers:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="lazy-bench-inductor-"))
            stack.enter_context(perf_run._env("TORCHINDUCTOR_CACHE_DIR", d))
            record["torch_compile_startup_s"] = perf_run.torch_compile_startup("cpu")
        for i, name in enumerate(names, 1):
            for phase in PHASES:
                if phase == "generate" and not getattr(models.MODELS[name], "SAMPLES", False):
                    continue
                log(f"[{i}/{len(names)}] {name} {phase}")
                t0 = time.perf_counter()
                try:
                    r = bench_model(name, size, peers, phase, repeat=repeat, budget_s=budget_s,
                                    log=lambda s: log("    " + s))
                except Exception as ex:  # noqa: BLE001, building the model failed: record and go on
                    r = {"model": name, "phase": phase, "status": "failed", "peers": {},
                         "error": f"{type(ex).__name__}: {str(ex)[:300]}"}
                r["wall_s"] = time.perf_counter() - t0
                record["results"].append(r)
                steady = ", ".join(f"{p} {_ms(e['median_s'])}" for p, e in r["peers"].items() if "median_s" in e)
                log(f"    {steady}  ({r['wall_s']:.0f} s)")
    record["wall_s"] = time.perf_counter() - t_run
    return record


def run_from_args(args) -> int:
    """`lazy bench --suite models`: 0 all ran and matched, 1 a model failed or mismatched, 2 bad usage."""
    import json
    from pathlib import Path

    from perf import history

    if args.list:
        for n, mod in models.MODELS.items():
            print(f"{n:<10} {mod.__doc__.splitlines()[0]}")
        return 0
    if args.size not in models.SIZES:
        print(f"lazy bench --suite models: --size must be one of {', '.join(models.SIZES)}", file=sys.stderr)
        return 2
    terms = [t.strip() for t in args.filter.split(",") if t.strip()]
    names = [n for n in models.MODELS if not terms or any(t in n for t in terms)]
    unknown = [t for t in terms if not any(t in n for n in models.MODELS)]
    if unknown:
        print(f"lazy bench: no model matches {unknown[0]!r}; models: {', '.join(models.MODELS)}", file=sys.stderr)
        return 2
    asked = [p.strip() for p in args.peers.split(",") if p.strip()]
    from perf.run import PEERS as KERNEL_PEERS

    bad = [p for p in asked if p not in PEERS and p not in KERNEL_PEERS]  # numpy, tinygrad: not for models
    if bad or args.repeat < 1:
        why = f"unknown peer(s) {', '.join(bad)}; model peers: {', '.join(PEERS)}" if bad else "--repeat must be >= 1"
        print(f"lazy bench: {why}", file=sys.stderr)
        return 2
    peers = ["lazy"] + [p for p in PEERS[1:] if p in asked and not (p == "torch.compile" and args.no_compile)]
    if "torch" not in peers:
        peers.insert(1, "torch")  # the reference every model's weights come from
    out_path = (Path(args.output) if args.output else history.default_history()).with_name("models.jsonl")
    if not args.no_save:
        from perf.run import unwritable

        why = unwritable(out_path)
        if why:
            print(f"lazy bench: cannot write {out_path}: {why}", file=sys.stderr)
            return 2
    record = run(names, args.size, peers, repeat=args.repeat, budget_s=args.budget, cold=not args.no_cold,
                 progress=not args.quiet)
    print(json.dumps(record, indent=1, allow_nan=False) if args.json else format_table(record))
    if not args.no_save:
        history.append(out_path, record)
        print(f"model results appended to {out_path}", file=sys.stderr)
    bad = [f"{r['model']} {r['phase']}" for r in record["results"] if r["status"] != "ok"]
    if bad:
        print(f"lazy bench: failed: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
