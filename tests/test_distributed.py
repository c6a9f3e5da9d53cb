"""Packing roots into flat buffers (data-parallel gradient buckets, lazy/packing.py), in one process."""

from __future__ import annotations

import numpy as np
import torch

import lazy
from lazy import nn, runtime
from lazy.graph import Op, const, node
from lazy.tensor import realize_packed


# -- packing gradients into buckets, in one process --------------------------------------------------
def _mlp_gradients(scale: float = 0.5):
    lazy.manual_seed(8)
    m = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    loss = nn.functional.cross_entropy(m(lazy.tensor(rng.standard_normal((6, 6), dtype=np.float32))),
                                       lazy.tensor(rng.integers(0, 3, 6)))
    loss.backward()
    ps = list(m.parameters())
    buckets = [[5, 4], [3, 2, 1, 0]]
    return loss, [[node(Op.MUL, (ps[i].grad._node, const(scale, ps[i].dtype, tuple(ps[i].shape)))) for i in b]
                  for b in buckets]


def test_packed_gradients_are_computed_into_their_buckets_without_a_copy_kernel():
    for _ in range(2):  # (compiled on the first pass)
        loss, packs = _mlp_gradients()
        with lazy.profile() as plain:
            values = lazy.realize(*[lazy.Tensor._new(n) for p in packs for n in p], loss)[:-1]
        loss, packs = _mlp_gradients()
        with lazy.profile() as packed:
            flats, views = realize_packed([loss], packs)
    assert [k.name for k in packed.kernels] == [k.name for k in plain.kernels]
    prog = next(reversed(runtime._programs.values()))
    assert not prog.copies  # every gradient stored in place by the kernel that computes it
    torch.testing.assert_close(flats[0].data, torch.cat([v.torch().reshape(-1) for v in values[:2]]))
    torch.testing.assert_close(flats[1].data, torch.cat([v.torch().reshape(-1) for v in values[2:]]))
    for v, f in zip(views, [0, 0, 1, 1, 1, 1]):
        assert v.data.untyped_storage().data_ptr() == flats[f].data.untyped_storage().data_ptr()


def test_a_bucket_is_handed_over_as_soon_as_its_kernels_are_done():
    ready: list = []
    for _ in range(2):  # (compiled on the first pass)
        loss, packs = _mlp_gradients()
        ready.clear()
        flats, _ = realize_packed([loss], packs, on_ready=lambda i, flat: ready.append((i, flat.clone())))
    prog = next(reversed(runtime._programs.values()))
    at = {f: p for p, ev in enumerate(prog.events) if ev for f in ev[1]}
    assert [i for i, _ in ready] == [0, 1]
    assert at[0] < at[1] <= len(prog.launches)
    assert at[0] < len(prog.launches) - 2  # later backward kernels still run while bucket 0 is reduced
    for (i, early), flat in zip(ready, flats):  # complete when handed over
        assert torch.equal(early, flat.data)


def test_packs_copy_inputs_and_repeated_roots_into_place():
    a = lazy.tensor(torch.arange(6.0).reshape(2, 3))
    b = (a * 2).realize()
    c = a + 1
    flats, views = realize_packed([], [[b._node, c._node], [c._node, a._node]])
    torch.testing.assert_close(flats[0].data, torch.tensor([0.0, 2, 4, 6, 8, 10, 1, 2, 3, 4, 5, 6]))
    torch.testing.assert_close(flats[1].data, torch.tensor([1.0, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5]))
    assert [tuple(v.data.shape) for v in views] == [(2, 3)] * 4


def test_packs_on_the_reference_backend(monkeypatch):
    monkeypatch.setenv("LAZY_BACKEND", "interp")
    loss, packs = _mlp_gradients()
    ready = []
    flats, views = realize_packed([loss], packs, on_ready=lambda i, flat: ready.append(i))
    assert ready == [0, 1] and [f.data.numel() for f in flats] == [51, 144]
    assert views[0].data.untyped_storage().data_ptr() == flats[0].data.untyped_storage().data_ptr()
