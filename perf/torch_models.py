"""The model suite in plain torch.nn, for `torch.compile(model, backend="lazy")`.

In:  nothing (each entry builds a model and its inputs, seeded, at a size given by `scale`).
Out: `MODELS`: name -> (model class, function scale -> inputs). tests/test_dynamo_backend.py
     checks lazy against eager on them at scale 1; perf/dynamo_bench.py times them at larger scales.

Each model is small and uses the layers common models are made of, so that together they cover
the aten ops AOTAutograd produces for them: Linear (addmm, mm, permute), Conv2d and its backward,
BatchNorm2d in training (_native_batch_norm_legit_functional), MaxPool2d (max_pool2d_with_indices
and its backward), Embedding (embedding, embedding_dense_backward), LayerNorm, causal attention
(scaled_dot_product_attention), GELU, ConvTranspose2d, residual adds, sigmoid and exp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 32, hidden: int = 64, d_out: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, channels: int = 8, size: int = 8, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels * (size // 2) ** 2, classes)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


class GPTBlock(nn.Module):
    """Token and position embeddings, one pre-norm transformer block, a vocabulary head."""

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, ctx: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(ctx, dim) * 0.02)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, vocab)
        self.heads = heads

    def forward(self, idx):
        b, t = idx.shape
        x = self.emb(idx) + self.pos[:t]
        q, k, v = self.qkv(self.ln1(x)).split(x.shape[-1], -1)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
        x = x + self.proj(a)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x)


class VAE(nn.Module):
    """A conv encoder to a mean and log-variance, a reparameterized sample, a ConvTranspose2d decoder."""

    def __init__(self, channels: int = 4, latent: int = 8, size: int = 8):
        super().__init__()
        self.c, self.s = channels, size // 2
        flat = channels * self.s * self.s
        self.enc = nn.Conv2d(1, channels, 4, 2, 1)
        self.mu, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.dec = nn.Linear(latent, flat)
        self.up = nn.ConvTranspose2d(channels, 1, 4, 2, 1)

    def forward(self, x, eps):
        h = F.relu(self.enc(x)).flatten(1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + eps * torch.exp(0.5 * logvar)
        y = torch.sigmoid(self.up(F.relu(self.dec(z)).view(-1, self.c, self.s, self.s)))
        return y, mu, logvar


class ResBlock(nn.Module):
    """A ResNet basic block: conv-bn-relu-conv-bn, plus the input, relu."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(channels)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


def _mlp(scale: int):
    return MLP(32 * scale, 64 * scale, 10), lambda: (torch.randn(4 * scale, 32 * scale),)


def _cnn(scale: int):
    s = 8 * scale
    return CNN(8 * scale, s), lambda: (torch.randn(2 * scale, 3, s, s),)


def _gpt(scale: int):
    return GPTBlock(64 * scale, 32 * scale, 4, 16 * scale), lambda: (torch.randint(0, 64 * scale, (2 * scale, 16 * scale)),)


def _vae(scale: int):
    s = 8 * scale
    return VAE(4 * scale, 8 * scale, s), lambda: (torch.rand(2 * scale, 1, s, s), torch.randn(2 * scale, 8 * scale))


def _res(scale: int):
    return ResBlock(8 * scale), lambda: (torch.randn(2 * scale, 8 * scale, 8 * scale, 8 * scale),)


MODELS = {"mlp": _mlp, "cnn": _cnn, "gpt": _gpt, "vae": _vae, "resblock": _res}


def build(name: str, scale: int = 1, seed: int = 0):
    """(model, inputs) of suite entry `name`, seeded: the same weights and inputs every call."""
    torch.manual_seed(seed)
    model, make_inputs = MODELS[name](scale)
    return model, make_inputs()


def loss_of(out) -> torch.Tensor:
    """A scalar from a model's output(s) whose gradient reaches every output element unevenly
    (a plain sum would give ones, hiding a transposed gradient)."""
    outs = out if isinstance(out, tuple) else (out,)
    return sum((o * o).sum() for o in outs)
