"""The layers import one way: lazy -> scheduler -> codegen, and the scheduler reads only lazy's graph IR.

Checked on the source (every import statement, wherever it sits: module level or inside a function)
and by importing the layers in each order in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what each layer may import from the project
ALLOWED = {
    "codegen": {"codegen"},
    "scheduler": {"scheduler", "codegen", "lazy.graph", "lazy.dtypes"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.append((n.lineno, n.module))
    return out


def _project(name: str) -> bool:
    return name.split(".")[0] in ("lazy", "scheduler", "codegen", "perf")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    allowed = ALLOWED[layer]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for p in sorted((ROOT / layer).rglob("*.py")) for line, name in _imports(p)
           if _project(name) and not any(name == a or name.startswith(a + ".") for a in allowed)]
    assert not bad, "\n".join(bad)


ORDERS = [
    "import lazy",
    "import scheduler; import lazy",
    "import scheduler.schedule; import lazy",
    "import codegen; import scheduler; import lazy",
    "from scheduler import schedule; import lazy",
    "import lazy.symbolic",
    "import codegen.index_ops; import lazy",
]


@pytest.mark.parametrize("first", ORDERS)
def test_the_layers_import_in_any_order(first):
    code = f"{first}\nprint((lazy.ones(2) + 1).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LAZY_BACKEND": "c"})
    assert out.returncode == 0 and out.stdout.strip() == "[2.0, 2.0]", out.stderr[-2000:]


def test_codegen_loads_without_lazy_or_the_scheduler():
    code = "import sys, codegen.kernel_ir, codegen.render_c, codegen.compile_c, codegen.render_triton\n" \
           "print(sorted({m.split('.')[0] for m in sys.modules} & {'lazy', 'scheduler', 'torch'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
