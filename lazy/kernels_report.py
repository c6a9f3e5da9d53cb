"""`lazy kernels SCRIPT.py --target sm_90`: run a script, compile every kernel it makes for a GPU.

In:  a Python script (run with `runpy` as `__main__`, with its own argv) and a target such as
     sm_90. Out: one row per distinct kernel: registers, spills, shared memory, PTX size, and
     whether it fits the target; exit code 1 when any kernel fails to compile or does not fit.

The script runs normally (C backend on a CPU-only machine); every kernel the scheduler makes is
collected through `lazy.runtime.kernel_listeners`, deduplicated by its content key, rendered as
Triton and compiled ahead of time (no GPU needed). That proves the Triton backend can build
everything a real program produces, with the static numbers that predict occupancy.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from codegen.kernel_ir import Kernel


def collect_kernels(script: str, args: list[str]) -> list[Kernel]:
    from lazy import runtime

    seen: dict[str, Kernel] = {}

    def listen(k, backend: str) -> None:
        if isinstance(k, Kernel):  # extern calls (GEMM) are library code, not generated kernels
            seen.setdefault(k.key(), k)

    runtime.kernel_listeners.append(listen)
    saved = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved
        runtime.kernel_listeners.remove(listen)
    return list(seen.values())


def report(kernels: list[Kernel], target: str) -> tuple[list[dict], bool]:
    """AOT-compile each kernel; rows for the table and whether all compiled and fit."""
    from codegen import compile_triton

    rows, ok = [], True
    try:  # one compile process for all (under TRITON_INTERPRET=1 each call starts one)
        done = compile_triton.aot_compile_many(kernels, target)
    except compile_triton.TritonCompileError:
        done = [None] * len(kernels)  # one by one, to name each failure
    for k, r in zip(kernels, done):
        try:
            r = r or compile_triton.aot_compile(k, target)
            rows.append({"kernel": k.name, "key": k.key()[:12], "registers": r.get("registers"),
                         "spills": r.get("spills"), "shared": r.get("shared"),
                         "ptx_lines": r["ptx"].count("\n") if "ptx" in r else None, "error": None})
        except compile_triton.TritonCompileError as e:
            ok = False
            rows.append({"kernel": k.name, "key": k.key()[:12], "error": str(e)})
    return rows, ok


def format_rows(rows: list[dict], target: str) -> str:
    head = f"{'kernel':<28} {'key':<12} {'regs':>5} {'spills':>6} {'shared B':>9} {'PTX lines':>9}"
    out = [f"{len(rows)} kernel(s) compiled for {target}", head, "-" * len(head)]
    for r in rows:
        if r["error"]:
            out.append(f"{r['kernel']:<28} {r['key']:<12} FAILED: {r['error']}")
        else:
            out.append(f"{r['kernel']:<28} {r['key']:<12} {r['registers']!s:>5} {r['spills']!s:>6} "
                       f"{r['shared']!s:>9} {r['ptx_lines']!s:>9}")
    return "\n".join(out)


def main(script: str, args: list[str], target: str) -> int:
    from codegen.compile_triton import parse_target

    try:
        parse_target(target)  # before the script runs, which may take long
    except ValueError as e:
        print(f"lazy kernels: --target: {e}", file=sys.stderr)
        return 2
    if not Path(script).is_file():
        print(f"lazy kernels: no such script: {script}", file=sys.stderr)
        return 2
    kernels = collect_kernels(script, args)
    if not kernels:
        print(f"lazy kernels: {script} realized no kernels (nothing to compile)")
        return 0
    rows, ok = report(kernels, target)
    print(format_rows(rows, target))
    return 0 if ok else 1
