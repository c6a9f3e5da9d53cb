"""lazy.cuda: torch.cuda's module-level queries, seeding and amp, for programs written for a GPU.

In:  calls like `lazy.cuda.is_available()`, `lazy.cuda.manual_seed_all(0)`,
     `lazy.cuda.amp.GradScaler()`, `with lazy.cuda.amp.autocast(): ...`.
Out: torch's answers for this machine: lazy runs on a GPU exactly when torch sees one (its
     kernels are Triton there), so availability, counts and device names are torch.cuda's.

Invariants
- Random numbers for every device are drawn on the host by lazy's one generator
  (`lazy.manual_seed`) and moved, so `manual_seed`/`manual_seed_all` here seed torch's CUDA
  generators only (a no-op without a GPU, as in torch) and never lazy's stream.
- `synchronize` and the other calls that need a GPU raise torch's own error without one.
- `amp.GradScaler` / `amp.autocast` are lazy.amp's with device "cuda" and torch's deprecation
  warnings: without CUDA they warn and are disabled, as torch's are.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

import torch

from lazy import amp as _amp

__all__ = ["amp", "current_device", "device_count", "empty_cache", "get_device_name", "is_available",
           "is_bf16_supported", "manual_seed", "manual_seed_all", "synchronize"]


def is_available() -> bool:
    return torch.cuda.is_available()


def device_count() -> int:
    return torch.cuda.device_count()


def current_device() -> int:
    return torch.cuda.current_device()


def get_device_name(device=None) -> str:
    return torch.cuda.get_device_name(device)


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation)


def manual_seed(seed: int) -> None:
    torch.cuda.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.cuda.manual_seed_all(seed)


def synchronize(device=None) -> None:
    """Wait for the GPU's queued kernels (lazy realizes synchronously on the host side)."""
    torch.cuda.synchronize(device)


def empty_cache() -> None:
    torch.cuda.empty_cache()


def require() -> None:
    """Raise torch's own error (type and text) where torch has no CUDA device to give."""
    if not torch.cuda.is_available():
        torch.empty(0).cuda()  # raises, as `.cuda()` does in torch on this machine
        raise RuntimeError("Found no NVIDIA driver on your system.")  # in case torch did not


class _CudaGradScaler(_amp.GradScaler):
    """torch.cuda.amp.GradScaler: deprecated alias of GradScaler('cuda', ...)."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        warnings.warn("`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                      "`torch.amp.GradScaler('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


class _CudaAutocast(_amp.autocast):
    """torch.cuda.amp.autocast: deprecated alias of autocast('cuda', ...)."""

    def __init__(self, enabled: bool = True, dtype=torch.float16, cache_enabled: bool = True):
        warnings.warn("`torch.cuda.amp.autocast(args...)` is deprecated. Please use "
                      "`torch.amp.autocast('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cuda", dtype, enabled, cache_enabled)


_CudaGradScaler.__name__ = _CudaGradScaler.__qualname__ = "GradScaler"
_CudaAutocast.__name__ = _CudaAutocast.__qualname__ = "autocast"
# a module of its own, so `from lazy.cuda.amp import autocast, GradScaler` works as torch's does
amp = ModuleType("lazy.cuda.amp", "torch.cuda.amp's deprecated aliases: GradScaler and autocast for 'cuda'.")
amp.GradScaler, amp.autocast, amp.__all__ = _CudaGradScaler, _CudaAutocast, ["GradScaler", "autocast"]
sys.modules[amp.__name__] = amp
