"""Integer arithmetic wraps around like torch's, inside fused kernels too.

torch stores every op's result in its dtype, so int8/uint8 wrap after each op, and int32/int64
wrap in two's complement (C leaves signed overflow undefined, and gcc folds `x + 1 > x` to true).
Integer division by -1 negates (INT_MIN // -1 is INT_MIN, where the hardware would trap and kill
the process).
"""

from __future__ import annotations

import pytest
import torch

import lazy

# vector-width dependent: every test runs for each instruction set this CPU has (conftest.ISA_PATHS)
pytestmark = pytest.mark.usefixtures("isa")

I32_MIN, I64_MIN = -2**31, -2**63


def both(values, dtype):
    """The same values as a lazy tensor and a torch tensor of `dtype` (a torch dtype)."""
    return lazy.tensor(torch.tensor(values, dtype=dtype)), torch.tensor(values, dtype=dtype)


CASES = {
    "int32 min // -1": (torch.int32, [I32_MIN, 7, -7], [-1, -1, 2], lambda a, b: a // b),
    "int32 min % -1": (torch.int32, [I32_MIN, 7, -7], [-1, -1, 2], lambda a, b: a % b),
    "int64 min // -1": (torch.int64, [I64_MIN, 5], [-1, -3], lambda a, b: a // b),
    "int64 min % -1": (torch.int64, [I64_MIN, 5], [-1, -3], lambda a, b: a % b),
    "int32 min // scalar -1": (torch.int32, [I32_MIN, 3], [1, 1], lambda a, b: a // -1),
    "uint8 0 - 1 < 5": (torch.uint8, [0, 10], [1, 1], lambda a, b: (a - b) < 5),
    "uint8 * 2 then float": (torch.uint8, [200, 100], [1, 1], lambda a, b: (a * 2).float() / 255),
    "uint8 (x * 2) // 2": (torch.uint8, [200, 3], [1, 1], lambda a, b: (a * 2) // 2),
    "uint8 (a - b) % 7": (torch.uint8, [0, 9], [1, 2], lambda a, b: (a - b) % 7),
    "int8 (a + b).amax()": (torch.int8, [100, 1], [100, 1], lambda a, b: (a + b).amax()),
    "int8 (a + b).sum()": (torch.int8, [100, 100], [100, 100], lambda a, b: (a + b).sum()),
    "int8 -(-128) > 0": (torch.int8, [-128, 5], [0, 0], lambda a, b: -a > 0),
    "int8 abs(-128)": (torch.int8, [-128, -5], [0, 0], lambda a, b: a.abs()),
    "int32 x + 1 > x": (torch.int32, [2**31 - 1, 0], [1, 1], lambda a, b: (a + b) > a),
    "int32 x * 2 // 2": (torch.int32, [2**30, -3], [2, 2], lambda a, b: (a * b) // 2),
    "int32 abs(min) < 0": (torch.int32, [I32_MIN, -4], [0, 0], lambda a, b: a.abs() < 0),
    "int32 -x": (torch.int32, [I32_MIN, 4], [0, 0], lambda a, b: -a),
    "int64 x * 4 == 0": (torch.int64, [2**62, 3], [4, 4], lambda a, b: (a * b) == 0),
    "int32 3 ** 40": (torch.int32, [3, -3], [40, 41], lambda a, b: a ** b),
    "int64 3 ** 50": (torch.int64, [3, 7], [50, 30], lambda a, b: a ** b),
}


@pytest.mark.parametrize("name", list(CASES))
def test_integer_ops_wrap_like_torch(name):
    dtype, x, y, fn = CASES[name]
    (a, ta), (b, tb) = both(x, dtype), both(y, dtype)
    got, want = fn(a, b), fn(ta, tb)
    assert got.dtype == want.dtype
    assert got.tolist() == want.tolist()


def test_truncating_division_of_int_min_by_minus_one_does_not_trap():
    # torch's own kernel traps here (SIGFPE): lazy negates, wrapping, like the floor division
    a, _ = both([I32_MIN, 9], torch.int32)
    b, _ = both([-1, -2], torch.int32)
    assert lazy.div(a, b, rounding_mode="trunc").tolist() == [I32_MIN, -4]


def test_division_by_zero_gives_zero():
    # torch raises ZeroDivisionError, which needs the data on the host: lazy's kernels give 0
    a, _ = both([7, -7, I32_MIN], torch.int32)
    z, _ = both([0, 0, 0], torch.int32)
    assert (a // z).tolist() == [0, 0, 0] and (a % z).tolist() == [0, 0, 0]
