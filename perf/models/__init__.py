"""The model suite: five public PyTorch programs, each written once in plain torch style, that run
on torch or on lazy depending on the module handed to them.

In:  a model name (MODELS), a torch-like module (`torch` or `lazy`), a size ("tiny" for tests,
     "small" for `lazy bench --suite models`).
Out: a `Case`: the modules (whose state_dicts carry weights from one library to the other), a
     synthetic batch, a training step and an inference function over that batch.

Invariants
- A model file uses only what the public references use (`nn.Module`, `nn.Conv2d`,
  `nn.BatchNorm2d`, `F.*`, `torch.optim`, the lr schedulers) through the module it is handed:
  nothing of lazy's own, no `realize()`, so the same file is the torch program.
- Data is synthetic and drawn with numpy from a fixed seed: both libraries get the same numbers,
  and nothing is downloaded.
- Random numbers the programs draw themselves (dropout, `randn_like`, DCGAN's noise) come from
  the library's generator; lazy's draws torch's numbers for the same seed and calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perf.models import dcgan, gpt, mnist, resnet, vae

MODELS = {"mnist": mnist, "resnet18": resnet, "gpt2": gpt, "vae": vae, "dcgan": dcgan}
SIZES = ("tiny", "small")


@dataclass
class Case:
    name: str
    modules: dict  # name -> nn.Module, in the library the case was built with
    batch: tuple  # the tensor arguments of `train_step` and `infer`
    train_step: Callable  # (*batch) -> loss, or a tuple of losses
    infer: Callable  # (*batch) -> output (eval mode, no_grad)
    optimizers: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # what a model offers beyond the two (GPT: generate)


def build(name: str, torch_like, size: str = "small", seed: int = 0) -> Case:
    """Model `name` in library `torch_like` (torch or lazy); weights from `torch_like`'s generator
    seeded with `seed` (copy them across with `copy_weights` to compare libraries)."""
    if size not in SIZES:
        raise ValueError(f"model size {size!r}: expected one of {', '.join(SIZES)}")
    torch_like.manual_seed(seed)
    case = MODELS[name].build(torch_like, size, np.random.default_rng(seed))
    case.name = name
    return case


def copy_weights(src: Case, dst: Case) -> None:
    """Load every module of `src` (parameters and buffers: BatchNorm's running statistics) into `dst`."""
    for key, m in src.modules.items():
        dst.modules[key].load_state_dict(m.state_dict())
