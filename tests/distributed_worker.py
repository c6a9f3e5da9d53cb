"""One rank of a multi-process test of tests/test_distributed.py (not a test module itself).

    python tests/distributed_worker.py SCENARIO RANK WORLD_SIZE INIT_FILE OUT_DIR

Joins a gloo process group through a file store (timeout 20 s), runs SCENARIO and saves what it
measured to OUT_DIR/rank{RANK}.pt for the test to compare; any error is printed and the process
exits with status 1 at once (no atexit, no waiting for the others).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before torch and lazy load libgomp: 2-3 ranks share 2 cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import datetime
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

import lazy
import lazy.distributed as ldist
from lazy import nn

DDP = nn.parallel.DistributedDataParallel
TDDP = torch.nn.parallel.DistributedDataParallel
STEPS = 4


# -- models and data (the test builds the same ones in its own process) -------------------------------
def torch_model(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))


def lazy_model(seed: int):
    lazy.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))


def batches(steps: int, sizes: list[int], seed: int = 0):
    """Per step, per rank: (x [n, 6] float32, y [n] int64); rank r's batch has sizes[r] rows."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal((n, 6), dtype=np.float32), rng.integers(0, 3, n)) for n in sizes]
            for _ in range(steps)]


class TorchRunningMean(torch.nn.Module):
    """A layer with a buffer updated in the forward pass, as BatchNorm's running statistics are."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)
        self.register_buffer("mean", torch.zeros(6))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return self.lin(x - self.mean)


class LazyRunningMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.register_buffer("mean", lazy.zeros(6).realize())

    def forward(self, x):
        if self.training:
            with lazy.no_grad():
                self.mean.mul_(0.9).add_(x.mean(0) * 0.1)
        return self.lin(x - self.mean)


class TorchTwoHeads(torch.nn.Module):
    """`extra` takes part only where the forward is asked to use it (find_unused_parameters)."""

    def __init__(self):
        super().__init__()
        self.lin, self.extra, self.never = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)

    def forward(self, x, use_extra: bool):
        return self.lin(x) + self.extra(x) if use_extra else self.lin(x)


class LazyTwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.extra, self.never = nn.Linear(6, 3), nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x, use_extra: bool):
        return self.lin(x) + self.extra(x) if use_extra else self.lin(x)


def params(m) -> list[torch.Tensor]:
    return [(p.torch() if isinstance(p, lazy.Tensor) else p.detach()).clone() for p in m.parameters()]


def train(model, opt, lib, data, rank: int, micro: int = 1, jit: bool = False):
    """Steps of AdamW on this rank's shard; `micro` > 1: that many micro-batches per step, all but the
    last under no_sync()."""
    def step(x, y):
        out = model(x)  # held across opt.step(), as training loops do
        loss = lib.nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    if jit:
        step = lazy.jit(step)
    wrap = lazy.tensor if lib is lazy else torch.tensor
    for batch in data:
        x, y = batch[rank]
        if micro == 1:
            step(wrap(x), wrap(y))
            continue
        opt.zero_grad()
        xs, ys = np.array_split(x, micro), np.array_split(y, micro)
        for i in range(micro):
            ctx = model.no_sync() if i < micro - 1 else _nothing()
            with ctx:
                loss = lib.nn.functional.cross_entropy(model(wrap(xs[i])), wrap(ys[i])) / micro
                loss.backward()
        opt.step()
    return step


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pair(lazy_ddp, torch_ddp, data, rank, micro=1, jit=False) -> tuple[list, list]:
    train(lazy_ddp, lazy.optim.AdamW(lazy_ddp.parameters(), lr=1e-2), lazy, data, rank, micro, jit)
    train(torch_ddp, torch.optim.AdamW(torch_ddp.parameters(), lr=1e-2), torch, data, rank, micro)
    return params(lazy_ddp), params(torch_ddp)


# -- scenarios ---------------------------------------------------------------------------------------
def collectives(rank: int, ws: int) -> dict:
    """{name: (lazy's result, torch.distributed's on the same data)} and facts about memory."""
    out, facts = {}, {}
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1) - rank
    for op in ("sum", "avg", "max", dist.ReduceOp.SUM, dist.ReduceOp.MIN):
        t = (lazy.tensor(x) + 0).realize()  # lazy's own memory: reduced in place
        ldist.all_reduce(t, op)
        ref = x.clone()
        dist.all_reduce(ref, ldist._reduce_op(op))
        out[f"all_reduce {op}"] = (t.torch().clone(), ref)
    total = x.clone()
    dist.all_reduce(total)
    # in place, and values fixed when created: a value built on the old contents is computed first
    own = (lazy.tensor(x) * 2).realize()
    buf, version = own._node.arg, own._node.arg.version
    before = own * 1
    ldist.all_reduce(own)
    out["in place"] = (own.torch().clone(), total * 2)
    out["pending value built before"] = (before.torch().clone(), x * 2)
    facts["in place"] = own._node.arg is buf and buf.version == version + 1
    # ...and a clone (holding the same memory) keeps it: the result goes to fresh memory
    own = (lazy.tensor(x) * 2).realize()
    buf, snapshot = own._node.arg, own.clone()
    ldist.all_reduce(own)
    out["with a clone"] = (own.torch().clone(), total * 2)
    out["clone"] = (snapshot.torch().clone(), x * 2)
    facts["a clone renames"] = own._node.arg is not buf
    # the caller's torch memory is never written: the lazy tensor takes a new buffer
    mine = x.clone()
    t = lazy.tensor(mine)
    ldist.all_reduce(t)
    out["caller's memory"] = (mine, x)
    out["caller's memory, lazy value"] = (t.torch().clone(), total)
    # a view: written through to its base
    base = (lazy.tensor(x) + 0).realize()
    ldist.all_reduce(base[1])
    ref_row = x[1].clone()
    dist.all_reduce(ref_row)
    out["view"] = (base.torch().clone(), torch.stack([x[0], ref_row]))
    # async: a value built before wait() reads the reduced contents
    a = (lazy.tensor(x) + 0).realize()
    work = ldist.all_reduce(a, "sum", async_op=True)
    doubled = a * 2
    out["async, read without wait"] = (doubled.torch().clone(), total * 2)
    facts["async done after read"] = work.is_completed()
    work.wait()
    # broadcast from the last rank
    b = (lazy.tensor(x) + 0).realize()
    ldist.broadcast(b, ws - 1)
    rb = x.clone()
    dist.broadcast(rb, ws - 1)
    out["broadcast"] = (b.torch().clone(), rb)
    # all_gather, all_gather_into_tensor
    got = [lazy.zeros(2, 3) for _ in range(ws)]
    ldist.all_gather(got, lazy.tensor(x))
    ref_list = [torch.zeros(2, 3) for _ in range(ws)]
    dist.all_gather(ref_list, x)
    out["all_gather"] = (torch.stack([g.torch() for g in got]), torch.stack(ref_list))
    flat = lazy.zeros(2 * ws, 3)
    ldist.all_gather_into_tensor(flat, lazy.tensor(x))
    out["all_gather_into_tensor"] = (flat.torch().clone(), torch.cat(ref_list))
    # reduce_scatter (list and tensor forms)
    parts = [x * (i + 1) for i in range(ws)]
    o = lazy.zeros(2, 3)
    ldist.reduce_scatter(o, [lazy.tensor(p) for p in parts])
    ro = torch.zeros(2, 3)
    dist.reduce_scatter(ro, [p.clone() for p in parts])
    out["reduce_scatter"] = (o.torch().clone(), ro)
    o2 = lazy.zeros(2, 3)
    ldist.reduce_scatter_tensor(o2, lazy.tensor(torch.cat(parts)), op="max")
    ro2 = torch.zeros(2, 3)
    dist.reduce_scatter_tensor(ro2, torch.cat(parts), op=dist.ReduceOp.MAX)
    out["reduce_scatter_tensor max"] = (o2.torch().clone(), ro2)
    return {"pairs": out, "facts": facts}


def ddp(rank: int, ws: int) -> dict:
    res: dict = {}
    # broadcast of the initial weights: every rank starts from its own seed
    model = lazy_model(100 + rank)
    res["own init"] = params(model)
    d = DDP(model)
    res["after DDP"] = params(d)
    res["state_dict keys"] = list(d.state_dict())
    plain = lazy_model(7)
    d.module.load_state_dict(plain.state_dict())
    res["loaded"] = [torch.equal(a, b) for a, b in zip(params(d), params(plain))]
    # torch's way out of the prefix for a plain model, and a DDP checkpoint back into a DDP model
    saved = d.state_dict()
    consume_prefix_in_state_dict_if_present(saved, "module.")
    bare = lazy_model(11)
    bare.load_state_dict(saved)
    other = DDP(lazy_model(12))
    other.load_state_dict(d.state_dict())
    res["unprefixed"] = [torch.equal(a, b) for a, b in zip(params(bare), params(plain))]
    res["reloaded"] = [torch.equal(a, b) for a, b in zip(params(other), params(plain))]

    # N ranks on N shards vs one process on the whole batch (the test trains that one), and vs
    # torch's DDP in these processes: the same starting weights (rank 0's after broadcast)
    even = batches(STEPS, [12 // ws] * ws, seed=1)
    start = torch_model()
    lz = DDP(lazy_model(100 + rank))
    start.load_state_dict({k.removeprefix("module."): v for k, v in lz.state_dict().items()})
    res["start"] = params(start)
    lz.record_timings(True)
    res["even"] = pair(lz, TDDP(start), even, rank)
    res["even comm"] = lz.comm_stats()

    # no_sync: two micro-batches per step, the first one's gradients accumulated locally
    lz, tz = DDP(lazy_model(3)), TDDP(torch_model(3))
    lz.module.load_state_dict(tz.module.state_dict())
    res["no_sync"] = pair(lz, tz, even, rank, micro=2)

    # an uneven last batch: ranks with different batch sizes (torch averages over ranks, not samples)
    uneven = batches(STEPS, [3 + 2 * r for r in range(ws)], seed=2)
    lz, tz = DDP(lazy_model(4)), TDDP(torch_model(4))
    lz.module.load_state_dict(tz.module.state_dict())
    res["uneven start"] = params(tz)
    res["uneven"] = pair(lz, tz, uneven, rank)

    # buffers: rank 0's running statistics broadcast before each forward
    torch.manual_seed(5)
    tb = TorchRunningMean()
    lb = LazyRunningMean()
    lb.load_state_dict(tb.state_dict())
    lzb, tzb = DDP(lb), TDDP(tb)
    res["buffers"] = pair(lzb, tzb, even, rank)
    res["buffer values"] = (lb.mean.torch().clone(), tb.mean.clone())

    # lazy.jit: a jitted DDP step replays (with its all-reduces) and stays correct
    lz, tz = DDP(lazy_model(6)), TDDP(torch_model(6))
    lz.module.load_state_dict(tz.module.state_dict())
    opt = lazy.optim.AdamW(lz.parameters(), lr=1e-2)
    more = batches(7, [12 // ws] * ws, seed=3)
    step = train(lz, opt, lazy, more, rank, jit=True)
    train(tz, torch.optim.AdamW(tz.parameters(), lr=1e-2), torch, more, rank)
    res["jit"] = (params(lz), params(tz))
    lz.record_timings(True)  # two more replays, timed: their all-reduces run from the replayed program
    for x, y in (b[rank] for b in more[:2]):
        step(lazy.tensor(x), lazy.tensor(y))
    res["jit comm"] = lz.comm_stats()
    res["jit stats"] = list(step.stats.values())

    # the model's output held across the step is computed in the backward's schedule, not again by
    # the optimizer's program before it overwrites the parameters
    lz = DDP(lazy_model(6))
    opt = lazy.optim.AdamW(lz.parameters(), lr=1e-2)
    for _ in range(2):
        out = lz(lazy.tensor(even[0][rank][0]))
        loss = nn.functional.cross_entropy(out, lazy.tensor(even[0][rank][1]))
        opt.zero_grad()
        loss.backward()
        with lazy.profile() as prof:
            opt.step()
    res["optimizer kernels"] = [k.name for k in prof.kernels]
    res["held output"] = (out.torch().clone(), params(lz))

    # parameters without gradients: an error, unless find_unused_parameters (then `extra`, used on
    # rank 0 only, gets the average over ranks, and `never` keeps no gradient), as in torch
    torch.manual_seed(9)
    tu, lu = TorchTwoHeads(), LazyTwoHeads()
    lu.load_state_dict(tu.state_dict())
    x, y = (lazy.tensor(a) for a in even[0][rank])
    strict = DDP(LazyTwoHeads())
    try:
        nn.functional.cross_entropy(strict(x, False), y).backward()
        res["unused error"] = ""
    except RuntimeError as e:
        res["unused error"] = str(e)
    lzu, tzu = DDP(lu, find_unused_parameters=True), TDDP(tu, find_unused_parameters=True)
    lopt, topt = lazy.optim.AdamW(lzu.parameters(), lr=1e-2), torch.optim.AdamW(tzu.parameters(), lr=1e-2)
    for batch in even:
        xb, yb = batch[rank]
        for m, o, lib, wrap in ((lzu, lopt, lazy, lazy.tensor), (tzu, topt, torch, torch.tensor)):
            loss = lib.nn.functional.cross_entropy(m(wrap(xb), rank == 0), wrap(yb))
            o.zero_grad()
            loss.backward()
            o.step()
    res["unused"] = (params(lzu), params(tzu))
    res["unused grads"] = ([p.grad is None for p in lzu.parameters()], [p.grad is None for p in tzu.parameters()])

    # buckets: several (a tiny cap), each one flat buffer the gradients are views of
    lz = DDP(lazy_model(8), bucket_cap_mb=200 / 2**20)
    alone = lazy_model(8)
    alone.load_state_dict(lz.module.state_dict())
    x, y = (lazy.tensor(a) for a in even[0][rank])
    for m in (lz, alone):
        nn.functional.cross_entropy(m(x), y).backward()  # (DDP: realized and reduced here)
    ps = list(lz.parameters())
    layout = []
    for b in lz.reducer.buckets:
        gs = [ps[i].grad.torch() for i in b.indices]
        layout.append(([i for i in b.indices], [g.untyped_storage().data_ptr() for g in gs],
                       [g.storage_offset() for g in gs], [g.numel() for g in gs]))
    res["layout"] = layout
    res["grads"] = [p.grad.torch().clone() for p in ps]
    ref = [torch.zeros_like(g) for g in res["grads"]]
    for g, p in zip(ref, alone.parameters()):
        g.copy_(p.grad.torch())
        dist.all_reduce(g)
        g /= ws
    res["grads reference"] = ref
    return res


def fail(rank: int, ws: int) -> dict:
    """Rank 1 raises in its second step; the others must fail with a clear error, not hang."""
    model = DDP(lazy_model(0))
    opt = lazy.optim.SGD(model.parameters(), lr=0.1)
    for i, batch in enumerate(batches(4, [4] * ws)):
        if rank == 1 and i == 1:
            raise ValueError("rank 1 fails on purpose")
        x, y = batch[rank]
        loss = nn.functional.cross_entropy(model(lazy.tensor(x)), lazy.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {}


def suite(rank: int, ws: int) -> dict:
    return {"collectives": collectives(rank, ws), "ddp": ddp(rank, ws)}


SCENARIOS = {"suite": suite, "fail": fail}


def main(argv: list[str]) -> None:
    scenario, rank, ws, init, out = argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4]
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=ws,
                                timeout=datetime.timedelta(seconds=20))
        res = SCENARIOS[scenario](rank, ws)
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 (reported, then the process ends at once)
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
