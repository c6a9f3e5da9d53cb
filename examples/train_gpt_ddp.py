"""Train the tiny GPT of examples/train_gpt.py data-parallel, one process per CPU (or GPU), on
torch.distributed: torch's launcher, process group and backend (gloo on CPUs, NCCL on GPUs).

    python -m torch.distributed.run --nproc_per_node 2 examples/train_gpt_ddp.py
    python -m torch.distributed.run --nproc_per_node 2 examples/train_gpt_ddp.py --compare   # + torch's DDP
    python -m torch.distributed.run --nproc_per_node 2 examples/train_gpt_ddp.py --jit       # lazy.jit step

Every rank builds the model; DistributedDataParallel broadcasts rank 0's weights (the other ranks
start from other seeds on purpose). Each global batch is split across the ranks (rank r takes the
sequences r, r + world_size, ...), DDP averages the gradients over the ranks during backward(), and
AdamW updates each rank's copy identically. The loss printed is the ranks' average
(lazy.distributed.all_reduce). With --compare, torch's own DDP trains a torch copy of the same model on
the same shards in the same processes: the two loss curves agree to float32 rounding.
"""

from __future__ import annotations

import os

# as `import lazy` would do, before torch loads libgomp (see examples/train_gpt.py)
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import lazy
import lazy.distributed as ldist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_gpt import Config, gpt, make_batches  # the model and data of the single-process example


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8, help="global batch (sequences), split across the ranks")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--compare", action="store_true", help="also train with torch's DDP and compare the losses")
    ap.add_argument("--jit", action="store_true", help="run the lazy step under lazy.jit")
    args = ap.parse_args(argv)

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)  # torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, ...
    rank, ws = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(device)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.batch % ws:
        raise SystemExit(f"--batch {args.batch} does not split evenly across {ws} ranks")

    cfg = Config()
    torch.manual_seed(0)
    reference = gpt(torch, cfg)  # the weights both libraries start from
    lazy.manual_seed(rank)  # other weights on every rank: DDP broadcasts rank 0's
    model = gpt(lazy, cfg)
    if rank == 0:
        model.load_state_dict(reference.state_dict())
    if device != "cpu":
        model.to(device)
    ddp = lazy.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device != "cpu" else None)
    opt = lazy.optim.AdamW(ddp.parameters(), lr=args.lr, weight_decay=0.1)

    def step(x, y):
        logits = ddp(x)
        loss = lazy.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()  # gradients averaged over the ranks here, bucket by bucket
        opt.step()
        return loss

    run = lazy.jit(step) if args.jit else step
    batches = make_batches(args.steps, args.batch, cfg)  # the same global batches on every rank
    losses, seconds = [], []
    for xb, yb in batches:
        t0 = time.perf_counter()
        loss = run(lazy.tensor(xb[rank::ws]).to(device), lazy.tensor(yb[rank::ws]).to(device))
        seconds.append(time.perf_counter() - t0)
        ldist.all_reduce(loss, op="avg")  # the loss over the whole batch, for printing
        losses.append(loss.item())

    theirs = []
    if args.compare:
        tmodel = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(reference).to(device))
        topt = torch.optim.AdamW(tmodel.parameters(), lr=args.lr, weight_decay=0.1)
        for xb, yb in batches:
            x, y = torch.tensor(xb[rank::ws], device=device), torch.tensor(yb[rank::ws], device=device)
            loss = torch.nn.functional.cross_entropy(tmodel(x).reshape(-1, cfg.vocab), y.reshape(-1))
            topt.zero_grad()
            loss.backward()
            topt.step()
            dist.all_reduce(loss := loss.detach(), op=dist.ReduceOp.AVG)
            theirs.append(loss.item())

    if rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"GPT: {cfg.layers} layers, d={cfg.d}, {n_params / 1e6:.2f}M parameters; {ws} ranks ({backend}), "
              f"global batch {args.batch} ({args.batch // ws} per rank), AdamW lr={args.lr}"
              + (", lazy.jit" if args.jit else ""))
        print(f"{'step':>4} {'lazy DDP':>10}" + (f" {'torch DDP':>10} {'|diff|':>10}" if theirs else ""))
        for i, a in enumerate(losses):
            print(f"{i:4d} {a:10.6f}" + (f" {theirs[i]:10.6f} {abs(a - theirs[i]):10.2e}" if theirs else ""))
        if theirs:
            print(f"max |loss difference| over {args.steps} steps: {max(abs(a - b) for a, b in zip(losses, theirs)):.3e}")
        print(f"lazy step: {statistics.median(seconds[3:]) * 1e3:.1f} ms median after 3 warm-up steps "
              f"(first step, with compiling: {seconds[0]:.1f} s)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
