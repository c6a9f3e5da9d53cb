"""Triton compile cache: Kernel IR -> generated module on disk -> launcher; and ahead-of-time compiles.

In:  a `Kernel` (and optionally a `TritonConfig`). Out: `load()` gives `fn(*torch_tensors)` that
     launches the kernel (buffers in `Kernel.buffers` order); `aot_compile()` gives the PTX and
     the static resource numbers of a compile for an NVIDIA target, without needing a GPU.

Invariants
- `@triton.jit` needs its source in a real file: the rendered module is written to
  `$LAZY_CACHE_DIR/triton/<kernel key>-<source hash>.py` (default `~/.cache/lazy`) and imported
  from there. The kernel key alone would not do: one kernel renders differently per config and
  renderer version, and a file name must never be reused for different text.
- Writes are atomic (temp file in the same directory + `os.replace`): parallel processes
  never import half a file, and an existing complete file is never rewritten. Beside a cache
  that cannot be written, modules it lacks go to this process's private directory (see
  codegen/compile_c.py's `write_dir`).
- `TRITON_INTERPRET=1` is read when a module is imported (Triton reads it in `@triton.jit`), so
  the in-memory cache is keyed by that setting too; set it before calling `load`.
- A codegen bug (source that is not valid Python/Triton) raises `TritonCompileError` naming the
  generated file and Triton's message, at import, at the first launch, or in `aot_compile`.
- Triton's own library functions (`tl.sum`, `tl.max`, `tl.zeros`, `tl.cdiv`, ...) are `@triton.jit`
  functions decorated when triton is first imported: if that happened before TRITON_INTERPRET=1
  was set (torch imports triton on its own), they stay compiled-mode and interpreted kernels
  cannot call them. Generated code uses builtins only (render_triton's `_INTERPRET` helpers);
  the error for a kernel that does not says so.
- A kernel with size symbols (`Kernel.sizes`) has one module for all sizes: `load`'s launcher takes
  the size values after the scalars, and `aot_compile` compiles it once with `i64` size parameters
  (each of its `VARIANTS` when it has a looped and a one-block form; codegen/render_triton.py).
- `aot_compile` needs `@triton.jit` functions, so under TRITON_INTERPRET=1 it compiles in a
  subprocess with the variable unset (Triton cannot do both in one process: with
  TRITON_INTERPRET=1, `@triton.jit` makes interpreted functions, which cannot be compiled). Triton's own compile cache stays in `$TRITON_CACHE_DIR`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from codegen.compile_c import atomic_write
from codegen.kernel_ir import Kernel
from codegen.render_triton import TritonConfig, choose_config, render_triton

H100_SHARED_LIMIT = 232448  # bytes per block with the opt-in maximum (sm_90)
SHARED_LIMITS = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448}


class TritonCompileError(RuntimeError):
    """Generated Triton source that does not compile (a codegen bug) or does not fit the target."""

    def __init__(self, path: Path | str, message: str):
        super().__init__(f"Triton kernel in {path} failed: {message}")
        self.path, self.message = Path(path), message


@dataclass
class CacheStats:
    hits: int = 0  # modules found on disk or in memory
    misses: int = 0  # modules written
    import_seconds: float = 0.0


stats = CacheStats()
_lock = threading.Lock()
# Imported modules kept for reuse, the one used last at the end. A launcher holds its own module,
# so this bounds only modules nothing launches now, each with its JIT function and the GPU binaries
# compiled from it; one imported again is compiled again from Triton's disk cache.
MAX_MODULES = 256
_modules: OrderedDict[tuple[str, bool], object] = OrderedDict()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cache_dir() -> Path:
    from codegen.compile_c import cache_subdir

    return cache_subdir("triton")


def cached_source(name: str, source: str) -> Path:
    """The cache file `name` holding `source`: found on disk, else written (the module names hash
    their source, so a file by that name with other text is a broken write, replaced)."""
    from codegen import compile_c

    for d in (cache_dir(), compile_c.private_subdir("triton")):
        try:
            if d is not None and (d / name).read_text() == source:
                stats.hits += 1
                return d / name
        except OSError:
            pass
    path = compile_c.write_dir("triton") / name
    if path.is_dir():
        compile_c._discard(path)
    stats.misses += 1
    atomic_write(path, source.encode())
    return path


def write_source(k: Kernel, config: TritonConfig | None = None) -> Path:
    """Render `k` and make sure its module is on disk; returns the path."""
    source = render_triton(k, config or choose_config(k))
    return cached_source(f"{k.key()}-{hashlib.sha256(source.encode()).hexdigest()[:12]}.py", source)


_STDLIB_CALL = "Cannot call @triton.jit'd outside of the scope of a kernel"
_STDLIB_HINT = ("\n(under the interpreter: the kernel called one of Triton's own @triton.jit library functions, "
                "e.g. tl.sum, tl.max, tl.zeros, tl.cdiv, in a process that imported triton before "
                "TRITON_INTERPRET=1 was set (torch.func / torch._dynamo import it), which leaves them "
                "compiled-mode; generated code must call builtins instead: tl.reduce with "
                "tl.standard's combine functions, tl.full)")


def _short(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    if _STDLIB_CALL in msg and interpreting():
        msg += _STDLIB_HINT
    return msg


def import_module(path: Path):
    """Import a generated module (fresh name per file and interpreter mode)."""
    key = (str(path), interpreting())
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            _modules.move_to_end(key)
            return mod
        t0 = time.perf_counter()
        name = f"lazy_triton_{path.stem.replace('-', '_')}_{'interp' if key[1] else 'jit'}"
        try:
            compile(path.read_text(), str(path), "exec")  # syntax errors with the file's line numbers
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        except Exception as e:
            raise TritonCompileError(path, _short(e)) from e
        stats.import_seconds += time.perf_counter() - t0
        _modules[key] = mod
        while len(_modules) > MAX_MODULES:
            _modules.popitem(last=False)
        return mod


def _launch_errors() -> tuple[type, ...]:
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import InterpreterError

    return (CompilationError, InterpreterError)


def load(k: Kernel, config: TritonConfig | None = None):
    """A launcher `fn(*tensors, *scalars, *sizes)` for `k`: buffers in `k.buffers` order, torch tensors
    on the device (CPU tensors under TRITON_INTERPRET=1), then the values of its scalar arguments,
    then those of its size symbols (`k.sizes`). Errors from Triton name the generated source file."""
    path = write_source(k, config)
    mod = import_module(path)
    launch = mod.launch
    errors = _launch_errors()
    interp = interpreting()

    def fn(*tensors):
        if len(tensors) != len(k.buffers) + len(k.scalars) + len(k.sizes):
            raise TypeError(f"{k.name}: expected {len(k.buffers)} buffers, {len(k.scalars)} scalars and "
                            f"{len(k.sizes)} sizes, got {len(tensors)} arguments")
        try:
            if interp:
                import numpy as np

                with np.errstate(all="ignore"):  # masked lanes and IEEE results (1/0, 0/0) are expected
                    return launch(*tensors)
            return launch(*tensors)
        except errors as e:
            raise TritonCompileError(path, _short(e)) from e

    fn.path = path  # the generated module (LAZY_DEBUG=3 can print it)
    fn.kernel = k
    return fn


# -- ahead-of-time compile --------------------------------------------------------------------

# Compute capabilities the bundled toolchain compiles for (Triton 3.9, ptxas 12.9): below 7.5
# Triton's cubins defeat cuobjdump, and ptxas has no sm_101a.
TARGETS = (75, 80, 86, 87, 89, 90, 100, 103, 120, 121)


def parse_target(target: str):
    """"sm_90" / "sm_90a" / "cuda:90" -> (backend, capability); ValueError naming the valid ones."""
    m = re.fullmatch(r"(?:sm_|cuda:)?(\d+)a?", str(target).strip())
    valid = ", ".join(f"sm_{c}" for c in TARGETS)
    if not m:
        raise ValueError(f"target {target!r}: expected an NVIDIA target such as sm_90 (one of {valid})")
    if int(m.group(1)) not in TARGETS:
        raise ValueError(f"target {target!r}: not a target this Triton compiles for; expected one of {valid}")
    return "cuda", int(m.group(1))


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack, local and shared memory (cuobjdump), spill instructions (SASS STL/LDL)."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "k.cubin"
        f.write_bytes(cubin)
        res = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(f)], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", str(f)], capture_output=True, text=True,
                              check=True).stdout
    out = {}
    for key in ("REG", "STACK", "SHARED", "LOCAL"):
        m = re.search(rf"\b{key}:(\d+)", res)
        out[key.lower()] = int(m.group(1)) if m else 0
    out["spill_stores"] = len(re.findall(r"\bSTL(?:\.\w+)*\s", sass))
    out["spill_loads"] = len(re.findall(r"\bLDL(?:\.\w+)*\s", sass))
    out["registers"] = out.pop("reg")
    out["static_shared"] = out.pop("shared")
    out["resource_usage"] = res.strip()
    return out


def _compile_variant(mod, constexprs: dict, backend: str, cap: int):
    import triton
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=mod.KERNEL, signature=dict(mod.SIGNATURE), constexprs=dict(constexprs))
    return triton.compile(src, target=GPUTarget(backend, cap, 32),
                          options={"num_warps": mod.NUM_WARPS, "num_stages": mod.NUM_STAGES})


def aot_compile_file(path: Path | str, target: str = "sm_90") -> dict:
    """Compile a generated module's kernel for `target` in this process (TRITON_INTERPRET unset).

    A kernel with size arguments compiles once for all sizes (they are plain i64 parameters,
    without Triton's divisibility specialization, as the launcher's `do_not_specialize` runs it);
    one with `VARIANTS` (a symbolic row that is one block at the hints and loops when longer)
    compiles each: the numbers reported are those of `CONSTEXPRS` (the variant at the hints),
    with `variants` listing each one's, and the shared memory check covers all of them."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences a Triton 3.9 warning
    if interpreting():
        raise RuntimeError("aot_compile_file needs TRITON_INTERPRET unset; use aot_compile()")
    path = Path(path)
    backend, cap = parse_target(target)
    mod = import_module(path)
    t0 = time.perf_counter()
    variants = [dict(v) for v in getattr(mod, "VARIANTS", [mod.CONSTEXPRS])]
    compiled = []
    try:
        for v in variants:
            compiled.append(_compile_variant(mod, v, backend, cap))
    except Exception as e:
        raise TritonCompileError(path, _short(e)) from e
    seconds = time.perf_counter() - t0
    ck = compiled[0]
    shared = max(int(c.metadata.shared) for c in compiled)
    sizes = tuple(getattr(mod, "SIZES", ()))
    grid = mod.GRID if mod.GRID is not None else mod.grid(*(mod.HINTS[d] for d in sizes))
    out = {
        "path": str(path),
        "target": f"sm_{cap}",
        "kernel": ck.metadata.name,
        "num_warps": mod.NUM_WARPS,
        "num_stages": mod.NUM_STAGES,
        "constexprs": dict(mod.CONSTEXPRS),
        "grid": list(grid),  # at the hints for a kernel with sizes
        "sizes": list(sizes),
        "shared": shared,
        "shared_limit": SHARED_LIMITS.get(cap, H100_SHARED_LIMIT),
        "ptx": ck.asm["ptx"],
        "cubin_bytes": len(ck.asm["cubin"]),
        "compile_seconds": seconds,
    }
    out.update(resource_usage(ck.asm["cubin"]))
    out["spills"] = out["spill_stores"] + out["spill_loads"]
    if len(compiled) > 1:
        out["variants"] = []
        for v, c in zip(variants, compiled):
            use = resource_usage(c.asm["cubin"])
            out["variants"].append({"constexprs": v, "registers": use["registers"], "local": use["local"],
                                    "spills": use["spill_stores"] + use["spill_loads"],
                                    "shared": int(c.metadata.shared), "cubin_bytes": len(c.asm["cubin"])})
    if shared > out["shared_limit"]:
        raise TritonCompileError(path, f"needs {shared} bytes of shared memory; sm_{cap} allows "
                                       f"{out['shared_limit']} per block")
    return out


def aot_compile(k: Kernel, target: str = "sm_90", config: TritonConfig | None = None) -> dict:
    """Compile `k` ahead of time for `target` (no GPU needed). Returns a dict with `ptx`,
    `cubin_bytes`, `registers`, `spills` (`spill_stores` + `spill_loads`, SASS STL/LDL),
    `local`, `stack`, `shared` (bytes, checked against `shared_limit`), `num_warps`, `path`.
    Raises TritonCompileError (naming the generated file) when the source does not compile."""
    return aot_compile_many([k], target, [config])[0]


def aot_compile_many(kernels: list[Kernel], target: str = "sm_90",
                     configs: list[TritonConfig | None] | None = None) -> list[dict]:
    """`aot_compile` for several kernels; under TRITON_INTERPRET=1 they share one subprocess."""
    configs = configs or [None] * len(kernels)
    paths = [write_source(k, c) for k, c in zip(kernels, configs)]
    if not interpreting():
        return [aot_compile_file(p, target) for p in paths]
    return aot_in_subprocess("codegen.compile_triton", paths, target)


def aot_in_subprocess(module: str, paths: list[Path], target: str) -> list[dict]:
    """Run `python -m <module> aot <target> <paths...>` with TRITON_INTERPRET unset (Triton cannot
    interpret and compile in one process) and return its per-file results."""
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", module, "aot", target, *map(str, paths)],
                          capture_output=True, text=True, env=env, cwd=root, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        results = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        results = None
    if not isinstance(results, list) or len(results) != len(paths):
        raise TritonCompileError(paths[0], f"AOT compile subprocess failed (exit {proc.returncode}):\n"
                                           f"{proc.stderr.strip()[-4000:]}")
    for p, r in zip(paths, results):
        if "error" in r:
            raise TritonCompileError(p, r["error"])
    return results


def aot_cli(argv: list[str], compile_file, module: str) -> int:
    """`python -m <module> aot <target> <generated.py>...`: the subprocess side of aot_in_subprocess."""
    if len(argv) >= 3 and argv[0] == "aot":
        out = []
        for path in argv[2:]:
            try:
                out.append(compile_file(path, argv[1]))
            except TritonCompileError as e:
                out.append({"error": e.message})
        print(json.dumps(out))
        return 0
    print(f"usage: python -m {module} aot <target> <generated.py>...", file=sys.stderr)
    return 2


def _main(argv: list[str]) -> int:
    return aot_cli(argv, aot_compile_file, "codegen.compile_triton")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
