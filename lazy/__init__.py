"""lazy: tensor programs that build a graph and run it as fused, compiled kernels.

The public surface is torch-shaped: `lazy.tensor`, `lazy.zeros`, `lazy.float32`, ... and
torch-style functions mirroring Tensor methods (`lazy.exp(x)`, `lazy.sum(x, 1)`).
"""

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
