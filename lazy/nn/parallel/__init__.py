"""lazy.nn.parallel: data parallelism over torch.distributed (`DistributedDataParallel`)."""

from lazy.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
