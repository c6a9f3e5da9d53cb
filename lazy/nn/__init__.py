"""lazy.nn: torch.nn's Module system, layers, losses and `functional` over lazy tensors.

`import lazy.nn as nn` reads like `import torch.nn as nn`; a model's forward builds graph, and a
training step (forward, backward, optimizer update) is realized as one schedule.
"""

from lazy.nn import functional, init, modules, parallel  # (parallel, DistributedDataParallel, uses modules)
from lazy.nn.modules import *  # the layers; their list is modules.__all__

__all__ = list(modules.__all__) + ["functional", "init", "parallel"]
