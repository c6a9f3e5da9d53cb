"""What a program waits for besides its kernels: compiles, cold starts and host time per call.

    python -m perf.overhead              # every section, a table on stdout, progress on stderr
    python -m perf.overhead --json       # the same rows as JSON
    python -m perf.overhead --only scalar,batch

Each section runs lazy, torch eager and torch.compile (its default, dynamic=None) in one process
(the cold starts in fresh processes), so their ratios are comparable even on a busy machine:

- scalar: 100 calls of `(x * s + 1).exp().sum().item()` over 256 floats, `s` new every call. Counts
  lazy's C compiles (codegen.compile_c.stats) and torch.compile's graph compiles (a counting
  backend around Inductor), and the wall time of the 100 calls.
- batch: a Linear(64, 64) -> GELU -> Linear(64, 10) training step (cross-entropy, AdamW) at 20
  batch sizes (17, 18, ..., 36), each size once: compiles and wall time.
- start: the first training step of examples/train_mlp.py and examples/train_gpt.py in a new
  process, with an empty compile cache (cold) and with the cache the cold run filled (warm): the
  time from the process's start to the first loss, and the step's own time.
- host: the time per call of the scalar section's function, at steady state, and the same under
  lazy.jit: with kernels this small, this is the host's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("scalar", "batch", "start", "host")


def _progress(msg: str) -> None:
    print(f"[overhead] {msg}", file=sys.stderr, flush=True)


def _inductor_counter():
    """A torch.compile backend that is Inductor and counts the graphs it compiles."""
    from torch._inductor.compile_fx import compile_fx

    count = [0]

    def backend(gm, example_inputs):
        count[0] += 1
        return compile_fx(gm, example_inputs)

    return backend, count


def _lazy_compiles() -> int:
    from codegen import compile_c

    return compile_c.stats.misses


# -- scalar ---------------------------------------------------------------------------------------
def _scalar_fn(lib):
    def f(x, s):
        return (x * s + 1).exp().sum().item()

    return f


def section_scalar(rows: list) -> None:
    import torch

    import lazy

    scalars = [0.1 + i * 1e-3 for i in range(100)]
    data = torch.randn(256, generator=torch.Generator().manual_seed(0))
    x = lazy.tensor(data.clone())
    f = _scalar_fn(lazy)
    before, t = _lazy_compiles(), time.perf_counter()
    for s in scalars:
        f(x, s)
    rows.append(("scalar", "lazy", time.perf_counter() - t, _lazy_compiles() - before))
    f = _scalar_fn(torch)
    t = time.perf_counter()
    for s in scalars:
        f(data, s)
    rows.append(("scalar", "torch eager", time.perf_counter() - t, 0))
    torch._dynamo.reset()
    backend, count = _inductor_counter()
    g = torch.compile(_scalar_fn(torch), backend=backend)
    t = time.perf_counter()
    for s in scalars:
        g(data, s)
    rows.append(("scalar", "torch.compile", time.perf_counter() - t, count[0]))


# -- batch ----------------------------------------------------------------------------------------
BATCHES = list(range(17, 37))


def _mlp_step(lib, seed=0):
    import torch

    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))
    if lib.__name__ == "torch":
        model = ref
    else:
        model = lib.nn.Sequential(lib.nn.Linear(64, 64), lib.nn.GELU(), lib.nn.Linear(64, 10))
        model.load_state_dict(ref.state_dict())
    opt = lib.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, y):
        loss = lib.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step, model


def section_batch(rows: list) -> None:
    import torch

    import lazy

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(b, 64, generator=g), torch.randint(0, 10, (b,), generator=g)) for b in BATCHES]
    step, _ = _mlp_step(lazy)
    before, t = _lazy_compiles(), time.perf_counter()
    for x, y in data:
        step(lazy.tensor(x), lazy.tensor(y))
    rows.append(("batch", "lazy", time.perf_counter() - t, _lazy_compiles() - before))
    step, _ = _mlp_step(torch)
    t = time.perf_counter()
    for x, y in data:
        step(x, y)
    rows.append(("batch", "torch eager", time.perf_counter() - t, 0))
    torch._dynamo.reset()
    backend, count = _inductor_counter()
    step, model = _mlp_step(torch)
    fwd = torch.compile(model, backend=backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def cstep(x, y):
        loss = torch.nn.functional.cross_entropy(fwd(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    t = time.perf_counter()
    for x, y in data:
        cstep(x, y)
    rows.append(("batch", "torch.compile", time.perf_counter() - t, count[0]))


# -- start ----------------------------------------------------------------------------------------
START_SCRIPT = textwrap.dedent("""
    import time; t0 = time.perf_counter()
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("example", sys.argv[1])
    ex = importlib.util.module_from_spec(spec); sys.modules["example"] = ex; spec.loader.exec_module(ex)
    lib, compile = sys.argv[2], sys.argv[3] == "1"
    if "gpt" in sys.argv[1]:
        cfg = ex.Config()
        batches = ex.make_batches(1, 8, cfg)
        losses, secs = ex.train(lib, batches, cfg, compile=compile)
    else:
        batches = ex.make_batches(1, 64)
        losses, secs = ex.train(lib, batches, compile=compile)
    print(json.dumps({"first_loss_s": time.perf_counter() - t0, "step_s": secs[0]}))
""")


def _start_once(example: Path, lib: str, compile: bool, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", START_SCRIPT, str(example), lib, "1" if compile else "0"],
                         check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{example.name} ({lib}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_start(rows: list) -> None:
    for name in ("train_mlp.py", "train_gpt.py"):
        example = ROOT / "examples" / name
        for lib, compile in (("lazy", False), ("torch", False), ("torch", True)):
            peer = "lazy" if lib == "lazy" else ("torch.compile" if compile else "torch eager")
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "LAZY_CACHE_DIR": cache, "TORCHINDUCTOR_CACHE_DIR": cache,
                       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
                for temp in ("cold", "warm"):
                    _progress(f"{name} {peer} {temp}")
                    r = _start_once(example, lib, compile, env)
                    rows.append((f"start {name[6:-3]} {temp}", peer, r["first_loss_s"], r["step_s"]))


# -- host -----------------------------------------------------------------------------------------
def _per_call(f, args_of, n=2000) -> float:
    for i in range(20):
        f(*args_of(i))
    t = time.perf_counter()
    for i in range(n):
        f(*args_of(i))
    return (time.perf_counter() - t) / n


def section_host(rows: list) -> None:
    import torch

    import lazy

    data = torch.randn(256, generator=torch.Generator().manual_seed(0))
    x = lazy.tensor(data.clone())
    f = _scalar_fn(lazy)
    rows.append(("host per call", "lazy", _per_call(f, lambda i: (x, 0.5 + i * 1e-6)), None))
    j = lazy.jit(lambda x, s: (x * s + 1).exp().sum())
    rows.append(("host per call", "lazy.jit", _per_call(lambda x, s: j(x, s).item(), lambda i: (x, 0.5 + i * 1e-6)),
                 None))
    rows.append(("host per call", "torch eager", _per_call(_scalar_fn(torch), lambda i: (data, 0.5 + i * 1e-6)),
                 None))
    torch._dynamo.reset()
    g = torch.compile(_scalar_fn(torch))
    rows.append(("host per call", "torch.compile", _per_call(g, lambda i: (data, 0.5 + i * 1e-6)), None))


# -- report ---------------------------------------------------------------------------------------
def _table(rows: list) -> str:
    lines = [f"{'section':<24}{'peer':<16}{'seconds':>12}{'compiles / step s':>20}", "-" * 72]
    for section, peer, secs, extra in rows:
        shown = f"{secs * 1e6:9.1f} us" if section == "host per call" else f"{secs:10.3f} s"
        ex = "" if extra is None else (f"{extra:.3f}" if isinstance(extra, float) else str(extra))
        lines.append(f"{section:<24}{peer:<16}{shown:>12}{ex:>20}")
    lines.append("scalar/batch: wall time of all calls and compiles (lazy: C kernels built; torch.compile: "
                 "graphs Inductor compiled); start: process start to first loss, and the first step alone; "
                 "host: time per call of a 256-float function (host time dominates)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.overhead", description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}: expected some of {', '.join(SECTIONS)}")
    rows: list = []
    for s in wanted:
        _progress(f"section {s}")
        globals()[f"section_{s}"](rows)
    if args.json:
        print(json.dumps([dict(zip(("section", "peer", "seconds", "extra"), r)) for r in rows], indent=1))
    else:
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
