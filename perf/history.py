"""Benchmark history: one JSON record per `lazy bench` run, appended to a JSON-lines file.

In:  run records from `perf.run.run_bench`. Out: the file, and the records read back (oldest first).

A record (schema 1) has:
- `schema`, `date` (UTC, ISO 8601), `git` {commit, dirty, branch}, `machine` {load_avg_1min, hostname,
  platform, cpu, cpu_count, cpus_usable, torch_threads, memory_gb, gpu, device}, `versions` {python, lazy-triton,
  numpy, torch, triton, tinygrad, plotly, cc} (None: not installed),
- `size`, `numel`, `device`, `backend`, `settings` {repeat, warmup, budget_s, cold_compile},
- `peers` (what ran, lazy first), `peers_unavailable` {peer: why},
- `bandwidth` {copy_gbps, triad_gbps (the best of start and end), copy_gbps_start/_end,
  triad_gbps_start/_end, array_bytes, method}, `matmul` {gflops (best of start
  and end), gflops_start/_end, shape, method},
  `torch_compile_startup_s`, `wall_s`,
- `results`: one per workload: `workload`, `group`, `description`, `status` (ok | missing | failed |
  mismatch), `missing`/`error` (why), `shapes`, `bytes`, `flops` (None: bandwidth-bound), `metric`
  (gbps | gflops), `roof_gbps` (CPU bandwidth rows: the C triad over the same bytes timed in the
  same rounds; the roof of `roof_fraction`), `kernel_roof_fraction` (lazy's kernels alone against it),
  `compute_floor_s` (lazy's kernels on a cache-resident copy, scaled to `bytes`; large rows only),
  `attainable_s` (max of the bytes at the roof and the floor), `kernels`, `expected_kernels`,
  `kernel_names`, `kernel_detail` [{name, seconds, bytes, gbps, roof_fraction}] and `overhead_us`
  (from profiled lazy calls in the same rounds), `max_abs_err`, `rel_err`, `compile` {lazy_cold_s,
  lazy_warm_s, lazy_compiler_s, torch.compile_cold_s, torch.compile_warm_s}, `wall_s`, and `peers`
  {peer: {status (ok | n/a | missing | failed), median_s, min_s, max_s, q1_s, q3_s, samples, gbps,
  gflops, roof_fraction, attainable_fraction (lazy), rel_err, kernels (torch.compile), error}}; the peers
  include `lazy.jit` (the lazy function under lazy.jit; its `jit_status` is 'replaying', or
  'failed: why' when it could not replay and ran as plain Python).

Invariants
- A line is written whole with one `write` under an exclusive lock: concurrent runs never
  interleave half lines. A reader skips (and reports) lines it cannot parse instead of failing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SCHEMA_VERSION = 1
REQUIRED = ("schema", "date", "git", "machine", "versions", "size", "device", "peers", "bandwidth", "matmul",
            "results")
RESULT_REQUIRED = ("workload", "status", "peers")


def default_dir() -> Path:
    """`$LAZY_BENCH_DIR`, else `$XDG_DATA_HOME/lazy/bench` (default `~/.local/share/lazy/bench`)."""
    if os.environ.get("LAZY_BENCH_DIR"):
        return Path(os.environ["LAZY_BENCH_DIR"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "lazy" / "bench"


def default_history() -> Path:
    return default_dir() / "history.jsonl"


# The type of every field a reader uses (the dashboard, `lazy bench`'s table): a record that breaks
# one is skipped with a message, so a hand-edited or corrupt line never crashes a report. A dict
# spec checks the listed keys, and every other key against "*" when given; the keys under "!" must
# be there. A one-item list spec is a list of that item.
NUM, ONUM, INT, OINT, STR, OSTR, OBOOL, SCALAR = ("number", "number or null", "integer", "integer or null",
                                                  "string", "string or null", "boolean or null", "scalar")
_PEER = {"status": STR, "error": OSTR, "reason": OSTR, "jit_status": OSTR, "*": ONUM}
_RESULT = {"workload": STR, "group": OSTR, "description": OSTR, "status": STR, "missing": OSTR, "error": OSTR,
           "backend": OSTR, "metric": OSTR, "shapes": [[INT]], "kernel_names": [STR],
           "kernel_detail": [{"name": STR, "*": NUM}], "compile": {"*": NUM}, "peers": {"*": _PEER}, "*": ONUM}
SPEC = {"schema": INT, "date": STR, "git": {"commit": OSTR, "dirty": OBOOL, "branch": OSTR},
        "machine": {"*": SCALAR}, "versions": {"*": OSTR}, "size": STR, "numel": OINT, "device": STR,
        "backend": OSTR, "settings": {"*": SCALAR}, "peers": [STR], "peers_unavailable": {"*": OSTR},
        "bandwidth": {"method": OSTR, "copy_gbps": NUM, "triad_gbps": NUM, "*": ONUM, "!": ("copy_gbps", "triad_gbps")},
        "matmul": {"method": OSTR, "shape": [INT], "gflops": NUM, "*": ONUM, "!": ("gflops",)},
        "torch_compile_startup_s": ONUM, "wall_s": ONUM, "results": [_RESULT]}


def _is(value, kind: str) -> bool:
    if value is None:
        return kind.endswith("or null") or kind == SCALAR
    if isinstance(value, bool):
        return kind in (OBOOL, SCALAR)
    if isinstance(value, int):
        return kind in (NUM, ONUM, INT, OINT, SCALAR)
    if isinstance(value, float):
        return kind in (NUM, ONUM, SCALAR) and math.isfinite(value)
    if isinstance(value, str):
        return kind in (STR, OSTR, SCALAR)
    return False


def _check(value, spec, where: str, out: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            out.append(f"{where or 'the record'} is not an object")
            return
        out += [f"{where} misses {k!r}" for k in spec.get("!", ()) if k not in value]
        for k, v in value.items():
            sub = spec.get(k, spec.get("*"))
            if sub is not None:
                _check(v, sub, f"{where}.{k}" if where else str(k), out)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            out.append(f"{where} is not a list")
            return
        for i, v in enumerate(value):
            _check(v, spec[0], f"{where}[{i}]", out)
    elif not _is(value, spec):
        out.append(f"{where} is not a {spec} (got {json.dumps(value)[:40]})")


def validate(record) -> list[str]:
    """What is wrong with a record (empty: nothing)."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = [f"missing field {k!r}" for k in REQUIRED if k not in record]
    _check(record, SPEC, "", problems)
    if isinstance(record.get("schema"), int) and record["schema"] > SCHEMA_VERSION:
        problems.append(f"schema {record['schema']} is newer than this reader ({SCHEMA_VERSION})")
    for i, r in enumerate(record.get("results") if isinstance(record.get("results"), list) else []):
        if isinstance(r, dict):
            problems += [f"results[{i}] misses {k!r}" for k in RESULT_REQUIRED if k not in r]
    return problems


def append(path: str | Path, record: dict) -> None:
    line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        f.write(line)
        f.flush()


def load(path: str | Path) -> tuple[list[dict], list[str]]:
    """(records, problems): every valid record in file order, and one message per skipped line.
    A missing file raises FileNotFoundError."""
    records, problems = [], []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{no}: not JSON ({e.msg}); line skipped")
                continue
            bad = validate(rec)
            if bad:
                problems.append(f"{path}:{no}: {'; '.join(bad)}; line skipped")
                continue
            records.append(rec)
    return records, problems
