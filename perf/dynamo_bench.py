"""`torch.compile(backend="lazy")` against `backend="inductor"` and eager, on the model suite.

In:  perf/torch_models.py's models at `--scale`; nothing else (both compilers' caches are pointed at
     fresh temporary directories first, so "cold" means a first run on a new machine).
Out: a table per model: cold compile (the first forward+backward, dynamo's tracing and
     AOTAutograd included, minus an eager step) and steady-state step time (forward + backward,
     median of `--steps` after warm-up, the three timed in turn each round), for eager, lazy and
     inductor, measured in one run.

Run: `python -m perf.dynamo_bench [--scale 2] [--steps 30] [--models mlp,gpt]`. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time


def _fresh_caches() -> None:
    root = tempfile.mkdtemp(prefix="dynamo_bench_")
    os.environ["LAZY_CACHE_DIR"] = os.path.join(root, "lazy")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(root, "triton")


def _step(model, inputs, loss_of) -> None:
    loss_of(model(*inputs)).backward()


def _interleaved(runs: dict, steps: int) -> dict:
    """Median step time per entry, the entries timed in turn each round, so that a busy neighbour
    on a shared machine slows them alike instead of whichever ran at the time."""
    for _ in range(4):  # lazy replays its recorded programs from the fourth call
        for step in runs.values():
            step()
    ts: dict = {k: [] for k in runs}
    for _ in range(steps):
        for k, step in runs.items():
            t0 = time.perf_counter()
            step()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--models", default="")
    args = ap.parse_args(argv)
    _fresh_caches()
    # lazy first: `import lazy` sets libgomp's spin count, which libgomp reads when torch loads it
    import lazy.dynamo  # noqa: I001
    import torch
    from perf.torch_models import MODELS, build, loss_of

    names = [m for m in args.models.split(",") if m] or list(MODELS)
    rows = []
    for name in names:
        model, inputs = build(name, args.scale)
        t0 = time.perf_counter()
        _step(model, inputs, loss_of)
        eager_first = time.perf_counter() - t0
        row = {"model": name, "params": sum(p.numel() for p in model.parameters())}
        runs = {"eager": lambda m=model, x=inputs: _step(m, x, loss_of)}
        for backend in ("lazy", "inductor"):
            m = torch.compile(copy.deepcopy(model), backend=backend if backend != "lazy" else lazy.dynamo.backend)
            t0 = time.perf_counter()
            _step(m, inputs, loss_of)
            row[f"{backend}_compile"] = time.perf_counter() - t0 - eager_first
            runs[backend] = lambda m=m, x=inputs: _step(m, x, loss_of)
        row.update(_interleaved(runs, args.steps))
        torch._dynamo.reset()
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    print(f"\nforward+backward step, median of {args.steps} (ms); cold compile of the first step (s); "
          f"scale {args.scale}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share the cores)")
    head = f"{'model':<10}{'params':>9}{'eager ms':>10}{'lazy ms':>9}{'ind. ms':>9}" \
           f"{'lazy/ind':>9}{'lazy s':>8}{'ind. s':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<10}{r['params']:>9}{r['eager'] * 1e3:>10.2f}{r['lazy'] * 1e3:>9.2f}"
              f"{r['inductor'] * 1e3:>9.2f}{r['lazy'] / r['inductor']:>9.2f}{r['lazy_compile']:>8.1f}"
              f"{r['inductor_compile']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
