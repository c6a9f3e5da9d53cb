"""Python numbers that remember where they came from: how lazy.jit replays a step that takes a
learning rate, a temperature or an iteration number as an argument.

In:  the float and int arguments of a function lazy.jit records.
Out: `SymFloat` / `SymInt` stand-ins for them (a float or an int, to every piece of Python code)
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
    return x._expr if isinstance(x, (SymFloat, SymInt)) else ("num", x)


def plain(x):
    """The number itself, recording no guard."""
    if isinstance(x, SymFloat):
        return float.__float__(x)
    if isinstance(x, SymInt):
        return int.__int__(x)
    return x


def _traced(value, expr):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return SymInt._make(value, expr)
    if isinstance(value, float):
        return SymFloat._make(value, expr)
    return value


def _guard(expr, answer) -> None:
    if _recorder is not None:
        _recorder.guard(expr, answer)


def _binop(name: str, reverse: bool = False):
    op = _OPS[name]

    def f(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        a, b = (other, self) if reverse else (self, other)
        value = op(plain(a), plain(b))
        return _traced(value, (name, expr_of(a), expr_of(b)))
    return f


def _compare(name: str):
    op = _OPS[name]

    def f(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        answer = op(plain(self), plain(other))
        _guard((name, expr_of(self), expr_of(other)), answer)
        return answer
    return f


def _unary(name: str):
    op = _OPS[name]

    def f(self):
        return _traced(op(plain(self)), (name, self._expr))
    return f


def _used(conv):
    def f(self, *args):
        _guard(("eq", self._expr, ("num", plain(self))), True)
        return conv(plain(self), *args)
    return f


class _Traced:
    __slots__ = ()
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
        answer = bool(plain(self))
        _guard(("truth", self._expr), answer)
        return answer

    __hash__ = _used(hash)
    __round__ = _used(round)
    __trunc__ = _used(math.trunc)
    __floor__ = _used(math.floor)
    __ceil__ = _used(math.ceil)

    def __repr__(self) -> str:
        return repr(plain(self))

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(plain(self), spec)

    def __reduce__(self):
        return (type(plain(self)), (plain(self),))


class SymFloat(_Traced, float):
    __slots__ = ("_expr",)

    @classmethod
    def _make(cls, value: float, expr) -> SymFloat:
        out = float.__new__(cls, value)
        out._expr = expr
        return out

    __float__ = _used(float)
    __int__ = _used(int)


class SymInt(_Traced, int):  # (an int subclass cannot have slots: `_expr` lives in its __dict__)

    @classmethod
    def _make(cls, value: int, expr) -> SymInt:
        out = int.__new__(cls, value)
        out._expr = expr
        return out

    __int__ = _used(int)
    __float__ = _used(float)
    __index__ = _used(operator.index)


def wrap_args(values: list, start: int = 0) -> list:
    """Traced stand-ins for the plain float and int values of `values` (arguments start, start+1...)."""
    out = []
    for i, v in enumerate(values):
        if type(v) is float:
            out.append(SymFloat._make(v, ("arg", start + i)))
        elif type(v) is int:
            out.append(SymInt._make(v, ("arg", start + i)))
        else:
            out.append(v)
    return out
