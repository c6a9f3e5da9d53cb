"""The program cache on disk (lazy/program_cache.py): a process that meets a graph structure a process
before it built loads the program (schedule, kernel sources) instead of scheduling and rendering it;
anything that changes what a build gives misses; a record that cannot be used is a miss, rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import lazy
from codegen import compile_c, tune, tunedb
from lazy import program_cache, runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    """A cache of the test's own with the program cache on, and no program in memory (as in a new process)."""
    monkeypatch.setenv("LAZY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAZY_PROGRAM_CACHE", "1")
    monkeypatch.setenv("LAZY_TUNE_DB", str(tmp_path / "tuning.sqlite"))  # (a test stores a config)
    tune.forget()
    monkeypatch.delenv("LAZY_CFLAGS_EXTRA", raising=False)
    monkeypatch.delenv("LAZY_BACKEND", raising=False)
    compile_c._loaded.clear()
    saved = [(table, dict(table)) for table in (runtime._programs, runtime._families, runtime._bound)]
    new_process()
    yield tmp_path / "cache"
    tune.forget()
    for table, old in saved:
        table.clear()
        table.update(old)


def new_process() -> None:
    """Forget the programs this process built, as a new process starts."""
    for table in (runtime._programs, runtime._families, runtime._bound):
        table.clear()


class Counts:
    """What one realize did: schedules, C compiles, program cache hits and misses."""

    def __init__(self, monkeypatch):
        self.schedules = 0
        real = runtime._schedule

        def counted():
            self.schedules += 1
            return real()
        monkeypatch.setattr(runtime, "_schedule", counted)
        self.start = (compile_c.stats.misses, dict(program_cache.stats))

    def __call__(self, what: str) -> int:
        if what == "compiles":
            return compile_c.stats.misses - self.start[0]
        return program_cache.stats[what] - self.start[1][what]


def step(data: torch.Tensor, dtype=lazy.float32) -> np.ndarray:
    x = lazy.tensor(data).to(dtype)
    return (x.softmax(-1) * 3 + x.sum(0)).exp().sum(-1).float().numpy()


def reference(data: torch.Tensor, dtype=torch.float32) -> np.ndarray:
    x = data.to(dtype)
    return (x.softmax(-1) * 3 + x.sum(0)).exp().sum(-1).float().numpy()


DATA = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))


def records(cache: Path) -> list[Path]:
    return sorted((cache / "programs").glob("*.pkl"))


def test_a_second_process_schedules_and_compiles_nothing(tmp_path):
    """...nor imports sympy: the kernels' stages (their index expressions) stay pickled while they
    only launch (codegen/kernel_ir.py `deferred_stages`)."""
    script = textwrap.dedent("""
        import json
        import sys
        import torch
        import lazy
        from codegen import compile_c
        from codegen.kernel_ir import ExternCall
        from lazy import nn, optim, program_cache, runtime
        calls = [0]
        real = runtime._schedule
        def counted():
            calls[0] += 1
            return real()
        runtime._schedule = counted
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))
        opt = optim.AdamW(model.parameters(), lr=1e-2)
        x, y = lazy.randn(4, 8), lazy.tensor([0, 2, 1, 1])
        losses = []
        for _ in range(2):
            loss = lazy.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        print(json.dumps({"losses": losses, "schedules": calls[0], "compiles": compile_c.stats.misses,
                          "hits": program_cache.stats["hits"], "sympy": "sympy" in sys.modules,
                          "gemms": sum(ln.backend == "c" and isinstance(ln.kernel, ExternCall)
                                       for p in runtime._programs.values() for ln in p.launches)}))
    """)
    env = dict(os.environ, LAZY_CACHE_DIR=str(tmp_path / "shared"), PYTHONPATH=str(ROOT))
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["schedules"] >= 1 and first["compiles"] >= 1 and first["hits"] == 0
    assert second["schedules"] == 0 and second["compiles"] == 0 and second["hits"] == first["schedules"]
    assert second["losses"] == first["losses"]
    assert first["sympy"] and not second["sympy"]
    assert second["gemms"] >= 1  # C GEMMs with their epilogues loaded without sympy too


def test_a_stored_kernel_reads_its_stages_when_first_used(monkeypatch):
    import pickle

    kernel = _a_kernel_of_step(monkeypatch)
    loaded = pickle.loads(program_cache.dumps(kernel))
    assert "_stages" in vars(loaded) and "stores" not in vars(loaded)
    assert (loaded.name, loaded.buffers, loaded.loops, loaded.meta) == (kernel.name, kernel.buffers, kernel.loops,
                                                                        kernel.meta)
    assert "_stages" in vars(loaded)  # its header read, its stages still pickled
    assert loaded.stores == kernel.stores and loaded.reduces == kernel.reduces
    assert "_stages" not in vars(loaded)
    assert loaded == kernel and hash(loaded) == hash(kernel) and loaded.key() == kernel.key()


def test_the_same_structure_hits_and_gives_the_same_values(cache, monkeypatch):
    want = step(DATA)
    assert len(records(cache)) == 1
    new_process()
    n = Counts(monkeypatch)
    got = step(DATA + 1)  # other values, the same structure
    assert (n.schedules, n("compiles"), n("hits"), n("misses")) == (0, 0, 1, 0)
    np.testing.assert_allclose(got, reference(DATA + 1), rtol=1e-5)
    new_process()
    np.testing.assert_array_equal(step(DATA), want)


@pytest.mark.parametrize("change", ["graph", "dtype", "sizes", "cflags", "tuned config"])
def test_what_changes_the_build_misses(cache, monkeypatch, change):
    step(DATA)
    new_process()
    n = Counts(monkeypatch)
    data, dtype = DATA, lazy.float32
    if change == "graph":
        x = lazy.tensor(DATA)
        got = (x.softmax(-1) * 3 - x.sum(0)).exp().sum(-1).numpy()
        np.testing.assert_allclose(got, (DATA.softmax(-1) * 3 - DATA.sum(0)).exp().sum(-1).numpy(), rtol=1e-5)
    else:
        if change == "dtype":
            dtype = lazy.float64
        elif change == "sizes":
            data = DATA[:4]
        elif change == "cflags":
            monkeypatch.setenv("LAZY_CFLAGS_EXTRA", "-mno-avx512f")
        else:  # a tuned config stored for one of the program's kernels
            kernel = _a_kernel_of_step(monkeypatch)
            assert tunedb.put([{"kernel": kernel.key(), "device": tune.device_name("c"),
                                "version": tune.backend_version("c"), "backend": "c", "name": kernel.name,
                                "config": {"threads": 1}, "default_config": {}, "default_s": 2e-3,
                                "tuned_s": 1e-3, "tried": 2, "rejected": 0, "tuning_s": 0.1}])
            tune.forget()
            new_process()
            n = Counts(monkeypatch)
        got = step(data, dtype)
        np.testing.assert_allclose(got, reference(data, torch.float64 if dtype is lazy.float64 else torch.float32),
                                   rtol=1e-5)
    assert n("hits") == 0 and n("misses") == 1 and n.schedules == 1
    assert len(records(cache)) == 2


def _a_kernel_of_step(monkeypatch):
    """A kernel of `step(DATA)`'s program (building it here, in memory only)."""
    monkeypatch.setenv("LAZY_PROGRAM_CACHE", "0")
    step(DATA)
    monkeypatch.setenv("LAZY_PROGRAM_CACHE", "1")
    prog = next(iter(runtime._programs.values()))
    return next(ln.kernel for ln in prog.launches if ln.backend == "c")


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty"])
def test_a_damaged_record_is_a_miss_and_is_rewritten(cache, monkeypatch, damage):
    want = step(DATA)
    (rec,) = records(cache)
    data = rec.read_bytes()
    rec.write_bytes({"corrupt": b"\x80\x05not a pickle" + data[20:], "truncated": data[: len(data) // 2],
                     "empty": b""}[damage])
    new_process()
    n = Counts(monkeypatch)
    np.testing.assert_array_equal(step(DATA), want)
    assert (n("hits"), n("misses"), n("unreadable"), n.schedules) == (0, 1, 1, 1)
    assert rec.read_bytes() != b"" and len(rec.read_bytes()) > len(data) // 2
    new_process()
    np.testing.assert_array_equal(step(DATA), want)
    assert n("hits") == 1 and n.schedules == 1


def test_a_read_only_cache_is_read_and_not_written(cache, monkeypatch):
    want = step(DATA)
    before = records(cache)
    real = compile_c.writable
    monkeypatch.setattr(compile_c, "writable", lambda d: False if d.name in ("programs", "c") else real(d))
    new_process()
    n = Counts(monkeypatch)
    np.testing.assert_array_equal(step(DATA), want)
    assert n("hits") == 1 and n.schedules == 0
    with pytest.warns(compile_c.CacheWarning):
        got = step(DATA[:3])  # a program the cache lacks: built (its kernels compiled privately), not stored
    np.testing.assert_allclose(got, reference(DATA[:3]), rtol=1e-5)
    assert n("misses") == 1 and records(cache) == before


def test_a_key_holding_a_value_of_no_stable_repr_is_not_persisted():
    assert program_cache.stable((1, "a", 2.5, None, lazy.float32, (True, b"x")))
    assert not program_cache.stable((1, (object(),)))
    assert not program_cache.stable(frozenset({"a", "b"}))  # its order follows per-process string hashes
    assert program_cache.digest(((object(),), ()), "c") is None


def test_programs_for_all_sizes_round_trip(cache, monkeypatch):
    def run(n: int) -> np.ndarray:
        x = lazy.tensor(torch.arange(n * 4, dtype=torch.float32).reshape(n, 4) / 7)
        return (x.softmax(-1) * 2).sum(-1).numpy()

    def want(n: int) -> np.ndarray:
        x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4) / 7
        return (x.softmax(-1) * 2).sum(-1).numpy()

    for size in (5, 6):  # the second size builds the program for all sizes
        np.testing.assert_allclose(run(size), want(size), rtol=1e-6)
    assert any(p.sizes for p in runtime._programs.values())
    new_process()
    n = Counts(monkeypatch)
    for size in (5, 6, 9):
        np.testing.assert_allclose(run(size), want(size), rtol=1e-6)
    assert (n.schedules, n("compiles"), n("hits"), n("misses")) == (0, 0, 2, 0)
    assert any(p.sizes and p.from_disk for p in runtime._programs.values())


def test_the_debug_line_says_the_program_came_from_the_disk(cache, capsys):
    step(DATA)
    new_process()
    capsys.readouterr()
    with lazy.debug(1):
        step(DATA)
    err = capsys.readouterr().err
    assert "lazy: new program (" in err and "from the program cache on disk" in err


def test_a_record_whose_kernels_left_the_disk_compiles_them_again(cache, monkeypatch):
    want = step(DATA)
    for p in (cache / "c").iterdir():
        p.unlink()
    compile_c._loaded.clear()
    new_process()
    n = Counts(monkeypatch)
    np.testing.assert_array_equal(step(DATA), want)
    assert n("hits") == 1 and n.schedules == 0 and n("compiles") >= 1


def test_the_code_version_covers_the_c_prelude(tmp_path, monkeypatch):
    # a record holds its kernels' full C sources: a changed codegen/prelude.h must miss
    from lazy import program_cache

    for pkg in program_cache.SOURCES:
        (tmp_path / pkg).mkdir(parents=True)
        (tmp_path / pkg / "m.py").write_text("x = 1\n")
    (tmp_path / "codegen" / "prelude.h").write_text("/* one */\n")
    monkeypatch.setattr(program_cache, "ROOT", tmp_path)
    program_cache.code_version.cache_clear()
    try:
        first = program_cache.code_version()
        (tmp_path / "codegen" / "prelude.h").write_text("/* two */\n")
        program_cache.code_version.cache_clear()
        assert program_cache.code_version() != first
    finally:
        program_cache.code_version.cache_clear()
