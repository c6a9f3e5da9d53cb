"""Automatic mixed precision: `autocast` regions and `GradScaler`, with torch.amp's API.

In:  `with lazy.autocast("cpu", dtype=lazy.bfloat16): ...` (also `lazy.amp.autocast`, and
     `lazy.cuda.amp.autocast` for "cuda"); ops that consult the region through `cast_inputs`.
Out: inside an enabled region, torch's autocast policy for the ops lazy has: the
     lower-precision ops (matmul/mm/bmm/`@`/einsum, linear, conv2d, conv_transpose2d,
     scaled_dot_product_attention) cast their floating inputs to the region's dtype; the float32
     ops (prod, mse_loss, l1_loss, nll_loss, cross_entropy, binary_cross_entropy(_with_logits))
     cast float16/bfloat16 inputs to float32; every other op runs in its inputs' dtypes, as in
     torch. float64 tensors are never cast (torch's eligibility rule). The casts are CAST nodes,
     so gradients flow back in the parameters' own dtypes.
     `GradScaler`: loss scaling with torch's state machine (scale, unscale_, step, update).

Invariants
- The regions are a stack per device type ('cpu', 'cuda'); an op reads the top entry of its
  tensors' device type. `autocast("cuda")` without a GPU warns and is disabled, as in torch.
- A disabled GradScaler (torch.cuda.amp's on a machine without CUDA, or enabled=False) is
  torch's disabled one: scale() returns its input, step() calls optimizer.step(), unscale_() and
  update() do nothing, get_scale() is 1.0.
- An enabled GradScaler reads the inf/NaN check on the host in step(), as torch does (one
  realization before the optimizer's); the scale reaches the graph as a buffer, so a new scale
  does not recompile the step.
"""

from __future__ import annotations

import functools
import warnings
from collections import defaultdict
from enum import Enum

import numpy as np
import torch

from lazy.graph import bfloat16, float16, float32, float64

__all__ = ["GradScaler", "autocast", "get_autocast_dtype", "is_autocast_enabled"]

_DEFAULT_DTYPE = {"cpu": bfloat16, "cuda": float16}
# per device type: the stack of (enabled, dtype) regions; the bottom entry is "off"
_regions: dict[str, list] = {d: [(False, dt)] for d, dt in _DEFAULT_DTYPE.items()}
_active = [0]  # regions entered and enabled, on any device type: ops skip autocast when 0

LOWER, FP32 = "lower", "fp32"


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    return _regions[_device_type(device_type)][-1][0]


def get_autocast_dtype(device_type: str):
    return _regions[_device_type(device_type)][-1][1]


def _device_type(d: str) -> str:
    if d not in _regions:
        raise RuntimeError(f"User specified an unsupported autocast device_type '{d}'")
    return d


def cast_inputs(policy: str, *ts):
    """`ts` as the op should see them inside the current autocast region (unchanged outside one):
    `policy` LOWER casts floating tensors to the region's dtype, FP32 casts float16/bfloat16 to
    float32. Non-tensors and float64 tensors pass through."""
    if not _active[0]:
        return ts
    out = []
    for t in ts:
        dt = getattr(t, "dtype", None)
        n = getattr(t, "_node", None)
        if n is not None and dt.is_float and dt is not float64:
            on, low = _regions.get((n.device or "cpu").split(":")[0], _regions["cpu"])[-1]  # cuda:1 -> cuda
            target = low if policy == LOWER else (float32 if dt in (float16, bfloat16) else dt)
            if on and target is not dt:
                t = t.to(target)
        out.append(t)
    return tuple(out)


def autocast_op(policy: str, *names: str):
    """Decorator: the function's tensor arguments named `names` (positional by signature order or
    keyword) go through cast_inputs(policy) first."""
    def wrap(fn):
        import inspect

        params = list(inspect.signature(fn).parameters)
        where = [params.index(n) for n in names]

        @functools.wraps(fn)
        def g(*args, **kw):
            if _active[0]:
                args = list(args)
                for n, i in zip(names, where):
                    if i < len(args):
                        args[i] = cast_inputs(policy, args[i])[0]
                    elif n in kw:
                        kw[n] = cast_inputs(policy, kw[n])[0]
            return fn(*args, **kw)
        return g
    return wrap


class autocast:
    """torch.autocast(device_type, dtype=None, enabled=True, cache_enabled=None): a context manager
    and decorator (see the module docstring). CPU takes bfloat16 (the default) or float16."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None):
        from lazy.dtypes import as_dtype

        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")  # noqa: TRY004 (torch's)
        self.device = _device_type(device_type)
        self.fast_dtype = _regions[self.device][-1][1] if dtype is None else as_dtype(dtype, "autocast")
        self._cache_enabled = True if cache_enabled is None else cache_enabled
        if enabled:
            if self.device == "cuda" and not torch.cuda.is_available():
                warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.", stacklevel=2)
                enabled = False
            elif self.fast_dtype not in (bfloat16, float16):
                name = self.device.upper()
                warnings.warn(f"In {name} autocast, but the target dtype is not supported. Disabling autocast.\n"
                              f"{name} Autocast only supports dtypes of torch.bfloat16, torch.float16 currently.",
                              stacklevel=2)
                enabled = False
        self._enabled = bool(enabled)

    def __enter__(self):
        _regions[self.device].append((self._enabled, self.fast_dtype))
        _active[0] += self._enabled
        return self

    def __exit__(self, *exc):
        on, _ = _regions[self.device].pop()
        _active[0] -= on
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"autocast()(func) requires a callable, but got {type(func).__name__}. "
                            "Did you mean to use autocast as a context manager? For example:\n"
                            "    with torch.autocast(device_type=...):\n"
                            "        output = model(input)")

        @functools.wraps(func)
        def run(*args, **kw):
            with autocast(self.device, self.fast_dtype, self._enabled, self._cache_enabled):
                return func(*args, **kw)
        return run


# ---------------------------------------------------------------- GradScaler

class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state() -> dict:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """torch.amp.GradScaler(device='cuda', init_scale=2**16, growth_factor=2, backoff_factor=0.5,
    growth_interval=2000, enabled=True); see the module docstring."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled and not torch.cuda.is_available():
            warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale: float | None = None  # float32 values, kept as Python floats
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: int | None = None
            self._per_optimizer_states: dict = defaultdict(_fresh_state)
            self._scale_tensors: dict = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def _check(self, funcname: str) -> None:
        fix = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  " + fix)

    def _tensor(self, value: float, device):
        """`value` as a 0-d float32 lazy tensor over a buffer: a new scale is a new buffer, not a new
        graph constant (so the step's program stays the same)."""
        from lazy.tensor import owned_tensor

        key = (value, str(device))
        t = self._scale_tensors.get(key)
        if t is None:
            t = owned_tensor(torch.tensor(value, dtype=torch.float32))
            t = t if str(device) == "cpu" else t.to(device).realize()
            if len(self._scale_tensors) > 8:  # old scales and their inverses
                self._scale_tensors.clear()
            self._scale_tensors[key] = t
        return t

    def scale(self, outputs):
        """outputs * scale: a tensor, or tensors in (nested) lists, tuples and iterables."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = float(np.float32(self._init_scale))
            self._growth_tracker = self._init_growth_tracker

        def apply(v):
            if hasattr(v, "_node"):
                return v * self._tensor(self._scale, v.device)
            if isinstance(v, (list, tuple)):
                return type(v)(map(apply, v))
            if hasattr(v, "__iter__"):
                return map(apply, v)
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")
        return apply(outputs)

    def unscale_(self, optimizer) -> None:
        """Divide the optimizer's gradients by the scale in place and record whether any is inf/NaN
        (lazily: the check is read in step())."""
        if not self._enabled:
            return
        self._check("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, float(np.float32(1.0 / self._scale)), False)
        state["stage"] = OptState.UNSCALED

    def _unscale_grads_(self, optimizer, inv_scale: float, allow_fp16: bool) -> dict:
        from lazy.autograd import no_grad

        found: dict = {}
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        continue
                    if not allow_fp16 and g.dtype is float16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    dev = str(g.device)
                    bad = g.isfinite().logical_not().any().float()
                    found[dev] = bad if dev not in found else found[dev].maximum(bad)
                    g.mul_(self._tensor(inv_scale, g.device))
            if not found:  # torch records a 0 for the scale's device even without gradients
                from lazy.tensor import zeros

                found["cpu"] = zeros(())
        return found

    def step(self, optimizer, *args, **kwargs):
        """unscale_ (unless done), then optimizer.step() unless a gradient was inf/NaN."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if len(state["found_inf_per_device"]) == 0:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None
        if not sum(v.item() for v in state["found_inf_per_device"].values()):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Back off after a skipped step, grow after growth_interval clean ones (torch's
        _amp_update_scale_, in float32), or set `new_scale`."""
        if not self._enabled:
            return
        self._check("update")
        if new_scale is not None:
            if isinstance(new_scale, float):
                self._scale = float(np.float32(new_scale))
            else:
                reason = ("new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
                          "torch.FloatTensor with requires_grad=False.")
                if getattr(new_scale, "numel", lambda: 0)() != 1 or getattr(new_scale, "requires_grad", False):
                    raise AssertionError(reason)
                self._scale = float(np.float32(float(new_scale)))
        else:
            found = [v.item() for s in self._per_optimizer_states.values() for v in s["found_inf_per_device"].values()]
            if len(found) == 0:
                raise AssertionError("No inf checks were recorded prior to update.")
            if sum(found):
                self._scale = float(np.float32(self._scale * self._backoff_factor))
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = np.float32(self._scale * self._growth_factor)
                    if np.isfinite(grown):
                        self._scale = float(grown)
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = defaultdict(_fresh_state)

    # ---- accessors and state, torch's names
    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def state_dict(self) -> dict:
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = float(np.float32(self._init_scale))
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = self._init_growth_tracker
