"""Differential fuzzer: random tensor programs, run with lazy and with torch, compared value by value.

In:  a seed and a case number. `random.Random(f"lazy-fuzz:{seed}:{case}")` drives everything, so
     one case replays alone and exactly.
Out: `generate(seed, case)`: a `Program` (inputs as torch literals, statements as Python text over
     a module `T` that is `torch` or `lazy`); `check(program)`: the differences found, as text;
     `snippet(program)`: the program as a Python file a human can paste; and the command line:

       python -m perf.fuzz --seed S --case N [--backend c|triton]   # print one case, run it
       python -m perf.fuzz --minutes M [--backend c|triton] [--out FILE]
                                     # fuzz until time is up: a progress line, failures to FILE

Programs: elementwise ops (unary, binary, comparisons, where, clamp, pow, floor-division and
remainder, bitwise ops, math functions) over every dtype lazy claims, with casts between them in
the middle of a chain and promotion between mixed operands (tensor-tensor, tensor-Python scalar,
0-d tensors); broadcasting; reductions and arg-reductions over random dims with keepdim; views
(permute, transpose, slices with steps and negative indices, expand, reshape/view, flip, pad,
narrow, unsqueeze/squeeze, diagonal, ...); matmul/bmm/einsum; cat/stack; in-place writes (add_,
mul_, copy_, fill_, `x[idx] = v`, masked_fill_, ...) through views, with every alias of a written
tensor compared; reads (`tolist`) between writes. Sizes include 0 and 1, odd sizes and 0-d tensors;
inputs may be non-contiguous torch tensors (permuted, strided, offset, expanded) wrapped by
`lazy.tensor`. Values include NaN, +-inf, -0.0, huge and tiny magnitudes, subnormals and integer
extremes.

Invariants
- The statements are the program. The generator executes each one with torch as it writes it (to
  learn shapes and dtypes, and whether torch accepts it); the checker executes the same text with
  torch and with lazy; the snippet prints that text. Nothing is translated between the three.
- Generation uses torch only: a case's program does not depend on lazy or on the backend.
- A statement torch rejects is dropped, or kept as the program's last line: then lazy must raise
  there too, an exception of torch's class (lazy's `DTypeError` is both a TypeError and a
  RuntimeError; torch's NotImplementedError for a dtype its kernel lacks is met by any
  RuntimeError). A statement lazy rejects and torch accepts is a difference.
- Which variables share memory must agree: a write through a view reaches the same tensors.
- The only exclusions are README's documented differences, each named where it is excluded with
  the test that pins it (`_DOCUMENTED_ERRORS`, `_DOCUMENTED_LAZY_ERRORS`, computed layouts in
  `check`, the float32 var/std and the NaN signbit rules as a reference of the envelope).
- torch ops that kill the process are never generated: integer division with rounding_mode='trunc'
  of the minimum by -1 traps (SIGFPE) in torch's kernel (tests/test_int_wrap.py).

How a lazy value is judged (`_judge`). Shapes and dtypes must equal torch's. A value matches when
it equals torch eager's (NaN where torch has NaN; -0.0 and 0.0 are equal), or, for floats, is
within `TOLERANCE` of it. Where it does not, it must lie inside the *envelope* of what rounding
alone can produce: the interval spanned, at that position, by torch eager and by reruns of the
same statements with torch, each rounded to the output's dtype:
  wide     halves computed in float32, rounded only at explicit casts: README's rule for fused
           float16/bfloat16 kernels (`_Widen`); lazy rounds also where a value leaves a kernel,
           which torch eager does after every op;
  f64      every float computed in float64 (explicit casts still round): the exact answer,
           which lazy's float32 sums (blocks in float, block sums in double) are closer to;
  README   var and std in float32, and signbit of a NaN False, as README says lazy computes
           them (`_Documented`);
  nudged   four runs of torch eager with every float input, and every float result of an op but
           a cast, moved by one ulp (a float32/float64 math function's by four): all up, all
           down, or up and down by a hash of the value and its opposite (equal values move
           together, so ties stay ties); an op that sums moves by two ulps of its largest partial
           sum (`_Nudge`). This is the error model of rounding
           each intermediate otherwise: a fused kernel skips a half's rounding, sums in another
           order, calls another libm; an ill-conditioned value (a cancelling sum, `exp` of a
           large argument, a log of a sum near 1) may differ by what that does to it.
  widened by `TOLERANCE` at both ends. Where the references disagree in sign, rounding decides the
  sign of the value or of something it was divided by (`1 / log_softmax(x)` of a row's maximum:
  -1e-7 or -2e-7 by rounding, one ulp of 1): the envelope is then also taken of the reciprocals,
  the map that turns an interval about zero into the outside of a large one, for values within 16
  times the largest reference (a heuristic: a cancelling sum near 0 may not come out as 5.0).
  Integer and bool values must equal one of these exactly:
  a value no float rounding touches (all references agree) is exact, one computed from rounded
  floats (a comparison, a float-to-int cast, an argmax) may be any value a rounding produces.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import ClassVar

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

# ---------------------------------------------------------------- dtypes and tolerances

FLOATS = ("float32", "float16", "bfloat16", "float64")
INTS = ("int8", "uint8", "int32", "int64")
DTYPES = FLOATS + INTS + ("bool",)
_DTYPE_WEIGHTS = (3, 1.5, 1.5, 1, 1, 1, 1, 1, 1)

# (rtol, atol) around torch's value and around the envelope (see the module docstring), per dtype.
# The reasons, which are the only sources of difference the envelope does not already model:
# - float32: fused kernels keep intermediates in float32 and torch eager rounds each op to float32
#   too, so elementwise chains agree bit for bit, except math functions: lazy's C kernels compute
#   exp, log, tanh and erf with their own (1.25 ulp at most, README) and call glibc's sinf, cosf,
#   powf where torch calls SLEEF
#   (1 ulp): 16 ulps, 2**-20 relative. atol: a few ulps of the smallest normal.
# - float64: the same, with glibc's double functions (< 1 ulp) against SLEEF's: 512 ulps, 2**-44.
# - float16 / bfloat16: values are computed in float32 (lazy, and the `wide` reference) and
#   rounded once to the dtype; a float32 math function 1 ulp off may round the other way: 1 ulp
#   of the dtype, 2**-10 / 2**-7 relative; atol is the dtype's smallest subnormal.
# - ints and bool: exact (no tolerance: only the envelope's references may differ).
TOLERANCE = {
    "float32": (2.0**-20, 2.0**-124),
    "float64": (2.0**-44, 2.0**-1020),
    "float16": (2.0**-10, 2.0**-24),
    "bfloat16": (2.0**-7, 2.0**-133),
}

# torch errors that lazy does not raise, on purpose (README, "Where lazy differs from torch, on
# purpose"): message fragment -> the README entry and the test that pins lazy's behaviour. The
# program's values before that line are still compared.
_DOCUMENTED_ERRORS = {
    # "Integer division and remainder by zero give 0" (tests/test_int_wrap.py::test_division_by_zero_gives_zero)
    "ZeroDivisionError": "integer division by zero gives 0",
    # "An in-place write whose source overlaps its destination ... reads the source as it was before
    # the write; torch raises" (tests/test_tensor_api.py::test_overlapping_write_reads_the_old_source)
    "some elements of the input tensor and the written-to tensor refer to a single memory location":
        "an overlapping in-place write reads the old source",
}

# lazy errors where torch computes a value, on purpose (the same README section): the program is
# compared up to that line.
_DOCUMENTED_LAZY_ERRORS = {
    # "Writing through a view of an expanded tensor ..., or `masked_fill_` of one, raises: torch writes the
    # one element the expanded positions share" (tests/test_tensor_api.py::test_write_through_a_view_of_an_expanded_tensor_raises)
    "writing through a view of an expanded tensor is not supported": "a write through a view of an expanded tensor",
    "writing into an expanded tensor is not supported": "masked_fill_ of an expanded tensor",
    # "There is no int16 ...: an op whose torch result is int16 ... raises `DTypeError`"
    # (tests/test_dtype_rules.py::test_int8_with_uint8_in_place_stores_what_torch_int16_result_gives)
    "gives torch.int16, which lazy does not support": "no int16",
}

_BITS = {"float16": torch.int16, "bfloat16": torch.int16, "float32": torch.int32, "float64": torch.int64}


def _tdt(name: str) -> torch.dtype:
    return getattr(torch, name)


def _name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


# ---------------------------------------------------------------- programs

@dataclasses.dataclass
class Input:
    """A program input: a torch tensor built from literal values, maybe through a view."""

    name: str
    dtype: str
    base_shape: tuple[int, ...]
    values: list  # flat Python numbers, exactly representable in `dtype`
    view: str = ""  # applied to the base: ".permute(1, 0)", "[:, ::2]", ".expand(3, 4)"

    def base_source(self, dtype: str | None = None) -> str:
        dt = dtype or self.dtype
        short = self.dtype in ("float32", "float16", "bfloat16")  # values float32 holds exactly
        lits = ", ".join(_lit(v, short) for v in self.values)
        data = lits if self.base_shape == () else f"[{lits}]"
        if short and dt != "float32":  # parsed as float32 (exactly), then converted exactly
            src = f"torch.tensor({data}, dtype=torch.float32).to(torch.{dt})"
        else:
            src = f"torch.tensor({data}, dtype=torch.{dt})"
        if len(self.base_shape) > 1 or (len(self.base_shape) == 1 and not self.values):
            src += f".reshape({', '.join(map(str, self.base_shape))}{',' if len(self.base_shape) == 1 else ''})"
        return src

    def source(self) -> str:
        return self.base_source() + self.view

    def build(self, dtype: str | None = None, nudge: tuple[str, int] | None = None) -> torch.Tensor:
        """The torch tensor (`dtype`: its float values held in a wider float dtype; `nudge`: every
        finite nonzero float moved by one ulp, see `_nudge`)."""
        base = eval(self.base_source(), _LITERALS)
        if nudge and self.dtype in FLOATS:
            base = _nudge(base, *nudge)
        if dtype is not None and dtype != self.dtype:
            base = base.to(_tdt(dtype))
        return eval("b" + self.view, {"b": base})


_LITERALS = {"torch": torch, "inf": math.inf, "nan": math.nan}


def _lit(v, short: bool = False) -> str:
    """A Python literal for `v` (`short`: the shortest text float32 parses back to it exactly)."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if short:
            return str(np.float32(v))
    return repr(v)


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """The distance from |t| to the next value of its dtype (0 for 0, inf and NaN)."""
    a = t.abs().contiguous()
    return _nudge(a, "all", 1) - a


def _nudge(t: torch.Tensor, style: str, sign: int, ulps: int = 1) -> torch.Tensor:
    """Each finite nonzero value moved one ulp up or down in magnitude: all of them `sign`ward
    (style "all"), or each in a direction hashed from its bits, times `sign` ("hash"); equal values
    move together, so ties stay ties. Values that would become 0 or inf stay."""
    bits = t.view(_BITS[_name(t.dtype)]).to(torch.int64)
    h = ((bits * 2654435761) >> 9) & 1
    step = ((h * 2 - 1) * sign if style == "hash" else sign) * ulps
    moved = (bits + step).to(_BITS[_name(t.dtype)]).view(t.dtype)
    ok = torch.isfinite(t) & (t != 0) & torch.isfinite(moved) & (moved != 0)
    return torch.where(ok, moved, t)


@dataclasses.dataclass
class Program:
    seed: int
    case: int
    inputs: list[Input]
    lines: list[str]
    outputs: list[str]  # tensor variables compared at the end (every alias of a written tensor among them)
    reads: dict[str, str]  # `r = v.tolist()` variables -> v's dtype
    raises: str = ""  # torch's exception at the last line, "Class: message" (then that line is a probe)
    realize_together: bool = False  # lazy.realize(*outputs) before reading them, or one at a time

    @property
    def body(self) -> list[str]:
        return self.lines[:-1] if self.raises else self.lines


def snippet(p: Program, backend: str = "c") -> str:
    """The program as a Python file: inputs, the statements as a function of T, and a driver that
    runs it with torch and with lazy and prints both."""
    names = [i.name for i in p.inputs]
    out = [f"# python -m perf.fuzz --seed {p.seed} --case {p.case} --backend {backend}",
           *([f"# LAZY_BACKEND={backend}" + (" TRITON_INTERPRET=1" if backend == "triton" else "")]
             if backend != "c" else []),
           "import math", "", "import torch", "", "import lazy", "", "inf, nan = math.inf, math.nan", "", "",
           "def inputs(T):"]
    for i in p.inputs:
        out.append(f"    {i.name} = {i.source()}")
    out.append(f"    return [t if T is torch else lazy.tensor(t) for t in ({', '.join(names)}{',' if len(names) == 1 else ''})]")
    out += ["", "", f"def program(T, {', '.join(names)}):"]
    for k, line in enumerate(p.lines):
        note = f"  # torch raises {p.raises.splitlines()[0][:100]}" if p.raises and k == len(p.lines) - 1 else ""
        out.append(f"    {line}{note}")
    keys = [*p.outputs, *p.reads]
    out.append("    return {" + ", ".join(f"{k!r}: {k}" for k in keys) + "}")
    out += ["", "", "for T in (torch, lazy):",
            "    try:",
            "        res = program(T, *inputs(T))",
            *(["        lazy.realize(*[v for v in res.values() if isinstance(v, lazy.Tensor)])"]
              if p.realize_together else []),
            "    except Exception as e:",
            "        print(T.__name__, 'raised', type(e).__name__, e)",
            "        continue",
            "    for k, v in res.items():",
            "        print(T.__name__, k, (tuple(v.shape), v.dtype, v.tolist()) if hasattr(v, 'shape') else v)"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- generation

_UNARY_ANY = ["-{a}", "{a}.abs()", "{a}.sign()", "{a}.square()", "{a}.floor()", "{a}.ceil()", "{a}.trunc()",
              "{a}.round()", "{a}.isnan()", "{a}.isinf()", "{a}.isfinite()", "{a}.logical_not()", "~{a}",
              "{a}.relu()", "{a}.signbit()", "{a}.nan_to_num()", "{a}.frac()", "{a}.bitwise_not()",
              "{a}.neg()", "{a}.clone()", "{a}.sgn()"]
_UNARY_FLOAT = ["{a}.exp()", "{a}.log()", "{a}.sqrt()", "{a}.sin()", "{a}.cos()", "{a}.tanh()", "{a}.erf()",
                "{a}.reciprocal()", "{a}.rsqrt()", "{a}.tan()", "{a}.exp2()", "{a}.log2()", "{a}.log10()",
                "{a}.log1p()", "{a}.expm1()", "{a}.sigmoid()", "{a}.sinh()", "{a}.cosh()", "{a}.logit()",
                "{a}.logit(eps=0.25)", "{a}.nan_to_num(nan=1.5, posinf=2.0, neginf=-3.0)",
                "T.nn.functional.gelu({a})", "T.nn.functional.gelu({a}, approximate='tanh')",
                "T.nn.functional.silu({a})", "T.exp({a})", "T.sigmoid({a})"]
_BINARY = ["{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / {b}", "{a} // {b}", "{a} % {b}", "{a} ** {b}",
           "{a}.maximum({b})", "{a}.minimum({b})", "{a}.add({b}, alpha=2)", "{a}.sub({b}, alpha=3)",
           "{a}.div({b}, rounding_mode='trunc')", "{a}.div({b}, rounding_mode='floor')", "{a}.remainder({b})",
           "{a}.floor_divide({b})", "{a}.pow({b})", "T.maximum({a}, {b})", "T.add({a}, {b})",
           "{a}.mul({b})", "T.div({a}, {b})"]
_BINARY_TENSOR = ["{a}.hypot({b})", "{a}.logaddexp({b})", "T.xlogy({a}, {b})", "T.where({a} > {b}, {a}, {b})",
                  "{a}.lerp({b}, 0.25)", "{a}.lerp({b}, 0.75)", "{a}.max({b})", "{a}.min({b})"]
_COMPARE = ["{a} == {b}", "{a} != {b}", "{a} < {b}", "{a} <= {b}", "{a} > {b}", "{a} >= {b}", "{a}.eq({b})",
            "{a}.ne({b})"]
_BITWISE = ["{a} & {b}", "{a} | {b}", "{a} ^ {b}", "{a}.bitwise_and({b})", "{a}.logical_and({b})",
            "{a}.logical_or({b})", "{a}.logical_xor({b})", "{a}.bitwise_xor({b})"]
_REVERSED = ["{s} - {a}", "{s} / {a}", "{s} // {a}", "{s} % {a}", "{s} ** {a}", "{s} + {a}", "{s} * {a}"]
_FLOAT_SCALARS = ["0.0", "-0.0", "1.0", "-1.0", "0.5", "2.5", "-3.75", "0.001", "1000.0", "1e+30", "-1e-30",
                  "65504.0", "100000.0", "inf", "-inf", "nan", "3.0", "0.1", "1e-08", "-7.5", "2.0"]
_INT_SCALARS = ["0", "1", "-1", "2", "3", "7", "-5", "100", "127", "128", "255", "256", "-128", "-129",
                "2147483647", "-2147483648", "2147483648", "9223372036854775807", "-9223372036854775808",
                "-3", "10"]
_SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1.0, 0.5, -2.5, 1e30, -1e30, 65504.0,
                   70000.0, 1e-30, 1e-42, 1e-7, 3e38, -3e38, 2.0**-24, 1e-300, 1e300, 0.75]
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


class _Discard(Exception):
    """The statement is not kept (a result too large, or not a tensor)."""


class Generator:
    """Writes one program, executing each statement with torch as it goes (see the module docstring)."""

    def __init__(self, seed: int, case: int, small: bool = False):
        self.rng = random.Random(f"lazy-fuzz:{seed}:{case}")
        self.seed, self.case, self.small = seed, case, small
        self.max_numel = 48 if small else 160
        self.inputs: list[Input] = []
        self.lines: list[str] = []
        self.ns: dict = _namespace(torch)
        self.pool: list[str] = []  # tensor variables, oldest first
        self.reads: dict[str, str] = {}
        self.written: set[str] = set()
        self.raises = ""
        self.counter = 0

    # -- values and operands
    def t(self, name: str) -> torch.Tensor:
        return self.ns[name]

    def dtype(self) -> str:
        return self.rng.choices(DTYPES, _DTYPE_WEIGHTS)[0]

    def shape(self) -> tuple[int, ...]:
        r = self.rng
        for _ in range(20):
            nd = r.choices([0, 1, 2, 3, 4], [1, 3, 4, 2, 1])[0]
            sizes = [r.choices([1, 2, 3, 4, 5, 7, 8, 0], [3, 2, 3, 2, 2, 1, 1, 0.35])[0] for _ in range(nd)]
            if math.prod(sizes) <= self.max_numel // 2:
                return tuple(sizes)
        return (3,)

    def values(self, dtype: str, n: int) -> list:
        r = self.rng
        if dtype == "bool":
            p = r.choice([0.1, 0.5, 0.9])
            return [r.random() < p for _ in range(n)]
        special = r.choices([0.0, 0.1, 0.35], [5, 3, 2])[0]
        if dtype in INTS:
            lo, hi = _INT_RANGE[dtype]
            small = (0, 20) if dtype == "uint8" else (-10, 10)
            ext = [lo, hi, lo + 1, hi - 1, 0, 1, -1 if lo < 0 else 128, 127, -128 if lo < 0 else 254]
            return [r.choice(ext) if r.random() < special else r.randint(*small) for _ in range(n)]
        scale = r.choices([1.0, 100.0, 1e-3, 1e4], [7, 1, 1, 1])[0]
        ints = r.random() < 0.25  # small integers: ties for argmax, exact floor/round/remainder
        vals = []
        for _ in range(n):
            if r.random() < special:
                vals.append(r.choice(_SPECIAL_FLOATS))
            elif ints:
                vals.append(float(r.randint(-4, 4)))
            else:
                vals.append(r.gauss(0.0, 1.0) * scale)
        # exactly representable in the dtype (so the literal is exact); torch rounds a double to a
        # half through float32, as the snippet's `.to()` does
        return torch.tensor(vals, dtype=torch.float64).to(_tdt(dtype)).to(torch.float64).tolist()

    def new_input(self, shape=None, dtype=None, layout: bool = True) -> str:
        r = self.rng
        shape = self.shape() if shape is None else tuple(shape)
        dtype = dtype or self.dtype()
        name = f"x{len(self.inputs)}"
        base, view = list(shape), ""
        kind = r.choices(["plain", "perm", "step", "offset", "expand"], [10, 2, 2, 1, 1])[0] if layout and shape else "plain"
        nd = len(shape)
        if kind == "perm" and nd >= 2:
            perm = list(range(nd))
            while perm == list(range(nd)):
                r.shuffle(perm)
            base = [shape[i] for i in perm]  # base.permute(inverse) has `shape`
            inv = sorted(range(nd), key=perm.__getitem__)
            view = f".permute({', '.join(map(str, inv))})"
        elif kind in ("step", "offset"):
            d = r.randrange(nd)
            parts = [":"] * nd
            if kind == "step":
                k = r.choice([2, 3])
                start = r.choice([0, 1])
                base[d] = shape[d] * k + start
                parts[d] = f"{start or ''}::{k}"
            else:
                base[d] = shape[d] + 2
                parts[d] = "1:-1"
            while parts and parts[-1] == ":":
                parts.pop()
            view = f"[{', '.join(parts)}]" if parts else ""
        elif kind == "expand" and any(s > 1 for s in shape):
            base = [1 if s > 1 and r.random() < 0.6 else s for s in shape]
            if base != list(shape):
                view = f".expand({', '.join(map(str, shape))})"
        vals = self.values(dtype, math.prod(base))
        inp = Input(name, dtype, tuple(base), vals, view)
        self.ns[name] = inp.build()
        assert tuple(self.ns[name].shape) == shape, (inp, self.ns[name].shape)
        self.inputs.append(inp)
        self.pool.append(name)
        return name

    def pick(self, cond=None, make=None) -> str:
        """A tensor variable (recent ones more often, so chains build up), or a new input."""
        cands = [n for n in self.pool if cond is None or cond(self.t(n))]
        if not cands or (make is not None and self.rng.random() < 0.15):
            return make() if make is not None else self.new_input()
        w = [1 + 4 * (i >= len(cands) - 3) for i in range(len(cands))]
        return self.rng.choices(cands, w)[0]

    def scalar(self, kind: str | None = None) -> str:
        r = self.rng
        kind = kind or r.choices(["float", "int", "bool"], [5, 4, 1])[0]
        if kind == "bool":
            return r.choice(["True", "False"])
        return r.choice(_FLOAT_SCALARS if kind == "float" else _INT_SCALARS)

    def partner_shape(self, s: tuple[int, ...], onto: bool = False) -> tuple[int, ...]:
        """A shape broadcasting with `s` (`onto`: broadcasting *to* `s`, as an in-place source must)."""
        r = self.rng
        k = r.choices(["same", "ones", "drop", "0d", "lead"], [6, 3, 1.5, 1, 0 if onto else 0.7])[0]
        if k == "ones":
            return tuple(1 if r.random() < 0.5 else n for n in s)
        if k == "drop" and s:
            return s[r.randint(1, len(s)):]
        if k == "0d":
            return ()
        if k == "lead" and math.prod(s) * 3 <= self.max_numel:
            return (r.choice([2, 3]),) + s
        return s

    def operand(self, a: str, onto: bool = False) -> str:
        """A second operand for `a`: a variable of a broadcasting shape, a new input, a 0-d tensor or a
        Python scalar (text)."""
        r = self.rng
        k = r.choices(["var", "input", "scalar"], [4, 3, 3])[0]
        s = tuple(self.t(a).shape)
        if k == "scalar":
            return self.scalar()
        if k == "var":
            want = self.partner_shape(s, onto)
            cands = [n for n in self.pool if n != a and tuple(self.t(n).shape) == want]
            if cands:
                return r.choice(cands)
        same = r.random() < 0.5
        return self.new_input(self.partner_shape(s, onto), _name(self.t(a).dtype) if same else None)

    # -- statements
    def emit(self, expr: str, read: str = "") -> str | None:
        """`vN = expr` (or `rN = expr.tolist()`), executed with torch; kept if torch accepts it and
        the result is a small tensor; a rejected statement may end the program as a probe."""
        name = f"{'r' if read else 'v'}{self.counter}"
        return self.stmt(f"{name} = {expr}", name, read)

    def stmt(self, line: str, name: str | None = None, read: str = "", written: tuple[str, ...] = ()):
        """Execute `line` with torch; keep it (`name`: the variable it defines; `read`: the dtype of the
        tensor a `tolist()` read; `written`: the variables it writes in place) or drop it."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(line, "<fuzz>", "exec"), self.ns)  # noqa: S102 - the generated program
            if name is not None and not read:
                v = self.ns[name]
                if not isinstance(v, torch.Tensor) or v.numel() > self.max_numel or v.dtype not in _OK_DTYPES:
                    raise _Discard
        except _Discard:
            self.ns.pop(name, None)
            return None
        except Exception as e:  # noqa: BLE001 - torch rejects it: end the program here, sometimes
            if name is not None:
                self.ns.pop(name, None)
            if self.rng.random() < 0.3:
                self.lines.append(line)
                self.raises = f"{type(e).__name__}: {e}"
            return None
        self.lines.append(line)
        self.counter += 1
        if name is not None:
            if read:
                self.reads[name] = read
            else:
                self.pool.append(name)
        self.written.update(written)
        return name

    def g_unary(self):
        a = self.pick()
        float_op = self.t(a).dtype.is_floating_point or self.rng.random() < 0.3
        self.emit(self.rng.choice(_UNARY_FLOAT if float_op and self.rng.random() < 0.7 else _UNARY_ANY).format(a=a))

    def g_binary(self):
        r = self.rng
        a = self.pick()
        if r.random() < 0.15:
            self.emit(r.choice(_REVERSED).format(s=self.scalar(), a=a))
            return
        b = self.operand(a)
        tmpl = r.choice(_BINARY_TENSOR if b in self.ns and r.random() < 0.25 else _BINARY)
        if "trunc" in tmpl and not self._trunc_safe(a, b):
            return
        self.emit(tmpl.format(a=a, b=b))

    def _trunc_safe(self, a: str, b: str) -> bool:
        """False where torch's truncating integer division would trap (minimum // -1: SIGFPE)."""
        try:
            x, y = self.t(a), (self.t(b) if b in self.ns else torch.tensor(eval(b, _LITERALS)))
            x, y = torch.broadcast_tensors(x, y)
            dt = torch.result_type(x, y)
            if dt in (torch.int32, torch.int64):
                return not bool(((x == torch.iinfo(dt).min) & (y == -1)).any())
        except Exception:  # noqa: BLE001, S110 - torch will reject the statement itself
            pass
        return True

    def g_compare(self):
        a = self.pick()
        b = self.operand(a)
        tmpl = self.rng.choice(_COMPARE + _BITWISE if self.rng.random() < 0.4 else _COMPARE)
        self.emit(tmpl.format(a=a, b=b))

    def g_cast(self):
        r = self.rng
        a = self.pick()
        d = self.dtype()
        if r.random() < 0.15:
            m = {"float32": "float", "float64": "double", "float16": "half", "bfloat16": "bfloat16", "int32": "int",
                 "int64": "long", "bool": "bool", "uint8": "byte", "int8": "char"}[d]
            self.emit(f"{a}.{m}()")
        else:
            self.emit(f"{a}.to(T.{d})")

    def g_select(self):
        """where / clamp / masked_fill / lerp."""
        r = self.rng
        a = self.pick()
        k = r.choice(["where", "where_s", "clamp", "clamp_t", "masked_fill", "clamp_min", "lerp"])
        if k in ("where", "where_s"):
            c = self.pick(lambda t: t.dtype == torch.bool, make=lambda: self.new_input(dtype="bool"))
            b = self.operand(a) if k == "where" else self.scalar()
            first = self.scalar() if r.random() < 0.2 else a
            self.emit(f"T.where({c}, {first}, {b})")
        elif k == "clamp":
            lo, hi = self.scalar(), self.scalar()
            args = r.choice([f"{lo}, {hi}", f"min={lo}", f"max={hi}", f"{lo}"])
            self.emit(f"{a}.clamp({args})")
        elif k == "clamp_t":
            lo, hi = self.operand(a), self.operand(a)
            self.emit(f"{a}.clamp({lo}, {hi})" if r.random() < 0.7 else f"T.clamp({a}, max={hi})")
        elif k == "clamp_min":
            self.emit(f"{a}.clamp_min({self.scalar()})" if r.random() < 0.5 else f"{a}.clamp_max({self.scalar()})")
        elif k == "masked_fill":
            c = self.pick(lambda t: t.dtype == torch.bool, make=lambda: self.new_input(dtype="bool"))
            self.emit(f"{a}.masked_fill({c}, {self.scalar()})")
        else:
            b = self.operand(a)
            w = r.choice(["0.5", "0.25", "-1.0", "2.0", self.new_input((), "float32")])
            self.emit(f"{a}.lerp({b}, {w})")

    def dims(self, t: torch.Tensor, multi: bool = True) -> str:
        """A dim argument: one dim (sometimes negative), or (multi) a tuple of dims."""
        r, nd = self.rng, t.ndim
        if nd == 0:
            return r.choice(["0", "-1"])
        if multi and nd >= 2 and r.random() < 0.3:
            ds = sorted(r.sample(range(nd), r.randint(1, nd)))
            return "(" + ", ".join(str(d - nd if r.random() < 0.3 else d) for d in ds) + ("," if len(ds) == 1 else "") + ")"
        d = r.randrange(nd)
        return str(d - nd if r.random() < 0.3 else d)

    def g_reduce(self):
        r = self.rng
        a = self.pick()
        t = self.t(a)
        k = r.choice(["sum", "mean", "prod", "amax", "amin", "max", "min", "var", "std", "logsumexp", "any", "all",
                      "count_nonzero", "norm", "aminmax", "sum_dtype", "maxall", "arg"])
        keep = r.random() < 0.4
        kd = ", keepdim=True" if keep else ""
        if k in ("sum", "mean", "amax", "amin", "any", "all", "logsumexp"):
            dims = "" if r.random() < 0.25 and k != "logsumexp" else self.dims(t)
            self.emit(f"{a}.{k}({dims}{kd if dims else ''})")
        elif k == "prod":
            self.emit(f"{a}.prod({self.dims(t, multi=False)}{kd})" if r.random() < 0.75 else f"{a}.prod()")
        elif k in ("max", "min"):
            field = r.choice(["[0]", "[1]", ".values", ".indices"])
            self.emit(f"{a}.{k}({self.dims(t, multi=False)}{kd}){field}")
        elif k in ("var", "std"):
            corr = r.choice(["", ", correction=0", ", correction=1", ", correction=2", ", unbiased=False"])
            dims = self.dims(t)
            self.emit(f"{a}.{k}({dims}{corr}{kd})" if r.random() < 0.8 else f"{a}.{k}()")
        elif k == "count_nonzero":
            self.emit(f"{a}.count_nonzero({self.dims(t)})" if r.random() < 0.7 else f"{a}.count_nonzero()")
        elif k == "norm":
            p = r.choice(["", "1", "2", "float('inf')", "3", "0"])
            self.emit(f"{a}.norm({p})" if not p or r.random() < 0.5 else f"{a}.norm({p}, {self.dims(t)}{kd})")
        elif k == "aminmax":
            self.emit(f"{a}.aminmax(dim={self.dims(t, multi=False)}{kd}).{r.choice(['min', 'max'])}")
        elif k == "sum_dtype":
            self.emit(f"{a}.sum({self.dims(t)}, dtype=T.{self.dtype()})")
        elif k == "maxall":
            self.emit(f"{a}.{r.choice(['max', 'min'])}()")
        else:  # argmax/argmin (NaN and ties come from the values)
            f = r.choice(["argmax", "argmin"])
            dims = "" if r.random() < 0.3 else self.dims(t, multi=False)
            self.emit(f"{a}.{f}({dims}{kd if dims else ''})")

    def g_arg(self):
        r = self.rng
        a = self.pick()
        f = r.choice(["argmax", "argmin"])
        dims = "" if r.random() < 0.3 else self.dims(self.t(a), multi=False)
        kd = ", keepdim=True" if r.random() < 0.4 else ""
        self.emit(f"{a}.{f}({dims}{kd})" if dims else f"{a}.{f}()")

    def g_softmax(self):
        r = self.rng
        a = self.pick()
        d = self.dims(self.t(a), multi=False)
        k = r.choice([f"{a}.softmax({d})", f"{a}.log_softmax({d})", f"T.softmax({a}, {d})",
                      f"{a}.softmax({d}, dtype=T.float32)", f"T.nn.functional.log_softmax({a}, {d})",
                      f"{a}.logsumexp({d})"])
        self.emit(k)

    def view_expr(self, a: str) -> str:
        """An expression viewing (or copying, for flip/pad/roll/...) `a`."""
        r, t = self.rng, self.t(a)
        s, nd = tuple(t.shape), t.ndim
        k = r.choice(["permute", "transpose", "index", "index", "expand", "reshape", "view", "flip", "pad", "narrow",
                      "unsqueeze", "squeeze", "diagonal", "flatten", "unflatten", "movedim", "T", "chunk", "split",
                      "select", "contiguous", "detach", "roll", "tril", "repeat", "unbind", "tensor_split"])
        if k == "index" or nd == 0 and k not in ("unsqueeze", "expand", "reshape", "view", "flatten", "detach"):
            return f"{a}[{self.index(s)}]"
        if k == "permute":
            p = list(range(nd))
            r.shuffle(p)
            return f"{a}.permute({', '.join(map(str, p))})"
        if k == "transpose":
            return f"{a}.transpose({r.randrange(-nd, nd)}, {r.randrange(-nd, nd)})"
        if k == "expand":
            new = [r.choice([1, 2, 3]) if n == 1 else n for n in s]
            new = [-1 if n == o and r.random() < 0.3 else n for n, o in zip(new, s)]
            lead = [r.choice([2, 3])] if r.random() < 0.3 else []
            return f"{a}.expand({', '.join(map(str, lead + new)) or '()'})"
        if k in ("reshape", "view"):
            return f"{a}.{k}({', '.join(map(str, self.reshape_target(s))) or '()'})"
        if k == "flip":
            ds = r.sample(range(nd), r.randint(1, nd))
            return f"{a}.flip({', '.join(map(str, ds))})"
        if k == "pad":
            n = r.randint(1, min(nd, 2))
            amounts = [r.choice([0, 1, 2, -1]) for _ in range(2 * n)]
            val = r.choice(["", "", ", value=1.5", ", value=-2", ", value=float('nan')"])
            return f"T.nn.functional.pad({a}, {amounts}{val})"
        if k == "narrow":
            d = r.randrange(nd)
            start = r.randint(-s[d], s[d]) if s[d] else 0
            length = r.randint(0, max(0, s[d] - (start % s[d] if s[d] and start < 0 else start)))
            return f"{a}.narrow({d - nd if r.random() < 0.3 else d}, {start}, {length})"
        if k == "unsqueeze":
            return f"{a}.unsqueeze({r.randint(-nd - 1, nd)})"
        if k == "squeeze":
            return f"{a}.squeeze()" if r.random() < 0.4 else f"{a}.squeeze({self.dims(t)})"
        if k == "diagonal" and nd >= 2:
            d1, d2 = r.sample(range(nd), 2)
            return f"{a}.diagonal({r.randint(-2, 2)}, {d1}, {d2})"
        if k == "flatten":
            if nd >= 2 and r.random() < 0.5:
                st = r.randrange(nd - 1)
                return f"{a}.flatten({st}, {r.randint(st, nd - 1)})"
            return f"{a}.flatten()"
        if k == "unflatten" and nd >= 1:
            d = r.randrange(nd)
            f = [q for q in range(1, s[d] + 1) if s[d] % q == 0] or [1]
            q = r.choice(f)
            return f"{a}.unflatten({d}, ({q}, {s[d] // q if s[d] else -1}))"
        if k == "movedim":
            return f"{a}.movedim({r.randrange(nd)}, {r.randrange(nd)})"
        if k == "T":
            return f"{a}.{r.choice(['T', 't()', 'mT'])}" if nd == 2 else f"{a}.mT" if nd > 2 else f"{a}.t()"
        if k in ("chunk", "split", "tensor_split"):
            d = r.randrange(nd)
            n = r.randint(1, 3)
            return f"{a}.{k}({n}, {d})[{r.randint(-1, 0) if r.random() < 0.5 else 0}]"
        if k == "select":
            d = r.randrange(nd)
            return f"{a}.select({d}, {r.randint(-s[d], s[d] - 1) if s[d] else 0})"
        if k == "unbind":
            d = r.randrange(nd)
            return f"{a}.unbind({d})[{r.randint(-s[d], s[d] - 1) if s[d] else 0}]"
        if k == "roll":
            return f"{a}.roll({r.randint(-3, 3)}, {r.randrange(nd)})" if r.random() < 0.7 else f"{a}.roll(1)"
        if k == "tril" and nd >= 2:
            return f"{a}.{r.choice(['tril', 'triu'])}({r.randint(-1, 1)})"
        if k == "repeat":
            return f"{a}.repeat({', '.join(str(r.choice([1, 1, 2])) for _ in range(nd + r.randint(0, 1)))})"
        if k == "contiguous":
            return f"{a}.contiguous()"
        return f"{a}.detach()" if k == "detach" else f"{a}[{self.index(s)}]"

    def index(self, s: tuple[int, ...]) -> str:
        """A basic index for shape `s`: ints (negative too), slices with steps and negative bounds,
        None and ..."""
        r = self.rng
        parts = []
        for n in s:
            u = r.random()
            if u < 0.3:
                parts.append(":")
            elif u < 0.5 and n:
                parts.append(str(r.randint(-n, n - 1)))
            else:
                start = r.choice(["", "0", "1", "-1", "-2", str(n // 2)])
                stop = r.choice(["", "", "-1", str(n), "2", str(n + 3)])
                step = r.choice(["", "", "", ":2", ":3", ":1"])
                parts.append(f"{start}:{stop}{step}")
        if r.random() < 0.15:
            parts.insert(r.randint(0, len(parts)), "None")
        if r.random() < 0.15 and parts:
            cut = r.randint(0, len(parts))
            parts = parts[:cut] + ["..."]
        while len(parts) > 1 and parts[-1] == ":":
            parts.pop()
        return ", ".join(parts) if parts else "..."

    def reshape_target(self, s: tuple[int, ...]) -> list[int]:
        r = self.rng
        n = math.prod(s)
        k = r.choice(["flat", "split", "merge", "ones", "same"])
        if k == "flat":
            return [-1] if r.random() < 0.5 else [n]
        if k == "split" and n > 1:
            f = [q for q in range(2, n) if n % q == 0]
            if f:
                q = r.choice(f)
                return [q, -1] if r.random() < 0.5 else [q, n // q]
        if k == "merge" and len(s) >= 2:
            i = r.randrange(len(s) - 1)
            return list(s[:i]) + [s[i] * s[i + 1]] + list(s[i + 2:])
        if k == "ones":
            out = list(s)
            out.insert(r.randint(0, len(out)), 1)
            return out
        return list(s)

    def g_view(self):
        a = self.pick()
        self.emit(self.view_expr(a))

    def g_matmul(self):
        r = self.rng
        dt = r.choices(DTYPES, [3, 1, 1, 1, 0.3, 0.3, 1, 1, 0.2])[0]
        m, k, n, b = r.choice([1, 2, 3, 5]), r.choice([1, 2, 3, 4, 7, 0]), r.choice([1, 2, 3, 4]), r.choice([1, 2, 3])
        form = r.choice(["mm", "mv", "vm", "bmm", "bcast", "einsum_mm", "einsum_bmm", "einsum_dot", "einsum_rows", "dot"])
        shapes = {"mm": ((m, k), (k, n)), "mv": ((m, k), (k,)), "vm": ((k,), (k, n)), "bmm": ((b, m, k), (b, k, n)),
                  "bcast": ((b, m, k), (k, n)), "einsum_mm": ((m, k), (k, n)), "einsum_bmm": ((b, m, k), (b, k, n)),
                  "einsum_dot": ((k,), (k,)), "einsum_rows": ((m, k), (m, k)), "dot": ((k,), (k,))}[form]
        dt2 = dt if r.random() < 0.9 else self.dtype()
        a = self.pick(lambda t: tuple(t.shape) == shapes[0] and _name(t.dtype) == dt,
                      make=lambda: self.new_input(shapes[0], dt))
        bb = self.pick(lambda t: tuple(t.shape) == shapes[1] and _name(t.dtype) == dt2,
                       make=lambda: self.new_input(shapes[1], dt2))
        expr = {"mm": r.choice([f"{a} @ {bb}", f"{a}.mm({bb})", f"T.matmul({a}, {bb})"]), "mv": f"{a} @ {bb}",
                "vm": f"{a} @ {bb}", "bmm": r.choice([f"{a}.bmm({bb})", f"{a} @ {bb}"]), "bcast": f"{a} @ {bb}",
                "einsum_mm": f"T.einsum('ij,jk->ik', {a}, {bb})", "einsum_bmm": f"T.einsum('bij,bjk->bik', {a}, {bb})",
                "einsum_dot": f"T.einsum('i,i->', {a}, {bb})", "einsum_rows": f"T.einsum('ij,ij->i', {a}, {bb})",
                "dot": f"{a}.dot({bb})"}[form]
        self.emit(expr)

    def g_cat(self):
        r = self.rng
        a = self.pick(lambda t: t.ndim >= 1)
        t = self.t(a)
        s = list(t.shape)
        if r.random() < 0.5 and s:
            d = r.randrange(len(s))
            s2 = list(s)
            s2[d] = r.choice([0, 1, 2, 3])
            b = self.new_input(tuple(s2), None if r.random() < 0.4 else _name(t.dtype))
            self.emit(f"T.cat([{a}, {b}], {d - len(s) if r.random() < 0.3 else d})")
        else:
            b = self.new_input(tuple(s), None if r.random() < 0.4 else _name(t.dtype))
            self.emit(f"T.stack([{a}, {b}{', ' + a if r.random() < 0.3 else ''}], {r.randint(-len(s) - 1, len(s))})")

    def g_inplace(self):
        """A write into a variable or into a view of it; every alias is compared at the end."""
        r = self.rng
        base = self.pick(lambda t: t.numel() > 0)
        target = base
        if r.random() < 0.6 and self.t(base).ndim:
            v = self.emit(self.view_expr(base))
            if v is None:
                return
            target = v
        t = self.t(target)
        k = r.choice(["add_", "mul_", "sub_", "div_", "iadd", "imul", "copy_", "fill_", "zero_", "setitem", "setitem",
                      "masked_fill_", "clamp_", "unary_", "ibit", "ifloordiv", "copy_self"])
        if k in ("add_", "mul_", "sub_", "div_"):
            line = f"{target}.{k}({self.operand(target, onto=True)}{', alpha=2' if k in ('add_', 'sub_') and r.random() < 0.3 else ''})"
        elif k in ("iadd", "imul", "ifloordiv", "ibit"):
            op = {"iadd": "+=", "imul": "*=", "ifloordiv": r.choice(["//=", "%="]), "ibit": r.choice(["&=", "|=", "^="])}[k]
            b = self.operand(target, onto=True)
            if op == "//=" and not self._trunc_safe(target, b):
                return
            line = f"{target} {op} {b}"
        elif k == "copy_":
            line = f"{target}.copy_({self.operand(target, onto=True) if r.random() < 0.8 else self.scalar()})"
        elif k == "fill_":
            line = f"{target}.fill_({self.scalar()})"
        elif k == "zero_":
            line = f"{target}.zero_()"
        elif k == "setitem":
            idx = self.index(tuple(t.shape))
            try:
                sub = tuple(t[eval(f"np[{idx}]", {"np": _IndexEcho()})].shape)
            except Exception:  # noqa: BLE001 - torch will say so at the statement
                sub = tuple(t.shape)
            val = self.scalar() if r.random() < 0.4 else self.new_input(self.partner_shape(sub, onto=True))
            line = f"{target}[{idx}] = {val}"
        elif k == "masked_fill_":
            c = self.new_input(self.partner_shape(tuple(t.shape), onto=True), "bool")
            line = f"{target}.masked_fill_({c}, {self.scalar()})"
        elif k == "clamp_":
            line = f"{target}.clamp_({self.scalar()}, {self.scalar()})"
        elif k == "copy_self":  # a source that aliases the destination (overlapping: torch raises, README)
            line = f"{target}.copy_({self.view_expr(base) if r.random() < 0.5 else base})"
        else:
            f = r.choice(["exp_", "neg_", "abs_", "floor_", "sqrt_", "relu_", "sigmoid_", "round_", "square_",
                          "nan_to_num_", "tanh_", "trunc_"])
            line = f"{target}.{f}()"
        self.stmt(line, written=(base, target))

    def g_read(self):
        a = self.pick()
        self.emit(f"{a}.tolist()", read=_name(self.t(a).dtype))

    def program(self) -> Program:
        r = self.rng
        for _ in range(r.randint(1, 2)):
            self.new_input()
        n = r.randint(2, 12)
        kinds = ["unary", "binary", "compare", "cast", "select", "reduce", "arg", "softmax", "view", "matmul", "cat",
                 "inplace", "read"]
        weights = [12, 16, 6, 8, 6, 9, 2, 3, 11, 3, 3, 10, 2]
        tries = 0
        while len(self.lines) < n and not self.raises and tries < 200:
            tries += 1
            getattr(self, "g_" + r.choices(kinds, weights)[0])()
        return Program(self.seed, self.case, self.inputs, self.lines, self.outputs(), self.reads, self.raises,
                       realize_together=r.random() < 0.5)

    def outputs(self) -> list[str]:
        """The last value, every tensor sharing memory with a written one, and a few others."""
        defined = set()
        for line in (self.lines[:-1] if self.raises else self.lines):
            if " = " in line and line.split(" = ")[0].isidentifier():
                defined.add(line.split(" = ")[0])
        names = [n for n in self.pool if n in defined or n.startswith("x")]
        if not names:
            return []
        ptrs = {self.t(w).untyped_storage().data_ptr() for w in self.written if w in self.ns}
        out = [n for n in names if self.t(n).untyped_storage().data_ptr() in ptrs]
        out += [n for n in names[:-1] if self.rng.random() < 0.3]
        out.append(names[-1])
        return list(dict.fromkeys(out))


class _IndexEcho:
    def __getitem__(self, idx):
        return idx


_OK_DTYPES = {_tdt(d) for d in DTYPES}


def generate(seed: int, case: int, small: bool = False) -> Program:
    """Case `case` of seed `seed` (`small`: sizes for the Triton interpreter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Generator(seed, case, small).program()


# ---------------------------------------------------------------- running

def _namespace(lib) -> dict:
    return {"T": lib, "inf": math.inf, "nan": math.nan, "float": float, "__builtins__": __builtins__}


@dataclasses.dataclass
class Run:
    ns: dict
    error: BaseException | None = None  # the exception at line `at` (then the lines after it did not run)
    at: int = -1


def execute(p: Program, lib, lines: list[str], build=None) -> Run:
    """Run `lines` with T = `lib` (torch or lazy) on fresh inputs; stop at the first exception."""
    import lazy

    ns = _namespace(lib)
    for i in p.inputs:
        t = build(i) if build is not None else i.build()
        ns[i.name] = lazy.tensor(t) if lib is lazy else t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, line in enumerate(lines):
            try:
                exec(compile(line, f"<fuzz {p.seed}:{p.case} line {k}>", "exec"), ns)  # noqa: S102
            except Exception as e:  # noqa: BLE001 - reported by the caller
                return Run(ns, e, k)
    return Run(ns)


def _results(p: Program, run: Run, lazy_mod=None) -> dict[str, torch.Tensor]:
    """The outputs and reads as torch tensors (realized and copied, for lazy)."""
    out = {}
    vals = {k: run.ns[k] for k in p.outputs if k in run.ns}
    if lazy_mod is not None:
        if p.realize_together:
            lazy_mod.realize(*[v for v in vals.values() if isinstance(v, lazy_mod.Tensor)])
        for k, v in vals.items():
            out[k] = v.torch().clone()
    else:
        out = {k: v.clone() for k, v in vals.items()}
    for k, dt in p.reads.items():
        if k in run.ns:
            out[k] = _from_list(run.ns[k], dt)
    return out


def _from_list(v, dt: str) -> torch.Tensor:
    return torch.tensor(v, dtype=_tdt(dt)) if dt != "bfloat16" else torch.tensor(v, dtype=torch.float64).bfloat16()


class _Widen(TorchFunctionMode):
    """torch with the floats in `narrow` computed in `wide`: inputs arrive widened, `dtype=`
    arguments name `wide`, and an explicit cast to a float dtype rounds to it and widens back."""

    _CASTS: ClassVar[dict] = {torch.Tensor.half: torch.float16, torch.Tensor.bfloat16: torch.bfloat16,
                              torch.Tensor.float: torch.float32, torch.Tensor.double: torch.float64}

    def __init__(self, narrow: set, wide: torch.dtype):
        super().__init__()
        self.narrow, self.wide = narrow, wide

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        target = self._CASTS.get(func)
        if func is torch.Tensor.to:
            target = kwargs.get("dtype") or next((a.dtype if isinstance(a, torch.Tensor) else a for a in args[1:]
                                                  if isinstance(a, (torch.dtype, torch.Tensor))), None)
        if target is not None and target.is_floating_point:
            x = args[0].to(target)
            return x.to(self.wide) if target in self.narrow else x
        if kwargs.get("dtype") in self.narrow:
            kwargs["dtype"] = self.wide
        return func(*args, **kwargs)


@contextlib.contextmanager
def _default_dtype(dt: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class _Nudge(TorchFunctionMode):
    """torch with the float result of every op but a cast moved by one ulp (`_nudge`): a fused
    kernel may leave a float16/bfloat16 intermediate unrounded (README), half an ulp away at most,
    and may compute a float32 one in another order or with another libm, an ulp or so away. The
    result of an op that sums (`_SUMS`) moves by two ulps of its largest partial sum instead: the
    order of a sum, and a log of a sum near 1 (log_softmax), err by that much, however small the
    result."""

    _CASTS = frozenset({torch.Tensor.to, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.float,
                        torch.Tensor.double, torch.Tensor.type, torch.Tensor.type_as})
    # float32/float64 math functions: lazy's or glibc's against SLEEF, up to 4 ulps apart (TOLERANCE)
    _MATH = frozenset({"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "tanh", "sinh",
                       "cosh", "erf", "sigmoid", "logit", "rsqrt", "pow", "__pow__", "__rpow__", "gelu", "silu",
                       "logaddexp", "hypot", "xlogy", "softmax"})
    _SUMS = frozenset({"sum", "mean", "var", "std", "var_mean", "std_mean", "norm",
             "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "dot", "einsum"})
    # ... a log of a sum of exponentials, each at most 1 once the row's maximum is subtracted
    # (log_softmax = x - max - log(s), logsumexp = max + log(s), 1 <= s <= n): the log of the sum
    # errs by an ulp of 1 or so, however small the result (the sum near 1); the row's other values
    # do not enter, so the scale is max(|result|, 1), not a partial sum over the tensor
    _LOG_SUMS = frozenset({"log_softmax", "logsumexp"})

    # ... whose error is absolute, of the size of an ulp of the argument (log near 1, sin near pi,
    # gelu of a negative argument: 1 + erf cancels)
    _ABS_MATH = frozenset({"log", "log2", "log10", "logit", "sin", "cos", "tan", "gelu"})
    # a remainder whose dividend is uncertain by more than the divisor may be anything between
    _MOD = frozenset({"remainder", "remainder_", "__mod__", "__rmod__", "__imod__", "fmod"})
    _EXACT = frozenset({"copy_", "fill_", "zero_", "masked_fill_", "__setitem__", "clone", "contiguous"})

    def __init__(self, style: str, sign: int):
        super().__init__()
        self.style, self.sign = style, sign

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        inplace = name.startswith("__i") or name.endswith("_") and not name.startswith("__")
        dividend = None
        if name in self._MOD and isinstance(args[0], torch.Tensor):
            dividend = args[1] if name == "__rmod__" else args[0].clone()
        r = func(*args, **(kwargs or {}))
        if (not isinstance(r, torch.Tensor) or not r.dtype.is_floating_point or not r.numel() or func in self._CASTS
                or name in self._EXACT or not inplace and (r._is_view() or any(r is a for a in args))):
            return r
        ints = [a for a in args if isinstance(a, torch.Tensor)]
        if ints and all(not a.dtype.is_floating_point for a in ints) and bool(
                ((r == r.round()) & (r.abs() < 2**24) | ~torch.isfinite(r)).all()):
            return r  # an op of integer tensors with whole results below 2**24 (x / 1) is exact: no rounding to model
        with torch.no_grad():
            ulps = 4 if name in self._MATH and r.dtype in (torch.float32, torch.float64) else 1
            moved = _nudge(r.contiguous(), self.style, self.sign, ulps)
            away = (moved - r).sign()  # the direction each element moves
            scale = self._partial_sum(name, args, r)
            if name in self._LOG_SUMS:  # (a row's maximum gives 0 or so: it moves too)
                scale = torch.maximum(r.abs(), torch.ones_like(r))
                moved = torch.where(torch.isfinite(r), r + torch.where(away == 0, self.sign, away) * 4 * _ulp(scale), r)
            elif name in self._ABS_MATH and isinstance(args[0], torch.Tensor):
                scale = torch.maximum(args[0].to(r.dtype).abs(), r.abs())  # (a bool or int argument too)
                moved = torch.where(torch.isfinite(r), r + away * 4 * _ulp(scale), r)
            elif scale is not None and bool(torch.isfinite(scale)):
                moved = torch.where(torch.isfinite(r), r + away * 2 * _ulp(scale).to(r.dtype), r)
            if dividend is not None:
                # a - floor(a / b) * b errs by the dividend's error plus the quotient times the
                # divisor's: 8 ulps of the dividend (in its own dtype: a bfloat16 logsumexp's), 16 of
                # a computed divisor (this run's sits up to 8 from torch's: inputs moved by one, a math
                # function by four; lazy's on either side). -3.75 % sigmoid(-10) multiplies the
                # divisor's by 82,603. A wrap within that distance of 0 or of the divisor makes the
                # remainder wild: anything between 0 and the divisor.
                b = args[0] if name == "__rmod__" else args[1]
                divisor = torch.as_tensor(b, dtype=r.dtype)
                a = torch.as_tensor(dividend)
                shift = (8 * _ulp(a)).to(r.dtype) if a.is_floating_point() else torch.zeros((), dtype=r.dtype)
                if isinstance(b, torch.Tensor) and b.is_floating_point():
                    q = (a.to(r.dtype) / divisor).floor().abs()
                    shift = shift + q * 16 * _ulp(b).to(r.dtype)
                shift = torch.nan_to_num(shift, nan=0.0, posinf=math.inf)
                moved = torch.where(torch.isfinite(r), moved + self.sign * shift, moved)
                wild = ((r.abs() <= shift) | ((divisor.abs() - r.abs()) <= shift)) & torch.isfinite(r)
                moved = torch.where(wild, divisor if self.sign > 0 else torch.zeros_like(r), moved)
            r.copy_(moved)  # in place: r's layout stays
        return r

    def _partial_sum(self, name: str, args, r: torch.Tensor) -> torch.Tensor | None:
        """The largest magnitude a partial sum of op `name` reaches (None: not an op that sums)."""
        if name not in self._SUMS:
            return None
        ts = [a for a in args if isinstance(a, torch.Tensor)]
        if not ts or not all(t.numel() for t in ts):
            return None
        big = [t.to(torch.float64).abs().masked_fill(~torch.isfinite(t), 0).amax() for t in ts]
        if name in ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "dot", "einsum"):
            k = max(ts[0].shape[-1] if ts[0].ndim else 1, 1)
            s = math.prod(big[:2]) * k
        else:
            s = big[0] * max(1, ts[0].numel() // max(r.numel(), 1))
        return s.to(r.dtype) if r.dtype != torch.float64 else s


class _Documented(TorchFunctionMode):
    """torch with the ops README documents lazy computing otherwise computed lazy's way (each a
    reference of the envelope):
    - var and std of float32/float16/bfloat16 in float32, mean then squared deviations: "`var` and
      `std` ... compute in float32" (tests/test_tensor_api.py::test_var_and_std_compute_in_float32),
      where torch's CPU kernels accumulate in float64; and of n equal values, up to n ulps of the
      value: "the mean is a rounded sum over n"
      (tests/test_tensor_api.py::test_std_of_equal_values_is_within_ulps_of_zero);
    - signbit of a NaN is False: "`signbit` of a NaN is False"
      (tests/test_tensor_api.py::test_signbit_of_nan_is_false), where torch reads the bit;
    - float remainder is fmod corrected to the divisor's sign at any quotient: "`remainder` (`%`) of
      floats is exact" (tests/test_tensor_api.py::test_remainder_is_exact_for_huge_quotients), where
      torch's vector loop overflows a / b."""

    _REMAINDER: ClassVar[dict] = {torch.remainder: False, torch.Tensor.remainder: False, torch.Tensor.__mod__: False,
                                  torch.Tensor.__rmod__: False, torch.Tensor.remainder_: True,
                                  torch.Tensor.__imod__: True}

    _ROOT: ClassVar[dict] = {torch.Tensor.var: False, torch.Tensor.std: True, torch.var: False, torch.std: True}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.signbit, torch.signbit) and args[0].dtype.is_floating_point:
            return func(*args, **kwargs) & ~args[0].isnan()
        if func in self._REMAINDER and not kwargs:
            a, b = (args[1], args[0]) if func is torch.Tensor.__rmod__ else args[:2]
            r = func(*args)
            if isinstance(r, torch.Tensor) and r.dtype.is_floating_point:
                from lazy.interpret import fmod_exact

                a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
                m = fmod_exact(a, b)
                exact = torch.where((m != 0) & ((m < 0) != (b < 0)), m.to(r.dtype) + b.to(r.dtype), m.to(r.dtype))
                return r.copy_(exact) if self._REMAINDER[func] else exact  # (in place: r is args[0])
            return r
        if func not in self._ROOT or not args[0].dtype.is_floating_point:
            return func(*args, **kwargs)
        x, rest = args[0], list(args[1:])
        dim = rest.pop(0) if rest else kwargs.pop("dim", None)
        unbiased = rest.pop(0) if rest else kwargs.pop("unbiased", None)
        keepdim = rest.pop(0) if rest else kwargs.pop("keepdim", False)
        c = kwargs.get("correction")
        c = c if c is not None else (0 if unbiased is False else 1)
        dims = tuple(range(x.ndim)) if dim is None or dim == () else (dim,) if isinstance(dim, int) else tuple(dim)
        n = math.prod(x.shape[d] for d in dims) if x.ndim else 1
        x32 = x.double() if x.dtype == torch.float64 else x.float()
        d = x32 - (x32.mean(dims, keepdim=True) if x.ndim else x32)
        v = ((d * d).sum(dims, keepdim=keepdim) if x.ndim else d * d) / max(0, n - c)
        if x.ndim and n > c:
            # n equal values: a std of up to n ulps of the value ("the mean is a rounded sum over n")
            equal = x.amax(dims, keepdim=keepdim) == x.amin(dims, keepdim=keepdim)
            bound = n * torch.finfo(x32.dtype).eps * x32.abs().amax(dims, keepdim=keepdim)
            v = torch.where(equal, bound * bound, v)
        return (v.sqrt() if self._ROOT[func] else v).to(x.dtype)


def _references(p: Program) -> list[dict[str, torch.Tensor]]:
    """The envelope's reruns with torch (module docstring): wide, f64, and the nudged runs; a rerun
    that raises is left out."""
    halves, floats = {torch.float16, torch.bfloat16}, {torch.float16, torch.bfloat16, torch.float32}
    runs = [
        (lambda i: i.build("float32" if i.dtype in ("float16", "bfloat16") else None), _Widen(halves, torch.float32),
         torch.float32),
        (lambda i: i.build("float64" if i.dtype in FLOATS else None), _Widen(floats, torch.float64), torch.float64),
        (lambda i: i.build(), _Documented(), torch.float32),
    ]
    for nudge in (("hash", 1), ("hash", -1), ("all", 1), ("all", -1)):
        runs.append((lambda i, n=nudge: i.build(nudge=n), _Nudge(*nudge), torch.float32))
    out = []
    for build, mode, default in runs:
        try:
            with _default_dtype(default), mode:
                run = execute(p, torch, p.body, build)
            if run.error is None:
                out.append(_results(p, run))
        except Exception:  # noqa: BLE001, S110 - a reference that cannot run explains nothing
            pass
    return out


def _judge(name: str, got: torch.Tensor, want: torch.Tensor, refs) -> str | None:
    """None if lazy's `got` matches torch's `want` (module docstring), else what differs."""
    if tuple(got.shape) != tuple(want.shape):
        return f"{name}: shape {tuple(got.shape)}, torch {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"{name}: dtype {_name(got.dtype)}, torch {_name(want.dtype)}"
    bad = _off(got, want)
    if not bad.any():
        return None
    cands = [want] + [r[name] for r in refs() if name in r and tuple(r[name].shape) == tuple(want.shape)]
    if got.dtype.is_floating_point:
        rtol, atol = TOLERANCE[_name(got.dtype)]
        c = torch.stack([x.to(got.dtype).double() for x in cands])
        g = got.double()
        nan = c.isnan()
        lo = torch.where(nan, math.inf, c).amin(0)
        hi = torch.where(nan, -math.inf, c).amax(0)
        inside = (g >= lo - (atol + rtol * lo.abs())) & (g <= hi + (atol + rtol * hi.abs()))
        inside |= g.isinf() & ((c == g).any(0))
        # overflow midway: where some references stay finite and others do not, which non-finite value a
        # float32 sum or product reaches (+inf, -inf or their NaN) depends on its order
        finite = torch.isfinite(c)
        inside |= ~torch.isfinite(g) & finite.any(0) & (~finite).any(0)
        straddle = ((c < 0).any(0) & (c > 0).any(0))
        if straddle.any():
            rc, rg = 1 / torch.where(nan, math.inf, c), 1 / g
            rlo = torch.where(nan, math.inf, rc).amin(0)
            rhi = torch.where(nan, -math.inf, rc).amax(0)
            near = g.abs() <= 16 * torch.where(nan, 0, c.abs()).amax(0)  # a reciprocal's scale, not any value
            inside |= straddle & near & (rg >= rlo - (atol + rtol * rlo.abs())) & (rg <= rhi + (atol + rtol * rhi.abs()))
        ok = torch.where(g.isnan(), nan.any(0), inside)
    else:
        c = torch.stack([x.to(got.dtype) for x in cands])
        ok = (c == got).any(0)
    bad &= ~ok
    if not bad.any():
        return None
    idx = bad.nonzero()[0].tolist()
    at = tuple(idx)
    return (f"{name}: {int(bad.sum())} of {got.numel()} values differ; at {at}: lazy {got[at].item()!r}, "
            f"torch {want[at].item()!r}" + (f", references {[x[at].item() for x in cands[1:]]}" if len(cands) > 1 else ""))


def _off(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Positions where `got` is not torch's value (within TOLERANCE for floats)."""
    if got.dtype.is_floating_point:
        rtol, atol = TOLERANCE[_name(got.dtype)]
        g, w = got.double(), want.double()
        same = (g == w) | (g.isnan() & w.isnan()) | ((g - w).abs() <= atol + rtol * w.abs())
        return ~same
    return got != want


def _error_class(e: BaseException) -> type:
    """The class lazy must raise for torch's `e`. torch's NotImplementedError says that its CPU kernel
    lacks the dtype ("floor_vml_cpu" not implemented for 'Bool'): lazy's DTypeError, a RuntimeError
    like it, says the dtype is not supported."""
    return RuntimeError if type(e) is NotImplementedError else type(e)


def _documented(err: str) -> str | None:
    return next((why for frag, why in _DOCUMENTED_ERRORS.items() if frag in err), None)


def check(p: Program) -> list[str]:
    """Run `p` with torch and with lazy on the current backend; the differences, as text."""
    import lazy

    problems: list[str] = []
    eager = execute(p, torch, p.body)
    if eager.error is not None:  # the generator ran the same lines: torch is not deterministic here
        return [f"line {eager.at}: torch raised {type(eager.error).__name__} where it did not while generating"]
    want = _results(p, eager)
    terr = None
    if p.raises:
        terr = execute_line(eager.ns, p.lines[-1])
    lz = execute(p, lazy, p.body)
    inputs = {eager.ns[i.name].untyped_storage().data_ptr() for i in p.inputs}
    if lz.error is not None:
        if any(frag in str(lz.error) for frag in _DOCUMENTED_LAZY_ERRORS):
            return []
        if "view" in str(lz.error) and _reads_layout_difference(p.lines[lz.at], eager.ns, inputs):
            return []  # "Computed values are laid out row-major" (README; see _layout_differs)
        if isinstance(lz.error, lazy.DTypeError) and _has_empty_operand(p.lines[lz.at], eager.ns):
            # "Dtype checks do not depend on sizes: an op torch refuses for a dtype raises on empty
            # tensors too" (tests/test_tensor_api.py::test_dtype_checks_do_not_depend_on_sizes)
            return []
        return [f"line {lz.at} `{p.lines[lz.at]}`: lazy raised {_exc(lz.error)}; torch did not"]
    hazard = next((k for k, line in enumerate(p.body) if _overlapping_write(line, eager.ns)), None)
    if hazard is not None:
        # "An in-place write whose source overlaps its destination ... reads the source as it was
        # before the write; torch raises" (tests/test_tensor_api.py::test_overlapping_write_reads_the_old_source),
        # or, where torch does not check (x.t().copy_(x)), gives what its loop order does: compared
        # up to that line
        lines = p.body[:hazard]
        return check(dataclasses.replace(p, lines=lines, raises="", outputs=[o for o in p.outputs if _defined(o, lines)],
                                         reads={k: v for k, v in p.reads.items() if _defined(k, lines)}))
    documented_at = None
    for a, b, shared in _alias_differences(eager.ns, lz.ns):
        if _layout_differs(eager.ns[a], inputs) or _layout_differs(eager.ns[b], inputs):
            d = max(_def_line(p.body, a), _def_line(p.body, b))
            documented_at = d if documented_at is None else min(documented_at, d)
        else:
            problems.append(f"{a} and {b}: {'torch' if shared else 'lazy'}'s share memory, "
                            f"{'lazy' if shared else 'torch'}'s do not")
    if documented_at is not None:
        # "Computed values are laid out row-major ...: `reshape` is a view here where torch copies"
        # (tests/test_tensor_api.py::test_computed_values_are_contiguous): a write after such a
        # reshape may differ on purpose, so the program is compared up to the first write after it
        writes = [k for k in range(documented_at + 1, len(p.body)) if not re.match(r"^[vr]\d+ = ", p.body[k])]
        if writes:
            lines = p.body[:writes[0]]
            return problems + check(dataclasses.replace(
                p, lines=lines, raises="", outputs=[o for o in p.outputs if _defined(o, lines)],
                reads={k: v for k, v in p.reads.items() if _defined(k, lines)}))
    try:
        got = _results(p, lz, lazy)
    except Exception as e:  # noqa: BLE001
        return [f"realizing the outputs: lazy raised {_exc(e)}"]
    if p.raises:
        lerr = execute_line(lz.ns, p.lines[-1])
        tname = f"{type(terr).__name__}: {terr}" if terr is not None else ""
        if terr is None:
            problems.append(f"line {len(p.lines) - 1}: torch no longer raises ({p.raises})")
        elif lerr is None:
            if not _documented(tname) and not ("view size is not compatible" in tname and
                                               _reads_layout_difference(p.lines[-1], eager.ns, inputs)):
                problems.append(f"line {len(p.lines) - 1} `{p.lines[-1]}`: torch raised {_exc(terr)}; lazy did not")
        elif not isinstance(lerr, _error_class(terr)):
            problems.append(f"line {len(p.lines) - 1} `{p.lines[-1]}`: torch raised {_exc(terr)}; lazy raised "
                            f"{_exc(lerr)}, not a {type(terr).__name__}")
    cache: list = []

    def refs():
        if not cache:
            cache.append(_references(p))
        return cache[0]

    for k, w in want.items():
        if k not in got:
            problems.append(f"{k}: missing from lazy's results")
            continue
        msg = _judge(k, got[k], w, refs)
        if msg:
            problems.append(msg)
    return problems


def _overlapping_write(line: str, ns: dict) -> bool:
    """Whether in-place `line` reads memory it writes otherwise than element for element: a source
    sharing the destination's memory that is not the same data (an expression of it, or a view)."""
    m = re.match(r"([xv]\d+)", line)
    if not m or re.match(r"[vr]\d+ = ", line) or not isinstance(ns.get(m.group(1)), torch.Tensor):
        return False
    dst, rest = ns[m.group(1)], line[m.end():]
    for n in re.finditer(r"\b[xv]\d+\b", rest):
        t = ns.get(n.group())
        if not isinstance(t, torch.Tensor) or not t.numel() or not dst.numel() or \
                t.untyped_storage().data_ptr() != dst.untyped_storage().data_ptr():
            continue
        bare = re.match(r"\s*[,)]|\s*$", rest[n.end():]) and not re.search(r"[.\[]\s*$", rest[:n.start()])
        same = (t.data_ptr(), t.stride(), t.shape, t.dtype) == (dst.data_ptr(), dst.stride(), dst.shape, dst.dtype)
        if not (bare and same):
            return True
    return False


def _layout_differs(t: torch.Tensor, inputs: set[int]) -> bool:
    """Whether torch's `t` is, or views, a computed value torch laid out otherwise than row-major,
    where lazy's is row-major (README, "Computed values are laid out row-major")."""
    root = t._base if t._base is not None else t
    return root.untyped_storage().data_ptr() not in inputs and not root.is_contiguous()


def _reads_layout_difference(line: str, ns: dict, inputs: set[int]) -> bool:
    names = re.findall(r"\b[xv]\d+\b", line)
    return any(isinstance(ns.get(n), torch.Tensor) and _layout_differs(ns[n], inputs) for n in names)


def _alias_differences(ns_torch: dict, ns_lazy: dict) -> list[tuple[str, str, bool]]:
    """Pairs of tensor variables that share memory in one run and not in the other: (a, b, whether
    torch's share)."""
    names = [n for n, v in ns_torch.items() if re.fullmatch(r"[xv]\d+", n) and isinstance(v, torch.Tensor)
             and v.numel() and n in ns_lazy]
    root = {n: ns_lazy[n] if ns_lazy[n]._base is None else ns_lazy[n]._base for n in names}
    ptr = {n: ns_torch[n].untyped_storage().data_ptr() for n in names}
    return [(a, b, ptr[a] == ptr[b]) for i, a in enumerate(names) for b in names[i + 1:]
            if (ptr[a] == ptr[b]) != (root[a] is root[b])]


def _def_line(lines: list[str], name: str) -> int:
    return next((k for k, line in enumerate(lines) if line.startswith(f"{name} = ")), -1)


def _has_empty_operand(line: str, ns: dict) -> bool:
    """Whether `line` reads a tensor variable with no elements (its right-hand side, or a target)."""
    names = re.findall(r"\b[xv]\d+\b", line.split(" = ", 1)[-1] if re.match(r"^[vr]\d+ = ", line) else line)
    return any(isinstance(ns.get(n), torch.Tensor) and ns[n].numel() == 0 for n in names)


def execute_line(ns: dict, line: str) -> BaseException | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exec(compile(line, "<fuzz probe>", "exec"), ns)  # noqa: S102
        except Exception as e:  # noqa: BLE001
            return e
    return None


def _exc(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:300]}"


@contextlib.contextmanager
def backend(name: str):
    """LAZY_BACKEND=name for the block (Triton runs under its interpreter when there is no GPU)."""
    old = {k: os.environ.get(k) for k in ("LAZY_BACKEND", "TRITON_INTERPRET")}
    os.environ["LAZY_BACKEND"] = name
    if name == "triton" and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_case(seed: int, case: int, backend_name: str = "c") -> tuple[Program, list[str]]:
    """Generate and check one case; an exception inside lazy is a difference too."""
    p = generate(seed, case, small=backend_name == "triton")
    with backend(backend_name):
        try:
            problems = check(p)
        except Exception:  # noqa: BLE001 - a crash of the harness or of lazy: report it with the case
            problems = ["the check raised:\n" + traceback.format_exc(limit=6)]
    return p, problems


def _kind(problem: str) -> str:
    """What sort of difference a problem line reports (minimize keeps the sort it started with)."""
    for k in ("values differ", "dtype", "shape", "lazy raised", "lazy did not", "not a", "realizing", "the check raised"):
        if k in problem:
            return k
    return problem


def minimize(p: Program, backend_name: str) -> Program:
    """Drop statements, outputs and inputs while a difference of the same sort remains (greedy)."""
    with backend(backend_name):
        kinds = {_kind(m) for m in check(p)}

    def fails(q: Program) -> bool:
        if not (q.outputs or q.reads or q.raises):
            return False
        with backend(backend_name):
            try:
                found = check(q)
            except Exception:  # noqa: BLE001
                return False
        return bool(kinds & {_kind(m) for m in found}) and not any("while generating" in m for m in found)

    cur = p
    for i in reversed(range(len(cur.lines))):
        lines = cur.lines[:i] + cur.lines[i + 1:]
        q = dataclasses.replace(cur, lines=lines, raises=cur.raises if i != len(cur.lines) - 1 else "",
                                outputs=[o for o in cur.outputs if _defined(o, lines)],
                                reads={k: v for k, v in cur.reads.items() if _defined(k, lines)})
        if fails(q):
            cur = q
    for o in list(cur.outputs):
        q = dataclasses.replace(cur, outputs=[x for x in cur.outputs if x != o])
        if fails(q):
            cur = q
    for i in list(cur.inputs):
        if not any(_mentions(line, i.name) for line in cur.lines) and i.name not in cur.outputs:
            q = dataclasses.replace(cur, inputs=[j for j in cur.inputs if j is not i])
            if fails(q):
                cur = q
    return cur


def _mentions(line: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", line) is not None


def _defined(name: str, lines: list[str]) -> bool:
    return name.startswith("x") or any(line.startswith(f"{name} = ") for line in lines)


# ---------------------------------------------------------------- command line

def _worker(seed: int, start: int, backend_name: str) -> None:
    """Check cases start, start+1, ... forever; one JSON line per case on stdout."""
    case = start
    while True:
        print(json.dumps({"start": case}), flush=True)
        _, problems = run_case(seed, case, backend_name)
        print(json.dumps({"case": case, "problems": problems}), flush=True)
        case += 1


def _report(out, seed: int, case: int, backend_name: str, problems: list[str], program: Program | None) -> None:
    out.write(f"==== seed {seed} case {case} backend {backend_name}\n")
    for m in problems:
        out.write(f"# {m}\n")
    if program is not None:
        out.write(snippet(program, backend_name))
    out.write("\n")
    out.flush()


def _pump(f, q: queue.Queue) -> None:
    for line in f:
        q.put(line)
    q.put(None)


def fuzz(minutes: float, seed: int, backend_name: str, out_path: str, start: int = 0, case_timeout: float = 300,
         progress=sys.stderr) -> tuple[int, int]:
    """Run cases from `start` for `minutes` in a worker process, restarted after a crash or a hang
    (each recorded as a failure of its case). Returns (cases run, failures)."""
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    ran = failed = 0
    case = start
    last_line = 0.0
    tty = progress.isatty()
    small = backend_name == "triton"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
    with open(out_path, "a") as out, open(out_path + ".stderr", "a") as log:
        while time.monotonic() < deadline:
            proc = subprocess.Popen([sys.executable, "-m", "perf.fuzz", "--worker", "--seed", str(seed), "--start",
                                     str(case), "--backend", backend_name], stdout=subprocess.PIPE, stderr=log,
                                    text=True, env=env, cwd=_ROOT, start_new_session=True)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            current, started, done = None, time.monotonic(), False
            while not done and time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=1)
                except queue.Empty:
                    line = ""
                now = time.monotonic()
                if line is None:  # the worker exited: inside a case, that case crashed it
                    proc.wait()
                    if current is not None:
                        ran, failed, case = ran + 1, failed + 1, current + 1
                        _report(out, seed, current, backend_name, [f"the process died (exit {proc.returncode})"],
                                generate(seed, current, small))
                    done = True
                elif line:
                    msg = json.loads(line)
                    if "start" in msg:
                        current, started = msg["start"], now
                    else:
                        ran, case, current = ran + 1, msg["case"] + 1, None
                        if msg["problems"]:
                            failed += 1
                            _report(out, seed, msg["case"], backend_name, msg["problems"],
                                    generate(seed, msg["case"], small))
                if not done and current is not None and now - started > case_timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    ran, failed, case = ran + 1, failed + 1, current + 1
                    _report(out, seed, current, backend_name, [f"no result after {case_timeout:.0f} s"],
                            generate(seed, current, small))
                    done = True
                if now - last_line >= (1 if tty else 30):
                    last_line = now
                    el = now - t0
                    text = (f"[{el / 60:5.1f} min] {backend_name}: {ran} cases, {ran / max(el, 1e-9):.2f}/s, "
                            f"{failed} failures (next case {case})")
                    progress.write(("\r" + text) if tty else text + "\n")
                    progress.flush()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    el = time.monotonic() - t0
    progress.write(f"{chr(10) if tty else ''}{backend_name}: {ran} cases in {el / 60:.1f} min "
                   f"({ran / max(el, 1e-9):.2f}/s), {failed} failures -> {out_path}; next case {case}\n")
    return ran, failed


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", type=int, help="print this case as a snippet and check it")
    ap.add_argument("--cases", type=int, help="check cases --start .. --start + CASES - 1 in this process")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--minutes", type=float, help="fuzz for this long (a worker process, restarted on a crash)")
    ap.add_argument("--backend", choices=["c", "triton"], default="c")
    ap.add_argument("--out", default="fuzz-failures.txt", help="failing cases are appended here (--minutes)")
    ap.add_argument("--minimize", action="store_true", help="with --case: drop what the difference does not need")
    ap.add_argument("--show", action="store_true", help="with --case: print the snippet only")
    ap.add_argument("--case-timeout", type=float, default=300)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    os.environ.setdefault("LAZY_VERIFY", "1")  # every kernel passes codegen.legalize.verify first
    if a.worker:
        _worker(a.seed, a.start, a.backend)
        return 0
    if a.case is not None:
        p = generate(a.seed, a.case, small=a.backend == "triton")
        if a.show:
            print(snippet(p, a.backend))
            return 0
        _, problems = run_case(a.seed, a.case, a.backend)
        if problems and a.minimize:
            p = minimize(p, a.backend)
            with backend(a.backend):
                problems = check(p)
        print(snippet(p, a.backend))
        print("\n".join(f"DIFFERENCE {m}" for m in problems) if problems else "ok: lazy matches torch")
        return 1 if problems else 0
    if a.cases is not None:
        failed = 0
        t0 = time.monotonic()
        for c in range(a.start, a.start + a.cases):
            p, problems = run_case(a.seed, c, a.backend)
            if problems:
                failed += 1
                _report(sys.stdout, a.seed, c, a.backend, problems, p)
        print(f"{a.cases} cases in {time.monotonic() - t0:.1f} s, {failed} failures")
        return 1 if failed else 0
    if a.minutes is not None:
        if "LAZY_CACHE_DIR" not in os.environ:  # random kernels: keep them out of the user's cache
            os.environ["LAZY_CACHE_DIR"] = tempfile.mkdtemp(prefix="lazy-fuzz-cache-")
        _, failed = fuzz(a.minutes, a.seed, a.backend, a.out, a.start, a.case_timeout)
        return 1 if failed else 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
