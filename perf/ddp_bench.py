"""Data-parallel training step on this machine: lazy's DistributedDataParallel against torch's, 2 ranks
of one thread each on torch.distributed's gloo backend.

    python -m perf.ddp_bench                       # the tiny GPT of examples/train_gpt.py, then a larger one
    python -m perf.ddp_bench --model tiny --steps 40 --bucket-cap-mb 0.25

It launches itself under torch.distributed.run (OMP_NUM_THREADS=1). Both ranks train the same GPT
(AdamW) on their halves of each global batch; per variant, in interleaved rounds (the machine is
shared): the median step time (ms) over the ranks' slower one; and for the DDP variants, per step:
  comm     first all-reduce launched -> last one complete (torch: its reducer's backward_comm_time)
  overlap  the part of comm before the backward's compute ended (torch: compute_comm_overlap_time)
  hidden   overlap / comm: the share of communication hidden behind compute
  blocked  lazy: time the process sat in wait() for the all-reduces (the optimizer's program
           waits for them; its host work before that hides some communication too)
Reference rows: the same step without DDP in both processes at once (compute alone, same CPU
contention), and the step's all-reduces alone (same bucket sizes, no compute; GB/s of algorithm
bandwidth: bytes / time); and after how many launches of lazy's backward schedule each bucket's
all-reduce starts.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "RANK" not in os.environ:  # launch the ranks, then print rank 0's table
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    raise SystemExit(subprocess.call([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                      str(Path(__file__).resolve()), *sys.argv[1:]], env=env))

if "OMP_WAIT_POLICY" not in os.environ:  # as `import lazy` does, before torch loads libgomp
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

import argparse
import copy
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

import lazy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from train_gpt import Config, gpt, make_batches

MODELS = {"tiny": Config(), "small": replace(Config(), d=256, layers=4, block=64)}


class Variant:
    """One way of running the step; `step(x, y)` trains on this rank's shard."""

    def __init__(self, name: str, kind: str, cfg: Config, reference, cap):
        self.name, self.kind, self.times, self.comm = name, kind, [], []
        lib = torch if kind.startswith("torch") else lazy
        if lib is torch:
            model = copy.deepcopy(reference)
            self.model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap) \
                if kind == "torch DDP" else model
            if kind == "torch DDP":
                self.model._set_ddp_runtime_logging_sample_rate(1)  # (its reducer's timings, every step)
            wrap = torch.tensor
        else:
            model = gpt(lazy, cfg)
            model.load_state_dict(reference.state_dict())
            self.model = lazy.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap) \
                if "DDP" in kind else model
            if "DDP" in kind:
                self.model.record_timings(True)
            wrap = lazy.tensor
        opt = lib.optim.AdamW(self.model.parameters(), lr=3e-3, weight_decay=0.1)

        def step(x, y):
            logits = self.model(x)
            loss = lib.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        run = lazy.jit(step) if "lazy.jit" in kind else step
        self.run = lambda x, y: run(wrap(x), wrap(y))

    def timed(self, x, y, keep: bool) -> None:
        t0 = time.perf_counter()
        loss = self.run(x, y)
        loss.item()  # (lazy: already computed; torch: a no-op sync on the CPU)
        if keep:
            self.times.append(time.perf_counter() - t0)
            if self.kind == "torch DDP":
                d = self.model._get_ddp_logging_data()
                comm = d.get("backward_comm_time", 0) / 1e9
                self.comm.append({"comm": comm, "overlap": min(d.get("backward_compute_comm_overlap_time", 0) / 1e9,
                                                                comm)})


def allreduce_alone(sizes: list[int], reps: int) -> tuple[float, int]:
    """Median seconds of all-reducing buckets of these sizes (float32 elements) back to back."""
    flats = [torch.ones(n) for n in sizes]
    out = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        works = [dist.all_reduce(f, async_op=True) for f in flats]
        for w in works:
            w.wait()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), 4 * sum(sizes)


def slowest(x: float) -> float:
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def bench(model_name: str, steps: int, rounds: int, cap, batch: int) -> None:
    rank, ws = dist.get_rank(), dist.get_world_size()
    cfg = MODELS[model_name]
    torch.manual_seed(0)
    reference = gpt(torch, cfg)
    kinds = ["torch DDP", "lazy DDP", "lazy DDP + lazy.jit", "torch alone", "lazy alone", "lazy alone + lazy.jit"]
    variants = [Variant(k, k, cfg, reference, cap) for k in kinds]
    data = make_batches(3 + rounds * steps, batch, cfg, seed=1)
    shard = [(x[rank::ws], y[rank::ws]) for x, y in data]
    for v in variants:  # warm-up: compiles, torch's bucket rebuild, lazy.jit's recordings
        for x, y in shard[:3]:
            v.timed(x, y, keep=False)
        if v.kind.startswith("lazy DDP"):
            v.model.record_timings(True)  # (forgets the warm-up's)
        dist.barrier()
    for r in range(rounds):
        for v in variants:
            dist.barrier()
            for x, y in shard[3 + r * steps: 3 + (r + 1) * steps]:
                v.timed(x, y, keep=True)
    lazy_ddp = next(v for v in variants if v.kind == "lazy DDP")
    sizes = [b.numel for b in lazy_ddp.model.reducer.buckets]
    alone, nbytes = allreduce_alone(sizes, 20)
    meds = {v.name: slowest(statistics.median(v.times)) for v in variants}
    torch_comm = next(v for v in variants if v.kind == "torch DDP").comm
    tc = statistics.median(c["comm"] for c in torch_comm)
    to = statistics.median(c["overlap"] for c in torch_comm)
    comm_rows = {"torch DDP": (slowest(tc), slowest(to), None)}
    for v in variants:
        if v.kind.startswith("lazy DDP"):
            s = v.model.comm_stats()
            comm_rows[v.name] = (slowest(s["comm"]), slowest(s["overlap"]), slowest(s["exposed"]))
    alone = slowest(alone)
    # where the schedule hands each bucket over: after how many of its launches
    prog = next(p for p in reversed(lazy.runtime._programs.values()) if len(p.flats) == len(sizes))
    handed = sorted((f, pos) for pos, ev in enumerate(prog.events) if ev for f in ev[1])
    if rank != 0:
        return
    n_params = sum(p.numel() for p in reference.parameters())
    print(f"\nGPT {model_name}: d={cfg.d}, {cfg.layers} layers, sequence {cfg.block}, {n_params / 1e6:.2f}M parameters; "
          f"{ws} ranks x 1 thread (gloo), batch {batch // ws} per rank; buckets {len(sizes)} "
          f"({', '.join(f'{4 * n / 2**20:.2f}' for n in sizes)} MiB); {rounds} rounds x {steps} steps")
    print(f"{'variant':<22}{'step ms':>9}{'comm ms':>9}{'overlap':>9}{'hidden':>8}{'blocked':>9}")
    for name, ms in meds.items():
        row = f"{name:<22}{ms * 1e3:9.2f}"
        if name in comm_rows:
            c, o, b = comm_rows[name]
            row += f"{c * 1e3:9.2f}{o * 1e3:9.2f}{o / c if c else 0:8.0%}" + (f"{b * 1e3:9.2f}" if b is not None else "")
        print(row)
    print(f"{'all-reduces alone':<22}{alone * 1e3:9.2f}   ({nbytes / 2**20:.2f} MiB per step, "
          f"{nbytes / alone / 1e9:.2f} GB/s algorithm bandwidth)")
    print("lazy's backward schedule hands bucket " + ", ".join(f"{f} over after launch {p}" for f, p in handed)
          + f" of {len(prog.launches)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    ap.add_argument("--bucket-cap-mb", type=float, default=None, help="DDP's bucket_cap_mb (default: torch's)")
    args = ap.parse_args(argv)
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    for name in MODELS if args.model == "all" else [args.model]:
        bench(name, args.steps, args.rounds, args.bucket_cap_mb, args.batch)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
