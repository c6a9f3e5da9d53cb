"""lazy: tensor programs that build a graph and run it as fused, compiled kernels.

The public surface is torch-shaped: `lazy.tensor`, `lazy.zeros`, `lazy.float32`, ... and
torch-style functions mirroring Tensor methods (`lazy.exp(x)`, `lazy.sum(x, 1)`).
"""

import os as _os

# OpenMP threads sleep when idle instead of spinning (unless the user chose): our kernels, torch's
# and the BLAS's share one libgomp team, and on a machine with other busy processes a spinning team
# loses whole scheduler time slices at every parallel region (an MLP training step measured
# 11 ms median spinning vs 2.3 ms passive, torch eager alike). libgomp reads this when it loads,
# i.e. at the first `import torch`, so it only takes effect when lazy is imported first.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lazy.dtypes import *  # float32, ..., bool_, get_default_dtype
from lazy.dtypes import ALIASES as _ALIASES
from lazy.tensor import *  # Tensor, creation functions, where, cat, realize, ...
from lazy.tensor import FUNCTIONS as _FUNCTIONS

globals().update(_ALIASES)  # lazy.bool, lazy.float, lazy.long, ...: torch's short dtype names
globals().update(_FUNCTIONS)  # lazy.max, lazy.sum, ...: they shadow builtins only in this namespace

# ---- exports added by other modules (profile, no_grad, nn, optim, ...) go below this line
from lazy.runtime import debug, profile  # noqa: F401
from lazy import autograd  # noqa: E402,F401
from lazy.autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402,F401
from lazy.transforms import grad, jvp, value_and_grad  # noqa: E402,F401
from lazy import nn  # noqa: F401
from lazy import optim  # noqa: F401
from lazy.jit import jit  # noqa: E402,F401
from lazy.tuning import tune  # noqa: F401
