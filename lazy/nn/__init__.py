"""lazy.nn: torch.nn's Module system, layers, losses and `functional` over lazy tensors.

`import lazy.nn as nn` reads like `import torch.nn as nn`; a model's forward builds graph, and a
training step (forward, backward, optimizer update) is realized as one schedule.

The core layers live in modules.py (their functions in functional.py); families added later sit in
a module of their own with both their functions and their layers (normalization, resample,
conv_transpose, losses) and are registered here: their layers in this namespace, their functions
(each module's FUNCTIONAL list) in `functional`, as torch has them.
"""

from lazy.nn import conv_transpose, functional, init, losses, modules, normalization, resample, utils
from lazy.nn.conv_transpose import *
from lazy.nn.losses import *
from lazy.nn.modules import *  # the layers; their list is modules.__all__
from lazy.nn.normalization import *
from lazy.nn.resample import *

_FAMILIES = (normalization, resample, conv_transpose, losses)
for _m in _FAMILIES:
    for _name in _m.FUNCTIONAL:
        setattr(functional, _name, getattr(_m, _name))
        functional.__all__.append(_name)

__all__ = list(modules.__all__) + [n for m in _FAMILIES for n in m.__all__ if n not in m.FUNCTIONAL] + \
    ["functional", "init", "utils"]
