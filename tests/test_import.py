"""What `import lazy` does to the process besides defining names: the garbage collector is paused
while it imports and what it imported is frozen (lazy/__init__.py says why), unless LAZY_GC_FREEZE=0;
and what it leaves unimported: sympy and the modules that need it load when a program is first
scheduled (their import was most of `import lazy`'s time; the speed itself is shown by
`python -m perf.overhead --only start`, not asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# sympy, and the modules that import it or only serve a build: not loaded by `import lazy`
DEFERRED = ("sympy", "mpmath", "scheduler", "lazy.symbolic", "codegen.index_ops", "codegen.tiling",
            "codegen.render_c", "codegen.render_triton", "codegen.gemm_c", "codegen.gemm_triton",
            "codegen.compile_triton", "codegen.legalize", "triton", "scipy")
LOADED = f"sorted(m for m in sys.modules if (m + '.').startswith({tuple(d + '.' for d in DEFERRED)!r}))"


def _run(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "LAZY_GC_FREEZE"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**base, "PYTHONPATH": str(ROOT), **env})


def test_the_import_is_frozen_and_the_collector_left_running():
    out = _run("import gc, lazy; print(gc.get_freeze_count(), gc.isenabled(), (lazy.ones(3) * 2).tolist())")
    assert out.returncode == 0, out.stderr
    frozen, enabled, value = out.stdout.split(maxsplit=2)
    assert int(frozen) > 10_000  # torch's objects
    assert enabled == "True"
    assert value.strip() == "[2.0, 2.0, 2.0]"


def test_a_collector_the_user_disabled_stays_disabled():
    out = _run("import gc; gc.disable(); import lazy; print(gc.isenabled())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_lazy_gc_freeze_0_leaves_the_collector_alone():
    out = _run("import gc, lazy; print(gc.get_freeze_count(), gc.isenabled())", LAZY_GC_FREEZE="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True"]


@pytest.mark.parametrize("value", ["yes", "", "2", "1; rm"])
def test_a_bad_lazy_gc_freeze_is_refused_by_name(value):
    out = _run("import lazy", LAZY_GC_FREEZE=value)
    assert out.returncode != 0
    assert "LAZY_GC_FREEZE" in out.stderr and "expected 0 or 1" in out.stderr


def test_import_lazy_loads_neither_sympy_nor_the_scheduler(tmp_path):
    code = f"import sys, lazy; print({LOADED}); print((lazy.ones(3) * 2).tolist()); print({LOADED})"
    out = _run(code, LAZY_CACHE_DIR=str(tmp_path))
    assert out.returncode == 0, out.stderr
    at_import, value, after_realize = out.stdout.strip().splitlines()
    assert at_import == "[]"
    assert value == "[2.0, 2.0, 2.0]"
    assert "sympy" in after_realize and "scheduler.schedule" in after_realize  # the realize scheduled
