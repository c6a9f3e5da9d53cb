"""torch.nn.parallel.DistributedDataParallel for lazy modules, on torch.distributed's process groups.

In:  a lazy Module replicated in every process of a group (torchrun, `init_process_group`), each
     process running the same training loop on its shard of the data.
Out: the module wrapped: parameters and buffers broadcast from rank 0 when it is built; after each
     `backward()` every parameter's `.grad` is the average of the ranks' gradients; `no_sync()`
     accumulates locally; `state_dict()` keys start with `module.`; buffers (running statistics)
     are broadcast from rank 0 before each forward (`broadcast_buffers`), as torch's are.

How (torch's reducer, with lazy's graph in place of autograd hooks)
- Buckets are torch's: `dist._compute_bucket_assignment_by_size` over the parameters in reverse
  order (the order their gradients are produced), the first bucket 1 MiB when `bucket_cap_mb` is
  not given, then `bucket_cap_mb` (25 MiB) each: the assignment torch's reducer rebuilds after its
  first iteration. A bucket holds one dtype and device.
- At the end of `backward()` (`transforms.backward_hooks`) the gradients are still lazy graphs.
  They are realized in ONE schedule with the loss (forward and backward together), each bucket's
  gradients, divided by the world size as torch's reducer divides them, stored back to back in one
  flat buffer by the kernels that compute them (`tensor.realize_packed`, lazy/packing.py: no copy
  kernel; the division fuses into those kernels). Roots are ordered bucket by bucket, so the
  schedule completes the first bucket first; as soon as a bucket's flat is complete, between two
  kernels, its all-reduce (SUM) starts with `async_op=True` and runs on the backend's thread while
  the rest of the backward runs. Each `.grad` is then a view of its bucket (torch's
  `gradient_as_bucket_view=True`, always): the optimizer reads the buckets directly.
- The optimizer's program reads the views, so it waits for the all-reduces first
  (runtime._in_flight); so does any read of a `.grad`. Nothing else waits.
- A parameter without a gradient raises, as torch's reducer does, unless `find_unused_parameters`:
  then the ranks agree (an all-reduce of flags) on which were used anywhere; an unused slot is
  zeros, and a parameter unused on every rank keeps its `.grad`.
- lazy.jit: the bucket all-reduces are part of the recorded program (its `on_ready` hook), and the
  buffer broadcasts are recorded collectives: a jitted DDP step replays with its communication.

Differs from torch: gradients are always bucket views (`gradient_as_bucket_view` is accepted and
ignored); buckets are fixed from the start instead of rebuilt after the first iteration; no
`join()` for uneven numbers of batches, no communication hooks, no mixed precision.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import weakref

import torch
import torch.distributed as _dist

from lazy import autograd, inplace, runtime, transforms
from lazy import distributed as ldist
from lazy.graph import Op, const, node
from lazy.nn.modules import Module
from lazy.tensor import Tensor, realize, realize_packed

__all__ = ["DistributedDataParallel"]

_MB = 1024 * 1024
_UNSUPPORTED = ("delay_all_reduce_named_params", "param_to_hook_all_reduce", "mixed_precision", "device_mesh",
                "bucket_cap_mb_list")


class DistributedDataParallel(Module):
    """torch.nn.parallel.DistributedDataParallel (see the module docstring)."""

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool | None = True, init_sync: bool = True, process_group=None,
                 bucket_cap_mb: float | None = None, find_unused_parameters: bool = False,
                 check_reduction: bool = False, gradient_as_bucket_view: bool = False, static_graph: bool = False,
                 forward_sync_buffers: bool | None = None, **options):
        super().__init__()
        given = [k for k, v in options.items() if v is not None and k in _UNSUPPORTED]
        if given or set(options) - set(_UNSUPPORTED):
            raise NotImplementedError(f"DistributedDataParallel: {', '.join(given or sorted(options))} is not "
                                      "supported by lazy")
        if not _dist.is_initialized():
            raise ValueError("Default process group has not been initialized, please make sure to call "
                             "init_process_group.")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a lazy.nn.Module, got {type(module).__name__}")
        self.module = module
        self.process_group = process_group if process_group is not None else \
            _dist.distributed_c10d._get_default_group()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any parameter "
                               "that requires a gradient.")
        devices = {str(p.device) for _, p in named}
        if len(devices) > 1:
            raise ValueError(f"DistributedDataParallel: parameters on several devices ({', '.join(sorted(devices))}) "
                             "are not supported; one device per process")
        device = devices.pop()
        if device_ids is not None and not device.startswith("cuda"):
            raise ValueError("DistributedDataParallel device_ids and output_device arguments only work with "
                             f"single-device GPU modules or CPU modules, but got device_ids {device_ids}, "
                             f"output_device {output_device}, and module parameters {{{device}}}.")
        self.device_ids = None if device_ids is None else \
            [d if isinstance(d, int) else (torch.device(d).index or 0) for d in device_ids]
        self.output_device = (self.device_ids[0] if output_device is None and self.device_ids else output_device)
        self.dim = dim
        self.device = torch.device(device)
        if forward_sync_buffers is None:
            forward_sync_buffers = True if broadcast_buffers is None else bool(broadcast_buffers)
            init_buffers = forward_sync_buffers
        else:
            init_buffers = True
        self.forward_sync_buffers = forward_sync_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.static_graph = static_graph
        self.require_backward_grad_sync = True
        self.require_forward_param_sync = True
        if init_sync:
            realize(*(p for _, p in module.named_parameters()))
            _dist._verify_params_across_processes(self.process_group, [p.torch() for _, p in named])
            states = [p for _, p in module.named_parameters()]
            states += [b for _, b in module.named_buffers()] if init_buffers else []
            with autograd.no_grad():
                ldist.broadcast_coalesced(states, 0, self.process_group)
        caps = [_dist._DEFAULT_FIRST_BUCKET_BYTES, 25 * _MB] if bucket_cap_mb is None else \
            [int(bucket_cap_mb * _MB)] * 2
        self.bucket_bytes_cap = caps[1]
        self.reducer = _Reducer([p for _, p in named], [n for n, _ in named], caps, self.process_group,
                                find_unused_parameters)
        transforms.backward_hooks.append(weakref.WeakMethod(self.reducer.after_backward))

    @property
    def broadcast_buffers(self) -> bool:
        return self.forward_sync_buffers

    @broadcast_buffers.setter
    def broadcast_buffers(self, value: bool) -> None:
        self.forward_sync_buffers = value

    def forward(self, *inputs, **kwargs):
        if self.will_sync_module_buffers():
            self._sync_buffers()
        if self.device_ids:
            dev = f"cuda:{self.device_ids[0]}"
            inputs = tuple(x.to(dev) if isinstance(x, Tensor) else x for x in inputs)
            kwargs = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        out = self.module(*inputs, **kwargs)
        # as torch decides after its forward: this forward's backward reduces unless no_sync()
        sync = autograd.grad_enabled() and self.require_backward_grad_sync
        self.require_forward_param_sync = sync
        self.reducer.armed = sync
        return out

    def will_sync_module_buffers(self) -> bool:
        return self.require_forward_param_sync and self.forward_sync_buffers and \
            any(True for _ in self.module.buffers())

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (running statistics) to every rank, as torch does before each forward."""
        with autograd.no_grad():
            ldist.broadcast_coalesced([b for _, b in self.module.named_buffers()], 0, self.process_group)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes of forwards run inside accumulate `.grad` locally; the first backward of a
        forward outside reduces the accumulated gradients (torch's semantics)."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def comm_stats(self) -> dict:
        """Timings of the last reductions (`record_timings(True)` first): see `_Reducer.stats`."""
        return self.reducer.stats()

    def record_timings(self, on: bool = True) -> None:
        """Timestamp every bucket's all-reduce (launch, completion) for `comm_stats()`."""
        self.reducer.timed = on
        self.reducer.steps.clear()

    def register_comm_hook(self, state, hook):
        raise NotImplementedError("DistributedDataParallel.register_comm_hook is not supported by lazy")

    def join(self, *args, **kwargs):
        raise NotImplementedError("DistributedDataParallel.join (uneven numbers of batches) is not supported by lazy")


class _Bucket:
    __slots__ = ("indices", "numel")

    def __init__(self, indices: list[int], numel: int):
        self.indices, self.numel = indices, numel


class _Reducer:
    """Buckets, the reduction after backward, and its timings (see the module docstring)."""

    def __init__(self, params: list[Tensor], names: list[str], caps: list[int], group, find_unused: bool):
        self.params, self.names, self.group, self.find_unused = params, names, group, find_unused
        order = list(reversed(range(len(params))))
        host = [p.torch() for p in params]  # (torch's function reads their sizes, dtypes and devices)
        assignment, _ = _dist._compute_bucket_assignment_by_size([host[i] for i in order], caps,
                                                                 [False] * len(params), order)
        self.buckets = [_Bucket(list(b), sum(params[i].numel() for i in b)) for b in assignment]
        self.armed = False
        self.timed = False
        self.steps: list[dict] = []  # per reduction with `timed`: launch / done times, compute end, works
        self._step: dict | None = None  # the timed reduction whose program runs now
        self._start: float | None = None  # when reduce() started (None: a lazy.jit replay runs the program)

    def after_backward(self, touched: list[Tensor]) -> None:
        if not self.armed:
            return
        mine = {id(p) for p in self.params}
        if any(id(t) in mine for t in touched):
            self.armed = False
            self.reduce()

    def reduce(self) -> None:
        """Realize the gradients into their buckets and start each bucket's all-reduce as soon as it is
        complete; `.grad` becomes a view of its bucket."""
        ws = _dist.get_world_size(self.group)
        grads = [p._grad for p in self.params]
        used = self._used(grads)
        packs = []
        for b in self.buckets:
            nodes = []
            for i in b.indices:
                p, g = self.params[i], grads[i]
                shape = tuple(p.shape)
                if g is None:  # unused here: zeros in its place, as torch's reducer does
                    nodes.append(const(0, p.dtype, shape))
                    continue
                n = g._node
                if n.dtype is not p.dtype:
                    n = node(Op.CAST, (n,), p.dtype)
                if ws > 1:  # torch's reducer divides each gradient as it copies it into the bucket
                    n = node(Op.MUL, (n, const(1.0 / ws, p.dtype, shape)))
                nodes.append(n)
                if g._base is None:  # a pending accumulation (no zero_grad) goes into the bucket, not
                    _forget_write(g)  # into the old .grad's memory: the tensor takes its view below
            packs.append(nodes)
        # the loss, and pending values that read the parameters (the model's output, held across the
        # step): computed in this schedule, where the forward runs anyway; else the optimizer's
        # program would run the forward again before it overwrites the parameters (lazy/inplace.py)
        pending = list(transforms.pending_roots) + self._readers(grads)
        self._start = time.perf_counter()
        try:
            _, views = realize_packed(pending, packs, self._ready)
        finally:
            self._start = None
        for t in pending:
            transforms.pending_roots.discard(t)
        k = 0
        for b in self.buckets:
            for i in b.indices:
                v, k = views[k], k + 1
                p, g = self.params[i], grads[i]
                if used is not None and not used[i]:
                    continue  # unused on every rank: its .grad stays (torch's reducer leaves it)
                n = node(Op.BUFFER, (), v, p.dtype, tuple(p.shape))
                if g is None or g._base is not None:
                    g = p._grad = Tensor._new(n)
                else:  # the same tensor, as torch's reducer writes the averaged bucket back into .grad
                    g._set_realized(n, assigned=True)
                for r in runtime._recorders:  # lazy.jit: a replay gives .grad the replay's view
                    r.bound(g, v)

    def _readers(self, grads: list) -> list[Tensor]:
        """Live tensors whose pending values read the parameters' memory (the gradients aside: they
        go to the buckets)."""
        targets = {i: (b, p) for i, p in enumerate(self.params) if (b := inplace.held(p._node)) is not None}
        skip = {id(g) for g in grads if g is not None}
        return [t for t in inplace.readers(targets, {})[0] if id(t) not in skip]

    def _used(self, grads: list) -> list[bool] | None:
        """Which parameters some rank gave a gradient (None: all of them must have one)."""
        missing = [i for i, g in enumerate(grads) if g is None]
        if not self.find_unused:
            if missing:
                raise RuntimeError(
                    "DistributedDataParallel: parameters that did not receive a gradient in this backward: "
                    + ", ".join(f"{self.names[i]} (index {i})" for i in missing) + f" on rank "
                    f"{_dist.get_rank(self.group)}. Every parameter must be used in producing the loss, or pass "
                    "find_unused_parameters=True to DistributedDataParallel (as torch requires).")
            return None
        if runtime._recorders:
            runtime.record_unreplayable("DistributedDataParallel(find_unused_parameters=True) decides on the host "
                                        "which parameters received gradients")
        flags = torch.tensor([g is not None for g in grads], dtype=torch.int32, device=self.params[0].device)
        _dist.all_reduce(flags, group=self.group)
        return [bool(f) for f in flags.tolist()]

    def _ready(self, i: int, flat: torch.Tensor | None) -> None:
        """Bucket i's flat is complete (called between two kernels, also by lazy.jit's replays): start
        its all-reduce; the optimizer's program waits for it (runtime._in_flight). i = -1: the
        program's last launch is done."""
        step = self._step
        if i < 0:
            if step is not None:
                step["compute_end"] = time.perf_counter()
                self.steps.append(step)
                self._step = None
            return
        w = ldist._launch(f"all_reduce of gradient bucket {i}",
                          lambda: _dist.all_reduce(flat, group=self.group, async_op=True), [flat], True, self.group)
        if self.timed:
            if step is None:
                step = self._step = {"start": self._start, "launch": {}, "done": {}, "works": []}
            step["launch"][i] = time.perf_counter()
            step["works"].append(w)
            w.get_future().then(lambda _, i=i: step["done"].__setitem__(i, time.perf_counter()))

    def stats(self) -> dict:
        """Medians over the reductions recorded, in seconds: `comm` from the first all-reduce's launch
        to the last one's completion; `overlap` the part of `comm` before the program's last kernel
        ended (torch's reducer reports `backward_comm_time` and `backward_compute_comm_overlap_time`
        the same way); `hidden` = overlap / comm; `exposed` the time the process blocked waiting
        for them. `compute` (from reduce() to the program's end) is measured outside lazy.jit only."""
        rows = []
        for s in self.steps:
            if not s["launch"] or len(s["done"]) < len(s["launch"]) or not all(w.done for w in s["works"]):
                continue
            first, last = min(s["launch"].values()), max(s["done"].values())
            comm = max(last - first, 1e-12)
            row = {"comm": comm, "overlap": min(max(s["compute_end"] - first, 0.0), comm),
                   "exposed": sum(w.waited_s for w in s["works"])}
            if s["start"] is not None:
                row["compute"] = s["compute_end"] - s["start"]
            rows.append(row)
        if not rows:
            return {"steps": 0}
        keys = dict.fromkeys(k for r in rows for k in r)  # (`compute`: only rows outside lazy.jit have it)
        out = {k: statistics.median(r[k] for r in rows if k in r) for k in keys}
        out["hidden"] = out["overlap"] / out["comm"]
        out["steps"], out["buckets"] = len(rows), len(self.buckets)
        out["bytes"] = sum(b.numel for b in self.buckets) * self.params[0].element_size()
        return out


def _forget_write(t: Tensor) -> None:
    """t's pending in-place write is not computed into t's own memory (t takes a bucket view instead)."""
    e = inplace._dirty.get(id(t))
    if e is not None and e[0]() is t:
        del inplace._dirty[id(t)]
