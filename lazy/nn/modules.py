"""torch.nn's Module system and layers over lazy tensors.

In:  torch-style model code: `class Net(nn.Module)` with `__init__` registering parameters and
     submodules, `forward` composing lazy ops.
Out: modules whose forward builds graph; parameters are lazy leaf tensors that own a buffer.

Invariants
- A `Parameter` is a Tensor that requires grad and owns a BUFFER node: autograd tells leaves apart
  by node, so two parameters never share one (equal CONSTs would be a single node).
- Parameters are created from host memory (no kernel runs to build a model) and initialized with
  torch's init functions on lazy's generator, in torch's order: with the same seed a lazy model and
  a torch model start from identical weights.
- `load_state_dict` copies (never aliases) whatever it is given: torch tensors, numpy arrays, lazy
  tensors. Aliasing a torch model's weights would let torch's in-place optimizer change ours.
- An optimizer updates parameters in place (the Parameter objects stay, their node moves on);
  `Module.to(dtype/device)` makes new Parameters, like building a new model (create the optimizer
  after moving, as torch recommends).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict, namedtuple
from typing import Self

import numpy as np
import torch

import lazy
from lazy import runtime
from lazy.dtypes import to_torch
from lazy.graph import Op
from lazy.nn import functional as F
from lazy.nn import init
from lazy.tensor import Tensor, _leaf_tensors, owned_tensor, tensor

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "SELU",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "Flatten",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSigmoid",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Mish",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "RMSNorm",
    "ReLU",
    "ReLU6",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softmin",
    "Softplus",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
]


# ---------------------------------------------------------------- Parameter

class Parameter(Tensor):
    """torch.nn.Parameter: a leaf tensor that requires grad and owns its buffer; a Module
    attribute holding one registers it. `Parameter(t)` takes t's value (realized if lazy)."""

    __slots__ = ()

    def __new__(cls, data=None, requires_grad: bool = True):
        src = lazy.empty(0) if data is None else (data if isinstance(data, Tensor) else tensor(data))
        n = src._node
        if n.op is Op.BUFFER and any(t._node is n for t in _leaf_tensors):
            n = owned_tensor(src.torch().clone())._node  # that buffer is another leaf's identity
        t = object.__new__(cls)
        fresh = Tensor._new(n)
        for s in Tensor.__slots__:
            if s != "__weakref__":
                object.__setattr__(t, s, getattr(fresh, s))
        if requires_grad:
            t.requires_grad_()  # realizes a lazy value: a leaf's identity is its buffer
        elif n.op is not Op.BUFFER:
            t.realize()
        return t

    def __init__(self, data=None, requires_grad: bool = True):
        pass  # all done in __new__ (Tensor.__init__ would rebuild from `data`)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __deepcopy__(self, memo) -> Parameter:
        out = memo.get(id(self))
        if out is None:
            out = memo[id(self)] = Parameter(self.torch().clone(), self.requires_grad)
        return out

    def __reduce__(self):
        return Parameter, (self.torch().clone(), self.requires_grad)


def _param(*shape, dtype=None, device=None) -> Parameter:
    """An uninitialized parameter straight from host memory (no kernel): init fills it next."""
    dt = to_torch(lazy.get_default_dtype() if dtype is None else lazy.dtypes.as_dtype(dtype, "Parameter"))
    p = Parameter(torch.empty(shape, dtype=dt))
    return p if device is None or torch.device(device) == p.device else Parameter(p.to(device))


def _host_copy(op: str, key: str, value, like: Tensor) -> torch.Tensor:
    """A private torch copy of `value` with like's dtype and device."""
    if isinstance(value, Tensor):
        t = value.torch()
    elif isinstance(value, torch.Tensor):
        t = value.detach()
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        try:
            t = torch.tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{op}: value for {key!r} must be a tensor, numpy array or number, got "
                            f"{type(value).__name__}") from None
    return t.to(device=like.device, dtype=to_torch(like.dtype), copy=True).contiguous()


# ---------------------------------------------------------------- Module

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """torch.nn.Module: registers Parameters, buffers and submodules assigned as attributes."""

    training: bool

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers"] = set()
        d["_modules"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required \"forward\" function")

    def __call__(self, *args, **kwargs):
        for r in runtime._recorders:  # lazy.jit: a replay checks the mode and parameters seen here
            r.module_called(self)
        return self.forward(*args, **kwargs)

    # ---- attribute registration
    def _registry(self, name: str):
        d = self.__dict__.get(name)
        if d is None:
            raise AttributeError(f"cannot assign to {type(self).__name__} before Module.__init__() call")
        return d

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            self._discard(name)
            self._registry("_parameters")[name] = value
        elif isinstance(value, Module):
            self._discard(name)
            self._registry("_modules")[name] = value
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(nn.Parameter or None expected)")
            d["_parameters"][name] = None
            runtime.module_epoch += 1
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(nn.Module or None expected)")
            d["_modules"][name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(lazy Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            if name == "training":
                runtime.module_epoch += 1
            object.__setattr__(self, name, value)

    def _discard(self, name: str) -> None:
        runtime.module_epoch += 1  # lazy.jit: parameters may be replaced; plans check their guards
        for reg in ("_parameters", "_modules", "_buffers"):
            self.__dict__.get(reg, {}).pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            r = d.get(reg)
            if r is not None and name in r:
                return r[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for reg in ("_parameters", "_buffers", "_modules"):
            r = self.__dict__.get(reg)
            if r is not None and name in r:
                del r[name]
                runtime.module_epoch += 1
                self.__dict__["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: cannot assign '{type(param).__name__}' as parameter '{name}' "
                            "(nn.Parameter or None expected)")
        self._discard(name)
        self._registry("_parameters")[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: cannot assign '{type(tensor).__name__}' as buffer '{name}' "
                            "(lazy Tensor or None expected)")
        self._discard(name)
        self._registry("_buffers")[name] = tensor
        (self._non_persistent_buffers.discard if persistent else self._non_persistent_buffers.add)(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a Module subclass")
        self._discard(name)
        self._registry("_modules")[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        mod = self
        for part in target.split(".") if target else ():
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{part}`")
            mod = mod._modules[part]
        return mod

    # ---- traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named(self, reg: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for mp, m in mods:
            for name, v in m.__dict__[reg].items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield (f"{mp}.{name}" if mp else name), v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- state
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """name -> tensor (detached aliases unless keep_vars) for parameters and persistent buffers,
        in torch's order and with torch's names."""
        out = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=out, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values in by name: lazy tensors, torch tensors (a torch model's state_dict()) or numpy
        arrays, cast to each parameter's dtype. Returns (missing_keys, unexpected_keys); with
        `strict`, either list being non-empty raises, like torch. Shape mismatches always raise."""
        own = self.state_dict(keep_vars=True)
        missing, errors, updated = [], [], []
        for key, target in own.items():
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            vshape = tuple(value.shape) if hasattr(value, "shape") else tuple(np.shape(value))
            if vshape != tuple(target.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape {torch.Size(vshape)} from "
                              f"checkpoint, the shape in current model is {target.shape}.")
                continue
            updated.append((target, _host_copy("load_state_dict", key, value, target)))
        unexpected = [k for k in state_dict if k not in own]
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for target, host in updated:  # in place: the tensor keeps its identity and owns the host copy
            init._assign(target, owned_tensor(host))
        return _IncompatibleKeys(missing, unexpected)

    # ---- modes and gradients
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")  # noqa: TRY004 (torch's exception)
        for m in self.modules():
            if m.__dict__["training"] is not mode:
                m.__dict__["training"] = mode
                runtime.module_epoch += 1
        for r in runtime._recorders:  # lazy.jit: a replay sets the mode again
            r.mode_set(self, mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is not None:
                p.grad = None if set_to_none else lazy.zeros_like(p.grad)

    # ---- conversion (new parameters, like building the model again; see the module docstring)
    def to(self, *args, device=None, dtype=None, non_blocking: bool = False, memory_format=None) -> Module:
        """to(device) / to(dtype) / to(device, dtype) / to(tensor): floating-point parameters and buffers
        take the dtype, all take the device (non_blocking changes nothing)."""
        for a in args:
            if isinstance(a, bool):
                continue  # torch's positional non_blocking
            if isinstance(a, (str, torch.device, int)):
                device = torch.device(a) if isinstance(a, int) else a
            elif isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            else:
                dtype = a
        dt = None if dtype is None else lazy.dtypes.as_dtype(dtype, "Module.to")
        for m in self.modules():
            for reg in ("_parameters", "_buffers"):
                for name, v in list(m.__dict__[reg].items()):
                    if v is None:
                        continue
                    new = v.to(dt) if dt is not None and v.dtype.is_float else v
                    new = new.to(device) if device is not None else new
                    if new is v:
                        continue
                    m.__dict__[reg][name] = (Parameter(new.detach(), v.requires_grad) if reg == "_parameters"
                                             else new.realize())
        return self

    def float(self) -> Module:
        return self.to(lazy.float32)

    def double(self) -> Module:
        return self.to(lazy.float64)

    def half(self) -> Module:
        return self.to(lazy.float16)

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device=None) -> Module:
        lazy.cuda.require()
        return self.to("cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device)

    # ---- printing
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        if not self._modules:
            return f"{self._get_name()}({''.join(lines)})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new


# ---------------------------------------------------------------- containers

class Sequential(Module):
    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def forward(self, input):
        for m in self._modules.values():
            input = m(input)
        return input

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        mods = list(self._modules.values())
        if not -len(mods) <= idx < len(mods):
            raise IndexError(f"index {idx} is out of range")
        return mods[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx: int) -> str:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range")
        return str(idx % n)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(self._index(idx), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules) -> Self:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules) -> None:
        for k, m in (modules.items() if hasattr(modules, "items") else modules):
            self.add_module(k, m)


# ---------------------------------------------------------------- layers

class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias; torch's init: kaiming_uniform(a=sqrt(5)) weight, U(+-1/sqrt(in)) bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param(out_features, in_features, dtype=dtype, device=device)
        if bias:
            self.bias = _param(out_features, dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Lookup table; torch's init N(0, 1) with the padding row zeroed."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False, _weight=None,
                 _freeze: bool = False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: max_norm, scale_grad_by_freq and sparse are not supported")
        if _weight is None:
            self.weight = _param(num_embeddings, embedding_dim, dtype=dtype, device=device)
            self.reset_parameters()
        else:
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        pad = self.padding_idx

        def draw(h):
            torch.nn.init.normal_(h, generator=init._gen)
            if pad is not None:
                h[pad].fill_(0)
        init._fill(self.weight, draw)

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = _param(*self.normalized_shape, dtype=dtype, device=device)
            if bias:
                self.bias = _param(*self.normalized_shape, dtype=dtype, device=device)
            else:
                self.register_parameter("bias", None)
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = _param(*self.normalized_shape, dtype=dtype, device=device)
            init.ones_(self.weight)
        else:
            self.register_parameter("weight", None)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


def _activation(name: str, fn, doc: str):
    def forward(self, input):
        return fn(input)
    return type(name, (Module,), {"forward": forward, "__doc__": doc,
                                  "__init__": lambda self, inplace=False: Module.__init__(self)})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
SiLU = _activation("SiLU", F.silu, "x * sigmoid(x)")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


_REQUIRED = object()


def _configured(name: str, fn, doc: str, **params):
    """A module class whose constructor takes `params` (name=default, in torch's order; _REQUIRED:
    no default) and keeps them as attributes, and whose forward is fn(input, *their values).
    `inplace` is kept but not passed on: lazy ops never overwrite their input."""
    names = list(params)

    def __init__(self, *args, **kw):
        Module.__init__(self)
        if len(args) > len(names):
            raise TypeError(f"{name}: takes at most {len(names)} arguments ({', '.join(names)}), got {len(args)}")
        values = {**params, **dict(zip(names, args))}
        for k, v in kw.items():
            if k not in params or k in dict(zip(names, args)):
                raise TypeError(f"{name}: unexpected or repeated argument {k!r} (expected {', '.join(names)})")
            values[k] = v
        missing = [k for k, v in values.items() if v is _REQUIRED]
        if missing:
            raise TypeError(f"{name}: missing argument(s) {', '.join(missing)}")
        for k, v in values.items():
            setattr(self, k, v)

    def forward(self, input):
        return fn(input, *[getattr(self, k) for k in names if k != "inplace"])

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in names)

    return type(name, (Module,), {"__init__": __init__, "forward": forward, "extra_repr": extra_repr,
                                  "__doc__": doc})


LeakyReLU = _configured("LeakyReLU", F.leaky_relu, "x, or x * negative_slope below 0",
                        negative_slope=0.01, inplace=False)
ELU = _configured("ELU", F.elu, "x, or alpha * (exp(x) - 1) below 0", alpha=1.0, inplace=False)
CELU = _configured("CELU", F.celu, "x, or alpha * (exp(x / alpha) - 1) below 0", alpha=1.0, inplace=False)
Softplus = _configured("Softplus", F.softplus, "log(1 + exp(beta x)) / beta", beta=1.0, threshold=20.0)
Threshold = _configured("Threshold", F.threshold, "x above threshold, else value",
                        threshold=_REQUIRED, value=_REQUIRED, inplace=False)
GLU = _configured("GLU", F.glu, "a * sigmoid(b), the halves of dim", dim=-1)
Softmin = _configured("Softmin", F.softmin, "softmax(-x) over dim", dim=None)
Softmax = _configured("Softmax", F.softmax, "exp(x) / sum(exp(x)) over dim", dim=None)
LogSoftmax = _configured("LogSoftmax", F.log_softmax, "x - logsumexp(x) over dim", dim=None)
ReLU6 = _activation("ReLU6", F.relu6, "min(max(x, 0), 6)")
Hardsigmoid = _activation("Hardsigmoid", F.hardsigmoid, "relu6(x + 3) / 6")
Hardswish = _activation("Hardswish", F.hardswish, "x * relu6(x + 3) / 6")
SELU = _activation("SELU", F.selu, "scale * (max(0, x) + min(0, alpha * (exp(x) - 1)))")
Mish = _activation("Mish", F.mish, "x * tanh(softplus(x))")
Softsign = _activation("Softsign", F.softsign, "x / (1 + |x|)")
LogSigmoid = _activation("LogSigmoid", F.logsigmoid, "log(sigmoid(x))")
Tanhshrink = _activation("Tanhshrink", F.tanhshrink, "x - tanh(x)")


class Hardtanh(Module):
    """x clamped to [min_val, max_val] (gradient 0 at the bounds, like torch)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val cannot be greater than max_val, got {min_val} > {max_val}")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)


class _ConvNd(Module):
    """What Conv1d and Conv2d share: arguments as tuples of `dims` ints, torch's init and repr."""

    dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise NotImplementedError(f"{name}: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        k = self._tuple(kernel_size, "kernel_size")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride = self._tuple(stride, "stride")
        self.padding = padding if isinstance(padding, str) else self._tuple(padding, "padding")
        self.dilation, self.groups = self._tuple(dilation, "dilation"), groups
        self.weight = _param(out_channels, in_channels // groups, *k, dtype=dtype, device=device)
        if bias:
            self.bias = _param(out_channels, dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _tuple(self, v, what: str) -> tuple[int, ...]:
        name = type(self).__name__
        return (F._single(name, v, what),) if self.dims == 1 else F._pair(name, v, what)

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv1d(_ConvNd):
    """1-d cross-correlation (functional.conv1d: conv2d over a height of 1); torch's init."""

    dims = 1

    def forward(self, input):
        p = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(input, self.weight, self.bias, self.stride[0], p, self.dilation[0], self.groups)


class Conv2d(_ConvNd):
    """2-d cross-correlation (im2col through views, see functional.conv2d); torch's init."""

    def forward(self, input):
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


# ---------------------------------------------------------------- losses

class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class NLLLoss(_Loss):
    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(reduction)
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)

