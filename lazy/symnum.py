"""Python numbers that remember where they came from: how lazy.jit replays a step that takes a
learning rate, a temperature or an iteration number as an argument.

In:  the float and int arguments of a function lazy.jit records.
Out: `SymFloat` / `SymInt` stand-ins for them (numbers with every operator of a float or an int)
     that carry an expression of the arguments through arithmetic, so a number the step puts into
     the graph (`x * lr`, `lr * min(1.0, it / warmup)`) is known as a function of the arguments, and
     the comparisons Python made on them (`it < warmup`, `if it % 10 == 0`) as guards.

Rules
- Arithmetic (`+ - * / // % **`, unary minus, abs) gives a new traced number.
- A comparison or `bool()` records a guard (the expression, the answer) and answers as the plain
  value would: a replay whose arguments change an answer runs the function again instead.
- Anything else that turns it into a plain value (`int()`, `float()`, an index, a hash, `round`,
  `math.cos`, a torch call) records that the value itself was used: a replay needs that same value.
  Printing does not (`str`, `repr`, `format` answer without a guard).
- When the graph takes a traced number as a constant (graph.const calls `const_hook`), the
  recorder learns that node's expression: the replay computes the kernel argument from the new
  arguments.
"""

from __future__ import annotations

import math
import operator

_recorder = None  # the Capture tracing now (lazy/jit.py), or None


def evaluate(expr, args: list) -> float | int:
    """The value of an expression for arguments `args`."""
    kind = expr[0]
    if kind == "arg":
        return args[expr[1]]
    if kind == "num":
        return expr[1]
    fn = _OPS[kind]
    return fn(*(evaluate(e, args) for e in expr[1:]))


_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
        "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "neg": operator.neg,
        "abs": abs, "lt": operator.lt, "le": operator.le, "eq": operator.eq, "ne": operator.ne,
        "gt": operator.gt, "ge": operator.ge, "truth": bool}


def expr_of(x):
    return x._expr if isinstance(x, SymNum) else ("num", x)


def plain(x):
    """The number itself, recording no guard."""
    return x._value if isinstance(x, SymNum) else x


def _traced(value, expr):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return SymInt(value, expr)
    if isinstance(value, float):
        return SymFloat(value, expr)
    return value


def _guard(expr, answer) -> None:
    if _recorder is not None:
        _recorder.guard(expr, answer)


def _number(x) -> bool:
    return isinstance(x, (int, float, SymNum))


def _binop(name: str, reverse: bool = False):
    op = _OPS[name]

    def f(self, other):
        if not _number(other):
            return NotImplemented
        a, b = (other, self) if reverse else (self, other)
        return _traced(op(plain(a), plain(b)), (name, expr_of(a), expr_of(b)))
    return f


def _compare(name: str):
    op = _OPS[name]

    def f(self, other):
        if not _number(other):
            return NotImplemented
        answer = op(plain(self), plain(other))
        _guard((name, expr_of(self), expr_of(other)), answer)
        return answer
    return f


def _unary(name: str):
    op = _OPS[name]

    def f(self):
        return _traced(op(self._value), (name, self._expr))
    return f


def _used(conv):
    """A conversion that hands the value itself to other code: the replay needs this value."""
    def f(self, *args):
        _guard(("eq", self._expr, ("num", self._value)), True)
        return conv(self._value, *args)
    return f


class SymNum:
    """A traced number: its value, and its expression of the arguments. Not a subclass of int or
    float, on purpose: CPython reads an int or float subclass's value without asking it (`range`,
    slicing, `math.cos`), which would use the value unseen; this class is asked every time."""

    __slots__ = ("_expr", "_value")

    def __init__(self, value, expr):
        self._value, self._expr = value, expr

    __add__, __radd__ = _binop("add"), _binop("add", True)
    __sub__, __rsub__ = _binop("sub"), _binop("sub", True)
    __mul__, __rmul__ = _binop("mul"), _binop("mul", True)
    __truediv__, __rtruediv__ = _binop("truediv"), _binop("truediv", True)
    __floordiv__, __rfloordiv__ = _binop("floordiv"), _binop("floordiv", True)
    __mod__, __rmod__ = _binop("mod"), _binop("mod", True)
    __pow__, __rpow__ = _binop("pow"), _binop("pow", True)
    __neg__, __abs__ = _unary("neg"), _unary("abs")
    __lt__, __le__, __gt__, __ge__ = _compare("lt"), _compare("le"), _compare("gt"), _compare("ge")
    __eq__, __ne__ = _compare("eq"), _compare("ne")

    def __pos__(self):
        return self

    def __bool__(self) -> bool:
        answer = bool(self._value)
        _guard(("truth", self._expr), answer)
        return answer

    __float__ = _used(float)
    __int__ = _used(int)
    __complex__ = _used(complex)
    __hash__ = _used(hash)
    __round__ = _used(round)
    __trunc__ = _used(math.trunc)
    __floor__ = _used(math.floor)
    __ceil__ = _used(math.ceil)

    def __repr__(self) -> str:
        return repr(self._value)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(self._value, spec)

    def __reduce__(self):
        return (type(self._value), (self._value,))


class SymFloat(SymNum):
    __slots__ = ()


class SymInt(SymNum):
    __slots__ = ()
    __index__ = _used(operator.index)


def wrap_args(values: list, start: int = 0) -> list:
    """Traced stand-ins for the plain float and int values of `values` (arguments start, start+1...)."""
    out = []
    for i, v in enumerate(values):
        if type(v) is float:
            out.append(SymFloat(v, ("arg", start + i)))
        elif type(v) is int:
            out.append(SymInt(v, ("arg", start + i)))
        else:
            out.append(v)
    return out
