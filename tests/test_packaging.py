"""The built distribution carries what the code reads at run time besides Python modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_c_prelude(tmp_path):
    # codegen/render_c.py reads codegen/prelude.h next to itself
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("lazy_triton-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "codegen/prelude.h" in names, sorted(n for n in names if n.startswith("codegen/"))
