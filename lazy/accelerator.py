"""lazy.accelerator: torch.accelerator's queries for the one accelerator lazy drives (CUDA).

In:  `lazy.accelerator.is_available()`, `current_accelerator()`, `device_count()`.
Out: torch's answers, restricted to CUDA: lazy runs Triton kernels on a CUDA GPU and C kernels on
     the CPU, so another accelerator torch might know (MPS, XPU) is reported as none.
"""

from __future__ import annotations

import torch

__all__ = ["current_accelerator", "device_count", "is_available", "synchronize"]


def current_accelerator(check_available: bool = False) -> torch.device | None:
    """torch.device('cuda') when torch was built with CUDA (and, with check_available, sees a GPU);
    else None."""
    acc = torch.accelerator.current_accelerator(check_available)
    return acc if acc is not None and acc.type == "cuda" else None


def is_available() -> bool:
    return current_accelerator(check_available=True) is not None


def device_count() -> int:
    return torch.cuda.device_count() if current_accelerator() is not None else 0


def synchronize(device=None) -> None:
    torch.accelerator.synchronize(device)
