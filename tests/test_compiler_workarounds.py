"""gcc 12 miscompiled two kinds of kernels; codegen/compile_c.py's BASE_FLAGS work around both.

- A narrowing cast keeps its rounding when the value is widened again in the same kernel.
  `(x + x).to(narrow).to(wide)` compiles to one loop that converts twice. gcc vectorized the last
  few elements of a constant trip count as one straight-line block and, there, folded a
  double -> float -> double pair into nothing: those lanes came back unrounded. Every trip count
  from 1 to 40 covers every remainder of every vector width.
- A kernel leaves the x87 unit as it found it. Without AVX, gcc moved a 64-bit value through an
  MMX register and never ran EMMS; the x87 registers stayed marked full and the next x87
  instruction in the process (glibc's fmodf, inside torch's `remainder`) returned NaN.

Both run on every instruction-set path this CPU can execute.
"""

from __future__ import annotations

import ctypes
import subprocess

import pytest
import torch

import lazy

pytestmark = pytest.mark.usefixtures("isa")

CHAINS = [  # (source, narrow, wide): the narrow cast must round or wrap what the source holds
    ("float64", "float32", "float64"),
    ("float64", "float16", "float64"),
    ("float32", "float16", "float32"),
    ("float32", "bfloat16", "float32"),
    ("int64", "int32", "int64"),
    ("int64", "int8", "int64"),
    ("int32", "int8", "int32"),
    ("int32", "uint8", "int32"),
    ("int64", "float32", "int64"),
    ("float64", "int32", "float64"),
]


def _values(dtype: torch.dtype, n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    if dtype.is_floating_point:  # a float32 rounds each of these (2^40 + 7 + ...), float16 too
        return (2.0 ** 40 + 7 + i * 1.37).to(dtype) if dtype == torch.float64 else (1.0 + 2 ** -12 + i / 3).to(dtype)
    return (i * 1_000_003 + 2 ** 31 - 5).to(dtype) if dtype == torch.int64 else (i * 1031 + 300).to(dtype)


@pytest.mark.parametrize("src,narrow,wide", CHAINS, ids=["-".join(c) for c in CHAINS])
def test_round_trip_over_every_remainder(src, narrow, wide):
    for n in range(1, 41):
        t = _values(getattr(torch, src), n)
        if narrow == "int32" and src == "float64":
            t = t / 2 ** 20  # within int32's range: torch's out-of-range float -> int is undefined
        want = (t + t).to(getattr(torch, narrow)).to(getattr(torch, wide))
        got = (lazy.tensor(t) + lazy.tensor(t)).to(getattr(lazy, narrow)).to(getattr(lazy, wide))
        torch.testing.assert_close(got.torch(), want, rtol=0, atol=0, msg=lambda m, n=n: f"{n} elements: {m}")


X87_TAGS = r"""
#include <stdint.h>
/* The x87 tag word: 0xffff when all eight registers are empty, as the ABI requires between calls. */
unsigned x87_tags(void) {
  struct { uint16_t cw, r0, sw, r1, tw, r2; uint32_t rest[4]; } env;
  __asm__ volatile("fnstenv %0\n\tfldenv %0" : "=m"(env));
  return env.tw;
}
"""


@pytest.fixture(scope="module")
def x87_tags(tmp_path_factory):
    d = tmp_path_factory.mktemp("x87")
    (d / "tags.c").write_text(X87_TAGS)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", str(d / "tags.c"), "-o", str(d / "tags.so")], check=True)
    fn = ctypes.CDLL(str(d / "tags.so")).x87_tags
    fn.restype = ctypes.c_uint
    return fn


def test_kernels_leave_the_x87_registers_empty(x87_tags):
    assert x87_tags() == 0xFFFF
    data = torch.randn(6, 9, generator=torch.Generator().manual_seed(2)) * 3
    got = lazy.nn.Softmin(dim=1)(lazy.tensor(data).T)  # the kernel that left them full
    torch.testing.assert_close(got.torch(), torch.nn.Softmin(dim=1)(data.T), rtol=2e-6, atol=1e-6)
    assert x87_tags() == 0xFFFF
    a, b = torch.rand(12) * 4 - 2, torch.rand(12) + 0.5
    assert not a.remainder(b).isnan().any()
