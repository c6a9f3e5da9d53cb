"""lazy: tensor programs that build a graph and run it as fused, compiled kernels.

The public surface is torch-shaped: `lazy.tensor`, `lazy.zeros`, `lazy.float32`, ... and
torch-style functions mirroring Tensor methods (`lazy.exp(x)`, `lazy.sum(x, 1)`).
The imports below run in the order written (later ones patch Tensor and read what earlier ones
defined; the aliases go last), so they are not sorted.
"""
# ruff: noqa: I001

import gc as _gc
import os as _os

# The garbage collector is paused while torch and lazy import (hundreds of thousands of objects,
# almost none of them garbage: its 500 collections took 0.2-0.3 s of the import when sympy loaded
# here too), and what the import made is then frozen (`gc.freeze`): moved out of the
# generations the collector scans. Without that, every full collection of a later program walks
# all of torch's objects again: a warm process's first GPT training step spent 0.18 s of its 0.7 s
# collecting, 0.03 s frozen. LAZY_GC_FREEZE=0 keeps the collector as it was (the imports then run
# with it on). Sympy and the scheduler load at the first schedule, the collector paused then too
# (lazy/runtime.py `_schedule`).
_freeze = _os.environ.get("LAZY_GC_FREEZE", "1")
if _freeze not in ("0", "1"):
    raise ValueError(f"LAZY_GC_FREEZE={_freeze!r}: expected 0 or 1")
_gc_was_enabled = _gc.isenabled()
if _freeze == "1":
    _gc.disable()

import torch as _torch

# Idle OpenMP threads spin briefly, then sleep (unless the user chose a policy): our kernels,
# torch's and the BLAS's all start parallel regions back to back, and waking a sleeping thread on
# the development VM costs 0.1-0.2 ms per region. libgomp's default spins ~100x longer, which on a
# machine with other busy processes loses whole scheduler slices at every region. Measured on this
# 2-core VM (lazy.jit GPT training steps, GPT generate of 32 tokens): quiet, 3000 spins 2.2 and
# 35 ms and 0.66 s, 30000 spins 2.5 and 38 ms and 0.69 s, sleeping at once (OMP_WAIT_POLICY=PASSIVE)
# 4.0 and 59 ms and 0.83 s; with other processes busy (load 3), 3000 spins 25 ms and 0.88 s,
# 30000 spins 28 ms and 6-12 s, passive 7 ms and 0.67 s. libgomp reads this when it loads, i.e.
# at the first `import torch`, so it only takes effect when lazy is imported first.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "3000")

from lazy.dtypes import *  # float32, ..., bool_, get_default_dtype
from lazy.dtypes import ALIASES as _ALIASES
from lazy.tensor import *  # Tensor, creation functions, where, cat, realize, ...
from lazy import math_ops as _math_ops  # noqa: F401 (Tensor methods: fmod, atan, addcmul, ...)
from lazy import shape_ops as _shape_ops  # noqa: F401 (diag, repeat_interleave, unfold)
from lazy import random_ops as _random_ops  # noqa: F401 (bernoulli, multinomial, uniform_, ...)
from lazy.arg_aliases import with_aliases as _with_aliases  # last: axis=/keepdims= on all of the above
from lazy.tensor import FUNCTIONS as _FUNCTIONS

cat, concat, stack, var_mean, std_mean = map(_with_aliases, (cat, concat, stack, var_mean, std_mean))

globals().update(_ALIASES)  # lazy.bool, lazy.float, lazy.long, ...: torch's short dtype names
globals().update(_FUNCTIONS)  # lazy.max, lazy.sum, ...: they shadow builtins only in this namespace

# ---- exports added by other modules (profile, no_grad, nn, optim, ...) go below this line
from lazy.runtime import debug, profile  # noqa: F401
from lazy import autograd  # noqa: F401
from lazy.autograd import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled,  # noqa: F401
                           no_grad, set_grad_enabled)
from lazy.transforms import grad, jvp, value_and_grad  # noqa: F401
from lazy import nn  # noqa: F401
from lazy import optim  # noqa: F401
from lazy import distributed  # noqa: F401 (collectives over torch.distributed; nn.parallel uses it)
from lazy.jit import jit  # noqa: F401
from lazy import indexed as _indexed  # gather, scatter, sort, cumsum... and advanced indexing

globals().update(_indexed.FUNCTIONS)
from lazy.tuning import tune  # noqa: F401
from lazy import accelerator, amp, cuda  # noqa: F401
from lazy.amp import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: F401
from lazy.dtypes import set_default_dtype  # noqa: F401
from lazy.dynamic import mark_dynamic  # noqa: F401

device = _torch.device  # lazy.device("cuda" if lazy.cuda.is_available() else "cpu"): torch's own class
Size = _torch.Size
Generator = _torch.Generator  # generator= arguments take torch's (lazy draws on the host with one)

if _freeze == "1":
    _gc.freeze()
    if _gc_was_enabled:
        _gc.enable()
