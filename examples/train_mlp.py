"""Train the MLP of issue 4 with lazy and with torch from the same weights on the same batches.

    python examples/train_mlp.py                       # 784-256-10, batch 64, 20 steps, AdamW
    python examples/train_mlp.py --compile             # also time torch.compile (about 20 s to start)

The model, loss and optimizer are written once with torch's names: `nn`/`F`/`optim` are either
torch's or lazy's. Both runs start from the same weights (the torch model's state dict is loaded
into the lazy one) and see the same synthetic batches (a fixed random linear teacher labels
Gaussian inputs, so the loss goes down). Prints both loss curves, their largest difference, and
the time of one training step (forward + backward + AdamW update + reading the loss) for each.
"""

from __future__ import annotations

import os

# as `import lazy` would do, but before torch loads libgomp, so torch and lazy run alike: idle OpenMP
# threads spin briefly before they sleep (see lazy/__init__.py)
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

import argparse
import statistics
import time

import numpy as np
import torch

import lazy


def make_model(nn, sizes=(784, 256, 10)):
    d_in, d_hidden, d_out = sizes
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.LayerNorm(d_hidden), nn.Linear(d_hidden, d_out))


def make_batches(steps: int, batch: int, sizes=(784, 256, 10), seed: int = 0):
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((sizes[0], sizes[-1])).astype(np.float32)
    out = []
    for _ in range(steps):
        x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
        out.append((x, (x @ teacher).argmax(-1).astype(np.int64)))
    return out


def train(lib: str, batches, sizes=(784, 256, 10), lr: float = 1e-3, seed: int = 0, compile: bool = False,
          jit: bool = False):
    """Losses and per-step seconds of `len(batches)` AdamW steps with torch ("torch") or lazy ("lazy");
    `compile`: the torch model under torch.compile; `jit`: the lazy step under lazy.jit (recorded on its
    2nd and 3rd calls, replayed after)."""
    torch.manual_seed(seed)
    reference = make_model(torch.nn, sizes)  # both libraries start from these weights
    if lib == "torch":
        model, F, optim, wrap = reference, torch.nn.functional, torch.optim, torch.tensor
        run = torch.compile(model) if compile else model
    else:
        model = make_model(lazy.nn, sizes)
        model.load_state_dict(reference.state_dict())
        F, optim, wrap, run = lazy.nn.functional, lazy.optim, lazy.tensor, model
    opt = optim.AdamW(model.parameters(), lr=lr)

    def step(x, y):
        loss = F.cross_entropy(run(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()  # lazy: forward, backward and update run here, as one schedule
        return loss

    if jit and lib == "lazy":
        step = lazy.jit(step)
    losses, seconds = [], []
    for xb, yb in batches:
        t0 = time.perf_counter()
        loss = step(wrap(xb), wrap(yb))
        losses.append(loss.item())
        seconds.append(time.perf_counter() - t0)
    return losses, seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs=3, default=(784, 256, 10))
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--timing-steps", type=int, default=30, help="extra steps timed after the comparison")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args(argv)
    sizes = tuple(args.sizes)
    batches = make_batches(args.steps, args.batch, sizes)
    ref, _ = train("torch", batches, sizes, args.lr)
    got, _ = train("lazy", batches, sizes, args.lr)
    print(f"MLP {sizes[0]}-{sizes[1]}-{sizes[2]} (GELU, LayerNorm), batch {args.batch}, AdamW lr={args.lr}")
    print(f"{'step':>4} {'torch':>10} {'lazy':>10} {'|diff|':>10}")
    for i, (a, b) in enumerate(zip(ref, got)):
        print(f"{i:4d} {a:10.6f} {b:10.6f} {abs(a - b):10.2e}")
    print(f"max |loss difference| over {args.steps} steps: {max(abs(a - b) for a, b in zip(ref, got)):.3e}")

    timing = make_batches(args.timing_steps + 5, args.batch, sizes, seed=1)
    kinds = ["lazy", "lazy.jit", "torch"] + (["torch.compile"] if args.compile else [])
    print(f"\none training step (median of {args.timing_steps}, after 5 warm-up steps), this process:")
    for kind in kinds:
        _, secs = train("torch" if kind.startswith("torch") else "lazy", timing, sizes, args.lr,
                        compile=kind == "torch.compile", jit=kind == "lazy.jit")
        print(f"  {kind:<14} {statistics.median(secs[5:]) * 1e3:9.2f} ms   (first step {secs[0]:.2f} s)")
    with lazy.profile() as prof:
        train("lazy", timing[:2], sizes, args.lr)
    print(f"  lazy kernels per step: {len(prof.kernels) // 2}")


if __name__ == "__main__":
    main()
