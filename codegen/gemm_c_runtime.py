"""What running a C GEMM needs besides rendering it (codegen/gemm_c.py): the workspace library
every GEMM kernel links against, and loading a rendered GEMM by its source.

In:  a GEMM's `ExternCall` and the C source `gemm_c.render_gemm_c` gave for it.
Out: `from_source(call, src)`: `fn(out_ptr, a_ptr, b_ptr, *epilogue_ptrs)`, raising MemoryError
     when the kernel cannot allocate its packing buffers; `fn.source` is `src`.

Apart from the renderer because this needs neither sympy nor the renderers: a process whose
programs come from the program cache (lazy/program_cache.py) loads their GEMMs with this alone,
reading only the call's buffers and its epilogue's buffers and scalars, never the epilogue's
stages (whose index expressions are sympy's).
"""

from __future__ import annotations

import ctypes
import os

from codegen import compile_c
from codegen.kernel_ir import ExternCall

# One library per process (loaded RTLD_GLOBAL by `ensure_runtime`, so every GEMM .so binds its
# undefined `lazy_gemm_workspace` to it): the packing buffers of all GEMM kernels are one
# allocation per calling thread, not one per kernel (a training step has a dozen GEMMs, several
# MiB of packed panels each). Kept between calls: steady-state calls neither allocate nor fault in
# fresh pages; 2 MiB-aligned with a huge-page hint (the B panel is streamed once per micro-panel).
WORKSPACE_SRC = r"""
#include <stdlib.h>
#include <sys/mman.h>
static _Thread_local void* ws_buf;
static _Thread_local size_t ws_cap;
void* lazy_gemm_workspace(size_t bytes) {
  if (bytes > ws_cap) {
    free(ws_buf);
    ws_buf = NULL;
    ws_cap = 0;
    const size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) & ~(huge - 1);
    void* p = NULL;
    if (posix_memalign(&p, huge, bytes)) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);
    ws_buf = p;
    ws_cap = bytes;
  }
  return ws_buf;
}
"""
_runtime: list = []


def ensure_runtime() -> None:
    """Load the workspace library into the global symbol scope (once per process); call it before
    loading a generated GEMM .so by other means than `from_source`."""
    if not _runtime:
        lib = compile_c.load_library(WORKSPACE_SRC)  # wherever the cache found or put it
        _runtime.append(ctypes.CDLL(lib._name, mode=os.RTLD_GLOBAL | os.RTLD_NOW))


def from_source(call: ExternCall, src: str):
    """The GEMM kernel of `call` from its source `src` (`gemm_c.render_gemm_c`'s)."""
    ensure_runtime()
    raw = compile_c.load(src)
    epi = call.epilogue
    # out, a, b, then the epilogue's buffers but the one its store writes (`gemm_triton.epilogue_buffers`:
    # the output, counted from the buffers so its stages stay unread), then its scalars
    raw.argtypes = ([ctypes.c_void_p] * (3 + (0 if epi is None else len(epi.buffers) - 1))
                    + compile_c.scalar_argtypes(() if epi is None else epi.scalars))
    raw.restype = ctypes.c_int

    def fn(*pointers):
        if raw(*pointers):
            raise MemoryError(f"{call.name}: the C GEMM could not allocate its packing buffers")

    fn.source = src
    return fn
