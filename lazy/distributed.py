"""Collectives on lazy tensors, run by torch.distributed: its launcher, process groups and backends
(gloo on CPUs, NCCL on GPUs). `import lazy.distributed as dist` reads like torch's.

In:  lazy tensors; torch.distributed's groups and `ReduceOp` (or the names "sum", "avg", "max",
     "min", "product"). The process group is torch's (`init_process_group`, re-exported here).
Out: torch's semantics. A collective writes its result into the tensor given (all_reduce,
     broadcast on the receivers) or the output tensors given (all_gather, reduce_scatter): after
     the call, or after `wait()` on the `Work` that `async_op=True` returns, the tensor holds it.

How, and the rules of lazy/inplace.py
- The tensor is realized and torch.distributed runs on its buffer: lazy's buffers are torch
  tensors, so nothing is copied. That memory is written in place only where lazy may write it:
  lazy allocated it, the tensor owns it and nothing else holds or reads its current value
  (`tensor.holds_alone`). The buffer then moves to its next version *before* the collective
  starts and its owner holds the new version (`tensor.overwritten`, as after any write outside a
  realization): a graph built from then on reads the new contents.
- Otherwise (the caller's torch tensor or numpy array, a clone that shares the memory, a view of
  another tensor) the collective writes a fresh contiguous copy, which becomes the tensor's value
  as an assignment would (through a view: written into its base as a pending write).
- In flight (`async_op=True`): the memory a collective writes or reads is registered in
  `runtime._in_flight` until its work completes; a realization that reads it (`run_program`) or a
  host read (`Tensor.torch()`, `.item()`...) waits for it first, so nothing ever reads a partial
  result, even without `wait()`.
- lazy.jit: a collective is a step of the recording (`runtime.record_collective`), replayed at its
  place between the programs, over the replay's buffers. One that had to write a fresh copy makes
  the step unreplayable (it keeps running as Python, with a JitWarning saying why).
- Errors of the backend (a peer process that raised and exited, a timeout of the group) are raised
  as RuntimeError naming the collective, this rank and the backend.
- NCCL: the same calls, selected by the group's backend: torch orders a collective after the work
  already queued on the current CUDA stream (where the Triton kernels run) and `wait()` makes that
  stream wait for it. Written, not tested here (CPU machines only).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as _dist
from torch.distributed import (  # re-exported (in __all__): lazy.distributed reads like torch.distributed
    ReduceOp,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    new_group,
)

from lazy import inplace, runtime
from lazy.autograd import no_grad
from lazy.dtypes import to_torch
from lazy.graph import Buffer, Op, node
from lazy.tensor import Tensor, holds_alone, overwritten, realize

__all__ = ["ReduceOp", "Work", "all_gather", "all_gather_into_tensor", "all_reduce", "barrier", "broadcast",
           "broadcast_coalesced", "destroy_process_group", "get_backend", "get_rank", "get_world_size",
           "init_process_group", "is_available", "is_initialized", "new_group", "reduce_scatter",
           "reduce_scatter_tensor"]

_OPS = {"sum": ReduceOp.SUM, "avg": ReduceOp.AVG, "mean": ReduceOp.AVG, "max": ReduceOp.MAX, "min": ReduceOp.MIN,
        "product": ReduceOp.PRODUCT, "prod": ReduceOp.PRODUCT}


class Work:
    """A collective in flight (torch's work handle, as `async_op=True` returns it). `wait()` blocks
    until it completes (raising the backend's error, if it failed); reading the tensors it writes
    waits too. `waited_s`: seconds spent blocked in `wait()`."""

    def __init__(self, work, memory: list[torch.Tensor], what: str, group=None):
        self._work, self.what, self._group = work, what, group
        self._keys = [runtime.storage_key(t) for t in memory]
        self.done = False
        self.waited_s = 0.0
        for k in self._keys:
            runtime._in_flight[k] = self

    def wait(self, timeout=None) -> bool:
        if self.done:
            return True
        t0 = time.perf_counter()
        try:
            self._work.wait() if timeout is None else self._work.wait(timeout)
        except RuntimeError as e:
            self._release()
            raise RuntimeError(_failed(self.what, e, self._group)) from e
        finally:
            self.waited_s += time.perf_counter() - t0
        self._release()
        return True

    def is_completed(self) -> bool:
        return self.done or self._work.is_completed()

    def get_future(self):
        return self._work.get_future()

    def _release(self) -> None:
        self.done = True
        for k in self._keys:
            if runtime._in_flight.get(k) is self:
                del runtime._in_flight[k]


def _failed(what: str, e: Exception, group=None) -> str:
    try:
        where = f"rank {get_rank(group)} of {get_world_size(group)}, backend {get_backend(group)}"
    except (RuntimeError, ValueError):
        where = "this rank"
    return (f"lazy.distributed: {what} failed ({where}): {e}\n(another rank may have raised or exited "
            "before joining this collective: see its error; a rank that stops answering makes the others fail "
            "after the process group's timeout)")


def _reduce_op(op):
    if isinstance(op, str):
        if op.lower() not in _OPS:
            raise ValueError(f"unknown reduce op {op!r}: expected one of {', '.join(_OPS)} or a "
                             "torch.distributed.ReduceOp")
        return _OPS[op.lower()]
    return op


def _tensor(op: str, t) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"lazy.distributed.{op}: expected a lazy Tensor, got {type(t).__name__} (use "
                        "torch.distributed for torch tensors)")
    return t


# -- where a collective reads and writes ---------------------------------------------------------------
def _source(op: str, t: Tensor) -> tuple[torch.Tensor, Buffer | None]:
    """The memory a collective reads t's value from (a realized buffer; None: a contiguous copy)."""
    realize(_tensor(op, t))
    b = inplace.held(t._node)
    data = t.torch()  # (waits for a collective still writing it)
    if b is not None and b.data is data and data.is_contiguous():
        return data, b
    return data.contiguous(), None


def _destination(op: str, t: Tensor, keep: bool) -> tuple[torch.Tensor, Buffer, bool]:
    """(memory the collective writes t's new value into, its Buffer, whether that is t's own buffer
    written in place); `keep`: the collective reads the current value there too (all_reduce)."""
    realize(_tensor(op, t))
    if t._base is None:
        b = inplace.held(t._node)
        if b is not None and b.owned and inplace.may_overwrite(t, b) and b.data.is_contiguous():
            renamed = False
            if not holds_alone(b):  # rule 3: pending readers of the old contents are computed first;
                first, renamed = inplace.readers({0: (b, t)}, {})  # a tensor holding them (a clone)
                if first and not renamed:  # keeps them: then the result goes to fresh memory
                    realize(*first)
            if not renamed:
                if runtime._in_flight:
                    runtime.settle([b])
                _bump(b)
                return b.data, b, True
    if keep:
        data = t.torch().clone(memory_format=torch.contiguous_format)
    else:
        data = torch.empty(tuple(t.shape), dtype=to_torch(t.dtype), device=t.device)
    return data, Buffer(data, owned=True), False


def _bump(b: Buffer) -> None:
    """b's memory is about to be overwritten outside a realization: next version, its owner holds it."""
    b.version += 1
    overwritten(b)


def _assign(t: Tensor, b: Buffer) -> None:
    """t's value is now b's (a fresh buffer a collective writes)."""
    n = node(Op.BUFFER, (), b, t.dtype, tuple(b.data.shape))
    if t._base is None:
        t._set_realized(n, assigned=True)
    else:
        with no_grad():
            t.copy_(Tensor._new(n))


def _launch(what: str, call, memory: list[torch.Tensor], async_op: bool, group) -> Work | None:
    if runtime._in_flight:  # an earlier collective on the same memory completes first
        for m in memory:
            w = runtime._in_flight.get(runtime.storage_key(m))
            if w is not None:
                w.wait()
    try:
        work = call()
    except RuntimeError as e:
        raise RuntimeError(_failed(what, e, group)) from e
    return Work(work, memory, what, group) if async_op else None


def _run(what: str, key: tuple, outs: list[tuple[Tensor, bool]], ins: list[Tensor], call, async_op: bool, group):
    """Run one collective: `outs` (tensor, whether its current value is read too) are written, `ins`
    read; `call(out_datas, in_datas)` starts it. Recorded for lazy.jit (see the module docstring)."""
    dests = [_destination(what, t, keep) for t, keep in outs]
    srcs = [_source(what, t) for t in ins]
    memory = [d for d, _, _ in dests] + [d for d, _ in srcs]
    work = _launch(what, lambda: call([d for d, _, _ in dests], [d for d, _ in srcs]), memory, async_op, group)
    for (t, _), (_, b, own) in zip(outs, dests):
        if not own:
            _assign(t, b)
    if runtime._recorders:
        if all(own for _, _, own in dests) and all(b is not None for _, b in srcs):
            n_out = len(dests)

            def replay(bufs: list[Buffer]) -> None:
                for b in bufs[:n_out]:
                    _bump(b)
                datas = [b.data for b in bufs]
                _launch(what, lambda: call(datas[:n_out], datas[n_out:]), datas, async_op, group)

            runtime.record_collective(key, replay, [b for _, b, _ in dests] + [b for _, b in srcs])
        else:
            runtime.record_unreplayable(f"{what} wrote a fresh copy of a tensor that shares its memory (or read a "
                                        "non-contiguous one): a replay could not redo it")
    return work


# -- the collectives --------------------------------------------------------------------------------
def all_reduce(tensor: Tensor, op=ReduceOp.SUM, group=None, async_op: bool = False) -> Work | None:
    """torch.distributed.all_reduce: `tensor` holds the reduction over the ranks of the group."""
    op = _reduce_op(op)
    return _run("all_reduce", ("all_reduce", op, group, async_op), [(tensor, True)], [],
                lambda o, i: _dist.all_reduce(o[0], op=op, group=group, async_op=async_op), async_op, group)


def broadcast(tensor: Tensor, src: int, group=None, async_op: bool = False) -> Work | None:
    """torch.distributed.broadcast: every rank's `tensor` holds rank `src`'s value."""
    if get_rank() == src:
        return _run("broadcast", ("broadcast", src, group, async_op), [], [tensor],
                    lambda o, i: _dist.broadcast(i[0], src, group=group, async_op=async_op), async_op, group)
    return _run("broadcast", ("broadcast", src, group, async_op), [(tensor, False)], [],
                lambda o, i: _dist.broadcast(o[0], src, group=group, async_op=async_op), async_op, group)


def all_gather(tensor_list: list[Tensor], tensor: Tensor, group=None, async_op: bool = False) -> Work | None:
    """torch.distributed.all_gather: `tensor_list[r]` holds rank r's `tensor`."""
    return _run("all_gather", ("all_gather", len(tensor_list), group, async_op), [(t, False) for t in tensor_list],
                [tensor], lambda o, i: _dist.all_gather(o, i[0], group=group, async_op=async_op), async_op, group)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group=None,
                           async_op: bool = False) -> Work | None:
    """torch.distributed.all_gather_into_tensor: the ranks' inputs concatenated along dim 0."""
    return _run("all_gather_into_tensor", ("all_gather_into_tensor", group, async_op), [(output_tensor, False)],
                [input_tensor], lambda o, i: _dist.all_gather_into_tensor(o[0], i[0], group=group, async_op=async_op),
                async_op, group)


def reduce_scatter(output: Tensor, input_list: list[Tensor], op=ReduceOp.SUM, group=None,
                   async_op: bool = False) -> Work | None:
    """torch.distributed.reduce_scatter: `output` holds the reduction over the ranks of their
    `input_list[rank]`."""
    op = _reduce_op(op)
    return _run("reduce_scatter", ("reduce_scatter", op, len(input_list), group, async_op), [(output, False)],
                list(input_list), lambda o, i: _dist.reduce_scatter(o[0], i, op=op, group=group, async_op=async_op),
                async_op, group)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op=ReduceOp.SUM, group=None,
                          async_op: bool = False) -> Work | None:
    """torch.distributed.reduce_scatter_tensor: `input` is the ranks' inputs concatenated along dim 0."""
    op = _reduce_op(op)
    return _run("reduce_scatter_tensor", ("reduce_scatter_tensor", op, group, async_op), [(output, False)], [input],
                lambda o, i: _dist.reduce_scatter_tensor(o[0], i[0], op=op, group=group, async_op=async_op),
                async_op, group)


def barrier(group=None, async_op: bool = False) -> Work | None:
    """torch.distributed.barrier (a step of a lazy.jit replay too)."""
    return _run("barrier", ("barrier", group, async_op), [], [],
                lambda o, i: _dist.barrier(group=group, async_op=async_op), async_op, group)


def broadcast_coalesced(tensors: list[Tensor], src: int = 0, group=None, bucket_bytes: int = 250 << 20) -> None:
    """Every rank's `tensors` take rank `src`'s values, sent as few messages as torch's own
    `_broadcast_coalesced` makes (DistributedDataParallel's parameters at construction, its buffers
    before each forward)."""
    ts = list(tensors)
    if not ts:
        return
    pg = group if group is not None else _dist.distributed_c10d._get_default_group()
    outs = [] if get_rank() == src else [(t, False) for t in ts]
    ins = ts if get_rank() == src else []
    _run("broadcast_coalesced", ("broadcast_coalesced", src, group, len(ts)), outs, ins,
         lambda o, i: _dist._broadcast_coalesced(pg, o or i, bucket_bytes, src), False, group)
