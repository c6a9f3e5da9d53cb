"""The integer division atoms of Kernel IR index expressions: `FloorDiv` and `ModIdx`.

The scheduler's index algebra (scheduler/indexing.py) makes them; the renderers print them as
integer `/` and `%`. They are sympy functions, so they live apart from codegen/kernel_ir.py: the
IR's data types load without sympy (a process that runs programs from the program cache on disk
never imports it), and this module is imported by whatever builds or prints index expressions.
"""

from __future__ import annotations

import sympy


class FloorDiv(sympy.Function):
    """floor(a / b) for integers, b > 0; kept unevaluated unless both are numbers."""

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return sympy.Integer(int(a) // int(b))
        return None


class ModIdx(sympy.Function):
    """a mod b for integers, b > 0; kept unevaluated unless both are numbers."""

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return sympy.Integer(int(a) % int(b))
        return None
