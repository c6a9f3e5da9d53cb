"""Train a tiny GPT (2 layers, d=128) with lazy and with torch from the same weights on the same data.

    python examples/train_gpt.py                # 20 AdamW steps, compare the loss curves, time a step
    python examples/train_gpt.py --compile      # also time torch.compile (about 20 s to start)

The model is written once, as a function of the library (`gpt(torch)` or `gpt(lazy)`): the same
code with torch's names builds a torch model or a lazy one. Both start from the torch model's
weights and see the same synthetic batches: token sequences that mostly follow a fixed random
successor table (so next-token prediction is learnable and the loss falls fast).
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
from dataclasses import dataclass

import numpy as np
import torch

import lazy


@dataclass(frozen=True)
class Config:
    vocab: int = 64
    block: int = 32  # sequence length
    d: int = 128
    heads: int = 4
    layers: int = 2


def gpt(lib, cfg: Config):
    """A GPT-2 style decoder (pre-LayerNorm blocks, causal attention, GELU MLP) built with `lib`'s
    nn (torch or lazy): the same source for both."""
    nn, F = lib.nn, lib.nn.functional

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(cfg.d, 3 * cfg.d)
            self.proj = nn.Linear(cfg.d, cfg.d)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).split(c, dim=2)
            q, k, v = (z.view(b, t, cfg.heads, c // cfg.heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(b, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(cfg.d), Attention()
            self.ln2 = nn.LayerNorm(cfg.d)
            self.mlp = nn.Sequential(nn.Linear(cfg.d, 4 * cfg.d), nn.GELU(), nn.Linear(4 * cfg.d, cfg.d))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(cfg.vocab, cfg.d)
            self.pos = nn.Embedding(cfg.block, cfg.d)
            self.blocks = nn.ModuleList([Block() for _ in range(cfg.layers)])
            self.ln_f = nn.LayerNorm(cfg.d)
            self.head = nn.Linear(cfg.d, cfg.vocab, bias=False)

        def forward(self, idx):
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(lib.arange(t))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    return GPT()


def make_batches(steps: int, batch: int, cfg: Config, seed: int = 0, noise: float = 0.1):
    """(inputs, targets) pairs of int64 arrays [batch, block]: targets are inputs shifted by one."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(cfg.vocab)
    out = []
    for _ in range(steps):
        seq = np.empty((batch, cfg.block + 1), np.int64)
        seq[:, 0] = rng.integers(0, cfg.vocab, batch)
        for i in range(cfg.block):
            jump = rng.random(batch) < noise
            seq[:, i + 1] = np.where(jump, rng.integers(0, cfg.vocab, batch), nxt[seq[:, i]])
        out.append((seq[:, :-1].copy(), seq[:, 1:].copy()))
    return out


def train(lib_name: str, batches, cfg: Config, lr: float = 3e-3, seed: int = 0, compile: bool = False,
          jit: bool = False):
    """Losses and per-step seconds of AdamW steps with torch ("torch") or lazy ("lazy"); `jit`: the
    lazy step under lazy.jit (recorded on its 2nd and 3rd calls, replayed after)."""
    torch.manual_seed(seed)
    reference = gpt(torch, cfg)  # both libraries start from these weights
    if lib_name == "torch":
        model, lib, wrap = reference, torch, torch.tensor
        run = torch.compile(model) if compile else model
    else:
        model, lib, wrap = gpt(lazy, cfg), lazy, lazy.tensor
        model.load_state_dict(reference.state_dict())
        run = model
    opt = lib.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def step(x, y):
        logits = run(x)
        loss = lib.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()  # lazy: forward, backward and update run here, as one schedule
        return loss

    if jit and lib_name == "lazy":
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
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--timing-steps", type=int, default=30, help="extra steps timed after the comparison")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args(argv)
    cfg = Config()
    batches = make_batches(args.steps, args.batch, cfg)
    ref, _ = train("torch", batches, cfg, args.lr)
    got, secs = train("lazy", batches, cfg, args.lr)
    n_params = sum(p.numel() for p in gpt(torch, cfg).parameters())
    print(f"GPT: {cfg.layers} layers, d={cfg.d}, {cfg.heads} heads, vocab {cfg.vocab}, sequence {cfg.block}, "
          f"batch {args.batch}, {n_params / 1e6:.2f}M parameters, AdamW lr={args.lr}")
    print(f"{'step':>4} {'torch':>10} {'lazy':>10} {'|diff|':>10}")
    for i, (a, b) in enumerate(zip(ref, got)):
        print(f"{i:4d} {a:10.6f} {b:10.6f} {abs(a - b):10.2e}")
    print(f"max |loss difference| over {args.steps} steps: {max(abs(a - b) for a, b in zip(ref, got)):.3e}")
    print(f"lazy's first step (schedule + compile): {secs[0]:.1f} s")

    timing = make_batches(args.timing_steps + 3, args.batch, cfg, seed=1)
    kinds = ["lazy", "lazy.jit", "torch"] + (["torch.compile"] if args.compile else [])
    print(f"\none training step (median of {args.timing_steps}, after 3 warm-up steps), this process:")
    for kind in kinds:
        _, s = train("torch" if kind.startswith("torch") else "lazy", timing, cfg, args.lr,
                     compile=kind == "torch.compile", jit=kind == "lazy.jit")
        print(f"  {kind:<14} {statistics.median(s[3:]) * 1e3:9.2f} ms   (first step {s[0]:.2f} s)")
    with lazy.profile() as prof:
        train("lazy", timing[:2], cfg, args.lr)
    print(f"  lazy kernels per step: {len(prof.kernels) // 2}")


if __name__ == "__main__":
    main()
